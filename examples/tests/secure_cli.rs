//! The `steward` program against brokers that authenticate their clients: credentials and TLS
//! from flags, `STEWARD_*` environment variables and the TOML config file; a refused node exits
//! at once with status 77 and says what to fix.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::security::{self, Pki};
use steward_tests::{nats_server_bin, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_steward");
const WAIT: Duration = Duration::from_secs(60);
/// `steward` exit status for a node the broker refused.
const EXIT_BROKER_REFUSED: i32 = 77;

/// A `steward` command with a clean environment (no STEWARD_* from the caller).
fn steward(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("NATS_SERVER_BIN", nats_server_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("STEWARD_") {
            cmd.env_remove(k);
        }
    }
    // Broker authentication, not enrolment: these nodes trust each other by name.
    cmd.env("STEWARD_SIGNATURES", "off");
    cmd.envs(envs.iter().copied()).stdin(Stdio::null());
    cmd
}

/// Runs `steward` to completion (bounded) and returns its output.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let child = steward(args, envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn steward");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.expect("steward output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(id as i32, libc::SIGKILL) };
            panic!("steward {args:?} did not finish within {WAIT:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A running `steward --node ...` child, killed on drop.
struct Running(Child, std::path::PathBuf);

impl Running {
    fn start(args: &[&str], envs: &[(&str, &str)], err_log: &Path) -> Running {
        let child = steward(args, envs)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(err_log).unwrap())
            .spawn()
            .expect("spawn steward node");
        Running(child, err_log.to_owned())
    }

    /// Waits until `steward status` says the node on `dir` runs and is connected.
    fn wait_connected(&mut self, dir: &Path) {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = run(&["status", "--json", "--data-dir", s(dir)], &[]);
            let st: Option<Value> = serde_json::from_slice(&out.stdout).ok();
            if st.is_some_and(|v| v["running"] == true && v["connected"] == true) {
                return;
            }
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!(
                    "the node exited with {status}: {}",
                    std::fs::read_to_string(&self.1).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the node on {dir:?} never connected"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn help_documents_the_security_settings_and_exit_status_77() {
    let out = run(&["--help"], &[]);
    let help = text(&out.stdout);
    for needle in [
        "Connecting securely",
        "--broker-user <USER>",
        "--broker-password <PASSWORD>",
        "--broker-token <TOKEN>",
        "--broker-nkey-seed <SEED>",
        "--broker-nkey-seed-file <FILE>",
        "--broker-creds <FILE>",
        "--broker-tls-ca <FILE>",
        "--broker-tls-cert <FILE>",
        "--broker-tls-key <FILE>",
        "--broker-require-tls",
        "STEWARD_BROKER_PASSWORD",
        "broker_creds",
        "77   the broker refused the node",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
    // A secret in the environment is never shown by --help.
    let out = run(&["--help"], &[("STEWARD_BROKER_PASSWORD", "hunter2")]);
    assert!(!text(&out.stdout).contains("hunter2"));
    let send = text(&run(&["send", "--help"], &[]).stdout);
    assert!(
        send.contains("--broker-creds <FILE>") && send.contains("77"),
        "{send}"
    );
}

#[test]
fn refused_credentials_exit_77_at_once_with_the_reason() {
    let server = NatsServer::builder()
        .extra_config(security::user_password_config("steward", "right"))
        .start();
    let tmp = tempfile::tempdir().unwrap();
    let url = server.url();
    let dir = tmp.path().join("ship1");
    let started = Instant::now();
    let out = run(
        &[
            "--node",
            "ship1",
            "--data-dir",
            s(&dir),
            "--broker-address",
            &url,
            "--broker-user",
            "steward",
            "--log-level",
            "trace",
        ],
        &[("STEWARD_BROKER_PASSWORD", "wrong-pass")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_BROKER_REFUSED), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("refused this node"), "{err}");
    assert!(
        err.contains("the user \"steward\" and its password were not accepted"),
        "{err}"
    );
    // Not in the message, nor anywhere in the trace-level log (async-nats's included).
    assert!(err.contains("TRACE"), "trace logging was not on");
    assert!(!err.contains("wrong-pass"), "the password leaked: {err}");

    // No credentials at all: the same status, and the message says what to give.
    let out = run(
        &[
            "--node",
            "ship1",
            "--data-dir",
            s(&dir),
            "--broker-address",
            &url,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(EXIT_BROKER_REFUSED));
    assert!(text(&out.stderr).contains("requires authentication"));

    // steward send through a temporary node: 77 as well.
    let out = run(
        &[
            "send",
            "--node",
            "tmp",
            "--data-dir",
            s(&tmp.path().join("tmp")),
            "--broker-address",
            &url,
            "--broker-token",
            "nope",
            "--to",
            "ship1",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(EXIT_BROKER_REFUSED),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("token was not accepted"));
}

#[test]
fn contradictory_or_partial_credentials_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("n");
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--broker-token",
                "t",
                "--broker-user",
                "u",
                "--broker-password",
                "p",
            ],
            "give one way to authenticate to the broker, not --broker-user and --broker-token",
        ),
        (
            &["--broker-user", "u"],
            "give --broker-user and --broker-password together",
        ),
        (
            &[
                "--broker-creds",
                "a.creds",
                "--broker-nkey-seed-file",
                "s.nk",
            ],
            "not --broker-nkey-seed-file and --broker-creds",
        ),
    ];
    for (extra, expect) in cases {
        let mut args = vec![
            "--node",
            "n",
            "--data-dir",
            s(&d),
            "--broker-address",
            "nats://127.0.0.1:1",
        ];
        args.extend_from_slice(extra);
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(
            text(&out.stderr).contains(expect),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "broker_token = \"t\"\nbroker_creds = \"x.creds\"\n").unwrap();
    let out = run(
        &["--node", "n", "--data-dir", s(&d), "--config", s(&cfg)],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("config file: give one way to authenticate to the broker, not broker_token and broker_creds"),
        "{}",
        text(&out.stderr)
    );
}

/// A broker with mutual TLS and a user/password: ship1 takes everything from a TOML config
/// file, central from flags and the environment; a command sent with `steward send` through
/// central runs on ship1 and its output comes back.
#[test]
fn credentials_and_tls_from_config_file_flags_and_env_work_end_to_end() {
    let pki = Pki::generate();
    let server = NatsServer::builder()
        .extra_config(pki.server_tls_config(true))
        .extra_config(security::user_password_config("steward", "pa55 word"))
        .start();
    let tmp = tempfile::tempdir().unwrap();
    let url = server.url();
    let ship_dir = tmp.path().join("ship1");
    let central_dir = tmp.path().join("central");
    let cfg = tmp.path().join("ship1.toml");
    std::fs::write(
        &cfg,
        format!(
            "node = \"ship1\"\nbroker_address = \"{url}\"\ndata_dir = \"{}\"\nhello_interval = 0\n\
             broker_user = \"steward\"\nbroker_password = \"pa55 word\"\n\
             broker_tls_ca = \"{}\"\nbroker_tls_cert = \"{}\"\nbroker_tls_key = \"{}\"\n\
             broker_require_tls = true\nlog_level = \"trace\"\n",
            ship_dir.display(),
            pki.ca.display(),
            pki.client.cert.display(),
            pki.client.key.display()
        ),
    )
    .unwrap();
    let mut ship = Running::start(&["--config", s(&cfg)], &[], &tmp.path().join("ship1.err"));
    ship.wait_connected(&ship_dir);

    let mut central = Running::start(
        &[
            "--node",
            "central",
            "--data-dir",
            s(&central_dir),
            "--broker-address",
            &url,
            "--hello-interval",
            "0",
            "--broker-user",
            "steward",
            "--broker-tls-cert",
            s(&pki.client.cert),
            "--broker-tls-key",
            s(&pki.client.key),
        ],
        &[
            ("STEWARD_BROKER_PASSWORD", "pa55 word"),
            ("STEWARD_BROKER_TLS_CA", s(&pki.ca)),
        ],
        &tmp.path().join("central.err"),
    );
    central.wait_connected(&central_dir);

    let out = run(
        &[
            "send",
            "--data-dir",
            s(&central_dir),
            "--to",
            "ship1",
            "--timeout",
            "30",
            "--",
            "bash",
            "-c",
            "echo over tls from $0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("over tls from bash"),
        "{}",
        text(&out.stdout)
    );

    // Without the client certificate, the same config is refused with the reason.
    let no_cert = tmp.path().join("no-cert.toml");
    let ship2_dir = tmp.path().join("ship2");
    std::fs::write(
        &no_cert,
        format!(
            "node = \"ship2\"\nbroker_address = \"{url}\"\ndata_dir = \"{}\"\n\
             broker_user = \"steward\"\nbroker_password = \"pa55 word\"\nbroker_tls_ca = \"{}\"\n",
            ship2_dir.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    let out = run(&["--config", s(&no_cert)], &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_BROKER_REFUSED),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("requires a client certificate"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(central.sigterm(), 0);
    assert_eq!(ship.sigterm(), 0);
    // ship1 logged at trace level, the CONNECT included: the password never appears.
    let log = std::fs::read_to_string(tmp.path().join("ship1.err")).unwrap();
    assert!(
        log.contains("CONNECT"),
        "no trace of the CONNECT in the log"
    );
    assert!(
        !log.contains("pa55 word"),
        "the password leaked into the log"
    );
}
