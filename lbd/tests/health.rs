//! Active health checks through real sockets on loopback: http, https,
//! tls_hello and timeouts; rise and fall counted exactly; drain by
//! `/readyz`; admin drain and maint; failover under load; health state
//! across reloads; all members down. Every test runs on both runtimes.
//!
//! What lbd decided is read from its log (one line per transition) and
//! from where traffic goes; what it asked is counted by the backends.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::{http_get, http_get_once, tls_connect, ApiServer, SilentServer};
use common::haproxy::Haproxy;
use common::*;

/// Checks every 200 ms: fast enough for tests, slow enough that a test can
/// act between two checks.
const FAST: &str = "interval = \"200ms\"\ntimeout = \"150ms\"\n";

/// A listener "api" on `bind` in front of pool "api" with `[pool.health]`
/// holding `health`, and these member tables.
fn config(bind: SocketAddr, health: &str, members: &[String]) -> String {
    format!(
        "[[listener]]\nname = \"api\"\nbind = \"{bind}\"\npool = \"api\"\n\n\
         [[pool]]\nname = \"api\"\nretries = 2\n[pool.health]\n{health}\n{}",
        members.concat()
    )
}

/// How lbd names a member of pool "api" in its log.
fn label(addr: SocketAddr) -> String {
    format!("member api/{addr}")
}

fn went_down(addr: SocketAddr) -> String {
    format!("{} is DOWN", label(addr))
}

fn went_up(addr: SocketAddr) -> String {
    format!("{} is UP", label(addr))
}

fn checked_up(addr: SocketAddr) -> String {
    format!("{} checked: up", label(addr))
}

async fn api_servers(tags: &[&str]) -> Vec<ApiServer> {
    let mut servers = Vec::new();
    for tag in tags {
        servers.push(ApiServer::start(tag, false).await);
    }
    servers
}

/// The tag that answers `/who` on a new connection through lbd.
async fn who(bind: SocketAddr) -> String {
    match http_get_once(bind, "/who").await {
        Ok((200, body)) => body.trim().to_owned(),
        other => panic!("request through lbd failed: {other:?}"),
    }
}

/// Tags answering `n` sequential new connections through lbd.
async fn whos(bind: SocketAddr, n: usize) -> Vec<String> {
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        tags.push(who(bind).await);
    }
    tags
}

/// Switches `server` to failing and back, asserting that lbd takes it
/// down exactly at the `fall`-th failed check and up exactly at the
/// `rise`-th passed one, never earlier. `check_traffic`: also look at where
/// plain-HTTP traffic goes (with `other` the pool's other member).
async fn fall_then_rise(
    lbd: &Lbd,
    server: &ApiServer,
    rise: usize,
    fall: usize,
    traffic: Option<(SocketAddr, &ApiServer)>,
) {
    let addr = server.addr();
    lbd.wait_for_log(&checked_up(addr), 1).await;

    server.set_ready(false);
    server.wait_health_answers(503, fall - 1).await;
    assert!(
        !lbd.log().contains(&went_down(addr)),
        "down after {} failed check(s), fall is {fall}:\n{}",
        fall - 1,
        lbd.log()
    );
    if let Some((bind, other)) = traffic {
        let tags = whos(bind, 2).await;
        assert!(
            tags.contains(&server.tag) && tags.contains(&other.tag),
            "member still up must get traffic: {tags:?}"
        );
    }
    lbd.wait_for_log(&went_down(addr), 1).await;
    assert!(server.health_answers(503) >= fall);
    assert!(lbd
        .log()
        .contains(&format!("{}: HTTP 503", went_down(addr))));
    if let Some((bind, other)) = traffic {
        assert!(whos(bind, 6).await.iter().all(|t| *t == other.tag));
    }

    let passed_before = server.health_answers(200);
    server.set_ready(true);
    server
        .wait_health_answers(200, passed_before + rise - 1)
        .await;
    assert!(
        !lbd.log().contains(&went_up(addr)),
        "up after {} passed check(s), rise is {rise}:\n{}",
        rise - 1,
        lbd.log()
    );
    if let Some((bind, other)) = traffic {
        assert!(whos(bind, 4).await.iter().all(|t| *t == other.tag));
    }
    lbd.wait_for_log(&went_up(addr), 1).await;
    assert!(server.health_answers(200) >= passed_before + rise);
    if let Some((bind, _)) = traffic {
        let tags = whos(bind, 4).await;
        assert!(tags.contains(&server.tag), "back up, no traffic: {tags:?}");
    }
}

async fn http_check_follows_rise_and_fall(rt: &str) {
    let s = api_servers(&["a", "b"]).await;
    let bind = free_addr();
    let health = format!("type = \"http\"\npath = \"/readyz\"\nrise = 2\nfall = 3\n{FAST}");
    let members: Vec<String> = s.iter().map(|s| member_at(s.addr())).collect();
    // One worker: round robin is per worker, and the traffic checks rely on
    // two sequential connections reaching both members.
    let lbd = Lbd::start(rt, 1, &config(bind, &health, &members)).await;
    fall_then_rise(&lbd, &s[0], 2, 3, Some((bind, &s[1]))).await;
}

async fn https_check_with_ca_file_and_sni(rt: &str) {
    let server = ApiServer::start("tls", true).await;
    let ca = server.ca_pem_path().expect("TLS server has a CA file");
    let bind = free_addr();
    let health = format!(
        "type = \"https\"\npath = \"/readyz\"\nrise = 3\nfall = 2\nca_file = \"{}\"\n\
         sni = \"localhost\"\n{FAST}",
        ca.display()
    );
    let lbd = Lbd::start(rt, 1, &config(bind, &health, &[member_at(server.addr())])).await;
    fall_then_rise(&lbd, &server, 3, 2, None).await;

    // The same server checked under a name its certificate does not have.
    let wrong = health.replace("sni = \"localhost\"", "sni = \"not-localhost\"");
    assert!(
        lbd.reload(&config(bind, &wrong, &[member_at(server.addr())]))
            .await
    );
    lbd.wait_for_log(&format!("{}: TLS: ", went_down(server.addr())), 1)
        .await;
}

async fn silent_member_goes_down_by_timeout(rt: &str) {
    let silent = SilentServer::start().await;
    let bind = free_addr();
    let health = format!("type = \"http\"\n{FAST}");
    let lbd = Lbd::start(rt, 1, &config(bind, &health, &[member_at(silent.addr())])).await;
    lbd.wait_for_log(
        &format!("{}: timeout after 150ms", went_down(silent.addr())),
        1,
    )
    .await;
    assert!(silent.accepted() >= 1, "the check never connected");
}

async fn tls_hello_on_tls_and_on_plain_tcp(rt: &str) {
    let tls = ApiServer::start("tls", true).await;
    let plain = Backend::start("plain", Mode::TaggedEcho).await;
    let bind = free_addr();
    let health = format!("type = \"tls_hello\"\n{FAST}");
    let members = [member_at(tls.addr()), member_at(plain.addr)];
    let lbd = Lbd::start(rt, 1, &config(bind, &health, &members)).await;
    lbd.wait_for_log(
        &format!("{} (TLS handshake done", checked_up(tls.addr())),
        1,
    )
    .await;
    lbd.wait_for_log(&went_down(plain.addr), 1).await;
    let log = lbd.log();
    let line = log
        .lines()
        .find(|l| l.contains(&went_down(plain.addr)))
        .unwrap_or_default();
    assert!(
        line.contains(": TLS: ") || line.contains(": closed before answering"),
        "{line}"
    );
    assert!(!log.contains(&went_down(tls.addr())), "{log}");
}

async fn readyz_503_drains_without_cutting_connections(rt: &str) {
    let s = api_servers(&["a", "b"]).await;
    let bind = free_addr();
    let health = format!("type = \"http\"\npath = \"/readyz\"\nfall = 1\n{FAST}");
    let members: Vec<String> = s.iter().map(|s| member_at(s.addr())).collect();
    let lbd = Lbd::start(rt, 2, &config(bind, &health, &members)).await;
    lbd.wait_for_log(&checked_up(s[0].addr()), 1).await;

    // A keep-alive connection that landed on "a" (round robin: one of the
    // first two does).
    let mut kept = None;
    for _ in 0..4 {
        let mut conn = connect_from(bind, None).await.expect("connect");
        let (code, body) = http_get(&mut conn, "/who").await.expect("request");
        assert_eq!(code, 200);
        if body.trim() == "a" {
            kept = Some(conn);
            break;
        }
    }
    let mut kept = kept.expect("no connection reached a in 4 tries");

    // The apiserver starts shutting down: /readyz fails, it keeps serving.
    s[0].set_ready(false);
    lbd.wait_for_log(&went_down(s[0].addr()), 1).await;
    assert!(whos(bind, 10).await.iter().all(|t| t == "b"));
    for _ in 0..3 {
        let (code, body) = http_get(&mut kept, "/who").await.expect("kept connection");
        assert_eq!((code, body.trim()), (200, "a"));
    }
    let data_before = s[0].data_requests();
    drop(kept);
    assert!(whos(bind, 4).await.iter().all(|t| t == "b"));
    assert_eq!(s[0].data_requests(), data_before);
}

async fn admin_drain_is_checked_and_maint_is_not(rt: &str) {
    let s = api_servers(&["a", "b"]).await;
    let bind = free_addr();
    let health = format!("type = \"http\"\npath = \"/readyz\"\n{FAST}");
    let with_admin = |state: &str| {
        config(
            bind,
            &health,
            &[
                member_at(s[0].addr()) + &format!("admin_state = \"{state}\"\n"),
                member_at(s[1].addr()),
            ],
        )
    };
    let lbd = Lbd::start(rt, 1, &with_admin("ready")).await;
    lbd.wait_for_log(&checked_up(s[0].addr()), 1).await;
    let mut kept = connect_from(bind, None).await.expect("connect");
    let first = http_get(&mut kept, "/who").await.expect("request").1;
    let (mut kept, other) = if first.trim() == "a" {
        (kept, None)
    } else {
        let mut again = connect_from(bind, None).await.expect("connect");
        assert_eq!(
            http_get(&mut again, "/who").await.expect("request").1,
            "a\n"
        );
        (again, Some(kept))
    };

    assert!(lbd.reload(&with_admin("drain")).await);
    assert!(whos(bind, 6).await.iter().all(|t| t == "b"));
    assert_eq!(http_get(&mut kept, "/who").await.expect("kept").1, "a\n");
    let checks = s[0].health_answers(200);
    s[0].wait_health_answers(200, checks + 2).await;

    assert!(lbd.reload(&with_admin("maint")).await);
    // Let a check already under way finish, then none may follow.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let checks = s[0].health_answers(200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s[0].health_answers(200), checks, "maint member was checked");
    assert!(whos(bind, 6).await.iter().all(|t| t == "b"));
    assert_eq!(http_get(&mut kept, "/who").await.expect("kept").1, "a\n");

    assert!(lbd.reload(&with_admin("ready")).await);
    s[0].wait_health_answers(200, checks + 1).await;
    let tags = whos(bind, 4).await;
    assert!(tags.contains(&"a".to_owned()), "{tags:?}");
    drop(other);
}

async fn failover_under_load_loses_no_connection(rt: &str) {
    let mut s = api_servers(&["a", "b", "c"]).await;
    let bind = free_addr();
    let health = format!("type = \"http\"\npath = \"/readyz\"\nfall = 2\n{FAST}");
    let members: Vec<String> = s.iter().map(|s| member_at(s.addr())).collect();
    let lbd = Lbd::start(rt, 2, &config(bind, &health, &members)).await;
    let victim = s.pop().expect("three servers");
    let victim_addr = victim.addr();
    lbd.wait_for_log(&checked_up(victim_addr), 1).await;

    // Sequential short connections; the member dies after the 50th.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut victim = Some(victim);
    let mut failures = Vec::new();
    let mut after_kill = Vec::new();
    for i in 0..300 {
        assert!(Instant::now() < deadline, "load loop over time at {i}");
        if i == 50 {
            if let Some(v) = victim.take() {
                v.kill().await;
            }
        }
        match http_get_once(bind, "/who").await {
            Ok((200, body)) if i >= 50 => after_kill.push(body.trim().to_owned()),
            Ok((200, _)) => {}
            other => failures.push((i, format!("{other:?}"))),
        }
    }
    assert_eq!(
        failures,
        Vec::<(usize, String)>::new(),
        "client-visible failures"
    );
    assert!(after_kill.iter().all(|t| t == "a" || t == "b"));
    lbd.wait_for_log(&went_down(victim_addr), 1).await;
}

async fn reload_keeps_health_of_unchanged_members(rt: &str) {
    let s = api_servers(&["a", "b", "c"]).await;
    let bind = free_addr();
    let health = format!("type = \"http\"\npath = \"/readyz\"\nfall = 1\n{FAST}");
    let two = [member_at(s[0].addr()), member_at(s[1].addr())];
    let lbd = Lbd::start(rt, 1, &config(bind, &health, &two)).await;
    lbd.wait_for_log(&checked_up(s[1].addr()), 1).await;
    s[0].set_ready(false);
    lbd.wait_for_log(&went_down(s[0].addr()), 1).await;

    let mut three = two.to_vec();
    three.push(member_at(s[2].addr()));
    assert!(lbd.reload(&config(bind, &health, &three)).await);
    // Right after the reload, before any new check: "a" is still down.
    let tags = whos(bind, 6).await;
    assert!(!tags.contains(&"a".to_owned()), "{tags:?}");
    lbd.wait_for_log(&checked_up(s[2].addr()), 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = lbd.log();
    assert_eq!(log.matches(&went_down(s[0].addr())).count(), 1, "{log}");
    assert_eq!(log.matches(&checked_up(s[1].addr())).count(), 1, "{log}");
    let tags = whos(bind, 6).await;
    assert!(tags.contains(&"c".to_owned()) && !tags.contains(&"a".to_owned()));
}

async fn all_members_down_resets_new_clients(rt: &str) {
    let s = api_servers(&["a", "b"]).await;
    let bind = free_addr();
    let health = format!("type = \"http\"\npath = \"/readyz\"\nfall = 1\n{FAST}");
    let members: Vec<String> = s.iter().map(|s| member_at(s.addr())).collect();
    let lbd = Lbd::start(rt, 1, &config(bind, &health, &members)).await;
    for server in &s {
        server.set_ready(false);
    }
    for server in &s {
        lbd.wait_for_log(&went_down(server.addr()), 1).await;
    }
    for _ in 0..3 {
        let started = Instant::now();
        assert!(is_refused(bind, None, Duration::from_secs(2)).await);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(s[0].data_requests() + s[1].data_requests(), 0);
    lbd.wait_for_log("no usable member", 1).await;
}

/// Steady concurrent traffic through lbd: `clients` tasks, each opening a
/// new connection for `GET /who` every 100 ms (plain HTTP, or TLS trusting
/// `ca` for `localhost`), until stopped. Counts answers and failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    answered: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    started: Instant,
}

impl Traffic {
    fn start(bind: SocketAddr, clients: usize, ca: Option<std::path::PathBuf>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, answered, failures, ca) = (
                    Arc::clone(&stop),
                    Arc::clone(&answered),
                    Arc::clone(&failures),
                    ca.clone(),
                );
                tokio::spawn(async move {
                    // Bounded: at most 10 minutes' worth of requests.
                    for _ in 0..6000 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let next = tokio::time::Instant::now() + Duration::from_millis(100);
                        let result = match &ca {
                            None => http_get_once(bind, "/who").await,
                            Some(ca) => match tls_connect(bind, ca, "localhost", None).await {
                                Ok(mut conn) => http_get(&mut conn, "/who").await,
                                Err(e) => Err(e),
                            },
                        };
                        match result {
                            Ok((200, _)) => {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            other => failures
                                .lock()
                                .expect("failures")
                                .push(format!("{other:?}")),
                        }
                        tokio::time::sleep_until(next).await;
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            tasks,
            answered,
            failures,
            started: Instant::now(),
        }
    }

    /// Stops the clients; returns (answers, answers per second, failures).
    async fn stop(self) -> (usize, f64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("traffic task");
        }
        let answered = self.answered.load(Ordering::SeqCst);
        let rate = answered as f64 / self.started.elapsed().as_secs_f64();
        let failures = self.failures.lock().expect("failures").clone();
        (answered, rate, failures)
    }
}

/// Waits (bounded by `within`) until each side has logged its line
/// `which` picks (polled together, so each time is measured from now);
/// returns how long each took, or panics with the slow side's log.
async fn all_logged_within(
    sides: &[UnderTest<'_>],
    which: for<'s> fn(&'s UnderTest<'_>) -> &'s str,
    within: Duration,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut took: Vec<Option<Duration>> = vec![None; sides.len()];
    while took.iter().any(Option::is_none) {
        for (side, took) in sides.iter().zip(took.iter_mut()) {
            if took.is_none() && (side.log)().contains(which(side)) {
                *took = Some(start.elapsed());
            }
            assert!(
                took.is_some() || start.elapsed() < within,
                "{}: {:?} not logged within {within:?}; log:\n{}",
                side.name,
                which(side),
                (side.log)()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    took.into_iter().flatten().collect()
}

/// One load balancer in the comparison: where clients connect, its two
/// members ("b" is the one whose `/readyz` fails), how it logs b's
/// transitions.
struct UnderTest<'a> {
    name: &'static str,
    bind: SocketAddr,
    servers: Vec<ApiServer>,
    log: Box<dyn Fn() -> String + 'a>,
    down: String,
    up: String,
}

/// Two members for one load balancer, plain or TLS (one certificate).
async fn member_pair(tls: bool) -> Vec<ApiServer> {
    if tls {
        ApiServer::start_tls_sharing_a_certificate(&["a", "b"]).await
    } else {
        api_servers(&["a", "b"]).await
    }
}

/// The HAProxy twin of lbd's config: `mode tcp`, round robin, the same
/// check (`option httpchk`, `check-ssl` for https) every 500 ms.
fn haproxy_config(bind: SocketAddr, servers: &[ApiServer], tls: bool) -> String {
    let ssl = if tls { " check-ssl verify none" } else { "" };
    let mut text = format!(
        "global\n  maxconn 1000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 50s\n  \
         timeout server 50s\n  timeout check 400ms\n\
         listen api\n  bind {bind}\n  balance roundrobin\n  option httpchk GET /readyz\n  \
         default-server inter 500ms fall 2 rise 2\n"
    );
    for server in servers {
        text.push_str(&format!(
            "  server {} {} check{ssl}\n",
            server.tag,
            server.addr()
        ));
    }
    text
}

/// A member whose `/readyz` fails while steady traffic keeps connecting to
/// the pool (a kube-apiserver shutting down: the port stays open). Passed
/// proxied connects must not end the check's failure streak: the member
/// goes down within `fall` intervals plus one and then gets no new
/// connection; `rise` passed checks bring it back. `tls`: members speak
/// TLS and the check is `https`.
///
/// HAProxy, the oracle, runs the same scenario side by side (its own two
/// members, the same check and traffic) and must behave the same.
async fn readyz_503_under_traffic(rt: &str, tls: bool) {
    let interval = Duration::from_millis(500);
    let (fall, rise) = (2u32, 2u32);

    let servers = member_pair(tls).await;
    let ca = servers[0].ca_pem_path();
    let bind = free_addr();
    let mut health = format!(
        "type = \"{}\"\npath = \"/readyz\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
         fall = {fall}\nrise = {rise}\n",
        if tls { "https" } else { "http" }
    );
    if let Some(ca) = &ca {
        health.push_str(&format!(
            "ca_file = \"{}\"\nsni = \"localhost\"\n",
            ca.display()
        ));
    }
    let members: Vec<String> = servers.iter().map(|s| member_at(s.addr())).collect();
    let lbd = Lbd::start(rt, 2, &config(bind, &health, &members)).await;
    for server in &servers {
        lbd.wait_for_log(&checked_up(server.addr()), 1).await;
    }
    let ha_servers = member_pair(tls).await;
    let ha_bind = free_addr();
    let haproxy = Haproxy::start(&haproxy_config(ha_bind, &ha_servers, tls), ha_bind).await;
    let b = servers[1].addr();
    let mut sides = vec![UnderTest {
        name: "lbd",
        bind,
        servers,
        log: Box::new(|| lbd.log()),
        down: went_down(b),
        up: went_up(b),
    }];

    if let Some(haproxy) = &haproxy {
        sides.push(UnderTest {
            name: "haproxy",
            bind: ha_bind,
            servers: ha_servers,
            log: Box::new(|| haproxy.log()),
            down: "Server api/b is DOWN".to_owned(),
            up: "Server api/b is UP".to_owned(),
        });
    }

    let traffic: Vec<Traffic> = sides
        .iter()
        .map(|side| Traffic::start(side.bind, 6, side.servers[0].ca_pem_path()))
        .collect();
    // Both members of each take traffic.
    let deadline = Instant::now() + WAIT;
    for side in &sides {
        while side.servers.iter().any(|s| s.data_requests() < 5) {
            assert!(
                Instant::now() < deadline,
                "{}: traffic does not reach both members",
                side.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Every member passed a few checks: each load balancer knows it up
    // (a server HAProxy has just added goes down at its first failure,
    // like an unconfirmed member of lbd's).
    for side in &sides {
        for server in &side.servers {
            server.wait_health_answers(200, 3).await;
        }
    }
    for side in &sides {
        side.servers[1].set_ready(false);
    }
    let bound = interval * (fall + 1) + Duration::from_millis(700);
    let took = all_logged_within(&sides, |s| &s.down, bound).await;
    // In flight at that moment may still arrive; after that, nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_down: Vec<usize> = sides.iter().map(|s| s.servers[1].data_requests()).collect();
    tokio::time::sleep(interval * 4).await;
    for (side, at_down) in sides.iter().zip(&at_down) {
        assert_eq!(
            side.servers[1].data_requests(),
            *at_down,
            "{}: a member down by its check got new connections",
            side.name
        );
    }

    for side in &sides {
        side.servers[1].set_ready(true);
    }
    let bound = interval * (rise + 1) + Duration::from_millis(700);
    all_logged_within(&sides, |s| &s.up, bound).await;
    let deadline = Instant::now() + WAIT;
    for (side, at_down) in sides.iter().zip(&at_down) {
        while side.servers[1].data_requests() < at_down + 5 {
            assert!(
                Instant::now() < deadline,
                "{}: back up, but no traffic",
                side.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    for (side, traffic) in sides.iter().zip(traffic) {
        let (answered, rate, failures) = traffic.stop().await;
        assert!(
            failures.is_empty(),
            "{}: client-visible failures: {failures:?}",
            side.name
        );
        assert!(
            rate >= 20.0,
            "{}: traffic was not steady: {answered} answers, {rate:.1}/s",
            side.name
        );
        eprintln!("{}: {answered} answers at {rate:.1}/s", side.name);
    }
    let log = lbd.log();
    assert!(
        !log.contains("reachable again"),
        "no connect failed, none may be reported:\n{log}"
    );
    assert_eq!(log.matches(&went_down(b)).count(), 1, "{log}");
    let names: Vec<&str> = sides.iter().map(|s| s.name).collect();
    eprintln!("down after: {names:?} {took:?}");
}

async fn readyz_503_takes_member_out_under_traffic(rt: &str) {
    readyz_503_under_traffic(rt, false).await;
}

async fn https_readyz_503_takes_member_out_under_traffic(rt: &str) {
    readyz_503_under_traffic(rt, true).await;
}

on_both_runtimes!(
    http_check_follows_rise_and_fall,
    https_check_with_ca_file_and_sni,
    silent_member_goes_down_by_timeout,
    tls_hello_on_tls_and_on_plain_tcp,
    readyz_503_drains_without_cutting_connections,
    admin_drain_is_checked_and_maint_is_not,
    failover_under_load_loses_no_connection,
    reload_keeps_health_of_unchanged_members,
    all_members_down_resets_new_clients,
    readyz_503_takes_member_out_under_traffic,
    https_readyz_503_takes_member_out_under_traffic,
);
