//! End-to-end tests of the XDP full-NAT fast path in a network-namespace lab
//! (`lbd_test_support::netlab`): a client ns, an lb ns running the program on its
//! client-facing and member-facing veths, three member ns with HTTP servers.
//!
//! Needs root, `ip` and BPF. Skips (with a message) when that is not
//! available, unless `LBD_TEST_REQUIRE_TOOLS` is set: then it fails.
//!
//! Checked, in native and in generic mode:
//! * a SYN for which the lb has no neighbour entry yet is passed to the
//!   kernel untouched (no flow; nothing listens on the VIP: refused);
//! * connections to the VIP reach the three members in round-robin order,
//!   100 kB bodies intact, every packet translated by XDP (the lb kernel's
//!   TCP counters do not move, no checksum errors anywhere);
//! * a member marked unusable gets no new flows while established flows (to
//!   it and to others) go on;
//! * a removed member's established flow ends (reset), the others go on;
//! * Maglev: each client address goes to the member the userspace mirror
//!   predicts;
//! * idle flows expire;
//! * an established flow follows a change of its member's MAC address (the
//!   program caches a flow's next hop for at most a second).

use lbd_ebpf::select::{client_hash, maglev_pick, smooth_weighted_slots};
use lbd_ebpf::{
    attach_pass, AttachMode, Error, FastPath, Member, Options, PassGuard, Selection, Service,
    MAGLEV_TABLE_SIZE,
};
use lbd_test_support::netlab::{expected_body, http_get, HttpServer, KeepAlive, Lab, Ns};
use lbd_test_support::skip;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
const BODY_LEN: usize = 100_000;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 199, 200, 1);
const VIP_PORT: u16 = 80;
const MEMBER_PORT: u16 = 8080;
const MEMBERS: usize = 3;

/// Reads `/proc/thread-self/net/snmp` in `ns`: (Tcp InSegs, OutSegs, InCsumErrors).
fn tcp_counters(ns: &Ns) -> (u64, u64, u64) {
    ns.run(|| {
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
        let mut lines = text.lines().filter(|l| l.starts_with("Tcp:"));
        let names: Vec<&str> = lines
            .next()
            .expect("Tcp header")
            .split_whitespace()
            .collect();
        let vals: Vec<&str> = lines
            .next()
            .expect("Tcp values")
            .split_whitespace()
            .collect();
        let get = |n: &str| -> u64 {
            let i = names.iter().position(|x| *x == n).expect(n);
            vals[i].parse().expect("number")
        };
        (get("InSegs"), get("OutSegs"), get("InCsumErrors"))
    })
}

/// The member name a body starts with ("m0\n...").
fn member_of(body: &[u8]) -> usize {
    let name = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let name = std::str::from_utf8(name).expect("utf-8 name");
    name.strip_prefix('m')
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body start {name:?}"))
}

fn check_body(body: &[u8]) -> usize {
    let m = member_of(body);
    let want = expected_body(&format!("m{m}"), BODY_LEN);
    if body != want.as_slice() {
        let at = body
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(body.len().min(want.len()));
        panic!(
            "body from m{m} differs at byte {at} ({} bytes, want {})",
            body.len(),
            want.len()
        );
    }
    m
}

struct Env {
    // Field order = drop order: XDP off, pass programs off, servers
    // stopped, then the namespaces go.
    fp: Option<FastPath>,
    _pass: Vec<PassGuard>,
    servers: Vec<HttpServer>,
    lab: Lab,
}

impl Env {
    fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, VIP_PORT)
    }

    fn member_addr(&self, i: usize) -> SocketAddrV4 {
        SocketAddrV4::new(self.lab.member_ip(i), MEMBER_PORT)
    }

    fn fp(&mut self) -> &mut FastPath {
        self.fp.as_mut().expect("attached")
    }

    fn service(&self, members: &[(usize, bool)], selection: Selection) -> Service {
        Service {
            vip: self.vip(),
            snat_ip: self.lab.lb_client_side_ip(),
            members: members
                .iter()
                .map(|&(i, usable)| Member {
                    addr: self.member_addr(i),
                    weight: 1,
                    usable,
                })
                .collect(),
            selection,
            full: false,
        }
    }

    /// A fresh `Connection: close` GET of the VIP from the client ns;
    /// returns the member that answered (body checked).
    fn get_vip(&self) -> Result<usize, String> {
        http_get(self.lab.client(), self.vip(), "/", TIMEOUT).map(|b| check_body(&b))
    }
}

/// Builds the lab and attaches the fast path in `mode`; `None`: skipped.
fn setup(mode: AttachMode) -> Option<Env> {
    let lab = match Lab::new(MEMBERS) {
        Ok(lab) => lab,
        Err(e) => {
            skip(&e);
            return None;
        }
    };
    lab.add_vip(VIP).expect("add_vip");
    // Complete checksums on the wire, as from a real NIC (see lib docs).
    // Without this, native mode fails outright (the partial checksum of a
    // locally sent frame, updated as if complete, is wrong at the member).
    lab.complete_checksums().expect("checksum offload off");
    let servers: Vec<HttpServer> = (0..MEMBERS)
        .map(|i| {
            HttpServer::start(
                &lab.members()[i],
                SocketAddrV4::new(lab.member_ip(i), MEMBER_PORT),
                &format!("m{i}"),
                BODY_LEN,
            )
            .expect("http server")
        })
        .collect();

    // Native mode: veth delivers XDP_TX/REDIRECT frames only to a peer
    // with an XDP program.
    let mut pass = Vec::new();
    if mode == AttachMode::Native {
        let mut peers = vec![(lab.client().clone(), lab.client_if().to_string())];
        for i in 0..MEMBERS {
            peers.push((lab.members()[i].clone(), lab.member_if(i).to_string()));
        }
        for (ns, ifname) in peers {
            match ns.run(move || attach_pass(&ifname)) {
                Ok(g) => pass.push(g),
                Err(e @ (Error::PermissionDenied { .. } | Error::NotBuilt)) => {
                    skip(&e.to_string());
                    return None;
                }
                Err(e) => panic!("attach_pass: {e}"),
            }
        }
    }

    let mut ifs = vec![lab.lb_client_if().to_string()];
    ifs.extend((0..MEMBERS).map(|i| lab.lb_member_if(i).to_string()));
    let opts = Options {
        // Native: the default (native first, generic as fallback).
        mode: (mode == AttachMode::Generic).then_some(mode),
        conntrack_entries: 4096,
        ..Options::default()
    };
    let fp = match lab.lb().run(move || FastPath::attach_with(&ifs, &opts)) {
        Ok(fp) => fp,
        Err(e @ (Error::PermissionDenied { .. } | Error::NotBuilt)) => {
            skip(&e.to_string());
            return None;
        }
        Err(e) => panic!("FastPath::attach_with: {e}"),
    };
    for i in 0..MEMBERS {
        assert_eq!(fp.mode(lab.lb_member_if(i)), Some(mode));
    }
    assert_eq!(fp.mode(lab.lb_client_if()), Some(mode));
    assert_eq!(fp.mode("nonexistent"), None);
    Some(Env {
        fp: Some(fp),
        _pass: pass,
        servers,
        lab,
    })
}

/// "Health checks" from the lb ns: resolves the members' neighbour entries.
fn health_check(env: &Env) {
    for i in 0..MEMBERS {
        let body = http_get(env.lab.lb(), env.member_addr(i), "/", TIMEOUT)
            .unwrap_or_else(|e| panic!("health check of m{i}: {e}"));
        assert_eq!(check_body(&body), i);
    }
}

fn scenario(mode: AttachMode) {
    let Some(mut env) = setup(mode) else { return };
    let all: Vec<(usize, bool)> = (0..MEMBERS).map(|i| (i, true)).collect();
    let svc = env.service(&all, Selection::RoundRobin);
    env.fp().set_services(&[svc]).expect("set_services");

    // 1. No neighbour entry for the members yet: the SYN goes to the
    // kernel untouched, and nothing listens on the VIP there.
    let err = env.get_vip().expect_err("no neighbours yet: refused");
    assert!(err.contains("connect"), "{err}");
    let c = env.fp().counters().unwrap();
    assert!(c.passed("no_neigh") >= 1, "{c:?}");
    assert_eq!(c.new_flows, 0, "{c:?}");
    assert_eq!(env.fp().flows().unwrap(), 0);

    health_check(&env);

    // 2. Round robin, bodies intact, the lb kernel sees nothing.
    let lb_before = tcp_counters(env.lab.lb());
    let before = env.fp().counters().unwrap();
    let order: Vec<usize> = (0..6)
        .map(|n| env.get_vip().unwrap_or_else(|e| panic!("GET {n}: {e}")))
        .collect();
    for w in order.windows(2) {
        assert_eq!(w[1], (w[0] + 1) % MEMBERS, "round-robin order {order:?}");
    }
    let after = env.fp().counters().unwrap();
    assert_eq!(after.new_flows - before.new_flows, 6, "{after:?}");
    assert_eq!(
        after.passed("no_flow"),
        before.passed("no_flow"),
        "{after:?}"
    );
    assert_eq!(
        after.passed("not_service"),
        before.passed("not_service"),
        "{after:?}"
    );
    assert!(after.packets - before.packets >= 6 * 2 * 5, "{after:?}");
    assert!(
        after.bytes - before.bytes >= 6 * BODY_LEN as u64,
        "{after:?}"
    );
    assert!(after.drops.iter().all(|(_, n)| *n == 0), "{after:?}");
    let lb_after = tcp_counters(env.lab.lb());
    assert_eq!(
        (lb_after.0, lb_after.1),
        (lb_before.0, lb_before.1),
        "the lb kernel's TCP stack saw segments of fast-path flows"
    );
    for (i, s) in env.servers.iter().enumerate() {
        assert!(s.requests() >= 3, "m{i}: {} requests", s.requests());
    }
    let flows = env.fp().flow_table().unwrap();
    assert_eq!(flows.len(), 6, "{flows:?}");
    assert!(flows.iter().all(|f| f.reply_entry && f.vip == env.vip()));
    assert!(flows
        .iter()
        .all(|f| *f.snat.ip() == env.lab.lb_client_side_ip()
            && (20_000..=32_767).contains(&f.snat.port())));

    // 3. Drain: m1 unusable -> no new flows to it; established flows (to m1
    // and to the others) go on.
    let mut conns: Vec<(usize, KeepAlive)> = Vec::new();
    for _ in 0..MEMBERS {
        let mut k =
            KeepAlive::open(env.lab.client(), env.vip(), TIMEOUT).expect("keep-alive connect");
        let m = check_body(&k.get().expect("keep-alive GET"));
        conns.push((m, k));
    }
    let mut seen: Vec<usize> = conns.iter().map(|c| c.0).collect();
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    let drained: Vec<(usize, bool)> = (0..MEMBERS).map(|i| (i, i != 1)).collect();
    let svc = env.service(&drained, Selection::RoundRobin);
    env.fp().set_services(&[svc]).unwrap();
    let order: Vec<usize> = (0..6).map(|_| env.get_vip().unwrap()).collect();
    assert!(!order.contains(&1), "unusable m1 got new flows: {order:?}");
    assert!(order.contains(&0) && order.contains(&2), "{order:?}");
    for (m, k) in conns.iter_mut() {
        let body = k
            .get()
            .unwrap_or_else(|e| panic!("established flow to m{m}: {e}"));
        assert_eq!(check_body(&body), *m);
    }

    // 4. Remove m1: its flow ends, the others go on.
    let kept: Vec<(usize, bool)> = vec![(0, true), (2, true)];
    let svc = env.service(&kept, Selection::RoundRobin);
    env.fp().set_services(&[svc]).unwrap();
    let flows = env.fp().flow_table().unwrap();
    assert!(
        flows.iter().all(|f| f.member != env.member_addr(1)),
        "flows to the removed member left: {flows:?}"
    );
    for (m, k) in conns.iter_mut() {
        let got = k.get();
        if *m == 1 {
            assert!(got.is_err(), "flow to removed m1 still works");
        } else {
            let body = got.unwrap_or_else(|e| panic!("flow to m{m} after removing m1: {e}"));
            assert_eq!(check_body(&body), *m);
        }
    }
    let c = env.fp().counters().unwrap();
    assert!(c.passed("no_flow") >= 1, "{c:?}");
    drop(conns);

    // 5. Maglev: the client goes where the userspace mirror says: first
    // its own slot, then (own slot's member unusable) lbd's walk.
    let client = env.lab.client_ip();
    let own_slot = (client_hash(client) % MAGLEV_TABLE_SIZE as u64) as usize;
    let mut table: Vec<u16> = (0..MAGLEV_TABLE_SIZE).map(|s| (s * 7 % 3) as u16).collect();
    table[own_slot] = 1;
    let rr_all = smooth_weighted_slots(&[(0, 1), (1, 1), (2, 1)]);
    assert_eq!(maglev_pick(&table, &rr_all, |_| true, client), Some(1));
    let svc = env.service(&all, Selection::Maglev(table.clone()));
    env.fp().set_services(&[svc]).unwrap();
    for _ in 0..3 {
        assert_eq!(env.get_vip().unwrap(), 1, "Maglev pick for {client}");
    }
    let members3: Vec<(usize, bool)> = vec![(0, true), (1, false), (2, true)];
    let svc = env.service(&members3, Selection::Maglev(table.clone()));
    env.fp().set_services(&[svc]).unwrap();
    let rr = smooth_weighted_slots(&[(0, 1), (2, 1)]);
    let want = maglev_pick(&table, &rr, |i| i != 1, client).unwrap() as usize;
    assert_ne!(want, 1);
    for _ in 0..3 {
        assert_eq!(env.get_vip().unwrap(), want, "Maglev walk for {client}");
    }

    // Invalid configurations are refused and change nothing.
    let good = env.service(&members3, Selection::Maglev(table.clone()));
    let mut short = good.clone();
    short.selection = Selection::Maglev(vec![0; 1000]);
    let mut out_of_range = good.clone();
    out_of_range.selection = Selection::Maglev(vec![3; MAGLEV_TABLE_SIZE]);
    let mut dup_member = good.clone();
    dup_member.members.push(dup_member.members[0].clone());
    for (what, bad) in [
        ("short table", vec![short]),
        ("index out of range", vec![out_of_range]),
        ("duplicate member", vec![dup_member]),
        ("duplicate VIP", vec![good.clone(), good.clone()]),
    ] {
        match env.fp().set_services(&bad) {
            Err(Error::Invalid(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(env.get_vip().unwrap(), want, "after refused updates");

    // 6. Expiry: nothing is idle for an hour; everything after a pause,
    // and an expired flow's next packet goes to the kernel: reset.
    let mut open = KeepAlive::open(env.lab.client(), env.vip(), TIMEOUT).unwrap();
    check_body(&open.get().unwrap());
    let kept = env.fp().expire_idle(Duration::from_secs(3600)).unwrap();
    check_body(&open.get().expect("flow survives a 1 h idle expiry"));
    let flows = env.fp().flows().unwrap();
    assert!(flows >= 1);
    assert_eq!(kept.flows, flows, "{kept:?}");
    std::thread::sleep(Duration::from_millis(300));
    let expired = env.fp().expire_idle(Duration::from_millis(100)).unwrap();
    assert!(expired.ended >= 1, "{expired:?}");
    assert_eq!(expired.flows, 0, "{expired:?}");
    assert_eq!(env.fp().flows().unwrap(), 0);
    assert!(env.fp().uses_batches(), "batch map operations refused");
    assert!(open.get().is_err(), "expired flow still works");
    drop(open);

    // 7. Services removed: no new flows, nothing left.
    env.fp().set_services(&[]).unwrap();
    assert!(env.get_vip().is_err(), "VIP still served after removal");

    // No checksum errors anywhere.
    for ns in std::iter::once(env.lab.client()).chain(env.lab.members().iter()) {
        let (_, _, csum) = tcp_counters(ns);
        assert_eq!(csum, 0, "TCP checksum errors in {}", ns.name);
    }
    let c = env.fp().counters().unwrap();
    eprintln!("{mode:?}: {c:?}");
}

#[test]
fn xdp_nat_native() {
    scenario(AttachMode::Native);
}

#[test]
fn xdp_nat_generic() {
    scenario(AttachMode::Generic);
}

/// The program caches each flow direction's next hop (`LB_HOP_CACHE_NS`,
/// one second) instead of a `bpf_fib_lookup` per packet. A member whose MAC
/// address changes (its lb-side neighbour entry follows, as ARP would) must
/// get an established flow's packets again once the cached hop expires:
/// until then they go to the old address and the member drops them, and
/// TCP retransmits.
#[test]
fn xdp_established_flows_follow_a_neighbour_change() {
    let Some(mut env) = setup(AttachMode::Native) else {
        return;
    };
    let svc = env.service(&[(0, true)], Selection::RoundRobin);
    env.fp().set_services(&[svc]).expect("set_services");
    health_check(&env);
    let mut k = KeepAlive::open(env.lab.client(), env.vip(), TIMEOUT).expect("keep-alive connect");
    for _ in 0..3 {
        assert_eq!(check_body(&k.get().expect("keep-alive GET")), 0);
    }
    let mac = "02:00:00:00:be:ef";
    let member_if = env.lab.member_if(0).to_string();
    env.lab.members()[0]
        .sh(&["ip", "link", "set", "dev", &member_if, "address", mac])
        .expect("new member MAC");
    let member_ip = env.lab.member_ip(0).to_string();
    let lb_if = env.lab.lb_member_if(0).to_string();
    env.lab
        .lb()
        .sh(&[
            "ip",
            "neigh",
            "replace",
            &member_ip,
            "lladdr",
            mac,
            "dev",
            &lb_if,
            "nud",
            "reachable",
        ])
        .expect("neighbour entry follows");
    let changed = Instant::now();
    let body = k
        .get()
        .unwrap_or_else(|e| panic!("the established flow never reached the new MAC: {e}"));
    assert_eq!(check_body(&body), 0);
    eprintln!(
        "established flow recovered {:?} after the MAC change",
        changed.elapsed()
    );
    // New flows look the hop up at once.
    assert_eq!(env.get_vip().expect("a new flow"), 0);
}

/// Needs no privileges: an unknown interface is reported as such (or the
/// build has no XDP at all).
#[test]
fn xdp_attach_unknown_interface() {
    match FastPath::attach(&["lbd-nonexistent0".to_string()]) {
        Err(Error::NoSuchInterface(name)) => assert_eq!(name, "lbd-nonexistent0"),
        Err(Error::NotBuilt) => assert!(!lbd_ebpf::built()),
        other => panic!("{other:?}"),
    }
    match attach_pass("lbd-nonexistent0") {
        Err(Error::NoSuchInterface(_)) | Err(Error::NotBuilt) => {}
        other => panic!("{other:?}"),
    }
    // Unprivileged: a clear permission error (as root this would attach to
    // the host's loopback, so it is not tried).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        match FastPath::attach(&["lo".to_string()]) {
            Err(e @ Error::PermissionDenied { .. }) => eprintln!("as expected: {e}"),
            Err(Error::NotBuilt) => {}
            other => panic!("unprivileged attach: {other:?}"),
        }
    }
}

/// A small generic-mode set-up: a lab with `members` HTTP servers (checked
/// once from the lb ns, which resolves their neighbour entries), the
/// program attached with `snat_ports`, and one round-robin service on the
/// VIP over all members. `None`: skipped.
fn small_generic_lab(
    members: usize,
    snat_ports: std::ops::RangeInclusive<u16>,
) -> Option<(Lab, Vec<HttpServer>, FastPath)> {
    let lab = match Lab::new(members) {
        Ok(lab) => lab,
        Err(e) => {
            skip(&e);
            return None;
        }
    };
    lab.add_vip(VIP).expect("add_vip");
    lab.complete_checksums().expect("checksum offload off");
    let mut servers = Vec::new();
    for i in 0..members {
        let addr = SocketAddrV4::new(lab.member_ip(i), MEMBER_PORT);
        servers
            .push(HttpServer::start(&lab.members()[i], addr, &format!("m{i}"), BODY_LEN).unwrap());
        http_get(lab.lb(), addr, "/", TIMEOUT).unwrap();
    }
    let mut ifs = vec![lab.lb_client_if().to_string()];
    ifs.extend((0..members).map(|i| lab.lb_member_if(i).to_string()));
    let opts = Options {
        mode: Some(AttachMode::Generic),
        conntrack_entries: 1024,
        snat_ports,
        ..Options::default()
    };
    let mut fp = match lab.lb().run(move || FastPath::attach_with(&ifs, &opts)) {
        Ok(fp) => fp,
        Err(e @ (Error::PermissionDenied { .. } | Error::NotBuilt)) => {
            skip(&e.to_string());
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let svc = Service {
        vip: SocketAddrV4::new(VIP, VIP_PORT),
        snat_ip: lab.lb_client_side_ip(),
        members: (0..members)
            .map(|i| Member {
                addr: SocketAddrV4::new(lab.member_ip(i), MEMBER_PORT),
                weight: 1,
                usable: true,
            })
            .collect(),
        selection: Selection::RoundRobin,
        full: false,
    };
    fp.set_services(&[svc]).unwrap();
    Some((lab, servers, fp))
}

/// SNAT ports are unique per (snat_ip, member): with a one-port range, one
/// flow per member at a time; a third SYN is dropped (counted) until a flow
/// ends.
#[test]
fn xdp_snat_ports_exhausted() {
    let Some((lab, servers, mut fp)) = small_generic_lab(2, 20_000..=20_000) else {
        return;
    };
    let vip = SocketAddrV4::new(VIP, VIP_PORT);

    let mut a = KeepAlive::open(lab.client(), vip, TIMEOUT).expect("first flow");
    let mut b = KeepAlive::open(lab.client(), vip, TIMEOUT).expect("second flow, other member");
    let (ma, mb) = (check_body(&a.get().unwrap()), check_body(&b.get().unwrap()));
    assert_ne!(ma, mb);
    let flows = fp.flow_table().unwrap();
    assert_eq!(flows.len(), 2);
    assert!(flows.iter().all(|f| f.snat.port() == 20_000), "{flows:?}");

    // Round robin picks a member again: its only port is taken.
    let client = lab.client().clone();
    let third = client
        .run(move || TcpStream::connect_timeout(&SocketAddr::V4(vip), Duration::from_millis(1500)));
    assert!(third.is_err(), "third flow got a port");
    let c = fp.counters().unwrap();
    assert!(c.dropped("snat_ports_exhausted") >= 1, "{c:?}");
    assert_eq!(c.new_flows, 2, "{c:?}");

    // The established flows are unaffected; once they are gone, the port
    // is free again.
    check_body(&a.get().unwrap());
    check_body(&b.get().unwrap());
    drop((a, b));
    std::thread::sleep(Duration::from_millis(200));
    fp.expire_idle(Duration::from_millis(50)).unwrap();
    assert_eq!(fp.flows().unwrap(), 0);
    let mut d = KeepAlive::open(lab.client(), vip, TIMEOUT).expect("port free again");
    check_body(&d.get().unwrap());
    drop(d);
    drop(fp);
    drop(servers);
}

/// A `Connection: close` GET of `vip` from `ns`, the client socket bound to
/// `port` (SO_REUSEADDR) first; returns the member that answered.
fn get_from_port(ns: &Ns, vip: SocketAddrV4, port: u16) -> Result<usize, String> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    ns.run(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns;
        // `addr` outlives the calls that read it.
        let stream = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(format!("socket: {}", std::io::Error::last_os_error()));
            }
            let stream = TcpStream::from_raw_fd(fd);
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let local = sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
            if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
                return Err(format!("bind :{port}: {}", std::io::Error::last_os_error()));
            }
            let remote = sockaddr(vip);
            if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
                return Err(format!("connect: {}", std::io::Error::last_os_error()));
            }
            stream
        };
        let mut stream = stream;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(
                format!("GET / HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(|e| format!("receive: {e}"))?;
        let start = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no response head")?;
        Ok(check_body(&answer[start + 4..]))
    })
}

/// SNAT ports are handed out in order per member, so a (SNAT port, member)
/// pair comes back as late as possible (the member may hold the previous
/// flow on it in TIME_WAIT); a client that reuses its 4-tuple after a
/// close keeps its member and SNAT port (the member's TIME_WAIT accepts
/// the SYN: same 4-tuple, increasing timestamps).
#[test]
fn xdp_snat_ports_in_order_and_kept_when_the_client_reuses_its_port() {
    const PORTS: std::ops::RangeInclusive<u16> = 20_000..=20_009;
    let Some((lab, server, mut fp)) = small_generic_lab(1, PORTS) else {
        return;
    };
    let vip = SocketAddrV4::new(VIP, VIP_PORT);

    // Six flows, one after the other: each takes the port after the
    // previous one's (wrapping inside the range), closed flows keep theirs.
    let mut seen: Vec<SocketAddrV4> = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..6 {
        assert_eq!(
            http_get(lab.client(), vip, "/", TIMEOUT).map(|b| check_body(&b)),
            Ok(0)
        );
        let flows = fp.flow_table().unwrap();
        let new: Vec<_> = flows.iter().filter(|f| !seen.contains(&f.client)).collect();
        assert_eq!(new.len(), 1, "{flows:?}");
        seen.push(new[0].client);
        ports.push(new[0].snat.port());
    }
    let next = |p: u16| {
        if p == *PORTS.end() {
            *PORTS.start()
        } else {
            p + 1
        }
    };
    for w in ports.windows(2) {
        assert_eq!(w[1], next(w[0]), "SNAT ports not in order: {ports:?}");
    }

    // The same client port twice: the server closes first, so the client
    // keeps no TIME_WAIT and can reuse its 4-tuple at once.
    let client_port = 40_123;
    assert_eq!(get_from_port(lab.client(), vip, client_port), Ok(0));
    let find = |fp: &FastPath| {
        fp.flow_table()
            .unwrap()
            .into_iter()
            .find(|f| f.client.port() == client_port)
            .expect("flow of the fixed client port")
    };
    let first = find(&fp);
    // Wait for the close to finish on both ends (bounded).
    for _ in 0..50 {
        if find(&fp).closed {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(find(&fp).closed, "{first:?}");
    let before = fp.counters().unwrap().new_flows;
    assert_eq!(get_from_port(lab.client(), vip, client_port), Ok(0));
    let second = find(&fp);
    assert_eq!(
        second.snat, first.snat,
        "the reused 4-tuple got another SNAT port"
    );
    assert_eq!(second.member, first.member);
    assert_eq!(fp.counters().unwrap().new_flows, before + 1);

    // Another range applies to new flows; the existing ones keep theirs.
    let kept = fp.flow_table().unwrap().len();
    fp.set_snat_ports(30_000..=30_009).unwrap();
    assert_eq!(
        http_get(lab.client(), vip, "/", TIMEOUT).map(|b| check_body(&b)),
        Ok(0)
    );
    let flows = fp.flow_table().unwrap();
    assert_eq!(flows.len(), kept + 1, "{flows:?}");
    let in_new = flows
        .iter()
        .filter(|f| (30_000..=30_009).contains(&f.snat.port()))
        .count();
    assert_eq!(in_new, 1, "{flows:?}");
    let (lo, hi) = (2, 1);
    assert!(fp.set_snat_ports(lo..=hi).is_err());
    assert_eq!(fp.options().snat_ports, 30_000..=30_009);
    drop(fp);
    drop(server);
}

/// Moving the program to other interfaces keeps its maps: a flow set up
/// before goes on, and the counters continue.
#[test]
fn xdp_set_interfaces_keeps_the_flows() {
    let Some((lab, servers, mut fp)) = small_generic_lab(2, 20_000..=32_767) else {
        return;
    };
    let vip = SocketAddrV4::new(VIP, VIP_PORT);
    let mut flow = KeepAlive::open(lab.client(), vip, TIMEOUT).expect("flow");
    let m = check_body(&flow.get().unwrap());
    let all = fp.interfaces();
    // Interface names are looked up in the calling thread's namespace.
    let set = |fp: FastPath, interfaces: Vec<String>| {
        lab.lb().run(move || {
            let mut fp = fp;
            let r = fp.set_interfaces(&interfaces);
            (fp, r)
        })
    };
    assert_eq!(all.len(), 3, "{all:?}");

    // Only the client side and the flow's member: the other member's
    // interface is detached.
    let fewer = vec![
        lab.lb_client_if().to_string(),
        lab.lb_member_if(m).to_string(),
    ];
    let (f, r) = set(fp, fewer.clone());
    fp = f;
    r.unwrap();
    assert_eq!(fp.interfaces(), fewer);
    assert_eq!(fp.mode(lab.lb_member_if(1 - m)), None);
    assert_eq!(check_body(&flow.get().expect("flow after detaching")), m);

    // Back to all three, in another order; a bad name changes nothing.
    let mut again = all.clone();
    again.reverse();
    let (f, r) = set(fp, again);
    fp = f;
    r.unwrap();
    let mut now = fp.interfaces();
    now.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(now, want);
    let (f, r) = set(fp, vec!["lbd-nosuch9".to_string()]);
    fp = f;
    assert!(matches!(r, Err(Error::NoSuchInterface(_))), "{r:?}");
    assert_eq!(fp.interfaces().len(), 3);
    assert_eq!(check_body(&flow.get().expect("flow after re-attaching")), m);
    let before = fp.counters().unwrap().new_flows;
    let other = (0..2)
        .map(|_| http_get(lab.client(), vip, "/", TIMEOUT).map(|b| check_body(&b)))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert!(other.contains(&(1 - m)), "{other:?}");
    assert_eq!(fp.counters().unwrap().new_flows, before + 2);
    drop(flow);
    drop(fp);
    drop(servers);
}

/// A full service takes no new flows (SYNs dropped, counted) while its
/// open flows go on; `expire_idle` counts the open flows per VIP.
#[test]
fn xdp_a_full_service_takes_no_new_flows() {
    let Some((lab, servers, mut fp)) = small_generic_lab(1, 20_000..=32_767) else {
        return;
    };
    let vip = SocketAddrV4::new(VIP, VIP_PORT);
    let mut flow = KeepAlive::open(lab.client(), vip, TIMEOUT).expect("flow");
    check_body(&flow.get().unwrap());
    assert_eq!(
        http_get(lab.client(), vip, "/", TIMEOUT).map(|b| check_body(&b)),
        Ok(0)
    );
    // The closed GET is not open once its FINs have passed the program
    // (they may still be on their way when http_get returns: wait for the
    // flow's state, bounded); the kept-alive flow is open throughout.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let expiry = loop {
        let expiry = fp.expire_idle(Duration::from_secs(3600)).unwrap();
        if expiry.open.get(&vip) == Some(&1) || std::time::Instant::now() > deadline {
            break expiry;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(expiry.open.get(&vip), Some(&1), "{expiry:?}");
    assert_eq!(expiry.flows, 2, "{expiry:?}");

    let service = |full| Service {
        vip,
        snat_ip: lab.lb_client_side_ip(),
        members: vec![Member {
            addr: SocketAddrV4::new(lab.member_ip(0), MEMBER_PORT),
            weight: 1,
            usable: true,
        }],
        selection: Selection::RoundRobin,
        full,
    };
    fp.set_services(&[service(true)]).unwrap();
    let client = lab.client().clone();
    let refused = client
        .run(move || TcpStream::connect_timeout(&SocketAddr::V4(vip), Duration::from_millis(1500)));
    assert!(refused.is_err(), "a new flow on a full service");
    let c = fp.counters().unwrap();
    assert!(c.dropped("connection_limit") >= 1, "{c:?}");
    check_body(&flow.get().expect("the open flow of a full service"));

    fp.set_services(&[service(false)]).unwrap();
    assert_eq!(
        http_get(lab.client(), vip, "/", TIMEOUT).map(|b| check_body(&b)),
        Ok(0)
    );
    drop(flow);
    drop(fp);
    drop(servers);
}
