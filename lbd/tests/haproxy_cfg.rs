//! lbd reading haproxy.cfg: Octavia's own templates (rendered by
//! Octavia 19's code in the venv of `scripts/octavia/setup.sh`) accepted by
//! real HAProxy, by `lbd check-config` and by lbd behind a `haproxy`
//! symlink run as the amphora agent runs it, one of them served;
//! differential tests against Debian's HAProxy on the same file (weights,
//! allowed sources, backups; a member going DOWN by its checks under
//! traffic; a frontend's `maxconn`; `stats auth`); bad input refused
//! with file:line; `lbd convert` output loading back.
//!
//! Tests needing the Octavia venv or `/usr/sbin/haproxy` skip with a
//! printed reason when they are missing, unless `LBD_TEST_REQUIRE_TOOLS`
//! is set. All traffic stays on 127.0.0.0/8; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::apiserver::{http_get_once, ApiServer};
use common::tools::{available, run_bounded};
use common::*;
use lbd_config::haproxy;
use serde_json::{json, Value};

const HAPROXY: &str = "/usr/sbin/haproxy";
/// The amphora agent's `/var/lib/octavia/haproxy-default-user-group.conf`.
const USER_GROUP: &str = "global\n    user nobody\n    group nogroup\n";
const LIMIT: Duration = Duration::from_secs(60);

fn lbd_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbd"))
}

/// Renders `cases` with Octavia's templater into `dir` (`<name>.cfg`, and
/// `<name>.peer` for ACTIVE_STANDBY).
fn render(python: &Path, cases: &Value, dir: &Path) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/octavia/render_haproxy_cfg.py");
    let input = dir.join("cases.json");
    std::fs::write(&input, cases.to_string()).expect("write cases");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "exec '{}' '{}' '{}' < '{}'",
            python.display(),
            script.display(),
            dir.display(),
            input.display()
        ))
        .env("PYTHONWARNINGS", "ignore");
    let out = run_bounded(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "rendering failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_config(paths: &[&Path]) -> Output {
    let mut cmd = lbd_bin();
    cmd.arg("check-config").args(paths);
    run_bounded(cmd, LIMIT)
}

fn haproxy_check(paths: &[&Path], peer: Option<&str>) -> Output {
    let mut cmd = Command::new(HAPROXY);
    cmd.arg("-c");
    if let Some(peer) = peer {
        cmd.args(["-L", peer]);
    }
    for p in paths {
        cmd.arg("-f").arg(p);
    }
    run_bounded(cmd, LIMIT)
}

/// One load balancer of the matrix with one listener.
fn one_listener_case(i: usize, algorithm: &str, protocol: &str, monitor: Value) -> Value {
    let (algorithm, persistence) = match algorithm {
        "SOURCE_IP_PERSISTENCE" => ("ROUND_ROBIN", true),
        a => (a, false),
    };
    json!({
        "name": format!("m{i:02}"),
        "topology": if i.is_multiple_of(2) { "SINGLE" } else { "ACTIVE_STANDBY" },
        "listeners": [{
            "port": 80 + i,
            "algorithm": algorithm,
            "persistence": persistence,
            "pool_protocol": protocol,
            "monitor": monitor,
            "monitor_ip_port": i.is_multiple_of(3),
            "connection_limit": if i.is_multiple_of(2) { -1 } else { 1000 + i as i64 },
            "timeouts": [50_000 + i, 5_000 + i, 60_000 + i],
            "backup": i % 4 == 1,
            "disabled": i % 4 == 2,
            "weight0": i % 4 == 3,
        }],
    })
}

/// The matrix: every algorithm (and SOURCE_IP persistence) × pool protocol
/// × monitor type with one listener, with the other knobs rotating; and
/// load balancers with two and three listeners.
fn matrix() -> Vec<Value> {
    let mut cases = Vec::new();
    let mut i = 0;
    for algorithm in [
        "ROUND_ROBIN",
        "LEAST_CONNECTIONS",
        "SOURCE_IP",
        "SOURCE_IP_PERSISTENCE",
    ] {
        for protocol in ["TCP", "PROXY", "PROXYV2"] {
            for monitor in [
                Value::Null,
                json!("TCP"),
                json!("HTTP"),
                json!("HTTPS"),
                json!("TLS-HELLO"),
            ] {
                cases.push(one_listener_case(i, algorithm, protocol, monitor));
                i += 1;
            }
        }
    }
    cases.push(json!({
        "name": "two-listeners",
        "topology": "ACTIVE_STANDBY",
        "listeners": [
            {"port": 80, "algorithm": "LEAST_CONNECTIONS", "pool_protocol": "PROXY",
             "monitor": "HTTP", "monitor_ip_port": true, "connection_limit": 100,
             "timeouts": [30000, 2000, 60000], "backup": true},
            {"port": 443, "algorithm": "SOURCE_IP", "pool_protocol": "PROXYV2",
             "monitor": "HTTPS", "weight0": true, "disabled": true},
        ],
    }));
    cases.push(json!({
        "name": "three-listeners",
        "topology": "SINGLE",
        "listeners": [
            {"port": 80, "algorithm": "ROUND_ROBIN", "persistence": true, "monitor": "TLS-HELLO"},
            {"port": 81, "algorithm": "LEAST_CONNECTIONS", "monitor": null, "backup": true},
            {"port": 82, "algorithm": "SOURCE_IP", "pool_protocol": "PROXY", "monitor": "TCP",
             "connection_limit": 5, "timeouts": [1000, 1000, 1000]},
        ],
    }));
    cases
}

#[test]
fn octavia_templates_are_accepted_by_haproxy_and_lbd() {
    let Some(python) = octavia_python() else {
        return;
    };
    let dir = scratch_dir();
    let cases = matrix();
    render(&python, &Value::Array(cases.clone()), &dir);
    let user_group = dir.join("haproxy-default-user-group.conf");
    std::fs::write(&user_group, USER_GROUP).expect("write user/group file");
    let with_haproxy = available(HAPROXY, "haproxy");
    // lbd behind a `haproxy` symlink, as the amphora image installs it.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let as_haproxy = bin.join("haproxy");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lbd"), &as_haproxy)
        .expect("symlink haproxy -> lbd");
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let cfg = dir.join(format!("{name}.cfg"));
        let peer = std::fs::read_to_string(dir.join(format!("{name}.peer"))).ok();
        let rendered = std::fs::read_to_string(&cfg).expect("rendered");
        if with_haproxy {
            let out = haproxy_check(&[&cfg, &user_group], peer.as_deref());
            assert!(
                out.status.success(),
                "HAProxy refuses {name} (the matrix is wrong):\n{}\n{rendered}",
                text(&out)
            );
        }
        let out = check_config(&[&cfg, &user_group]);
        assert!(
            out.status.success(),
            "lbd refuses {name}:\n{}\n--- config:\n{rendered}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("[WARNING]  (lbd) : config : parsing ["),
            "warnings are printed: {stderr}"
        );

        // The amphora agent's own check: `haproxy -c -L <peer> -f <lb cfg>
        // -f <user-group cfg>`, answered as HAProxy answers it.
        let mut cmd = Command::new(&as_haproxy);
        cmd.arg("-c");
        if let Some(peer) = &peer {
            cmd.args(["-L", peer]);
        }
        cmd.arg("-f").arg(&cfg).arg("-f").arg(&user_group);
        let out = run_bounded(cmd, LIMIT);
        assert_eq!(
            out.status.code(),
            Some(0),
            "haproxy (lbd) -c refuses {name}:\n{}\n--- config:\n{rendered}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Configuration file is valid"),
            "{name}: {}",
            text(&out)
        );

        // What it became.
        let (config, _) =
            haproxy::load_paths(&[cfg.clone(), user_group.clone()], haproxy::Env::process())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let listeners = case["listeners"].as_array().expect("listeners");
        assert_eq!(config.listeners.len(), listeners.len(), "{name}");
        for (l, spec) in config.listeners.iter().zip(listeners) {
            let pool = config.pool(&l.pool).expect("pool");
            let algorithm = match (spec["algorithm"].as_str(), spec["persistence"].as_bool()) {
                (_, Some(true)) | (Some("SOURCE_IP"), _) => "source_ip",
                (Some("LEAST_CONNECTIONS"), _) => "least_connections",
                _ => "round_robin",
            };
            assert_eq!(pool.algorithm.name(), algorithm, "{name}");
            let proxy = match spec["pool_protocol"].as_str() {
                Some("PROXY") => Some("v1"),
                Some("PROXYV2") => Some("v2"),
                _ => None,
            };
            assert_eq!(l.proxy_protocol.map(|p| p.name()), proxy, "{name}");
            let check = match spec["monitor"].as_str() {
                None => None,
                // Octavia 19 renders TLS-HELLO as a plain 'check'.
                Some("TCP" | "TLS-HELLO") => Some("tcp"),
                Some("HTTP") => Some("http"),
                Some("HTTPS") => Some("https"),
                Some(other) => panic!("{other}"),
            };
            assert_eq!(pool.health.as_ref().map(|h| h.kind.name()), check, "{name}");
            if let Some(limit) = spec["connection_limit"].as_i64().filter(|l| *l > 0) {
                assert_eq!(i64::from(l.connection_limit), limit, "{name}");
            }
            if let Some(t) = spec["timeouts"].as_array() {
                let ms = |v: &Value| Duration::from_millis(v.as_u64().expect("ms"));
                assert_eq!(l.client_idle, ms(&t[0]), "{name}");
                assert_eq!(l.member_connect, ms(&t[1]), "{name}");
                assert_eq!(l.member_idle, ms(&t[2]), "{name}");
            }
            if spec["backup"].as_bool() == Some(true) {
                assert!(pool.members.iter().any(|m| m.backup), "{name}");
            }
            if spec["disabled"].as_bool() == Some(true) {
                assert!(
                    pool.members
                        .iter()
                        .any(|m| m.admin_state == lbd_config::AdminState::Maint),
                    "{name}"
                );
            }
            if spec["weight0"].as_bool() == Some(true) {
                assert!(pool.members.iter().any(|m| m.weight == 0), "{name}");
            }
            if spec["monitor_ip_port"].as_bool() == Some(true) && check.is_some() {
                assert!(
                    pool.members.iter().all(|m| m.monitor_port.is_some()),
                    "{name}"
                );
            }
        }
    }
}

/// A rendered config of one listener on `vip:port` in front of `members`
/// (address, weight), a TCP monitor every 200 ms.
fn served_case(name: &str, vip: &str, port: u16, members: &[(SocketAddr, u32)]) -> Value {
    json!([{
        "name": name,
        "vip": vip,
        "listeners": [{
            "port": port, "algorithm": "ROUND_ROBIN", "pool_protocol": "TCP",
            "monitor": "TCP", "connection_limit": 200, "timeouts": [10000, 2000, 10000],
            "members": members.iter().map(|(a, w)| json!({
                "ip": a.ip().to_string(), "port": a.port(), "weight": w,
            })).collect::<Vec<_>>(),
        }],
    }])
}

async fn octavia_config_serves_traffic(rt: &str) {
    let Some(python) = octavia_python() else {
        return;
    };
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let port = free_port();
    let dir = scratch_dir();
    render(
        &python,
        &served_case("lb", "127.0.0.1", port, &[(a.addr, 1), (b.addr, 2)]),
        &dir,
    );
    let user_group = dir.join("user-group.conf");
    std::fs::write(&user_group, USER_GROUP).expect("write");
    let rendered = std::fs::read_to_string(dir.join("lb.cfg")).expect("rendered");
    // Octavia's checks run every 'delay' (30s in its samples): faster here.
    let rendered = rendered
        .replace("inter 30s", "inter 200ms")
        .replace("timeout check 31s", "timeout check 100ms");
    // lbd is started with the rendered file (told apart from TOML by its
    // content) and the user/group file, as the amphora agent does.
    let ug = user_group.clone();
    let lbd = Lbd::start_with(rt, 1, &rendered, move |cmd| {
        cmd.arg("-c").arg(&ug);
    })
    .await;
    let listener: SocketAddr = ([127, 0, 0, 1], port).into();
    let counts = tally(listener, 30).await;
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");

    // SIGHUP re-reads the haproxy.cfg: new weights apply.
    assert!(
        lbd.reload(&rendered.replace(" weight 2 ", " weight 1 "))
            .await,
        "{}",
        lbd.log()
    );
    let counts = tally(listener, 20).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
    // A broken file is refused and the running config stays.
    assert!(
        !lbd.reload(&format!("{rendered}\nfrontend broken\n    frobnicate\n"))
            .await
    );
    assert!(
        lbd.log()
            .contains("unknown keyword 'frobnicate' in 'frontend' section"),
        "{}",
        lbd.log()
    );
    let counts = tally(listener, 20).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
    // Warnings were logged, not swallowed.
    assert!(
        lbd.log().contains("'daemon': lbd stays in the foreground"),
        "{}",
        lbd.log()
    );
}

/// A mode tcp config for both HAProxy and lbd: weights 1:3, a backup,
/// checks every 100 ms, clients only from 127.0.0.2.
fn differential_config(bind: SocketAddr, a: SocketAddr, b: SocketAddr, c: SocketAddr) -> String {
    format!(
        "global\n    maxconn 1000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         \x20   retries 3\n    option redispatch\n\
         frontend fe\n    bind {bind}\n    acl allowed src 127.0.0.2/32\n\
         \x20   tcp-request connection reject unless allowed\n    default_backend be\n\
         backend be\n    balance roundrobin\n    option allbackups\n\
         \x20   default-server check inter 100ms fall 1 rise 1\n\
         \x20   server a {a} weight 1\n    server b {b} weight 3\n    server c {c} weight 1 backup\n"
    )
}

async fn counts_from(listener: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let from: SocketAddr = ([127, 0, 0, 2], 0).into();
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..n {
        let tag = hit_from(listener, Some(from))
            .await
            .unwrap_or_else(|e| panic!("connection {i} to {listener} failed: {e}"));
        *counts.entry(tag).or_insert(0) += 1;
    }
    counts
}

/// Waits (bounded) until 4 connections in a row reach `tag` (while the
/// checks notice dead members, a connection may fail: not counted).
async fn wait_all_on(listener: SocketAddr, tag: &str, who: &str) {
    let deadline = Instant::now() + WAIT;
    let from: SocketAddr = ([127, 0, 0, 2], 0).into();
    loop {
        let mut tags = Vec::new();
        for _ in 0..4 {
            tags.push(hit_from(listener, Some(from)).await.ok());
        }
        if tags.iter().all(|t| t.as_deref() == Some(tag)) {
            return;
        }
        let counts = tags;
        assert!(Instant::now() < deadline, "{who}: still {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn same_file_as_haproxy(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let c = Backend::start("c", Mode::TaggedEcho).await;
    let ha_bind = free_addr();
    let lbd_bind = free_addr();
    let Some(_haproxy) = common::haproxy::Haproxy::start(
        &differential_config(ha_bind, a.addr, b.addr, c.addr),
        ha_bind,
    )
    .await
    else {
        return;
    };
    let _lbd = Lbd::start(
        rt,
        1,
        &differential_config(lbd_bind, a.addr, b.addr, c.addr),
    )
    .await;
    // Let both see every server up (HAProxy starts them up, lbd checks).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Weights 1:3 over 40 connections, the backup unused.
    for (who, listener) in [("haproxy", ha_bind), ("lbd", lbd_bind)] {
        let counts = counts_from(listener, 40).await;
        assert_eq!(
            (counts.get("a"), counts.get("b"), counts.get("c")),
            (Some(&10), Some(&30), None),
            "{who}: {counts:?}"
        );
    }
    // allowed_cidrs: 127.0.0.3 is refused by both, 127.0.0.2 served.
    for (who, listener) in [("haproxy", ha_bind), ("lbd", lbd_bind)] {
        let other: SocketAddr = ([127, 0, 0, 3], 0).into();
        assert!(
            is_refused(listener, Some(other), WAIT).await,
            "{who} served 127.0.0.3"
        );
        assert!(counts_from(listener, 1).await.len() == 1, "{who}");
    }
    // Both primaries gone: both send everything to the backup.
    a.stop().await;
    b.stop().await;
    for (who, listener) in [("haproxy", ha_bind), ("lbd", lbd_bind)] {
        wait_all_on(listener, "c", who).await;
        let counts = counts_from(listener, 10).await;
        assert_eq!(counts.get("c"), Some(&10), "{who}: {counts:?}");
    }
}

/// Clients sending `GET /who` on a new connection every 50 ms each until
/// stopped: steady traffic while state changes.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, usize)>>,
}

impl Traffic {
    fn start(listener: SocketAddr, clients: usize) -> Traffic {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                tokio::spawn(async move {
                    let (mut answered, mut failed) = (0, 0);
                    // Bounded: at most 60 s worth of requests.
                    for _ in 0..1200 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let next = tokio::time::Instant::now() + Duration::from_millis(50);
                        match http_get_once(listener, "/who").await {
                            Ok((200, _)) => answered += 1,
                            _ => failed += 1,
                        }
                        tokio::time::sleep_until(next).await;
                    }
                    (answered, failed)
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    /// Stops the clients: (answered, failed) requests.
    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = (0, 0);
        for task in self.tasks {
            let (a, f) = task.await.expect("traffic task");
            total.0 += a;
            total.1 += f;
        }
        total
    }
}

/// The check settings of [`down_config`].
const INTER: Duration = Duration::from_millis(200);
const FALL: u32 = 3;

/// One mode tcp `listen` section with two checked servers (`inter 200ms
/// fall 3 rise 2`; `httpchk`: `option httpchk GET /readyz`), HAProxy
/// logging health checks on stderr.
fn down_config(bind: SocketAddr, a: SocketAddr, b: SocketAddr, httpchk: bool) -> String {
    let chk = if httpchk {
        "    option httpchk GET /readyz\n    http-check expect status 200\n"
    } else {
        ""
    };
    format!(
        "global\n    maxconn 1000\n    log stderr format raw local0\n\
         defaults\n    mode tcp\n    log global\n    option log-health-checks\n\
         \x20   timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         \x20   timeout check 150ms\n    retries 3\n    option redispatch\n\
         listen be\n    bind {bind}\n    balance roundrobin\n{chk}\
         \x20   default-server check inter 200ms fall 3 rise 2\n\
         \x20   server a {a}\n    server b {b}\n"
    )
}

/// A member taken out under steady traffic, HAProxy and lbd reading the
/// same file and checking the same two members:
///
/// - `httpchk`: b's `/readyz` turns 503 (its port stays open, traffic to it
///   still succeeds): both mark it DOWN after `fall` failed checks, from
///   the change between `(fall - 1) x inter` (the first failed check can
///   come at once) and `fall x inter` (it can come one interval later),
///   and within one interval of each other;
/// - otherwise b's port closes: HAProxy marks it DOWN in the same window;
///   lbd no later, and usually earlier: failed connects of real traffic
///   count as failed checks in lbd (HAProxy only does that with `observe
///   layer4`), so lbd stops sending clients to a dead port sooner.
///
/// Nominally DOWN comes by `fall x inter`; the assertions allow up to one
/// more interval (the brief's "within one interval of `fall x inter`"),
/// a margin for a busy machine, and 100 ms more between the two.
async fn member_goes_down_like_haproxy(rt: &str, httpchk: bool) {
    let a = ApiServer::start("a", false).await;
    let b = ApiServer::start("b", false).await;
    let b_addr = b.addr();
    let ha_bind = free_addr();
    let lbd_bind = free_addr();
    let Some(haproxy) =
        common::haproxy::Haproxy::start(&down_config(ha_bind, a.addr(), b_addr, httpchk), ha_bind)
            .await
    else {
        return;
    };
    let lbd = Lbd::start(rt, 1, &down_config(lbd_bind, a.addr(), b_addr, httpchk)).await;
    lbd.wait_for_log(&format!("member be/{b_addr} checked: up"), 1)
        .await;
    // A few passed checks: HAProxy's health counter of b is full (a
    // server it has just started goes down at its first failure).
    tokio::time::sleep(INTER * 5).await;
    let traffic = [Traffic::start(ha_bind, 4), Traffic::start(lbd_bind, 4)];
    let deadline = Instant::now() + WAIT;
    while b.data_requests() < 10 {
        assert!(Instant::now() < deadline, "no traffic reaches b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    if httpchk {
        b.set_ready(false);
    } else {
        b.stop_listening().await;
    }
    let killed = Instant::now();
    let ha_down = "Server be/b is DOWN";
    let lbd_down = format!("member be/{b_addr} is DOWN");
    let (mut t_ha, mut t_lbd) = (None, None);
    let limit = INTER * FALL * 10;
    while t_ha.is_none() || t_lbd.is_none() {
        if t_ha.is_none() && haproxy.log().contains(ha_down) {
            t_ha = Some(killed.elapsed());
        }
        if t_lbd.is_none() && lbd.log().contains(&lbd_down) {
            t_lbd = Some(killed.elapsed());
        }
        assert!(
            killed.elapsed() < limit,
            "not DOWN within {limit:?}: haproxy {t_ha:?}, lbd {t_lbd:?}\n\
             haproxy:\n{}\nlbd:\n{}",
            haproxy.log(),
            lbd.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (t_ha, t_lbd) = (t_ha.unwrap_or_default(), t_lbd.unwrap_or_default());
    eprintln!("{rt} httpchk={httpchk}: DOWN after the change: haproxy {t_ha:?}, lbd {t_lbd:?}");
    let fall_inter = INTER * FALL;
    let margin = Duration::from_millis(150);
    let in_window = |t: Duration| {
        t + INTER + Duration::from_millis(30) >= fall_inter && t <= fall_inter + INTER
    };
    assert!(
        in_window(t_ha),
        "haproxy: DOWN {t_ha:?} after the change, expected within one interval of \
         fall x inter = {fall_inter:?}"
    );
    if httpchk {
        assert!(
            in_window(t_lbd),
            "lbd: DOWN {t_lbd:?} after the change, expected within one interval of \
             fall x inter = {fall_inter:?}\n{}",
            lbd.log()
        );
        let apart = t_ha.max(t_lbd) - t_ha.min(t_lbd);
        assert!(
            apart <= INTER + Duration::from_millis(100),
            "haproxy {t_ha:?} and lbd {t_lbd:?} are more than one interval apart"
        );
    } else {
        assert!(
            t_lbd <= t_ha + margin,
            "lbd: DOWN {t_lbd:?} after the port closed, later than haproxy ({t_ha:?})"
        );
    }
    // Both serve on a alone now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_down = b.data_requests();
    let [ha_traffic, lbd_traffic] = traffic;
    for (who, traffic) in [("haproxy", ha_traffic), ("lbd", lbd_traffic)] {
        let (answered, failed) = traffic.stop().await;
        eprintln!("{who}: {answered} answered, {failed} failed");
        assert!(answered >= 40, "{who}: traffic was not steady: {answered}");
    }
    for (who, listener) in [("haproxy", ha_bind), ("lbd", lbd_bind)] {
        for _ in 0..6 {
            let (status, _) = http_get_once(listener, "/who")
                .await
                .unwrap_or_else(|e| panic!("{who}: {e}"));
            assert_eq!(status, 200, "{who}");
        }
    }
    assert_eq!(b.data_requests(), at_down, "b got requests once DOWN");
}

async fn member_503_goes_down_like_haproxy(rt: &str) {
    member_goes_down_like_haproxy(rt, true).await;
}

async fn member_port_closed_goes_down_like_haproxy(rt: &str) {
    member_goes_down_like_haproxy(rt, false).await;
}

/// A `frontend` with `maxconn 5` and 10 clients held open: HAProxy and
/// lbd both serve exactly 5 at once. They differ in what the others get:
/// HAProxy stops accepting, so they wait in the kernel's accept queue
/// (connected, no answer, not closed) and the next is served when one
/// leaves; lbd accepts and closes them at once (refused), and a client
/// connecting after one has left is served.
fn maxconn_config(bind: SocketAddr, a: SocketAddr) -> String {
    format!(
        "global\n    maxconn 1000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         frontend fe\n    bind {bind}\n    maxconn 5\n    default_backend be\n\
         backend be\n    server a {a}\n"
    )
}

async fn frontend_maxconn_like_haproxy(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let ha_bind = free_addr();
    let lbd_bind = free_addr();
    let Some(_haproxy) =
        common::haproxy::Haproxy::start(&maxconn_config(ha_bind, a.addr), ha_bind).await
    else {
        return;
    };
    let _lbd = Lbd::start(rt, 1, &maxconn_config(lbd_bind, a.addr)).await;
    // Haproxy::start's probe connection has to be gone before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = Duration::from_millis(700);
    for (who, listener) in [("haproxy", ha_bind), ("lbd", lbd_bind)] {
        let mut served = Vec::new();
        let mut others = Vec::new();
        for i in 0..10 {
            let mut conn = match connect_from(listener, None).await {
                Ok(conn) => conn,
                // On loopback a reset can arrive before connect() returns.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    others.push((None, true));
                    continue;
                }
                Err(e) => panic!("{who}: connect {i}: {e}"),
            };
            match tokio::time::timeout(quiet, read_line(&mut conn)).await {
                Ok(Ok(tag)) => {
                    assert_eq!(tag, "a", "{who}");
                    served.push(conn);
                }
                Ok(Err(_)) => others.push((Some(conn), true)),
                Err(_) => others.push((Some(conn), false)),
            }
        }
        assert_eq!(served.len(), 5, "{who}: served at once");
        let closed: Vec<bool> = others.iter().map(|(_, closed)| *closed).collect();
        match who {
            // Waiting in the accept queue: not closed, no answer.
            "haproxy" => assert_eq!(closed, [false; 5], "{who}"),
            // Refused: closed without an answer.
            _ => assert_eq!(closed, [true; 5], "{who}"),
        }
        // One served client leaves: one more is served.
        drop(served.pop());
        if who == "haproxy" {
            let mut answered = 0;
            for conn in others.iter_mut().filter_map(|(c, _)| c.as_mut()) {
                if let Ok(Ok(tag)) = tokio::time::timeout(quiet, read_line(conn)).await {
                    assert_eq!(tag, "a", "{who}");
                    answered += 1;
                }
            }
            assert_eq!(answered, 1, "{who}: a waiting client is served");
        } else {
            let deadline = Instant::now() + WAIT;
            loop {
                let Ok(mut conn) = connect_from(listener, None).await else {
                    assert!(
                        Instant::now() < deadline,
                        "{who}: no room after a client left"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if let Ok(Ok(tag)) = tokio::time::timeout(quiet, read_line(&mut conn)).await {
                    assert_eq!(tag, "a", "{who}");
                    served.push(conn);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{who}: no room after a client left"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Full again: the next is refused.
            assert!(
                is_refused(listener, None, WAIT).await,
                "{who}: a sixth client is served"
            );
        }
    }
}

/// A `listen stats` section with `stats auth` (two users) and `stats
/// realm`, next to a traffic proxy.
fn stats_auth_config(bind: SocketAddr, stats: SocketAddr, a: SocketAddr) -> String {
    format!(
        "global\n    maxconn 1000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         listen traffic\n    bind {bind}\n    server a {a}\n\
         listen stats\n    bind {stats}\n    mode http\n    stats enable\n    stats uri /\n\
         \x20   stats realm lbd\\ test\n    stats auth admin:s3cret\n    stats auth ops:p:w\n"
    )
}

/// `stats auth` and `stats realm`: the same file is valid for `haproxy -c`
/// and `lbd check-config` (and `lbd convert` keeps both), and HAProxy's
/// stats page and lbd's both answer 401 with the realm's challenge without
/// credentials or with a wrong password, and 200 with either user's.
async fn stats_auth_like_haproxy(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let (ha_bind, ha_stats) = (free_addr(), free_addr());
    let (lbd_bind, lbd_stats) = (free_addr(), free_addr());
    let dir = scratch_dir();
    let cfg = dir.join("stats.cfg");
    std::fs::write(&cfg, stats_auth_config(ha_bind, ha_stats, a.addr)).expect("write");
    let out = check_config(&[&cfg]);
    assert!(out.status.success(), "lbd: {}", text(&out));
    if available(HAPROXY, "haproxy") {
        let out = haproxy_check(&[&cfg], None);
        assert!(out.status.success(), "haproxy: {}", text(&out));
    }
    // `lbd convert` carries the users and the realm over.
    let mut cmd = lbd_bin();
    cmd.arg("convert").arg(&cfg);
    let out = run_bounded(cmd, LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    let converted = dir.join("stats.toml");
    std::fs::write(&converted, &out.stdout).expect("write");
    let auth = lbd_config::load_file(&converted)
        .expect("converted loads")
        .admin
        .and_then(|a| a.stats_auth)
        .expect("stats_auth");
    assert_eq!(auth.realm, "lbd test");
    let users: Vec<(&str, &str)> = auth
        .users
        .iter()
        .map(|u| (u.user.as_str(), u.password.as_str()))
        .collect();
    assert_eq!(users, [("admin", "s3cret"), ("ops", "p:w")]);
    let Some(_haproxy) =
        common::haproxy::Haproxy::start(&stats_auth_config(ha_bind, ha_stats, a.addr), ha_stats)
            .await
    else {
        return;
    };
    let _lbd = Lbd::start(rt, 1, &stats_auth_config(lbd_bind, lbd_stats, a.addr)).await;
    // base64 of "admin:s3cret", "ops:p:w" and "admin:s3creT".
    let good = "Authorization: Basic YWRtaW46czNjcmV0";
    let other = "Authorization: Basic b3BzOnA6dw==";
    let wrong = "Authorization: Basic YWRtaW46czNjcmVU";
    for (who, stats, bind) in [("haproxy", ha_stats, ha_bind), ("lbd", lbd_stats, lbd_bind)] {
        assert_eq!(hit(bind).await.expect("traffic"), "a", "{who}");
        for (headers, want) in [
            (&[][..], 401),
            (&[wrong][..], 401),
            (&[good][..], 200),
            (&[other][..], 200),
        ] {
            let (code, head) = http_head_of(stats, "/", headers)
                .await
                .unwrap_or_else(|e| panic!("{who}: {e}"));
            assert_eq!(code, want, "{who} {headers:?}:\n{head}");
            if want == 401 {
                assert_eq!(
                    header_of(&head, "www-authenticate").as_deref(),
                    Some("Basic realm=\"lbd test\""),
                    "{who}:\n{head}"
                );
            }
        }
    }
}

on_both_runtimes!(
    stats_auth_like_haproxy,
    octavia_config_serves_traffic,
    same_file_as_haproxy,
    member_503_goes_down_like_haproxy,
    member_port_closed_goes_down_like_haproxy,
    frontend_maxconn_like_haproxy,
);

/// Each bad input: `lbd check-config` exits 1 with the file, the line and
/// the reason in HAProxy's alert style.
#[test]
fn bad_input_is_refused_with_file_and_line() {
    let dir = scratch_dir();
    let good_backend = "backend b\n    mode tcp\n    server s 127.0.0.1:1\n";
    let mut huge = b"global\n    description ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 1 << 20));
    huge.push(b'\n');
    let mut binary = b"global\n".to_vec();
    binary.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unknown.cfg",
            format!("global\n    daemon\n    frobnicate yes\n{good_backend}").into_bytes(),
            "[unknown.cfg:3] : unknown keyword 'frobnicate' in 'global' section",
        ),
        (
            "argcount.cfg",
            format!("{good_backend}    retries 1 2\n").into_bytes(),
            "[argcount.cfg:4] : 'retries' expects 1 argument(s) (usage: retries <number>), got 2",
        ),
        (
            "http.cfg",
            format!("frontend f\n    mode http\n    bind 127.0.0.1:1\n    default_backend b\n{good_backend}")
                .into_bytes(),
            "[http.cfg:1] : frontend 'f' is 'mode http' (set at http.cfg:2): lbd is L4",
        ),
        ("huge.cfg", huge, "[huge.cfg:2] : line too long (1048592 bytes"),
        ("binary.cfg", binary, "[binary.cfg:2] : "),
    ];
    for (name, content, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &content).expect("write");
        let out = check_config(&[&path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let expected = expected.replace(name, &path.display().to_string());
        assert!(
            stderr.contains(&expected),
            "{name}: expected {expected:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains("[ALERT]    (lbd) : config : "),
            "{name}: {stderr}"
        );
        assert!(
            stderr.lines().count() < 40,
            "{name}: a short report:\n{stderr}"
        );
    }
    // A missing file among several.
    let good = dir.join("good.cfg");
    std::fs::write(&good, good_backend).expect("write");
    let missing = dir.join("missing.cfg");
    let out = check_config(&[&good, &missing]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "Cannot open configuration file/directory {} : No such file or directory",
            missing.display()
        )),
        "{}",
        text(&out)
    );
}

/// `lbd convert` prints TOML that `lbd check-config` accepts and that loads
/// to the same config as the haproxy.cfg, with a comment per warning.
#[test]
fn convert_output_loads_back() {
    let dir = scratch_dir();
    let cfg = dir.join("lb.cfg");
    std::fs::write(
        &cfg,
        "global\n    daemon\n    hard-stop-after 30s\n    nbthread 2\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 50s\n    timeout server 50s\n\
         \x20   option http-keep-alive\n\
         frontend api\n    bind 127.0.0.1:6443,127.0.0.2:6443\n    maxconn 1000\n\
         \x20   tcp-request connection reject unless { src 10.0.0.0/8 127.0.0.0/8 }\n\
         \x20   default_backend apiservers\n\
         backend apiservers\n    balance leastconn\n    option httpchk GET /readyz HTTP/1.1\n\
         \x20   http-check expect status 200\n\
         \x20   default-server check check-ssl verify none inter 2s fall 3 rise 2\n\
         \x20   server m1 10.0.0.1:6443\n    server m2 10.0.0.2:6443\n    server m3 10.0.0.3:6443 backup\n\
         listen stats\n    bind 127.0.0.1:8404\n    mode http\n    stats enable\n    stats uri /\n",
    )
    .expect("write");
    let mut cmd = lbd_bin();
    cmd.arg("convert").arg(&cfg);
    let out = run_bounded(cmd, LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    let toml_text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        toml_text.contains("#   ") && toml_text.contains(":2: 'daemon'"),
        "{toml_text}"
    );
    assert!(
        toml_text.contains("# nbthread 2: run lbd with --workers 2"),
        "{toml_text}"
    );
    let converted = dir.join("lbd.toml");
    std::fs::write(&converted, &toml_text).expect("write");
    let out = check_config(&[&converted]);
    assert!(out.status.success(), "{}\n{toml_text}", text(&out));
    let from_toml = lbd_config::load_file(&converted).expect("loads");
    let (from_haproxy, _) =
        haproxy::load_paths(&[cfg], haproxy::Env::process()).expect("haproxy.cfg loads");
    assert_eq!(from_toml, from_haproxy);
    assert_eq!(from_toml.listeners.len(), 2);
    assert_eq!(
        from_toml.admin.map(|a| a.bind.to_string()).as_deref(),
        Some("127.0.0.1:8404")
    );
}
