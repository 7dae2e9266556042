//! lbd under systemd: `configs/systemd/lbd.service` passes `systemd-analyze
//! verify` (with its paths pointed at the built binary), and `lbd run`
//! speaks the notify protocol of `Type=notify` to a `NOTIFY_SOCKET` the
//! test binds (systemd itself cannot run as the service manager here):
//! READY=1 with MAINPID once it serves, RELOADING=1 then READY=1 around a
//! SIGHUP reload while clients keep connecting, STOPPING=1 on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::notify::NotifySocket;
use common::tools::{available, run_bounded};
use common::traffic::Traffic;
use common::*;

const UNIT: &str = include_str!("../../configs/systemd/lbd.service");
const ANALYZE: &str = "/usr/bin/systemd-analyze";

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if !available(ANALYZE, "systemd") {
        return;
    }
    let unit = scratch_dir().join("lbd.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/bin/lbd", env!("CARGO_BIN_EXE_lbd")),
    )
    .expect("write unit");
    let mut cmd = Command::new(ANALYZE);
    cmd.arg("verify").arg(&unit);
    let out = run_bounded(cmd, Duration::from_secs(60));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A key systemd cannot parse is only a warning (exit 0): nothing may
    // be said at all.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=",
    ] {
        assert!(UNIT.contains(line), "the unit lacks {line}");
    }
}

async fn run_notifies_systemd(rt: &str) {
    let m = Backend::start("m", Mode::TaggedEcho).await;
    let bind = free_addr();
    let socket_path = scratch_dir().join("notify.sock");
    let notify = NotifySocket::bind(&socket_path);
    let config = |idle: u32| {
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\
             client_idle = \"{idle}s\"\n\n[[pool]]\nname = \"p\"\n{}",
            member(&m)
        )
    };
    let lbd = Lbd::start_with(rt, 1, &config(30), |cmd| {
        cmd.env("NOTIFY_SOCKET", &socket_path);
    })
    .await;
    let next = || notify.next();
    let ready = tokio::task::block_in_place(next);
    assert_eq!(ready, format!("READY=1\nMAINPID={}", lbd.pid()));

    // Clients keep connecting through the reload.
    let traffic = Traffic::start(bind, 2);
    traffic.flows(20).await;
    assert!(lbd.reload(&config(31)).await, "reload applied");
    assert_eq!(tokio::task::block_in_place(next), "RELOADING=1");
    assert_eq!(tokio::task::block_in_place(next), "READY=1");
    traffic.flows(20).await;
    let (ok, failed, errors) = traffic.finish().await;
    assert_eq!(failed, 0, "{ok} ok, failed: {errors:?}");

    lbd.signal(libc::SIGTERM);
    assert_eq!(tokio::task::block_in_place(next), "STOPPING=1");
    let status = lbd.wait_exit(WAIT).await;
    assert!(status.success(), "{status}: {}", lbd.log());
}

/// Without NOTIFY_SOCKET nothing is sent and lbd runs as before (every
/// other test); a NOTIFY_SOCKET lbd cannot use is an error at start.
#[test]
fn a_bad_notify_socket_fails_the_start() {
    let config = scratch_dir().join("lbd.toml");
    std::fs::write(
        &config,
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n\
         [[pool.member]]\naddress = \"127.0.0.1\"\nport = 9\n",
    )
    .expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbd"));
    cmd.arg("run")
        .arg("-c")
        .arg(&config)
        // Longer than a unix socket address can be.
        .env("NOTIFY_SOCKET", format!("/{}", "x".repeat(200)));
    let out = run_bounded(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("NOTIFY_SOCKET"), "{err}");
}

on_both_runtimes!(run_notifies_systemd);
