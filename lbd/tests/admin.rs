//! The admin server of a real lbd process: counters in `/stats.json` and
//! `/metrics` against traffic the test made, `promtool`, a real Prometheus
//! server scraping lbd, the stats page in headless Chromium, the runtime
//! API (drain, maint, weight, whole-config pushes), who may write and
//! who may read (`stats_users`).
//! Loopback only.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::apiserver::{http_get, http_request, http_request_once, ApiServer};
use common::tools::{self, Daemon};
use common::*;
use lbd_test_support::eventually;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[admin]` on `admin`, a listener "web" on `bind` over pool "p".
fn config(admin: &str, bind: SocketAddr, pool_extra: &str, members: &[String]) -> String {
    format!(
        "[admin]\n{admin}\n\n[[listener]]\nname = \"web\"\nbind = \"{bind}\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\n{pool_extra}\n{}",
        members.concat()
    )
}

fn admin_on(addr: SocketAddr) -> String {
    format!("bind = \"{addr}\"")
}

const HTTP_CHECK: &str = "[pool.health]\ntype = \"http\"\npath = \"/readyz\"\n\
                          interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 1\nrise = 1\n";

async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    http_request_once(admin, "GET", path, &[], b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn stats(admin: SocketAddr) -> Value {
    let (code, body) = get(admin, "/stats.json").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("stats.json is JSON")
}

async fn put(admin: SocketAddr, path: &str, headers: &[&str], body: &str) -> (u16, Value) {
    let (code, text) = http_request_once(admin, "PUT", path, headers, body.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The member of pool "p" at `addr` in a stats document.
fn member_stats(stats: &Value, addr: SocketAddr) -> Value {
    stats["pools"][0]["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["address"] == addr.to_string()))
        .cloned()
        .unwrap_or_else(|| panic!("no member {addr} in {stats}"))
}

/// Waits until no client connection is open (counters are final then).
async fn settle(admin: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while stats(admin).await["current_connections"] != 0 {
        assert!(Instant::now() < deadline, "connections never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series in Prometheus text, e.g.
/// `haproxy_frontend_sessions_total{proxy="web"}`.
fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {name_and_labels} in:\n{metrics}"))
}

async fn counters_match_the_traffic(rt: &str) {
    let b = [
        Backend::start("m0", Mode::CountThenReply).await,
        Backend::start("m1", Mode::CountThenReply).await,
    ];
    let (admin, bind) = (free_addr(), free_addr());
    let cfg = config(&admin_on(admin), bind, "", &[member(&b[0]), member(&b[1])]);
    // One worker: round robin then splits the 10 connections exactly 5/5.
    let _lbd = Lbd::start(rt, 1, &cfg).await;

    let (mut sent, mut received) = (0u64, 0u64);
    for i in 1..=10u64 {
        let mut conn = connect_from(bind, None).await.expect("connect");
        let payload = vec![b'x'; (i * 1000) as usize];
        conn.write_all(&payload).await.expect("send");
        conn.shutdown().await.expect("half-close");
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await.expect("reply");
        assert_eq!(reply, format!("got {} bytes\n", payload.len()).as_bytes());
        sent += payload.len() as u64;
        received += reply.len() as u64;
    }
    settle(admin).await;

    let s = stats(admin).await;
    let web = &s["listeners"][0];
    assert_eq!(web["sessions_total"], 10);
    assert_eq!(web["connections_total"], 10);
    assert_eq!(web["bytes_in_total"], sent);
    assert_eq!(web["bytes_out_total"], received);
    assert_eq!(web["current_sessions"], 0);
    assert!(web["max_sessions"].as_u64() >= Some(1));
    let pool = &s["pools"][0];
    assert_eq!(pool["sessions_total"], 10);
    assert_eq!(pool["bytes_in_total"], sent);
    let per_member: Vec<u64> = (0..2)
        .map(|i| {
            member_stats(&s, b[i].addr)["sessions_total"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(per_member, [5, 5]);

    let (code, metrics) = get(admin, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        series(&metrics, "haproxy_frontend_sessions_total{proxy=\"web\"}"),
        10.0
    );
    assert_eq!(
        series(&metrics, "haproxy_frontend_bytes_in_total{proxy=\"web\"}"),
        sent as f64
    );
    assert_eq!(
        series(&metrics, "haproxy_frontend_bytes_out_total{proxy=\"web\"}"),
        received as f64
    );
    assert_eq!(
        series(&metrics, "haproxy_backend_sessions_total{proxy=\"p\"}"),
        10.0
    );
    let server = format!(
        "haproxy_server_sessions_total{{proxy=\"p\",server=\"{}\"}}",
        b[0].addr
    );
    assert_eq!(series(&metrics, &server), per_member[0] as f64);

    let (code, csv) = get(admin, "/stats.csv").await;
    assert_eq!(code, 200);
    let listener_row = csv
        .lines()
        .find(|l| l.starts_with("listener,web,"))
        .expect("row");
    assert!(
        listener_row.contains(&format!(",{sent},{received},")),
        "{listener_row}"
    );
}

async fn promtool_accepts_the_live_metrics(rt: &str) {
    if !tools::available("/usr/bin/promtool", "prometheus") {
        return;
    }
    let up = ApiServer::start("up", false).await;
    let down = ApiServer::start("down", false).await;
    down.set_ready(false);
    let (admin, bind) = (free_addr(), free_addr());
    let members = [
        member_at(up.addr()) + "name = \"api \\\"one\\\"\"\n",
        member_at(down.addr()) + "admin_state = \"drain\"\n",
    ];
    let lbd = Lbd::start(rt, 1, &config(&admin_on(admin), bind, HTTP_CHECK, &members)).await;
    lbd.wait_for_log(&format!("member p/{} is DOWN", down.addr()), 1)
        .await;
    let _ = http_request_once(bind, "GET", "/who", &[], b"").await;

    let (_, metrics) = get(admin, "/metrics").await;
    let dir = scratch_dir();
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &metrics).expect("write metrics");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "/usr/bin/promtool check metrics < {}",
        file.display()
    ));
    let out = tools::run_bounded(cmd, Duration::from_secs(30));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{metrics}"
    );
    let state = format!(
        "haproxy_server_status{{proxy=\"p\",server=\"{}\",state=\"DOWN\"}}",
        down.addr()
    );
    assert_eq!(series(&metrics, &state), 1.0);
}

async fn prometheus_scrapes_lbd(rt: &str) {
    if !tools::available("/usr/bin/prometheus", "prometheus") {
        return;
    }
    let b = Backend::start("m0", Mode::TaggedEcho).await;
    let (admin, bind, prom) = (free_addr(), free_addr(), free_addr());
    let _lbd = Lbd::start(rt, 1, &config(&admin_on(admin), bind, "", &[member(&b)])).await;
    for _ in 0..7 {
        hit(bind).await.expect("through lbd");
    }
    settle(admin).await;

    let dir = scratch_dir();
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: lbd\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .expect("prometheus.yml");
    let mut cmd = Command::new("/usr/bin/prometheus");
    cmd.arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .arg("--log.level=warn");
    let _prometheus = Daemon::spawn(cmd, &dir.join("prometheus.log"));

    let query = "/api/v1/query?query=sum(haproxy_frontend_sessions_total%7Bproxy%3D%22web%22%7D)";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = http_request_once(prom, "GET", query, &[], b"").await {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                assert_eq!(value, "7", "PromQL over what Prometheus scraped: {body}");
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the series; its log:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn stats_page_in_headless_chromium(rt: &str) {
    if !tools::available("/usr/bin/chromium", "chromium") {
        return;
    }
    let s = [
        ApiServer::start("a", false).await,
        ApiServer::start("b", false).await,
        ApiServer::start("c", false).await,
    ];
    s[1].set_ready(false);
    let (admin, bind) = (free_addr(), free_addr());
    let members = [
        member_at(s[0].addr()),
        member_at(s[1].addr()),
        member_at(s[2].addr()) + "admin_state = \"maint\"\n",
    ];
    let lbd = Lbd::start(rt, 1, &config(&admin_on(admin), bind, HTTP_CHECK, &members)).await;
    lbd.wait_for_log(&format!("member p/{} is DOWN", s[1].addr()), 1)
        .await;

    let dir = scratch_dir();
    let url = format!("http://{admin}/");
    let mut dom = tools::chromium(&dir.join("profile"));
    dom.arg("--dump-dom").arg(&url);
    let out = tools::run_bounded(dom, Duration::from_secs(90));
    let dom = String::from_utf8_lossy(&out.stdout);
    for (server, state) in [(&s[0], "up"), (&s[1], "down"), (&s[2], "maint")] {
        let row = format!("data-member=\"{}\" data-state=\"{state}\"", server.addr());
        assert!(dom.contains(&row), "rendered page lacks {row}:\n{dom}");
    }

    // The screenshot is kept as a test artifact.
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let png = artifacts.join(format!("stats-page-{rt}.png"));
    let _ = std::fs::remove_file(&png);
    let mut shot = tools::chromium(&dir.join("profile"));
    shot.arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1280,900")
        .arg(&url);
    tools::run_bounded(shot, Duration::from_secs(90));
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        png.display()
    );
    eprintln!("stats page screenshot: {}", png.display());
}

async fn api_drain_and_maint(rt: &str) {
    let s = [
        ApiServer::start("a", false).await,
        ApiServer::start("b", false).await,
    ];
    let (admin, bind) = (free_addr(), free_addr());
    let members = [member_at(s[0].addr()), member_at(s[1].addr())];
    let lbd = Lbd::start(rt, 1, &config(&admin_on(admin), bind, HTTP_CHECK, &members)).await;
    lbd.wait_for_log(&format!("member p/{} checked: up", s[0].addr()), 1)
        .await;

    // A kept-alive connection on "a".
    let mut kept = None;
    for _ in 0..2 {
        let mut conn = connect_from(bind, None).await.expect("connect");
        if http_get(&mut conn, "/who").await.expect("request").1 == "a\n" {
            kept = Some(conn);
        }
    }
    let mut kept = kept.expect("round robin reached a");
    let path = format!("/api/pools/p/members/{}", s[0].addr());

    let (code, body) = put(admin, &path, &[], r#"{"admin_state": "drain"}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["generation"], 2);
    assert_eq!(
        member_stats(&stats(admin).await, s[0].addr())["status"],
        "drain"
    );
    for _ in 0..6 {
        assert_eq!(who(bind).await, "b");
    }
    assert_eq!(http_get(&mut kept, "/who").await.expect("kept").1, "a\n");
    let checks = s[0].health_answers(200);
    s[0].wait_health_answers(200, checks + 2).await; // drain: still checked

    let (code, _) = put(admin, &path, &[], r#"{"admin_state": "maint"}"#).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let checks = s[0].health_answers(200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        s[0].health_answers(200),
        checks,
        "maint member still checked"
    );
    assert_eq!(http_get(&mut kept, "/who").await.expect("kept").1, "a\n");
    let (_, m) = get(admin, &path).await;
    assert!(m.contains("\"status\": \"maint\""), "{m}");

    let (code, _) = put(
        admin,
        &path,
        &[],
        r#"{"admin_state": "ready", "weight": 3}"#,
    )
    .await;
    assert_eq!(code, 200);
    s[0].wait_health_answers(200, checks + 1).await;
    let (_, config) = get(admin, "/api/config").await;
    assert!(config.contains("\"weight\": 3"), "{config}");
    let tags: Vec<String> = {
        let mut tags = Vec::new();
        for _ in 0..8 {
            tags.push(who(bind).await);
        }
        tags
    };
    assert_eq!(
        tags.iter().filter(|t| *t == "a").count(),
        6,
        "weight 3:1 {tags:?}"
    );

    for (body, status) in [
        (r#"{"admin_state": "off"}"#, 400),
        (r#"{"weight": 300}"#, 400),
        (r#"{"colour": "red"}"#, 400),
    ] {
        assert_eq!(put(admin, &path, &[], body).await.0, status, "{body}");
    }
    assert_eq!(
        put(admin, "/api/pools/p/members/127.0.0.1:1", &[], "{}")
            .await
            .0,
        404
    );
    assert_eq!(
        put(admin, "/api/pools/nope/members/127.0.0.1:1", &[], "{}")
            .await
            .0,
        404
    );
}

async fn who(bind: SocketAddr) -> String {
    let (code, body) = http_request_once(bind, "GET", "/who", &[], b"")
        .await
        .expect("request through lbd");
    assert_eq!(code, 200);
    body.trim().to_owned()
}

async fn config_push_is_validated_and_applied(rt: &str) {
    let b = [
        Backend::start("m0", Mode::TaggedEcho).await,
        Backend::start("m1", Mode::TaggedEcho).await,
    ];
    let (admin, bind, bind2) = (free_addr(), free_addr(), free_addr());
    let lbd = Lbd::start(rt, 1, &config(&admin_on(admin), bind, "", &[member(&b[0])])).await;
    let (_, before) = get(admin, "/api/config").await;

    // Invalid: every problem comes back with its path; nothing changes.
    let bad = r#"{"listener": [{"name": "web", "bind": "nowhere", "pool": "p"}],
                  "pool": [{"name": "p", "member": [{"address": "10.0.0.1", "port": 70000}]}]}"#;
    let (code, body) = put(admin, "/api/config", &[], bad).await;
    assert_eq!(code, 400, "{body}");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        paths,
        ["listener \"web\"", "pool \"p\": member 1"],
        "{body}"
    );
    assert_eq!(
        put(admin, "/api/config", &[], "{\"listener\": 5}").await.0,
        400
    );
    assert_eq!(get(admin, "/api/config").await.1, before);
    assert_eq!(hit(bind).await.expect("still served"), "m0");
    assert_eq!(stats(admin).await["reload_failures_total"], 2);

    // Valid JSON: a second listener and member, applied like a reload.
    let mut file: Value = serde_json::from_str(&before).expect("config JSON");
    file["listener"]
        .as_array_mut()
        .expect("listeners")
        .push(serde_json::json!({"name": "web2", "bind": bind2.to_string(), "pool": "p"}));
    file["pool"][0]["member"]
        .as_array_mut()
        .expect("members")
        .push(serde_json::json!({"address": "127.0.0.1", "port": b[1].addr.port()}));
    let (code, body) = put(admin, "/api/config", &[], &file.to_string()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (
            body["listeners_added"].clone(),
            body["members_added"].clone()
        ),
        (1.into(), 1.into())
    );
    let tags = [
        hit(bind2).await.expect("web2"),
        hit(bind2).await.expect("web2"),
    ];
    assert!(tags.contains(&"m1".to_owned()), "{tags:?}");

    // TOML works too.
    let toml = config(&admin_on(admin), bind, "", &[member(&b[1])]);
    let (code, body) = put(
        admin,
        "/api/config",
        &["Content-Type: application/toml"],
        &toml,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(hit(bind).await.expect("web"), "m1");
    let gone = connect_from(bind2, None).await;
    assert!(gone.is_err(), "web2 was removed but still accepts");
    lbd.wait_for_log("admin API PUT /api/config: applied", 2)
        .await;
}

async fn writes_need_a_local_bind_or_the_token(rt: &str) {
    let b = Backend::start("m0", Mode::TaggedEcho).await;
    let (port, stats_port, bind) = (free_port(), free_port(), free_addr());
    let open_admin = format!("bind = \"0.0.0.0:{port}\"\nstats_bind = \"0.0.0.0:{stats_port}\"");
    let lbd = Lbd::start(rt, 1, &config(&open_admin, bind, "", &[member(&b)])).await;
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    let stats_only = SocketAddr::from(([127, 0, 0, 1], stats_port));
    let path = format!("/api/pools/p/members/{}", b.addr);

    assert_eq!(get(admin, "/api/config").await.0, 200, "reads are allowed");
    let (code, body) = put(admin, &path, &[], r#"{"admin_state": "drain"}"#).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(get(stats_only, "/").await.0, 200);
    assert_eq!(get(stats_only, "/metrics").await.0, 200);
    assert_eq!(get(stats_only, "/api/config").await.0, 403);

    // With a token file: the token is required, whatever the bind.
    let token = scratch_dir().join("token");
    std::fs::write(&token, "s3cret-token\n").expect("token");
    let with_token = format!("{open_admin}\ntoken_file = \"{}\"", token.display());
    assert!(
        lbd.reload(&config(&with_token, bind, "", &[member(&b)]))
            .await
    );
    lbd.wait_for_log("writes need the bearer token", 1).await;
    let drain = r#"{"admin_state": "drain"}"#;
    assert_eq!(put(admin, &path, &[], drain).await.0, 401);
    assert_eq!(
        put(admin, &path, &["Authorization: Bearer wrong"], drain)
            .await
            .0,
        401
    );
    let (code, body) = put(admin, &path, &["Authorization: Bearer s3cret-token"], drain).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        member_stats(&stats(admin).await, b.addr)["admin_state"],
        "drain"
    );
}

/// `stats_users`/`stats_realm`: the read-only pages on both listeners
/// answer 401 with the realm's challenge without credentials or with a
/// wrong password, 200 with any configured user; `/healthz` stays open;
/// writes keep their own bearer-token rule. A reload removing the users
/// opens the pages again.
async fn stats_pages_need_basic_auth(rt: &str) {
    let b = Backend::start("m0", Mode::TaggedEcho).await;
    let (admin, stats_only, bind) = (free_addr(), free_addr(), free_addr());
    let base = format!("bind = \"{admin}\"\nstats_bind = \"{stats_only}\"");
    let with_auth = format!(
        "{base}\nstats_users = [\"admin:s3cret\", \"ops:p:w\"]\nstats_realm = \"lbd test\""
    );
    let lbd = Lbd::start(rt, 1, &config(&with_auth, bind, "", &[member(&b)])).await;
    lbd.wait_for_log("reads need basic auth (2 user(s))", 1)
        .await;
    // Steady traffic goes on meanwhile.
    let _ = hit(bind).await.expect("traffic");
    let basic = |cred: &str| format!("Authorization: Basic {}", base64_of(cred.as_bytes()));
    let (good, other, wrong) = (
        basic("admin:s3cret"),
        basic("ops:p:w"),
        basic("admin:s3creT"),
    );
    for addr in [admin, stats_only] {
        for path in ["/", "/stats.csv", "/stats.json", "/metrics"] {
            for (headers, want) in [
                (vec![], 401),
                (vec![wrong.as_str()], 401),
                (vec!["Authorization: Bearer s3cret"], 401),
                (vec![good.as_str()], 200),
                (vec![other.as_str()], 200),
            ] {
                let (code, head) = http_head_of(addr, path, &headers)
                    .await
                    .unwrap_or_else(|e| panic!("{addr}{path}: {e}"));
                assert_eq!(code, want, "{addr}{path} {headers:?}:\n{head}");
                let challenge = header_of(&head, "www-authenticate");
                if want == 401 {
                    assert_eq!(
                        challenge.as_deref(),
                        Some("Basic realm=\"lbd test\""),
                        "{head}"
                    );
                } else {
                    assert_eq!(challenge, None, "{head}");
                }
            }
        }
        assert_eq!(
            http_head_of(addr, "/healthz", &[])
                .await
                .expect("healthz")
                .0,
            200
        );
    }
    // The API's reads show the config (passwords included): protected too.
    assert_eq!(
        http_head_of(admin, "/api/config", &[])
            .await
            .expect("get")
            .0,
        401
    );
    let (code, body) = http_request_once(admin, "GET", "/api/config", &[good.as_str()], b"")
        .await
        .expect("get");
    assert_eq!(code, 200, "{body}");
    // Writes: the loopback bind allows them without a token, as before.
    let path = format!("/api/pools/p/members/{}", b.addr);
    let (code, body) = put(admin, &path, &[], r#"{"weight": 2}"#).await;
    assert_eq!(code, 200, "{body}");
    // The users removed: open again.
    assert!(lbd.reload(&config(&base, bind, "", &[member(&b)])).await);
    lbd.wait_for_log("reads open", 1).await;
    assert_eq!(
        http_head_of(stats_only, "/", &[]).await.expect("get").0,
        200
    );
    let _ = hit(bind).await.expect("traffic");
    assert!(
        !lbd.log().contains("s3cret"),
        "a password in the log:\n{}",
        lbd.log()
    );
}

/// Standard base64 with padding.
fn base64_of(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn admin_over_a_unix_socket(rt: &str) {
    let b = Backend::start("m0", Mode::TaggedEcho).await;
    let sock = scratch_dir().join("admin.sock");
    let bind = free_addr();
    let admin = format!("bind = \"unix:{}\"", sock.display());
    let _lbd = Lbd::start(rt, 1, &config(&admin, bind, "", &[member(&b)])).await;
    let mut conn = tokio::net::UnixStream::connect(&sock)
        .await
        .expect("unix admin");
    let (code, body) = http_request(&mut conn, "GET", "/healthz", &[], b"")
        .await
        .expect("healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let path = format!("/api/pools/p/members/{}", b.addr);
    let (code, body) = http_request(&mut conn, "PUT", &path, &[], br#"{"admin_state": "maint"}"#)
        .await
        .expect("put");
    assert_eq!(code, 200, "unix sockets are local: {body}");
}

/// The unix admin socket's file goes when lbd stops serving it: after a
/// reload that moves it, and at shutdown, once the drain is over. A socket
/// someone else put at the path stays.
async fn the_unix_admin_socket_is_removed_when_no_longer_served(rt: &str) {
    let b = Backend::start("m0", Mode::TaggedEcho).await;
    let dir = scratch_dir();
    let (first, second) = (dir.join("first.sock"), dir.join("second.sock"));
    let bind = free_addr();
    let at = |sock: &std::path::Path| {
        config(
            &format!("bind = \"unix:{}\"", sock.display()),
            bind,
            "",
            &[member(&b)],
        )
    };
    let lbd = Lbd::start(rt, 1, &at(&first)).await;
    assert!(first.exists(), "bound at start");
    // Traffic goes on through the move and until the shutdown.
    let traffic = tokio::spawn(async move {
        let mut served = 0u32;
        for _ in 0..400 {
            if hit(bind).await.is_ok() {
                served += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        served
    });

    assert!(lbd.reload(&at(&second)).await, "moved: {}", lbd.log());
    eventually("the old socket file removed", || async { !first.exists() }).await;
    assert!(second.exists());
    let mut conn = tokio::net::UnixStream::connect(&second)
        .await
        .expect("the new socket serves");
    let (code, _) = http_request(&mut conn, "GET", "/healthz", &[], b"")
        .await
        .expect("healthz");
    assert_eq!(code, 200);
    drop(conn);

    // Back to the first path, then someone else takes it over: that
    // socket is not lbd's to remove.
    assert!(lbd.reload(&at(&first)).await, "moved back: {}", lbd.log());
    eventually("the second socket file removed", || async {
        !second.exists()
    })
    .await;
    std::fs::remove_file(&first).expect("remove lbd's socket file");
    let _theirs = std::os::unix::net::UnixListener::bind(&first).expect("another socket");

    let served = traffic.await.expect("traffic task");
    assert!(served >= 350, "only {served} of 400 connections served");
    lbd.signal(libc::SIGTERM);
    assert!(lbd.wait_exit(WAIT).await.success(), "{}", lbd.log());
    assert!(first.exists(), "a socket lbd did not create stays");
    let log = lbd.log();
    for stopped in ["lbd-admin stopped", "lbd-health stopped", "lbd-xdp stopped"] {
        assert!(log.contains(stopped), "{stopped:?} not logged:\n{log}");
    }

    // Shutdown removes lbd's own socket.
    let third = dir.join("third.sock");
    let lbd = Lbd::start(rt, 1, &at(&third)).await;
    assert!(third.exists());
    lbd.signal(libc::SIGTERM);
    assert!(lbd.wait_exit(WAIT).await.success(), "{}", lbd.log());
    assert!(!third.exists(), "removed at shutdown:\n{}", lbd.log());
}

async fn admin_over_https(rt: &str) {
    let b = Backend::start("m0", Mode::TaggedEcho).await;
    let (cert, key) = common::apiserver::self_signed_pem_files();
    let (admin, bind) = (free_addr(), free_addr());
    let tls = format!(
        "{}\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        admin_on(admin),
        cert.display(),
        key.display()
    );
    let lbd = Lbd::start(rt, 1, &config(&tls, bind, "", &[member(&b)])).await;
    lbd.wait_for_log(&format!("admin server on https://{admin}"), 1)
        .await;
    let mut conn = common::apiserver::tls_connect(admin, &cert, "localhost", None)
        .await
        .expect("TLS to the admin server");
    let (code, body) = http_get(&mut conn, "/stats.json")
        .await
        .expect("stats over TLS");
    assert_eq!(code, 200);
    assert!(body.contains("\"listeners\""), "{body}");
    // Plain HTTP to the TLS port gets no answer.
    assert!(http_request_once(admin, "GET", "/healthz", &[], b"")
        .await
        .is_err());
}

on_both_runtimes!(counters_match_the_traffic, api_drain_and_maint);

// The rest does not depend on the data-plane runtime: io_uring only.
mod io_uring_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn promtool_accepts_the_live_metrics() {
        super::promtool_accepts_the_live_metrics("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prometheus_scrapes_lbd() {
        super::prometheus_scrapes_lbd("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_page_in_headless_chromium() {
        super::stats_page_in_headless_chromium("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn config_push_is_validated_and_applied() {
        super::config_push_is_validated_and_applied("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_need_a_local_bind_or_the_token() {
        super::writes_need_a_local_bind_or_the_token("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_pages_need_basic_auth() {
        super::stats_pages_need_basic_auth("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_over_https() {
        super::admin_over_https("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_over_a_unix_socket() {
        super::admin_over_a_unix_socket("io-uring").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_unix_admin_socket_is_removed_when_no_longer_served() {
        super::the_unix_admin_socket_is_removed_when_no_longer_served("io-uring").await
    }
}
