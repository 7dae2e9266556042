//! lbd as a drop-in `haproxy` binary: the real binary through a symlink
//! named `haproxy` in a scratch directory, on loopback.
//!
//! - `-c` exit codes and messages, compared with Debian's HAProxy on the
//!   same files;
//! - `-v` read by Octavia's own version parser (the Octavia venv of
//!   `scripts/octavia/setup.sh`);
//! - 100 `USR2` reloads under steady traffic, and a broken file on `USR2`;
//! - `-Ws` notifications on a fake `NOTIFY_SOCKET`;
//! - `-sf <old pid>` takeover under steady traffic;
//! - `-x <stats socket> -sf <old pid>` under steady traffic: lbd from lbd,
//!   lbd from Debian's HAProxy, and HAProxy from lbd; the listening sockets
//!   (by inode) stay the same across each takeover, a TCP stats socket's
//!   too;
//! - `-D -p pidfile`.
//!
//! Tests needing `/usr/sbin/haproxy` or the Octavia venv skip with a
//! printed reason when they are missing, unless `LBD_TEST_REQUIRE_TOOLS`
//! is set. Every wait and loop is bounded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::notify::NotifySocket;
use common::tools::{available, run_bounded};
use common::traffic::Traffic;
use common::*;
use tokio::io::AsyncWriteExt;

const HAPROXY: &str = "/usr/sbin/haproxy";
const LIMIT: Duration = Duration::from_secs(60);

/// A scratch directory holding a `haproxy` symlink to lbd.
fn haproxy_dir() -> PathBuf {
    let dir = scratch_dir();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lbd"), dir.join("haproxy"))
        .expect("symlink haproxy -> lbd");
    dir
}

/// `haproxy` (lbd) on runtime `rt` with 2 workers.
fn haproxy_cmd(dir: &Path, rt: &str) -> Command {
    let mut cmd = Command::new(dir.join("haproxy"));
    cmd.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env("LBD_RUNTIME", rt)
        .env("LBD_WORKERS", "2")
        .env("LBD_LOG", "lbd=debug");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A mode-tcp haproxy.cfg: `bind` in front of the two backends, with
/// their weights.
fn cfg(bind: SocketAddr, a: &Backend, b: &Backend, weights: (u32, u32)) -> String {
    format!(
        "global\n    log /dev/log local0\ndefaults\n    mode tcp\n    timeout client 30s\n    \
         timeout server 30s\n    timeout connect 5s\n    retries 3\n    option redispatch\n\
         frontend fe\n    bind {bind}\n    default_backend be\n\
         backend be\n    balance roundrobin\n    server a {} weight {}\n    server b {} weight {}\n",
        a.addr, weights.0, b.addr, weights.1
    )
}

/// Starts `haproxy <args> -f <config>` (lbd) and waits until it serves.
async fn start(dir: &Path, rt: &str, config: &str, args: &[&str], name: &str) -> Lbd {
    let config_path = dir.join(format!("{name}.cfg"));
    if !config_path.exists() {
        std::fs::write(&config_path, config).expect("write config");
    }
    let mut cmd = haproxy_cmd(dir, rt);
    cmd.args(args).arg("-f").arg(&config_path);
    Lbd::spawn(cmd, config_path, dir.join(format!("{name}.log"))).await
}

// ---------------------------------------------------------------- -c, -v

#[test]
fn check_mode_exit_codes_and_messages_match_haproxy() {
    let dir = haproxy_dir();
    let valid = dir.join("valid.cfg");
    std::fs::write(
        &valid,
        "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout client 5s\n    \
         timeout server 5s\n    timeout connect 1s\nfrontend fe\n    bind 127.0.0.1:8443\n    \
         default_backend be\nbackend be\n    server a 127.0.0.1:9000 check\n",
    )
    .expect("write");
    let unknown = dir.join("unknown.cfg");
    std::fs::write(
        &unknown,
        "defaults\n    mode tcp\n    timeout client 5s\n    timeout server 5s\n    \
         timeout connect 1s\nfrontend fe\n    bind 127.0.0.1:8443\n    frobnicate 1\n    \
         default_backend be\nbackend be\n    server a 127.0.0.1:9000\n",
    )
    .expect("write");
    let missing = dir.join("missing.cfg");
    let user_group = dir.join("ug.conf");
    std::fs::write(&user_group, "global\n    user nobody\n    group nogroup\n").expect("write");

    let ours = |args: &[&str], files: &[&Path]| {
        let mut cmd = Command::new(dir.join("haproxy"));
        cmd.args(args);
        for f in files {
            cmd.arg("-f").arg(f);
        }
        run_bounded(cmd, LIMIT)
    };
    // What Octavia's agent runs to validate an upload.
    let out = ours(&["-c", "-L", "peer1"], &[&valid, &user_group]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Configuration file is valid\n"
    );
    // Its systemd unit's ExecStartPre: -c -q prints nothing.
    let out = ours(&["-c", "-q", "-L", "peer1"], &[&valid, &user_group]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );

    let out = ours(&["-c"], &[&unknown]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "[ALERT]    (lbd) : config : parsing [{}:8] : unknown keyword 'frobnicate'",
            unknown.display()
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let out = ours(&["-c"], &[&missing]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[ALERT]"),
        "{}",
        text(&out)
    );
    // A flag HAProxy does not have: usage, exit 1.
    let out = ours(&["-Z"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage : haproxy"));

    if !available(HAPROXY, "haproxy") {
        return;
    }
    // The same files and flags give HAProxy's exit code.
    let cases: [(&[&str], Vec<&Path>); 5] = [
        (&["-c", "-L", "peer1"], vec![&valid, &user_group]),
        (&["-c", "-q"], vec![&valid]),
        (&["-c"], vec![&unknown]),
        (&["-c", "-q"], vec![&unknown]),
        (&["-c"], vec![&missing]),
    ];
    for (args, files) in cases {
        let mut cmd = Command::new(HAPROXY);
        cmd.args(args);
        for f in &files {
            cmd.arg("-f").arg(f);
        }
        let theirs = run_bounded(cmd, LIMIT);
        let ours = ours(args, &files);
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{args:?} {files:?}\nlbd: {}\nhaproxy: {}",
            text(&ours),
            text(&theirs)
        );
        assert_eq!(
            ours.stdout,
            theirs.stdout,
            "{args:?} {files:?}: stdout differs\nlbd: {}\nhaproxy: {}",
            text(&ours),
            text(&theirs)
        );
        // Alerts on a refusal, silence with -q (lbd's warnings about what
        // it does instead of a keyword are extra on a valid config).
        if !ours.status.success() || args.contains(&"-q") {
            assert_eq!(
                ours.stderr.is_empty(),
                theirs.stderr.is_empty(),
                "{args:?} {files:?}: one is silent, the other not\nlbd: {}\nhaproxy: {}",
                text(&ours),
                text(&theirs)
            );
        }
    }
}

#[test]
fn version_is_read_by_octavias_own_parser_and_says_lbd() {
    let dir = haproxy_dir();
    for flag in ["-v", "-vv"] {
        let mut cmd = Command::new(dir.join("haproxy"));
        cmd.arg(flag);
        let out = run_bounded(cmd, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let first = stdout.lines().next().unwrap_or_default();
        assert!(first.starts_with("HAProxy version 2.6."), "{stdout}");
        assert!(first.contains("lbd"), "{stdout}");
    }
    let Some(python) = octavia_python() else {
        return;
    };
    // `haproxy` on PATH is lbd, as in an amphora image where it replaces
    // /usr/sbin/haproxy.
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(
            "from octavia.amphorae.backends.agent.api_server import haproxy_compatibility as h\n\
             print('%d.%d' % h.get_haproxy_versions())",
        )
        .env("PATH", path)
        .env("PYTHONWARNINGS", "ignore");
    let out = run_bounded(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2.6");
}

// ------------------------------------------------------- signals, -Ws, -sf

/// 100 USR2 reloads alternating two configs (weights 1:2 and 2:1) while
/// clients open new connections: none fails. Then a broken file: the alert
/// is logged, the running config stays and serves.
async fn usr2_reloads_under_traffic_lose_no_connection(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let dir = haproxy_dir();
    let configs = [cfg(bind, &a, &b, (1, 2)), cfg(bind, &a, &b, (2, 1))];
    let lbd = start(&dir, rt, &configs[0], &["-W"], "lb").await;
    let traffic = Traffic::start(bind, 4);
    traffic.flows(20).await;
    for i in 1..=100 {
        std::fs::write(&lbd.config_path, &configs[i % 2]).expect("write config");
        lbd.signal(libc::SIGUSR2);
        lbd.wait_for_log("reloaded: generation", i).await;
        traffic.flows(2).await;
    }
    assert!(lbd.log().contains("SIGUSR2: reloading"));
    // The last config (weights 1:2) is the one serving.
    std::fs::write(&lbd.config_path, "frontend fe\n    bind\n    mode http\n").expect("write");
    lbd.signal(libc::SIGUSR2);
    lbd.wait_for_log("reload rejected", 1).await;
    traffic.flows(50).await;
    let (ok, failed, errors) = traffic.finish().await;
    let log = lbd.log();
    assert!(
        log.contains("'mode http'") && log.contains("[ALERT]"),
        "the alert is logged: {log}"
    );
    assert_eq!(failed, 0, "{ok} ok, {failed} failed: {errors:?}");
    assert!(lbd.exited().is_none(), "still running");
    // Weights 1:2 stay (2:1 would give `a` about 20 of 30).
    let counts = tally(bind, 30).await;
    let a_share = counts.get("a").copied().unwrap_or(0);
    assert!((7..=13).contains(&a_share), "weights 1:2 stay: {counts:?}");
}

/// `-Ws` with a fake NOTIFY_SOCKET: READY=1 (with MAINPID) once serving,
/// RELOADING=1 then READY=1 on USR2, STOPPING=1 on TERM.
async fn ws_notifies_systemd(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let dir = haproxy_dir();
    let socket_path = dir.join("notify.sock");
    let notify = NotifySocket::bind(&socket_path);
    let config_path = dir.join("lb.cfg");
    std::fs::write(&config_path, cfg(bind, &a, &b, (1, 1))).expect("write");
    let mut cmd = haproxy_cmd(&dir, rt);
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .args(["-Ws", "-L", "peer1", "-p"])
        .arg(dir.join("lb.pid"))
        .arg("-f")
        .arg(&config_path);
    let lbd = Lbd::spawn(cmd, config_path, dir.join("lb.log")).await;
    let next = || notify.next();
    let ready = tokio::task::block_in_place(next);
    assert_eq!(ready, format!("READY=1\nMAINPID={}", lbd.pid()));
    assert_eq!(hit(bind).await.expect("serves"), "a");
    let pid_file = std::fs::read_to_string(dir.join("lb.pid")).expect("pid file");
    assert_eq!(pid_file.trim(), lbd.pid().to_string());

    lbd.signal(libc::SIGUSR2);
    assert_eq!(tokio::task::block_in_place(next), "RELOADING=1");
    assert_eq!(tokio::task::block_in_place(next), "READY=1");
    lbd.signal(libc::SIGTERM);
    assert_eq!(tokio::task::block_in_place(next), "STOPPING=1");
    let status = lbd.wait_exit(WAIT).await;
    assert!(status.success(), "{status}: {}", lbd.log());
}

/// `-sf <old pid>`: the new process binds next to the old one and, once it
/// serves, tells it to finish. Clients opening connections all along see
/// no failure; a connection open on the old process goes on until the
/// client closes it, and then the old process exits.
async fn sf_takeover_under_traffic_loses_no_connection(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let dir = haproxy_dir();
    let config = cfg(bind, &a, &b, (1, 1));
    let pid_file = dir.join("lb.pid").display().to_string();
    let mut old = start(&dir, rt, &config, &["-W", "-p", &pid_file], "gen0").await;
    let traffic = Traffic::start(bind, 4);
    // Three takeovers in a row, each of the process before.
    for generation in 1..=3 {
        // A connection that the old process serves through the takeover.
        let mut held = connect_from(bind, None).await.expect("connect");
        let tag = read_line(&mut held).await.expect("tag");
        assert!(tag == "a" || tag == "b");
        traffic.flows(50).await;
        let old_pid = std::fs::read_to_string(&pid_file).expect("pid file");
        assert_eq!(old_pid.trim(), old.pid().to_string());
        let new = start(
            &dir,
            rt,
            &config,
            &["-W", "-p", &pid_file, "-sf", old_pid.trim()],
            &format!("gen{generation}"),
        )
        .await;
        new.wait_for_log("sent SIGUSR1 (finish) to old process", 1)
            .await;
        old.wait_for_log("SIGUSR1: soft stop", 1).await;
        traffic.flows(100).await;
        // The old one still carries the held connection.
        assert!(old.exited().is_none(), "old exited with a connection open");
        held.write_all(b"ping\n").await.expect("write");
        assert_eq!(read_line(&mut held).await.expect("echo"), "ping");
        drop(held);
        let status = old.wait_exit(WAIT).await;
        assert!(status.success(), "old: {status}: {}", old.log());
        new.wait_for_log("the old process's sockets are closed", 1)
            .await;
        traffic.flows(100).await;
        assert_eq!(
            std::fs::read_to_string(&pid_file).expect("pid").trim(),
            new.pid().to_string()
        );
        old = new;
    }
    let (ok, failed, errors) = traffic.finish().await;
    eprintln!("-sf ({rt}): 3 takeovers under traffic: {ok} connections ok, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok, {failed} failed: {errors:?}");
    // After the last takeover both members get connections again (the
    // steering program is gone: the kernel's hash spreads them).
    let counts = tally(bind, 20).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
}

/// `-D -p pidfile`: the command returns 0 once the daemon serves; the pid
/// file holds the daemon's pid (not the command's), and that process
/// serves.
async fn daemon_writes_its_pid_and_serves(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let dir = haproxy_dir();
    let config_path = dir.join("lb.cfg");
    std::fs::write(&config_path, cfg(bind, &a, &b, (1, 1))).expect("write");
    let pid_file = dir.join("lb.pid");
    let log = std::fs::File::create(dir.join("lb.log")).expect("log");
    let mut cmd = haproxy_cmd(&dir, rt);
    cmd.args(["-D", "-p"])
        .arg(&pid_file)
        .arg("-f")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut parent = cmd.spawn().expect("spawn");
    let parent_pid = parent.id() as i32;
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = parent.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = parent.kill();
            let _ = parent.wait();
            panic!("haproxy -D did not return");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = || std::fs::read_to_string(dir.join("lb.log")).unwrap_or_default();
    assert!(status.success(), "{status}: {}", log());
    let daemon: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file written before the command returns")
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(daemon, parent_pid);
    // Stop the daemon whatever happens below.
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the daemon this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _kill = Kill(daemon);
    assert!(alive(daemon), "daemon alive");
    let counts = tally(bind, 4).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(
        log().contains(&format!("started: pid {daemon}")),
        "{}",
        log()
    );
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    let deadline = Instant::now() + WAIT;
    while alive(daemon) {
        assert!(Instant::now() < deadline, "daemon did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- -x

/// `cfg` with a stats socket that hands the listening sockets over.
fn cfg_exposing(socket: &Path, bind: SocketAddr, a: &Backend, b: &Backend) -> String {
    cfg(bind, a, b, (1, 1)).replacen(
        "global\n",
        &format!(
            "global\n    stats socket {} mode 600 level admin expose-fd listeners\n",
            socket.display()
        ),
        1,
    )
}

/// The inodes of the sockets listening on `port` (from /proc/net/tcp).
fn listening_inodes(port: u16) -> std::collections::BTreeSet<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// The socket inodes process `pid` holds.
fn socket_inodes_of(pid: i32) -> std::collections::BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let link = std::fs::read_link(e.ok()?.path()).ok()?;
                let text = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
                text.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default()
}

/// `-x <socket> -sf <old pid>`: the new lbd takes the old one's listening
/// sockets themselves (the same inodes, nothing bound anew), then tells it
/// to finish. Two takeovers in a row (the second hands on sockets that
/// were themselves received) under steady traffic: no connection fails,
/// and a connection held on the old process goes on until closed.
async fn x_takeover_under_traffic_loses_no_connection(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let dir = haproxy_dir();
    let socket = dir.join("lb.sock");
    let config = cfg_exposing(&socket, bind, &a, &b);
    let mut old = start(&dir, rt, &config, &["-W"], "gen0").await;
    let sockets = listening_inodes(bind.port());
    assert_eq!(sockets.len(), 2, "one per worker");
    let traffic = Traffic::start(bind, 4);
    for generation in 1..=2 {
        let mut held = connect_from(bind, None).await.expect("connect");
        let tag = read_line(&mut held).await.expect("tag");
        assert!(tag == "a" || tag == "b");
        traffic.flows(50).await;
        let old_pid = old.pid().to_string();
        let x = socket.display().to_string();
        let new = start(
            &dir,
            rt,
            &config,
            &["-W", "-x", &x, "-sf", &old_pid],
            &format!("gen{generation}"),
        )
        .await;
        new.wait_for_log("received 2 socket(s), 2 of them TCP listeners", 1)
            .await;
        old.wait_for_log("handed 2 listening socket(s) to a new process", 1)
            .await;
        old.wait_for_log("SIGUSR1: soft stop", 1).await;
        traffic.flows(100).await;
        assert!(old.exited().is_none(), "old exited with a connection open");
        held.write_all(b"ping\n").await.expect("write");
        assert_eq!(read_line(&mut held).await.expect("echo"), "ping");
        drop(held);
        let status = old.wait_exit(WAIT).await;
        assert!(status.success(), "old: {status}: {}", old.log());
        traffic.flows(100).await;
        assert_eq!(
            listening_inodes(bind.port()),
            sockets,
            "the same sockets listen, held by the new process: {}",
            new.log()
        );
        assert!(socket_inodes_of(new.pid()).is_superset(&sockets));
        old = new;
    }
    let (ok, failed, errors) = traffic.finish().await;
    eprintln!("-x ({rt}): 2 takeovers under traffic: {ok} connections ok, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok, {failed} failed: {errors:?}");
    // The CLI socket file is the last process's.
    let mut cli = std::os::unix::net::UnixStream::connect(&socket).expect("cli socket");
    std::io::Write::write_all(&mut cli, b"show info\n").expect("command");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut cli, &mut answer).expect("answer");
    let pid_line = format!("\nPid: {}\n", old.pid());
    assert!(answer.contains(&pid_line), "{answer}");
}

/// `-x <socket> -sf <old pid>` with a TCP stats socket too: the new lbd
/// takes it with the listeners (the same inode; binding it anew would
/// fail, the old one still listens there), and it answers as the new
/// process once the old one exited.
async fn x_takeover_keeps_the_tcp_stats_socket(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let (bind, cli) = (free_addr(), free_addr());
    let dir = haproxy_dir();
    let socket = dir.join("lb.sock");
    let config = cfg_exposing(&socket, bind, &a, &b).replacen(
        "global\n",
        &format!("global\n    stats socket ipv4@{cli} level admin\n"),
        1,
    );
    let old = start(&dir, rt, &config, &["-W"], "gen0").await;
    until_listening(cli, || old.log()).await;
    let cli_socket = listening_inodes(cli.port());
    assert_eq!(cli_socket.len(), 1, "{}", old.log());
    let (x, old_pid) = (socket.display().to_string(), old.pid().to_string());
    let new = start(
        &dir,
        rt,
        &config,
        &["-W", "-x", &x, "-sf", &old_pid],
        "gen1",
    )
    .await;
    new.wait_for_log("received 3 socket(s), 3 of them TCP listeners", 1)
        .await;
    new.wait_for_log("taken from the old process (-x)", 1).await;
    old.wait_for_log("handed 3 listening socket(s) to a new process", 1)
        .await;
    let status = old.wait_exit(WAIT).await;
    assert!(status.success(), "old: {status}: {}", old.log());
    assert_eq!(listening_inodes(cli.port()), cli_socket, "{}", new.log());
    let mut conn = tokio::net::TcpStream::connect(cli).await.expect("connect");
    conn.write_all(b"show info\n").await.expect("command");
    let mut answer = String::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut answer),
    )
    .await
    .expect("answered in time")
    .expect("answer");
    assert!(
        answer.contains(&format!("\nPid: {}\n", new.pid())),
        "{answer}"
    );
    assert_eq!(
        hit(bind).await.map(|t| t == "a" || t == "b").ok(),
        Some(true)
    );
}

/// Debian's HAProxy, killed with its process group when dropped.
struct HaproxyProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl HaproxyProcess {
    /// `haproxy -db <args>`; `None` if HAProxy is not installed.
    fn spawn(dir: &Path, args: &[&str], name: &str) -> Option<HaproxyProcess> {
        if !available(HAPROXY, "haproxy") {
            return None;
        }
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log");
        let child = std::process::Command::new(HAPROXY)
            .arg("-db")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .expect("run haproxy");
        Some(HaproxyProcess { child, log })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until it exited; its status.
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not exit: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HaproxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until something accepts connections on `addr`.
async fn until_listening(addr: SocketAddr, log: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr}: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Migrating from HAProxy to lbd without losing a connection: HAProxy
/// serves the file; lbd started with `-x <HAProxy's stats socket> -sf
/// <HAProxy's pid>` on the same file takes HAProxy's listening socket.
async fn x_takes_over_from_haproxy(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let dir = haproxy_dir();
    let socket = dir.join("lb.sock");
    let config = cfg_exposing(&socket, bind, &a, &b);
    let path = dir.join("lb.cfg");
    std::fs::write(&path, &config).expect("write config");
    let path_text = path.display().to_string();
    let Some(mut haproxy) = HaproxyProcess::spawn(&dir, &["-f", &path_text], "haproxy") else {
        return;
    };
    until_listening(bind, || haproxy.log()).await;
    let sockets = listening_inodes(bind.port());
    assert_eq!(sockets.len(), 1, "HAProxy listens with one socket");
    let traffic = Traffic::start(bind, 4);
    traffic.flows(50).await;
    let (x, pid) = (socket.display().to_string(), haproxy.pid().to_string());
    let lbd = start(&dir, rt, &config, &["-W", "-x", &x, "-sf", &pid], "lb").await;
    lbd.wait_for_log("1 of them TCP listeners", 1).await;
    let status = haproxy.wait_exit().await;
    traffic.flows(100).await;
    let (ok, failed, errors) = traffic.finish().await;
    eprintln!("-x from HAProxy ({rt}): {ok} connections ok, {failed} failed");
    assert_eq!(
        failed,
        0,
        "{ok} ok, {failed} failed: {errors:?}\n{}",
        lbd.log()
    );
    assert!(status.success(), "haproxy: {status}: {}", haproxy.log());
    let now = listening_inodes(bind.port());
    assert!(
        now.is_superset(&sockets) && socket_inodes_of(lbd.pid()).is_superset(&sockets),
        "HAProxy's socket {sockets:?} listens on in lbd ({now:?}): {}",
        lbd.log()
    );
}

/// The other way: HAProxy started with `-x <lbd's stats socket> -sf <lbd's
/// pid>` takes lbd's listening socket (lbd with one worker: HAProxy takes
/// one socket per bind, see README), and lbd finishes without resetting a
/// connection.
async fn haproxy_takes_over_from_lbd_with_x(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let dir = haproxy_dir();
    let socket = dir.join("lb.sock");
    let config = cfg_exposing(&socket, bind, &a, &b);
    if !available(HAPROXY, "haproxy") {
        return;
    }
    let config_path = dir.join("lb.cfg");
    std::fs::write(&config_path, &config).expect("write config");
    let mut cmd = haproxy_cmd(&dir, rt);
    cmd.env("LBD_WORKERS", "1")
        .arg("-W")
        .arg("-f")
        .arg(&config_path);
    let lbd = Lbd::spawn(cmd, config_path.clone(), dir.join("lbd.log")).await;
    let sockets = listening_inodes(bind.port());
    assert_eq!(sockets.len(), 1);
    let traffic = Traffic::start(bind, 4);
    traffic.flows(50).await;
    let path_text = config_path.display().to_string();
    let (x, pid) = (socket.display().to_string(), lbd.pid().to_string());
    let Some(haproxy) =
        HaproxyProcess::spawn(&dir, &["-f", &path_text, "-x", &x, "-sf", &pid], "haproxy")
    else {
        return;
    };
    lbd.wait_for_log("handed 1 listening socket(s) to a new process", 1)
        .await;
    let status = lbd.wait_exit(WAIT).await;
    traffic.flows(100).await;
    let (ok, failed, errors) = traffic.finish().await;
    eprintln!("HAProxy -x from lbd ({rt}): {ok} connections ok, {failed} failed");
    assert_eq!(
        failed,
        0,
        "{ok} ok, {failed} failed: {errors:?}\n{}",
        haproxy.log()
    );
    assert!(status.success(), "lbd: {status}: {}", lbd.log());
    assert_eq!(listening_inodes(bind.port()), sockets, "{}", haproxy.log());
    assert!(socket_inodes_of(haproxy.pid()).is_superset(&sockets));
}

/// Whether `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

on_both_runtimes!(
    usr2_reloads_under_traffic_lose_no_connection,
    ws_notifies_systemd,
    sf_takeover_under_traffic_loses_no_connection,
    x_takeover_under_traffic_loses_no_connection,
    x_takes_over_from_haproxy,
    haproxy_takes_over_from_lbd_with_x,
    x_takeover_keeps_the_tcp_stats_socket,
    daemon_writes_its_pid_and_serves,
);
