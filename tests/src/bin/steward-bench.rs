//! steward's speed, scale and footprint next to the same work done with raw async-nats on the
//! same nats-server in the same run (issue 5). Prints one table and writes it as JSON.
//!
//! ```text
//! steward-bench [--quick] [--json PATH] [--only SECTION,...] [--fanout N,...] [--backlog N]
//! ```
//!
//! * `--quick`: backlog 10,000, fan-out 100 and 1,000, fewer samples (under a minute); the
//!   memory and disk cost per queued message is still measured over 100,000.
//! * `--json PATH`: where the report goes (default `target/bench/latest.json`).
//! * `--only`: any of `throughput` (sections 1, 2 and CPU per message), `fanout`, `backlog`,
//!   `footprint`; or `pipeline`, a profiling target (steward's echo pipeline alone, 1,024 in
//!   flight, `--backlog` messages, with the store writers' figures).
//! * `--fanout`, `--backlog`: override the sizes.
//!
//! Figures are honest only in a release build: `scripts/bench.sh` builds and runs it. The
//! binary also runs as its own child processes (see `bench::children`).

#[path = "../bench/mod.rs"]
mod bench;

use std::time::Instant;

/// The allocator the `steward` command runs with, so the figures are those of a node.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bench::report::{self, Row};
use bench::Settings;
use serde_json::{json, Map};

fn usage() -> ! {
    eprintln!(
        "usage: steward-bench [--quick] [--json PATH] [--only throughput,fanout,backlog,footprint] [--fanout N,...] [--backlog N]"
    );
    std::process::exit(2);
}

fn settings(args: &[String]) -> Settings {
    let quick = args.iter().any(|a| a == "--quick");
    let mut s = Settings {
        quick,
        json: steward_tests::workspace_root().join("target/bench/latest.json"),
        only: Vec::new(),
        fanout: if quick {
            vec![100, 1000]
        } else {
            vec![100, 1000, 10_000]
        },
        backlog: if quick { 10_000 } else { 100_000 },
        queued: 100_000,
    };
    let mut it = args.iter().skip(1);
    let list = |v: Option<&String>| -> Vec<String> {
        v.unwrap_or_else(|| usage())
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "--json" => s.json = it.next().unwrap_or_else(|| usage()).into(),
            "--only" => s.only = list(it.next()),
            "--fanout" => {
                s.fanout = list(it.next())
                    .iter()
                    .map(|n| n.parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--backlog" => {
                s.backlog = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    s
}

fn main() {
    // Diagnosis: STEWARD_BENCH_LOG=steward=debug prints the nodes' logs to stderr.
    if let Ok(filter) = std::env::var("STEWARD_BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args: Vec<String> = std::env::args().collect();
    if bench::children::run(&args) {
        return;
    }
    let s = settings(&args);
    let nofile = bench::proc::raise_nofile();
    let machine_before = bench::proc::machine();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut extra = Map::new();
    rt.block_on(async {
        // Started after raising the descriptor limit, so the server inherits it.
        let server = steward_tests::NatsServer::start();
        let url = server.url();
        if s.runs("pipeline") {
            bench::throughput::pipeline(&url, &s).await;
        }
        if s.runs("throughput") {
            eprintln!("bench: round trip and throughput");
            bench::throughput::run(
                &url,
                server.pid(),
                server.monitor_port(),
                &s,
                &mut rows,
                &mut extra,
            )
            .await;
        }
        if s.runs("fanout") {
            bench::fanout::run(&url, server.pid(), &s, &mut rows, &mut extra).await;
        }
        if s.runs("backlog") {
            eprintln!("bench: backlog and recovery");
            bench::backlog::run(&url, &s, &mut rows, &mut extra).await;
        }
        if s.runs("footprint") {
            eprintln!("bench: footprint");
            bench::footprint::run(&url, &s, &mut rows).await;
        }
    });
    rows.sort_by_key(|r| r.section);
    let elapsed = started.elapsed().as_secs_f64();
    let machine_after = bench::proc::machine();
    println!("{}", report::table(&rows));
    println!(
        "machine: {} cores ({}), {} GiB; load average before {}, after {}; run took {:.0} s{}",
        machine_after["cores"],
        machine_after["cpu"].as_str().unwrap_or("?"),
        machine_after["memory_gib"],
        machine_before["load_average"].as_str().unwrap_or("?"),
        machine_after["load_average"].as_str().unwrap_or("?"),
        elapsed,
        if s.quick { " (--quick)" } else { "" }
    );
    let doc = json!({
        "quick": s.quick,
        "elapsed_s": elapsed,
        "machine": machine_after,
        "load_average_before": machine_before["load_average"],
        "open_files_limit": nofile,
        "rows": report::json_rows(&rows),
        "details": extra,
    });
    if let Some(parent) = s.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&s.json, serde_json::to_string_pretty(&doc).expect("json")) {
        Ok(()) => println!("JSON: {}", s.json.display()),
        Err(e) => eprintln!("cannot write {}: {e}", s.json.display()),
    }
}
