//! Active-standby with keepalived, in network namespaces: real keepalived
//! (Debian) and two real lbd, each pair in its own namespace on one
//! Ethernet segment (a bridge) with a client and a member beside them.
//! keepalived runs the example's check (`lbd ready`, see
//! `configs/keepalived/`) and moves the VIP:
//!
//! - lbd on the VIP's holder is killed (SIGKILL): the VIP moves to the
//!   other host; the time from the kill to the first successful new
//!   connection through the VIP is measured, and the connections that
//!   failed in between counted (the client tries every 50 ms);
//! - lbd comes back: the VIP comes back (preemption, the default);
//! - the holder's only member goes into maint (its pool has no usable
//!   member): the VIP moves too;
//! - with `nopreempt`, the VIP stays on the host it moved to when the
//!   first host's lbd is back.
//!
//! Needs root, `ip` and keepalived; skips with the reason otherwise (fails
//! under `LBD_TEST_REQUIRE_TOOLS`). Everything stays in the namespaces.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tools::available;
use common::*;
use lbd_test_support::netlab::{expected_body, http_get, HttpServer, Ns, Segment};

const KEEPALIVED: &str = "/usr/sbin/keepalived";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 198, 0, 100);
/// Hosts on the segment.
const CLIENT: usize = 0;
const LB_A: usize = 1;
const LB_B: usize = 2;
const MEMBER: usize = 3;
const BODY: usize = 100;
/// The issue's target is 3 s with `advert_int 1`; the test allows more
/// for a loaded machine and prints what it measured.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

fn lbd_config(member: SocketAddrV4) -> String {
    format!(
        "[global]\ndrain_timeout = \"1s\"\n\n[admin]\nbind = \"127.0.0.1:8404\"\n\n\
         [[listener]]\nname = \"vip\"\nbind = \"{VIP}:80\"\npool = \"p\"\nfreebind = true\n\n\
         [[pool]]\nname = \"p\"\n\n[[pool.member]]\naddress = \"{}\"\nport = {}\n",
        member.ip(),
        member.port()
    )
}

/// The example's VRRP settings, for host `name` (`nopreempt` with
/// `preempt` false: then `state` must be BACKUP).
fn keepalived_config(name: &str, state: &str, priority: u32, preempt: bool) -> String {
    let lbd = env!("CARGO_BIN_EXE_lbd");
    let nopreempt = if preempt { "" } else { "  nopreempt\n" };
    format!(
        "global_defs {{\n  router_id {name}\n  script_user root\n  enable_script_security\n}}\n\
         vrrp_script lbd_ready {{\n  script \"{lbd} ready --admin 127.0.0.1:8404 --pools any \
         --timeout 1s\"\n  interval 1\n  timeout 2\n  fall 2\n  rise 2\n}}\n\
         vrrp_instance lbd_vip {{\n  state {state}\n{nopreempt}  interface eth0\n  virtual_router_id 51\n\
           priority {priority}\n  advert_int 1\n  authentication {{\n    auth_type PASS\n\
             auth_pass lbdvip01\n  }}\n  virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n\
           track_script {{\n    lbd_ready\n  }}\n}}\n"
    )
}

/// A process in `ns`, its output to `log`; killed on drop.
struct InNs(Child);

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command, log: &Path) -> InNs {
    let file = std::fs::File::create(log).expect("log");
    let err = file.try_clone().expect("log");
    InNs(
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawn"),
    )
}

fn start_lbd(ns: &Ns, dir: &Path, name: &str, member: SocketAddrV4) -> InNs {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, lbd_config(member)).expect("config");
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_lbd"));
    cmd.args(["--workers", "1", "run", "-c"]).arg(&config);
    spawn(cmd, &dir.join(format!("{name}.log")))
}

fn start_keepalived(
    ns: &Ns,
    dir: &Path,
    name: &str,
    (state, priority, preempt): (&str, u32, bool),
) -> InNs {
    let config = dir.join(format!("{name}.conf"));
    std::fs::write(&config, keepalived_config(name, state, priority, preempt)).expect("config");
    let file = |what: &str| dir.join(format!("{name}.{what}"));
    let mut cmd = ns.command(KEEPALIVED);
    cmd.args(["-n", "-l", "-D", "-f"])
        .arg(&config)
        .arg("-p")
        .arg(file("pid"))
        .arg("-r")
        .arg(file("vrrp.pid"))
        .arg("-c")
        .arg(file("checkers.pid"));
    spawn(cmd, &file("keepalived.log"))
}

fn holds_vip(ns: &Ns) -> bool {
    ns.sh(&["ip", "-br", "addr", "show", "dev", "eth0"])
        .is_ok_and(|out| out.contains(&format!("{VIP}/")))
}

/// Waits (at most `within`) until `ns` holds the VIP and the other does not.
fn wait_holder(holder: &Ns, other: &Ns, within: Duration, logs: &Path) {
    let deadline = Instant::now() + within;
    while !holds_vip(holder) || holds_vip(other) {
        assert!(
            Instant::now() < deadline,
            "{} never took the VIP alone within {within:?}\n{}",
            holder.name,
            dump(logs)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dump(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", path.display()));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// One new connection through the VIP.
fn through_vip(client: &Ns) -> bool {
    let vip = SocketAddrV4::new(VIP, 80);
    http_get(client, vip, "/", Duration::from_millis(500))
        .is_ok_and(|body| body == expected_body("m", BODY))
}

/// From now, tries a new connection every 50 ms until one succeeds (at
/// most `bound`): how long it took and how many failed before.
fn until_served(client: &Ns, bound: Duration) -> (Duration, u32) {
    let start = Instant::now();
    let mut failed = 0;
    while start.elapsed() < bound {
        if through_vip(client) {
            return (start.elapsed(), failed);
        }
        failed += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing served through the VIP within {bound:?} ({failed} failed)");
}

fn set_member(lb: &Ns, member: SocketAddrV4, state: &str) {
    let body = format!("{{\"admin_state\": \"{state}\"}}");
    let request = format!(
        "PUT /api/pools/p/members/{member} HTTP/1.0\r\nHost: lbd\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = lb.run(move || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:8404")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    });
    let answer = answer.expect("admin API");
    assert_eq!(answer.split_whitespace().nth(1), Some("200"), "{answer}");
}

/// The segment with its member serving; `None` (skipped) without
/// keepalived or network namespaces. Fields drop in order: the member's
/// server stops before the namespaces go.
struct Stage {
    _server: HttpServer,
    segment: Segment,
    dir: std::path::PathBuf,
    member: SocketAddrV4,
}

impl Stage {
    fn new() -> Option<Stage> {
        if !available(KEEPALIVED, "keepalived") {
            return None;
        }
        let segment = match Segment::new(4) {
            Ok(s) => s,
            Err(e) => {
                lbd_test_support::skip(&e);
                return None;
            }
        };
        let member = SocketAddrV4::new(Segment::address(MEMBER), 8080);
        let server = HttpServer::start(segment.host(MEMBER), member, "m", BODY).expect("member");
        Some(Stage {
            _server: server,
            segment,
            dir: scratch_dir(),
            member,
        })
    }
}

#[test]
fn keepalived_moves_the_vip_when_lbd_cannot_serve() {
    let Some(stage) = Stage::new() else {
        return;
    };
    let (segment, dir, member) = (&stage.segment, &stage.dir, stage.member);
    let (client, a, b) = (segment.host(CLIENT), segment.host(LB_A), segment.host(LB_B));
    let mut lbd_a = Some(start_lbd(a, dir, "lbd-a", member));
    let _lbd_b = start_lbd(b, dir, "lbd-b", member);
    let _ka = start_keepalived(a, dir, "ka", ("MASTER", 150, true));
    let _kb = start_keepalived(b, dir, "kb", ("BACKUP", 100, true));
    wait_holder(a, b, Duration::from_secs(20), dir);
    let (_, _) = until_served(client, Duration::from_secs(10));

    // The holder's lbd dies.
    drop(lbd_a.take());
    let (took, failed) = until_served(client, FAILOVER_BOUND);
    eprintln!("failover after SIGKILL of lbd: {took:?}, {failed} failed connections");
    assert!(holds_vip(b), "served, but not by b?\n{}", dump(dir));

    // It comes back: preempted back to a once its check passes twice.
    lbd_a = Some(start_lbd(a, dir, "lbd-a2", member));
    let back = Instant::now();
    wait_holder(a, b, Duration::from_secs(20), dir);
    eprintln!("VIP back on a {:?} after its lbd restarted", back.elapsed());
    let (_, _) = until_served(client, Duration::from_secs(10));

    // The holder's only member goes into maint: the VIP moves, and b
    // (whose member is fine) serves.
    let event = Instant::now();
    set_member(a, member, "maint");
    let (took_maint, failed_maint) = until_served_by(client, b, FAILOVER_BOUND, dir);
    eprintln!(
        "failover after a's member went into maint: {:?}, {failed_maint} failed connections \
         (measured from the API call: {:?})",
        took_maint,
        event.elapsed()
    );
    drop(lbd_a);
}

/// Like [`until_served`], counting only once `holder` holds the VIP.
fn until_served_by(client: &Ns, holder: &Ns, bound: Duration, logs: &Path) -> (Duration, u32) {
    let start = Instant::now();
    let mut failed = 0;
    while start.elapsed() < bound {
        let served = through_vip(client);
        if served && holds_vip(holder) {
            return (start.elapsed(), failed);
        }
        if !served {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} did not serve the VIP within {bound:?}\n{}",
        holder.name,
        dump(logs)
    );
}

/// With `nopreempt` (both hosts BACKUP), the VIP stays on the host it
/// failed over to when the first one's lbd is back. Which host wins the
/// first election depends on whose check passes first: the test follows
/// whichever it is.
#[test]
fn without_preemption_the_vip_stays_where_it_went() {
    let Some(stage) = Stage::new() else {
        return;
    };
    let (segment, dir, member) = (&stage.segment, &stage.dir, stage.member);
    let client = segment.host(CLIENT);
    let hosts = [segment.host(LB_A), segment.host(LB_B)];
    let mut lbds = [
        Some(start_lbd(hosts[0], dir, "lbd-a", member)),
        Some(start_lbd(hosts[1], dir, "lbd-b", member)),
    ];
    let _ka = start_keepalived(hosts[0], dir, "ka", ("BACKUP", 150, false));
    let _kb = start_keepalived(hosts[1], dir, "kb", ("BACKUP", 100, false));
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        match (holds_vip(hosts[0]), holds_vip(hosts[1])) {
            (true, false) => break 0,
            (false, true) => break 1,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no single holder\n{}", dump(dir));
        std::thread::sleep(Duration::from_millis(50));
    };
    let (holder, other) = (hosts[first], hosts[1 - first]);
    let (_, _) = until_served(client, Duration::from_secs(10));

    drop(lbds[first].take());
    let (took, failed) = until_served_by(client, other, FAILOVER_BOUND, dir);
    eprintln!("nopreempt: failover after SIGKILL of lbd: {took:?}, {failed} failed connections");
    lbds[first] = Some(start_lbd(holder, dir, "lbd-back", member));
    // Longer than the preempting case took to move the VIP back (5.3 s).
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        holds_vip(other) && !holds_vip(holder),
        "the VIP moved back despite nopreempt\n{}",
        dump(dir)
    );
    let (_, _) = until_served_by(client, other, Duration::from_secs(5), dir);
}
