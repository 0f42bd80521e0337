//! Self-tests of the steward-tests harness: real nats-server processes,
//! clustering, the fault-injecting TCP proxy and the polling helpers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use steward_tests::{
    free_port, nats_info, wait_until, wait_until_async, wait_until_future, Direction, NatsCluster,
    NatsServer, TcpProxy,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the first line a NATS server sends on a fresh connection.
fn read_first_line(stream: &TcpStream) -> String {
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set read timeout");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read first line from server");
    line
}

/// Starts a loopback echo server in background threads and returns its address.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let addr = listener.local_addr().expect("echo server addr");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut reader = conn.try_clone().expect("clone echo conn");
                let _ = io::copy(&mut reader, &mut conn);
            });
        }
    });
    addr
}

/// Reads exactly `n` bytes (with a timeout) and returns them as a string.
fn read_n(stream: &mut TcpStream, n: usize) -> String {
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set read timeout");
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read echoed bytes");
    String::from_utf8(buf).expect("utf8 echo")
}

/// True if the peer closed the connection (EOF or reset) within the timeout.
fn is_closed_by_peer(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // drain anything sent before the close
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("expected the connection to be closed, got {e}"),
        }
    }
}

#[test]
fn server_starts_and_sends_info() {
    let server = NatsServer::start();
    assert_ne!(server.port(), 4222);
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.pid().is_some());

    let stream = TcpStream::connect(server.addr()).expect("connect to nats-server");
    let line = read_first_line(&stream);
    assert!(
        line.starts_with("INFO {"),
        "unexpected first line: {line:?}"
    );

    let info = server.info().expect("INFO");
    assert_eq!(info["server_name"], server.name());
    assert_eq!(info["port"], u64::from(server.port()));
}

#[test]
fn builder_options_reach_the_server() {
    let server = NatsServer::builder()
        .max_payload(4096)
        .extra_config("authorization { token: \"s3cret\" }")
        .jetstream(true)
        .start();
    let info = server.info().expect("INFO");
    assert_eq!(info["max_payload"], 4096);
    assert_eq!(info["auth_required"], true);
    assert_eq!(info["jetstream"], true);
    let config = std::fs::read_to_string(server.config_path()).expect("read config");
    assert!(config.contains("s3cret"), "config: {config}");
}

#[test]
fn kill_then_restart_on_same_port() {
    let mut server = NatsServer::builder().jetstream(true).start();
    let port = server.port();
    let first_pid = server.pid().expect("running");

    server.kill();
    assert!(server.pid().is_none());
    assert!(!server.is_running());
    assert!(
        wait_until(TIMEOUT, || TcpStream::connect(server.addr()).is_err()),
        "port still accepting after kill"
    );

    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), Some(first_pid));
    assert!(server.is_running());
    let info = server.info().expect("INFO after restart");
    assert_eq!(info["port"], u64::from(port));

    // restart() on a running server kills it first.
    server.restart();
    assert_eq!(server.port(), port);
    assert!(server.info().is_ok());
}

#[test]
fn pause_and_resume() {
    let server = NatsServer::start();
    server.pause();
    // The kernel completes the handshake, but a stopped server sends nothing.
    let mut stream = TcpStream::connect(server.addr()).expect("connect to paused server");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    let mut buf = [0u8; 5];
    let err = stream
        .read(&mut buf)
        .expect_err("a paused server must not send INFO");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "unexpected error: {err}"
    );

    server.resume();
    assert_eq!(read_n(&mut stream, 5), "INFO ");
}

#[test]
fn proxy_forwards_bytes_both_ways() {
    let proxy = TcpProxy::start(echo_server());
    assert_eq!(proxy.url(), format!("nats://127.0.0.1:{}", proxy.port()));
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect to proxy");
    stream.write_all(b"hello").expect("write");
    assert_eq!(read_n(&mut stream, 5), "hello");
    let big = "x".repeat(200_000);
    let mut writer = stream.try_clone().expect("clone");
    let big_clone = big.clone();
    let sender = thread::spawn(move || writer.write_all(big_clone.as_bytes()));
    assert_eq!(read_n(&mut stream, big.len()), big);
    sender.join().expect("sender thread").expect("write big");
    assert_eq!(proxy.connection_count(), 1);
    assert_eq!(proxy.total_connections(), 1);

    drop(stream);
    assert!(
        wait_until(TIMEOUT, || proxy.connection_count() == 0),
        "closed connection still counted"
    );
}

#[test]
fn proxy_forwards_nats_info() {
    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    assert_eq!(proxy.target(), server.addr());
    let info = nats_info(proxy.addr(), TIMEOUT).expect("INFO through proxy");
    assert_eq!(info["server_name"], server.name());
}

#[test]
fn proxy_block_direction_discards_silently() {
    let proxy = TcpProxy::start(echo_server());
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect to proxy");
    stream.write_all(b"a").expect("write");
    assert_eq!(read_n(&mut stream, 1), "a");

    // Replies lost: the echo of "lost" is dropped on its way back.
    proxy.block_direction(Direction::ServerToClient);
    stream.write_all(b"lost").expect("write");
    assert!(wait_until(TIMEOUT, || proxy.discarded_bytes() == 4));
    proxy.unblock();
    stream.write_all(b"b").expect("write");
    assert_eq!(read_n(&mut stream, 1), "b");

    // Requests lost: "gone" never reaches the echo server.
    proxy.block_direction(Direction::ClientToServer);
    stream.write_all(b"gone").expect("write");
    assert!(wait_until(TIMEOUT, || proxy.discarded_bytes() == 8));
    proxy.unblock();
    stream.write_all(b"c").expect("write");
    assert_eq!(read_n(&mut stream, 1), "c");

    assert_eq!(proxy.connection_count(), 1, "blocking must keep it open");
}

#[test]
fn proxy_cut_and_restore() {
    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    let mut before = TcpStream::connect(proxy.addr()).expect("connect");
    assert!(read_first_line(&before).starts_with("INFO "));
    assert!(wait_until(TIMEOUT, || proxy.connection_count() == 1));

    proxy.cut();
    assert!(proxy.is_cut());
    assert!(is_closed_by_peer(&mut before), "cut must close open ones");
    assert!(wait_until(TIMEOUT, || proxy.connection_count() == 0));

    let mut during = TcpStream::connect(proxy.addr()).expect("listener still accepts");
    assert!(is_closed_by_peer(&mut during), "cut must refuse new ones");
    assert!(wait_until(TIMEOUT, || proxy.refused_connections() == 1));
    assert_eq!(proxy.total_connections(), 1);

    proxy.restore();
    let after = TcpStream::connect(proxy.addr()).expect("connect after restore");
    assert!(read_first_line(&after).starts_with("INFO "));
    assert_eq!(proxy.total_connections(), 2);
}

#[tokio::test]
async fn proxy_and_server_work_from_tokio() {
    use tokio::io::AsyncBufReadExt;

    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    let stream = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("tokio connect through proxy");
    let mut line = String::new();
    tokio::time::timeout(
        TIMEOUT,
        tokio::io::BufReader::new(stream).read_line(&mut line),
    )
    .await
    .expect("INFO within timeout")
    .expect("read INFO");
    assert!(line.starts_with("INFO "), "got {line:?}");

    proxy.cut();
    assert!(wait_until_async(TIMEOUT, || proxy.connection_count() == 0).await);
    proxy.restore();
    let addr = proxy.addr();
    assert!(
        wait_until_future(TIMEOUT, || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    );
}

#[test]
fn cluster_of_three_forms_routes() {
    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    for i in 0..3 {
        let peers = cluster.server(i).route_peers().expect("routez");
        assert_eq!(peers.len(), 2, "server {i} peers: {peers:?}");
        let info = cluster.server(i).info().expect("INFO");
        assert_eq!(
            info["cluster"]
                .as_str()
                .map(|c| c.starts_with("steward-cluster-")),
            Some(true)
        );
    }

    let port = cluster.server(1).port();
    cluster.kill(1);
    let gone = cluster.server(1).name().to_owned();
    assert!(wait_until(TIMEOUT, || {
        cluster
            .server(0)
            .route_peers()
            .is_ok_and(|p| !p.contains(&gone))
    }));

    cluster.restart(1);
    assert_eq!(cluster.server(1).port(), port);
    for i in 0..3 {
        assert_eq!(cluster.server(i).route_peers().expect("routez").len(), 2);
    }
}

#[test]
fn free_port_and_wait_until() {
    let a = free_port();
    let b = free_port();
    assert_ne!(a, b);
    assert!(![4222, 6222, 8222].contains(&a));
    TcpListener::bind(("127.0.0.1", a)).expect("free port is bindable");

    let mut calls = 0;
    assert!(wait_until(TIMEOUT, || {
        calls += 1;
        calls == 3
    }));
    assert!(!wait_until(Duration::from_millis(30), || false));
}
