//! Memory a proxied connection can pin. 1,000 clients that never read, with
//! members streaming to them, leave every member-to-client direction of lbd
//! stuck in a write: lbd's RSS must stay far below one large buffer per
//! connection, and once the clients are gone it must come back near where it
//! started (freed buffers returned to the operating system).
//!
//! The sockets are set up so that the kernel side stays small (a client MSS
//! of 1460 as on a real network, small client receive and member send
//! buffers): the test is about lbd's own memory, and must not push the whole
//! machine into TCP memory pressure.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Clients that never read.
const N: usize = 1000;
/// A member counts its connection as stuck after this long without room to
/// write (it keeps writing whenever room appears).
const STALL: Duration = Duration::from_secs(1);
/// A member stops after this many bytes on one connection: far more than the
/// socket buffers of a client that does not read can take.
const MAX_PER_CONN: usize = 16 << 20;
/// RSS with every connection stuck. With one 256 KiB buffer pinned per
/// stuck direction lbd went from 8 MiB to 165-241 MiB; now about 30 MiB.
const STUCK_LIMIT_KIB: u64 = 80 << 10;
/// How far above its start RSS may stay after every connection closed
/// (before: up to 190 MiB above it were kept; now 3-5 MiB a few seconds
/// later, up to 11 MiB before the free lists are trimmed).
const AFTER_MARGIN_KIB: u64 = 12 << 10;

/// One 1,000-connection test at a time: both runtimes' tests in parallel
/// would double the load on a small machine and blur the measurements.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's soft open-file limit to the hard limit: the test
/// holds two sockets per connection.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    let need = (3 * N + 256) as u64;
    assert!(
        lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= need,
        "open file limit {} is below the {need} this test needs (ulimit -n)",
        lim.rlim_cur
    );
}

/// lbd's resident memory in KiB (`VmRSS`).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Counts of what the streaming members saw.
#[derive(Default)]
struct Tally {
    accepted: AtomicUsize,
    stuck: AtomicUsize,
    ended: AtomicUsize,
    overran: AtomicUsize,
}

/// A member that streams to every connection: it writes whenever the socket
/// has room, until the connection fails or `MAX_PER_CONN` bytes.
async fn streaming_member(tally: Arc<Tally>) -> SocketAddr {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    // Advertised to lbd in the SYN-ACK: keeps lbd's socket buffers towards
    // the member at real-network sizes.
    socket.set_mss(1460).expect("TCP_MAXSEG");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).expect("bind member");
    socket.listen(1024).expect("listen");
    socket.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(socket.into()).expect("tokio listener");
    let addr = listener.local_addr().expect("member addr");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tally.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = socket2::SockRef::from(&conn).set_send_buffer_size(32 << 10);
            tokio::spawn(stream_to(conn, Arc::clone(&tally)));
        }
    });
    addr
}

async fn stream_to(conn: TcpStream, tally: Arc<Tally>) {
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0usize;
    let mut counted = false;
    loop {
        match conn.try_write(&chunk) {
            Ok(n) => {
                sent += n;
                if sent > MAX_PER_CONN {
                    tally.overran.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        // Full: wait for room (or an error: lbd closed the connection).
        tokio::select! {
            ready = conn.writable() => if ready.is_err() { break },
            _ = tokio::time::sleep(STALL), if !counted => {
                counted = true;
                tally.stuck.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally.ended.fetch_add(1, Ordering::Relaxed);
}

/// A client as on a real network (MSS 1460) with a small receive buffer.
async fn quiet_client(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(16 << 10)?;
    socket2::SockRef::from(&socket).set_mss(1460)?;
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Waits (bounded by `within`) until `done` holds, failing with `what`.
async fn wait_until(within: Duration, what: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stuck_clients_pin_little_memory_and_it_comes_back(rt: &str) {
    let _one = ONE_AT_A_TIME.lock().await;
    raise_nofile();
    let tally = Arc::new(Tally::default());
    let member = streaming_member(Arc::clone(&tally)).await;
    let bind = free_addr();
    let cfg = format!(
        "[[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\
         client_idle = \"300s\"\nmember_idle = \"300s\"\n\n\
         [[pool]]\nname = \"p\"\n\n[[pool.member]]\naddress = \"127.0.0.1\"\nport = {}\n",
        member.port()
    );
    let lbd = Lbd::start(rt, 2, &cfg).await;

    // Baseline: lbd warmed up by a few connections that came and went.
    for _ in 0..10 {
        let before = tally.accepted.load(Ordering::Relaxed);
        let c = quiet_client(bind).await.expect("warm-up connect");
        wait_until(
            WAIT,
            || "warm-up not proxied".into(),
            || tally.accepted.load(Ordering::Relaxed) > before,
        )
        .await;
        drop(c);
    }
    wait_until(
        WAIT,
        || "warm-up connections not closed".into(),
        || tally.ended.load(Ordering::Relaxed) == 10,
    )
    .await;
    let baseline = rss_kib(lbd.pid());

    // N clients that never read (in batches, within the listen backlog).
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N / 100 {
        let batch: Vec<_> = (0..100).map(|_| tokio::spawn(quiet_client(bind))).collect();
        for c in batch {
            clients.push(c.await.expect("task").expect("connect"));
        }
    }
    let stuck = || tally.stuck.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(90),
        || format!("only {} of {N} members saw their connection stall", stuck()),
        || stuck() >= N,
    )
    .await;
    assert_eq!(tally.overran.load(Ordering::Relaxed), 0, "a client read?");
    // Let lbd settle with everything stuck, then take the highest reading.
    let mut held = 0;
    for _ in 0..10 {
        held = held.max(rss_kib(lbd.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With every connection stuck, holding what they may of lbd's buffers
    // (on io_uring, the worker's provided-buffer ring runs dry), a client
    // that reads is still served.
    let mut reader = TcpStream::connect(bind).await.expect("connect while stuck");
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0usize;
    let deadline = Instant::now() + WAIT;
    while got < 1 << 20 {
        assert!(
            Instant::now() < deadline,
            "a reading client got only {got} bytes while {N} others were stuck"
        );
        match tokio::time::timeout(WAIT, reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got += n,
            other => panic!("a reading client's read ended: {other:?} after {got} bytes"),
        }
    }
    drop(reader);

    // All clients go away (with unread data: a reset), lbd closes both sides.
    drop(clients);
    let ended = || tally.ended.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(60),
        || {
            format!(
                "{} of {N} member connections closed",
                ended().saturating_sub(10)
            )
        },
        || ended() >= N + 10,
    )
    .await;
    let closed_at = Instant::now();
    let after_limit = baseline + AFTER_MARGIN_KIB;
    let deadline = closed_at + Duration::from_secs(15);
    let mut after = rss_kib(lbd.pid());
    while after > after_limit && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss_kib(lbd.pid());
    }
    eprintln!(
        "{rt}: lbd RSS baseline {} MiB, {N} stuck {} MiB, after close {} MiB ({:?} after the last close)",
        baseline >> 10,
        held >> 10,
        after >> 10,
        closed_at.elapsed()
    );
    assert!(
        held < STUCK_LIMIT_KIB,
        "{N} stuck connections took lbd to {held} KiB (limit {STUCK_LIMIT_KIB}, baseline {baseline})"
    );
    assert!(
        after <= after_limit,
        "after the clients closed lbd kept {after} KiB (baseline {baseline}, limit {after_limit})"
    );
    // Still serving afterwards.
    let before = tally.accepted.load(Ordering::Relaxed);
    let c = quiet_client(bind).await.expect("connect after");
    wait_until(
        WAIT,
        || "not proxied after the test".into(),
        || tally.accepted.load(Ordering::Relaxed) > before,
    )
    .await;
    drop(c);
}

on_both_runtimes!(stuck_clients_pin_little_memory_and_it_comes_back);
