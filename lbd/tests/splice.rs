//! Listener `splice`: bulk directions move socket -> pipe -> socket with
//! `splice(2)`, on both runtimes, through real loopback sockets.
//!
//! Checked: 8 MiB echoed while the client keeps writing, in order, on two
//! connections at once while lbd reloads; the half-close reaching the
//! member and its end coming back; exact byte counters; that pipes were
//! used at all (lbd holds pipe descriptors afterwards, its cache; with
//! `splice` off it holds none, so the check can fail); a client that
//! resets in the middle of a transfer, whose pipe still holding data is
//! closed (descriptors back to where they were, a connection later); the
//! idle timeout and `on_maint` ending a connection that has spliced.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::streams::{echo_stream, end, settle};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(admin: SocketAddr, bind: SocketAddr, splice: bool, extra: &str, m: &Backend) -> String {
    format!(
        "[admin]\nbind = \"{admin}\"\n\n[[listener]]\nname = \"web\"\nbind = \"{bind}\"\n\
         pool = \"p\"\nsplice = {splice}\n{extra}\n\n[[pool]]\nname = \"p\"\n\
         on_maint = \"shutdown_sessions\"\n{}",
        member(m)
    )
}

/// Pipes process `pid` holds.
fn pipes(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

async fn streams_bulk_through_pipes(rt: &str) {
    const TOTAL: usize = 8 << 20;
    let m = Backend::start("greeting", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &config(admin, bind, true, "", &m)).await;
    let before = pipes(lbd.pid());

    // Two streams at once, while lbd reloads under them.
    let streams: Vec<_> = (0..2)
        .map(|_| tokio::spawn(echo_stream(bind, TOTAL, Duration::ZERO)))
        .collect();
    for i in 0..3 {
        let extra = format!("client_idle = \"{}s\"", 30 + i);
        assert!(
            lbd.reload(&config(admin, bind, true, &extra, &m)).await,
            "reload {i}"
        );
    }
    for s in streams {
        let (rd, wr) = s.await.expect("stream");
        // The client's half-close reaches the member, whose end comes back.
        end(&lbd, rd, wr).await;
    }
    let s = settle(admin).await;
    assert_eq!(s["listeners"][0]["bytes_in_total"], 2 * TOTAL as u64, "{s}");
    assert_eq!(
        s["listeners"][0]["bytes_out_total"],
        2 * (TOTAL + 9) as u64,
        "{s}"
    );
    let after = pipes(lbd.pid());
    assert!(
        after > before,
        "no pipe was used ({before} before, {after} after)\n{}",
        lbd.log()
    );
}

/// The same exchange without `splice` makes no pipe: what
/// `streams_bulk_through_pipes` counts is splicing's.
async fn without_splice_no_pipe_is_made(rt: &str) {
    let m = Backend::start("greeting", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &config(admin, bind, false, "", &m)).await;
    let before = pipes(lbd.pid());
    let (rd, wr) = echo_stream(bind, 4 << 20, Duration::ZERO).await;
    end(&lbd, rd, wr).await;
    settle(admin).await;
    assert_eq!(pipes(lbd.pid()), before, "{}", lbd.log());
}

/// A client that writes bulk without reading the echo, then resets: the
/// member's direction is stuck with a full pipe when the reset comes.
/// Nothing leaks: once a warm-up connection filled the pipe cache, the
/// descriptors go back to that count.
async fn a_reset_mid_transfer_leaks_nothing(rt: &str) {
    let m = Backend::start("greeting", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &config(admin, bind, true, "", &m)).await;
    let (rd, wr) = echo_stream(bind, 4 << 20, Duration::ZERO).await;
    end(&lbd, rd, wr).await;
    settle(admin).await;
    let baseline = settled_fds(lbd.pid()).await;

    for _ in 0..3 {
        let mut c = connect_from(bind, None).await.expect("connect");
        let chunk = vec![7u8; 64 << 10];
        // Bounded: 8 MiB at most, or until the unread echo stalls it.
        for _ in 0..128 {
            match tokio::time::timeout(Duration::from_millis(200), c.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(c);
    }
    settle(admin).await;
    fds_back_to(lbd.pid(), baseline, WAIT).await;
}

/// A connection whose directions have spliced (4 MiB echoed) and now
/// wait in a splice's readiness wait: the idle timeout still ends it, and
/// so does its member going into maint (`on_maint`), with a reset.
async fn idle_and_maint_end_a_spliced_connection(rt: &str) {
    let m = Backend::start("greeting", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(
        rt,
        1,
        &config(admin, bind, true, "client_idle = \"1s\"", &m),
    )
    .await;
    let (mut rd, _wr) = echo_stream(bind, 4 << 20, Duration::ZERO).await;
    let idle = std::time::Instant::now();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "an idle spliced connection stayed open");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?} (client_idle 1s)\n{}",
        lbd.log()
    );

    assert!(
        lbd.reload(&config(admin, bind, true, "", &m)).await,
        "reload"
    );
    let (mut rd, _wr) = echo_stream(bind, 4 << 20, Duration::ZERO).await;
    let path = format!("/api/pools/p/members/{}", m.addr);
    let (code, text) = common::apiserver::http_request_once(
        admin,
        "PUT",
        &path,
        &[],
        b"{\"admin_state\": \"maint\"}",
    )
    .await
    .expect("PUT");
    assert_eq!(code, 200, "{text}");
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(WAIT, rd.read(&mut buf)).await;
    assert!(
        matches!(&end, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "not reset when its member went into maint: {end:?}\n{}",
        lbd.log()
    );
}

on_both_runtimes!(
    idle_and_maint_end_a_spliced_connection,
    streams_bulk_through_pipes,
    without_splice_no_pipe_is_made,
    a_reset_mid_transfer_leaks_nothing,
);
