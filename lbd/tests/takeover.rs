//! `lbd run --takeover <stats socket>`: upgrading lbd without dropping a
//! connection, on both runtimes. The new process receives the listening
//! sockets of the running one over its unix stats socket (`_getsocks`,
//! SCM_RIGHTS; `expose_fd_listeners`), serves, then tells the old one to
//! drain (SIGTERM); the old one finishes its open connections and exits.
//!
//! Checked under steady traffic (clients opening new connections all
//! along): 20 chained takeovers, each the process before's successor, with
//! no failed connection; on each, a connection held open on the old
//! process goes on after the takeover and the old process exits once it
//! closes; the listening socket is the same one (by inode) throughout. A
//! takeover whose config cannot load fails and leaves the old process
//! serving.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::traffic::Traffic;
use common::*;
use tokio::io::AsyncWriteExt;

const TAKEOVERS: usize = 20;

fn config(sock: &Path, bind: SocketAddr, m: &Backend) -> String {
    format!(
        "[global]\ndrain_timeout = \"30s\"\n\n\
         [[stats_socket]]\npath = \"{}\"\nlevel = \"admin\"\nexpose_fd_listeners = true\n\n\
         [[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\n{}",
        sock.display(),
        member(m)
    )
}

/// The inode of the socket listening on `bind` in process `pid`.
fn listening_inode(pid: i32, bind: SocketAddr) -> Option<u64> {
    let port = format!(":{:04X}", bind.port());
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1)?.ends_with(&port) && f.get(3) == Some(&"0A")).then(|| f.get(9)?.parse().ok())?
    })?;
    // Held by this process?
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let want = format!("socket:[{inode}]");
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|t| t.to_string_lossy() == want)
        .then_some(inode)
}

async fn takeovers_under_traffic_lose_no_connection(rt: &str) {
    let m = Backend::start("m", Mode::TaggedEcho).await;
    let bind = free_addr();
    let sock = scratch_dir().join("stats.sock");
    let cfg = config(&sock, bind, &m);
    let mut old = Lbd::start(rt, 1, &cfg).await;
    let inode = listening_inode(old.pid(), bind).expect("listening socket");
    let traffic = Traffic::start(bind, 4);
    traffic.flows(20).await;
    for generation in 1..=TAKEOVERS {
        // A connection that the old process serves through the takeover.
        let mut held = connect_from(bind, None).await.expect("connect");
        assert_eq!(read_line(&mut held).await.expect("tag"), "m");
        let new = Lbd::start_with(rt, 1, &cfg, |cmd| {
            cmd.arg("--takeover").arg(&sock);
        })
        .await;
        new.wait_for_log("serving: sent SIGTERM to old process", 1)
            .await;
        traffic.flows(20).await;
        // The held connection still works on the old, draining process.
        held.write_all(b"still here\n").await.expect("write");
        assert_eq!(
            read_line(&mut held).await.expect("echo"),
            "still here",
            "generation {generation}"
        );
        drop(held);
        let status = old.wait_exit(WAIT).await;
        assert!(status.success(), "{status}: {}", old.log());
        assert_eq!(
            listening_inode(new.pid(), bind),
            Some(inode),
            "generation {generation}: not the same listening socket"
        );
        old = new;
    }
    let (ok, failed, errors) = traffic.finish().await;
    assert_eq!(failed, 0, "{ok} ok; failed: {errors:?}");
    assert!(ok > 100, "{ok} connections");
}

/// A successor whose config does not load stops before it serves: the
/// running lbd is not signalled and goes on serving.
async fn a_failed_takeover_leaves_the_old_process_serving(rt: &str) {
    let m = Backend::start("m", Mode::TaggedEcho).await;
    let bind = free_addr();
    let sock = scratch_dir().join("stats.sock");
    let old = Lbd::start(rt, 1, &config(&sock, bind, &m)).await;
    let dir = scratch_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[listener]]\nname = 1\n").expect("write");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"));
    cmd.args(["--runtime", rt, "run", "-c"])
        .arg(&bad)
        .arg("--takeover")
        .arg(&sock);
    let out = common::tools::run_bounded(cmd, WAIT);
    assert!(!out.status.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hit(bind).await.expect("still serving"), "m");
    assert!(!old.log().contains("SIGTERM"), "{}", old.log());
}

on_both_runtimes!(
    takeovers_under_traffic_lose_no_connection,
    a_failed_takeover_leaves_the_old_process_serving,
);
