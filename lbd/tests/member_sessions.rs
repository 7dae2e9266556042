//! `on_down` / `on_maint = "shutdown_sessions"` (HAProxy `on-marked-down
//! shutdown-sessions`): a member's established connections are reset when
//! it goes down or into maint, and only then; counted in the stats and
//! `/metrics`; no descriptor is left behind. Every data-path test runs on
//! both runtimes, with steady new connections through lbd meanwhile.
//!
//! Members here are echo servers whose health is a separate HTTP server
//! (`monitor_port`): the health can fail while the data port keeps
//! accepting and echoing, as with a blackholed or terminating apiserver.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::{http_request_once, stats, ApiServer};
use common::haproxy::Haproxy;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Checks every 200 ms, one failure takes a member down.
const INTERVAL: Duration = Duration::from_millis(200);
const HEALTH: &str = "[pool.health]\ntype = \"http\"\npath = \"/readyz\"\n\
                      interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 1\nrise = 1\n";

/// How a member saw one of its connections end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    Other,
}

/// An echo member: writes `<tag>\n`, then echoes; records how each of its
/// connections ended.
struct EchoMember {
    addr: SocketAddr,
    ends: Arc<Mutex<Vec<End>>>,
    /// Connections open right now.
    open: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoMember {
    async fn start(tag: &str) -> EchoMember {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ends = Arc::new(Mutex::new(Vec::new()));
        let line = format!("{tag}\n");
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (recorded, counted) = (Arc::clone(&ends), Arc::clone(&open));
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (line, recorded) = (line.clone(), Arc::clone(&recorded));
                let counted = Arc::clone(&counted);
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let end = echo(conn, line.as_bytes()).await;
                    recorded.lock().expect("ends").push(end);
                    counted.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        EchoMember {
            addr,
            ends,
            open,
            task,
        }
    }

    /// Waits until the member has no connection open.
    async fn all_closed(&self, who: &str) {
        let deadline = Instant::now() + WAIT;
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "{who}: the member still has {} connection(s) open",
                self.open.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn resets(&self) -> usize {
        let ends = self.ends.lock().expect("ends");
        ends.iter().filter(|e| **e == End::Reset).count()
    }
}

impl Drop for EchoMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(mut conn: TcpStream, tag: &[u8]) -> End {
    let classify = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => End::Reset,
        _ => End::Other,
    };
    if let Err(e) = conn.write_all(tag).await {
        return classify(e);
    }
    let mut buf = vec![0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => return End::Eof,
            Ok(n) => {
                if let Err(e) = conn.write_all(&buf[..n]).await {
                    return classify(e);
                }
            }
            Err(e) => return classify(e),
        }
    }
}

/// Member `name` on `data`, checked on `health`'s port.
fn member_table(name: &str, data: SocketAddr, health: &ApiServer) -> String {
    format!(
        "[[pool.member]]\nname = \"{name}\"\naddress = \"{}\"\nport = {}\nmonitor_port = {}\n",
        data.ip(),
        data.port(),
        health.addr().port()
    )
}

/// Two members "a" and "b", each with its health server.
struct Members {
    a: EchoMember,
    b: EchoMember,
    health_a: ApiServer,
    health_b: ApiServer,
}

impl Members {
    async fn start() -> Members {
        Members {
            a: EchoMember::start("a").await,
            b: EchoMember::start("b").await,
            health_a: ApiServer::start("health-a", false).await,
            health_b: ApiServer::start("health-b", false).await,
        }
    }

    /// `[admin]` on `admin`, listener "l" on `bind` over pool "p" (with
    /// `pool_extra`), members a and b.
    fn config(&self, admin: SocketAddr, bind: SocketAddr, pool_extra: &str) -> String {
        format!(
            "[admin]\nbind = \"{admin}\"\n\n[[listener]]\nname = \"l\"\nbind = \"{bind}\"\n\
             pool = \"p\"\n\n[[pool]]\nname = \"p\"\nretries = 2\n{pool_extra}\n{HEALTH}\n{}{}",
            member_table("a", self.a.addr, &self.health_a),
            member_table("b", self.b.addr, &self.health_b),
        )
    }
}

/// Long-lived connections through lbd, by the member that greeted them.
struct Kept {
    on_a: Vec<TcpStream>,
    on_b: Vec<TcpStream>,
}

/// Opens connections until at least `n` landed on each member (round
/// robin per worker: about half go to each), at most 8 * n.
async fn keep(bind: SocketAddr, n: usize) -> Kept {
    let mut kept = Kept {
        on_a: Vec::new(),
        on_b: Vec::new(),
    };
    for _ in 0..8 * n {
        if kept.on_a.len() >= n && kept.on_b.len() >= n {
            return kept;
        }
        let mut conn = connect_from(bind, None).await.expect("connect");
        match read_line(&mut conn).await.expect("greeting").as_str() {
            "a" => kept.on_a.push(conn),
            "b" => kept.on_b.push(conn),
            other => panic!("unexpected greeting {other:?}"),
        }
    }
    panic!("fewer than {n} connections on each member");
}

/// Echoes a line through `conn`.
async fn ping(conn: &mut TcpStream, text: &str) -> io::Result<()> {
    conn.write_all(format!("{text}\n").as_bytes()).await?;
    let got = read_line(conn).await?;
    if got != text {
        return Err(io::Error::other(format!("echoed {got:?}, not {text:?}")));
    }
    Ok(())
}

/// Waits (up to `within`) for lbd to end `conn`: what the read returned.
async fn ending(conn: &mut TcpStream, within: Duration) -> Option<io::Result<usize>> {
    let mut buf = [0u8; 64];
    tokio::time::timeout(within, conn.read(&mut buf)).await.ok()
}

/// Whether `conn` was reset by lbd (within `within`).
async fn was_reset(conn: &mut TcpStream, within: Duration) -> bool {
    matches!(
        ending(conn, within).await,
        Some(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset
    )
}

/// One new connection of the steady traffic: when it started, the member
/// that greeted it (if any), and whether its echo worked.
struct Attempt {
    started: Instant,
    tag: Option<String>,
    result: io::Result<()>,
}

/// New connections through lbd, one every 10 ms, each greeted and echoing
/// once, until stopped (at most 60 s or 6000 connections).
struct Traffic {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Attempt>>,
}

impl Traffic {
    fn start(bind: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            let mut attempts = Vec::new();
            for i in 0..6000 {
                if stopped.load(Ordering::SeqCst) || Instant::now() > until {
                    break;
                }
                let started = Instant::now();
                let mut tag = None;
                let result = async {
                    let mut conn = connect_from(bind, None).await?;
                    tag = Some(read_line(&mut conn).await?);
                    ping(&mut conn, &format!("t{i}")).await
                }
                .await;
                attempts.push(Attempt {
                    started,
                    tag,
                    result,
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            attempts
        });
        Traffic { stop, task }
    }

    /// Stops and checks the traffic: every connection worked, except
    /// those greeted by `victim` (or cut before any greeting) that started
    /// before `event` (the member
    /// going down or into maint: they may be cut). At least `min_after`
    /// started after it, all on other members.
    async fn check(self, victim: Option<&str>, event: Instant, min_after: usize) {
        self.stop.store(true, Ordering::SeqCst);
        let attempts = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("traffic stops")
            .expect("traffic task");
        let mut after = 0;
        for a in &attempts {
            // A connection cut before the victim's greeting reached the
            // client has no tag: it may be the victim's too.
            let cut_ok = victim.is_some()
                && (a.tag.is_none() || a.tag.as_deref() == victim)
                && a.started < event;
            if let Err(e) = &a.result {
                assert!(
                    cut_ok,
                    "a new connection failed ({:?}, greeted by {:?}): {e}",
                    a.started.duration_since(event),
                    a.tag
                );
            }
            if a.started > event {
                after += 1;
                if let Some(victim) = victim {
                    assert_ne!(a.tag.as_deref(), Some(victim), "new connection to {victim}");
                }
            }
        }
        assert!(
            after >= min_after,
            "only {after} new connections after the event ({} in all)",
            attempts.len()
        );
    }
}

/// `sessions_shutdown_total` of member `name` and of the pool.
async fn shutdown_counts(admin: SocketAddr, name: &str) -> (u64, u64) {
    let s = stats(admin).await;
    let pool = &s["pools"][0];
    let member = pool["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no member {name} in {s}"));
    (
        member["sessions_shutdown_total"].as_u64().expect("member"),
        pool["sessions_shutdown_total"].as_u64().expect("pool"),
    )
}

/// `lbd_server_sessions_shutdown_total` of member `name` in `/metrics`.
async fn shutdown_metric(admin: SocketAddr, name: &str) -> u64 {
    let (code, body) = http_request_once(admin, "GET", "/metrics", &[], b"")
        .await
        .expect("GET /metrics");
    assert_eq!(code, 200);
    let prefix = format!("lbd_server_sessions_shutdown_total{{proxy=\"p\",server=\"{name}\"}} ");
    let line = body
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{body}"));
    line[prefix.len()..].trim().parse().expect("a count")
}

async fn set_admin(admin: SocketAddr, member: SocketAddr, state: &str) {
    let path = format!("/api/pools/p/members/{member}");
    let body = format!("{{\"admin_state\": \"{state}\"}}");
    let (code, text) = http_request_once(admin, "PUT", &path, &[], body.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    assert_eq!(code, 200, "{text}");
}

fn down_line(m: &EchoMember) -> String {
    format!("member p/{} is DOWN: closed", m.addr)
}

/// on_down: the member's checks fail while its data port keeps echoing;
/// its established connections are reset both ways within about a check
/// interval, the other member's stay, new connections all succeed, the
/// count shows, and lbd's descriptors return to where they were. A reload
/// before the event changes nothing to it.
async fn on_down_resets_the_members_connections(rt: &str) {
    let m = Members::start().await;
    let (admin, bind) = (free_addr(), free_addr());
    let config = m.config(admin, bind, "on_down = \"shutdown_sessions\"");
    let lbd = Lbd::start(rt, 2, &config).await;
    lbd.wait_for_log(&format!("member p/{} checked: up", m.a.addr), 1)
        .await;
    let baseline = settled_fds(lbd.pid()).await;

    let mut kept = keep(bind, 3).await;
    assert!(open_fds(lbd.pid()) >= baseline + 2 * (kept.on_a.len() + kept.on_b.len()));
    // A reload keeps the member states the connections follow.
    assert!(
        lbd.reload(&config.replace("retries = 2", "retries = 1"))
            .await
    );
    let traffic = Traffic::start(bind);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, conn) in kept.on_a.iter_mut().chain(&mut kept.on_b).enumerate() {
        ping(conn, &format!("before {i}")).await.expect("echo");
    }

    m.health_a.set_ready(false);
    let failing = Instant::now();
    for conn in &mut kept.on_a {
        assert!(
            was_reset(conn, WAIT).await,
            "a connection to the down member was not reset"
        );
    }
    let took = failing.elapsed();
    eprintln!("connections reset {took:?} after the health began failing");
    // One check interval, its timeout, and a generous margin for a
    // loaded machine.
    assert!(took < INTERVAL * 2 + Duration::from_secs(3), "{took:?}");
    let logged = Instant::now();
    lbd.wait_for_log(&down_line(&m.a), 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.check(Some("a"), logged, 5).await;

    for (i, conn) in kept.on_b.iter_mut().enumerate() {
        ping(conn, &format!("after {i}"))
            .await
            .expect("b's connections stay");
    }
    let killed = kept.on_a.len();
    m.a.all_closed("lbd").await;
    let deadline = Instant::now() + WAIT;
    while m.a.resets() < killed {
        assert!(Instant::now() < deadline, "the member saw no reset");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kept connections, and any of the steady traffic's short ones
    // that were on the member at that moment.
    let counted = shutdown_counts(admin, "a").await;
    assert!(counted.0 >= killed as u64, "member, pool: {counted:?}");
    assert_eq!(counted.0, counted.1, "member, pool");
    assert_eq!(shutdown_metric(admin, "a").await, counted.0);
    assert_eq!(shutdown_metric(admin, "b").await, 0);

    drop(kept.on_a);
    drop(kept.on_b);
    fds_back_to(lbd.pid(), baseline, WAIT).await;
}

/// Without the option, the same connections stay open and working after
/// the member is down (for several check intervals).
async fn without_the_option_connections_stay(rt: &str) {
    let m = Members::start().await;
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 2, &m.config(admin, bind, "on_maint = \"none\"")).await;
    lbd.wait_for_log(&format!("member p/{} checked: up", m.a.addr), 1)
        .await;
    let mut kept = keep(bind, 3).await;
    let traffic = Traffic::start(bind);

    m.health_a.set_ready(false);
    lbd.wait_for_log(&format!("member p/{} is DOWN", m.a.addr), 1)
        .await;
    let down = Instant::now();
    tokio::time::sleep(INTERVAL * 3).await;
    for (i, conn) in kept.on_a.iter_mut().chain(&mut kept.on_b).enumerate() {
        ping(conn, &format!("still {i}"))
            .await
            .expect("connections stay without on_down");
    }
    traffic.check(None, down, 5).await;
    assert!(
        !lbd.log().contains("established connection(s)"),
        "{}",
        lbd.log()
    );
    assert_eq!(shutdown_counts(admin, "a").await, (0, 0));
    assert_eq!(m.a.resets(), 0);
}

/// on_maint: drain through the admin API leaves the connections alone,
/// maint resets them; on_down is not set, so a member merely down keeps
/// its connections.
async fn on_maint_resets_on_maint_but_not_on_drain(rt: &str) {
    let m = Members::start().await;
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(
        rt,
        2,
        &m.config(admin, bind, "on_maint = \"shutdown_sessions\""),
    )
    .await;
    lbd.wait_for_log(&format!("member p/{} checked: up", m.b.addr), 1)
        .await;
    let baseline = settled_fds(lbd.pid()).await;
    let mut kept = keep(bind, 3).await;
    let traffic = Traffic::start(bind);

    // b goes down (on_down is "none"): its connections stay; then back up.
    m.health_b.set_ready(false);
    lbd.wait_for_log(&format!("member p/{} is DOWN", m.b.addr), 1)
        .await;
    tokio::time::sleep(INTERVAL * 3).await;
    for (i, conn) in kept.on_a.iter_mut().chain(&mut kept.on_b).enumerate() {
        ping(conn, &format!("down {i}"))
            .await
            .expect("down keeps connections without on_down");
    }
    m.health_b.set_ready(true);
    lbd.wait_for_log(&format!("member p/{} is UP", m.b.addr), 1)
        .await;

    // a is drained: no new connections, the established ones stay.
    set_admin(admin, m.a.addr, "drain").await;
    tokio::time::sleep(INTERVAL * 3).await;
    for (i, conn) in kept.on_a.iter_mut().chain(&mut kept.on_b).enumerate() {
        ping(conn, &format!("drained {i}"))
            .await
            .expect("drain keeps connections");
    }

    // a goes into maint: its connections are reset, b's stay.
    let event = Instant::now();
    set_admin(admin, m.a.addr, "maint").await;
    for conn in &mut kept.on_a {
        assert!(
            was_reset(conn, WAIT).await,
            "a connection to the maint member was not reset"
        );
    }
    eprintln!("connections reset {:?} after the API call", event.elapsed());
    lbd.wait_for_log(&format!("member p/{} is in MAINT: closed", m.a.addr), 1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Drained, then maint: no new connection went to a since the drain.
    traffic.check(Some("a"), event, 5).await;
    for (i, conn) in kept.on_b.iter_mut().enumerate() {
        ping(conn, &format!("b {i}")).await.expect("b's stay");
    }
    let killed = kept.on_a.len() as u64;
    assert_eq!(shutdown_counts(admin, "a").await, (killed, killed));
    assert_eq!(shutdown_metric(admin, "a").await, killed);
    assert_eq!(shutdown_counts(admin, "b").await.0, 0);
    drop(kept.on_b);
    fds_back_to(lbd.pid(), baseline, WAIT).await;
}

/// How a kept connection ended: `"reset"`, `"eof"`, `"open"` (nothing
/// within `within`) or `"data"`.
async fn how_it_ended(conn: &mut TcpStream, within: Duration) -> &'static str {
    match ending(conn, within).await {
        None => "open",
        Some(Ok(0)) => "eof",
        Some(Ok(_)) => "data",
        Some(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => "reset",
        Some(Err(_)) => "error",
    }
}

/// HAProxy, the oracle, with `on-marked-down shutdown-sessions`: the same
/// members (echo data port, HTTP health on another port), the same check,
/// the same kept connections. Both cut the down member's connections
/// within the same bound and keep the other member's; lbd resets them
/// (what each does is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_on_marked_down_shutdown_sessions_does_the_same() {
    let (lbd_side, ha_side) = (Members::start().await, Members::start().await);
    let (admin, bind, ha_bind) = (free_addr(), free_addr(), free_addr());
    let lbd = Lbd::start(
        "epoll",
        2,
        &lbd_side.config(admin, bind, "on_down = \"shutdown_sessions\""),
    )
    .await;
    let mut ha_config = format!(
        "global\n  maxconn 1000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 50s\n  \
         timeout server 50s\n  timeout check 150ms\n\
         listen p\n  bind {ha_bind}\n  balance roundrobin\n  option httpchk GET /readyz\n  \
         default-server inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions\n"
    );
    for (name, data, health) in [
        ("a", ha_side.a.addr, &ha_side.health_a),
        ("b", ha_side.b.addr, &ha_side.health_b),
    ] {
        ha_config.push_str(&format!(
            "  server {name} {data} check port {}\n",
            health.addr().port()
        ));
    }
    let Some(haproxy) = Haproxy::start(&ha_config, ha_bind).await else {
        return;
    };
    lbd.wait_for_log(&format!("member p/{} checked: up", lbd_side.a.addr), 1)
        .await;

    let mut results = Vec::new();
    for (name, members, front) in [("lbd", &lbd_side, bind), ("haproxy", &ha_side, ha_bind)] {
        let mut kept = keep(front, 2).await;
        let traffic = Traffic::start(front);
        tokio::time::sleep(Duration::from_millis(300)).await;
        members.health_a.set_ready(false);
        let failing = Instant::now();
        let mut ends = Vec::new();
        for conn in &mut kept.on_a {
            ends.push(how_it_ended(conn, WAIT).await);
        }
        let took = failing.elapsed();
        let cut = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        traffic.check(Some("a"), cut, 5).await;
        for (i, conn) in kept.on_b.iter_mut().enumerate() {
            ping(conn, &format!("{name} {i}"))
                .await
                .unwrap_or_else(|e| panic!("{name}: b's connection was cut: {e}"));
        }
        members.a.all_closed(name).await;
        let member_ends = members.a.ends.lock().expect("ends").clone();
        eprintln!(
            "{name}: down member's connections ended after {took:?}; \
             clients saw {ends:?}, the member saw {member_ends:?}"
        );
        assert!(
            ends.iter().all(|e| *e == "reset" || *e == "eof"),
            "{name}: {ends:?}\n{}",
            haproxy.log()
        );
        assert!(
            took < INTERVAL * 2 + Duration::from_secs(3),
            "{name}: {took:?}"
        );
        results.push(ends);
    }
    assert!(
        results[0].iter().all(|e| *e == "reset"),
        "lbd resets: {:?}",
        results[0]
    );
}

/// A bad value names the field, in `check-config` and at start.
#[test]
fn a_bad_value_names_the_field() {
    let dir = scratch_dir();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\non_down = \"shutdown-sessions\"\non_maint = \"yes\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run lbd check-config");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "pool \"p\": on_down \"shutdown-sessions\" is not valid (expected \"none\" or \
             \"shutdown_sessions\")"
        ),
        "{text}"
    );
    assert!(
        text.contains("pool \"p\": on_maint \"yes\" is not valid"),
        "{text}"
    );
}

on_both_runtimes!(
    on_down_resets_the_members_connections,
    without_the_option_connections_stay,
    on_maint_resets_on_maint_but_not_on_drain,
);
