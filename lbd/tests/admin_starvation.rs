//! The admin server of a real lbd process under attack (issue 14): slow or
//! hostile clients must not starve the scrapers and agents on `bind` and
//! `stats_bind`. A scraper keeps asking for `/metrics` and `/stats.json` on
//! both ports while attackers (bound to 127.0.0.x source addresses, all on
//! loopback) hold connections open, and every answer must be complete and
//! come within a second. Also: the head, body and keep-alive timeouts, the
//! per-client share, descriptors coming back after an attack, and the admin
//! socket not being shared with a second lbd (no SO_REUSEPORT).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::{http_request, http_request_once};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long each attack runs while the scraper measures.
const WINDOW: Duration = Duration::from_secs(8);
/// Every scrape must be answered within this.
const BUDGET: Duration = Duration::from_secs(1);
/// A scrape that takes this long is given up (and counted as failed).
const GIVE_UP: Duration = Duration::from_secs(3);
/// Pause before an attacker whose connection was closed connects again.
const RECONNECT: Duration = Duration::from_millis(50);
/// The server's timeouts (lbd/src/admin/limit.rs).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The attacks run one at a time: each is meant to load the machine.
static ONE_ATTACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(admin: SocketAddr, stats: SocketAddr) -> String {
    format!(
        "[admin]\nbind = \"{admin}\"\nstats_bind = \"{stats}\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"{}\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n",
        free_addr()
    )
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Open descriptors of process `pid`.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What an attacker does on each of its connections.
#[derive(Clone, Copy)]
enum Attack {
    /// A write request whose body (1000 bytes announced) never comes.
    PutWithoutBody,
    /// A request line, then one header byte every `0`.
    SlowHeader(Duration),
}

impl Attack {
    fn opening(self) -> &'static [u8] {
        match self {
            Attack::PutWithoutBody => {
                b"PUT /api/config HTTP/1.1\r\nHost: lbd\r\nContent-Length: 1000\r\n\r\n"
            }
            Attack::SlowHeader(_) => b"GET /metrics HTTP/1.1\r\n",
        }
    }

    fn drip(self) -> Option<Duration> {
        match self {
            Attack::PutWithoutBody => None,
            Attack::SlowHeader(every) => Some(every),
        }
    }
}

#[derive(Default)]
struct AttackCounts {
    connected: AtomicUsize,
    closed_by_lbd: AtomicUsize,
}

/// One attacker: holds a connection to `target` from `from` doing `attack`
/// until `until`, and connects again (after [`RECONNECT`]) whenever lbd
/// closes it.
async fn attacker(
    target: SocketAddr,
    from: IpAddr,
    attack: Attack,
    until: Instant,
    counts: Arc<AttackCounts>,
) {
    while Instant::now() < until {
        let connect = connect_from(target, Some(SocketAddr::new(from, 0)));
        let Ok(Ok(mut conn)) = tokio::time::timeout_at(until.into(), connect).await else {
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        counts.connected.fetch_add(1, Ordering::Relaxed);
        if conn.write_all(attack.opening()).await.is_ok() && hold(&mut conn, attack, until).await {
            counts.closed_by_lbd.fetch_add(1, Ordering::Relaxed);
        }
        drop(conn);
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Keeps `conn` open (dripping if the attack does) until `until`. Returns
/// whether lbd closed it first.
async fn hold(conn: &mut TcpStream, attack: Attack, until: Instant) -> bool {
    let mut buf = [0u8; 1024];
    let mut next_drip = attack.drip().map(|every| Instant::now() + every);
    loop {
        let wake = next_drip.map_or(until, |d| d.min(until));
        tokio::select! {
            read = conn.read(&mut buf) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {} // a 408/503 answer: the close follows
            },
            () = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() >= until {
                    return false;
                }
                if conn.write_all(b"x").await.is_err() {
                    return true;
                }
                next_drip = attack.drip().map(|every| Instant::now() + every);
            }
        }
    }
}

/// Starts `n` attackers on the targets and source addresses, round robin.
fn attackers(
    n: usize,
    targets: &[SocketAddr],
    sources: &[IpAddr],
    attack: Attack,
    until: Instant,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AttackCounts>) {
    let counts = Arc::new(AttackCounts::default());
    let tasks = (0..n)
        .map(|i| {
            tokio::spawn(attacker(
                targets[i % targets.len()],
                sources[i % sources.len()],
                attack,
                until,
                Arc::clone(&counts),
            ))
        })
        .collect();
    (tasks, counts)
}

/// Scrape latencies and what went wrong.
#[derive(Default)]
struct Scrapes {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl Scrapes {
    fn summary(&self) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        format!(
            "{} scrapes, {} failed, p50 {:?}, p90 {:?}, max {:?}",
            sorted.len(),
            self.failures.len(),
            at(0.5),
            at(0.9),
            sorted.last().copied().unwrap_or_default()
        )
    }

    fn max(&self) -> Duration {
        self.latencies.iter().max().copied().unwrap_or_default()
    }
}

/// One scrape on a new connection (from 127.0.0.1): the latency of a
/// complete 200 answer (given up after [`GIVE_UP`]). Blocking, on a thread
/// of its own like a real scraper, so that the attackers' tasks in this
/// process do not delay it.
fn scrape(addr: SocketAddr, path: &str) -> Result<Duration, (Duration, String)> {
    let start = Instant::now();
    let outcome = exchange(addr, path, start + GIVE_UP);
    let took = start.elapsed();
    let complete = |body: &str| match path {
        "/metrics" => body.contains("# TYPE "),
        _ => {
            serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["listeners"].is_array())
        }
    };
    match outcome {
        Ok((200, body)) if complete(&body) => Ok(took),
        Ok((code, body)) => Err((took, format!("{addr}{path}: {code} {body:.80}"))),
        Err(e) => Err((took, format!("{addr}{path} after {took:?}: {e}"))),
    }
}

/// `GET path` with `Connection: close`; the status and the body, which
/// must be as long as its `Content-Length` says.
fn exchange(addr: SocketAddr, path: &str, deadline: Instant) -> std::io::Result<(u16, String)> {
    use std::io::{Error, ErrorKind, Read, Write};
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut conn = std::net::TcpStream::connect_timeout(&addr, left())?;
    conn.set_write_timeout(Some(left()))?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: lbd\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        conn.set_read_timeout(Some(left()))?;
        match conn.read(&mut buf)? {
            0 => break,
            n => response.extend_from_slice(&buf[..n]),
        }
        if response.len() > 16 << 20 || Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::TimedOut,
                "answer too long or too slow",
            ));
        }
    }
    let text = String::from_utf8_lossy(&response);
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, format!("{what}: {text:.120}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no complete head"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad("no content-length"))?;
    if body.len() != length {
        return Err(bad(&format!(
            "body of {} bytes, {length} announced",
            body.len()
        )));
    }
    Ok((code, body.to_owned()))
}

async fn scrape_now(addr: SocketAddr, path: &'static str) -> Result<Duration, (Duration, String)> {
    tokio::task::spawn_blocking(move || scrape(addr, path))
        .await
        .expect("scrape thread")
}

/// Scrapes `/metrics` and `/stats.json` on both ports in turn until `until`
/// (blocking).
fn scraper(admin: SocketAddr, stats: SocketAddr, until: Instant) -> Scrapes {
    let targets = [
        (admin, "/metrics"),
        (stats, "/stats.json"),
        (admin, "/stats.json"),
        (stats, "/metrics"),
    ];
    let mut scrapes = Scrapes::default();
    let mut i = 0;
    while Instant::now() < until {
        let (addr, path) = targets[i % targets.len()];
        match scrape(addr, path) {
            Ok(took) => scrapes.latencies.push(took),
            Err((took, why)) => {
                scrapes.latencies.push(took);
                scrapes.failures.push(why);
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    scrapes
}

/// Runs `attack` with `n` attackers against `targets` from `sources` while
/// scraping, then checks every scrape, that lbd survived, logged the
/// pressure at a sane rate, and got its descriptors back.
async fn under_attack(
    name: &str,
    n: usize,
    attack: Attack,
    on_admin: bool,
    on_stats: bool,
    sources: &[IpAddr],
) {
    let _one = ONE_ATTACK_AT_A_TIME.lock().await;
    let (admin, stats) = (free_addr(), free_addr());
    let lbd = Lbd::start("epoll", 1, &config(admin, stats)).await;
    scrape_now(admin, "/metrics").await.expect("bind answers");
    scrape_now(stats, "/stats.json")
        .await
        .expect("stats_bind answers");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = fds(lbd.pid());

    let mut targets = Vec::new();
    if on_admin {
        targets.push(admin);
    }
    if on_stats {
        targets.push(stats);
    }
    let start = Instant::now();
    let until = start + WINDOW;
    let (tasks, counts) = attackers(n, &targets, sources, attack, until);
    // Let the attack take hold before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scrapes = tokio::task::spawn_blocking(move || scraper(admin, stats, until))
        .await
        .expect("scraper thread");
    for task in tasks {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("attacker stops at the deadline")
            .expect("attacker task");
    }
    let peak_fds_note = fds(lbd.pid());
    eprintln!(
        "{name}: {}; attack: {} connections, {} closed by lbd; lbd fds {baseline} before, \
         {peak_fds_note} right after",
        scrapes.summary(),
        counts.connected.load(Ordering::Relaxed),
        counts.closed_by_lbd.load(Ordering::Relaxed),
    );

    assert!(lbd.exited().is_none(), "lbd died:\n{}", lbd.log());
    assert!(
        scrapes.failures.is_empty(),
        "{name}: failed scrapes: {:#?}\n{}",
        scrapes.failures,
        scrapes.summary()
    );
    assert!(
        scrapes.max() <= BUDGET,
        "{name}: a scrape took {:?}: {}",
        scrapes.max(),
        scrapes.summary()
    );
    assert!(scrapes.latencies.len() >= 10, "{}", scrapes.summary());

    // The attackers are gone: lbd closes their connections and its
    // descriptor count comes back.
    let deadline = Instant::now() + WAIT;
    while fds(lbd.pid()) > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "{name}: lbd holds {} descriptors, {baseline} before the attack",
            fds(lbd.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scrape_now(admin, "/metrics")
        .await
        .expect("answers afterwards");

    // One warning per listener every 10 s at most, not one per connection.
    let warnings = lbd.log().matches("under pressure").count();
    let most = targets.len() * (WINDOW.as_secs() as usize / 10 + 2);
    assert!(
        (1..=most).contains(&warnings),
        "{name}: {warnings} pressure warnings (1..={most} expected)"
    );
}

/// The bug report's first attack: write requests whose body never comes.
async fn put_requests_without_a_body(_rt: &str) {
    under_attack(
        "80 PUT /api/config without a body on bind",
        80,
        Attack::PutWithoutBody,
        true,
        false,
        &[loopback(1)],
    )
    .await;
}

/// Slowloris: 500 connections over both ports from ten source addresses
/// (the scraper's own among them).
async fn slowloris_from_many_addresses(_rt: &str) {
    let sources: Vec<IpAddr> = (1..=10).map(loopback).collect();
    under_attack(
        "500 slow-header connections on both ports",
        500,
        Attack::SlowHeader(Duration::from_secs(2)),
        true,
        true,
        &sources,
    )
    .await;
}

/// 80 connections dribbling a header on `stats_bind`.
async fn slow_connections_on_stats_bind(_rt: &str) {
    let sources: Vec<IpAddr> = (2..=6).map(loopback).collect();
    under_attack(
        "80 dribbling connections on stats_bind",
        80,
        Attack::SlowHeader(Duration::from_millis(500)),
        false,
        true,
        &sources,
    )
    .await;
}

/// Reads until EOF or error (bounded by `within`); returns what was read
/// and when the connection closed, or `None` if it stayed open.
async fn until_closed(conn: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

async fn timeouts_of_head_body_and_idle(_rt: &str) {
    let (admin, stats) = (free_addr(), free_addr());
    let lbd = Lbd::start("epoll", 1, &config(admin, stats)).await;

    let slow_head = async {
        let mut conn = connect_from(admin, None).await.expect("connect");
        let start = Instant::now();
        conn.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("send");
        // A byte a second: progress does not extend the head timeout.
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                read = conn.read(&mut buf) => {
                    assert!(matches!(read, Ok(0) | Err(_)), "an answer to half a head");
                    return start.elapsed();
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if conn.write_all(b"x").await.is_err() {
                        return start.elapsed();
                    }
                    assert!(start.elapsed() < WAIT, "slow head never closed");
                }
            }
        }
    };

    let slow_body = async {
        let mut conn = connect_from(admin, None).await.expect("connect");
        conn.write_all(b"PUT /api/config HTTP/1.1\r\nHost: lbd\r\nContent-Length: 1000\r\n\r\n{")
            .await
            .expect("send");
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // A byte a second: the whole body has a deadline, not each byte.
        loop {
            tokio::select! {
                read = conn.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return (start.elapsed(), String::from_utf8_lossy(&got).into_owned()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    let _ = conn.write_all(b" ").await;
                    assert!(start.elapsed() < BODY_TIMEOUT + WAIT, "slow body never answered");
                }
            }
        }
    };

    let idle = async {
        let mut conn = connect_from(admin, None).await.expect("connect");
        let (code, _) = http_request(&mut conn, "GET", "/healthz", &[], b"")
            .await
            .expect("healthz");
        assert_eq!(code, 200);
        // Still kept alive well past the head timeout.
        tokio::time::sleep(HEAD_TIMEOUT + Duration::from_secs(3)).await;
        let (code, _) = http_request(&mut conn, "GET", "/healthz", &[], b"")
            .await
            .expect("a kept-alive connection idle for longer than the head timeout");
        assert_eq!(code, 200);
        let start = Instant::now();
        let (got, closed) = until_closed(&mut conn, IDLE_TIMEOUT + WAIT).await;
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        closed.map(|at| at - start)
    };

    let (head_took, (body_took, body_answer), idle_took) = tokio::join!(slow_head, slow_body, idle);
    eprintln!("closed: slow head after {head_took:?}, slow body after {body_took:?}, idle after {idle_took:?}");
    assert!(
        head_took >= HEAD_TIMEOUT - Duration::from_millis(500)
            && head_took <= HEAD_TIMEOUT + Duration::from_secs(3),
        "slow head closed after {head_took:?}"
    );
    assert!(
        body_answer.starts_with("HTTP/1.1 408"),
        "slow body: {body_answer:?}"
    );
    assert!(
        body_took >= BODY_TIMEOUT - Duration::from_millis(500)
            && body_took <= BODY_TIMEOUT + Duration::from_secs(3),
        "slow body answered and closed after {body_took:?}"
    );
    let idle_took = idle_took.expect("idle keep-alive connection never closed");
    assert!(
        idle_took >= IDLE_TIMEOUT - Duration::from_secs(1)
            && idle_took <= IDLE_TIMEOUT + Duration::from_secs(3),
        "idle keep-alive connection closed after {idle_took:?}"
    );
    assert!(lbd.exited().is_none());
}

/// One address holding more than its share (16 of 64) loses its own
/// oldest waiting connections; nobody else's.
async fn a_client_over_its_share_loses_its_oldest(_rt: &str) {
    let (admin, stats) = (free_addr(), free_addr());
    let _lbd = Lbd::start("epoll", 1, &config(admin, stats)).await;
    let other = connect_from(stats, Some(SocketAddr::new(loopback(8), 0)))
        .await
        .expect("connect");
    let mut conns = Vec::new();
    for _ in 0..20 {
        let conn = connect_from(stats, Some(SocketAddr::new(loopback(7), 0)))
            .await
            .expect("connect");
        conns.push(conn);
        // Accepted in this order: the first is the longest waiting.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, conn) in conns.iter_mut().enumerate().take(4) {
        let (_, closed) = until_closed(conn, Duration::from_secs(3)).await;
        assert!(
            closed.is_some(),
            "connection {i} over the share stayed open"
        );
    }
    for (i, conn) in conns.iter_mut().enumerate().skip(4) {
        let (_, closed) = until_closed(conn, Duration::from_millis(100)).await;
        assert!(
            closed.is_none(),
            "connection {i} within the share was closed"
        );
    }
    let mut other = other;
    let (_, closed) = until_closed(&mut other, Duration::from_millis(100)).await;
    assert!(closed.is_none(), "another client's connection was closed");
    assert!(scrape_now(stats, "/metrics").await.is_ok());
}

/// Item 7: without SO_REUSEPORT a second lbd cannot take half the admin
/// requests of the first; it fails at start, clearly.
async fn a_second_lbd_cannot_share_the_admin_port(_rt: &str) {
    let (admin, stats) = (free_addr(), free_addr());
    let first = Lbd::start("epoll", 1, &config(admin, stats)).await;
    let dir = scratch_dir();
    let path = dir.join("second.toml");
    // Same admin address, its own listener address.
    std::fs::write(&path, config(admin, free_addr())).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbd"));
    cmd.args(["--runtime", "epoll", "--workers", "1", "run", "-c"])
        .arg(&path)
        .env_remove("RUST_LOG");
    let out = common::tools::run_bounded(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "second lbd: {stderr}");
    assert!(
        stderr.contains(&format!("admin: cannot listen on {admin}"))
            && stderr.contains("Address already in use"),
        "{stderr}"
    );
    for _ in 0..20 {
        let (code, _) = http_request_once(admin, "GET", "/healthz", &[], b"")
            .await
            .expect("the first lbd still answers");
        assert_eq!(code, 200);
    }
    assert!(first.exited().is_none());
}

/// A reload that keeps the admin addresses (a new token) keeps their
/// sockets: no request is refused meanwhile, and the token applies.
async fn a_reload_keeping_the_address_refuses_nothing(_rt: &str) {
    let (admin, stats) = (free_addr(), free_addr());
    let plain = config(admin, stats);
    let lbd = Lbd::start("epoll", 1, &plain).await;
    let token = scratch_dir().join("token");
    std::fs::write(&token, "t0ken\n").expect("token");
    let with_token = plain.replacen(
        "[admin]\n",
        &format!("[admin]\ntoken_file = \"{}\"\n", token.display()),
        1,
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for addr in [admin, stats] {
                    match http_request_once(addr, "GET", "/healthz", &[], b"").await {
                        Ok((200, _)) => ok += 1,
                        other => failed.push(format!("{addr}: {other:?}")),
                    }
                }
            }
            (ok, failed)
        })
    };
    for round in 0..6 {
        let cfg = if round % 2 == 0 { &with_token } else { &plain };
        assert!(lbd.reload(cfg).await, "reload {round}");
        lbd.wait_for_log("admin server on", round + 2).await;
        // Invalid, so it changes nothing when it gets through.
        let code = http_request_once(admin, "PUT", "/api/config", &[], br#"{"listener": 5}"#)
            .await
            .expect("put")
            .0;
        let wanted = if round % 2 == 0 { 401 } else { 400 };
        assert_eq!(code, wanted, "round {round}: the new [admin] applies");
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = tokio::time::timeout(WAIT, hammer)
        .await
        .expect("hammer stops")
        .expect("hammer");
    assert!(failed.is_empty(), "{ok} answered, refused: {failed:#?}");
    assert!(ok > 20, "only {ok} requests");
}

// None of this depends on the data-plane runtime (lbd runs with epoll).
mod admin_only {
    macro_rules! tests {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name("epoll").await
            }
        )*};
    }
    tests!(
        put_requests_without_a_body,
        slowloris_from_many_addresses,
        slow_connections_on_stats_bind,
        timeouts_of_head_body_and_idle,
        a_client_over_its_share_loses_its_oldest,
        a_second_lbd_cannot_share_the_admin_port,
        a_reload_keeping_the_address_refuses_nothing,
    );
}
