//! A sender waiting costs no CPU. Must hold: while the one probe it sent after a failed attempt
//! is unanswered (the receiver reads but never answers), the publisher sleeps until the probe's
//! ACK timeout instead of waking for the messages queued behind it (it once spun at ~100 % of a
//! core here). Its own test binary, so no other test's CPU is counted.

use std::time::Duration;

use futures::StreamExt;
use steward::Message;
use steward_tests::nodes::test_node;
use steward_tests::NatsServer;

/// This process's CPU time (user + system), from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_waiting_on_an_unanswered_probe_sleeps() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    // A "receiver" that takes every message and never answers.
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut mute = raw.subscribe("mute.command.echo").await.unwrap();
    raw.flush().await.unwrap();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ack_timeout = Duration::from_secs(3);
    let batch = (0..20)
        .map(|i| {
            Message::command("mute", "echo", [format!("m{i}")])
                .with_ack_timeout(ack_timeout)
                .with_retry_wait(Duration::from_millis(50))
        })
        .collect();
    central.send_batch(batch).await.unwrap();
    // 20 first sends, then (after the first ACK timeout) one probe: 21 messages seen.
    for seen in 1..=21 {
        tokio::time::timeout(Duration::from_secs(20), mute.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of 21 sends arrived", seen - 1))
            .unwrap();
    }
    // The probe is out; 19 messages wait behind it for its answer or its ACK timeout (3 s).
    let before = cpu_time();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time() - before;
    assert!(
        t0.elapsed() < ack_timeout,
        "the window must lie within the probe's ACK timeout"
    );
    // Sleeping costs next to nothing; a busy loop would cost close to the full 2 s.
    assert!(
        used < Duration::from_millis(400),
        "the sender used {used:?} of CPU in 2 s while only waiting for a probe's answer"
    );
    // Nothing was sent meanwhile: the 19 stay behind the probe.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), mute.next())
            .await
            .is_err(),
        "nothing may be sent while the probe is unanswered"
    );
    central.stop().await;
}
