//! The stats socket (HAProxy's CLI): the same commands to real HAProxy and
//! to lbd give the same answers; levels are enforced; a change made on the
//! socket reaches the traffic, the admin API and `/metrics`; hostile
//! clients neither break the socket nor the data plane nor leak fds.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::http_get_once;
use common::haproxy::Haproxy;
use common::{
    connect_from, fds_back_to, free_addr, read_line, scratch_dir, settled_fds, Backend, Lbd, Mode,
    WAIT,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// Sends `line` and reads the answer to its end (the server closes).
async fn cli(path: &Path, line: &str) -> String {
    let conn = tokio::time::timeout(WAIT, UnixStream::connect(path))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    exchange(conn, line).await
}

/// [`cli`] on a TCP stats socket.
async fn tcp_cli(addr: SocketAddr, line: &str) -> String {
    let conn = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    exchange(conn, line).await
}

/// Sends `line` on `conn` and reads the answer to its end.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut conn: S, line: &str) -> String {
    conn.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("no answer to {line:?} within {WAIT:?}"))
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// An interactive session: each line's answer up to and including the
/// prompt (`> `), or to the end for the last.
async fn session(path: &Path, lines: &[&str]) -> Vec<String> {
    let conn = UnixStream::connect(path).await.expect("connect");
    prompted(conn, lines).await
}

/// [`session`] on `conn`.
async fn prompted<S: AsyncRead + AsyncWrite + Unpin>(mut conn: S, lines: &[&str]) -> Vec<String> {
    let mut answers = Vec::new();
    for line in lines {
        conn.write_all(format!("{line}\n").as_bytes())
            .await
            .expect("send");
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        let deadline = Instant::now() + WAIT;
        while !answer.ends_with(b"\n> ") {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, conn.read(&mut byte)).await {
                Ok(Ok(1)) => answer.push(byte[0]),
                Ok(_) => break,
                Err(_) => panic!("no answer to {line:?} within {WAIT:?}"),
            }
        }
        answers.push(String::from_utf8_lossy(&answer).into_owned());
    }
    answers
}

async fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while UnixStream::connect(path).await.is_err() {
        assert!(Instant::now() < deadline, "no socket at {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The file both run: three stats sockets, one per level.
fn cli_config(dir: &Path, bind: SocketAddr, ports: [u16; 3]) -> String {
    let sock = |name: &str| dir.join(name).display().to_string();
    format!(
        "global\n  stats socket {} mode 600 level admin\n  stats socket {} level user\n  \
         stats socket {} level operator\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend fe\n  bind {bind}\n  default_backend be\n\
         backend be\n  server s1 127.0.0.1:{} check inter 1s\n  \
         server s2 127.0.0.1:{} weight 3 check inter 1s\n  \
         server s3 127.0.0.1:{} disabled check inter 1s\n",
        sock("admin.sock"),
        sock("user.sock"),
        sock("oper.sock"),
        ports[0],
        ports[1],
        ports[2],
    )
}

/// Commands whose answers do not depend on the process, and which socket
/// gets them. Run in order: some change what the later ones see.
fn script(ports: [u16; 3], moved: u16) -> Vec<(&'static str, String)> {
    let admin = |c: &str| ("admin.sock", c.to_owned());
    vec![
        admin("get weight be/s2"),
        admin("set weight be/s2 150%"),
        admin("get weight be/s2"),
        admin("set weight be/s2 -1"),
        admin("set weight be/s2 abc"),
        admin("set weight be/s2 5x"),
        admin("set weight be/s2 -5%"),
        admin("set weight be/s2 1000%"),
        admin("get weight be/s2"),
        admin("set weight be/s2 257"),
        admin("set weight be/s2"),
        admin("set server be/s2 weight 7"),
        admin("get weight be/s2"),
        admin("set server be/s2 weight"),
        admin("set server be/s2 state"),
        admin("set server be/s2 state frob"),
        admin("set server be/s2 state drain"),
        admin("set server be/s2 state ready"),
        admin("set server be/s2"),
        admin("set server be/s2 frob 1"),
        admin("get weight be/zz"),
        admin("get weight zz/s1"),
        admin("get weight be"),
        admin("disable server be/zz"),
        admin("disable server zz"),
        admin("disable server be/s1"),
        admin("enable server be/s1"),
        admin("enable server be/s3"),
        admin("set maxconn server be/s2"),
        admin("set maxconn server be/s2 10"),
        admin("set maxconn frontend fe"),
        admin("set maxconn frontend zz 100"),
        admin("set maxconn frontend fe 100"),
        admin("set server be/s2 addr bad"),
        admin(&format!("set server be/s2 addr 127.0.0.9 port {moved}")),
        admin(&format!(
            "set server be/s2 addr 127.0.0.1 port {}",
            ports[1]
        )),
        admin("show cli level;show backend"),
        admin("show cli level ; get weight be/s1;;get weight be/s3"),
        admin("user;set weight be/s1 1"),
        admin("operator;show cli level;clear counters"),
        admin("show servers state zz"),
        ("user.sock", "show cli level".into()),
        ("user.sock", "set server be/s1 state drain".into()),
        ("user.sock", "disable server be/s1".into()),
        ("user.sock", "set weight be/s1 2".into()),
        ("user.sock", "clear counters".into()),
        ("user.sock", "get weight be/s1".into()),
        ("oper.sock", "show cli level".into()),
        ("oper.sock", "clear counters".into()),
        ("oper.sock", "set server be/s1 state drain".into()),
        ("oper.sock", "set maxconn server be/s1 5".into()),
    ]
}

const PROMPTED: &[&str] = &[
    "prompt",
    "show cli level",
    "get weight be/s1",
    "set weight be/s1 2;get weight be/s1",
    "user",
    "set weight be/s1 3",
    "show cli level",
    "quit",
];

/// The answer with the list of commands HAProxy gives for an empty or
/// unknown command left out (lbd lists its own commands).
fn without_command_list(answer: &str) -> String {
    const HEAD: &str = "Unknown command. Please enter one of the following commands only:\n";
    let mut out = String::new();
    let mut rest = answer;
    while let Some(at) = rest.find(HEAD) {
        out.push_str(&rest[..at + HEAD.len()]);
        out.push_str("<list>");
        rest = &rest[at + HEAD.len()..];
        rest = rest.find("\n\n").map_or("", |end| &rest[end..]);
    }
    out.push_str(rest);
    out
}

/// Runs the script on the sockets in `dir`; one answer per command, then
/// the prompted session's transcript.
async fn answers(dir: &Path, ports: [u16; 3], moved: u16) -> Vec<String> {
    let mut out = Vec::new();
    for (socket, command) in script(ports, moved) {
        let answer = without_command_list(&cli(&dir.join(socket), &command).await);
        out.push(format!("{socket} {command:?} -> {answer:?}"));
    }
    for (line, answer) in PROMPTED
        .iter()
        .zip(session(&dir.join("admin.sock"), PROMPTED).await)
    {
        out.push(format!("prompt {line:?} -> {answer:?}"));
    }
    out
}

/// One file, HAProxy and lbd: every answer of the script is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_like_haproxy() {
    let members = [
        Backend::start("s1", Mode::TaggedEcho).await,
        Backend::start("s2", Mode::TaggedEcho).await,
        Backend::start("s3", Mode::TaggedEcho).await,
    ];
    let ports = members.each_ref().map(|m| m.addr.port());
    let moved = common::free_port();

    let hdir = scratch_dir();
    let hbind = free_addr();
    let Some(haproxy) = Haproxy::start(&cli_config(&hdir, hbind, ports), hbind).await else {
        return;
    };
    wait_for_socket(&hdir.join("admin.sock")).await;
    let theirs = answers(&hdir, ports, moved).await;

    let ldir = scratch_dir();
    let lbind = free_addr();
    let lbd = Lbd::start("epoll", 1, &cli_config(&ldir, lbind, ports)).await;
    wait_for_socket(&ldir.join("admin.sock")).await;
    let ours = answers(&ldir, ports, moved).await;

    let differ: Vec<String> = theirs
        .iter()
        .zip(&ours)
        .filter(|(t, o)| t != o)
        .map(|(t, o)| format!("haproxy: {t}\n    lbd: {o}"))
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} answers differ:\n{}\nhaproxy log:\n{}\nlbd log:\n{}",
        differ.len(),
        theirs.len(),
        differ.join("\n"),
        haproxy.log(),
        lbd.log()
    );
    assert_eq!(theirs.len(), ours.len());
}

/// Steady clients, each connection tagged by the member that took it.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(Instant, Result<String, String>)>>,
}

impl Traffic {
    fn start(bind: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            let mut seen = Vec::new();
            for _ in 0..20_000 {
                if stopped.load(Ordering::SeqCst) || Instant::now() > until {
                    break;
                }
                let started = Instant::now();
                let result = async {
                    let mut conn = connect_from(bind, None).await?;
                    read_line(&mut conn).await
                }
                .await
                .map_err(|e| e.to_string());
                seen.push((started, result));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        Traffic { stop, task }
    }

    async fn stop(self) -> Vec<(Instant, Result<String, String>)> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("traffic stops")
            .expect("traffic task")
    }
}

/// Which members took the connections that started in `from..to`.
fn tally(
    seen: &[(Instant, Result<String, String>)],
    from: Instant,
    to: Instant,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (at, result) in seen {
        if *at >= from && *at < to {
            let key = match result {
                Ok(tag) => tag.clone(),
                Err(e) => format!("error: {e}"),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

fn toml_config(
    dir: &Path,
    admin: SocketAddr,
    bind: SocketAddr,
    a: &Backend,
    b: &Backend,
) -> String {
    let sock = |name: &str| dir.join(name).display().to_string();
    format!(
        "[admin]\nbind = \"{admin}\"\n\n\
         [[stats_socket]]\npath = \"{}\"\nlevel = \"admin\"\n\n\
         [[stats_socket]]\npath = \"{}\"\nlevel = \"user\"\n\n\
         [[stats_socket]]\npath = \"{}\"\nlevel = \"operator\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\n\n\
         [[pool.member]]\nname = \"a\"\naddress = \"{}\"\nport = {}\n\n\
         [[pool.member]]\nname = \"b\"\naddress = \"{}\"\nport = {}\n",
        sock("admin.sock"),
        sock("user.sock"),
        sock("oper.sock"),
        a.addr.ip(),
        a.addr.port(),
        b.addr.ip(),
        b.addr.port(),
    )
}

/// Waits until `check` holds for the body of `GET path` on the admin server.
async fn admin_shows(admin: SocketAddr, path: &str, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http_get_once(admin, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        if status == 200 && check(&body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never showed {what}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Levels, and a drain through the socket under steady traffic: the user
/// and operator sockets are refused; the admin socket's drain stops new
/// connections to the member at once (none failing), and shows in `show
/// servers state`, the admin API and `/metrics`; `ready` brings it back.
async fn changes_reach_traffic_api_and_metrics(rt: &str) {
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    let dir = scratch_dir();
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 2, &toml_config(&dir, admin, bind, &a, &b)).await;
    let sock = |name: &str| -> PathBuf { dir.join(name) };
    wait_for_socket(&sock("admin.sock")).await;

    let traffic = Traffic::start(bind);
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (socket, command) in [
        ("user.sock", "set server p/a state drain"),
        ("user.sock", "disable server p/a"),
        ("oper.sock", "set server p/a state drain"),
        ("oper.sock", "set weight p/a 0"),
        ("admin.sock", "operator;set server p/a state drain"),
    ] {
        let answer = cli(&sock(socket), command).await;
        assert!(
            answer.ends_with("Permission denied\n\n"),
            "{socket} {command:?}: {answer:?}"
        );
    }
    assert_eq!(
        cli(&sock("admin.sock"), "get weight p/a").await,
        "1 (initial 1)\n\n"
    );

    let drained_at = Instant::now();
    assert_eq!(
        cli(&sock("admin.sock"), "set server p/a state drain").await,
        "\n"
    );
    let state = cli(&sock("user.sock"), "show servers state p").await;
    let line_a = state
        .lines()
        .find(|l| l.split(' ').nth(3) == Some("a"))
        .unwrap_or_else(|| panic!("no server a in {state:?}"));
    let fields: Vec<&str> = line_a.split(' ').collect();
    assert_eq!(fields[6], "8", "srv_admin_state forced drain: {line_a}");
    admin_shows(admin, "/api/config", "a drained", |body| {
        body.replace([' ', '\n'], "")
            .contains("\"admin_state\":\"drain\"")
    })
    .await;
    admin_shows(admin, "/metrics", "a's admin state drain", |body| {
        body.lines().any(|l| {
            l.starts_with("lbd_server_admin_state{")
                && l.contains("server=\"a\"")
                && l.contains("state=\"drain\"")
                && l.ends_with(" 1")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let readied_at = Instant::now();
    assert_eq!(
        cli(&sock("admin.sock"), "set server p/a state ready").await,
        "\n"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = Instant::now();
    let seen = traffic.stop().await;

    let errors: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(errors.is_empty(), "failed connections: {errors:?}");
    // The snapshot is swapped before the answer: connections that start
    // after it never reach the drained member.
    let drained = tally(&seen, drained_at + Duration::from_millis(5), readied_at);
    assert!(
        !drained.contains_key("a") && drained.get("b").copied().unwrap_or(0) >= 20,
        "while a was drained: {drained:?}"
    );
    let after = tally(&seen, readied_at + Duration::from_millis(5), done);
    assert!(
        after.get("a").copied().unwrap_or(0) >= 5,
        "after ready: {after:?}"
    );
    drop(lbd);
}

/// Hostile clients: an unknown command, binary garbage, a 1 MiB line,
/// 1000 clients that never send, and one that never reads a large answer.
/// Through all of it the socket answers, the data plane serves every
/// connection, and lbd's descriptors come back to where they were.
async fn hostile_clients_break_nothing(rt: &str) {
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    let dir = scratch_dir();
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 2, &toml_config(&dir, admin, bind, &a, &b)).await;
    let sock = dir.join("admin.sock");
    wait_for_socket(&sock).await;
    let baseline = settled_fds(lbd.pid()).await;
    let traffic = Traffic::start(bind);

    let version = format!("{}\n\n", cli(&sock, "show version").await.trim_end());
    let answers_quickly = || async {
        let started = Instant::now();
        let answer = cli(&sock, "show version").await;
        assert_eq!(answer, version);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "show version took {:?}",
            started.elapsed()
        );
    };

    let unknown = cli(&sock, "frobnicate everything").await;
    assert!(unknown.starts_with("Unknown command."), "{unknown:?}");

    garbage_line(UnixStream::connect(&sock).await.expect("connect")).await;
    answers_quickly().await;
    huge_line(UnixStream::connect(&sock).await.expect("connect")).await;
    answers_quickly().await;

    // A client that asks for a large answer and never reads it.
    let mut stuck = UnixStream::connect(&sock).await.expect("connect");
    let many_helps = vec!["help"; 3000].join(";");
    stuck
        .write_all(format!("{many_helps}\n").as_bytes())
        .await
        .expect("send");
    answers_quickly().await;

    // 1000 clients that never send.
    let mut silent = Vec::new();
    for _ in 0..1000 {
        match UnixStream::connect(&sock).await {
            Ok(c) => silent.push(c),
            Err(e) => panic!("connect {}: {e}", silent.len()),
        }
    }
    answers_quickly().await;
    drop(silent);
    drop(stuck);

    // The stuck client's answer times out (10 s) at the latest.
    fds_back_to(lbd.pid(), baseline, Duration::from_secs(20)).await;
    answers_quickly().await;
    // Traffic went on throughout (how much depends on the machine's load:
    // the test's own clients share its runtime).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = traffic.stop().await;
    let errors: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        errors.is_empty() && seen.len() >= 3,
        "{} connections, failed: {errors:?}",
        seen.len()
    );
    assert!(lbd.exited().is_none(), "lbd exited; log:\n{}", lbd.log());
}

on_both_runtimes!(
    changes_reach_traffic_api_and_metrics,
    hostile_clients_break_nothing,
    show_stat_like_haproxy,
    server_state_survives_reload_like_haproxy,
    stats_exports_like_haproxy,
    stats_timeout_closes_idle_clients,
    health_pause_like_haproxy,
    shutdown_sessions_like_haproxy,
    tcp_socket_answers_like_haproxy,
    hostile_tcp_clients_break_nothing,
    tcp_socket_follows_reloads,
);

/// A file for `show stat`: one server up, one on a closed port (DOWN), one
/// `disabled` (MAINT), one backup.
fn stat_config(
    dir: &Path,
    bind: SocketAddr,
    up: u16,
    closed: u16,
    disabled: u16,
    backup: u16,
) -> String {
    format!(
        "global\n  stats socket {} level admin\n  maxconn 1000\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend fe\n  bind {bind}\n  default_backend be\n\
         backend be\n  server up 127.0.0.1:{up} check inter 200ms\n  \
         server closed 127.0.0.1:{closed} check inter 200ms\n  \
         server off 127.0.0.1:{disabled} disabled check inter 200ms\n  \
         server spare 127.0.0.1:{backup} backup check inter 200ms\n",
        dir.join("admin.sock").display()
    )
}

/// `show stat` rows as Octavia reads them: `answer[2:]` through a CSV
/// reader, keyed by (pxname, svname).
fn stat_rows(answer: &str) -> (Vec<String>, StatRows) {
    let body = answer
        .strip_prefix("# ")
        .unwrap_or_else(|| panic!("no '# ' in {answer:?}"));
    let mut lines = body.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut rows = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: BTreeMap<String, String> = header
            .iter()
            .cloned()
            .zip(line.split(',').map(str::to_owned))
            .collect();
        rows.insert((fields["pxname"].clone(), fields["svname"].clone()), fields);
    }
    (header, rows)
}

/// Waits until `show stat` shows server `closed` DOWN.
async fn stat_when_down(sock: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = cli(sock, "show stat").await;
        if answer
            .lines()
            .any(|l| l.starts_with("be,closed,") && l.contains(",DOWN,"))
        {
            return answer;
        }
        assert!(Instant::now() < deadline, "closed never DOWN:\n{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `show stat` rows by (pxname, svname), each a column -> value map.
type StatRows = BTreeMap<(String, String), BTreeMap<String, String>>;

/// The `show stat` columns compared as increments.
const COUNTERS: &[&str] = &["stot", "bin", "bout", "lbtot"];

/// `n` connections one after the other, each reading the member's tag.
async fn serve_n(bind: SocketAddr, n: usize) {
    for i in 0..n {
        let mut conn = connect_from(bind, None)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        read_line(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
    }
}

/// The same file run by HAProxy and lbd, the same connections through each:
/// `show stat` has the same header, the same rows in the same order, the
/// same statuses, weights, ids and flags, and the same counters; `-1 6 -1`
/// (what Octavia's `get_pool_status` asks) and Python's `csv.DictReader`
/// on `answer[2:]` (what Octavia does) read both alike.
async fn show_stat_like_haproxy(rt: &str) {
    let up = Backend::start("up", Mode::TaggedEcho).await;
    let off = Backend::start("off", Mode::TaggedEcho).await;
    let spare = Backend::start("spare", Mode::TaggedEcho).await;
    let closed = common::free_port();
    let make = |dir: &Path, bind| {
        stat_config(
            dir,
            bind,
            up.addr.port(),
            closed,
            off.addr.port(),
            spare.addr.port(),
        )
    };

    let hdir = scratch_dir();
    let hbind = free_addr();
    let Some(haproxy) = Haproxy::start(&make(&hdir, hbind), hbind).await else {
        return;
    };
    let ldir = scratch_dir();
    let lbind = free_addr();
    let lbd = Lbd::start(rt, 2, &make(&ldir, lbind)).await;
    let (hsock, lsock) = (hdir.join("admin.sock"), ldir.join("admin.sock"));
    wait_for_socket(&hsock).await;
    wait_for_socket(&lsock).await;
    stat_when_down(&hsock).await;
    stat_when_down(&lsock).await;

    // The same 30 connections through each; a steady client meanwhile on
    // lbd's socket reading show stat (as the health daemon does).
    let reader = {
        let lsock = lsock.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let answer = cli(&lsock, "show stat -1 -1 -1").await;
                assert!(answer.starts_with("# pxname,svname,"), "{answer:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Counters are compared as what these connections added: the harness
    // probes HAProxy's port once before it is handed over.
    let (_, hbefore) = stat_rows(&cli(&hsock, "show stat").await);
    let (_, lbefore) = stat_rows(&cli(&lsock, "show stat").await);
    serve_n(hbind, 30).await;
    serve_n(lbind, 30).await;
    reader.await.expect("reader");

    let theirs = cli(&hsock, "show stat").await;
    let ours = cli(&lsock, "show stat").await;
    let (hheader, mut hrows) = stat_rows(&theirs);
    let (lheader, mut lrows) = stat_rows(&ours);
    for (rows, before) in [(&mut hrows, &hbefore), (&mut lrows, &lbefore)] {
        for (key, row) in rows.iter_mut() {
            for column in COUNTERS {
                let was = before.get(key).and_then(|r| r.get(*column));
                if let (Some(now), Some(was)) = (row.get_mut(*column), was) {
                    if let (Ok(n), Ok(w)) = (now.parse::<u64>(), was.parse::<u64>()) {
                        *now = (n - w).to_string();
                    }
                }
            }
        }
    }
    assert_eq!(hheader, lheader, "header");
    let order = |answer: &str| -> Vec<String> {
        answer
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(order(&theirs), order(&ours), "rows");
    let same = [
        "status",
        "weight",
        "act",
        "bck",
        "iid",
        "sid",
        "type",
        "mode",
        "pid",
        "qcur",
        "scur",
        "slim",
        "stot",
        "bin",
        "bout",
        "ereq",
        "lbtot",
        "check_status",
        "algo",
        "chkdown",
    ];
    let mut differ = Vec::new();
    for (key, h) in &hrows {
        let l = &lrows[key];
        for column in same {
            if h.get(column) != l.get(column) {
                differ.push(format!(
                    "{key:?} {column}: haproxy {:?}, lbd {:?}",
                    h.get(column),
                    l.get(column)
                ));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{}\nhaproxy:\n{theirs}\nlbd:\n{ours}\nlbd log:\n{}",
        differ.join("\n"),
        lbd.log()
    );

    // What get_pool_status asks: backends and servers only.
    let pools = |answer: &str| order(answer);
    assert_eq!(
        pools(&cli(&hsock, "show stat -1 6 -1").await),
        pools(&cli(&lsock, "show stat -1 6 -1").await)
    );

    // Octavia's own reading: answer[2:] through csv.DictReader.
    let script = "import csv,sys\n\
                  rows=list(csv.DictReader(sys.stdin.read()[2:].split('\\n')))\n\
                  print(';'.join(r['pxname']+'/'+r['svname']+'='+r['status'] for r in rows))\n";
    let python = |answer: String| {
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(answer.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("python3 output");
        assert!(out.status.success(), "python3 failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (hpy, lpy) = (python(theirs), python(ours));
    assert_eq!(hpy, lpy);
    assert!(
        lpy.contains("be/closed=DOWN") && lpy.contains("be/off=MAINT"),
        "{lpy}"
    );
    drop(haproxy);
}

/// A file with a server-state file: `a` (weight 10), `b` and `c`
/// `disabled`.
fn state_config(dir: &Path, bind: SocketAddr, a: &Backend, b: &Backend, c: &Backend) -> String {
    format!(
        "global\n  stats socket {} level admin\n  server-state-file {}\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend fe\n  bind {bind}\n  default_backend be\n\
         backend be\n  load-server-state-from-file global\n  \
         server a {} weight 10\n  server b {} disabled\n  server c {} disabled\n",
        dir.join("admin.sock").display(),
        dir.join("servers-state").display(),
        a.addr,
        b.addr,
        c.addr,
    )
}

/// The changes made on the socket, then saved as Octavia's agent saves
/// them before a reload (`show servers state` into the state file).
async fn change_and_save(sock: &Path, dir: &Path) {
    let answer = cli(
        sock,
        "set server be/b state ready; set server be/a state drain; set weight be/a 3",
    )
    .await;
    assert_eq!(answer, "\n\n\n", "{answer:?}");
    let state = cli(sock, "show servers state").await;
    std::fs::write(dir.join("servers-state"), state).expect("save state");
}

/// `show servers state` lines reduced to what a reload carries: backend,
/// server, operational and admin state, weight and initial weight.
fn carried(answer: &str) -> Vec<String> {
    answer
        .lines()
        .skip(2)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            [1, 3, 5, 6, 7, 8]
                .iter()
                .map(|&i| f.get(i).copied().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Runtime changes survive a reload through the server-state file, as
/// with HAProxy: the same file and commands to both, HAProxy restarted
/// with the saved file, lbd reloaded (SIGHUP) under steady traffic; the
/// saved state is the same, and lbd's traffic follows it without a failed
/// connection (drained `a` takes none, `b` made ready takes them all).
async fn server_state_survives_reload_like_haproxy(rt: &str) {
    let (a, b, c) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
        Backend::start("c", Mode::TaggedEcho).await,
    );
    let hdir = scratch_dir();
    let hbind = free_addr();
    let hconfig = state_config(&hdir, hbind, &a, &b, &c);
    let Some(first) = Haproxy::start(&hconfig, hbind).await else {
        return;
    };
    let hsock = hdir.join("admin.sock");
    wait_for_socket(&hsock).await;
    change_and_save(&hsock, &hdir).await;
    drop(first);
    let _ = std::fs::remove_file(&hsock);
    let second = Haproxy::start(&hconfig, hbind)
        .await
        .expect("haproxy again");
    wait_for_socket(&hsock).await;
    let theirs = carried(&cli(&hsock, "show servers state").await);
    assert!(
        second.log().contains("remains in forced drain mode"),
        "{}",
        second.log()
    );

    let ldir = scratch_dir();
    let lbind = free_addr();
    let lconfig = state_config(&ldir, lbind, &a, &b, &c);
    let lbd = Lbd::start(rt, 2, &lconfig).await;
    assert!(
        lbd.log().contains("cannot read server state file"),
        "no state file yet: {}",
        lbd.log()
    );
    let lsock = ldir.join("admin.sock");
    wait_for_socket(&lsock).await;
    let traffic = Traffic::start(lbind);
    tokio::time::sleep(Duration::from_millis(300)).await;
    change_and_save(&lsock, &ldir).await;
    let changed = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lbd.reload(&lconfig).await, "{}", lbd.log());
    let reloaded = Instant::now();
    assert_eq!(
        carried(&cli(&lsock, "show servers state").await),
        theirs,
        "after the reload; lbd log:\n{}",
        lbd.log()
    );
    assert_eq!(
        cli(&lsock, "get weight be/a").await,
        "3 (initial 10)\n\n",
        "the config's weight stays the initial one"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = traffic.stop().await;
    let errors: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(errors.is_empty(), "failed connections: {errors:?}");
    let after = tally(&seen, changed, Instant::now());
    assert_eq!(after.keys().collect::<Vec<_>>(), ["b"], "{after:?}");
    assert!(
        tally(&seen, reloaded, Instant::now()).get("b") > Some(&10),
        "too little traffic after the reload: {after:?}"
    );
    assert!(lbd.log().contains("server state loaded for 1 backend(s)"));
}

/// A file whose `listen stats` has HAProxy's default `stats uri` (last, so
/// that the other proxies' ids are the same in HAProxy and lbd, which does
/// not count its stats page as a proxy).
fn export_config(bind: SocketAddr, stats: SocketAddr, up: u16, closed: u16) -> String {
    format!(
        "global\n  maxconn 1000\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend fe\n  bind {bind}\n  default_backend be\n\
         backend be\n  server up 127.0.0.1:{up} check inter 200ms\n  \
         server closed 127.0.0.1:{closed} check inter 200ms\n\
         listen stats\n  bind {stats}\n  mode http\n  stats enable\n  stats uri /haproxy?stats\n"
    )
}

/// `GET path` over HTTP/1.0: (head, body).
async fn http10_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut conn = connect_from(addr, None).await.expect("connect");
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: lb\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("no answer to GET {path} within {WAIT:?}"))
        .expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let head = head.to_ascii_lowercase();
    // HAProxy chunks its exports even to HTTP/1.0.
    let body = if head.contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (head, body)
}

/// A chunked body's data (bounded by its length).
fn unchunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 || rest.len() < size {
            break;
        }
        data.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    data
}

/// `(pxname, svname, status)` of a `;json` export's rows, the stats
/// proxy left out.
fn json_statuses(body: &str) -> Vec<(String, String, String)> {
    let rows: serde_json::Value = serde_json::from_str(body).expect("json");
    let field = |row: &serde_json::Value, name: &str| -> String {
        row.as_array()
            .into_iter()
            .flatten()
            .find(|f| f["field"]["name"] == name)
            .and_then(|f| f["value"]["value"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    rows.as_array()
        .expect("an array of rows")
        .iter()
        .map(|row| {
            (
                field(row, "pxname"),
                field(row, "svname"),
                field(row, "status"),
            )
        })
        .filter(|(px, _, _)| px != "stats")
        .collect()
}

/// The HTTP stats page's `;csv` and `;json` exports at `stats uri`, with
/// HAProxy as the oracle: the same content types, the same CSV header,
/// the same rows with the same statuses and ids (but for HAProxy's row of
/// its stats proxy), and lbd's own routes still answer beside them.
async fn stats_exports_like_haproxy(rt: &str) {
    let up = Backend::start("up", Mode::TaggedEcho).await;
    let closed = common::free_port();
    let (hbind, hstats) = (free_addr(), free_addr());
    let (lbind, lstats) = (free_addr(), free_addr());
    let Some(_haproxy) =
        Haproxy::start(&export_config(hbind, hstats, up.addr.port(), closed), hbind).await
    else {
        return;
    };
    let lbd = Lbd::start(rt, 2, &export_config(lbind, lstats, up.addr.port(), closed)).await;
    let csv_path = "/haproxy?stats;csv;norefresh";
    let mut answers = Vec::new();
    for (who, stats) in [("haproxy", hstats), ("lbd", lstats)] {
        let deadline = Instant::now() + WAIT;
        let (head, body) = loop {
            let (head, body) = http10_get(stats, csv_path).await;
            let settled = body
                .lines()
                .any(|l| l.starts_with("be,closed,") && l.contains(",DOWN,"))
                && body
                    .lines()
                    .any(|l| l.starts_with("be,up,") && l.contains(",UP,"));
            if settled {
                break (head, body);
            }
            assert!(
                Instant::now() < deadline,
                "{who}: checks never settled:\n{head}\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(head.starts_with("http/1."), "{who}: {head}");
        assert!(head.contains(" 200 "), "{who}: {head}");
        assert!(head.contains("content-type: text/plain"), "{who}: {head}");
        let (json_head, json) = http10_get(stats, "/haproxy?stats;json").await;
        assert!(
            json_head.contains("content-type: application/json"),
            "{who}: {json_head}"
        );
        answers.push((body, json_statuses(&json)));
    }
    let (hcsv, hjson) = &answers[0];
    let (lcsv, ljson) = &answers[1];
    let (hheader, mut hrows) = stat_rows(hcsv);
    let (lheader, lrows) = stat_rows(lcsv);
    assert_eq!(hheader, lheader, "header");
    hrows.retain(|(px, _), _| px != "stats");
    assert_eq!(
        hrows.keys().collect::<Vec<_>>(),
        lrows.keys().collect::<Vec<_>>(),
        "rows"
    );
    for (key, h) in &hrows {
        for column in [
            "status",
            "weight",
            "act",
            "bck",
            "iid",
            "sid",
            "type",
            "mode",
            "check_status",
        ] {
            assert_eq!(
                h.get(column),
                lrows[key].get(column),
                "{key:?} {column}:\nhaproxy:\n{hcsv}\nlbd:\n{lcsv}"
            );
        }
    }
    assert_eq!(hjson, ljson, ";json statuses");
    assert!(ljson.iter().any(|(_, s, st)| s == "closed" && st == "DOWN"));
    // lbd's page at the URI, and its own routes beside it.
    for path in ["/haproxy?stats", "/", "/metrics", "/stats.csv"] {
        let (head, _) = http10_get(lstats, path).await;
        assert!(head.contains(" 200 "), "{path}: {head}");
    }
    assert!(lbd.exited().is_none());
}

/// `stats timeout`: an interactive client that stays silent longer is
/// closed, one that speaks in time is served; the timeout is the file's
/// (1s here), not the default 10s.
async fn stats_timeout_closes_idle_clients(rt: &str) {
    let dir = scratch_dir();
    let bind = free_addr();
    let up = Backend::start("up", Mode::TaggedEcho).await;
    let config = format!(
        "global\n  stats socket {} level user\n  stats timeout 1s\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend fe\n  bind {bind}\n  default_backend be\n\
         backend be\n  server up {}\n",
        dir.join("cli.sock").display(),
        up.addr
    );
    let lbd = Lbd::start(rt, 1, &config).await;
    let sock = dir.join("cli.sock");
    wait_for_socket(&sock).await;
    let mut conn = UnixStream::connect(&sock).await.expect("connect");
    let mut buf = vec![0u8; 4096];
    for line in ["prompt\n", "show cli level\n"] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        conn.write_all(line.as_bytes()).await.expect("in time");
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed while speaking in time");
    }
    let silent = Instant::now();
    let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
        .await
        .expect("closed within the wait")
        .unwrap_or(0);
    let waited = silent.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}, not the file's 1s"
    );
    assert!(lbd.exited().is_none());
}

/// `disable health` / `enable health` with HAProxy as the oracle: the same
/// answers (and errors), the paused checks' empty `check_status` and
/// `srv_check_state`, a DOWN server that stays DOWN while its checks are
/// paused even once its port listens, and comes UP after `enable health`.
async fn health_pause_like_haproxy(rt: &str) {
    let up = Backend::start("up", Mode::TaggedEcho).await;
    let closed = common::free_port();
    let config = |dir: &Path, bind: SocketAddr| {
        format!(
            "global\n  stats socket {} level admin\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             frontend fe\n  bind {bind}\n  default_backend be\n\
             backend be\n  server up {} check inter 100ms\n  \
             server closed 127.0.0.1:{closed} check inter 100ms\n",
            dir.join("admin.sock").display(),
            up.addr
        )
    };
    let (hdir, hbind) = (scratch_dir(), free_addr());
    let Some(_haproxy) = Haproxy::start(&config(&hdir, hbind), hbind).await else {
        return;
    };
    let (ldir, lbind) = (scratch_dir(), free_addr());
    let lbd = Lbd::start(rt, 2, &config(&ldir, lbind)).await;
    let socks = [hdir.join("admin.sock"), ldir.join("admin.sock")];
    for sock in &socks {
        wait_for_socket(sock).await;
        stat_when_down(sock).await;
    }
    // (status, check_status) of both servers, and their srv_check_state.
    let look = |answer: String, state: String| -> Vec<String> {
        let mut seen: Vec<String> = answer
            .lines()
            .filter(|l| l.starts_with("be,up,") || l.starts_with("be,closed,"))
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                format!("{} {} [{}]", f[1], f[17], f[36])
            })
            .collect();
        seen.extend(state.lines().skip(2).filter(|l| !l.is_empty()).map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            format!("{} check_state {}", f[3], f[13])
        }));
        seen
    };
    let mut views = Vec::new();
    for sock in &socks {
        let answers = cli(
            sock,
            "disable health be/closed; disable health be/up; disable health be/zz; \
             disable health; enable health nobe/up",
        )
        .await;
        let paused = look(
            cli(sock, "show stat -1 4 -1").await,
            cli(sock, "show servers state be").await,
        );
        views.push((answers, paused));
    }
    assert_eq!(views[0], views[1], "haproxy, then lbd");
    assert!(
        views[1].1.contains(&"closed DOWN []".to_owned()),
        "{:?}",
        views[1]
    );
    // The port listens now; paused checks do not see it.
    let _back =
        Backend::start_on(([127, 0, 0, 1], closed).into(), "closed", Mode::TaggedEcho).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for sock in &socks {
        let answer = cli(sock, "show stat -1 4 -1").await;
        assert!(
            answer
                .lines()
                .any(|l| l.starts_with("be,closed,") && l.contains(",DOWN,")),
            "{answer}"
        );
        assert_eq!(cli(sock, "enable health be/closed").await, "\n");
    }
    for sock in &socks {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = cli(sock, "show stat -1 4 -1").await;
            if answer
                .lines()
                .any(|l| l.starts_with("be,closed,") && l.contains(",UP,"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "closed never UP again:\n{answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // And lbd's traffic reaches it again.
    let counts = common::tally(lbind, 20).await;
    assert!(counts.get("closed").is_some_and(|n| *n > 0), "{counts:?}");
    assert!(lbd.log().contains("health checks of be/closed disabled"));
}

// ------------------------------------------------------------ TCP sockets

/// A file with two TCP stats sockets: admin (`ipv4@`) and user (plain).
fn tcp_cli_config(admin: SocketAddr, user: SocketAddr, bind: SocketAddr, a: u16, b: u16) -> String {
    format!(
        "global\n  stats socket ipv4@{admin} level admin\n  stats socket {user} level user\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend fe\n  bind {bind}\n  default_backend be\n\
         backend be\n  server a 127.0.0.1:{a}\n  server b 127.0.0.1:{b}\n"
    )
}

async fn wait_for_tcp_socket(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "no stats socket on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The keys of a `show info` answer.
fn info_keys(answer: &str) -> Vec<String> {
    answer
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
        .collect()
}

/// The commands of a `help` answer: its lines' first words.
fn help_commands(answer: &str) -> Vec<String> {
    answer
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// What the TCP sockets of [`tcp_cli_config`] answer, one entry per check.
async fn tcp_answers(admin: SocketAddr, user: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    let keys = info_keys(&tcp_cli(admin, "show info").await);
    for key in [
        "Name",
        "Version",
        "Pid",
        "Uptime_sec",
        "CurrConns",
        "Stopping",
    ] {
        out.push(format!(
            "show info has {key}: {}",
            keys.iter().any(|k| k == key)
        ));
    }
    let help = help_commands(&tcp_cli(user, "help").await);
    for command in [
        "help", "prompt", "quit", "show", "get", "set", "disable", "enable",
    ] {
        out.push(format!(
            "help (user) lists {command}: {}",
            help.iter().any(|c| c == command)
        ));
    }
    out.push(format!(
        "show servers state: {:?}",
        carried(&tcp_cli(user, "show servers state be").await)
    ));
    for (addr, command) in [
        (user, "set server be/a state drain"),
        (user, "show cli level"),
        (admin, "show cli level"),
        (admin, "set server be/a state drain"),
        (admin, "get weight be/a"),
        (admin, "_getsocks"),
    ] {
        out.push(format!("{command:?} -> {:?}", tcp_cli(addr, command).await));
    }
    let (_, rows) = stat_rows(&tcp_cli(user, "show stat").await);
    for server in ["a", "b"] {
        let status = rows
            .get(&("be".to_owned(), server.to_owned()))
            .and_then(|r| r.get("status"));
        out.push(format!("show stat be/{server}: {status:?}"));
    }
    out.push(format!(
        "show servers state after drain: {:?}",
        carried(&tcp_cli(user, "show servers state be").await)
    ));
    let conn = TcpStream::connect(admin).await.expect("connect");
    let lines = [
        "prompt",
        "show cli level",
        "set weight be/b 2;get weight be/b",
        "user",
        "set weight be/b 3",
        "quit",
    ];
    for (line, answer) in lines.iter().zip(prompted(conn, &lines).await) {
        out.push(format!("prompt {line:?} -> {answer:?}"));
    }
    out
}

/// One file with TCP stats sockets (`ipv4@A:P` and `A:P`), HAProxy and
/// lbd: the same answers over TCP (levels, a drain, prompt mode, and
/// `_getsocks` closed without an answer on a socket without expose-fd).
async fn tcp_socket_answers_like_haproxy(rt: &str) {
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    let run = |admin: SocketAddr, user: SocketAddr, bind: SocketAddr| {
        tcp_cli_config(admin, user, bind, a.addr.port(), b.addr.port())
    };

    let (hadmin, huser, hbind) = (free_addr(), free_addr(), free_addr());
    let Some(haproxy) = Haproxy::start(&run(hadmin, huser, hbind), hbind).await else {
        return;
    };
    wait_for_tcp_socket(hadmin).await;
    let theirs = tcp_answers(hadmin, huser).await;
    drop(haproxy);

    let (ladmin, luser, lbind) = (free_addr(), free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &run(ladmin, luser, lbind)).await;
    wait_for_tcp_socket(ladmin).await;
    let ours = tcp_answers(ladmin, luser).await;

    let differ: Vec<String> = theirs
        .iter()
        .zip(&ours)
        .filter(|(t, o)| t != o)
        .map(|(t, o)| format!("haproxy: {t}\n    lbd: {o}"))
        .collect();
    assert!(
        differ.is_empty() && theirs.len() == ours.len(),
        "{} of {} answers differ:\n{}\nlbd log:\n{}",
        differ.len(),
        theirs.len(),
        differ.join("\n"),
        lbd.log()
    );
    assert!(lbd.exited().is_none());
}

/// A TOML config with one TCP stats socket.
fn tcp_toml_config(cli: SocketAddr, level: &str, bind: SocketAddr, a: &Backend) -> String {
    format!(
        "[[stats_socket]]\nbind = \"{cli}\"\nlevel = \"{level}\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\n\n\
         [[pool.member]]\nname = \"a\"\naddress = \"{}\"\nport = {}\n",
        a.addr.ip(),
        a.addr.port(),
    )
}

/// One line of binary garbage (no line end inside) on `conn`: answered
/// "Unknown command", then closed.
async fn garbage_line(mut conn: impl AsyncRead + AsyncWrite + Unpin) {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i * 7919 % 251) as u8)
        .filter(|b| *b != b'\n')
        .collect();
    conn.write_all(&garbage).await.expect("send garbage");
    conn.write_all(b"\n").await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut answer))
        .await
        .expect("garbage answered in time")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("Unknown command"),
        "garbage: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
}

/// A 1 MiB line on `conn`: closed after the limit, without reading it all.
async fn huge_line(mut conn: impl AsyncRead + AsyncWrite + Unpin) {
    let big = vec![b'x'; 1 << 20];
    let _ = tokio::time::timeout(WAIT, conn.write_all(&big)).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, conn.read_to_end(&mut answer)).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("command line over"),
        "1 MiB line: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// Hostile clients on a TCP stats socket: binary garbage, a 1 MiB line,
/// 200 clients that never send. The socket keeps answering and lbd's
/// descriptors come back to where they were.
async fn hostile_tcp_clients_break_nothing(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let (cli_addr, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &tcp_toml_config(cli_addr, "admin", bind, &a)).await;
    wait_for_tcp_socket(cli_addr).await;
    let baseline = settled_fds(lbd.pid()).await;
    let version = tcp_cli(cli_addr, "show version").await;
    assert!(version.ends_with("\n\n"), "{version:?}");
    let answers_quickly = || async {
        let started = Instant::now();
        assert_eq!(tcp_cli(cli_addr, "show version").await, version);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "show version took {:?}",
            started.elapsed()
        );
    };

    garbage_line(TcpStream::connect(cli_addr).await.expect("connect")).await;
    answers_quickly().await;
    huge_line(TcpStream::connect(cli_addr).await.expect("connect")).await;
    answers_quickly().await;

    // 200 clients that never send: the longest idle make room.
    let mut silent = Vec::new();
    for _ in 0..200 {
        match TcpStream::connect(cli_addr).await {
            Ok(c) => silent.push(c),
            Err(e) => panic!("connect {}: {e}", silent.len()),
        }
    }
    answers_quickly().await;
    drop(silent);

    fds_back_to(lbd.pid(), baseline, Duration::from_secs(20)).await;
    answers_quickly().await;
    assert_eq!(common::hit(bind).await.expect("traffic"), "a");
    assert!(lbd.exited().is_none(), "lbd exited; log:\n{}", lbd.log());
}

/// Waits until `show cli level` on `addr` answers `level`.
async fn level_becomes(addr: SocketAddr, level: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = tcp_cli(addr, "show cli level").await;
        if answer == format!("{level}\n\n") {
            return;
        }
        assert!(Instant::now() < deadline, "level never {level}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reloads: a TCP socket kept across a reload changes level without a
/// bind error (the socket is kept, not bound again), a moved one listens
/// at its new address and no longer at the old one, a removed one closes.
async fn tcp_socket_follows_reloads(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let (first, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &tcp_toml_config(first, "user", bind, &a)).await;
    wait_for_tcp_socket(first).await;
    level_becomes(first, "user").await;

    assert!(lbd.reload(&tcp_toml_config(first, "admin", bind, &a)).await);
    level_becomes(first, "admin").await;
    assert!(
        !lbd.log().contains("the stats sockets stay as they were"),
        "{}",
        lbd.log()
    );

    let second = free_addr();
    assert!(
        lbd.reload(&tcp_toml_config(second, "operator", bind, &a))
            .await
    );
    // The sockets follow the reload shortly after it is logged.
    wait_for_tcp_socket(second).await;
    level_becomes(second, "operator").await;
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(first).await.is_ok() {
        assert!(Instant::now() < deadline, "{first} still listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let without = tcp_toml_config(second, "user", bind, &a);
    let without = without
        .split_once("[[listener]]")
        .map(|(_, rest)| format!("[[listener]]{rest}"))
        .expect("a listener");
    assert!(lbd.reload(&without).await);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(second).await.is_ok() {
        assert!(Instant::now() < deadline, "{second} still listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lbd.exited().is_none(), "lbd exited; log:\n{}", lbd.log());
}

/// Whether `conn` was closed (EOF or reset) within `within`.
async fn ended(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// `shutdown sessions server` with HAProxy as the oracle: the same answers
/// (and errors); the server's established connections end at once, the
/// other server's stay and still echo; on lbd, steady new connections
/// started after the command all succeed.
async fn shutdown_sessions_like_haproxy(rt: &str) {
    let (a, b) = (
        Backend::start("a", Mode::TaggedEcho).await,
        Backend::start("b", Mode::TaggedEcho).await,
    );
    let config = |dir: &Path, bind: SocketAddr| {
        format!(
            "global\n  stats socket {} level admin\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind {bind}\n  default_backend be\n\
             backend be\n  server a {}\n  server b {}\n",
            dir.join("admin.sock").display(),
            a.addr,
            b.addr
        )
    };
    let (hdir, hbind) = (scratch_dir(), free_addr());
    let Some(_haproxy) = Haproxy::start(&config(&hdir, hbind), hbind).await else {
        return;
    };
    let (ldir, lbind) = (scratch_dir(), free_addr());
    let lbd = Lbd::start(rt, 2, &config(&ldir, lbind)).await;
    let mut answers = Vec::new();
    for (sock, bind) in [
        (hdir.join("admin.sock"), hbind),
        (ldir.join("admin.sock"), lbind),
    ] {
        wait_for_socket(&sock).await;
        let mut held = Vec::new();
        for _ in 0..6 {
            let mut conn = connect_from(bind, None).await.expect("connect");
            let tag = read_line(&mut conn).await.expect("tag");
            held.push((tag, conn));
        }
        let on = |t: &str| held.iter().filter(|(tag, _)| tag == t).count();
        assert!(on("a") >= 2 && on("b") >= 2, "round robin over both");
        let traffic = (bind == lbind).then(|| Traffic::start(bind));
        answers.push(
            cli(
                &sock,
                "shutdown sessions server be/a; shutdown sessions server be/zz; \
                 shutdown sessions server; shutdown sessions server nobe/a",
            )
            .await,
        );
        // Connections established before the answer may be a's and be
        // closed too; those started after it must all be served.
        let asked = Instant::now();
        for (tag, conn) in &mut held {
            if tag == "a" {
                assert!(
                    ended(conn, Duration::from_secs(2)).await,
                    "a's connection ends"
                );
            } else {
                conn.write_all(b"still\n").await.expect("write");
                assert_eq!(read_line(conn).await.expect("echo"), "still", "b's stays");
            }
        }
        // New connections to a are served again.
        let counts = common::tally(bind, 10).await;
        assert!(counts.get("a").is_some_and(|n| *n > 0), "{counts:?}");
        if let Some(traffic) = traffic {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let seen = traffic.stop().await;
            let errors: Vec<_> = seen
                .iter()
                .filter(|(at, r)| *at > asked && r.is_err())
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
            assert!(seen.iter().filter(|(at, _)| *at > asked).count() > 10);
        }
    }
    assert_eq!(answers[0], answers[1], "haproxy, then lbd");
    assert!(
        lbd.log().contains("(shutdown sessions server)"),
        "{}",
        lbd.log()
    );
}
