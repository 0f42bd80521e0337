//! A node that requires signatures but has not pinned central's key waits quietly: central's
//! answers cannot be checked, so they change nothing (the message stays queued, never wrongly
//! finished), and the node says once what it waits for — not one warning per resend.

use std::time::Duration;

use steward::{Message, MessageState, SignaturePolicy};
use steward_tests::capture::Captured;
use steward_tests::nodes::test_node;
use steward_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_central_key_unverifiable_answers_are_said_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("steward=warn")
        .with_writer(move || writer.clone())
        .init();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ship1 = test_node("ship1", &urls, dir.path())
        .signatures(SignaturePolicy::Required)
        .start()
        .await
        .unwrap();
    let receipt = ship1
        .send(Message::command("central", "echo", ["hi"]))
        .await
        .unwrap();
    // Several resends (ACK timeout 500 ms, backoff up to 400 ms), each answered by central.
    let resent = steward_tests::wait_until_async(Duration::from_secs(30), || {
        captured.text().contains("ignored an answer")
    })
    .await;
    assert!(resent, "central's answer was never seen");
    let st = ship1.message(&receipt.id).await.unwrap().unwrap();
    let mut later = st.clone();
    for _ in 0..300 {
        later = ship1.message(&receipt.id).await.unwrap().unwrap();
        if later.attempts >= st.attempts + 2 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = later;
    assert!(
        !now.state.is_final() && now.state != MessageState::Received,
        "an unverifiable answer changed the state: {now:?}"
    );
    assert!(
        now.attempts >= st.attempts + 2,
        "resent meanwhile: {st:?} → {now:?}"
    );
    let text = captured.text();
    let said = text.matches("ignored an answer").count();
    assert_eq!(said, 1, "said once, not per resend:\n{text}");
    assert!(text.contains("--central-key-file"), "{text}");
    ship1.stop().await;
    central.stop().await;
}
