//! Self-checks of the test-side apiserver backends (`common::apiserver`);
//! no lbd involved.

mod common;

use std::io;
use std::time::Duration;

use common::apiserver::{http_get, http_get_once, ApiServer, ClientCreds, SilentServer};
use common::{connect_from, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Polls `cond` until it holds, failing after [`WAIT`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `addr` refuses new connections.
async fn refuses(addr: std::net::SocketAddr) -> bool {
    matches!(connect_from(addr, None).await, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// A TLS connection to `server` trusting its `ca_pem_path()`.
async fn tls_connect(
    server: &ApiServer,
    server_name: &str,
    creds: Option<&ClientCreds>,
) -> io::Result<TlsStream<TcpStream>> {
    let ca = server.ca_pem_path().expect("a TLS server has a CA file");
    common::apiserver::tls_connect(server.addr(), &ca, server_name, creds).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_toggles_and_counts() {
    let api = ApiServer::start("a", false).await;
    assert_eq!(
        http_get_once(api.addr(), "/readyz").await.unwrap(),
        (200, "ok".into())
    );
    api.set_ready(false);
    for path in ["/readyz", "/healthz?verbose"] {
        assert_eq!(
            http_get_once(api.addr(), path).await.unwrap(),
            (503, "not ready".into())
        );
    }
    assert_eq!(
        http_get_once(api.addr(), "/livez").await.unwrap(),
        (200, "ok".into())
    );
    api.wait_health_answers(503, 2).await;
    assert_eq!(api.health_answers(200), 1, "/livez is not counted");
    assert_eq!(api.health_answers(503), 2);
    assert_eq!(api.data_requests(), 0);
    api.set_ready(true);
    assert_eq!(http_get_once(api.addr(), "/readyz").await.unwrap().0, 200);
    assert_eq!(api.health_answers(200), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_data_tag() {
    let api = ApiServer::start("blue", false).await;
    let mut conn = connect_from(api.addr(), None).await.unwrap();
    assert_eq!(http_get(&mut conn, "/readyz").await.unwrap().0, 200);
    assert_eq!(
        http_get(&mut conn, "/who").await.unwrap(),
        (200, "blue\n".into())
    );
    assert_eq!(api.open_connections(), 1);
    assert_eq!(api.accepted(), 1);
    assert_eq!(api.data_requests(), 1);
    drop(conn);
    eventually("connection closed", || api.open_connections() == 0).await;

    // `Connection: close` is honoured.
    let mut conn = connect_from(api.addr(), None).await.unwrap();
    conn.write_all(b"GET /who HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(WAIT, conn.read_to_string(&mut reply))
        .await
        .expect("server closes")
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    assert!(reply.ends_with("\r\n\r\nblue\n"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dropped() {
    let api = ApiServer::start("g", false).await;
    let mut conn = connect_from(api.addr(), None).await.unwrap();
    conn.write_all(b"\x16\x03\x01 hello\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, conn.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // An endless head is cut off too.
    let mut conn = connect_from(api.addr(), None).await.unwrap();
    let _ = conn.write_all(&[b'x'; 64 * 1024]).await;
    let read = tokio::time::timeout(WAIT, conn.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert_eq!(http_get_once(api.addr(), "/readyz").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_never_answers() {
    let api = ApiServer::start("s", false).await;
    let mut kept = connect_from(api.addr(), None).await.unwrap();
    assert_eq!(http_get(&mut kept, "/readyz").await.unwrap().0, 200);
    api.set_silent(true);
    let mut fresh = connect_from(api.addr(), None).await.unwrap();
    for conn in [&mut kept, &mut fresh] {
        conn.write_all(b"GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await;
        assert!(read.is_err(), "silent server answered: {read:?}");
    }
    assert_eq!(api.health_answers(200), 1);
    assert_eq!(api.open_connections(), 2);

    let silent = SilentServer::start().await;
    let mut conn = connect_from(silent.addr(), None).await.unwrap();
    conn.write_all(b"GET /readyz HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await;
    assert!(read.is_err(), "silent server answered: {read:?}");
    assert_eq!(silent.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_refuses_and_resets() {
    let api = ApiServer::start("k", false).await;
    let addr = api.addr();
    let mut conn = connect_from(addr, None).await.unwrap();
    assert_eq!(http_get(&mut conn, "/readyz").await.unwrap().0, 200);
    api.kill().await;
    assert!(refuses(addr).await, "port still accepts after kill");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, conn.read(&mut buf)).await;
    assert!(
        matches!(&read, Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_listening_keeps_open_connections() {
    let api = ApiServer::start("l", false).await;
    let mut conn = connect_from(api.addr(), None).await.unwrap();
    assert_eq!(http_get(&mut conn, "/readyz").await.unwrap().0, 200);
    api.stop_listening().await;
    assert!(refuses(api.addr()).await, "port still accepts");
    assert_eq!(
        http_get(&mut conn, "/who").await.unwrap(),
        (200, "l\n".into())
    );
    api.set_ready(false);
    assert_eq!(http_get(&mut conn, "/readyz").await.unwrap().0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_survives_bad_clients() {
    let api = ApiServer::start("t", true).await;
    // Plain HTTP to the TLS port: dropped, server unharmed.
    let mut plain = connect_from(api.addr(), None).await.unwrap();
    assert!(http_get(&mut plain, "/readyz").await.is_err());

    for name in ["localhost", "127.0.0.1"] {
        let mut conn = tls_connect(&api, name, None).await.unwrap();
        assert_eq!(
            http_get(&mut conn, "/readyz").await.unwrap(),
            (200, "ok".into())
        );
        assert_eq!(
            http_get(&mut conn, "/who").await.unwrap(),
            (200, "t\n".into())
        );
    }
    // A name the certificate does not cover fails the handshake.
    assert!(tls_connect(&api, "example.com", None).await.is_err());
    api.set_ready(false);
    let mut conn = tls_connect(&api, "localhost", None).await.unwrap();
    assert_eq!(http_get(&mut conn, "/readyz").await.unwrap().0, 503);
    assert_eq!(api.health_answers(200), 2);
    assert_eq!(api.health_answers(503), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth() {
    let (api, creds) = ApiServer::start_tls_with_client_auth("m").await;
    let mut conn = tls_connect(&api, "localhost", Some(&creds)).await.unwrap();
    assert_eq!(
        http_get(&mut conn, "/who").await.unwrap(),
        (200, "m\n".into())
    );
    // Without a client certificate: the handshake or the first exchange fails.
    let refused = match tls_connect(&api, "localhost", None).await {
        Err(_) => true,
        Ok(mut conn) => http_get(&mut conn, "/readyz").await.is_err(),
    };
    assert!(refused, "served a client without a certificate");
    assert_eq!(api.health_answers(200), 0);
}
