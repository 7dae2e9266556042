//! Hedged connects (`connect_hedge`) on a real lbd process, both runtimes,
//! loopback only.
//!
//! A blackholed member: a listening socket with backlog 1 that is never
//! accepted, its accept queue filled by the test, so further SYNs are
//! dropped (`net.ipv4.tcp_abort_on_overflow = 0`, the default). Each test
//! checks the blackhole itself: a direct connect to it times out.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::{http_request_once, stats};
use common::*;
use serde_json::Value;

/// The hedge delay of these tests.
const HEDGE: Duration = Duration::from_millis(150);
/// What "fast" means: the hedge delay plus a margin that holds on a loaded
/// 2-core machine. Without a hedge the same connection takes
/// `member_connect` (3 s).
const FAST: Duration = Duration::from_millis(600);

/// A member that drops SYNs: a listener whose full accept queue is never
/// drained. Dropping it closes the listener and the queued connections.
struct Blackhole {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<std::net::TcpStream>,
}

impl Blackhole {
    /// Makes one and checks it: connects until one times out (bounded).
    fn new() -> Blackhole {
        let overflow =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_abort_on_overflow").unwrap_or_default();
        assert_eq!(
            overflow.trim(),
            "0",
            "net.ipv4.tcp_abort_on_overflow must be 0 for a loopback blackhole"
        );
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&any.into()).expect("bind");
        listener.listen(1).expect("listen");
        let addr = listener
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let mut queued = Vec::new();
        let mut timed_out = false;
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(conn) => queued.push(conn),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    timed_out = true;
                    break;
                }
                Err(e) => panic!("connect to the blackhole: {e}"),
            }
        }
        assert!(
            timed_out,
            "the blackhole at {addr} still accepts SYNs after {} queued connections",
            queued.len()
        );
        Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// lbd sockets in SYN-SENT toward `port` (from /proc/net/tcp).
fn syn_sent_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2].ends_with(&want) && fields[3] == "02"
        })
        .count()
}

/// `[admin]` on `admin`, listener "web" on `bind` (with `listener_extra`)
/// for pool "p" (with `pool_extra`) of `members`.
fn config(
    admin: SocketAddr,
    bind: SocketAddr,
    listener_extra: &str,
    pool_extra: &str,
    members: &[SocketAddr],
) -> String {
    let mut text = format!(
        "[admin]\nbind = \"{admin}\"\n\n[[listener]]\nname = \"web\"\nbind = \"{bind}\"\n\
         pool = \"p\"\n{listener_extra}\n\n[[pool]]\nname = \"p\"\n{pool_extra}\n"
    );
    for &m in members {
        text.push_str(&member_at(m));
    }
    text
}

/// Listener "web"'s `field`.
fn listener_count(s: &Value, field: &str) -> u64 {
    s["listeners"][0][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no listeners[0].{field} in {s}"))
}

/// `connect_errors_total` of the member at `addr` in pool "p".
fn connect_errors(s: &Value, addr: SocketAddr) -> u64 {
    s["pools"][0]["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["address"] == addr.to_string()))
        .and_then(|m| m["connect_errors_total"].as_u64())
        .unwrap_or_else(|| panic!("no member {addr} in {s}"))
}

/// One client: connect through lbd and read the member's greeting (its
/// first bytes). Returns the tag and how long it took.
async fn timed_hit(front: SocketAddr) -> (std::io::Result<String>, Duration) {
    let t0 = Instant::now();
    let tag = hit(front).await;
    (tag, t0.elapsed())
}

/// Steady clients through `front` beside the test's own, until `stop`
/// (at most 2000, each bounded by the harness's timeouts). Returns the
/// slowest and the failures.
fn background(
    front: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Duration, Vec<String>)> {
    tokio::spawn(async move {
        let mut slowest = Duration::ZERO;
        let mut failures = Vec::new();
        for _ in 0..2000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (tag, took) = timed_hit(front).await;
            slowest = slowest.max(took);
            match tag {
                Ok(tag) if tag == "good" => {}
                other => failures.push(format!("{other:?} after {took:?}")),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (slowest, failures)
    })
}

/// Two members, the first blackholed, round robin, `member_connect` 3 s,
/// `retries` 1: with the hedge, every client is served fast and the
/// blackholed member is not blamed for the aborted connects; lbd leaves no
/// connect to it in flight. Without the hedge, a client waits 3 s.
async fn blackholed_member(rt: &str, hedge: bool) {
    let hole = Blackhole::new();
    let good = Backend::start("good", Mode::TaggedEcho).await;
    let (front, admin) = (free_addr(), free_addr());
    let listener_extra = if hedge {
        format!(
            "member_connect = \"3s\"\nconnect_hedge = \"{}ms\"",
            HEDGE.as_millis()
        )
    } else {
        "member_connect = \"3s\"".to_owned()
    };
    let text = config(
        admin,
        front,
        &listener_extra,
        "retries = 1",
        &[hole.addr, good.addr],
    );
    let lbd = Lbd::start(rt, 1, &text).await;

    if !hedge {
        // The first client goes to the blackholed member (round robin
        // starts at the first) and waits member_connect before the retry.
        let mut slowest = Duration::ZERO;
        for i in 0..4 {
            let (tag, took) = timed_hit(front).await;
            assert_eq!(tag.as_deref().ok(), Some("good"), "client {i}: {tag:?}");
            slowest = slowest.max(took);
        }
        assert!(
            slowest >= Duration::from_millis(2500),
            "without connect_hedge a client waits member_connect (3s); slowest {slowest:?}"
        );
        let s = stats(admin).await;
        assert_eq!(listener_count(&s, "hedges_total"), 0, "{s}");
        assert!(connect_errors(&s, hole.addr) >= 1, "{s}");
        return;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let steady = background(front, Arc::clone(&stop));
    const N: usize = 24;
    let mut times = Vec::with_capacity(N);
    for i in 0..N {
        let (tag, took) = timed_hit(front).await;
        assert_eq!(
            tag.as_deref().ok(),
            Some("good"),
            "client {i}: {tag:?}; log:\n{}",
            lbd.log()
        );
        assert!(
            took < FAST,
            "client {i} took {took:?} (hedge {HEDGE:?}, member_connect 3s)"
        );
        times.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    let (slowest, failures) = steady.await.expect("background traffic");
    assert!(
        failures.is_empty(),
        "background clients failed: {failures:?}"
    );
    assert!(slowest < FAST, "a background client took {slowest:?}");
    let s = stats(admin).await;
    assert_eq!(
        connect_errors(&s, hole.addr),
        0,
        "aborted connects are not failures: {s}"
    );
    // Clients that went to the blackhole first were hedged, hence slower
    // than the hedge delay (about half with plain round robin, more as the
    // hedge's own pick moves the rotation on).
    let hedged = times.iter().filter(|t| **t >= HEDGE).count();
    let fastest_hedged = times.iter().filter(|t| **t >= HEDGE).min();
    eprintln!(
        "{rt}: {hedged} of {N} clients hedged; fastest hedged {fastest_hedged:?}, slowest {:?}",
        times.iter().max()
    );
    assert!(hedged >= 4, "hedged clients: {times:?}");
    let hedges = listener_count(&s, "hedges_total");
    let won = listener_count(&s, "hedges_won_total");
    assert!(hedges >= hedged as u64, "hedges {hedges} < {hedged}: {s}");
    assert_eq!(won, hedges, "every hedge (to the good member) won: {s}");
    assert_eq!(connect_errors(&s, good.addr), 0, "{s}");
    let (code, metrics) = http_request_once(admin, "GET", "/metrics", &[], b"")
        .await
        .expect("GET /metrics");
    assert_eq!(code, 200);
    for (name, value) in [
        ("lbd_frontend_hedges_total", hedges),
        ("lbd_frontend_hedges_won_total", won),
    ] {
        let line = format!("{name}{{proxy=\"web\"}} {value}");
        assert!(metrics.contains(&line), "no {line:?} in:\n{metrics}");
    }

    // The losing connects were really aborted: none is left retrying SYNs
    // toward the blackhole (on io_uring closing the descriptor alone would
    // leave them in flight until the kernel gives up, minutes later).
    let deadline = Instant::now() + WAIT;
    loop {
        let left = syn_sent_to(hole.addr.port());
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} connect(s) to the blackhole still in SYN-SENT after the hedges won"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hedge_hides_a_blackholed_member(rt: &str) {
    blackholed_member(rt, true).await;
}

async fn without_hedge_a_blackholed_member_costs_member_connect(rt: &str) {
    blackholed_member(rt, false).await;
}

/// Two blackholed members, `retries` 0: the hedge fails too, and each
/// member is blamed once (first connect and hedge both time out).
async fn a_failed_hedge_counts_against_its_member(rt: &str) {
    let (a, b) = (Blackhole::new(), Blackhole::new());
    let (front, admin) = (free_addr(), free_addr());
    let text = config(
        admin,
        front,
        "member_connect = \"1s\"",
        "retries = 0\nconnect_hedge = \"150ms\"",
        &[a.addr, b.addr],
    );
    let lbd = Lbd::start(rt, 1, &text).await;
    let t0 = Instant::now();
    assert!(
        is_refused(front, None, WAIT).await,
        "the client is reset when both connects fail; log:\n{}",
        lbd.log()
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "reset after {took:?}, before member_connect"
    );
    let s = stats(admin).await;
    assert_eq!(listener_count(&s, "hedges_total"), 1, "{s}");
    assert_eq!(listener_count(&s, "hedges_won_total"), 0, "{s}");
    assert_eq!(connect_errors(&s, a.addr), 1, "{s}");
    assert_eq!(connect_errors(&s, b.addr), 1, "{s}");
    assert_eq!(listener_count(&s, "no_member_total"), 1, "{s}");
}

/// One member: nothing to hedge to, the normal wait.
async fn one_member_means_no_hedge(rt: &str) {
    let hole = Blackhole::new();
    let (front, admin) = (free_addr(), free_addr());
    let text = config(
        admin,
        front,
        "member_connect = \"1s\"\nconnect_hedge = \"150ms\"",
        "retries = 0",
        &[hole.addr],
    );
    let _lbd = Lbd::start(rt, 1, &text).await;
    let t0 = Instant::now();
    assert!(is_refused(front, None, WAIT).await);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900), "reset after {took:?}");
    let s = stats(admin).await;
    assert_eq!(listener_count(&s, "hedges_total"), 0, "{s}");
    assert_eq!(connect_errors(&s, hole.addr), 1, "{s}");
}

on_both_runtimes!(
    hedge_hides_a_blackholed_member,
    without_hedge_a_blackholed_member_costs_member_connect,
    a_failed_hedge_counts_against_its_member,
    one_member_means_no_hedge,
);

/// `lbd check-config` refuses a hedge with `max_connections` and one not
/// shorter than `member_connect`, naming the field and the reason.
#[test]
fn validation_refuses_hedges_it_cannot_honour() {
    let dir = scratch_dir();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:1"
pool = "limited"
connect_hedge = "150ms"

[[listener]]
name = "slow"
bind = "127.0.0.1:2"
pool = "plain"
member_connect = "1s"
connect_hedge = "1s"

[[pool]]
name = "limited"
connect_hedge = "100ms"
[[pool.member]]
address = "127.0.0.1"
port = 10
max_connections = 5

[[pool]]
name = "plain"
[[pool.member]]
address = "127.0.0.1"
port = 11
"#,
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
        .env_remove("RUST_LOG")
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run lbd check-config");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = file.display();
    for want in [
        format!(
            "{path}: pool \"limited\": connect_hedge is not allowed with max_connections \
             (member 1 has it): a hedged connect holds connections to two members at once, \
             so max_connections could not stay exact"
        ),
        format!(
            "{path}: listener \"web\": connect_hedge is not allowed: pool \"limited\" has \
             members with max_connections"
        ),
        format!(
            "{path}: listener \"slow\": connect_hedge 1s must be less than member_connect 1s: \
             the first connect would time out before the hedge starts"
        ),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
}
