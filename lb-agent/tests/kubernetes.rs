//! `lb-agent kubernetes` end to end: the fake API server (a stand-in for a
//! kube-apiserver, which cannot run here; see
//! `lbd_test_support::fake_kube`), a real lbd process, and nodes that are real TCP servers on 127.0.0.x
//! (and UDP echo servers for UDP NodePorts). Loopback only.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use common::cluster::{
    self, eventually, start_agent, tags_at, udp_ask, Lbd, NodeServer, Process, UdpNodeServer,
};
use lbd_test_support::fake_kube::{self, finalizers, FakeKube};
use serde_json::Value;

/// The VIP lb-agent gives Services (on loopback, so lbd can bind it).
const VIP: &str = "127.0.0.50";

/// A fake cluster with a real lbd and lb-agent running against both.
struct Cluster {
    kube: FakeKube,
    lbd: Lbd,
    agent: Process,
}

impl Cluster {
    async fn start() -> Cluster {
        let kube = FakeKube::start().await;
        let lbd = Lbd::start().await;
        let agent = start_agent(&[
            "kubernetes",
            "--kubeconfig",
            &kube.kubeconfig().display().to_string(),
            "--lbd-url",
            &lbd.url(),
            "--vip",
            VIP,
            "--debounce",
            "100ms",
            "--resync",
            "1s",
        ]);
        agent.wait_for_log("watching Services and Nodes").await;
        Cluster { kube, lbd, agent }
    }

    /// Two ready nodes and a Service "web" on one port, served: returns
    /// the port, the nodePort and the node servers.
    async fn serve_web(&self) -> (u16, u16, Vec<NodeServer>) {
        let (port, node_port) = (cluster::free_port(), cluster::free_port());
        let nodes = nodes(&self.kube, node_port, None).await;
        self.kube.apply_service(fake_kube::service_lb(
            "default",
            "web",
            &[("http", port, node_port, "TCP")],
            Some("lbd.io/lbd"),
        ));
        self.wait_served_by(port, &["node-a", "node-b"]).await;
        (port, node_port, nodes)
    }

    fn vip(port: u16) -> SocketAddr {
        SocketAddr::new(VIP.parse().expect("vip"), port)
    }

    /// Waits until `n` connections to `port` on the VIP are answered by
    /// exactly the nodes `expected` (each at least once).
    async fn wait_served_by(&self, port: u16, expected: &[&str]) {
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        let what = format!(
            "{VIP}:{port} served by {want:?}; agent log:\n{}",
            self.agent.log_text()
        );
        eventually(&what, || async {
            let mut seen = tags_at(Self::vip(port), 3 * expected.len().max(1)).await;
            seen.sort();
            seen.dedup();
            seen == want
        })
        .await;
    }
}

fn node_ip(i: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 10 + i])
}

async fn nodes(kube: &FakeKube, port: u16, health: Option<u16>) -> Vec<NodeServer> {
    let mut servers = Vec::new();
    for (i, name) in ["node-a", "node-b"].iter().enumerate() {
        let ip = node_ip(i as u8 + 1);
        kube.apply_node(fake_kube::node(name, &ip.to_string(), true));
        servers.push(NodeServer::start(name, ip, port, health).await);
    }
    servers
}

fn ingress_ips(service: &Value) -> Vec<String> {
    service["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|x| x["ip"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_served_on_the_nodes_and_gets_its_vip() {
    let c = Cluster::start().await;
    let (_port, node_port, _nodes) = c.serve_web().await;
    eventually("the VIP in the Service status", || async {
        c.kube
            .service("default", "web")
            .is_some_and(|s| ingress_ips(&s) == [VIP])
    })
    .await;
    let service = c.kube.service("default", "web").expect("service");
    assert_eq!(finalizers(&service), ["lbd.io/load-balancer-cleanup"]);

    assert_eq!(
        service["status"]["loadBalancer"]["ingress"][0]["ipMode"],
        "VIP"
    );

    // A Service of another class is left alone.
    c.kube.apply_service(fake_kube::service_lb(
        "default",
        "other",
        &[("http", cluster::free_port(), node_port, "TCP")],
        Some("example.com/other"),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let other = c.kube.service("default", "other").expect("service");
    assert!(ingress_ips(&other).is_empty() && finalizers(&other).is_empty());
    // Resyncs (every second) found nothing to change on "web".
    let patches = c.kube.status_updates("default", "web");
    assert_eq!(
        patches.len(),
        1,
        "one status patch, not one per resync: {patches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_ready_is_removed_and_comes_back() {
    let c = Cluster::start().await;
    let (port, _, _nodes) = c.serve_web().await;
    c.kube
        .apply_node(fake_kube::node("node-b", &node_ip(2).to_string(), false));
    c.wait_served_by(port, &["node-a"]).await;
    c.kube
        .apply_node(fake_kube::node("node-b", &node_ip(2).to_string(), true));
    c.wait_served_by(port, &["node-a", "node-b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_traffic_policy_follows_kube_proxy_healthz() {
    let c = Cluster::start().await;
    let (port, node_port, health_port) = (
        cluster::free_port(),
        cluster::free_port(),
        cluster::free_port(),
    );
    let nodes = nodes(&c.kube, node_port, Some(health_port)).await;
    nodes[1].set_healthy(false); // no local endpoint on node-b
    let service = fake_kube::with_local_traffic(
        fake_kube::service_lb(
            "default",
            "web",
            &[("http", port, node_port, "TCP")],
            Some("lbd.io/lbd"),
        ),
        health_port,
    );
    c.kube.apply_service(service);
    c.wait_served_by(port, &["node-a"]).await;
    nodes[1].set_healthy(true);
    c.wait_served_by(port, &["node-a", "node-b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_service_leaves_lbd_before_its_finalizer_goes() {
    let c = Cluster::start().await;
    let (port, _, _nodes) = c.serve_web().await;
    c.kube.delete_service("default", "web");
    eventually("the Service gone (finalizer removed)", || async {
        c.kube.service("default", "web").is_none()
    })
    .await;
    assert!(
        tokio::net::TcpStream::connect(Cluster::vip(port))
            .await
            .is_err(),
        "the listener is still there after the Service is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watch_converges_again() {
    let c = Cluster::start().await;
    let (port, node_port, _nodes) = c.serve_web().await;
    // History compacted and every watch cut: the agent must re-list.
    let before = c.kube.requests().len();
    c.kube.compact();
    c.kube.drop_watches();
    let ip = IpAddr::from([127, 0, 0, 13]);
    c.kube
        .apply_node(fake_kube::node("node-c", &ip.to_string(), true));
    let _c_node = NodeServer::start("node-c", ip, node_port, None).await;
    c.wait_served_by(port, &["node-a", "node-b", "node-c"])
        .await;
    let relisted = c.kube.requests()[before..]
        .iter()
        .any(|r| r.starts_with("GET /api/v1/nodes?") && !r.contains("watch=true"));
    assert!(relisted, "no re-list of nodes after the watch broke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_lbd_gets_the_config_again() {
    let mut c = Cluster::start().await;
    let (port, _, _nodes) = c.serve_web().await;
    c.lbd.restart().await;
    // The restarted lbd only has its file config until lb-agent re-pushes.
    c.wait_served_by(port, &["node-a", "node-b"]).await;
    assert!(c
        .lbd
        .process
        .log_text()
        .contains("admin API PUT /api/config: applied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_become_events_on_the_service() {
    let c = Cluster::start().await;
    let (port, web_port, node_port) = (
        cluster::free_port(),
        cluster::free_port(),
        cluster::free_port(),
    );
    let _nodes = nodes(&c.kube, node_port, None).await;
    c.kube.apply_service(fake_kube::service_lb(
        "default",
        "dns",
        &[
            ("sctp", port, node_port, "SCTP"),
            ("web", web_port, node_port, "TCP"),
        ],
        Some("lbd.io/lbd"),
    ));
    eventually("an UnsupportedProtocol Event", || async {
        c.kube
            .events()
            .iter()
            .any(|e| e["reason"] == "UnsupportedProtocol" && e["regarding"]["name"] == "dns")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_ports_of_one_number_are_both_served() {
    let c = Cluster::start().await;
    // One port number for TCP and UDP (like DNS's 53), each with its own
    // nodePort, so a datagram sent to the TCP nodePort would go unanswered.
    let (port, tcp_node_port, udp_node_port) = (
        cluster::free_port(),
        cluster::free_port(),
        cluster::free_port(),
    );
    let _tcp_nodes = nodes(&c.kube, tcp_node_port, None).await;
    let mut _udp_nodes = Vec::new();
    for (i, name) in ["node-a", "node-b"].iter().enumerate() {
        _udp_nodes.push(UdpNodeServer::start(name, node_ip(i as u8 + 1), udp_node_port).await);
    }
    c.kube.apply_service(fake_kube::service_lb(
        "default",
        "dns",
        &[
            ("dns-tcp", port, tcp_node_port, "TCP"),
            ("dns-udp", port, udp_node_port, "UDP"),
        ],
        Some("lbd.io/lbd"),
    ));
    c.wait_served_by(port, &["node-a", "node-b"]).await;

    // Both listeners are in lbd's running config, on the same VIP:port.
    let (code, body) = lb_agent::lbd_push::request(&c.lbd.url(), None, "GET", "/api/config", "")
        .await
        .expect("GET /api/config");
    assert_eq!(code, 200, "{body}");
    let running: lbd_config::ConfigFile = serde_json::from_str(&body).expect("config JSON");
    let listeners: Vec<(String, String, String)> = running
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.clone().unwrap_or_default(),
                l.bind.clone().unwrap_or_default(),
                l.protocol.clone().unwrap_or_else(|| "tcp".to_owned()),
            )
        })
        .collect();
    let bind = Cluster::vip(port).to_string();
    assert_eq!(
        listeners,
        [
            (
                format!("k8s:default:dns:{port}"),
                bind.clone(),
                "tcp".to_owned()
            ),
            (
                format!("k8s:default:dns:{port}:udp"),
                bind,
                "udp".to_owned()
            ),
        ]
    );
    let udp_pool = running
        .pools
        .iter()
        .find(|p| p.name.as_deref() == Some(&format!("k8s:default:dns:{port}:udp")))
        .expect("the UDP pool");
    assert_eq!(
        udp_pool.health.as_ref().and_then(|h| h.kind.as_deref()),
        Some("udp_connect"),
        "{udp_pool:?}"
    );
    assert!(udp_pool
        .members
        .iter()
        .all(|m| m.port == Some(i64::from(udp_node_port))));

    // Datagrams through the VIP: every new socket is a new flow, round
    // robin over the nodes, each answered with its own payload.
    let what = format!(
        "UDP {VIP}:{port} answered by both nodes; agent log:\n{}",
        c.agent.log_text()
    );
    eventually(&what, || async {
        let mut seen = BTreeSet::new();
        for i in 0..4 {
            let query = format!("query {i}");
            if let Some(answer) = udp_ask(Cluster::vip(port), query.as_bytes()).await {
                let (tag, echoed) = answer.split_once(' ').unwrap_or_default();
                assert_eq!(echoed, query, "answer {answer:?}");
                seen.insert(tag.to_owned());
            }
        }
        seen == BTreeSet::from(["node-a".to_owned(), "node-b".to_owned()])
    })
    .await;

    // The status lists both ports; no Event says a protocol is unsupported.
    eventually("both ports in the Service status", || async {
        c.kube.service("default", "dns").is_some_and(|s| {
            s["status"]["loadBalancer"]["ingress"][0]["ports"]
                == serde_json::json!([
                    {"port": port, "protocol": "TCP"},
                    {"port": port, "protocol": "UDP"}
                ])
        })
    })
    .await;
    assert!(
        !c.kube
            .events()
            .iter()
            .any(|e| e["regarding"]["name"] == "dns"),
        "no problem to report: {:?}",
        c.kube.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_file_mode_writes_the_config_and_reloads_lbd() {
    let kube = FakeKube::start().await;
    let dir = cluster::scratch_dir();
    let (admin, port, node_port) = (
        cluster::free_port(),
        cluster::free_port(),
        cluster::free_port(),
    );
    // lbd runs from the file lb-agent writes; the base holds the rest.
    let base = dir.join("base.toml");
    std::fs::write(&base, format!("[admin]\nbind = \"127.0.0.1:{admin}\"\n")).expect("base");
    let output = dir.join("lbd.toml");
    std::fs::copy(&base, &output).expect("first config");
    let lbd = cluster::run_lbd(&output).await;
    let pid_file = dir.join("lbd.pid");
    std::fs::write(&pid_file, lbd.pid().to_string()).expect("pid file");

    let _nodes = nodes(&kube, node_port, None).await;
    kube.apply_service(fake_kube::service_lb(
        "default",
        "web",
        &[("http", port, node_port, "TCP")],
        Some("lbd.io/lbd"),
    ));
    let agent = start_agent(&[
        "kubernetes",
        "--kubeconfig",
        &kube.kubeconfig().display().to_string(),
        "--vip",
        VIP,
        "--output",
        &output.display().to_string(),
        "--base-config",
        &base.display().to_string(),
        "--lbd-pid-file",
        &pid_file.display().to_string(),
        "--debounce",
        "100ms",
    ]);
    let what = format!(
        "served through the file config; agent log:\n{}",
        agent.log_text()
    );
    eventually(&what, || async {
        let mut seen = tags_at(Cluster::vip(port), 6).await;
        seen.sort();
        seen.dedup();
        seen == ["node-a", "node-b"]
    })
    .await;
    let written = std::fs::read_to_string(&output).expect("output");
    assert!(written.contains("k8s:default:web:"), "{written}");
    assert!(
        written.contains(&format!("127.0.0.1:{admin}")),
        "base kept: {written}"
    );
    lbd.wait_for_log("reloaded: generation 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiservers_follow_the_endpointslices_from_a_seed() {
    let kube = FakeKube::start().await;
    let port = cluster::free_port();
    let listen = cluster::free_port();
    let seed = NodeServer::start("seed", IpAddr::from([127, 0, 0, 21]), port, None).await;
    let a = NodeServer::start("api-a", IpAddr::from([127, 0, 0, 22]), port, None).await;
    let b = NodeServer::start("api-b", IpAddr::from([127, 0, 0, 23]), port, None).await;
    let dir = cluster::scratch_dir();
    let admin = cluster::free_port();
    let config = dir.join("lbd.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nbind = \"127.0.0.1:{admin}\"\n\n[[listener]]\nname = \"kube-apiserver\"\n\
             bind = \"{VIP}:{listen}\"\npool = \"apiservers\"\n\n[[pool]]\nname = \"apiservers\"\n"
        ),
    )
    .expect("config");
    let _lbd = cluster::run_lbd(&config).await;

    let agent = start_agent(&[
        "apiservers",
        "--kubeconfig",
        &kube.kubeconfig().display().to_string(),
        "--lbd-url",
        &format!("http://127.0.0.1:{admin}"),
        "--seed",
        &SocketAddr::new(seed.ip, port).to_string(),
        "--debounce",
        "100ms",
        "--resync",
        "1s",
    ]);
    let served = |want: Vec<&'static str>| {
        let what = format!(
            "{want:?} behind the apiserver VIP; agent log:\n{}",
            agent.log_text()
        );
        async move {
            eventually(&what, || async {
                let mut seen = tags_at(Cluster::vip(listen), 6).await;
                seen.sort();
                seen.dedup();
                seen == want
            })
            .await
        }
    };
    served(vec!["seed"]).await;
    kube.apply_endpointslice(fake_kube::endpointslice(
        "default",
        "kubernetes",
        "kubernetes",
        &[&a.ip.to_string(), &b.ip.to_string()],
        port,
    ));
    served(vec!["api-a", "api-b"]).await;
}
