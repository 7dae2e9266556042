//! lbd out of file descriptors: its own shortage is not a member's fault.
//! A real lbd process runs with a small open-file limit while more clients
//! connect than it has descriptors for; the healthy member (checked every
//! 200 ms, `fall = 1`) must stay up, failed connects must not be counted
//! against it, and lbd serves again once the clients are gone.

mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::apiserver::http_get_once;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// lbd's open-file limit (soft and hard): enough to start and serve a few
/// dozen connections, far below the clients the test opens.
const NOFILE: u64 = 96;
const CLIENTS: usize = 150;

fn config(bind: std::net::SocketAddr, admin: std::net::SocketAddr, b: &Backend) -> String {
    format!(
        "[admin]\nbind = \"{admin}\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"web\"\n\n\
         [[pool]]\nname = \"web\"\n[pool.health]\ntype = \"tcp\"\ninterval = \"200ms\"\n\
         timeout = \"150ms\"\nfall = 1\nrise = 1\n{}",
        member(b)
    )
}

async fn out_of_descriptors_blames_no_member(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let (bind, admin) = (free_addr(), free_addr());
    let lbd = Lbd::start_with(rt, 1, &config(bind, admin, &backend), |cmd| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .await;
    let label = format!("member web/{}", backend.addr);
    lbd.wait_for_log(&format!("{label} checked: up"), 1).await;

    // Hold many proxied connections open: lbd runs out of descriptors.
    // Clients past the limit are closed by lbd (or wait in the backlog).
    let mut held = Vec::new();
    let (mut served, mut unserved_in_a_row) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..CLIENTS {
        assert!(Instant::now() < deadline, "opening clients took too long");
        let Ok(mut conn) = connect_from(bind, None).await else {
            continue;
        };
        let mut tag = [0u8; 2];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(150), conn.read_exact(&mut tag)).await
        {
            served += 1;
            unserved_in_a_row = 0;
        } else {
            unserved_in_a_row += 1;
        }
        held.push(conn);
        if unserved_in_a_row == 15 {
            break;
        }
    }
    assert!(served < CLIENTS, "the limit was never reached");
    // Checks keep running (every 200 ms) while lbd is out of descriptors.
    // Whatever ran out first, accept, the member connect or a check's
    // connect, lbd says so and blames nobody else.
    let shortage = [
        "out of a local resource",
        "accept failed: Too many open files",
        "not counted: lbd could not open a connection",
    ];
    let deadline = Instant::now() + WAIT;
    while !shortage.iter().any(|line| lbd.log().contains(line)) {
        assert!(
            Instant::now() < deadline,
            "no shortage logged:\n{}",
            lbd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for mut conn in held.drain(..) {
        let _ = conn.shutdown().await;
    }
    drop(held);
    // Serving again: new connections reach the member.
    let deadline = Instant::now() + WAIT;
    loop {
        if hit(bind).await.is_ok_and(|tag| tag == "a") {
            break;
        }
        assert!(Instant::now() < deadline, "lbd does not serve again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let log = lbd.log();
    assert!(!log.contains(&format!("{label} is DOWN")), "{log}");
    assert!(!log.contains("connect failed"), "{log}");
    let (code, body) = http_get_once(admin, "/stats.json").await.expect("stats");
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats.json");
    let listener = &stats["listeners"][0];
    if lbd.log().contains("out of a local resource") {
        assert!(
            listener["local_errors_total"].as_u64().unwrap_or(0) > 0,
            "{listener}"
        );
    }
    let m = &stats["pools"][0]["members"][0];
    assert_eq!(m["connect_errors_total"].as_u64(), Some(0), "{m}");
    assert_eq!(m["down_transitions_total"].as_u64(), Some(0), "{m}");
    assert_eq!(m["status"].as_str(), Some("up"), "{m}");
}

on_both_runtimes!(out_of_descriptors_blames_no_member);
