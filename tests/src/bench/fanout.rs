//! Section 3: one `echo` command to each of N nodes (N node runtimes spread over child
//! processes, each node with its own data dir, broker connection, store writer and callback
//! thread) until every result is in, against N raw requests to N responders.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use steward::{Message, Notification};

use super::children::builder;
use super::proc::{self, num, ChildProc};
use super::report::{fmt_num, Row, Target};
use super::{median, Settings};

/// Nodes per child process.
pub const PER_CHILD: usize = 1000;
/// Timed rounds per N (the median is reported).
const ROUNDS: usize = 3;
/// How long the started nodes are watched at rest.
const IDLE_WINDOW: Duration = Duration::from_secs(2);
/// Connections the raw responders' subscriptions are spread over.
const RAW_CONNS: usize = 8;

/// Starts N nodes in child processes; returns them with (startup seconds, total RSS kB,
/// threads, fds), or the reason they could not all start.
async fn start_nodes(
    url: &str,
    dir: &std::path::Path,
    n: usize,
) -> Result<(Vec<ChildProc>, f64, u64, u64, u64), String> {
    let t = Instant::now();
    let mut kids = Vec::new();
    for start in (0..n).step_by(PER_CHILD) {
        let count = PER_CHILD.min(n - start);
        let args = [
            "--nodes-child".to_owned(),
            url.to_owned(),
            dir.to_str().expect("utf-8 tempdir").to_owned(),
            "f".to_owned(),
            start.to_string(),
            count.to_string(),
        ];
        kids.push(ChildProc::spawn(&args, &[]));
    }
    let (mut rss, mut threads, mut fds) = (0, 0, 0);
    let mut failure = None;
    for k in &mut kids {
        match k
            .expect(&["ready", "error"], Duration::from_secs(600))
            .await
        {
            Some(w) if w[0] == "ready" => {
                rss += num::<u64>(&w, 3);
                threads += num::<u64>(&w, 4);
                fds += num::<u64>(&w, 5);
            }
            Some(w) => {
                let limits = k.expect(&["limits"], Duration::from_secs(5)).await;
                failure.get_or_insert(format!(
                    "a child could not start node f{}: {} (that child had started {} nodes; RSS {} kB, {} threads, {} fds)",
                    w[1],
                    w[2..].join(" "),
                    limits.as_ref().map_or("?".into(), |l| l[1].clone()),
                    limits.as_ref().map_or("?".into(), |l| l[2].clone()),
                    limits.as_ref().map_or("?".into(), |l| l[3].clone()),
                    limits.as_ref().map_or("?".into(), |l| l[4].clone()),
                ));
            }
            None => {
                failure.get_or_insert("a child ended or hung before reporting ready".into());
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    match failure {
        None => Ok((kids, secs, rss, threads, fds)),
        Some(f) => {
            for k in kids {
                k.kill().await;
            }
            Err(f)
        }
    }
}

/// The store writer counters (jobs, commits, apply ns, commit ns) summed over every child.
async fn store_stats(kids: &mut [ChildProc]) -> [u64; 4] {
    let mut sum = [0u64; 4];
    for k in kids.iter_mut() {
        k.send_line("stats").await;
        if let Some(w) = k.expect(&["stats"], Duration::from_secs(30)).await {
            for (i, s) in sum.iter_mut().enumerate() {
                *s += num::<u64>(&w, i + 1);
            }
        }
    }
    sum
}

/// N raw responders (subscriptions `fan.<i>`) spread over a few connections.
async fn raw_responders(url: &str, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut conns = Vec::new();
    for _ in 0..RAW_CONNS {
        conns.push(
            async_nats::ConnectOptions::new()
                .subscription_capacity(1024)
                .connect(url)
                .await
                .expect("connect"),
        );
    }
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let conn = conns[i % RAW_CONNS].clone();
        let mut sub = conn.subscribe(format!("fan.{i}")).await.expect("subscribe");
        tasks.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = conn.publish(reply, m.payload).await;
                }
            }
        }));
    }
    for c in &conns {
        c.flush().await.expect("flush");
    }
    tasks
}

async fn raw_round(client: &async_nats::Client, n: usize) -> f64 {
    let t = Instant::now();
    let mut all: FuturesUnordered<_> = (0..n)
        .map(|i| {
            let c = client.clone();
            async move {
                c.request(format!("fan.{i}"), Bytes::from_static(b"x"))
                    .await
            }
        })
        .collect();
    while let Some(r) = all.next().await {
        r.expect("raw fan-out request");
    }
    t.elapsed().as_secs_f64()
}

/// Runs section 3 for every N in the settings; stops at the first N that does not fit.
pub async fn run(
    url: &str,
    nats_pid: Option<u32>,
    s: &Settings,
    rows: &mut Vec<Row>,
    extra: &mut Map<String, Value>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let central = builder("central", url, dir.path())
        .start()
        .await
        .expect("central");
    let mut finished = central.subscribe();
    let client = async_nats::connect(url).await.expect("connect");
    let mut details = Vec::new();
    for &n in &s.fanout {
        let nodes_dir = tempfile::tempdir().expect("tempdir");
        eprintln!(
            "bench: fan-out: starting {n} nodes in {} processes",
            n.div_ceil(PER_CHILD)
        );
        let (mut kids, startup, rss, threads, fds) =
            match start_nodes(url, nodes_dir.path(), n).await {
                Ok(k) => k,
                Err(why) => {
                    rows.push(
                        Row::new(
                            3,
                            format!("fan-out to {n} nodes, all results in"),
                            "s",
                            None,
                            None,
                        )
                        .target(Target::Below(2.0))
                        .note(format!("did not fit: {why}")),
                    );
                    details.push(json!({ "n": n, "error": why }));
                    break;
                }
            };
        let responders = raw_responders(url, n).await;
        let pids: Vec<u32> = kids.iter().map(ChildProc::pid).collect();
        // CPU seconds (this process, the node processes, nats-server) now.
        let cpu_now = || {
            let kids: f64 = pids
                .iter()
                .filter_map(|p| proc::cpu_of(*p))
                .map(|d| d.as_secs_f64())
                .sum();
            let srv = nats_pid
                .and_then(proc::cpu_of)
                .map_or(0.0, |d| d.as_secs_f64());
            [proc::cpu_self().as_secs_f64(), kids, srv]
        };
        // The nodes at rest: what N idle nodes cost before any message.
        let idle0 = cpu_now();
        tokio::time::sleep(IDLE_WINDOW).await;
        let idle1 = cpu_now();
        let idle_cores = (idle1[1] - idle0[1]) / IDLE_WINDOW.as_secs_f64();
        let stats0 = store_stats(&mut kids).await;
        let mut cpu = Vec::new();
        let (mut st, mut rt) = (Vec::new(), Vec::new());
        let mut incomplete = None;
        for round in 0..ROUNDS {
            let prefix = format!("fan-{n}-{round}-");
            let msgs = (0..n)
                .map(|i| {
                    Message::command(format!("f{i}"), "echo", ["x"]).with_id(format!("{prefix}{i}"))
                })
                .collect();
            let c0 = cpu_now();
            let t = Instant::now();
            central.send_batch(msgs).await.expect("send_batch");
            let mut got = 0;
            let mut failed = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while got < n {
                match tokio::time::timeout_at(deadline, finished.recv()).await {
                    Ok(Some(Notification::Finished(m))) if m.id.starts_with(&prefix) => {
                        got += 1;
                        if m.state != steward::MessageState::Completed {
                            failed += 1;
                        }
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            if got < n || failed > 0 {
                incomplete = Some(format!(
                    "round {round}: {got} of {n} finished, {failed} not completed"
                ));
            }
            st.push(t.elapsed().as_secs_f64());
            let c1 = cpu_now();
            cpu.push([c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]]);
            rt.push(raw_round(&client, n).await);
        }
        let stats1 = store_stats(&mut kids).await;
        for r in responders {
            r.abort();
        }
        let per = (n * ROUNDS) as f64;
        let d = |i: usize| (stats1[i] - stats0[i]) as f64;
        let (sm, rm) = (median(st.clone()), median(rt.clone()));
        let per_node_kb = rss as f64 / n as f64;
        let mut note = format!(
            "median of {ROUNDS} rounds (steward {:?} s, raw {:?} s); {n} nodes in {} processes started in {} s ({} ms per node), {} MB RSS in all ({} KB per node), {threads} threads, {fds} fds",
            st.iter().map(|x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            rt.iter().map(|x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            n.div_ceil(PER_CHILD),
            fmt_num(startup),
            fmt_num(startup * 1000.0 / n as f64),
            fmt_num(rss as f64 / 1024.0),
            fmt_num(per_node_kb),
        );
        let mid = &cpu[cpu.len() / 2];
        note.push_str(&format!(
            "; CPU in round {}: central process {} s, node processes {} s, nats-server {} s",
            cpu.len() / 2,
            fmt_num(mid[0]),
            fmt_num(mid[1]),
            fmt_num(mid[2])
        ));
        note.push_str(&format!(
            "; per node and message: {:.2} store commits ({} µs each, fsync included), {:.2} write jobs ({} µs applying each)",
            d(1) / per,
            fmt_num(d(3) / 1e3 / d(1).max(1.0)),
            d(0) / per,
            fmt_num(d(2) / 1e3 / d(0).max(1.0)),
        ));
        note.push_str(&format!(
            "; idle, the {n} nodes kept {} cores busy",
            fmt_num(idle_cores)
        ));
        if let Some(i) = &incomplete {
            note.push_str(&format!("; INCOMPLETE: {i}"));
        }
        let mut row = Row::new(
            3,
            format!("fan-out to {n} nodes, all results in"),
            "s",
            Some(sm),
            Some(rm),
        )
        .note(note);
        if n >= 10_000 {
            row = row.target(Target::Below(2.0));
        }
        rows.push(row);
        details.push(json!({
            "n": n, "processes": n.div_ceil(PER_CHILD), "steward_s": st, "raw_s": rt,
            "cpu_s_per_round": cpu.iter().map(|c| json!({"central": c[0], "nodes": c[1], "nats_server": c[2]})).collect::<Vec<_>>(),
            "idle_cores": idle_cores,
            "node_store_delta": { "jobs": d(0), "commits": d(1), "apply_ns": d(2), "commit_ns": d(3) },
            "startup_s": startup, "rss_kb": rss, "threads": threads, "fds": fds,
            "incomplete": incomplete,
        }));
        for k in kids {
            k.finish(Duration::from_secs(10)).await;
        }
    }
    extra.insert("fanout".into(), Value::Array(details));
    central.stop().await;
}
