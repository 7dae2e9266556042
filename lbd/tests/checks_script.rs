//! The check types `external` and `tcp_script` on a real lbd, on both
//! runtimes, under steady client traffic:
//!
//! * external: a program's exit status drives a member down and up; one
//!   that hangs is killed at the timeout with everything it started, and
//!   counts as a failure; one that prints 10 MiB costs lbd no memory and
//!   is judged by its exit status; no zombie, no descriptor leak; the
//!   arguments and environment are HAProxy's (HAProxy itself as the oracle);
//! * tcp_script: a Redis-like PING/+PONG, a binary expect and a multi-step
//!   SMTP-like dialogue, each passing against a member that answers right
//!   and failing against one that answers wrong, with HAProxy running the
//!   same `tcp-check` lines against the same member as the oracle;
//! * a reload keeps the check state of unchanged members of both types.
//!
//! What lbd decided is read from its log, its `/stats.json` and where the
//! traffic goes; what clients see is counted by the traffic itself.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::stats;
use common::haproxy::Haproxy;
use common::*;
use lbd_test_support::eventually;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What external check programs may run: sh builtins, head, tr, sleep, env.
const PATH: &str = "/usr/bin:/bin";

// ------------------------------------------------------------- lbd config

/// An admin server on `admin`, a listener "svc" on `bind` for pool "svc"
/// with `[pool.health]` holding `health`, and these members (each a
/// `[[pool.member]]` table), then `more` (other pools).
fn config(
    bind: SocketAddr,
    admin: SocketAddr,
    health: &str,
    members: &[String],
    more: &str,
) -> String {
    format!(
        "[admin]\nbind = \"{admin}\"\n\n\
         [[listener]]\nname = \"svc\"\nbind = \"{bind}\"\npool = \"svc\"\n\n\
         [[pool]]\nname = \"svc\"\n[pool.health]\n{health}\n{}\n{more}",
        members.concat()
    )
}

/// A member whose checks go to `check_port` instead (`monitor_port`).
fn member_checked_at(addr: SocketAddr, check_port: u16) -> String {
    format!("{}monitor_port = {check_port}\n", member_at(addr))
}

fn external(script: &Path, timing: &str) -> String {
    format!(
        "type = \"external\"\ncommand = [\"{}\"]\ncommand_path = \"{PATH}\"\n{timing}\n",
        script.display()
    )
}

/// lbd's log lines about member `addr` of pool `pool`.
fn down(pool: &str, addr: SocketAddr) -> String {
    format!("member {pool}/{addr} is DOWN")
}

fn up(pool: &str, addr: SocketAddr) -> String {
    format!("member {pool}/{addr} is UP")
}

fn checked_up(pool: &str, addr: SocketAddr) -> String {
    format!("member {pool}/{addr} checked: up")
}

/// Writes an executable `#!/bin/sh` script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn touch(path: PathBuf) {
    std::fs::write(path, "").expect("touch");
}

// ------------------------------------------------------------------ stats

/// The stats of member `addr` of pool `pool`.
async fn member_stats(admin: SocketAddr, pool: &str, addr: SocketAddr) -> Value {
    let stats = stats(admin).await;
    let pools = stats["pools"].as_array().expect("pools");
    let pool = pools
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in {stats}"));
    pool["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("no member {addr} in {pool}"))
        .clone()
}

// ---------------------------------------------------------------- traffic

/// Clients connecting to `bind` in a loop (each connection reads the
/// member's tag and closes), counting tags and failures, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    tags: Arc<Mutex<BTreeMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(bind: SocketAddr, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let tags = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, tags, failures) =
                    (Arc::clone(&stop), Arc::clone(&tags), Arc::clone(&failures));
                tokio::spawn(async move {
                    // Bounded: a test never runs this long.
                    let end = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        match hit(bind).await {
                            Ok(tag) => *tags.lock().unwrap().entry(tag).or_insert(0) += 1,
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            tags,
            failures,
            tasks,
        }
    }

    /// Connections that reached the member tagged `tag` so far.
    fn count(&self, tag: &str) -> usize {
        self.tags.lock().unwrap().get(tag).copied().unwrap_or(0)
    }

    /// Waits until `tag` got `more` connections beyond what it has now.
    async fn wait_more(&self, tag: &str, more: usize) {
        let target = self.count(tag) + more;
        eventually(&format!("{more} more connections reach {tag}"), || async {
            self.count(tag) >= target
        })
        .await;
    }

    /// Asserts that `tag` gets no new connection for `during` (after
    /// `settle` for connections already on their way).
    async fn assert_none_to(&self, tag: &str, settle: Duration, during: Duration) {
        tokio::time::sleep(settle).await;
        let before = self.count(tag);
        tokio::time::sleep(during).await;
        assert_eq!(
            self.count(tag),
            before,
            "member {tag} is down but got new connections"
        );
    }

    /// Stops the clients; asserts none of them saw a failure.
    async fn stop(self) -> BTreeMap<String, usize> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
        let failures = self.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "clients saw failures: {failures:?}");
        let tags = self.tags.lock().unwrap().clone();
        eprintln!("traffic: {tags:?}");
        tags
    }
}

// -------------------------------------------------------------- processes

/// lbd's open descriptors.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// `(state, parent)` of process `pid`, `None` when it is gone.
fn process(pid: i32) -> Option<(char, i32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let state = field("State:").chars().next().unwrap_or('?');
    Some((state, field("PPid:").parse().unwrap_or(0)))
}

/// Whether `pid` has ended: gone, or a zombie that is not lbd's to reap.
fn ended(pid: i32, lbd: i32) -> bool {
    match process(pid) {
        None => true,
        Some(('Z', parent)) => parent != lbd,
        Some(_) => false,
    }
}

/// lbd's children that are zombies (exited, not reaped).
fn zombie_children(lbd: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| process(pid) == Some(('Z', lbd)))
        .collect()
}

/// lbd's memory high-water mark in KiB (`VmHWM`).
fn peak_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// The `check took ...` of the first log line containing `needle`, in ms.
fn check_took_ms(log: &str, needle: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in\n{log}"));
    let took = line
        .split("check took ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no duration in {line}"));
    match took.strip_suffix("ms") {
        Some(ms) => ms.parse().expect("ms"),
        None => took.trim_end_matches('s').parse::<f64>().expect("s") * 1000.0,
    }
}

// --------------------------------------------------------------- external

/// A program that passes while `up-<server port>` exists in `dir`, and
/// says why it fails.
fn marker_script(dir: &Path) -> PathBuf {
    script(
        dir,
        "check-marker",
        &format!(
            "[ -e {0}/up-$4 ] && exit 0\necho \"$3:$4 is marked down\"\nexit 1",
            dir.display()
        ),
    )
}

async fn external_exit_status_drives_up_and_down(rt: &str) {
    let dir = scratch_dir();
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    touch(dir.join(format!("up-{}", a.addr.port())));
    touch(dir.join(format!("up-{}", b.addr.port())));
    let (bind, admin) = (free_addr(), free_addr());
    let health = external(
        &marker_script(&dir),
        "interval = \"300ms\"\ntimeout = \"300ms\"\nfall = 2\nrise = 2",
    );
    let members = [member(&a), member(&b)];
    let lbd = Lbd::start(rt, 2, &config(bind, admin, &health, &members, "")).await;
    lbd.wait_for_log(&checked_up("svc", a.addr), 1).await;
    lbd.wait_for_log(&checked_up("svc", b.addr), 1).await;

    let traffic = Traffic::start(bind, 4);
    traffic.wait_more("a", 5).await;
    traffic.wait_more("b", 5).await;

    std::fs::remove_file(dir.join(format!("up-{}", b.addr.port()))).expect("rm marker");
    let reason = format!("external: exit 1: {} is marked down", b.addr);
    lbd.wait_for_log(&format!("{}: {reason} (check took", down("svc", b.addr)), 1)
        .await;
    assert!(
        lbd.log().contains("2 failure(s) in a row"),
        "fall is 2:\n{}",
        lbd.log()
    );
    let stats = member_stats(admin, "svc", b.addr).await;
    assert_eq!(stats["status"], "down", "{stats}");
    assert_eq!(stats["last_check"]["passed"], false, "{stats}");
    assert_eq!(stats["last_check"]["result"], reason.as_str(), "{stats}");
    traffic
        .assert_none_to("b", Duration::from_millis(300), Duration::from_secs(1))
        .await;
    traffic.wait_more("a", 5).await;

    touch(dir.join(format!("up-{}", b.addr.port())));
    lbd.wait_for_log(&format!("{}: external: exit 0", up("svc", b.addr)), 1)
        .await;
    traffic.wait_more("b", 5).await;
    let stats = member_stats(admin, "svc", b.addr).await;
    assert_eq!(stats["status"], "up", "{stats}");
    assert_eq!(stats["last_check"]["result"], "external: exit 0", "{stats}");
    traffic.stop().await;
    assert_eq!(lbd.log().matches(&down("svc", a.addr)).count(), 0);
}

async fn hanging_external_is_killed_at_the_timeout(rt: &str) {
    let dir = scratch_dir();
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    // Each run records its shell's pid and, when told to hang, the pids of
    // two sleeps: one in the background, one it waits for.
    let hang = script(
        &dir,
        "check-hang",
        &format!(
            "pids={0}/pids-$4\necho $$ >> $pids\n\
             if [ -e {0}/hang-$4 ]; then\n\
               sleep 60 & echo $! >> $pids\n\
               sleep 61 & echo $! >> $pids\n\
               echo hanging\n  wait\nfi\nexit 0",
            dir.display()
        ),
    );
    let (bind, admin) = (free_addr(), free_addr());
    let health = external(
        &hang,
        "interval = \"400ms\"\ntimeout = \"300ms\"\nfall = 1\nrise = 1",
    );
    let members = [member(&a), member(&b)];
    let lbd = Lbd::start(rt, 2, &config(bind, admin, &health, &members, "")).await;
    lbd.wait_for_log(&checked_up("svc", a.addr), 1).await;
    lbd.wait_for_log(&checked_up("svc", b.addr), 1).await;
    let fds_before = fds(lbd.pid());
    let traffic = Traffic::start(bind, 4);
    traffic.wait_more("b", 5).await;

    touch(dir.join(format!("hang-{}", b.addr.port())));
    let reason = "external: timeout after 300ms (killed): hanging";
    let went_down = format!("{}: {reason}", down("svc", b.addr));
    lbd.wait_for_log(&went_down, 1).await;
    let took = check_took_ms(&lbd.log(), &went_down);
    assert!((290.0..1000.0).contains(&took), "the check took {took}ms");
    traffic
        .assert_none_to("b", Duration::from_millis(300), Duration::from_millis(800))
        .await;
    // A few more hung runs, each killed.
    let pids_file = dir.join(format!("pids-{}", b.addr.port()));
    let lines = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let at_down = lines(&pids_file);
    eventually("three more hung runs of b's check", || async {
        lines(&pids_file) >= at_down + 9
    })
    .await;
    let stats = member_stats(admin, "svc", b.addr).await;
    assert_eq!(stats["last_check"]["result"], reason, "{stats}");
    assert_eq!(stats["status"], "down", "{stats}");

    std::fs::remove_file(dir.join(format!("hang-{}", b.addr.port()))).expect("rm hang");
    lbd.wait_for_log(&up("svc", b.addr), 1).await;
    traffic.wait_more("b", 5).await;
    traffic.stop().await;

    // Nothing any run started is left: not the shells, not their sleeps.
    let pids: Vec<i32> = std::fs::read_to_string(&pids_file)
        .expect("pids")
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect();
    eventually("every process of every run has ended", || async {
        pids.iter().all(|&pid| ended(pid, lbd.pid()))
    })
    .await;
    let left: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| !ended(p, lbd.pid()))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    eventually("lbd reaps its children", || async {
        zombie_children(lbd.pid()).is_empty()
    })
    .await;
    // Dozens of runs (hung and normal) later, no descriptor was leaked.
    let runs = lines(&pids_file) / 2;
    assert!(runs >= 5, "{runs} runs");
    let fds_after = fds(lbd.pid());
    assert!(
        fds_after <= fds_before + 3,
        "descriptors: {fds_before} before, {fds_after} after {runs}+ runs"
    );
}

async fn chatty_external_is_capped(rt: &str) {
    let dir = scratch_dir();
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    touch(dir.join(format!("up-{}", a.addr.port())));
    touch(dir.join(format!("up-{}", b.addr.port())));
    // When `chatty` exists: 10 MiB of 'x' without a line end first.
    let chatty = script(
        &dir,
        "check-chatty",
        &format!(
            "if [ -e {0}/chatty ]; then\n\
               head -c 10485760 /dev/zero | tr '\\000' x\n\
               echo run >> {0}/runs-$4\nfi\n\
             [ -e {0}/up-$4 ] && exit 0\nexit 1",
            dir.display()
        ),
    );
    let (bind, admin) = (free_addr(), free_addr());
    let health = external(
        &chatty,
        "interval = \"1s\"\ntimeout = \"1s\"\nfall = 1\nrise = 1",
    );
    let members = [member(&a), member(&b)];
    let lbd = Lbd::start(rt, 2, &config(bind, admin, &health, &members, "")).await;
    lbd.wait_for_log(&checked_up("svc", a.addr), 1).await;
    lbd.wait_for_log(&checked_up("svc", b.addr), 1).await;
    let traffic = Traffic::start(bind, 4);
    traffic.wait_more("b", 5).await;
    let peak_before = peak_kib(lbd.pid());

    touch(dir.join("chatty"));
    let runs = dir.join(format!("runs-{}", b.addr.port()));
    let count = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    eventually("four chatty runs of b's check", || async {
        count(&runs) >= 4
    })
    .await;
    // Judged by the exit status: still up, its checks still passing.
    let stats = member_stats(admin, "svc", b.addr).await;
    assert_eq!(stats["status"], "up", "{stats}");
    assert_eq!(stats["last_check"]["result"], "external: exit 0", "{stats}");
    assert!(!lbd.log().contains(" is DOWN"), "{}", lbd.log());
    traffic.wait_more("b", 5).await;
    // 8 x 10 MiB went through lbd's pipes; its peak memory hardly moved.
    let grown = peak_kib(lbd.pid()).saturating_sub(peak_before);
    assert!(grown < 4 * 1024, "lbd's peak memory grew by {grown} KiB");

    std::fs::remove_file(dir.join(format!("up-{}", b.addr.port()))).expect("rm marker");
    let went_down = format!(
        "{}: external: exit 1: {}...",
        down("svc", b.addr),
        "x".repeat(200)
    );
    lbd.wait_for_log(&went_down, 1).await;
    let stats = member_stats(admin, "svc", b.addr).await;
    let result = stats["last_check"]["result"].as_str().expect("result");
    assert_eq!(result, format!("external: exit 1: {}...", "x".repeat(200)));
    traffic
        .assert_none_to("b", Duration::from_millis(300), Duration::from_millis(800))
        .await;
    traffic.stop().await;
    eprintln!("peak memory grew by {grown} KiB");
}

/// The same program behind HAProxy and lbd sees the same arguments and
/// environment (except the working directory, which is each one's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_arguments_and_environment_match_haproxy() {
    let server = Backend::start("s1", Mode::TaggedEcho).await;
    let dir = scratch_dir();
    let dump = |who: &str| {
        script(
            &dir,
            &format!("dump-{who}"),
            &format!(
                "{{ echo \"ARGS $*\"; env | sort; }} > {0}/{who}.tmp\n\
                 mv {0}/{who}.tmp {0}/{who}.out\nexit 0",
                dir.display()
            ),
        )
    };
    let (lbd_dump, ha_dump) = (dump("lbd"), dump("haproxy"));
    let (bind, admin, ha_bind) = (free_addr(), free_addr(), free_addr());
    let health = external(&lbd_dump, "interval = \"300ms\"\ntimeout = \"300ms\"");
    let members = [format!("{}name = \"s1\"\n", member(&server))];
    let lbd = Lbd::start("epoll", 1, &config(bind, admin, &health, &members, "")).await;
    let haproxy_cfg = format!(
        "global\n  external-check\n  insecure-fork-wanted\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  \
         timeout server 5s\n  timeout check 300ms\n\
         backend svc\n  id 1\n  option external-check\n  external-check path \"{PATH}\"\n  \
         external-check command {}\n  server s1 {} check inter 300ms\n\
         frontend fe\n  bind {ha_bind}\n  default_backend svc\n",
        ha_dump.display(),
        server.addr
    );
    let Some(haproxy) = Haproxy::start(&haproxy_cfg, ha_bind).await else {
        return;
    };
    let read = |who: &str| std::fs::read_to_string(dir.join(format!("{who}.out")));
    eventually("both ran the program", || async {
        read("lbd").is_ok() && read("haproxy").is_ok()
    })
    .await;
    let lines = |who: &str| -> Vec<String> {
        read(who)
            .expect("dump")
            .lines()
            .filter(|l| !l.starts_with("PWD="))
            .map(str::to_owned)
            .collect()
    };
    let (ours, theirs) = (lines("lbd"), lines("haproxy"));
    assert_eq!(ours, theirs, "haproxy log:\n{}", haproxy.log());
    assert_eq!(
        ours[0],
        format!("ARGS NOT_USED NOT_USED 127.0.0.1 {}", server.addr.port())
    );
    assert!(
        ours.contains(&"HAPROXY_SERVER_NAME=s1".to_owned()),
        "{ours:?}"
    );
    assert!(ours.contains(&format!("PATH={PATH}")), "{ours:?}");
    drop(lbd);
}

// ------------------------------------------------------------- tcp_script

/// The protocols the scripted members speak.
#[derive(Clone, Copy, Debug)]
enum Proto {
    /// `PING\r\n` -> `+PONG\r\n` (wrong: `-ERR wrong\r\n`, then close).
    Redis,
    /// `00 01` -> `ca fe 0a` (wrong: `de ad`, then close).
    Binary,
    /// Banner `220 ...`, `HELO` -> `250 hello`, `QUIT` -> `221 bye` (wrong:
    /// `500 nope` to QUIT, then close).
    Smtp,
}

/// A member speaking `proto` on loopback; answers right until told not to.
struct Scripted {
    addr: SocketAddr,
    right: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(proto: Proto) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let right = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&right);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let right = flag.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(WAIT, speak(conn, proto, right)).await;
                });
            }
        });
        Scripted { addr, right, task }
    }

    fn set_right(&self, right: bool) {
        self.right.store(right, Ordering::Relaxed);
    }
}

/// Reads until `buf` ends with `end` (bounded); false at EOF.
async fn read_until(conn: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> bool {
    let mut chunk = [0u8; 512];
    while !buf.ends_with(end) && buf.len() < 4096 {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.ends_with(end)
}

async fn speak(mut conn: TcpStream, proto: Proto, right: bool) -> std::io::Result<()> {
    let mut buf = Vec::new();
    match proto {
        Proto::Redis => {
            while read_until(&mut conn, &mut buf, b"\r\n").await {
                if buf != b"PING\r\n" {
                    conn.write_all(b"-ERR unknown command\r\n").await?;
                } else if right {
                    conn.write_all(b"+PONG\r\n").await?;
                } else {
                    return conn.write_all(b"-ERR wrong\r\n").await;
                }
                buf.clear();
            }
        }
        Proto::Binary => {
            let mut request = [0u8; 2];
            conn.read_exact(&mut request).await?;
            if request != [0, 1] {
                return Ok(());
            }
            if !right {
                return conn.write_all(&[0xde, 0xad]).await;
            }
            conn.write_all(&[0xca, 0xfe, 0x0a]).await?;
            // Hold the connection until the checker closes it.
            let _ = conn.read(&mut request).await;
        }
        Proto::Smtp => {
            conn.write_all(b"220 lbd-test ESMTP\r\n").await?;
            while read_until(&mut conn, &mut buf, b"\r\n").await {
                if buf.starts_with(b"HELO ") {
                    conn.write_all(b"250 hello\r\n").await?;
                } else if buf == b"QUIT\r\n" && right {
                    return conn.write_all(b"221 bye\r\n").await;
                } else {
                    return conn.write_all(b"500 nope\r\n").await;
                }
                buf.clear();
            }
        }
    }
    Ok(())
}

/// lbd's steps and HAProxy's `tcp-check` lines for `proto`, and the reason
/// lbd gives when the member answers wrong.
fn script_of(proto: Proto) -> (&'static str, &'static str, &'static str) {
    match proto {
        Proto::Redis => (
            r#"steps = [{ send = "PING\r\n" }, { expect_string = "+PONG" }]"#,
            "  tcp-check send PING\\r\\n\n  tcp-check expect string +PONG\n",
            r#"tcp_script step 2: expected "+PONG", got "-ERR wrong\r\n""#,
        ),
        Proto::Binary => (
            r#"steps = [{ send_binary = "0001" }, { expect_binary = "cafe" }]"#,
            "  tcp-check send-binary 0001\n  tcp-check expect binary cafe\n",
            "tcp_script step 2: expected binary cafe, got binary dead",
        ),
        Proto::Smtp => (
            r#"steps = [
  { connect = {} },
  { expect_string = "220 " },
  { send = "HELO lbd\r\n" },
  { expect_rstring = "^250 hello" },
  { send = "QUIT\r\n" },
  { expect_string = "221 bye" },
]"#,
            "  tcp-check connect\n  tcp-check expect string 220\\ \n  \
             tcp-check send HELO\\ lbd\\r\\n\n  tcp-check expect rstring ^250\\ hello\n  \
             tcp-check send QUIT\\r\\n\n  tcp-check expect string 221\\ bye\n",
            r#"tcp_script step 6: expected "221 bye", got "500 nope\r\n""#,
        ),
    }
}

/// Members `a` and `b` take the traffic; their checks go to scripted
/// members (`monitor_port`), `b`'s of which is switched to answering wrong
/// and back. lbd and HAProxy (the same `tcp-check` lines against the same
/// scripted members) must both take `b` down, then bring it back.
async fn tcp_script_verdicts(rt: &str, proto: Proto) {
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    let (check_a, check_b) = (Scripted::start(proto).await, Scripted::start(proto).await);
    let (steps, haproxy_lines, wrong) = script_of(proto);
    let (bind, admin) = (free_addr(), free_addr());
    let health = format!(
        "type = \"tcp_script\"\n{steps}\ninterval = \"300ms\"\ntimeout = \"300ms\"\n\
         fall = 2\nrise = 2\n"
    );
    let members = [
        member_checked_at(a.addr, check_a.addr.port()),
        member_checked_at(b.addr, check_b.addr.port()),
    ];
    let lbd = Lbd::start(rt, 2, &config(bind, admin, &health, &members, "")).await;
    lbd.wait_for_log(&checked_up("svc", a.addr), 1).await;
    lbd.wait_for_log(&checked_up("svc", b.addr), 1).await;

    let ha_bind = free_addr();
    let haproxy_cfg = format!(
        "defaults\n  mode tcp\n  timeout connect 300ms\n  timeout client 5s\n  \
         timeout server 5s\n  timeout check 300ms\n\
         listen svc\n  bind {ha_bind}\n  option tcp-check\n{haproxy_lines}  \
         default-server inter 300ms fall 2 rise 2\n  \
         server a {} check port {}\n  server b {} check port {}\n",
        a.addr,
        check_a.addr.port(),
        b.addr,
        check_b.addr.port()
    );
    let haproxy = Haproxy::start(&haproxy_cfg, ha_bind).await;
    let traffic = Traffic::start(bind, 4);
    traffic.wait_more("b", 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = member_stats(admin, "svc", b.addr).await;
    assert_eq!(
        stats["last_check"]["result"], "tcp_script passed",
        "{stats}"
    );
    if let Some(haproxy) = &haproxy {
        assert!(!haproxy.log().contains(" is DOWN"), "{}", haproxy.log());
    }

    check_b.set_right(false);
    lbd.wait_for_log(&format!("{}: {wrong}", down("svc", b.addr)), 1)
        .await;
    if let Some(haproxy) = &haproxy {
        eventually("haproxy takes b down too", || async {
            haproxy.log().contains("Server svc/b is DOWN")
        })
        .await;
    }
    let stats = member_stats(admin, "svc", b.addr).await;
    assert_eq!(stats["status"], "down", "{stats}");
    assert_eq!(stats["last_check"]["result"], wrong, "{stats}");
    traffic
        .assert_none_to("b", Duration::from_millis(300), Duration::from_millis(800))
        .await;

    check_b.set_right(true);
    lbd.wait_for_log(&format!("{}: tcp_script passed", up("svc", b.addr)), 1)
        .await;
    if let Some(haproxy) = &haproxy {
        eventually("haproxy brings b back too", || async {
            haproxy.log().contains("Server svc/b is UP")
        })
        .await;
        let log = haproxy.log();
        assert!(!log.contains("Server svc/a is DOWN"), "{log}");
        eprintln!("haproxy:\n{log}");
    }
    traffic.wait_more("b", 5).await;
    traffic.stop().await;
    let log = lbd.log();
    assert!(!log.contains(&down("svc", a.addr)), "{log}");
    assert_eq!(log.matches(&down("svc", b.addr)).count(), 1, "{log}");
}

async fn tcp_script_redis_ping(rt: &str) {
    tcp_script_verdicts(rt, Proto::Redis).await;
}

async fn tcp_script_binary_expect(rt: &str) {
    tcp_script_verdicts(rt, Proto::Binary).await;
}

async fn tcp_script_multi_step_dialogue(rt: &str) {
    tcp_script_verdicts(rt, Proto::Smtp).await;
}

// ------------------------------------------------------------------ reload

/// Pool "svc" (external) and pool "redis" (tcp_script) each with a member
/// that passes and one that fails. A reload that inserts a pool before
/// them (so every external check's `HAPROXY_PROXY_ID` changes) and adds a
/// member keeps every unchanged member's state: no transition, the failing
/// ones still down at once, and checks carry on with the new settings.
async fn reload_keeps_check_state(rt: &str) {
    let dir = scratch_dir();
    let (a, b, c) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
        Backend::start("c", Mode::TaggedEcho).await,
    );
    touch(dir.join(format!("up-{}", a.addr.port())));
    touch(dir.join(format!("up-{}", c.addr.port())));
    let check = script(
        &dir,
        "check-id",
        &format!(
            "echo $HAPROXY_PROXY_ID > {0}/id-$4.tmp; mv {0}/id-$4.tmp {0}/id-$4\n\
             [ -e {0}/up-$4 ] && exit 0\necho marked down\nexit 1",
            dir.display()
        ),
    );
    let (redis_a, redis_b) = (
        Scripted::start(Proto::Redis).await,
        Scripted::start(Proto::Redis).await,
    );
    redis_b.set_right(false);
    let (steps, _, _) = script_of(Proto::Redis);
    let redis_pool = |members: &[SocketAddr]| {
        format!(
            "[[pool]]\nname = \"redis\"\n[pool.health]\ntype = \"tcp_script\"\n{steps}\n\
             interval = \"300ms\"\ntimeout = \"300ms\"\nfall = 1\nrise = 1\n{}",
            members.iter().map(|m| member_at(*m)).collect::<String>()
        )
    };
    let redis = redis_pool(&[redis_a.addr, redis_b.addr]);
    let (bind, admin) = (free_addr(), free_addr());
    let health = external(
        &check,
        "interval = \"300ms\"\ntimeout = \"300ms\"\nfall = 1\nrise = 1",
    );
    let lbd = Lbd::start(
        rt,
        2,
        &config(bind, admin, &health, &[member(&a), member(&b)], &redis),
    )
    .await;
    for line in [
        checked_up("svc", a.addr),
        down("svc", b.addr),
        checked_up("redis", redis_a.addr),
        down("redis", redis_b.addr),
    ] {
        lbd.wait_for_log(&line, 1).await;
    }
    let id_of = |addr: SocketAddr| {
        std::fs::read_to_string(dir.join(format!("id-{}", addr.port()))).unwrap_or_default()
    };
    assert_eq!(id_of(a.addr).trim(), "1");
    let traffic = Traffic::start(bind, 4);
    traffic.wait_more("a", 5).await;
    let transitions = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" is DOWN") || l.contains(" is UP") || l.contains(" checked: "))
            .count()
    };
    let before = transitions(&lbd.log());

    let first =
        "[[pool]]\nname = \"first\"\n[[pool.member]]\naddress = \"127.0.0.1\"\nport = 9\n\n";
    // The new pool goes first in the file: "svc" becomes the second pool.
    let reloaded = config(
        bind,
        admin,
        &health,
        &[member(&a), member(&b), member(&c)],
        &redis,
    )
    .replacen(
        "[[pool]]\nname = \"svc\"",
        &format!("{first}[[pool]]\nname = \"svc\""),
        1,
    );
    assert!(
        lbd.reload(&reloaded).await,
        "reload rejected:\n{}",
        lbd.log()
    );
    for (pool, addr, status) in [
        ("svc", a.addr, "up"),
        ("svc", b.addr, "down"),
        ("redis", redis_a.addr, "up"),
        ("redis", redis_b.addr, "down"),
    ] {
        let stats = member_stats(admin, pool, addr).await;
        assert_eq!(
            stats["status"], status,
            "{pool}/{addr} right after the reload: {stats}"
        );
    }
    lbd.wait_for_log(&checked_up("svc", c.addr), 1).await;
    eventually("the external checks run with the new pool id", || async {
        id_of(a.addr).trim() == "2" && id_of(b.addr).trim() == "2"
    })
    .await;
    // A few more checks of everything: still no transition but c's.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let log = lbd.log();
    assert_eq!(transitions(&log), before + 1, "{log}");
    traffic.wait_more("c", 5).await;
    traffic
        .assert_none_to("b", Duration::ZERO, Duration::from_millis(600))
        .await;

    // The checks carry on: b and redis/b come back.
    touch(dir.join(format!("up-{}", b.addr.port())));
    redis_b.set_right(true);
    lbd.wait_for_log(&up("svc", b.addr), 1).await;
    lbd.wait_for_log(&up("redis", redis_b.addr), 1).await;
    traffic.wait_more("b", 5).await;
    traffic.stop().await;
}

on_both_runtimes!(
    external_exit_status_drives_up_and_down,
    hanging_external_is_killed_at_the_timeout,
    chatty_external_is_capped,
    tcp_script_redis_ping,
    tcp_script_binary_expect,
    tcp_script_multi_step_dialogue,
    reload_keeps_check_state,
);
