//! Streaming exchanges through lbd, for the relay tests (`kernel_relay`,
//! `splice`): a greeting echo member, data checked in order, the
//! half-close and its answer, and the stats once connections are gone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::apiserver::http_request_once;
use super::{connect_from, Lbd, WAIT};

pub async fn stats(admin: SocketAddr) -> Value {
    let (code, body) = http_request_once(admin, "GET", "/stats.json", &[], b"")
        .await
        .expect("stats");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// One connection through lbd to a greeting echo member: the greeting,
/// then `total` bytes written in chunks (a pause of `pause` between them)
/// while the echo is read back and checked, in order. Returns the halves,
/// the echo complete, for the caller to end.
pub async fn echo_stream(
    bind: SocketAddr,
    total: usize,
    pause: Duration,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let client = connect_from(bind, None).await.expect("connect");
    let (mut rd, mut wr) = client.into_split();
    // The member's greeting was queued on lbd's socket before the pairing.
    let mut greeting = [0u8; 9];
    tokio::time::timeout(WAIT, rd.read_exact(&mut greeting))
        .await
        .expect("greeting in time")
        .expect("greeting");
    assert_eq!(&greeting, b"greeting\n");
    let writer = tokio::spawn(async move {
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(16 << 10) {
            wr.write_all(chunk).await.expect("write");
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        wr
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    while got < total {
        let n = tokio::time::timeout(WAIT, rd.read(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert!(n > 0, "EOF after {got} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, ((got + k) % 251) as u8, "byte {} out of order", got + k);
        }
        got += n;
    }
    (rd, writer.await.expect("writer"))
}

/// Half-closes, and expects the member's orderly end back.
pub async fn end(
    lbd: &Lbd,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
) {
    wr.shutdown().await.expect("shutdown(WR)");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WAIT, rd.read_to_end(&mut rest)).await;
    assert!(
        matches!(end, Ok(Ok(0))),
        "no orderly end after the half-close: {end:?}\n{}",
        lbd.log()
    );
}

pub async fn settle(admin: SocketAddr) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut s = stats(admin).await;
    while s["current_connections"] != 0 {
        assert!(Instant::now() < deadline, "connections never closed: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = stats(admin).await;
    }
    s
}
