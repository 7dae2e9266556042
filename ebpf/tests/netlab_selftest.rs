//! Self-test of the network-namespace lab (`lbd_test_support::netlab`): a
//! client reaches three members through the lb namespace (kernel forwarding), bodies
//! arrive intact, processes and namespaces are gone after Drop (also after a
//! panic). Skips when namespaces cannot be created (not root), unless
//! `LBD_TEST_REQUIRE_TOOLS` is set: then it fails.

use lbd_test_support::netlab::{expected_body, http_get, HttpServer, Lab, Ns};
use lbd_test_support::skip;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
const BODY_LEN: usize = 100_000;

fn lab_or_skip(members: usize) -> Option<Lab> {
    match Lab::new(members) {
        Ok(lab) => Some(lab),
        Err(e) => {
            skip(&format!("the lab cannot be built: {e}"));
            None
        }
    }
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(list: &str, name: &str) -> bool {
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn assert_same_body(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: body differs at byte {at} (got {} bytes, want {})",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn client_reaches_every_member_through_the_lb_and_drop_cleans_up() {
    let Some(lab) = lab_or_skip(3) else { return };
    let names = lab.namespace_names();
    assert_eq!(names.len(), 5);
    let list = netns_list();
    for n in &names {
        assert!(listed(&list, n), "{n} not in `ip netns list`:\n{list}");
    }

    // Forwarding on in the lb ns only.
    assert_eq!(
        lab.lb()
            .sh(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        lab.client()
            .sh(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .unwrap()
            .trim(),
        "0"
    );
    // Interfaces live where the accessors say.
    let lb_links = lab.lb().sh(&["ip", "-o", "link"]).unwrap();
    for want in [lab.lb_client_if(), lab.lb_member_if(0), lab.lb_member_if(2)] {
        assert!(
            lb_links.contains(&format!(" {want}@")),
            "{want}: {lb_links}"
        );
    }
    let m1_addrs = lab.members()[1]
        .sh(&["ip", "-o", "-4", "addr", "show", "dev", lab.member_if(1)])
        .unwrap();
    assert!(
        m1_addrs.contains(&format!("{}/24", lab.member_ip(1))),
        "{m1_addrs}"
    );
    let c_routes = lab.client().sh(&["ip", "route"]).unwrap();
    assert!(
        c_routes.contains(&format!("default via {}", lab.lb_client_side_ip())),
        "{c_routes}"
    );

    let servers: Vec<HttpServer> = (0..3)
        .map(|i| {
            let addr = SocketAddrV4::new(lab.member_ip(i), 8080);
            HttpServer::start(&lab.members()[i], addr, &format!("m{i}"), BODY_LEN).unwrap()
        })
        .collect();

    for (i, server) in servers.iter().enumerate() {
        let addr = SocketAddrV4::new(lab.member_ip(i), 8080);
        let body = http_get(lab.client(), addr, "/hello", TIMEOUT).unwrap();
        assert_same_body(
            &body,
            &expected_body(&format!("m{i}"), BODY_LEN),
            &format!("m{i}"),
        );
        assert_eq!(server.requests(), 1);
    }

    // Keep-alive: two requests on one connection, from the client ns.
    let addr = SocketAddrV4::new(lab.member_ip(2), 8080);
    let two = lab.client().run(move || {
        let mut s = TcpStream::connect_timeout(&addr.into(), TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let req = format!("GET /a HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(format!("{req}{req}").as_bytes()).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY_LEN}\r\nConnection: keep-alive\r\n\r\n"
        );
        let mut buf = vec![0u8; 2 * (head.len() + BODY_LEN)];
        s.read_exact(&mut buf).unwrap();
        (head, buf)
    });
    let (head, buf) = two;
    let one = [head.as_bytes(), &expected_body("m2", BODY_LEN)].concat();
    assert_same_body(&buf[..one.len()], &one, "keep-alive 1");
    assert_same_body(&buf[one.len()..], &one, "keep-alive 2");
    assert_eq!(servers[2].requests(), 3);

    // A VIP on the lb's loopback, reachable from the client.
    let vip = Ipv4Addr::new(10, 199, 250, 1);
    lab.add_vip(vip).unwrap();
    lab.add_vip(vip).unwrap(); // idempotent
    let vip_server = HttpServer::start(lab.lb(), SocketAddrV4::new(vip, 80), "vip", 1000).unwrap();
    let body = http_get(lab.client(), SocketAddrV4::new(vip, 80), "/", TIMEOUT).unwrap();
    assert_same_body(&body, &expected_body("vip", 1000), "vip");
    drop(vip_server);

    // A process started in a namespace is killed by Drop.
    let mut sleeper = lab.lb().command("sleep").arg("60").spawn().unwrap();
    drop(servers);
    let t0 = Instant::now();
    drop(lab);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "Drop took {:?}",
        t0.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = sleeper.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "sleep in the lb ns survived Drop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());

    let list = netns_list();
    for n in &names {
        assert!(!listed(&list, n), "{n} still in `ip netns list`:\n{list}");
    }
}

#[test]
fn two_labs_at_once_reuse_addresses_without_clashing() {
    let Some(a) = lab_or_skip(1) else { return };
    let Some(b) = lab_or_skip(1) else { return };
    assert_eq!(a.member_ip(0), b.member_ip(0));
    let addr = SocketAddrV4::new(a.member_ip(0), 8080);
    let _sa = HttpServer::start(&a.members()[0], addr, "lab-a", 5000).unwrap();
    let _sb = HttpServer::start(&b.members()[0], addr, "lab-b", 5000).unwrap();
    for (lab, name) in [(&a, "lab-a"), (&b, "lab-b")] {
        let body = http_get(lab.client(), addr, "/", TIMEOUT).unwrap();
        assert_same_body(&body, &expected_body(name, 5000), name);
    }
    assert!(a
        .namespace_names()
        .iter()
        .all(|n| !b.namespace_names().contains(n)));
}

#[test]
fn deleting_a_namespace_removes_its_veths_peer() {
    let Some(lab) = lab_or_skip(2) else { return };
    let lb_if = lab.lb_member_if(1).to_string();
    assert!(lab.lb().sh(&["ip", "link", "show", "dev", &lb_if]).is_ok());
    let m1 = lab.members()[1].name.clone();
    let out = Command::new("ip")
        .args(["netns", "del", &m1])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.lb().sh(&["ip", "link", "show", "dev", &lb_if]).is_ok() {
        assert!(Instant::now() < deadline, "{lb_if} still in the lb ns");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The rest of the lab still works, and Drop copes with the missing ns.
    let addr = SocketAddrV4::new(lab.member_ip(0), 8080);
    let _s = HttpServer::start(&lab.members()[0], addr, "m0", 2000).unwrap();
    let body = http_get(lab.client(), addr, "/", TIMEOUT).unwrap();
    assert_same_body(&body, &expected_body("m0", 2000), "m0");
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let Some(probe) = lab_or_skip(0) else { return };
    drop(probe);
    let names = std::sync::Mutex::new(Vec::new());
    let child = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let lab = Lab::new(1).unwrap();
        *names.lock().unwrap() = lab.namespace_names();
        let addr = SocketAddrV4::new(lab.member_ip(0), 8080);
        let _s = HttpServer::start(&lab.members()[0], addr, "m0", 10).unwrap();
        let p = lab.members()[0].command("sleep").arg("60").spawn().unwrap();
        *child.lock().unwrap() = Some(p);
        panic!("deliberate");
    });
    assert!(r.is_err());
    // Killed by the lab's Drop during unwinding: already exited.
    let mut p = child.into_inner().unwrap().unwrap();
    assert!(p.try_wait().unwrap().is_some(), "sleep survived the panic");
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    let list = netns_list();
    for n in &names {
        assert!(!listed(&list, n), "{n} survived the panic:\n{list}");
    }
}

#[test]
fn ns_run_and_spawn_run_inside_the_namespace() {
    let Some(lab) = lab_or_skip(1) else { return };
    let own = |ns: &Ns| ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    let root = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let c = own(lab.client());
    let m = lab.members()[0]
        .spawn(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .join()
        .unwrap();
    assert_ne!(c, root);
    assert_ne!(m, root);
    assert_ne!(c, m);
    // The calling thread itself never moved.
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        root
    );
    // Errors come back as Err with stderr.
    let e = lab
        .client()
        .sh(&["ip", "link", "show", "dev", "nosuchif"])
        .unwrap_err();
    assert!(e.contains("nosuchif"), "{e}");
}
