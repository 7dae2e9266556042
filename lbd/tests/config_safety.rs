//! A config change can never wipe or break the running lbd: values that
//! would overflow at run time, empty and half-written files, JSON arrays
//! and pushes that would remove the admin server are refused, and the
//! running config stays, while traffic keeps flowing.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::{http_get_once, http_request_once};
use common::*;

fn lbd_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lbd"));
    c.env_remove("RUST_LOG");
    c
}

/// `[admin]` on `admin` (if any) and one listener "web-N" per bind, all on
/// pool "p" holding `backend`.
fn config(admin: Option<SocketAddr>, binds: &[SocketAddr], backend: &Backend) -> String {
    let mut text = String::from("[global]\ndrain_timeout = \"5s\"\n");
    if let Some(admin) = admin {
        text.push_str(&format!("[admin]\nbind = \"{admin}\"\n"));
    }
    for (i, bind) in binds.iter().enumerate() {
        text.push_str(&format!(
            "[[listener]]\nname = \"web-{i}\"\nbind = \"{bind}\"\npool = \"p\"\n"
        ));
    }
    text + "[[pool]]\nname = \"p\"\n" + &member(backend)
}

/// Steady traffic through every bind until stopped: each of `binds` gets a
/// new connection every 20 ms. Returns (answers, failures) when stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Traffic {
    fn start(binds: Vec<SocketAddr>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut answers, mut failures) = (0, Vec::new());
            // Bounded: at most 5 minutes of it.
            for _ in 0..15_000 {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                for bind in &binds {
                    match hit(*bind).await {
                        Ok(tag) if tag == "a" => answers += 1,
                        other => failures.push(format!("{bind}: {other:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (answers, failures)
        });
        Traffic { stop, task }
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("traffic task")
    }
}

#[test]
fn check_config_refuses_overflowing_durations_and_empty_files() {
    let dir = scratch_dir();
    const HUGE: &str = "18446744073709551615s";
    let huge = dir.join("huge.toml");
    std::fs::write(
        &huge,
        format!(
            "[global]\ndrain_timeout = \"{HUGE}\"\n\
             [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\npool = \"p\"\n\
             client_idle = \"{HUGE}\"\nmember_idle = \"{HUGE}\"\nmember_connect = \"{HUGE}\"\n\
             [[pool]]\nname = \"p\"\n[pool.health]\ninterval = \"{HUGE}\"\ntimeout = \"{HUGE}\"\n"
        ),
    )
    .expect("write");
    let out = lbd_cmd()
        .arg("check-config")
        .arg(&huge)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "global: drain_timeout",
        "listener \"web\": client_idle",
        "listener \"web\": member_idle",
        "listener \"web\": member_connect",
        "pool \"p\": health: interval",
        "pool \"p\": health: timeout",
    ] {
        let want = format!("{field} \"{HUGE}\" is too long (at most 30days)");
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }

    for (name, text) in [("empty.toml", ""), ("comments.toml", "# nothing yet\n\n")] {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let out = lbd_cmd()
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}: empty config", path.display())),
            "{stderr}"
        );
    }
}

/// Every duration at its longest (30 days): connections, checks and the
/// shutdown work (the longest values near u64 seconds used to panic the
/// workers, the health thread and the drain).
async fn longest_durations_run_and_stop_cleanly(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let bind = free_addr();
    let text = format!(
        "[global]\ndrain_timeout = \"30days\"\n\
         [[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\
         client_idle = \"30days\"\nmember_idle = \"30days\"\nmember_connect = \"30days\"\n\
         [[pool]]\nname = \"p\"\n[pool.health]\ninterval = \"30days\"\ntimeout = \"30days\"\n{}",
        member(&backend)
    );
    let lbd = Lbd::start(rt, 2, &text).await;
    for _ in 0..4 {
        assert_eq!(hit(bind).await.expect("through lbd"), "a");
    }
    lbd.signal(libc::SIGTERM);
    let status = lbd.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}; log:\n{}", lbd.log());
    assert!(!lbd.log().contains("panicked"), "{}", lbd.log());
}

async fn sighup_with_an_empty_file_keeps_the_running_config(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let binds = [free_addr(), free_addr()];
    let lbd = Lbd::start(rt, 2, &config(None, &binds, &backend)).await;
    let traffic = Traffic::start(binds.to_vec());
    for text in ["", "\n# being written\n"] {
        assert!(!lbd.reload(text).await, "an empty file was applied");
    }
    let log = lbd.log();
    assert_eq!(
        log.matches("reload rejected, the running config stays")
            .count(),
        2,
        "{log}"
    );
    assert!(log.contains("empty config"), "{log}");
    let (answers, failures) = traffic.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answers > 0);
    for bind in binds {
        assert_eq!(hit(bind).await.expect("still served"), "a");
    }
}

/// SIGHUPs while the config file is rewritten the way `cp` does it
/// (truncate, then write in pieces) must never apply a partial file: no
/// reload may remove a listener, and traffic never fails.
async fn sighup_during_a_copy_storm_never_applies_a_partial_file(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let binds = [free_addr(), free_addr()];
    let full = config(None, &binds, &backend);
    let lbd = Lbd::start(rt, 2, &full).await;
    let traffic = Traffic::start(binds.to_vec());

    let storm_over = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (path, full, over, writes) = (
            lbd.config_path.clone(),
            full.clone(),
            Arc::clone(&storm_over),
            Arc::clone(&writes),
        );
        std::thread::spawn(move || {
            use std::io::Write;
            let (head, tail) = full.as_bytes().split_at(full.len() / 2);
            // Bounded: 3 s or 3000 rewrites.
            let end = Instant::now() + Duration::from_secs(3);
            for _ in 0..3000 {
                if Instant::now() > end {
                    break;
                }
                let mut file = std::fs::File::create(&path).expect("truncate");
                file.write_all(head).expect("write head");
                std::thread::sleep(Duration::from_millis(1));
                file.write_all(tail).expect("write tail");
                drop(file);
                writes.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
            over.store(true, Ordering::SeqCst);
        })
    };
    // SIGHUP every 15 ms while the storm lasts (bounded by its 3 s).
    for _ in 0..400 {
        if storm_over.load(Ordering::SeqCst) {
            break;
        }
        lbd.signal(libc::SIGHUP);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    writer.join().expect("writer");
    assert!(
        writes.load(Ordering::SeqCst) > 50,
        "the storm was too small"
    );
    // Let lbd finish the reloads it has started (each may wait up to 3 s
    // for the file to settle), then one more applies the whole file.
    let settled = |log: &str| {
        log.matches("SIGHUP: reloading").count()
            == log.matches("reloaded:").count() + log.matches("reload rejected").count()
    };
    let deadline = Instant::now() + WAIT;
    while !settled(&lbd.log()) {
        assert!(Instant::now() < deadline, "reloads pending:\n{}", lbd.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lbd.reload(&full).await, "{}", lbd.log());

    let (answers, failures) = traffic.stop().await;
    let log = lbd.log();
    let removed = log
        .lines()
        .filter(|l| l.contains("reloaded:") && !l.contains("listeners +0 -0"))
        .collect::<Vec<_>>();
    assert!(
        removed.is_empty(),
        "a partial file was applied: {removed:#?}"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answers > 0);
    for bind in binds {
        assert_eq!(hit(bind).await.expect("still served"), "a");
    }
}

/// `PUT /api/config` of `body` with `content_type`; returns status and body.
async fn push(admin: SocketAddr, content_type: &str, body: &str) -> (u16, String) {
    http_request_once(
        admin,
        "PUT",
        "/api/config",
        &[&format!("Content-Type: {content_type}")],
        body.as_bytes(),
    )
    .await
    .expect("PUT /api/config")
}

async fn api_refuses_empty_array_and_admin_less_configs(rt: &str) {
    let backend = Backend::start("a", Mode::TaggedEcho).await;
    let (admin, bind) = (free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &config(Some(admin), &[bind], &backend)).await;
    let traffic = Traffic::start(vec![bind]);
    let without_admin = serde_json::json!({
        "listener": [{"name": "web-0", "bind": bind.to_string(), "pool": "p"}],
        "pool": [{"name": "p", "member": [{"address": "127.0.0.1", "port": backend.addr.port()}]}],
    })
    .to_string();
    for (content_type, body, want) in [
        ("application/json", "{}", "empty config"),
        ("application/json", "[]", "must be an object"),
        (
            "application/json",
            &format!(r#"[{{"drain_timeout":"7s"}},{{"bind":"{admin}"}}]"#),
            "must be an object",
        ),
        ("application/json", &without_admin, "has no [admin]"),
        ("application/toml", "", "empty config"),
        ("application/toml", "# nothing\n", "empty config"),
    ] {
        let (code, answer) = push(admin, content_type, body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(answer.contains(want), "{body}: {answer}");
    }
    // Everything still runs, the admin API included.
    let (code, running) = http_get_once(admin, "/api/config").await.expect("GET");
    assert_eq!(code, 200);
    assert!(running.contains(&bind.to_string()), "{running}");
    let (answers, failures) = traffic.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answers > 0);
    let (code, metrics) = http_get_once(admin, "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("lbd_reload_failures_total 6"), "{metrics}");
    assert!(metrics.contains("lbd_config_generation 1"), "{metrics}");
    drop(lbd);
}

on_both_runtimes!(
    longest_durations_run_and_stop_cleanly,
    sighup_with_an_empty_file_keeps_the_running_config,
    sighup_during_a_copy_storm_never_applies_a_partial_file,
    api_refuses_empty_array_and_admin_less_configs,
);
