//! `inmsg.txt` under concurrent writers: whatever the timing between a writer's `open` and its
//! `write`, every appended message is accepted exactly once. Must hold for a writer that opened
//! the file long before it writes (`{ sleep 2; gen; } >> inmsg.txt`), a producer that keeps one
//! descriptor open and appends arrays over time, and `cat msg.json >> inmsg.txt` in a tight
//! loop, all at once: 0 lost, 0 duplicated, and the file is erased once nobody holds it.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use steward::{Kind, Node};
use steward_tests::nodes::test_node;
use steward_tests::recorder::{recording_node, Recorder};
use steward_tests::{wait_until_async, NatsServer};

fn message(token: &str) -> serde_json::Value {
    // "offline-*" tokens go to a node that never runs: they are counted where accepted.
    let to = if token.starts_with("offline-") {
        "ship9"
    } else {
        "ship1"
    };
    json!({"toNode": to, "method": "record", "commandOrEvent": "command", "data": [token]})
}

fn array(tokens: &[String]) -> String {
    let items: Vec<_> = tokens.iter().map(|t| message(t)).collect();
    format!("{}\n", serde_json::Value::Array(items))
}

async fn central_and_ship1(server: &NatsServer, dir: &Path) -> (Node, Node, Recorder) {
    let urls = vec![server.url()];
    let (ship1, rec) = recording_node(test_node("ship1", &urls, dir), Kind::Command).await;
    let central = test_node("central", &urls, dir)
        .watch_inmsg(true)
        .start()
        .await
        .unwrap();
    (central, ship1, rec)
}

/// Waits until `expected` tokens ran, then checks each ran exactly once and nothing else did.
async fn assert_each_once(rec: &Recorder, expected: &[String], within: Duration) {
    wait_until_async(within, || rec.len() >= expected.len()).await;
    assert_each_once_in(rec.seen(), expected);
}

fn assert_each_once_in(seen: Vec<String>, expected: &[String]) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let total = seen.len();
    for s in seen {
        *counts.entry(s).or_default() += 1;
    }
    let lost: Vec<_> = expected
        .iter()
        .filter(|t| !counts.contains_key(*t))
        .collect();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        lost.is_empty(),
        "lost {} of {} messages, e.g. {:?}",
        lost.len(),
        expected.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(twice.is_empty(), "more than once: {twice:?}");
    assert_eq!(total, expected.len(), "something else came");
}

fn erased(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.len() == 0)
}

/// The reproduction: five quick appends, then a writer whose shell opens the file two
/// seconds before it writes 100 messages. Before the fix the take-over by rename left that
/// writer writing into a deleted file: the 100 were never accepted, and nothing said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_opened_early_loses_nothing() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (central, ship1, rec) = central_and_ship1(&server, dir.path()).await;
    let inmsg = dir.path().join("central").join(steward::INMSG);
    let mut expected = Vec::new();
    for i in 0..5 {
        let token = format!("quick-{i}");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' \"$0\" >> {}", inmsg.display()))
            .arg(array(std::slice::from_ref(&token)))
            .status()
            .unwrap();
        assert!(status.success());
        expected.push(token);
    }
    let hundred: Vec<String> = (0..100).map(|i| format!("late-{i}")).collect();
    let body = dir.path().join("hundred.json");
    std::fs::write(&body, array(&hundred)).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{{ sleep 2; cat {}; }} >> {}",
            body.display(),
            inmsg.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    expected.extend(hundred);
    assert_each_once(&rec, &expected, Duration::from_secs(30)).await;
    assert!(
        wait_until_async(Duration::from_secs(10), || erased(&inmsg)).await,
        "inmsg.txt is erased once nobody holds it"
    );
    central.stop().await;
    ship1.stop().await;
}

/// 10,000 messages from writers of all three kinds at random times, all at once: early openers
/// (`{ sleep r; cat f; } >> inmsg.txt`), one descriptor held open for the whole run with arrays
/// appended at random pauses, and two `cat msg.json >> inmsg.txt` loops. 0 lost, 0 duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_three_kinds_lose_nothing_and_duplicate_nothing() {
    const EARLY: usize = 40; // writers, 50 messages each
    const HELD: usize = 4_000; // messages through one held descriptor
    const LOOPED: usize = 2_000; // per cat loop, two loops
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (central, ship1, _) = central_and_ship1(&server, dir.path()).await;
    let inmsg = dir.path().join("central").join(steward::INMSG);
    let mut expected = Vec::new();
    let mut rng = rand::rng();

    let mut children = Vec::new();
    for w in 0..EARLY {
        let tokens: Vec<String> = (0..50).map(|i| format!("offline-early-{w}-{i}")).collect();
        let body = dir.path().join(format!("early-{w}.json"));
        std::fs::write(&body, array(&tokens)).unwrap();
        expected.extend(tokens);
        let delay = rng.random_range(0..4000) as f64 / 1000.0;
        children.push(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{{ sleep {delay}; cat {}; }} >> {}",
                    body.display(),
                    inmsg.display()
                ))
                .spawn()
                .unwrap(),
        );
    }
    for l in 0..2 {
        let folder = dir.path().join(format!("loop-{l}"));
        std::fs::create_dir(&folder).unwrap();
        for i in 0..LOOPED {
            let token = format!("offline-loop-{l}-{i}");
            std::fs::write(
                folder.join(format!("{i:05}.json")),
                array(std::slice::from_ref(&token)),
            )
            .unwrap();
            expected.push(token);
        }
        children.push(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "for f in {}/*.json; do cat \"$f\" >> {}; done",
                    folder.display(),
                    inmsg.display()
                ))
                .spawn()
                .unwrap(),
        );
    }
    let held: Vec<String> = (0..HELD).map(|i| format!("offline-held-{i}")).collect();
    expected.extend(held.iter().cloned());
    let producer = {
        let inmsg = inmsg.clone();
        std::thread::spawn(move || {
            let mut rng = rand::rng();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&inmsg)
                .unwrap();
            let mut rest = &held[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=40).min(rest.len());
                f.write_all(array(&rest[..n]).as_bytes()).unwrap();
                rest = &rest[n..];
                std::thread::sleep(Duration::from_millis(rng.random_range(0..30)));
            }
        })
    };
    producer.join().unwrap();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(expected.len(), EARLY * 50 + HELD + 2 * LOOPED);
    // Counted where they are accepted (central's outbox), so the check does not wait for
    // 10,000 non-repeatable runs: every token accepted exactly once.
    let accepted = || -> Vec<String> {
        central
            .recent_messages(usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|m| m.message["data"][0].as_str().map(str::to_owned))
            .collect()
    };
    wait_until_async(Duration::from_secs(60), || {
        accepted().len() >= expected.len()
    })
    .await;
    assert_each_once_in(accepted(), &expected);
    assert!(
        wait_until_async(Duration::from_secs(10), || erased(&inmsg)).await,
        "inmsg.txt is erased once nobody holds it"
    );
    central.stop().await;
    ship1.stop().await;
}

/// A crash between accepting messages and moving the read position re-reads the same bytes into
/// the same ids: a node that is stopped and restarted (or killed) never sends them twice, and a
/// producer's descriptor held across the restart keeps writing into the file that is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_descriptor_survives_a_restart_of_the_node() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (central, ship1, rec) = central_and_ship1(&server, dir.path()).await;
    let inmsg = dir.path().join("central").join(steward::INMSG);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&inmsg)
        .unwrap();
    let first: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    f.write_all(array(&first).as_bytes()).unwrap();
    assert_each_once(&rec, &first, Duration::from_secs(20)).await;
    central.stop().await;
    let second: Vec<String> = (0..20).map(|i| format!("while-down-{i}")).collect();
    f.write_all(array(&second).as_bytes()).unwrap();
    let central = test_node("central", &[server.url()], dir.path())
        .watch_inmsg(true)
        .start()
        .await
        .unwrap();
    let third: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    f.write_all(array(&third).as_bytes()).unwrap();
    let all: Vec<String> = first.into_iter().chain(second).chain(third).collect();
    assert_each_once(&rec, &all, Duration::from_secs(20)).await;
    assert!(!erased(&inmsg), "never erased while a writer holds it");
    drop(f);
    assert!(
        wait_until_async(Duration::from_secs(10), || erased(&inmsg)).await,
        "erased once the writer closed it"
    );
    central.stop().await;
    ship1.stop().await;
}
