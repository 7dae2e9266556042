//! No thread of lbd dies silently: a panic is logged, a service thread is
//! restarted, and a dead data-plane worker makes lbd exit non-zero after
//! draining the others. The panics are injected by the debug-build hook
//! `LBD_TEST_PANIC` (compiled out of release builds).

mod common;

use std::time::Duration;

use common::*;

fn config(bind: std::net::SocketAddr, backend: &Backend) -> String {
    format!(
        "[global]\ndrain_timeout = \"2s\"\n\
         [[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\
         [[pool]]\nname = \"p\"\n[pool.health]\ntype = \"tcp\"\ninterval = \"200ms\"\n\
         timeout = \"150ms\"\n{}",
        member(backend)
    )
}

async fn a_panicking_health_thread_is_logged_and_restarted(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let bind = free_addr();
    let lbd = Lbd::start_with(rt, 1, &config(bind, &backend), |cmd| {
        cmd.env("LBD_TEST_PANIC", "health");
    })
    .await;
    lbd.wait_for_log("thread lbd-health panicked at", 1).await;
    lbd.wait_for_log("lbd-health stopped by a panic; restarting it in 1s", 1)
        .await;
    // Checks run again after the restart.
    lbd.wait_for_log(&format!("member p/{} checked: up", backend.addr), 1)
        .await;
    assert_eq!(hit(bind).await.expect("serves"), "a");
    assert!(lbd.exited().is_none());
}

async fn a_panicking_admin_thread_binds_again_and_serves(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let (bind, admin) = (free_addr(), free_addr());
    let text = format!("[admin]\nbind = \"{admin}\"\n{}", config(bind, &backend));
    let lbd = Lbd::start_with(rt, 1, &text, |cmd| {
        cmd.env("LBD_TEST_PANIC", "admin");
    })
    .await;
    lbd.wait_for_log("thread lbd-admin panicked at", 1).await;
    lbd.wait_for_log("lbd-admin stopped by a panic; restarting it in 1s", 1)
        .await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok((200, body)) = common::apiserver::http_get_once(admin, "/healthz").await {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the admin server did not come back:\n{}",
            lbd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hit(bind).await.expect("serves"), "a");
}

async fn a_panicking_worker_stops_lbd_with_an_error(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let bind = free_addr();
    let text = config(bind, &backend);
    let lbd = Lbd::start_with(rt, 2, &text, |cmd| {
        cmd.env("LBD_TEST_PANIC", "worker-reload");
    })
    .await;
    assert_eq!(hit(bind).await.expect("serves"), "a");
    // The next config change makes one worker panic.
    lbd.signal(libc::SIGHUP);
    let status = lbd.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "log:\n{}", lbd.log());
    let log = lbd.log();
    for want in [
        "panicked at",
        "injected panic at worker-reload",
        "stopped by a panic; lbd must stop",
        "a data-plane worker died: draining the others, then exiting with an error",
    ] {
        assert!(log.contains(want), "missing {want:?}:\n{log}");
    }
}

on_both_runtimes!(
    a_panicking_health_thread_is_logged_and_restarted,
    a_panicking_admin_thread_binds_again_and_serves,
    a_panicking_worker_stops_lbd_with_an_error,
);
