//! lbd with a `fast_path = "xdp"` listener, in network namespaces this test
//! creates (`lbd_test_support::netlab`: a client, lbd's namespace and three members,
//! veth pairs, 10.199.x.y addresses that exist only inside them): the real
//! lbd binary runs in the lb namespace and attaches its XDP program there.
//!
//! Needs root, network namespaces and BPF. Without them the test says why
//! and skips, unless `LBD_TEST_REQUIRE_TOOLS` is set (as `scripts/test`
//! does), in which case it fails. Every wait is bounded.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use lbd_ebpf::{attach_pass, PassGuard};
use lbd_test_support::eventually_blocking;
use lbd_test_support::netlab::{expected_body, http_get, HttpServer, KeepAlive, Lab};
use lbd_test_support::skip;
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 199, 200, 1);
const VIP_PORT: u16 = 80;
const MEMBER_PORT: u16 = 8080;
const BODY_LEN: usize = 100_000;
const MEMBERS: usize = 3;
const ADMIN: &str = "127.0.0.1:8404";
const TIMEOUT: Duration = Duration::from_secs(5);

/// The lab with lbd running in it. Field order is drop order: lbd stops,
/// the pass programs go, the servers stop, then the namespaces.
struct Setup {
    lbd: Child,
    log: PathBuf,
    config: PathBuf,
    _pass: Vec<PassGuard>,
    servers: Vec<Option<HttpServer>>,
    lab: Lab,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.lbd.kill();
        let _ = self.lbd.wait();
    }
}

impl Setup {
    /// The lab, with lbd attaching to the lab's interfaces plus
    /// `extra_interfaces`; once `attached` is in its log.
    fn start(extra_interfaces: &[&str], attached: &str) -> Option<Setup> {
        let lab = match Lab::new(MEMBERS) {
            Ok(lab) => lab,
            Err(e) => {
                skip(&format!("the XDP test cannot run here: {e}"));
                return None;
            }
        };
        lab.add_vip(VIP).expect("vip");
        // Frames with complete checksums, as from a real NIC.
        lab.complete_checksums().expect("checksum offload off");
        let servers = (0..MEMBERS)
            .map(|i| {
                let addr = SocketAddrV4::new(lab.member_ip(i), MEMBER_PORT);
                Some(
                    HttpServer::start(&lab.members()[i], addr, &format!("m{i}"), BODY_LEN)
                        .expect("member server"),
                )
            })
            .collect();
        // Native XDP on veth delivers only to peers with an XDP program.
        let mut pass = Vec::new();
        let mut peers = vec![(lab.client().clone(), lab.client_if().to_owned())];
        for i in 0..MEMBERS {
            peers.push((lab.members()[i].clone(), lab.member_if(i).to_owned()));
        }
        for (ns, interface) in peers {
            match ns.run(move || attach_pass(&interface)) {
                Ok(guard) => pass.push(guard),
                Err(e) => {
                    skip(&format!(
                        "the XDP test cannot run here: the pass-only XDP program: {e}"
                    ));
                    return None;
                }
            }
        }

        let dir = std::env::temp_dir().join(format!(
            "lbd-xdp-test-{}-{}",
            std::process::id(),
            extra_interfaces.len()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let config = dir.join("lbd.toml");
        std::fs::write(&config, config_text(&lab, 1, extra_interfaces)).expect("config");
        let log = dir.join("lbd.log");
        let lbd = lab
            .lb()
            .command(env!("CARGO_BIN_EXE_lbd"))
            .args(["--workers", "1", "--log", "lbd=debug", "run", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start lbd");
        let setup = Setup {
            lbd,
            log,
            config,
            _pass: pass,
            servers,
            lab,
        };
        eventually_blocking(&format!("{attached:?} in lbd's log"), || {
            setup.log_text().contains(attached)
        });
        Some(setup)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// lbd's `/stats.json`, from inside its namespace.
    fn stats(&self) -> Value {
        let admin: SocketAddrV4 = ADMIN.parse().expect("admin address");
        let body = http_get(self.lab.lb(), admin, "/stats.json", TIMEOUT)
            .unwrap_or_else(|e| panic!("stats: {e}\nlbd log:\n{}", self.log_text()));
        serde_json::from_slice(&body).expect("stats JSON")
    }

    fn member_statuses(&self) -> Vec<String> {
        let stats = self.stats();
        stats["pools"][0]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, VIP_PORT)
    }

    /// One GET through the VIP from the client: the member that answered,
    /// after checking the body byte for byte.
    fn get(&self) -> usize {
        let body = http_get(self.lab.client(), self.vip(), "/", TIMEOUT)
            .unwrap_or_else(|e| panic!("GET through the VIP: {e}\nlbd log:\n{}", self.log_text()));
        member_of(&body)
    }
}

/// The config: the VIP with the fast path, members with fast TCP checks
/// (which also give lbd's namespace its neighbour entries for them),
/// member 0's weight, and interfaces to attach to besides the lab's.
fn config_text(lab: &Lab, weight0: u32, extra_interfaces: &[&str]) -> String {
    let mut interfaces = vec![format!("{:?}", lab.lb_client_if())];
    interfaces.extend((0..MEMBERS).map(|i| format!("{:?}", lab.lb_member_if(i))));
    interfaces.extend(extra_interfaces.iter().map(|i| format!("{i:?}")));
    let mut text = format!(
        "[admin]\nbind = \"{ADMIN}\"\n\n[xdp]\ninterfaces = [{}]\nsnat_ports = \"21000-21999\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"{VIP}:{VIP_PORT}\"\npool = \"web\"\n\
         fast_path = \"xdp\"\n\n[[pool]]\nname = \"web\"\n\n[pool.health]\ntype = \"tcp\"\n\
         interval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n",
        interfaces.join(", ")
    );
    for i in 0..MEMBERS {
        let weight = if i == 0 { weight0 } else { 1 };
        text.push_str(&format!(
            "\n[[pool.member]]\naddress = \"{}\"\nport = {MEMBER_PORT}\nweight = {weight}\n",
            lab.member_ip(i)
        ));
    }
    text
}

/// The member a body comes from, after checking every byte of it.
fn member_of(body: &[u8]) -> usize {
    let name = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let name = String::from_utf8_lossy(name).into_owned();
    let i: usize = name
        .strip_prefix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body start {name:?}"));
    assert!(
        body == expected_body(&name, BODY_LEN).as_slice(),
        "the body from {name} is damaged ({} bytes)",
        body.len()
    );
    i
}

#[test]
fn the_fast_path_balances_in_the_kernel_and_follows_health_and_config() {
    let Some(mut s) = Setup::start(&[], "xdp: attached to") else {
        return;
    };
    assert!(
        s.log_text().contains("lb-c (native)"),
        "native mode on the veths:\n{}",
        s.log_text()
    );
    assert!(
        s.log_text().contains("SNAT ports 21000-21999"),
        "snat_ports from the config:\n{}",
        s.log_text()
    );
    // Neighbour entries: the checks make lbd's namespace resolve the
    // members; a refused connection from the client to the lb's own
    // address resolves the client side both ways. Until then the program
    // leaves new connections to the kernel (lbd's proxy serves them).
    eventually_blocking("every member checked and the fast path reporting", || {
        let stats = s.stats();
        let checked = stats["pools"][0]["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["last_check"]["passed"] == true));
        checked
            && stats["xdp"]["interfaces"]
                .as_array()
                .is_some_and(|i| i.len() == 4)
    });
    let lb_ip = SocketAddr::from((s.lab.lb_client_side_ip(), 9));
    let _ = s
        .lab
        .client()
        .run(move || TcpStream::connect_timeout(&lb_ip, TIMEOUT));
    let before = s.stats();
    let userspace_before = before["listeners"][0]["connections_total"].clone();
    let flows_before = before["xdp"]["new_flows_total"].as_u64().unwrap_or(0);

    // Round robin in the kernel: each member in turn, bodies intact.
    let order: Vec<usize> = (0..6).map(|_| s.get()).collect();
    let mut first: Vec<usize> = order[..3].to_vec();
    first.sort_unstable();
    assert_eq!(first, [0, 1, 2], "one each: {order:?}\n{}", s.stats());
    assert_eq!(order[..3], order[3..], "the same order again: {order:?}");
    // None of it reached lbd's userspace listener.
    let stats = s.stats();
    let listener = &stats["listeners"][0];
    assert_eq!(listener["connections_total"], userspace_before, "{stats}");
    // The kernel balanced them (lbd publishes its counters every second).
    eventually_blocking("6 new flows in the XDP counters", || {
        let xdp = &s.stats()["xdp"];
        xdp["new_flows_total"].as_u64() == Some(flows_before + 6)
            && xdp["bytes_total"].as_u64() >= Some(6 * BODY_LEN as u64)
            && xdp["error"] == Value::Null
    });

    // A kept-alive connection to member 0 or 2 (member 1 is stopped
    // below), to check it outlives health and config changes: round robin
    // puts one of two consecutive connections on another member.
    let mut kept = KeepAlive::open(s.lab.client(), s.vip(), TIMEOUT).expect("keep-alive");
    let mut kept_member = member_of(&kept.get().expect("kept-alive GET"));
    if kept_member == 1 {
        kept = KeepAlive::open(s.lab.client(), s.vip(), TIMEOUT).expect("keep-alive");
        kept_member = member_of(&kept.get().expect("kept-alive GET"));
    }
    assert_ne!(kept_member, 1);

    // Member 1 stops answering: down by its check, then no new flows.
    s.servers[1] = None;
    eventually_blocking("member 1 down", || {
        s.member_statuses() == ["up", "down", "up"]
    });
    // The transition wakes the fast path's thread at once; give it a moment.
    std::thread::sleep(Duration::from_millis(100));
    let after: Vec<usize> = (0..6).map(|_| s.get()).collect();
    assert!(
        !after.contains(&1),
        "a down member got new flows: {after:?}"
    );
    assert!(after.contains(&0) && after.contains(&2), "{after:?}");

    // A reload (member 0's weight 0: no new flows to it; other SNAT ports;
    // one more interface) leaves the established flow alone: the loaded
    // program stays, and is attached to the new interface too.
    s.lab
        .lb()
        .sh(&[
            "ip",
            "link",
            "add",
            "lbd-extra0",
            "type",
            "veth",
            "peer",
            "name",
            "lbd-extra1",
        ])
        .expect("one more interface in lbd's namespace");
    let reloaded = config_text(&s.lab, 0, &["lbd-extra0"]).replace("21000-21999", "22000-22999");
    std::fs::write(&s.config, reloaded).expect("config");
    // SAFETY: kill(2) on the lbd child this test started.
    let sent = unsafe { libc::kill(s.lbd.id() as i32, libc::SIGHUP) };
    assert_eq!(sent, 0);
    eventually_blocking("the reload", || s.log_text().contains("reloaded"));
    eventually_blocking("the new SNAT ports", || {
        s.log_text().contains("xdp: SNAT ports 22000-22999")
    });
    eventually_blocking("attached to the new interface", || {
        s.log_text().contains("xdp: now attached to") && s.log_text().contains("lbd-extra0 (")
    });
    assert_eq!(
        s.log_text().matches("xdp: attached to").count(),
        1,
        "loaded again on reload:\n{}",
        s.log_text()
    );
    std::thread::sleep(Duration::from_millis(100));
    let after: Vec<usize> = (0..4).map(|_| s.get()).collect();
    assert_eq!(after, [2, 2, 2, 2], "only member 2 takes new flows");
    let again = member_of(
        &kept
            .get()
            .expect("the kept-alive connection after the reload"),
    );
    assert_eq!(again, kept_member);
    let stats = s.stats();
    assert_eq!(
        stats["listeners"][0]["connections_total"], userspace_before,
        "{stats}"
    );

    // The XDP counters are on /metrics too.
    let admin: SocketAddrV4 = ADMIN.parse().expect("admin address");
    let metrics = http_get(s.lab.lb(), admin, "/metrics", TIMEOUT).expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("lbd_xdp_attached{interface=\"lb-c\",mode=\"native\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("lbd_xdp_new_flows_total "), "{metrics}");

    // connection_limit = 1 with the kept-alive flow open: the kernel drops
    // new SYNs (counted) and the open flow goes on; once it ends, new
    // connections get through again.
    let limited = config_text(&s.lab, 0, &["lbd-extra0"])
        .replace("21000-21999", "22000-22999")
        .replace(
            "fast_path = \"xdp\"\n",
            "fast_path = \"xdp\"\nconnection_limit = 1\n",
        );
    std::fs::write(&s.config, limited).expect("config");
    // SAFETY: kill(2) on the lbd child this test started.
    assert_eq!(unsafe { libc::kill(s.lbd.id() as i32, libc::SIGHUP) }, 0);
    eventually_blocking("the listener at its limit", || {
        s.log_text()
            .contains("listener web has 1 open fast-path connections")
    });
    let vip = SocketAddr::V4(s.vip());
    let refused = s
        .lab
        .client()
        .run(move || TcpStream::connect_timeout(&vip, Duration::from_millis(1500)));
    assert!(refused.is_err(), "a connection over the limit was set up");
    eventually_blocking("the drop counted", || {
        s.stats()["xdp"]["drops_total"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["reason"] == "connection_limit" && d["packets"].as_u64() >= Some(1))
    });
    assert_eq!(
        member_of(&kept.get().expect("the open flow at the limit")),
        kept_member
    );
    drop(kept);
    eventually_blocking("the listener below its limit", || {
        s.log_text()
            .contains("listener web is below its connection_limit")
    });
    assert_eq!(s.get(), 2);

    // SIGTERM: after the drain, the program is detached from every
    // interface (not left in the kernel balancing for a dead lbd).
    let attached = |s: &Setup| -> Vec<String> {
        [s.lab.lb_client_if(), "lbd-extra0"]
            .into_iter()
            .filter(|interface| {
                s.lab
                    .lb()
                    .sh(&["ip", "link", "show", "dev", interface])
                    .unwrap_or_else(|e| panic!("ip link show {interface}: {e}"))
                    .contains("prog/xdp")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(attached(&s).len(), 2, "attached before the shutdown");
    // SAFETY: kill(2) on the lbd child this test started.
    assert_eq!(unsafe { libc::kill(s.lbd.id() as i32, libc::SIGTERM) }, 0);
    let mut status = None;
    eventually_blocking("lbd exits after SIGTERM", || {
        status = s.lbd.try_wait().expect("wait for lbd");
        status.is_some()
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        s.log_text()
    );
    assert!(
        s.log_text().contains("xdp: shut down: detached from"),
        "{}",
        s.log_text()
    );
    assert_eq!(
        attached(&s),
        Vec::<String>::new(),
        "still attached after exit"
    );
}

#[test]
fn a_listener_whose_fast_path_cannot_attach_is_served_by_the_proxy() {
    let Some(s) = Setup::start(&["lbd-nosuch0"], "xdp: cannot attach") else {
        return;
    };
    assert!(
        s.log_text().contains("stay on the userspace proxy"),
        "{}",
        s.log_text()
    );
    eventually_blocking("every member checked", || {
        s.member_statuses() == ["up", "up", "up"]
    });
    let served: Vec<usize> = (0..3).map(|_| s.get()).collect();
    let mut sorted = served.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2], "{served:?}");
    eventually_blocking("the proxy counted them and the stats say why", || {
        let stats = s.stats();
        stats["listeners"][0]["connections_total"] == 3
            && stats["xdp"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("lbd-nosuch0"))
    });
}
