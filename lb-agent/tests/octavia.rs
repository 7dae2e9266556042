//! `lb-agent octavia` end to end against a real Octavia 19 (API, driver
//! agent, health manager; `common/octavia_env.rs`), a real lbd, and
//! members that are TCP servers on 127.0.0.x. Keystone is the local fake
//! `lbd_test_support::fake_keystone` (a real Keystone cannot run here),
//! guarding the real Octavia API. Loopback only; every wait is bounded.
//!
//! The tests take turns (one Octavia at a time on a 2-core machine).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::cluster::{self, eventually, start_agent, Lbd, Process};
use common::octavia_env::OctaviaEnv;
use lbd_test_support::fake_keystone::{FakeKeystone, Options as KeystoneOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

static ONE_OCTAVIA_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A member: answers every connection with `tag\n`, then echoes until the
/// client closes.
struct Member {
    tag: String,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Member {
    async fn start(tag: &str, ip: [u8; 4], port: u16) -> Member {
        let addr = SocketAddr::from((ip, port));
        let listener = TcpListener::bind(addr).await.expect("bind member");
        let line = format!("{tag}\n");
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let line = line.clone();
                tokio::spawn(async move {
                    if conn.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Member {
            tag: tag.to_owned(),
            addr,
            task,
        }
    }

    /// Stops accepting (new connections are refused).
    fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client connection through lbd that stays open.
struct Client {
    tag: String,
    reader: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Option<Client> {
        let attempt = async {
            let conn = TcpStream::connect(addr).await.ok()?;
            let mut reader = BufReader::new(conn);
            let mut tag = String::new();
            reader.read_line(&mut tag).await.ok()?;
            let tag = tag.trim().to_owned();
            (!tag.is_empty()).then_some(Client { tag, reader })
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
    }

    /// Sends `n` bytes and reads them back; false if the connection broke.
    async fn echo(&mut self, n: usize) -> bool {
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let exchange = async {
            let (r, w) = self.reader.get_mut().split();
            let mut r = r;
            let mut w = w;
            let write = async {
                w.write_all(&data).await?;
                Ok::<_, std::io::Error>(())
            };
            let mut back = vec![0u8; n];
            let read = r.read_exact(&mut back);
            let (wrote, read) = tokio::join!(write, read);
            wrote.is_ok() && read.is_ok() && back == data
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .unwrap_or(false)
    }
}

/// The members answering `n` new connections to `addr`, in order.
async fn tags(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        if let Some(client) = Client::connect(addr).await {
            seen.push(client.tag);
        }
    }
    seen
}

/// Waits until new connections to `addr` reach exactly `expected` (a set).
async fn wait_served_by(addr: SocketAddr, expected: &[&str], agent: &Process) {
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    let what = format!(
        "{addr} served by {want:?}; agent log:\n{}",
        agent.log_text()
    );
    eventually(&what, || async {
        let mut seen = tags(addr, 2 * expected.len().max(1)).await;
        seen.sort();
        seen.dedup();
        seen == want
    })
    .await;
}

/// Octavia, lbd, and a load balancer with one TCP listener, a round-robin
/// pool and three members on 127.0.0.2x.
struct Setup {
    env: OctaviaEnv,
    lbd: Lbd,
    lb: String,
    listener: String,
    pool: String,
    vip: SocketAddr,
    members: Vec<Member>,
    member_ids: Vec<String>,
}

impl Setup {
    async fn start(vip_last: u8, pool_extra: Value) -> Option<Setup> {
        let env = tokio::task::spawn_blocking(OctaviaEnv::start)
            .await
            .expect("start octavia")?;
        let lbd = Lbd::start().await;
        let vip_ip = IpAddr::from([127, 0, 0, vip_last]);
        let lb = env.create_lb(&vip_ip.to_string()).await;
        let port = cluster::free_port();
        let listener = env.create_listener(&lb, port, json!({})).await;
        let pool = env.create_pool(&listener, "ROUND_ROBIN", pool_extra).await;
        let member_port = cluster::free_port();
        let mut members = Vec::new();
        let mut member_ids = Vec::new();
        for (i, tag) in ["m1", "m2", "m3"].iter().enumerate() {
            let ip = [127, 0, 0, vip_last + 1 + i as u8];
            members.push(Member::start(tag, ip, member_port).await);
            let address = IpAddr::from(ip).to_string();
            member_ids.push(
                env.create_member(&pool, &address, member_port, json!({"name": tag}))
                    .await,
            );
        }
        Some(Setup {
            env,
            lbd,
            lb,
            listener,
            pool,
            vip: SocketAddr::new(vip_ip, port),
            members,
            member_ids,
        })
    }

    /// lb-agent following the load balancer, polling every 200 ms.
    fn agent(&self, extra: &[&str]) -> Process {
        let url = self.lbd.url();
        let mut args = vec![
            "octavia",
            "--loadbalancer-id",
            &self.lb,
            "--lbd-url",
            &url,
            "--poll",
            "200ms",
        ];
        args.extend_from_slice(extra);
        start_agent(&args)
    }

    /// lb-agent with Octavia's noauth.
    fn noauth_agent(&self, extra: &[&str]) -> Process {
        let mut args = vec!["--auth", "noauth", "--octavia-url", self.env.api_url()];
        args.extend_from_slice(extra);
        self.agent(&args)
    }

    /// lb-agent with noauth that also sends heartbeats, every second, as
    /// amphora `amphora` (registered in Octavia's DB for the LB).
    fn heartbeat_agent(&self, amphora: &str) -> Process {
        self.env.register_amphora(amphora, &self.lb);
        let key_file = cluster::scratch_dir().join("heartbeat.key");
        std::fs::write(&key_file, self.env.heartbeat_key()).expect("key file");
        let hm = self.env.health_manager().to_string();
        self.noauth_agent(&[
            "--amphora-id",
            amphora,
            "--health-manager",
            &hm,
            "--heartbeat-key-file",
            key_file.to_str().expect("utf-8"),
            "--heartbeat-interval",
            "1s",
        ])
    }

    fn member_path(&self, i: usize) -> String {
        format!(
            "/v2/lbaas/pools/{}/members/{}",
            self.pool, self.member_ids[i]
        )
    }

    async fn update_member(&self, i: usize, fields: Value) {
        let path = self.member_path(i);
        self.env
            .change("PUT", &path, Some(json!({ "member": fields })), &self.lb)
            .await;
    }

    /// The operating status of every member (by name) in the status tree.
    async fn member_statuses(&self) -> Vec<(String, String)> {
        let (code, tree) = self
            .env
            .api(
                "GET",
                &format!("/v2/lbaas/loadbalancers/{}/status", self.lb),
                None,
            )
            .await;
        assert_eq!(code, 200, "{tree}");
        let mut statuses = Vec::new();
        for listener in tree["statuses"]["loadbalancer"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for pool in listener["pools"].as_array().into_iter().flatten() {
                for m in pool["members"].as_array().into_iter().flatten() {
                    statuses.push((
                        m["name"].as_str().unwrap_or_default().to_owned(),
                        m["operating_status"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ));
                }
            }
        }
        statuses.sort();
        statuses
    }
}

async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_OCTAVIA_AT_A_TIME.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_load_balancer_and_follows_member_changes_without_dropping_connections() {
    let _turn = turn().await;
    let Some(s) = Setup::start(20, json!({})).await else {
        return;
    };
    let agent = s.noauth_agent(&[]);
    wait_served_by(s.vip, &["m1", "m2", "m3"], &agent).await;

    // Round robin: new connections go to each member in turn.
    let seen = tags(s.vip, 6).await;
    assert_eq!(seen.len(), 6, "{seen:?}");
    let mut first: Vec<&String> = seen[..3].iter().collect();
    first.sort();
    first.dedup();
    assert_eq!(first.len(), 3, "one connection each: {seen:?}");
    assert_eq!(seen[..3], seen[3..], "the same order again: {seen:?}");

    // A connection that stays open through every change below, on the
    // member deleted last.
    let mut kept = Client::connect(s.vip).await.expect("client connection");
    assert!(kept.echo(1000).await);
    let kept_i = s
        .members
        .iter()
        .position(|m| m.tag == kept.tag)
        .expect("a known member");
    let others: Vec<usize> = (0..3).filter(|i| *i != kept_i).collect();
    let tag = |i: usize| s.members[i].tag.as_str();

    // Weight 0: no new connections.
    s.update_member(others[0], json!({"weight": 0})).await;
    wait_served_by(s.vip, &[tag(kept_i), tag(others[1])], &agent).await;
    assert!(kept.echo(1000).await, "after a weight change");

    // admin_state_up false: none either.
    s.update_member(others[1], json!({"admin_state_up": false}))
        .await;
    wait_served_by(s.vip, &[tag(kept_i)], &agent).await;
    assert!(kept.echo(1000).await, "after disabling a member");

    // A new member.
    let m4_ip = [127, 0, 0, 24];
    let m4 = Member::start("m4", m4_ip, s.members[0].addr.port()).await;
    s.env
        .create_member(
            &s.pool,
            &IpAddr::from(m4_ip).to_string(),
            m4.addr.port(),
            json!({"name": "m4"}),
        )
        .await;
    wait_served_by(s.vip, &[tag(kept_i), "m4"], &agent).await;
    assert!(kept.echo(1000).await, "after adding a member");

    // Deleting the kept connection's member: no new connections to it, and
    // the established one goes on.
    s.env
        .change("DELETE", &s.member_path(kept_i), None, &s.lb)
        .await;
    wait_served_by(s.vip, &["m4"], &agent).await;
    assert!(kept.echo(100_000).await, "after deleting its member");

    // A disabled listener is not served; enabled again, it is.
    let listener_path = format!("/v2/lbaas/listeners/{}", s.listener);
    let disable = json!({"listener": {"admin_state_up": false}});
    s.env
        .change("PUT", &listener_path, Some(disable), &s.lb)
        .await;
    eventually("the disabled listener refuses connections", || async {
        TcpStream::connect(s.vip).await.is_err()
    })
    .await;
    assert!(kept.echo(1000).await, "after disabling its listener");
    let enable = json!({"listener": {"admin_state_up": true}});
    s.env
        .change("PUT", &listener_path, Some(enable), &s.lb)
        .await;
    wait_served_by(s.vip, &["m4"], &agent).await;
    assert!(
        !agent.log_text().contains("ERROR"),
        "agent log:\n{}",
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_show_member_health_and_listener_stats_in_octavia() {
    let _turn = turn().await;
    let Some(s) = Setup::start(30, json!({})).await else {
        return;
    };
    s.env
        .create_healthmonitor(
            &s.pool,
            json!({"type": "TCP", "delay": 1, "timeout": 1, "max_retries": 1,
                   "max_retries_down": 1}),
        )
        .await;
    // A listener lbd cannot serve: reported, and not served.
    let sctp_port = cluster::free_port();
    let sctp = s
        .env
        .create_listener(&s.lb, sctp_port, json!({"protocol": "SCTP"}))
        .await;
    let agent = s.heartbeat_agent("aaaaaaaa-0000-4000-8000-000000000030");
    wait_served_by(s.vip, &["m1", "m2", "m3"], &agent).await;
    agent.wait_for_log(&format!("listener {sctp}")).await;
    assert!(agent.log_text().contains("protocol SCTP is not supported"));

    // Every member ONLINE once the checks ran and a heartbeat went out.
    let all_online: Vec<(String, String)> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| (m.to_string(), "ONLINE".to_owned()))
        .collect();
    eventually("every member ONLINE in Octavia", || async {
        s.member_statuses().await == all_online
    })
    .await;

    // Traffic: 100 kB each way on one connection.
    let mut client = Client::connect(s.vip).await.expect("client");
    assert!(client.echo(100_000).await);
    drop(client);

    // A member dies: ERROR in Octavia, the others stay ONLINE.
    s.members[1].kill();
    let expected = vec![
        ("m1".to_owned(), "ONLINE".to_owned()),
        ("m2".to_owned(), "ERROR".to_owned()),
        ("m3".to_owned(), "ONLINE".to_owned()),
    ];
    let mut last = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        last = s.member_statuses().await;
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, expected, "agent log:\n{}", agent.log_text());

    // The listener's stats in Octavia count that traffic, and never more
    // than lbd counted.
    let stats_path = format!("/v2/lbaas/listeners/{}/stats", s.listener);
    let lbd_totals = || async {
        let (code, body) = lb_stats_json(&s.lbd).await;
        assert_eq!(code, 200);
        let listener = body["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == format!("octavia:{}", s.listener))
            .cloned()
            .expect("lbd serves the listener");
        (
            listener["bytes_in_total"].as_u64().unwrap_or(0),
            listener["bytes_out_total"].as_u64().unwrap_or(0),
        )
    };
    eventually("listener stats in Octavia", || async {
        let (code, stats) = s.env.api("GET", &stats_path, None).await;
        let (bytes_in, bytes_out) = (
            stats["stats"]["bytes_in"].as_u64().unwrap_or(0),
            stats["stats"]["bytes_out"].as_u64().unwrap_or(0),
        );
        let (lbd_in, lbd_out) = lbd_totals().await;
        assert!(
            bytes_in <= lbd_in && bytes_out <= lbd_out,
            "Octavia {stats} vs lbd in {lbd_in} out {lbd_out}"
        );
        code == 200
            && bytes_in >= 100_000
            && bytes_out >= 100_000
            && stats["stats"]["total_connections"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    // The SCTP listener never shows ONLINE, and the health manager counted
    // every listener (no "reports 1 listeners when 2 expected").
    let (_, sctp_listener) = s
        .env
        .api("GET", &format!("/v2/lbaas/listeners/{sctp}"), None)
        .await;
    assert_ne!(sctp_listener["listener"]["operating_status"], "ONLINE");
    let hm_log = s.env.log_tail("health-manager", 400);
    assert!(!hm_log.contains("listeners when"), "{hm_log}");
}

/// A UDP member: answers every datagram with its tag.
fn udp_member(tag: &'static str, socket: tokio::net::UdpSocket) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(tag.as_bytes(), from).await;
        }
    })
}

/// The tag that answers one datagram to `to` from a new socket (a new
/// flow), if any within a second.
async fn udp_tag(to: SocketAddr) -> Option<String> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    socket.send_to(b"q", to).await.ok()?;
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// An Octavia UDP listener (served by lbd's UDP proxy) with a UDP pool and
/// a UDP-CONNECT monitor: datagrams through the VIP reach both members,
/// both go ONLINE through heartbeats, and a member that stops (ICMP port
/// unreachable) turns ERROR while the other stays ONLINE and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_listener_with_a_udp_connect_monitor_in_octavia() {
    let _turn = turn().await;
    let Some(s) = Setup::start(40, json!({})).await else {
        return;
    };
    let udp_port = cluster::free_port();
    let listener = s
        .env
        .create_listener(&s.lb, udp_port, json!({"protocol": "UDP"}))
        .await;
    let pool = s
        .env
        .create_pool(&listener, "ROUND_ROBIN", json!({"protocol": "UDP"}))
        .await;
    let member_port = cluster::free_port();
    let mut members = Vec::new();
    for (tag, last) in [("u1", 44u8), ("u2", 45u8)] {
        let addr = SocketAddr::from(([127, 0, 0, last], member_port));
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .expect("bind udp member");
        members.push(udp_member(tag, socket));
        s.env
            .create_member(
                &pool,
                &addr.ip().to_string(),
                member_port,
                json!({"name": tag}),
            )
            .await;
    }
    s.env
        .create_healthmonitor(
            &pool,
            // Octavia wants a UDP-CONNECT delay above 3 s.
            json!({"type": "UDP-CONNECT", "delay": 4, "timeout": 1, "max_retries": 1,
                   "max_retries_down": 1}),
        )
        .await;
    let agent = s.heartbeat_agent("aaaaaaaa-0000-4000-8000-000000000040");
    let vip = SocketAddr::new(s.vip.ip(), udp_port);
    eventually(
        &format!(
            "datagrams to {vip} answered by u1 and u2; agent log:\n{}",
            agent.log_text()
        ),
        || async {
            let mut seen = Vec::new();
            for _ in 0..4 {
                if let Some(tag) = udp_tag(vip).await {
                    seen.push(tag);
                }
            }
            seen.sort();
            seen.dedup();
            seen == ["u1", "u2"]
        },
    )
    .await;
    let udp_statuses = || async {
        s.member_statuses()
            .await
            .into_iter()
            .filter(|(name, _)| name.starts_with('u'))
            .collect::<Vec<_>>()
    };
    let online = vec![
        ("u1".to_owned(), "ONLINE".to_owned()),
        ("u2".to_owned(), "ONLINE".to_owned()),
    ];
    eventually("both UDP members ONLINE in Octavia", || async {
        udp_statuses().await == online
    })
    .await;
    let (_, l) = s
        .env
        .api("GET", &format!("/v2/lbaas/listeners/{listener}"), None)
        .await;
    assert_eq!(l["listener"]["operating_status"], "ONLINE", "{l}");

    // u2 stops: its checks draw ICMP port unreachable.
    members[1].abort();
    let expected = vec![
        ("u1".to_owned(), "ONLINE".to_owned()),
        ("u2".to_owned(), "ERROR".to_owned()),
    ];
    let mut last = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        last = udp_statuses().await;
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, expected, "agent log:\n{}", agent.log_text());
    for _ in 0..4 {
        assert_eq!(udp_tag(vip).await.as_deref(), Some("u1"));
    }
}

async fn lb_stats_json(lbd: &Lbd) -> (u16, Value) {
    let stream = TcpStream::connect(lbd.admin).await.expect("admin");
    let mut stream = stream;
    let request = format!(
        "GET /stats.json HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        lbd.admin
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_tokens_are_renewed_before_expiry_and_after_a_401() {
    let _turn = turn().await;
    let Some(s) = Setup::start(40, json!({})).await else {
        return;
    };
    let keystone = FakeKeystone::start(KeystoneOptions {
        ttl: Duration::from_secs(3),
        upstream: Some(s.env.api_url().to_owned()),
        ..KeystoneOptions::default()
    })
    .await;
    let o = keystone.options().clone();
    let auth_url = keystone.auth_url();
    let agent = s.agent(&[
        "--os-auth-url",
        &auth_url,
        "--os-username",
        &o.username,
        "--os-password",
        &o.password,
        "--os-user-domain-name",
        &o.user_domain,
        "--os-project-name",
        &o.project_name,
        "--os-project-domain-name",
        &o.project_domain,
    ]);
    // The endpoint comes from the catalog: Octavia behind the fake.
    wait_served_by(s.vip, &["m1", "m2", "m3"], &agent).await;
    assert!(keystone.forwarded() > 0);

    // Tokens of 3 s are renewed before they expire: no 401 at all.
    eventually("a third token", || async { keystone.tokens_issued() >= 3 }).await;
    assert_eq!(keystone.unauthorized_responses(), 0, "{}", agent.log_text());

    // Nothing changes: one request per poll (the load balancer), not the
    // 5 of a full read (it, listeners, pools, members, monitor).
    let before = keystone.forwarded();
    let quiet = Duration::from_secs(2);
    tokio::time::sleep(quiet).await;
    let requests = keystone.forwarded() - before;
    let polls = (quiet.as_millis() / 200) as usize + 1;
    assert!(
        (1..=polls + 2).contains(&requests),
        "{requests} requests to Octavia in {quiet:?} of 200 ms polls"
    );

    // Revoked tokens: a 401, a new token, and the agent keeps following.
    keystone.revoke_all();
    s.update_member(0, json!({"weight": 0})).await;
    wait_served_by(s.vip, &["m2", "m3"], &agent).await;
    assert!(keystone.unauthorized_responses() >= 1);
    agent.wait_for_log("refused the token").await;
}
