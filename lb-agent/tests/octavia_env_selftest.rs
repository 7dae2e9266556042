//! The Octavia test environment works on its own: objects made through the
//! real API go ACTIVE (the stand-in provider), and a heartbeat sent with
//! Octavia's own Python code moves operating statuses and statistics in the
//! real health manager. Skips when scripts/octavia/setup.sh has not run
//! (fails instead with LBD_TEST_REQUIRE_TOOLS).

mod common;

use std::time::{Duration, Instant};

use common::octavia_env::OctaviaEnv;
use serde_json::{json, Value};

const AMPHORA_ID: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const VIP: &str = "127.0.0.50";

/// Polls `GET path` until `check` accepts the body; panics with the last
/// body after 30 s.
async fn eventually(env: &OctaviaEnv, path: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = env.api("GET", path, None).await;
        if code == 200 && check(&body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: GET {path} still {code} {body}\nhealth manager log:\n{}",
            env.log_tail("health-manager", 15)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Member id -> operating status, from the pool's member list.
fn member_statuses(body: &Value) -> Vec<(String, String)> {
    body["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    let field = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                    (field("id"), field("operating_status"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_statuses(body: &Value, want: &[(&str, &str)]) -> bool {
    let got = member_statuses(body);
    want.iter()
        .all(|(id, status)| got.iter().any(|(i, s)| i == id && s == status))
}

fn heartbeat(listener: &str, pool: &str, members: &[(&str, &str)], stats: Value) -> Value {
    let members: serde_json::Map<String, Value> = members
        .iter()
        .map(|(id, status)| (id.to_string(), json!(status)))
        .collect();
    json!({
        "id": AMPHORA_ID,
        "seq": 1,
        "ver": 3,
        "listeners": {listener: {"status": "OPEN", "stats": stats}},
        "pools": {format!("{pool}:{listener}"): {"status": "UP", "members": members}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_octavia_api_provider_and_health_manager() {
    let Some(env) = OctaviaEnv::start() else {
        return;
    };

    // The object tree, through the real API.
    let lb = env.create_lb(VIP).await;
    let (_, lb_body) = env
        .api("GET", &format!("/v2/lbaas/loadbalancers/{lb}"), None)
        .await;
    assert_eq!(lb_body["loadbalancer"]["vip_address"], VIP);
    let listener = env
        .create_listener(&lb, 8080, json!({"name": "tcp-8080"}))
        .await;
    let pool = env.create_pool(&listener, "ROUND_ROBIN", Value::Null).await;
    let mut members = Vec::new();
    for i in 0..4 {
        let address = format!("127.0.0.{}", 11 + i);
        members.push(
            env.create_member(&pool, &address, 9000, json!({"weight": 1}))
                .await,
        );
    }
    let hm_fields = json!({"type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 2,
                           "url_path": "/healthz", "expected_codes": "200"});
    let hm = env.create_healthmonitor(&pool, hm_fields).await;

    // Update one member, delete another: the LB is mutable again each time.
    let path = format!("/v2/lbaas/pools/{pool}/members/{}", members[0]);
    let updated = env
        .change("PUT", &path, Some(json!({"member": {"weight": 7}})), &lb)
        .await;
    assert_eq!(updated["member"]["weight"], 7);
    let path = format!("/v2/lbaas/pools/{pool}/members/{}", members[3]);
    env.change("DELETE", &path, None, &lb).await;
    let members_path = format!("/v2/lbaas/pools/{pool}/members");
    let (_, listed) = env.api("GET", &members_path, None).await;
    assert_eq!(member_statuses(&listed).len(), 3, "{listed}");
    let (_, tree) = env
        .api("GET", &format!("/v2/lbaas/loadbalancers/{lb}/status"), None)
        .await;
    assert_eq!(
        tree["statuses"]["loadbalancer"]["listeners"][0]["pools"][0]["health_monitor"]["id"],
        hm.as_str()
    );

    // An amphora the health manager knows.
    env.register_amphora(AMPHORA_ID, &lb);
    let (code, amps) = env
        .api(
            "GET",
            &format!("/v2/octavia/amphorae?loadbalancer_id={lb}"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{amps}");
    assert_eq!(amps["amphorae"][0]["id"], AMPHORA_ID, "{amps}");

    // Heartbeat 1: statuses and first stats.
    let (m0, m1, m2) = (
        members[0].as_str(),
        members[1].as_str(),
        members[2].as_str(),
    );
    let stats = json!({"tx": 1000, "rx": 2000, "conns": 3, "totconns": 4, "ereq": 0});
    env.send_heartbeat_py(
        AMPHORA_ID,
        &heartbeat(
            &listener,
            &pool,
            &[(m0, "UP"), (m1, "DOWN"), (m2, "UP")],
            stats,
        ),
    );
    let want = [(m0, "ONLINE"), (m1, "ERROR"), (m2, "ONLINE")];
    eventually(
        &env,
        &members_path,
        "member statuses after heartbeat 1",
        |b| has_statuses(b, &want),
    )
    .await;
    let stats_path = format!("/v2/lbaas/listeners/{listener}/stats");
    let expect = json!({"bytes_in": 2000, "bytes_out": 1000, "active_connections": 3,
                        "total_connections": 4, "request_errors": 0});
    eventually(&env, &stats_path, "listener stats after heartbeat 1", |b| {
        b["stats"] == expect
    })
    .await;
    let (_, tree) = env
        .api("GET", &format!("/v2/lbaas/loadbalancers/{lb}/status"), None)
        .await;
    let lb_tree = &tree["statuses"]["loadbalancer"];
    assert_eq!(lb_tree["operating_status"], "DEGRADED", "{tree}");
    assert_eq!(
        lb_tree["listeners"][0]["operating_status"], "ONLINE",
        "{tree}"
    );
    assert_eq!(
        lb_tree["listeners"][0]["pools"][0]["operating_status"], "DEGRADED",
        "{tree}"
    );

    // Heartbeat 2: "no check", and ver 3 stats are deltas (conns is current).
    let stats = json!({"tx": 10, "rx": 20, "conns": 1, "totconns": 1, "ereq": 2});
    env.send_heartbeat_py(
        AMPHORA_ID,
        &heartbeat(
            &listener,
            &pool,
            &[(m0, "UP"), (m1, "DOWN"), (m2, "no check")],
            stats,
        ),
    );
    let want = [(m0, "ONLINE"), (m1, "ERROR"), (m2, "NO_MONITOR")];
    eventually(
        &env,
        &members_path,
        "member statuses after heartbeat 2",
        |b| has_statuses(b, &want),
    )
    .await;
    let expect = json!({"bytes_in": 2020, "bytes_out": 1010, "active_connections": 1,
                        "total_connections": 5, "request_errors": 2});
    eventually(&env, &stats_path, "listener stats after heartbeat 2", |b| {
        b["stats"] == expect
    })
    .await;
    let lb_stats = format!("/v2/lbaas/loadbalancers/{lb}/stats");
    eventually(&env, &lb_stats, "load balancer stats", |b| {
        b["stats"] == expect
    })
    .await;

    // Cascade delete leaves nothing behind.
    env.delete_lb(&lb).await;
    let (_, listeners) = env.api("GET", "/v2/lbaas/listeners", None).await;
    assert_eq!(listeners["listeners"], json!([]), "{listeners}");
}
