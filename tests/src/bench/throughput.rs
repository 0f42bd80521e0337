//! Sections 1 and 2 (and CPU per message of 5): one sender node and one receiver node in this
//! process against a requester and a responder connection doing the same with raw async-nats.
//! Each steward figure is measured right before its raw counterpart, so both see the same load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use steward::{Kind, Message, MessageState, Method, MethodResult, Node};

use super::children::builder;
use super::proc;
use super::report::{Row, Target};
use super::{percentiles, Settings};

/// Counts handled messages and wakes a waiter when a target is reached.
#[derive(Default)]
struct Counter {
    n: AtomicUsize,
    target: AtomicUsize,
    reached: tokio::sync::Notify,
}

impl Counter {
    fn hit(&self) {
        let n = self.n.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
    }

    /// Resets to zero and arms the target.
    fn arm(&self, target: usize) {
        self.n.store(0, Ordering::Release);
        self.target.store(target, Ordering::Release);
    }

    /// Waits until the target is reached or `timeout` passes; returns the count.
    async fn wait(&self, timeout: Duration) -> usize {
        let target = self.target.load(Ordering::Acquire);
        let _ = tokio::time::timeout(timeout, async {
            while self.n.load(Ordering::Acquire) < target {
                self.reached.notified().await;
            }
        })
        .await;
        self.n.load(Ordering::Acquire)
    }
}

/// A raw async-nats responder: answers every request on `subject` with its payload.
pub async fn raw_responder(url: &str, subject: &str) -> tokio::task::JoinHandle<()> {
    let conn = async_nats::connect(url).await.expect("connect");
    let mut sub = conn.subscribe(subject.to_owned()).await.expect("subscribe");
    conn.flush().await.expect("flush");
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = conn.publish(reply, m.payload).await;
            }
        }
    })
}

pub async fn raw_throughput(
    client: &async_nats::Client,
    subject: &str,
    depth: usize,
    total: usize,
) -> f64 {
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let (mut sent, mut done) = (0, 0);
    while done < total {
        while sent < total && inflight.len() < depth {
            let c = client.clone();
            let s = subject.to_owned();
            inflight.push(async move { c.request(s, Bytes::from_static(b"x")).await });
            sent += 1;
        }
        if let Some(r) = inflight.next().await {
            r.expect("raw request");
            done += 1;
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn raw_latency(client: &async_nats::Client, subject: &str, n: usize) -> (Duration, Duration) {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client
            .request(subject.to_owned(), Bytes::from_static(b"x"))
            .await
            .expect("raw request");
        lat.push(t.elapsed());
    }
    percentiles(lat)
}

/// Publishes `total` messages (no reply) and waits until the subscriber counted them all.
async fn raw_publish(url: &str, total: usize) -> (f64, usize) {
    let counter = Arc::new(Counter::default());
    counter.arm(total);
    let sub_conn = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .connect(url)
        .await
        .expect("connect");
    let mut sub = sub_conn.subscribe("bench.pub").await.expect("subscribe");
    sub_conn.flush().await.expect("flush");
    let c = counter.clone();
    let task = tokio::spawn(async move {
        while sub.next().await.is_some() {
            c.hit();
        }
    });
    let client = async_nats::connect(url).await.expect("connect");
    let start = Instant::now();
    for _ in 0..total {
        client
            .publish("bench.pub", Bytes::from_static(b"x"))
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let got = counter.wait(Duration::from_secs(60)).await;
    let rate = got as f64 / start.elapsed().as_secs_f64();
    task.abort();
    (rate, got)
}

/// Sends `total` messages made by `make`, `depth` in flight, each awaited to its final state.
async fn steward_pipeline(
    central: &Node,
    depth: usize,
    total: usize,
    make: impl Fn() -> Message,
) -> f64 {
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let (mut sent, mut done) = (0, 0);
    while done < total {
        while sent < total && inflight.len() < depth {
            let c = central.clone();
            let m = make();
            inflight.push(async move {
                let r = c.send(m).await?;
                r.wait().await
            });
            sent += 1;
        }
        if let Some(r) = inflight.next().await {
            let st = r.expect("steward send");
            assert_eq!(st.state, MessageState::Completed, "{st:?}");
            done += 1;
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn steward_latency(central: &Node, n: usize) -> (Duration, Duration) {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = central
            .send(Message::command("ship1", "echo", ["x"]))
            .await
            .expect("send");
        r.result().await.expect("result");
        lat.push(t.elapsed());
    }
    percentiles(lat)
}

/// Events without ACK: `depth` durable sends in flight, then waits until the receiver ran all.
async fn steward_no_ack(
    central: &Node,
    counter: &Counter,
    depth: usize,
    total: usize,
) -> (f64, usize) {
    counter.arm(total);
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0;
    while sent < total || !inflight.is_empty() {
        while sent < total && inflight.len() < depth {
            let c = central.clone();
            inflight.push(async move {
                c.send(Message::event("ship1", "count", ["x"]).with_ack_timeout(Duration::ZERO))
                    .await
            });
            sent += 1;
        }
        if let Some(r) = inflight.next().await {
            r.expect("steward send");
        }
    }
    let got = counter.wait(Duration::from_secs(60)).await;
    (got as f64 / start.elapsed().as_secs_f64(), got)
}

fn store_json(n: &Node) -> Value {
    let st = n.store_stats();
    json!({
        "jobs": st.jobs,
        "commits": st.commits,
        "jobs_per_commit": st.jobs as f64 / st.commits.max(1) as f64,
        "apply_us_per_job": st.apply_ns as f64 / 1e3 / st.jobs.max(1) as f64,
        "commit_us": st.commit_ns as f64 / 1e3 / st.commits.max(1) as f64,
    })
}

/// Runs sections 1, 2 and the CPU-per-message figure.
/// Message bytes (payload and headers) nats-server has received from clients so far (`/varz`
/// `in_bytes`), if it answers: each message published through it counts once.
fn broker_bytes(monitor_port: u16) -> Option<u64> {
    let text = steward_tests::http_get(monitor_port, "/varz").ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["in_bytes"].as_u64()
}

pub async fn run(
    url: &str,
    nats_pid: Option<u32>,
    monitor_port: u16,
    s: &Settings,
    rows: &mut Vec<Row>,
    extra: &mut Map<String, Value>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    let ship = builder("ship1", url, dir.path())
        .allow("*", "count")
        .method(
            "count",
            Method::new(Kind::Event, move |_| {
                c.hit();
                async { MethodResult::ok("") }
            }),
        )
        .start()
        .await
        .expect("ship1");
    let central = builder("central", url, dir.path())
        .start()
        .await
        .expect("central");
    let _responder = raw_responder(url, "bench.echo").await;
    let client = async_nats::connect(url).await.expect("connect");
    let echo = || Message::command("ship1", "echo", ["x"]);

    // Warm up both.
    steward_pipeline(&central, 64, 500, echo).await;
    raw_throughput(&client, "bench.echo", 64, 2000).await;

    let scale = if s.quick { 1 } else { 4 };
    let n_lat = if s.quick { 300 } else { 2000 };
    let (c0, s0) = (central.store_stats(), ship.store_stats());
    let b0 = broker_bytes(monitor_port);
    let (sp50, sp99) = steward_latency(&central, n_lat).await;
    let b1 = broker_bytes(monitor_port);
    let (c1, s1) = (central.store_stats(), ship.store_stats());
    let commits = (c1.commits - c0.commits + s1.commits - s0.commits).max(1);
    let per_commit_us =
        (c1.commit_ns - c0.commit_ns + s1.commit_ns - s0.commit_ns) as f64 / 1e3 / commits as f64;
    let b2 = broker_bytes(monitor_port);
    let (rp50, rp99) = raw_latency(&client, "bench.echo", n_lat).await;
    let b3 = broker_bytes(monitor_port);
    let per_trip = |a: Option<u64>, b: Option<u64>| {
        a.zip(b)
            .map(|(a, b)| b.saturating_sub(a) as f64 / n_lat as f64)
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    rows.push(
        Row::new(1, "round trip p50, 1 in flight (echo)", "µs", Some(us(sp50)), Some(us(rp50)))
            .target(Target::Below(1000.0))
            .note(format!(
                "{n_lat} sequential echo commands, send to result(); per round trip the sender's store committed {:.2} times and the receiver's {:.2} times, {per_commit_us:.0} µs per commit (fsync included)",
                (c1.commits - c0.commits) as f64 / n_lat as f64,
                (s1.commits - s0.commits) as f64 / n_lat as f64,
            )),
    );
    // Issue 14, item 3: the visible path should cost at most two commits and two broker trips.
    let bound = 2.0 * per_commit_us + 2.0 * us(rp50);
    rows.push(
        Row::new(1, "round trip p50 against 2 commits + 2 raw round trips", "µs", Some(us(sp50)), Some(bound))
            .target(Target::Below(bound))
            .note(format!(
                "raw column: 2 × {per_commit_us:.0} µs (this run's commit time) + 2 × {:.0} µs (raw round trip p50)",
                us(rp50)
            )),
    );
    rows.push(Row::new(
        1,
        "round trip p99, 1 in flight (echo)",
        "µs",
        Some(us(sp99)),
        Some(us(rp99)),
    ));
    rows.push(
        Row::new(
            1,
            "bytes through the broker per echo round trip",
            "B",
            per_trip(b0, b1),
            per_trip(b2, b3),
        )
        .target(Target::Below(250.0))
        .note(format!(
            "nats-server's own /varz in_bytes (message payloads and headers published through it, each message once; protocol lines not counted) over the {n_lat} sequential round trips above, data \"x\", hellos included; raw: a 1-byte request and its 1-byte reply; signatures: {}",
            central.config().signatures
        )),
    );

    for depth in [1usize, 64, 1024] {
        let total = match depth {
            1 => 500 * scale,
            64 => 5_000 * scale,
            _ => 15_000 * scale,
        };
        let cpu0 = proc::cpu_self();
        let srv0 = nats_pid.and_then(proc::cpu_of);
        let st = steward_pipeline(&central, depth, total, echo).await;
        let cpu1 = proc::cpu_self();
        let srv1 = nats_pid.and_then(proc::cpu_of);
        let rt = raw_throughput(&client, "bench.echo", depth, total).await;
        let cpu2 = proc::cpu_self();
        let srv2 = nats_pid.and_then(proc::cpu_of);
        let mut row = Row::new(
            2,
            format!("echo commands completed/s, {depth} in flight"),
            "msg/s",
            Some(st),
            Some(rt),
        );
        if depth == 1024 {
            row = row.target(Target::RatioAtLeast(0.5));
        }
        rows.push(row.note(if depth == 1024 {
            format!("{total} messages; every one fsync'd to the outbox before send returns and recorded by the receiver before it runs")
        } else {
            format!("{total} messages")
        }));
        if depth == 1024 {
            let per = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
            rows.push(
                Row::new(5, "CPU per completed message, sender + receiver", "µs", Some(per(cpu1 - cpu0)), Some(per(cpu2 - cpu1)))
                    .target(Target::Below(30.0))
                    .note(format!("user+system time of this process (both ends) over the {depth}-in-flight run, per message")),
            );
            if let (Some(a), Some(b), Some(c)) = (srv0, srv1, srv2) {
                rows.push(
                    Row::new(5, "nats-server CPU per completed message", "µs", Some(per(b - a)), Some(per(c - b)))
                        .note("steward sends an ACK/result reply per message, like raw request/reply (10 ms tick resolution)"),
                );
            }
        }
    }

    let ev_total = 10_000 * scale;
    // Fewer of these: they run at a few hundred per second.
    let slow_total = 2_000 * if s.quick { 1 } else { 2 };
    let s0 = ship.store_stats();
    let ev_ack = steward_pipeline(&central, 1024, slow_total, || {
        Message::event("ship1", "noop", ["x"])
    })
    .await;
    let s1 = ship.store_stats();
    let raw_ack = raw_throughput(&client, "bench.echo", 1024, slow_total).await;
    rows.push(
        Row::new(
            2,
            "events with ACK completed/s, 1024 in flight",
            "msg/s",
            Some(ev_ack),
            Some(raw_ack),
        )
        .target(Target::AtLeast(5000.0))
        .note(format!(
            "{slow_total} no-op events to a method not declared repeatable, one stream: the receiver records 'started' before each run, for the messages queued together in one commit; its store: {}; raw: request/reply at the same depth",
            stats_delta(s0, s1, slow_total)
        )),
    );
    let ev_rep = steward_pipeline(&central, 1024, ev_total, || {
        Message::event("ship1", "noopr", ["x"])
    })
    .await;
    let raw_rep = raw_throughput(&client, "bench.echo", 1024, ev_total).await;
    rows.push(
        Row::new(2, "events with ACK completed/s, repeatable no-op", "msg/s", Some(ev_rep), Some(raw_rep))
            .note(format!("{ev_total} no-op events to a method declared repeatable (no 'started' record), 1024 in flight")),
    );
    let (ev_none, got) = steward_no_ack(&central, &counter, 1024, ev_total).await;
    let (raw_none, raw_got) = raw_publish(url, ev_total).await;
    let mut note = format!(
        "{ev_total} events with ackTimeout 0 (each still fsync'd before send returns), 1024 sends in flight, timed until the receiver ran the last; raw: publish until the subscriber got the last"
    );
    if got < ev_total || raw_got < ev_total {
        note.push_str(&format!(
            "; LOST: steward delivered {got} of {ev_total}, raw {raw_got} of {ev_total}"
        ));
    }
    rows.push(
        Row::new(
            2,
            "events without ACK delivered/s",
            "msg/s",
            Some(ev_none),
            Some(raw_none),
        )
        .note(note),
    );

    extra.insert(
        "store_stats".into(),
        json!({ "central": store_json(&central), "ship1": store_json(&ship) }),
    );
    central.stop().await;
    ship.stop().await;
}

fn stats_delta(a: steward::StoreStats, b: steward::StoreStats, msgs: usize) -> String {
    let jobs = b.jobs - a.jobs;
    let commits = (b.commits - a.commits).max(1);
    format!(
        "{jobs} jobs ({:.1} per message) in {commits} commits ({:.1} jobs per commit), {:.1} µs applying per job, {:.0} µs per commit; writer busy {:.1} µs per message",
        jobs as f64 / msgs as f64,
        jobs as f64 / commits as f64,
        (b.apply_ns - a.apply_ns) as f64 / 1e3 / jobs.max(1) as f64,
        (b.commit_ns - a.commit_ns) as f64 / 1e3 / commits as f64,
        ((b.apply_ns - a.apply_ns) + (b.commit_ns - a.commit_ns)) as f64 / 1e3 / msgs as f64,
    )
}

/// A profiling target (`--only pipeline`): only steward's echo pipeline, 1,024 in flight, with
/// each store's writer figures for that run printed to stderr.
pub async fn pipeline(url: &str, s: &Settings) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ship = builder("ship1", url, dir.path())
        .start()
        .await
        .expect("ship1");
    let central = builder("central", url, dir.path())
        .start()
        .await
        .expect("central");
    let echo = || Message::command("ship1", "echo", ["x"]);
    steward_pipeline(&central, 64, 500, echo).await;
    let n = s.backlog;
    let (c0, s0, cpu0) = (central.store_stats(), ship.store_stats(), proc::cpu_self());
    let threads0 = proc::cpu_by_thread();
    let rate = steward_pipeline(&central, 1024, n, echo).await;
    let cpu = (proc::cpu_self() - cpu0).as_secs_f64() * 1e6 / n as f64;
    let threads1 = proc::cpu_by_thread();
    let per_thread: Vec<String> = threads1
        .iter()
        .map(|(name, t)| {
            let before = threads0.get(name).copied().unwrap_or_default();
            let us = t.saturating_sub(before).as_secs_f64() * 1e6 / n as f64;
            format!("{name} {us:.1}")
        })
        .collect();
    eprintln!("  CPU µs per message by thread: {}", per_thread.join(", "));
    eprintln!(
        "pipeline: {n} echo commands, 1024 in flight: {rate:.0} msg/s, {cpu:.1} µs CPU per message"
    );
    eprintln!(
        "  central store: {}",
        stats_delta(c0, central.store_stats(), n)
    );
    eprintln!(
        "  ship1 store:   {}",
        stats_delta(s0, ship.store_stats(), n)
    );
    central.stop().await;
    ship.stop().await;
}
