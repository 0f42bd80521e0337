//! The Prometheus endpoint on a real nats-server: what two nodes count while messages complete,
//! get rejected by the access list, expire, and fail after their retries with the receiver
//! offline; scraped over HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use steward::{AccessList, ErrorKind, Kind, Message, MessageState, Method, MethodResult};
use steward_tests::nodes::test_node;
use steward_tests::NatsServer;

/// Upper bound for anything awaited here.
const WAIT: Duration = Duration::from_secs(30);

/// An HTTP reply: status line, lower-cased headers, body.
struct Reply {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), read to the end.
fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP reply");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let r = tokio::task::spawn_blocking(move || http(addr, "GET", "/metrics", None))
        .await
        .unwrap();
    assert!(r.status.starts_with("HTTP/1.1 200"), "{}", r.status);
    r.body
}

/// One sample line: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses `name{k="v",...} value` lines.
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// The value of the series `name` with exactly these labels, if present.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text).into_iter().find_map(|(n, ls, v)| {
        let same = n == name
            && ls.len() == labels.len()
            && labels
                .iter()
                .all(|(k, want)| ls.iter().any(|(lk, lv)| lk == k && lv == want));
        same.then_some(v)
    })
}

#[track_caller]
fn expect(text: &str, name: &str, labels: &[(&str, &str)], want: f64) {
    let got = value(text, name, labels);
    assert_eq!(
        got,
        Some(want),
        "{name}{labels:?}: expected {want}, got {got:?} in\n{text}"
    );
}

fn any_port() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_counts_completed_rejected_expired_failed_in_flight_and_latencies() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let started = now_secs();
    // `hold` runs until the test lets it finish, so a message can be seen in flight.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let hold = Method::new(Kind::Command, move |_req: steward::Request| {
        let g = g.clone();
        async move {
            g.acquire().await.expect("gate open").forget();
            MethodResult::ok("released")
        }
    });
    let ship1 = test_node("ship1", &urls, dir.path())
        .access(
            AccessList::empty()
                .allow("central", "echo")
                .allow("central", "hold"),
        )
        .method("hold", hold)
        .metrics_address(any_port())
        .start()
        .await
        .unwrap();
    let central = test_node("central", &urls, dir.path())
        .metrics_address(any_port())
        .start()
        .await
        .unwrap();
    let central_addr = central.metrics_address().expect("a bound metrics address");
    let ship1_addr = ship1.metrics_address().expect("a bound metrics address");
    assert_ne!(central_addr.port(), 0);

    // Three completed echoes.
    for i in 0..3 {
        let r = central
            .send(Message::command("ship1", "echo", [format!("hi {i}")]))
            .await
            .unwrap();
        let result = tokio::time::timeout(WAIT, r.result())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result.stdout, format!("hi {i}"));
    }
    // shellCommand is not in ship1's access list: rejected.
    let r = central
        .send(Message::command("ship1", "shellCommand", ["true"]))
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, r.result())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    // ship2 never runs: one resend, then failed.
    let failed = central
        .send(Message::command("ship2", "echo", ["x"]).with_retries(1))
        .await
        .unwrap();
    // ship3 never runs either, and its message's time to live runs out first.
    let expired = central
        .send(Message::command("ship3", "echo", ["x"]).with_ttl(Duration::from_millis(800)))
        .await
        .unwrap();
    let st = tokio::time::timeout(WAIT, failed.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.state, MessageState::Failed, "{st:?}");
    let st = tokio::time::timeout(WAIT, expired.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.state, MessageState::Expired, "{st:?}");

    // A message being run is in flight and in the outbox.
    let held = central
        .send(Message::command("ship1", "hold", Vec::<String>::new()))
        .await
        .unwrap();
    assert!(
        steward_tests::wait_until_future(WAIT, || async {
            held.status().await.unwrap().state == MessageState::Received
        })
        .await,
        "hold never reached received"
    );
    let text = scrape(central_addr).await;
    expect(
        &text,
        "steward_messages_in_flight",
        &[("destination", "ship1"), ("method", "hold")],
        1.0,
    );
    expect(
        &text,
        "steward_outbox_depth",
        &[("destination", "ship1")],
        1.0,
    );
    gate.add_permits(1);
    let result = tokio::time::timeout(WAIT, held.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.stdout, "released");
    // The result came as a message of its own: the waiter may wake a moment before the
    // publisher lets go of the message.
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = scrape(central_addr).await;
        let hold = [("destination", "ship1"), ("method", "hold")];
        if value(&text, "steward_messages_in_flight", &hold) == Some(0.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hold stayed in flight:\n{text}"
        );
        tokio::time::sleep(steward_tests::POLL_INTERVAL).await;
    };

    // The sender's view.
    let echo1 = [("destination", "ship1"), ("method", "echo")];
    let hold1 = [("destination", "ship1"), ("method", "hold")];
    let shell1 = [("destination", "ship1"), ("method", "shellCommand")];
    let echo2 = [("destination", "ship2"), ("method", "echo")];
    let echo3 = [("destination", "ship3"), ("method", "echo")];
    for (labels, n) in [
        (&echo1, 3.0),
        (&hold1, 1.0),
        (&shell1, 1.0),
        (&echo2, 1.0),
        (&echo3, 1.0),
    ] {
        expect(&text, "steward_messages_accepted_total", labels, n);
    }
    for (labels, n) in [(&echo1, 3.0), (&hold1, 1.0), (&shell1, 1.0), (&echo2, 1.0)] {
        expect(&text, "steward_messages_sent_total", labels, n);
    }
    // Sent at once unless the machine stalled for the whole time to live.
    let sent3 = value(&text, "steward_messages_sent_total", &echo3).unwrap_or(0.0);
    assert!(sent3 <= 1.0, "{sent3}");
    expect(&text, "steward_messages_retried_total", &echo2, 1.0);
    expect(&text, "steward_messages_retried_total", &echo1, 0.0);
    expect(&text, "steward_messages_completed_total", &echo1, 3.0);
    expect(&text, "steward_messages_completed_total", &hold1, 1.0);
    expect(&text, "steward_messages_rejected_total", &shell1, 1.0);
    expect(&text, "steward_messages_failed_total", &echo2, 1.0);
    expect(&text, "steward_messages_expired_total", &echo3, 1.0);
    assert_eq!(
        value(&text, "steward_messages_method_failed_total", &echo1),
        None
    );
    for labels in [&echo1, &hold1, &shell1, &echo2] {
        expect(&text, "steward_messages_in_flight", labels, 0.0);
    }
    for node in ["ship1", "ship2", "ship3"] {
        expect(&text, "steward_outbox_depth", &[("destination", node)], 0.0);
    }
    let seen = value(
        &text,
        "steward_node_last_seen_seconds",
        &[("node", "ship1")],
    )
    .expect("ship1 last seen");
    assert!(
        seen >= started - 1.0 && seen <= now_secs() + 1.0,
        "last seen {seen}, test started at {started}"
    );
    assert!(value(&text, "steward_node_last_ack_seconds", &[("node", "ship1")]).is_some());
    // ship2 and ship3 never answered.
    assert_eq!(
        value(
            &text,
            "steward_node_last_seen_seconds",
            &[("node", "ship2")]
        ),
        None
    );
    // Histograms: one delivery per ACKed message, one end-to-end per completed one.
    let echo = [("method", "echo")];
    let hold = [("method", "hold")];
    expect(&text, "steward_delivery_latency_seconds_count", &echo, 3.0);
    expect(&text, "steward_delivery_latency_seconds_count", &hold, 1.0);
    // A rejection is not a delivery.
    expect(
        &text,
        "steward_delivery_latency_seconds_count",
        &[("method", "shellCommand")],
        0.0,
    );
    expect(
        &text,
        "steward_end_to_end_latency_seconds_count",
        &echo,
        3.0,
    );
    expect(
        &text,
        "steward_end_to_end_latency_seconds_count",
        &hold,
        1.0,
    );
    expect(
        &text,
        "steward_end_to_end_latency_seconds_bucket",
        &[("method", "echo"), ("le", "+Inf")],
        3.0,
    );
    let e2e = value(&text, "steward_end_to_end_latency_seconds_sum", &echo).unwrap();
    assert!(e2e > 0.0 && e2e < WAIT.as_secs_f64() * 3.0, "{e2e}");
    expect(&text, "steward_broker_connected", &[], 1.0);
    assert!(value(&text, "steward_store_commits_total", &[]).unwrap() > 0.0);

    // The receiver's view.
    let text = scrape(ship1_addr).await;
    let from_c = |m: &'static str| [("sender", "central"), ("method", m)];
    expect(
        &text,
        "steward_incoming_received_total",
        &from_c("echo"),
        3.0,
    );
    expect(
        &text,
        "steward_incoming_received_total",
        &from_c("hold"),
        1.0,
    );
    expect(
        &text,
        "steward_incoming_executed_total",
        &[("sender", "central"), ("method", "echo"), ("status", "ok")],
        3.0,
    );
    expect(
        &text,
        "steward_incoming_executed_total",
        &[("sender", "central"), ("method", "hold"), ("status", "ok")],
        1.0,
    );
    expect(
        &text,
        "steward_incoming_refused_total",
        &[
            ("sender", "central"),
            ("method", "shellCommand"),
            ("reason", "rejected"),
        ],
        1.0,
    );
    expect(
        &text,
        "steward_execution_duration_seconds_count",
        &echo,
        3.0,
    );
    expect(
        &text,
        "steward_execution_duration_seconds_count",
        &hold,
        1.0,
    );
    // Results travelling home are protocol traffic, not messages.
    assert!(!text.contains("_result"), "{text}");
    assert!(!text.contains("steward_messages_sent_total{"), "{text}");

    // Node::metrics_text is what the endpoint serves.
    let text = scrape(central_addr).await;
    let embedded = central.metrics_text();
    let messages = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("steward_messages_"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(messages(&text), messages(&embedded));

    central.stop().await;
    ship1.stop().await;
    // The endpoint stops with the node.
    assert!(
        TcpStream::connect_timeout(&central_addr, Duration::from_secs(2)).is_err(),
        "the metrics endpoint still answers after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_speaks_http_and_a_taken_address_fails_the_start() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let node = test_node("central", &urls, dir.path())
        .metrics_address(any_port())
        .start()
        .await
        .unwrap();
    let addr = node.metrics_address().unwrap();
    let (plain, open, missing, post) = tokio::task::spawn_blocking(move || {
        (
            http(addr, "GET", "/metrics", None),
            http(
                addr,
                "GET",
                "/metrics",
                Some("application/openmetrics-text; version=1.0.0"),
            ),
            http(addr, "GET", "/", None),
            http(addr, "POST", "/metrics", None),
        )
    })
    .await
    .unwrap();
    assert!(plain.status.starts_with("HTTP/1.1 200"), "{}", plain.status);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        plain.body.contains("# TYPE steward_broker_connected gauge"),
        "{}",
        plain.body
    );
    assert!(open.status.starts_with("HTTP/1.1 200"), "{}", open.status);
    assert_eq!(
        open.header("content-type"),
        Some(steward::OPENMETRICS_CONTENT_TYPE)
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    assert!(
        missing.status.starts_with("HTTP/1.1 404"),
        "{}",
        missing.status
    );
    assert!(missing.body.contains("/metrics"), "{}", missing.body);
    assert!(post.status.starts_with("HTTP/1.1 405"), "{}", post.status);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // A second node on the same metrics address does not start, and says why.
    let err = match test_node("other", &urls, dir.path())
        .metrics_address(Some(addr))
        .start()
        .await
    {
        Ok(_) => panic!("a node started on a metrics address already in use"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("metrics"),
        "{text}"
    );
    // Nothing of it was left behind: its data directory was never opened.
    assert!(!dir.path().join("other").join("steward.redb").exists());

    // Without an address there is no endpoint, but the text is there for embedders.
    let quiet = test_node("quiet", &urls, dir.path()).start().await.unwrap();
    assert_eq!(quiet.metrics_address(), None);
    assert!(steward_tests::wait_until_async(WAIT, || quiet.is_connected()).await);
    assert!(quiet.metrics_text().contains("steward_broker_connected 1"));
    quiet.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_fire_and_forget_messages_are_counted() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    assert!(steward_tests::wait_until_async(WAIT, || central.is_connected()).await);
    // ship9 never runs: one message waits for it until cancelled...
    let waiting = central
        .send(Message::command("ship9", "echo", ["x"]))
        .await
        .unwrap();
    assert!(central.cancel(&waiting.id).await.unwrap());
    // ...and one is sent without ACK, which completes once published, with no result.
    let unacked = central
        .send(Message::event("ship9", "textLogging", ["x"]).with_ack_timeout(Duration::ZERO))
        .await
        .unwrap();
    let st = tokio::time::timeout(WAIT, unacked.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.state, MessageState::Completed, "{st:?}");

    let text = central.metrics_text();
    let echo9 = [("destination", "ship9"), ("method", "echo")];
    let log9 = [("destination", "ship9"), ("method", "textLogging")];
    expect(&text, "steward_messages_cancelled_total", &echo9, 1.0);
    expect(&text, "steward_messages_completed_total", &log9, 1.0);
    expect(&text, "steward_messages_sent_total", &log9, 1.0);
    expect(&text, "steward_messages_in_flight", &log9, 0.0);
    expect(
        &text,
        "steward_outbox_depth",
        &[("destination", "ship9")],
        0.0,
    );
    // Published without ACK: neither a delivery nor an end-to-end latency to observe.
    expect(
        &text,
        "steward_delivery_latency_seconds_count",
        &[("method", "textLogging")],
        0.0,
    );
    assert_eq!(
        value(
            &text,
            "steward_end_to_end_latency_seconds_count",
            &[("method", "textLogging")]
        ),
        None
    );
    central.stop().await;
}
