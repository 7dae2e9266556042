//! `GET /ready` and `lbd ready` (the keepalived `vrrp_script` of
//! `configs/keepalived/`), on both runtimes, with clients connecting all
//! along (until both pools are emptied): ready while a pool has a usable member; `pools=all` not ready
//! once one listener's pool has none, `any` once none has; not ready while
//! draining (the admin server still answers); `lbd ready` exits 0 or 1
//! accordingly, and 1 when nothing answers. The keepalived example passes
//! keepalived's config test.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::apiserver::http_request_once;
use common::tools::run_bounded;
use common::traffic::Traffic;
use common::*;

fn config(
    admin: SocketAddr,
    web1: SocketAddr,
    web2: SocketAddr,
    a: &Backend,
    b: &Backend,
) -> String {
    format!(
        "[global]\ndrain_timeout = \"30s\"\n\n[admin]\nbind = \"{admin}\"\n\n\
         [[listener]]\nname = \"web1\"\nbind = \"{web1}\"\npool = \"p1\"\n\n\
         [[listener]]\nname = \"web2\"\nbind = \"{web2}\"\npool = \"p2\"\n\n\
         [[pool]]\nname = \"p1\"\n{}\n\n[[pool]]\nname = \"p2\"\n{}",
        member(a),
        member(b)
    )
}

async fn ready(admin: SocketAddr, pools: &str) -> (u16, String) {
    http_request_once(admin, "GET", &format!("/ready?pools={pools}"), &[], b"")
        .await
        .expect("GET /ready")
}

/// `lbd ready`: (exit success, what it printed).
fn probe(admin: SocketAddr, pools: &str) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbd"));
    cmd.args(["ready", "--admin", &admin.to_string(), "--pools", pools]);
    let out = run_bounded(cmd, WAIT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn set_admin(admin: SocketAddr, pool: &str, member: SocketAddr, state: &str) {
    let path = format!("/api/pools/{pool}/members/{member}");
    let body = format!("{{\"admin_state\": \"{state}\"}}");
    let (code, text) = http_request_once(admin, "PUT", &path, &[], body.as_bytes())
        .await
        .expect("PUT");
    assert_eq!(code, 200, "{text}");
}

async fn ready_follows_members_and_draining(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let (admin, web1, web2) = (free_addr(), free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &config(admin, web1, web2, &a, &b)).await;
    let traffic = Traffic::start(web1, 2);
    traffic.flows(10).await;

    assert_eq!(ready(admin, "any").await, (200, "ready\n".to_owned()));
    assert_eq!(ready(admin, "all").await.0, 200);
    let (ok, said) = tokio::task::block_in_place(|| probe(admin, "any"));
    assert!(ok, "{said}");
    assert_eq!(ready(admin, "some").await.0, 400);

    // p2's only member into maint: `all` says so, `any` does not.
    set_admin(admin, "p2", b.addr, "maint").await;
    assert_eq!(ready(admin, "any").await.0, 200);
    let (code, body) = ready(admin, "all").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("web2") && !body.contains("web1"), "{body}");
    let (ok, said) = tokio::task::block_in_place(|| probe(admin, "all"));
    assert!(!ok && said.contains("web2"), "{said}");
    // web1's clients never noticed.
    traffic.flows(10).await;
    let (ok, failed, errors) = traffic.finish().await;
    assert_eq!(failed, 0, "{ok} ok; failed: {errors:?}");

    // And p1's: nothing can be served.
    set_admin(admin, "p1", a.addr, "maint").await;
    let (code, body) = ready(admin, "any").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(ready(admin, "ignore").await.0, 200);
    let (ok, _) = tokio::task::block_in_place(|| probe(admin, "any"));
    assert!(!ok);
    set_admin(admin, "p1", a.addr, "ready").await;
    assert_eq!(ready(admin, "any").await.0, 200);

    // Draining: a held connection keeps lbd draining; /ready says so.
    let mut held = connect_from(web1, None).await.expect("connect");
    assert_eq!(read_line(&mut held).await.expect("tag"), "a");
    lbd.signal(libc::SIGTERM);
    lbd.wait_for_log("SIGTERM", 1).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (code, body) = ready(admin, "ignore").await;
        if code == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, said) = tokio::task::block_in_place(|| probe(admin, "ignore"));
    assert!(!ok && said.contains("draining"), "{said}");
    drop(held);
    let status = lbd.wait_exit(WAIT).await;
    assert!(status.success(), "{status}");
    // Nothing answers any more.
    let (ok, said) = tokio::task::block_in_place(|| probe(admin, "ignore"));
    assert!(!ok && said.contains("no answer"), "{said}");
}

/// `configs/keepalived/keepalived.conf` passes keepalived's own config
/// test (`keepalived -t`; its paths pointed at this build), which fails on
/// an unknown keyword or a bad value.
#[test]
fn the_keepalived_example_passes_keepalived_config_test() {
    if !common::tools::available("/usr/sbin/keepalived", "keepalived") {
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo");
    let text = std::fs::read_to_string(repo.join("configs/keepalived/keepalived.conf"))
        .expect("keepalived.conf");
    let notify = repo.join("configs/keepalived/lbd-notify.sh");
    let conf = scratch_dir().join("keepalived.conf");
    std::fs::write(
        &conf,
        text.replace("/usr/bin/lbd", env!("CARGO_BIN_EXE_lbd"))
            .replace(
                "/etc/keepalived/lbd-notify.sh",
                &notify.display().to_string(),
            ),
    )
    .expect("write");
    let mut cmd = Command::new("/usr/sbin/keepalived");
    cmd.arg("-t").arg("-f").arg(&conf);
    let out = run_bounded(cmd, WAIT);
    assert!(
        out.status.success(),
        "{:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

on_both_runtimes!(ready_follows_members_and_draining);
