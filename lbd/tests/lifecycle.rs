//! Reload, shutdown, the CLI and runtime selection, through the real binary.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

fn one_listener(bind: SocketAddr, members: &[&Backend], extra_global: &str) -> String {
    let mut cfg = format!("{extra_global}\n[[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n");
    for m in members {
        cfg.push_str(&member(m));
    }
    cfg
}

/// Sends a line and expects it echoed back.
async fn echoes(c: &mut tokio::net::TcpStream, msg: &str) -> bool {
    c.write_all(format!("{msg}\n").as_bytes()).await.is_ok()
        && read_line(c).await.ok().as_deref() == Some(msg)
}

async fn reload_under_load_fails_no_connection(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let cfg_a = one_listener(bind, &[&a], "");
    let cfg_b = one_listener(bind, &[&b], "");
    let lbd = Lbd::start(rt, 2, &cfg_a).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            // Bounded: at most 20,000 connections or 60 s.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match hit(bind).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed connection: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    for i in 0..20 {
        let cfg = if i % 2 == 0 { &cfg_b } else { &cfg_a };
        assert!(
            lbd.reload(cfg).await,
            "reload {i} rejected; log:\n{}",
            lbd.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    client.await.expect("client task");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "{failed} connections failed during reloads ({ok} ok)"
    );
    assert!(ok >= 20, "the client made only {ok} connections");
    // The last config (members: a) is the one in force.
    assert_eq!(tally(bind, 10).await.get("a"), Some(&10));
}

async fn rejected_reloads_keep_the_running_config(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let bind = free_addr();
    let lbd = Lbd::start(rt, 1, &one_listener(bind, &[&a], "")).await;

    assert!(!lbd.reload("this is [not toml").await);
    let bad_port =
        one_listener(bind, &[&b], "").replace(&format!("port = {}", b.addr.port()), "port = 70000");
    assert!(!lbd.reload(&bad_port).await);
    assert!(
        lbd.log().contains("member 1: port 70000 out of range"),
        "{}",
        lbd.log()
    );
    // A bind that cannot be opened (held by a socket without SO_REUSEPORT).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let two = one_listener(bind, &[&b], "")
        + &format!("\n[[listener]]\nname = \"x\"\nbind = \"{taken_addr}\"\npool = \"p\"\n");
    assert!(!lbd.reload(&two).await);
    assert!(lbd.log().contains("cannot listen on"), "{}", lbd.log());

    assert_eq!(
        tally(bind, 5).await.get("a"),
        Some(&5),
        "old config must still run"
    );
    assert!(lbd.reload(&one_listener(bind, &[&b], "")).await);
    assert_eq!(tally(bind, 5).await.get("b"), Some(&5));
}

async fn listeners_come_and_go_without_cutting_connections(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let (bind1, bind2, bind3) = (free_addr(), free_addr(), free_addr());
    let listener = |name: &str, bind: SocketAddr, pool: &str| {
        format!("[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\npool = \"{pool}\"\n")
    };
    let before = listener("one", bind1, "p1")
        + &listener("two", bind2, "p2")
        + "[[pool]]\nname = \"p1\"\n"
        + &member(&a)
        + "[[pool]]\nname = \"p2\"\n"
        + &member(&b);
    let lbd = Lbd::start(rt, 2, &before).await;
    let mut via_one = connect_from(bind1, None).await.unwrap();
    assert_eq!(read_line(&mut via_one).await.unwrap(), "a");
    let mut via_two = connect_from(bind2, None).await.unwrap();
    assert_eq!(read_line(&mut via_two).await.unwrap(), "b");

    // Listener "two" goes, "three" comes, member a leaves pool p1 for b.
    let after = listener("one", bind1, "p1")
        + &listener("three", bind3, "p1")
        + "[[pool]]\nname = \"p1\"\n"
        + &member(&b);
    assert!(lbd.reload(&after).await, "{}", lbd.log());

    assert!(
        echoes(&mut via_one, "still here").await,
        "connection to a removed member was cut"
    );
    assert!(
        echoes(&mut via_two, "still here").await,
        "connection on a removed listener was cut"
    );
    let refused = tokio::net::TcpStream::connect(bind2).await;
    assert!(refused.is_err(), "removed listener still accepts");
    assert_eq!(
        hit(bind1).await.unwrap(),
        "b",
        "removed member got a new connection"
    );
    assert_eq!(
        hit(bind3).await.unwrap(),
        "b",
        "new listener does not serve"
    );
}

async fn graceful_shutdown_lets_connections_finish(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let bind = free_addr();
    let lbd = Lbd::start(
        rt,
        2,
        &one_listener(bind, &[&a], "[global]\ndrain_timeout = \"20s\""),
    )
    .await;
    let mut c = connect_from(bind, None).await.unwrap();
    assert_eq!(read_line(&mut c).await.unwrap(), "a");

    lbd.signal(libc::SIGTERM);
    lbd.wait_for_log("draining 1 connection", 1).await;
    assert!(
        tokio::net::TcpStream::connect(bind).await.is_err(),
        "still accepting after SIGTERM"
    );
    assert!(
        echoes(&mut c, "finishing").await,
        "established connection was cut by SIGTERM"
    );
    assert!(
        lbd.exited().is_none(),
        "exited before its connection finished"
    );
    drop(c);
    let status = lbd.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}");
}

async fn drain_timeout_bounds_the_shutdown(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let bind = free_addr();
    let lbd = Lbd::start(
        rt,
        1,
        &one_listener(bind, &[&a], "[global]\ndrain_timeout = \"1s\""),
    )
    .await;
    let mut c = connect_from(bind, None).await.unwrap();
    assert_eq!(read_line(&mut c).await.unwrap(), "a");
    let started = Instant::now();
    lbd.signal(libc::SIGTERM);
    let status = lbd.wait_exit(Duration::from_secs(6)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "did not wait for the drain"
    );
    assert!(lbd.log().contains("drain timeout"), "{}", lbd.log());
}

async fn round_robin_position_survives_reloads(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let c = Backend::start("c", Mode::TaggedEcho).await;
    let bind = free_addr();
    let cfg = one_listener(bind, &[&a, &b, &c], "");
    let lbd = Lbd::start(rt, 1, &cfg).await;
    let mut seen = Vec::new();
    for i in 0..6 {
        seen.push(hit(bind).await.unwrap());
        // The pool is unchanged; only a listener setting moves.
        let changed = cfg.replace(
            "pool = \"p\"\n",
            &format!("pool = \"p\"\nclient_idle = \"{}s\"\n", 50 + i),
        );
        assert!(lbd.reload(&changed).await);
    }
    assert_eq!(
        seen,
        ["a", "b", "c", "a", "b", "c"],
        "round robin restarted on reload"
    );
}

on_both_runtimes!(
    round_robin_position_survives_reloads,
    reload_under_load_fails_no_connection,
    rejected_reloads_keep_the_running_config,
    listeners_come_and_go_without_cutting_connections,
    graceful_shutdown_lets_connections_finish,
    drain_timeout_bounds_the_shutdown,
);

fn lbd_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lbd"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn version_says_whether_the_xdp_fast_path_is_built_in() {
    let out = lbd_cmd().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("lbd 0."), "{text}");
    let want = if lbd_ebpf::built() {
        "(XDP fast path: built in)"
    } else {
        "(XDP fast path: NOT built: clang or libbpf-dev were missing at build time)"
    };
    assert!(text.contains(want), "{text}");
    // scripts/test builds with LBD_EBPF_REQUIRE=1: the programs must be in.
    if std::env::var("LBD_EBPF_REQUIRE").is_ok_and(|v| v == "1") {
        assert!(lbd_ebpf::built(), "{text}");
    }
}

#[test]
fn check_config_prints_every_error_with_its_path() {
    let dir = scratch_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[[listener]]
name = "web"
bind = "0.0.0.0:8080"
pool = "nope"
allowed_cidrs = ["10.0.0.0/33"]

[[pool]]
name = "api"
[[pool.member]]
address = "10.0.0.1"
port = 6443
[[pool.member]]
address = "10.0.0.2"
port = 70000
"#,
    )
    .unwrap();
    let out = lbd_cmd().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = bad.display();
    for want in [
        format!("{file}: listener \"web\": pool \"nope\" does not exist"),
        format!("{file}: listener \"web\": allowed_cidrs[1]: \"10.0.0.0/33\" is not a CIDR"),
        format!("{file}: pool \"api\": member 2: port 70000 out of range (1-65535)"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }

    let unknown = dir.join("unknown.toml");
    std::fs::write(
        &unknown,
        "[[listener]]\nname = \"web\"\nbnd = \"0.0.0.0:1\"\n",
    )
    .unwrap();
    let out = lbd_cmd()
        .arg("check-config")
        .arg(&unknown)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `bnd`"));

    let good = dir.join("good.toml");
    std::fs::write(&good, "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n").unwrap();
    let out = lbd_cmd().arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains(": ok (1 listener(s), 1 pool(s), 0 member(s))"));
}

#[test]
fn run_refuses_an_invalid_config_with_the_errors() {
    let dir = scratch_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"web\"\nbind = \"nowhere\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n",
    )
    .unwrap();
    let out = lbd_cmd().args(["run", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listener \"web\": bind \"nowhere\""));
}

#[tokio::test]
async fn demo_serves_its_three_backends() {
    let bind = free_addr();
    let admin = free_addr();
    let mut child = lbd_cmd()
        .args(["demo", "--workers", "1", "--bind", &bind.to_string()])
        .args(["--admin-bind", &admin.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 3 && Instant::now() < deadline {
        if let Ok(mut c) = connect_from(bind, None).await {
            let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
            let mut body = String::new();
            let _ = tokio::time::timeout(
                WAIT,
                tokio::io::AsyncReadExt::read_to_string(&mut c, &mut body),
            )
            .await;
            if let Some(line) = body
                .lines()
                .find(|l| l.starts_with("hello from demo backend"))
            {
                seen.insert(line.to_owned());
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The demo's stats: three members, checked over HTTP.
    let stats = common::apiserver::http_get_once(admin, "/stats.json").await;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(seen.len(), 3, "demo backends seen: {seen:?}");
    assert!(status.success());
    let (code, body) = stats.expect("demo stats.json");
    assert_eq!(code, 200);
    assert_eq!(
        body.matches("\"address\": \"127.0.0.1:").count(),
        3,
        "{body}"
    );
    assert!(body.contains("\"check_type\": \"http\""), "{body}");
}

/// Installs a seccomp filter in the child that fails `io_uring_setup` with
/// EPERM, as Docker's default profile does.
fn deny_io_uring(cmd: &mut Command) {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let nr = libc::SYS_io_uring_setup as u32;
    let filter = [
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    // SAFETY: only async-signal-safe prctl calls between fork and exec; the
    // filter array outlives them (it is moved into the closure).
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const _,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_epoll_when_io_uring_is_denied() {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let bind = free_addr();
    let cfg = one_listener(bind, &[&a], "");
    let lbd = Lbd::start_with("auto", 1, &cfg, deny_io_uring).await;
    let log = lbd.log();
    assert!(log.contains("io_uring unavailable"), "{log}");
    assert!(log.contains("falling back to the epoll runtime"), "{log}");
    assert!(log.contains("runtime epoll"), "{log}");
    assert_eq!(hit(bind).await.unwrap(), "a");
}

#[tokio::test]
async fn explicit_io_uring_fails_clearly_when_denied() {
    let dir = scratch_dir();
    let cfg = dir.join("lbd.toml");
    std::fs::write(&cfg, one_listener(free_addr(), &[], "")).unwrap();
    let mut cmd = lbd_cmd();
    cmd.args(["--runtime", "io-uring", "run", "-c"]).arg(&cfg);
    deny_io_uring(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("io_uring cannot be set up here"),
        "{stderr}"
    );
}

#[test]
fn example_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = lbd_cmd().arg("check-config").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the example configs in {}",
        dir.display()
    );
}

/// A listener on an address this host does not have (TEST-NET-1; only bound,
/// never sent to): refused with a clear error, unless `freebind` is set.
#[tokio::test]
async fn freebind_allows_a_vip_that_is_not_here_yet() {
    let vip = SocketAddr::from(([192, 0, 2, 10], free_port()));
    let cfg = |freebind: bool| {
        format!("[[listener]]\nname = \"vip\"\nbind = \"{vip}\"\npool = \"p\"\nfreebind = {freebind}\n[[pool]]\nname = \"p\"\n")
    };
    let dir = scratch_dir();
    let path = dir.join("nofreebind.toml");
    std::fs::write(&path, cfg(false)).unwrap();
    let out = lbd_cmd()
        .args(["--runtime", "epoll", "run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("listener \"vip\": cannot listen on {vip}")),
        "{stderr}"
    );

    let lbd = Lbd::start("epoll", 1, &cfg(true)).await;
    assert!(lbd.exited().is_none());
}
