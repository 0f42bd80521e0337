//! Connecting to the broker securely: every way nats-server authenticates clients (user and
//! password, token, nkey, credentials file with JWTs in operator mode, TLS with a CA, mutual
//! TLS), each against a real nats-server configured for it, with certificates and keys
//! generated here. Right credentials deliver a shellCommand end to end with its result; wrong
//! ones fail the start with `ErrorKind::BrokerAuth` saying what was refused, and nothing runs.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use steward::{
    BrokerAuth, ErrorKind, ErrorReport, ErrorReportKind, Message, NodeBuilder, ResultStatus,
};
use steward_tests::nodes::test_node;
use steward_tests::security::{self, Operator, Pki};
use steward_tests::{free_port, wait_until_async, NatsServer};

const WAIT: Duration = Duration::from_secs(20);

/// A server with `config` added to the harness's generated config.
fn server(config: &str) -> NatsServer {
    NatsServer::builder().extra_config(config).start()
}

/// Starts central and ship1 with the same security settings on `url`, sends a shellCommand
/// from central to ship1 and checks its result comes back.
async fn round_trip(url: &str, dir: &Path, secure: impl Fn(NodeBuilder) -> NodeBuilder) {
    let urls = vec![url.to_owned()];
    let central = secure(test_node("central", &urls, dir))
        .start()
        .await
        .expect("central starts with the right credentials");
    let ship1 = secure(test_node("ship1", &urls, dir))
        .start()
        .await
        .expect("ship1 starts with the right credentials");
    assert!(central.is_connected() && ship1.is_connected());
    let receipt = central
        .send(Message::command(
            "ship1",
            "shellCommand",
            ["bash", "-c", "echo secure hello from $0"],
        ))
        .await
        .unwrap();
    let result = tokio::time::timeout(WAIT, receipt.result())
        .await
        .expect("result in time")
        .expect("result");
    assert_eq!(result.status, ResultStatus::Ok);
    assert_eq!(result.stdout, "secure hello from bash\n");
    assert_eq!(result.node, "ship1");
    ship1.stop().await;
    central.stop().await;
}

/// A start that must be refused: the error is `BrokerAuth` and its text contains each of
/// `expect`. Nothing ran: a message waiting in the node's `inmsg.txt` was not taken in, and
/// the data directory is free again (checked by `then`, which starts a node there).
async fn refused(
    url: &str,
    dir: &Path,
    name: &str,
    secure: impl Fn(NodeBuilder) -> NodeBuilder,
    expect: &[&str],
) -> String {
    let node_dir = dir.join(name);
    std::fs::create_dir_all(&node_dir).unwrap();
    let inmsg = node_dir.join(steward::INMSG);
    let waiting =
        r#"[{"toNode":"central","method":"echo","commandOrEvent":"command","data":["x"]}]"#;
    std::fs::write(&inmsg, waiting).unwrap();
    let started = std::time::Instant::now();
    let err = match secure(test_node(name, &[url.to_owned()], dir))
        .watch_inmsg(true)
        .start()
        .await
    {
        Ok(node) => {
            node.stop().await;
            panic!("{name} started although the broker must refuse it");
        }
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::BrokerAuth, "{err}");
    let text = err.to_string();
    for e in expect {
        assert!(text.contains(e), "{text:?} does not say {e:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal took {:?}: it must not wait for a retry loop",
        started.elapsed()
    );
    // Nothing ran: the waiting message is still in inmsg.txt, untouched.
    assert_eq!(std::fs::read_to_string(&inmsg).unwrap(), waiting);
    std::fs::remove_file(&inmsg).unwrap();
    text
}

/// The data directory of a refused node is usable right after (no lock left behind).
async fn starts_afterwards(
    url: &str,
    dir: &Path,
    name: &str,
    secure: impl Fn(NodeBuilder) -> NodeBuilder,
) {
    let node = secure(test_node(name, &[url.to_owned()], dir))
        .start()
        .await
        .expect("the node starts with the right settings in the same data directory");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let server = server(&security::user_password_config("steward", "s3cret pass"));
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let right = |b: NodeBuilder| b.broker_user_password("steward", "s3cret pass");
    round_trip(&url, dir.path(), right).await;

    let text = refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_user_password("steward", "wrong"),
        &[&url, "\"steward\"", "password were not accepted"],
    )
    .await;
    assert!(!text.contains("wrong"), "the password leaked into {text:?}");
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_user_password("nobody", "s3cret pass"),
        &["\"nobody\""],
    )
    .await;
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b,
        &["requires authentication and none was given"],
    )
    .await;
    starts_afterwards(&url, dir.path(), "ship2", right).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let server = server(&security::token_config("t0ken-abc"));
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    round_trip(&url, dir.path(), |b| b.broker_token("t0ken-abc")).await;
    let text = refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_token("t0ken-xyz"),
        &["token was not accepted"],
    )
    .await;
    assert!(!text.contains("t0ken"), "the token leaked into {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_and_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let server = server(&security::nkey_config(&user.public_key()));
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    round_trip(&url, dir.path(), |b| b.broker_nkey_seed(seed.as_str())).await;

    let seed_file = dir.path().join("ship.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    starts_afterwards(&url, dir.path(), "ship3", |b| {
        b.broker_nkey_seed_file(&seed_file)
    })
    .await;

    let stranger = nkeys::KeyPair::new_user();
    let stranger_seed = stranger.seed().unwrap();
    let text = refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_nkey_seed(stranger_seed.as_str()),
        &[&stranger.public_key(), "was not accepted"],
    )
    .await;
    assert!(
        !text.contains(&stranger_seed),
        "the seed leaked into {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_file_in_operator_mode() {
    let op = Operator::new();
    let server = server(&op.server_config());
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let creds = op.write_creds(&dir.path().join("node.creds"), "node", None);
    round_trip(&url, dir.path(), |b| b.broker_credentials_file(&creds)).await;

    // A user JWT that expired two hours ago.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = op.write_creds(&dir.path().join("expired.creds"), "old", Some(now - 7300));
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_credentials_file(&expired),
        &["expired.creds", "expired 2 h ago", "nsc generate creds"],
    )
    .await;
    // A user of an account the broker does not know (another operator's).
    let other = Operator::new();
    let foreign = other.write_creds(&dir.path().join("foreign.creds"), "foreign", None);
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_credentials_file(&foreign),
        &["foreign.creds"],
    )
    .await;
    // No credentials at all.
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b,
        &["requires authentication"],
    )
    .await;
    starts_afterwards(&url, dir.path(), "ship2", |b| {
        b.broker_credentials_file(&creds)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_bundle() {
    let pki = Pki::generate();
    let server = server(&pki.server_tls_config(false));
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    round_trip(&url, dir.path(), |b| b.broker_tls_ca(&pki.ca)).await;
    // The broker asks for TLS; without our CA its certificate is not trusted.
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b,
        &["certificate is not trusted", "CA"],
    )
    .await;
    // Trusting another CA is no better.
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_tls_ca(&pki.rogue_ca),
        &["certificate is not trusted"],
    )
    .await;
    // The certificate names 127.0.0.1 and localhost; localhost works too.
    let by_name = format!("tls://localhost:{}", server.port());
    starts_afterwards(&by_name, dir.path(), "ship2", |b| b.broker_tls_ca(&pki.ca)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_against_a_plain_broker_is_refused() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate();
    refused(
        &server.url(),
        dir.path(),
        "ship2",
        |b| b.broker_tls_ca(&pki.ca),
        &["TLS handshake failed", "may not offer it"],
    )
    .await;
    refused(
        &server.url(),
        dir.path(),
        "ship2",
        |b| b.broker_require_tls(true),
        &["TLS handshake failed"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::generate();
    let server = server(&pki.server_tls_config(true));
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    round_trip(&url, dir.path(), |b| {
        b.broker_tls_ca(&pki.ca)
            .broker_tls_client_cert(&pki.client.cert, &pki.client.key)
    })
    .await;
    // No client certificate.
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| b.broker_tls_ca(&pki.ca),
        &["refused the TLS handshake", "requires a client certificate"],
    )
    .await;
    // A client certificate from a CA the broker does not trust.
    refused(
        &url,
        dir.path(),
        "ship2",
        |b| {
            b.broker_tls_ca(&pki.ca)
                .broker_tls_client_cert(&pki.rogue_client.cert, &pki.rogue_client.key)
        },
        &[
            "refused the TLS handshake",
            "did not accept the client certificate",
            "rogue-client.pem",
        ],
    )
    .await;
}

/// Unusable local files are configuration errors naming the file, before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_files_are_config_errors() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let missing = dir.path().join("missing.creds");
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    type Secure<'a> = Box<dyn Fn(NodeBuilder) -> NodeBuilder + 'a>;
    let cases: Vec<(Secure, &str)> = vec![
        (
            Box::new(|b| b.broker_credentials_file(&missing)),
            "missing.creds",
        ),
        (
            Box::new(|b| b.broker_nkey_seed("SUNOTASEED")),
            "not a valid nkey seed",
        ),
        (
            Box::new(|b| b.broker_credentials_file(&not_pem)),
            "not-a-cert.pem",
        ),
        (
            Box::new(|b| b.broker_tls_ca(&not_pem)),
            "holds no PEM certificate",
        ),
        (
            Box::new(|b| {
                b.broker_tls(steward::BrokerTls {
                    client_cert: Some(not_pem.clone()),
                    ..Default::default()
                })
            }),
            "without its private key",
        ),
    ];
    for (i, (secure, expect)) in cases.iter().enumerate() {
        let err = secure(test_node(&format!("n{i}"), &urls, dir.path()))
            .start()
            .await
            .err()
            .unwrap_or_else(|| panic!("case {i} started"));
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(
            err.to_string().contains(expect),
            "{err} does not say {expect:?}"
        );
    }
    // The seed never appears in the message about it.
    let err = test_node("n9", &urls, dir.path())
        .broker_nkey_seed("SUAXYZNOTREAL")
        .start()
        .await
        .err()
        .unwrap();
    assert!(!err.to_string().contains("SUAXYZNOTREAL"), "{err}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    for auth in [
        BrokerAuth::UserPassword {
            user: "steward".into(),
            password: "pa55word".into(),
        },
        BrokerAuth::Token("t0ken-abc".into()),
        BrokerAuth::NkeySeed(seed.as_str().into()),
    ] {
        let b = steward::Node::builder("ship1").broker_auth(auth);
        let shown = format!("{:?}", b.config());
        for secret in ["pa55word", "t0ken-abc", seed.as_str()] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("***"), "{shown}");
    }
}

/// Collects the node's error reports of kind `BrokerAuth`.
fn auth_reports(node: &steward::Node) -> Arc<Mutex<Vec<ErrorReport>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    node.on_error(move |r| {
        if r.kind == ErrorReportKind::BrokerAuth {
            s.lock().unwrap().push(r.clone());
        }
    });
    seen
}

/// Credentials changed under a running node: the refusal on reconnect is reported once through
/// the error reporting (not a silent retry loop); when the credentials work again the node
/// reconnects and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_revoked_while_running_are_reported() {
    let mut server = server(&security::user_password_config("steward", "first"));
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let node = test_node("ship1", &urls, dir.path())
        .broker_user_password("steward", "first")
        .start()
        .await
        .unwrap();
    let seen = auth_reports(&node);
    server.reload_with_extra_config(security::user_password_config("steward", "second"));
    assert!(
        wait_until_async(WAIT, || !seen.lock().unwrap().is_empty()).await,
        "no BrokerAuth report after the password changed"
    );
    let report = seen.lock().unwrap()[0].clone();
    assert!(report.reason.contains("\"steward\""), "{}", report.reason);
    assert!(report.reason.contains("not accepted"), "{}", report.reason);
    assert!(wait_until_async(WAIT, || !node.is_connected()).await);
    // Back to the old password: the node reconnects by itself.
    server.reload_with_extra_config(security::user_password_config("steward", "first"));
    assert!(
        wait_until_async(WAIT, || node.is_connected()).await,
        "no reconnect once the credentials were accepted again"
    );
    let echo = node
        .send(Message::command("ship1", "echo", ["back"]))
        .await
        .unwrap();
    let r = tokio::time::timeout(WAIT, echo.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.stdout, "back");
    assert_eq!(seen.lock().unwrap().len(), 1, "one report per outage");
    node.stop().await;
}

/// A node started while its broker is down starts offline (no error); when the broker comes
/// up and refuses it, that is reported through the error reporting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_start_then_refused_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate();
    let auth_port = free_port();
    let tls_port = free_port();
    let auth_node = test_node(
        "ship1",
        &[format!("nats://127.0.0.1:{auth_port}")],
        dir.path(),
    )
    .broker_user_password("steward", "wrong")
    .start()
    .await
    .expect("an unreachable broker does not fail the start");
    let tls_node = test_node(
        "ship2",
        &[format!("nats://127.0.0.1:{tls_port}")],
        dir.path(),
    )
    .start()
    .await
    .expect("an unreachable broker does not fail the start");
    let auth_seen = auth_reports(&auth_node);
    let tls_seen = auth_reports(&tls_node);
    let _auth_server = NatsServer::builder()
        .port(auth_port)
        .extra_config(security::user_password_config("steward", "right"))
        .start();
    let _tls_server = NatsServer::builder()
        .port(tls_port)
        .extra_config(pki.server_tls_config(false))
        .start();
    assert!(
        wait_until_async(WAIT, || !auth_seen.lock().unwrap().is_empty()).await,
        "no report of the refused password"
    );
    assert!(auth_seen.lock().unwrap()[0].reason.contains("not accepted"));
    assert!(
        wait_until_async(WAIT, || !tls_seen.lock().unwrap().is_empty()).await,
        "no report of the untrusted certificate"
    );
    let reason = tls_seen.lock().unwrap()[0].reason.clone();
    assert!(reason.contains("certificate is not trusted"), "{reason}");
    auth_node.stop().await;
    tls_node.stop().await;
}

/// A user JWT that expires while the node runs: the broker drops the connection, and the node
/// reports that its credentials expired (once) instead of retrying silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_expiring_while_running_are_reported() {
    let op = Operator::new();
    let server = server(&op.server_config());
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let creds = op.write_creds(&dir.path().join("short.creds"), "short", Some(now + 3));
    let node = test_node("ship1", &[server.url()], dir.path())
        .broker_credentials_file(&creds)
        .start()
        .await
        .expect("the JWT is still valid at start");
    let seen = auth_reports(&node);
    assert!(
        wait_until_async(WAIT, || !seen.lock().unwrap().is_empty()).await,
        "no BrokerAuth report after the user JWT expired"
    );
    let reason = seen.lock().unwrap()[0].reason.clone();
    assert!(reason.contains("short.creds"), "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    // The broker's error comes just before it closes the connection.
    assert!(wait_until_async(WAIT, || !node.is_connected()).await);
    // A reconnect within the expiry second may still be accepted (the broker counts whole
    // seconds), which starts a new outage; once the JWT is past, refusals are not reported again.
    let past = UNIX_EPOCH + Duration::from_secs((now + 5) as u64);
    if let Ok(left) = past.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let settled = seen.lock().unwrap().len();
    // Absence can only be checked over time: the client retries several times meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.stop().await;
    assert_eq!(
        seen.lock().unwrap().len(),
        settled,
        "one report per outage: {:?}",
        seen.lock().unwrap()
    );
}
