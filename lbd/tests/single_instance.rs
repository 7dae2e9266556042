//! A second `lbd run` never silently shares the first one's addresses: it
//! refuses to start when a listener's address is already listened on, or
//! when another lbd holds its pid file. The first keeps serving meanwhile.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn config(bind: SocketAddr, backend: &Backend) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n{}",
        member(backend)
    )
}

/// Runs `lbd run -c <config> <extra>` to its end, which must come within
/// 10 s (a second lbd that starts would run forever: it is killed, and the
/// output says so).
fn second_run(config: &str, extra: &[&str]) -> Output {
    let path = scratch_dir().join("second.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .env_remove("RUST_LOG")
        .args(["--workers", "1", "run", "-c"])
        .arg(&path)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lbd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

async fn a_second_lbd_on_the_same_addresses_refuses_to_start(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let bind = free_addr();
    let text = config(bind, &backend);
    let first = Lbd::start(rt, 2, &text).await;

    let out = tokio::task::spawn_blocking(move || second_run(&text, &[]))
        .await
        .expect("second run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!(
        "listener \"web\": cannot listen on {bind}: address already in use by another process"
    );
    assert!(stderr.contains(&want), "{stderr}");
    // The cause is said once, not repeated by an error chain.
    assert_eq!(stderr.matches("already in use").count(), 1, "{stderr}");

    // Every connection still reaches the first lbd's member.
    for _ in 0..6 {
        assert_eq!(hit(bind).await.expect("first lbd serves"), "a");
    }
    assert!(first.exited().is_none());
}

async fn a_held_pid_file_refuses_a_second_lbd(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let pid_file = scratch_dir().join("lbd.pid");
    let pid_arg = pid_file.display().to_string();
    let first = Lbd::start_with(rt, 1, &config(free_addr(), &backend), |cmd| {
        cmd.args(["--pid-file", &pid_arg]);
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        first.pid().to_string()
    );

    // Another config on other ports: only the pid file is shared.
    let text = config(free_addr(), &backend);
    let arg = pid_arg.clone();
    let out = tokio::task::spawn_blocking(move || second_run(&text, &["--pid-file", &arg]))
        .await
        .expect("second run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!(
        "another lbd (pid {}) holds the pid file {pid_arg}; refusing to start a second one",
        first.pid()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        first.pid().to_string(),
        "the refused lbd must not touch the pid file"
    );

    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(10)).await.success());
    assert!(!pid_file.exists(), "removed at exit");
}

/// lbd's own listener is not "another process": a reload may move a
/// listener between a specific address and the wildcard of its port.
async fn a_reload_may_move_a_listener_onto_its_ports_wildcard(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let port = free_port();
    let specific = SocketAddr::from(([127, 0, 0, 1], port));
    let wildcard = SocketAddr::from(([0, 0, 0, 0], port));
    let lbd = Lbd::start(rt, 2, &config(specific, &backend)).await;
    assert_eq!(hit(specific).await.expect("serves"), "a");
    assert!(
        lbd.reload(&config(wildcard, &backend)).await,
        "{}",
        lbd.log()
    );
    assert_eq!(hit(specific).await.expect("serves on the wildcard"), "a");
    assert!(
        lbd.reload(&config(specific, &backend)).await,
        "{}",
        lbd.log()
    );
    assert_eq!(hit(specific).await.expect("serves again"), "a");
}

on_both_runtimes!(
    a_reload_may_move_a_listener_onto_its_ports_wildcard,
    a_second_lbd_on_the_same_addresses_refuses_to_start,
    a_held_pid_file_refuses_a_second_lbd,
);
