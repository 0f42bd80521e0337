//! Throughput and latency of steward next to raw async-nats on the same nats-server, same run.
//!
//! `steward-bench [--quick]` prints a table; figures are honest only in a release build:
//! `cargo run --release -p steward-tests --bin steward-bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use steward::{Message, Node};
use steward_tests::NatsServer;

struct Row {
    name: String,
    steward: f64,
    raw: f64,
    unit: &'static str,
}

async fn raw_throughput(url: &str, depth: usize, total: usize) -> f64 {
    let responder = async_nats::connect(url).await.expect("connect");
    let mut sub = responder.subscribe("bench.raw").await.expect("sub");
    let r2 = responder.clone();
    let serve = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = r2.publish(reply, m.payload).await;
            }
        }
    });
    responder.flush().await.ok();
    let client = async_nats::connect(url).await.expect("connect");
    let start = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < total {
        while sent < total && inflight.len() < depth {
            let c = client.clone();
            inflight.push(async move { c.request("bench.raw", Bytes::from_static(b"x")).await });
            sent += 1;
        }
        if let Some(r) = inflight.next().await {
            r.expect("raw request");
            done += 1;
        }
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    serve.abort();
    rate
}

async fn raw_latency(url: &str, n: usize) -> (Duration, Duration) {
    let responder = async_nats::connect(url).await.expect("connect");
    let mut sub = responder.subscribe("bench.lat").await.expect("sub");
    let r2 = responder.clone();
    let serve = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = r2.publish(reply, m.payload).await;
            }
        }
    });
    responder.flush().await.ok();
    let client = async_nats::connect(url).await.expect("connect");
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client
            .request("bench.lat", Bytes::from_static(b"x"))
            .await
            .expect("req");
        lat.push(t.elapsed());
    }
    serve.abort();
    percentiles(lat)
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    (p(0.5), p(0.99))
}

async fn steward_throughput(central: &Node, depth: usize, total: usize) -> f64 {
    let start = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < total {
        while sent < total && inflight.len() < depth {
            let c = central.clone();
            inflight.push(async move {
                let r = c.send(Message::command("ship1", "echo", ["x"])).await?;
                r.result().await
            });
            sent += 1;
        }
        if let Some(r) = inflight.next().await {
            r.expect("steward echo");
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

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 4 };
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let rss_before = rss_kb();
    let ship = Node::builder("ship1")
        .brokers([url.clone()])
        .data_dir(dir.path().join("ship1"))
        .start()
        .await
        .expect("ship1");
    let central = Arc::new(
        Node::builder("central")
            .brokers([url.clone()])
            .data_dir(dir.path().join("central"))
            .start()
            .await
            .expect("central"),
    );
    // Warm up.
    steward_throughput(&central, 64, 500).await;
    let mut rows = Vec::new();
    let n_lat = 300 * scale;
    let (sp50, sp99) = steward_latency(&central, n_lat).await;
    let (rp50, rp99) = raw_latency(&url, n_lat).await;
    rows.push(Row {
        name: "round trip p50 (1 in flight)".into(),
        steward: sp50.as_secs_f64() * 1e6,
        raw: rp50.as_secs_f64() * 1e6,
        unit: "µs",
    });
    rows.push(Row {
        name: "round trip p99 (1 in flight)".into(),
        steward: sp99.as_secs_f64() * 1e6,
        raw: rp99.as_secs_f64() * 1e6,
        unit: "µs",
    });
    for depth in [1usize, 64, 1024] {
        let total = match depth {
            1 => 500 * scale,
            64 => 5_000 * scale,
            _ => 20_000 * scale,
        };
        let s = steward_throughput(&central, depth, total).await;
        let r = raw_throughput(&url, depth, total).await;
        rows.push(Row {
            name: format!("throughput, {depth} in flight"),
            steward: s,
            raw: r,
            unit: "msg/s",
        });
    }
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "measure", "steward", "raw NATS", "ratio"
    );
    for r in &rows {
        println!(
            "{:<34} {:>10.0} {:<2} {:>9.0} {:<2} {:>7.2}",
            r.name,
            r.steward,
            r.unit,
            r.raw,
            r.unit,
            r.steward / r.raw
        );
    }
    for (name, n) in [("central", &*central), ("ship1", &ship)] {
        let st = n.store_stats();
        println!(
            "{name} store: {} jobs in {} commits ({:.1} jobs/commit), {:.1} µs apply per job, {:.0} µs per commit",
            st.jobs,
            st.commits,
            st.jobs as f64 / st.commits.max(1) as f64,
            st.apply_ns as f64 / 1e3 / st.jobs.max(1) as f64,
            st.commit_ns as f64 / 1e3 / st.commits.max(1) as f64
        );
    }
    println!(
        "process RSS: {} KB before nodes, {} KB after the run (two nodes in one process)",
        rss_before,
        rss_kb()
    );
    central.stop().await;
    ship.stop().await;
}
