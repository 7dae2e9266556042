//! Listener `kernel_relay`: established connections relayed by the kernel
//! (sockmap), on both runtimes. Needs root and BPF: skips (or fails under
//! `LBD_TEST_REQUIRE_TOOLS`) where lbd cannot load the relay.
//!
//! Checked through real sockets: a member that speaks first (its greeting
//! is queued before the pairing) and 8 MiB echoed while the client keeps
//! writing, in order; the half-close reaching the member and the member's
//! end reaching the client; byte counters that stay at 0 while the kernel
//! relays (proof that lbd's copy loop is not in the way) and are exact at
//! the close; reloads while connections stream and new ones come; an
//! idle timeout ending a relayed connection; descriptors back where they
//! were.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::streams::{echo_stream, end, settle, stats};
use common::*;
use lbd_test_support::skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOADED: &str = "kernel_relay: the sockmap relay is loaded";

fn config(admin: SocketAddr, bind: SocketAddr, extra: &str, m: &Backend) -> String {
    format!(
        "[admin]\nbind = \"{admin}\"\n\n[[listener]]\nname = \"web\"\nbind = \"{bind}\"\n\
         pool = \"p\"\nkernel_relay = true\n{extra}\n\n[[pool]]\nname = \"p\"\n{}",
        member(m)
    )
}

/// Starts lbd; `None` (after `skip`) when it could not load the relay.
async fn start(rt: &str, config: &str) -> Option<Lbd> {
    let lbd = Lbd::start(rt, 1, config).await;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let log = lbd.log();
        if log.contains(LOADED) {
            return Some(lbd);
        }
        if log.contains("kernel_relay: cannot load") {
            skip(&format!("lbd cannot load the kernel relay here:\n{log}"));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("lbd said nothing about the kernel relay:\n{}", lbd.log());
}

async fn relays_a_streaming_exchange_in_the_kernel(rt: &str) {
    const TOTAL: usize = 8 << 20;
    let m = Backend::start("greeting", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let Some(lbd) = start(rt, &config(admin, bind, "", &m)).await else {
        return;
    };
    let baseline = settled_fds(lbd.pid()).await;

    let (rd, wr) = echo_stream(bind, TOTAL, Duration::ZERO).await;
    // Relayed by the kernel: lbd's counters have not seen a byte yet.
    let s = stats(admin).await;
    assert_eq!(s["listeners"][0]["bytes_in_total"], 0, "{s}");
    assert_eq!(s["listeners"][0]["bytes_out_total"], 0, "{s}");
    // The client's half-close reaches the member, whose end comes back.
    end(&lbd, rd, wr).await;

    let s = settle(admin).await;
    assert_eq!(s["listeners"][0]["bytes_in_total"], TOTAL as u64, "{s}");
    assert_eq!(
        s["listeners"][0]["bytes_out_total"],
        (TOTAL + 9) as u64,
        "{s}"
    );
    fds_back_to(lbd.pid(), baseline, WAIT).await;
}

/// Reloads while relayed connections stream and new ones keep coming:
/// the streams go on, in order, and new connections are relayed too.
async fn reloads_leave_relayed_connections_alone(rt: &str) {
    let m = Backend::start("greeting", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let cfg = config(admin, bind, "", &m);
    let Some(lbd) = start(rt, &cfg).await else {
        return;
    };
    // Two streams of 2 MiB, 16 KiB every 5 ms: about 0.7 s each.
    let streams: Vec<_> = (0..2)
        .map(|_| tokio::spawn(echo_stream(bind, 2 << 20, Duration::from_millis(5))))
        .collect();
    for i in 0..5 {
        let extra = format!("client_idle = \"{}s\"", 30 + i);
        assert!(
            lbd.reload(&config(admin, bind, &extra, &m)).await,
            "reload {i}"
        );
        // A new connection after each reload.
        let (rd, wr) = echo_stream(bind, 64 << 10, Duration::ZERO).await;
        end(&lbd, rd, wr).await;
    }
    for s in streams {
        let (rd, wr) = s.await.expect("stream");
        end(&lbd, rd, wr).await;
    }
    let s = settle(admin).await;
    let want = 2 * (2u64 << 20) + 5 * (64 << 10);
    assert_eq!(s["listeners"][0]["bytes_in_total"], want, "{s}");
    assert_eq!(
        lbd.log().matches(LOADED).count(),
        1,
        "loaded again at a reload"
    );
}

async fn an_idle_relayed_connection_times_out(rt: &str) {
    let m = Backend::start("greeting", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let Some(_lbd) = start(rt, &config(admin, bind, "client_idle = \"1s\"", &m)).await else {
        return;
    };
    let mut c = connect_from(bind, None).await.expect("connect");
    assert_eq!(read_line(&mut c).await.expect("greeting"), "greeting");
    c.write_all(b"ping\n").await.expect("write");
    assert_eq!(read_line(&mut c).await.expect("echo"), "ping");
    let idle = Instant::now();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "an idle relayed connection stayed open");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?} (client_idle 1s)"
    );
}

on_both_runtimes!(
    relays_a_streaming_exchange_in_the_kernel,
    reloads_leave_relayed_connections_alone,
    an_idle_relayed_connection_times_out,
);
