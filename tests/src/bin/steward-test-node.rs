//! A steward node in its own process, for tests that SIGKILL and restart nodes.
//!
//! `steward-test-node serve NAME URL DIR` serves the built-in methods plus `record` (a command
//! that appends its data to `<DIR>/<NAME>/record.log` and fsyncs) until killed.
//! `steward-test-node send NAME URL DIR TO COUNT` sends `record` commands `m-0 … m-(COUNT-1)`
//! (ids `m-<i>`, so a restarted sender replays them idempotently), printing `accepted <i>` after
//! each durable acceptance, then waits until all are completed and prints `done`.

use std::io::Write;
use std::time::Duration;

use steward::{Kind, Message, Method, MethodResult, Node, Request};

fn record(req: Request) -> MethodResult {
    let path = req.data_dir.join("record.log");
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "{} {}", req.from_node, req.data.join(" "))?;
        f.sync_data()
    })();
    match res {
        Ok(()) => MethodResult::ok(""),
        Err(e) => MethodResult::failed(e.to_string()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: steward-test-node serve NAME URL DIR | send NAME URL DIR TO COUNT";
    let (mode, name, url, dir) = match &args[..] {
        [_, mode, name, url, dir, ..] => (mode.as_str(), name, url, dir),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let node = Node::builder(name.as_str())
        .brokers(url.split(',').map(str::to_owned))
        .data_dir(std::path::Path::new(dir).join(name))
        .ack_timeout(Duration::from_millis(500))
        .retry_wait(Duration::from_millis(50))
        .retry_wait_max(Duration::from_millis(300))
        .allow("*", "record")
        .method(
            "record",
            Method::new(Kind::Command, |r: Request| async move { record(r) }),
        )
        .start()
        .await
        .expect("node start");
    match mode {
        "serve" => {
            println!("ready");
            futures::future::pending::<()>().await;
        }
        "send" => {
            let to = &args[5];
            let count: usize = args[6].parse().expect("COUNT");
            let mut receipts = Vec::new();
            let mut out = std::io::stdout();
            for i in 0..count {
                let m = Message::command(to.as_str(), "record", [format!("m-{i}")])
                    .with_id(format!("m-{i}"));
                let r = node.send(m).await.expect("send");
                writeln!(out, "accepted {i}").ok();
                out.flush().ok();
                receipts.push(r);
            }
            for r in receipts {
                r.result().await.expect("result");
            }
            println!("done");
            node.stop().await;
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
