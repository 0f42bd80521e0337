//! End to end: `steward --metrics-address` serves Prometheus metrics that a scrape over HTTP
//! reads while real `steward` processes exchange a message on a real nats-server, and
//! `--log-format json` writes lines that carry the message's id.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::{free_port, nats_server_bin, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_steward");
/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(60);

/// A `steward` child whose standard error goes to a file.
struct Proc {
    child: Option<Child>,
    err: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let err = dir.join(format!("{name}.stderr"));
        let child = Command::new(BIN)
            .args(args)
            .env("NATS_SERVER_BIN", nats_server_bin())
            .env_remove("STEWARD_NODE")
            .env_remove("STEWARD_DATA_DIR")
            .env_remove("STEWARD_CONFIG")
            .env_remove("STEWARD_METRICS_ADDRESS")
            .env_remove("STEWARD_LOG_FORMAT")
            // Metrics, not enrolment: these nodes trust each other by name.
            .env("STEWARD_SIGNATURES", "off")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn the steward binary");
        Proc {
            child: Some(child),
            err,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn sigterm(&mut self) -> ExitStatus {
        let child = self.child.take().expect("still running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        self.wait(child)
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.take().expect("still running");
        self.wait(child)
    }

    fn wait(&self, mut child: Child) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "steward did not exit:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- stderr ----\n{}", self.stderr());
        }
    }
}

/// Polls `cond` every 20 ms until it holds or [`WAIT`] passes.
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `GET /metrics`: (status line, content type, body), or `None` if nothing answers.
fn scrape(addr: SocketAddr) -> Option<(String, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.to_owned();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Some((status, content_type, body.to_owned()))
}

/// The JSON log lines written so far (every line must be JSON).
fn json_lines(p: &Proc) -> Vec<Value> {
    p.stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn metrics_address_serves_prometheus_text_and_json_logs_carry_the_message_id() {
    let nats = NatsServer::start();
    let tmp = tempfile::Builder::new().prefix("stwm").tempdir().unwrap();
    let root = tmp.path();
    let (central_dir, ship_dir) = (root.join("central"), root.join("ship1"));
    let url = nats.url();

    // ship1: port 0 from the flag, JSON logs; the log line tells the port picked.
    let mut ship = Proc::spawn(
        root,
        "ship1",
        &[
            "--node",
            "ship1",
            "--data-dir",
            s(&ship_dir),
            "--broker-address",
            &url,
            "--hello-interval",
            "0",
            "--metrics-address",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            "info,steward=debug",
        ],
        &[],
    );
    let mut ship_addr = None;
    assert!(
        wait_until(|| {
            ship_addr = json_lines(&ship).iter().find_map(|l| {
                l["message"]
                    .as_str()?
                    .strip_prefix("metrics: Prometheus text at http://")?
                    .strip_suffix("/metrics")?
                    .parse::<SocketAddr>()
                    .ok()
            });
            ship_addr.is_some()
        }),
        "ship1 never logged its metrics address"
    );
    let ship_addr = ship_addr.unwrap();
    assert_ne!(ship_addr.port(), 0);

    // central: a fixed port from the environment, text logs.
    let port = free_port();
    let central_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut central = Proc::spawn(
        root,
        "central",
        &[
            "--node",
            "central",
            "--data-dir",
            s(&central_dir),
            "--broker-address",
            &url,
            "--hello-interval",
            "0",
        ],
        &[("STEWARD_METRICS_ADDRESS", &central_addr.to_string())],
    );
    for addr in [central_addr, ship_addr] {
        assert!(
            wait_until(|| scrape(addr)
                .is_some_and(|(_, _, body)| body.contains("\nsteward_broker_connected 1\n"))),
            "{addr} never reported a broker connection"
        );
    }

    // A message through the running central: `steward send` waits for its result.
    let out = Command::new(BIN)
        .args([
            "send",
            "--data-dir",
            s(&central_dir),
            "--to",
            "ship1",
            "--method",
            "echo",
            "--id",
            "metrics-cli-1",
            "--timeout",
            "30",
            "--",
            "hi",
        ])
        .env_remove("STEWARD_METRICS_ADDRESS")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, content_type, body) = scrape(central_addr).expect("central answers");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        "steward_messages_accepted_total{destination=\"ship1\",method=\"echo\"} 1",
        "steward_messages_sent_total{destination=\"ship1\",method=\"echo\"} 1",
        "steward_messages_completed_total{destination=\"ship1\",method=\"echo\"} 1",
        "steward_messages_in_flight{destination=\"ship1\",method=\"echo\"} 0",
        "steward_outbox_depth{destination=\"ship1\"} 0",
        "steward_delivery_latency_seconds_count{method=\"echo\"} 1",
        "steward_end_to_end_latency_seconds_count{method=\"echo\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    let (_, _, body) = scrape(ship_addr).expect("ship1 answers");
    for line in [
        "steward_incoming_received_total{sender=\"central\",method=\"echo\"} 1",
        "steward_incoming_executed_total{sender=\"central\",method=\"echo\",status=\"ok\"} 1",
        "steward_execution_duration_seconds_count{method=\"echo\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    // ship1's JSON log has the run of that message, with its id, sender and method.
    let lines = json_lines(&ship);
    let ran = lines
        .iter()
        .find(|l| l["msg_id"] == "metrics-cli-1" && l["message"] == "ran")
        .unwrap_or_else(|| panic!("no `ran` line for metrics-cli-1 in {lines:#?}"));
    assert_eq!(ran["from"], "central");
    assert_eq!(ran["method"], "echo");
    assert_eq!(ran["level"], "DEBUG");

    // The same address again: the node refuses to start and says why.
    let mut taken = Proc::spawn(
        root,
        "taken",
        &[
            "--node",
            "taken",
            "--data-dir",
            s(&root.join("taken")),
            "--broker-address",
            &url,
            "--metrics-address",
            &central_addr.to_string(),
        ],
        &[],
    );
    assert_eq!(taken.wait_exit().code(), Some(2));
    assert!(
        taken
            .stderr()
            .contains(&format!("cannot serve metrics on {central_addr}")),
        "{}",
        taken.stderr()
    );
    // A malformed address is a usage error.
    let out = Command::new(BIN)
        .args(["--node", "x", "--metrics-address", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(central.sigterm().success());
    assert!(ship.sigterm().success());
    // The endpoints stop with their nodes.
    assert!(scrape(central_addr).is_none());
    assert!(scrape(ship_addr).is_none());
}
