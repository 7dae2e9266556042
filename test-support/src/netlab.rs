//! A network-namespace test lab: a client, a load balancer and N members, each
//! in its own network namespace, wired with veth pairs and routed through the
//! lb namespace. Used by the XDP fast-path tests, by lbd's integration tests
//! and by benchmarks. Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and `ip`
//! (iproute2); [`Lab::new`] returns `Err` with the reason otherwise, so
//! callers can skip.
//!
//! # Topology
//!
//! ```text
//!   client ns                 lb ns                     member i ns
//!  [c-lb 10.199.0.2] <-> [lb-c 10.199.0.1]
//!                        [lb-m<i> 10.199.<i+1>.1] <-> [m<i>-lb 10.199.<i+1>.2]
//! ```
//!
//! * The client's and every member's default route point at the lb's address
//!   on their link; the lb ns has `ip_forward=1` and `rp_filter=0` (inside the
//!   namespace only), so the client reaches every member directly through the
//!   lb (plain kernel forwarding) and the lb reaches everybody.
//! * IPv6 is disabled on the veths (not on `lo`), so there is no neighbour
//!   discovery / MLD noise on the links: XDP counters only see what the test
//!   sends (plus ARP).
//! * Addresses repeat across labs: they only exist inside the lab's own
//!   namespaces, which have no link to the root namespace, so nothing a test
//!   sends can leave the machine. Interface names are created directly inside
//!   the namespaces (`ip link add name X netns A type veth peer name Y netns
//!   B`) and never appear in the root namespace, so they are short fixed
//!   names. Namespace names are `lbd-<pid>-<n>-c`, `-lb`, `-m0`, ... (`n` a
//!   process-wide counter), unique across parallel tests and processes.
//! * 10.199.200.0/24 .. 10.199.255.0/24 are never used by links: good VIPs
//!   (see [`Lab::add_vip`]).
//!
//! # Cleanup
//!
//! Dropping the [`Lab`] (also while unwinding from a panic) sends SIGTERM,
//! then SIGKILL, to every process living in its namespaces (e.g. started with
//! [`Ns::command`]), then `ip netns del`s them; deleting a namespace destroys
//! its end of each veth, which destroys the peer too. Threads of the test
//! process itself that sit in a namespace ([`Ns::spawn`]) keep it alive (but
//! unnamed) until they end: stop servers ([`HttpServer`] stops on drop) before
//! the lab goes. Namespaces left by a test process that was SIGKILLed are
//! removed by the first [`Lab::new`] of a later process.
//!
//! # XDP
//!
//! The veths in the lb ns take native (driver mode) XDP programs as they are.
//! Attach them with the interface names from [`Lab::lb_client_if`] /
//! [`Lab::lb_member_if`], from a thread inside the lb ns ([`Ns::run`]) or with
//! `ip -n <lb> link set dev <if> xdpdrv ...`. Veth specifics:
//!
//! * native `XDP_REDIRECT` into a veth (`bpf_redirect*` to `lb-m<i>`) only
//!   delivers if the *peer* of that veth (`m<i>-lb`, in the member ns) has an
//!   XDP program attached, or GRO enabled (`ethtool -K <peer> gro on`, kernel
//!   5.13+); otherwise frames are dropped (counted in the veth's xdp stats);
//! * `XDP_TX` on a veth needs an XDP program on its peer too;
//!
//! so callers attach a trivial `XDP_PASS` program on the peers themselves
//! (from [`Ns::run`] in the member / client ns, names from
//! [`Lab::member_if`] / [`Lab::client_if`]).
//!
//! Packets sent by local sockets over a veth carry a partial TCP checksum
//! (checksum offload), which an XDP program that rewrites addresses and
//! updates the checksum incrementally (as if it were complete) breaks:
//! [`Lab::complete_checksums`] turns TX checksum offload off on the client
//! and member ends, so frames arrive complete, as from a real NIC.
//!
//! # Example
//!
//! ```no_run
//! use lbd_test_support::netlab::{expected_body, http_get, HttpServer, Lab};
//! use std::net::SocketAddrV4;
//! use std::time::Duration;
//!
//! let lab = match Lab::new(2) {
//!     Ok(lab) => lab,
//!     Err(e) => return eprintln!("skipping: {e}"),
//! };
//! let addr = SocketAddrV4::new(lab.member_ip(0), 8080);
//! let _server = HttpServer::start(&lab.members()[0], addr, "m0", 10_000).unwrap();
//! let body = http_get(lab.client(), addr, "/", Duration::from_secs(5)).unwrap();
//! assert_eq!(body, expected_body("m0", 10_000));
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Where `ip netns` keeps its namespaces (`/var/run` links here).
const NETNS_DIR: &str = "/run/netns";
/// Namespace name prefix; names are `lbd-<pid>-<n>-<role>`.
const PREFIX: &str = "lbd-";
/// Upper bound for one helper command (`ip ...`).
const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most members a lab can have (their links use 10.199.1.0/24 ..
/// 10.199.<MAX_MEMBERS>.0/24).
pub const MAX_MEMBERS: usize = 199;
/// How long Drop waits for processes to go after SIGTERM, then after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static STALE_CLEANUP: OnceLock<()> = OnceLock::new();

/// Handle to one network namespace of a [`Lab`] (by name; cheap to clone and
/// to move into threads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ns {
    pub name: String,
}

/// A client, a load-balancer and `members` member namespaces wired together;
/// see the module doc. Dropping it removes everything it created.
#[derive(Debug)]
pub struct Lab {
    client: Ns,
    lb: Ns,
    members: Vec<Ns>,
    client_if: String,
    lb_client_if: String,
    lb_member_ifs: Vec<String>,
    member_ifs: Vec<String>,
    /// Last field: dropped after everything else; owns the namespaces.
    _cleanup: Cleanup,
}

/// Owns the created namespaces: deletes them (after killing their processes)
/// on drop, also for a half-built lab.
#[derive(Debug, Default)]
struct Cleanup {
    created: Vec<String>,
}

impl Lab {
    /// Creates the client, lb and `members` member namespaces, the veth pairs,
    /// addresses and routes (see the module doc). `Err` with the reason when
    /// that is not possible (not root, no `ip`, `ip netns add` refused, more
    /// than [`MAX_MEMBERS`] members); whatever was created is removed again.
    pub fn new(members: usize) -> Result<Lab, String> {
        if members > MAX_MEMBERS {
            return Err(format!(
                "netlab: {members} members asked, at most {MAX_MEMBERS}"
            ));
        }
        match Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => {}
            Err(e) => return Err(format!("netlab: cannot run `ip` (iproute2): {e}")),
        }
        STALE_CLEANUP.get_or_init(remove_stale_namespaces);

        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        let client = Ns {
            name: format!("{base}-c"),
        };
        let lb = Ns {
            name: format!("{base}-lb"),
        };
        let member_ns: Vec<Ns> = (0..members)
            .map(|i| Ns {
                name: format!("{base}-m{i}"),
            })
            .collect();

        let mut cleanup = Cleanup::default();
        for ns in std::iter::once(&client)
            .chain(std::iter::once(&lb))
            .chain(member_ns.iter())
        {
            if let Err(e) = ip(&["netns", "add", &ns.name]) {
                // SAFETY: geteuid has no preconditions.
                let euid = unsafe { libc::geteuid() };
                let hint = if euid == 0 {
                    String::new()
                } else {
                    format!(" (not root: euid {euid}; network namespaces need CAP_SYS_ADMIN)")
                };
                return Err(format!("netlab: not permitted{hint}: {e}"));
            }
            cleanup.created.push(ns.name.clone());
        }

        let lab = Lab {
            client_if: "c-lb".to_string(),
            lb_client_if: "lb-c".to_string(),
            lb_member_ifs: (0..members).map(|i| format!("lb-m{i}")).collect(),
            member_ifs: (0..members).map(|i| format!("m{i}-lb")).collect(),
            client,
            lb,
            members: member_ns,
            _cleanup: cleanup,
        };
        lab.wire()
            .map_err(|e| format!("netlab: setting up the lab: {e}"))?;
        Ok(lab)
    }

    /// Veths, sysctls, addresses, links up, routes.
    fn wire(&self) -> Result<(), String> {
        // (ns, interface in it, its address, the peer's address)
        let mut ends: Vec<(&Ns, &str, Ipv4Addr, Ipv4Addr)> = Vec::new();
        veth_pair(&self.lb, &self.lb_client_if, &self.client, &self.client_if)?;
        ends.push((
            &self.lb,
            &self.lb_client_if,
            self.lb_client_side_ip(),
            self.client_ip(),
        ));
        ends.push((
            &self.client,
            &self.client_if,
            self.client_ip(),
            self.lb_client_side_ip(),
        ));
        for (i, m) in self.members.iter().enumerate() {
            veth_pair(&self.lb, &self.lb_member_ifs[i], m, &self.member_ifs[i])?;
            ends.push((
                &self.lb,
                &self.lb_member_ifs[i],
                self.lb_member_side_ip(i),
                self.member_ip(i),
            ));
            ends.push((
                m,
                &self.member_ifs[i],
                self.member_ip(i),
                self.lb_member_side_ip(i),
            ));
        }

        // Sysctls before the links go up (no IPv6 autoconf noise).
        let lb_ifs: Vec<String> = ends
            .iter()
            .filter(|e| e.0 == &self.lb)
            .map(|e| e.1.to_string())
            .collect();
        self.lb.run(move || -> Result<(), String> {
            write_sysctl("net/ipv4/ip_forward", "1")?;
            write_sysctl("net/ipv4/conf/all/rp_filter", "0")?;
            write_sysctl("net/ipv4/conf/default/rp_filter", "0")?;
            for ifname in &lb_ifs {
                write_sysctl(&format!("net/ipv4/conf/{ifname}/rp_filter"), "0")?;
            }
            Ok(())
        })?;
        // IPv6 may be compiled out or disabled: nothing to silence then.
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            for (ns, ifname, _, _) in &ends {
                let key = format!("net/ipv6/conf/{ifname}/disable_ipv6");
                ns.run(move || write_sysctl(&key, "1"))?;
            }
        }

        for ns in self.all_ns() {
            ip(&["-n", &ns.name, "link", "set", "dev", "lo", "up"])?;
        }
        for (ns, ifname, addr, _) in &ends {
            let cidr = format!("{addr}/24");
            ip(&["-n", &ns.name, "addr", "add", &cidr, "dev", ifname])?;
            ip(&["-n", &ns.name, "link", "set", "dev", ifname, "up"])?;
        }
        let lb_ip = self.lb_client_side_ip().to_string();
        ip(&[
            "-n",
            &self.client.name,
            "route",
            "add",
            "default",
            "via",
            &lb_ip,
            "dev",
            &self.client_if,
        ])?;
        for (i, m) in self.members.iter().enumerate() {
            let gw = self.lb_member_side_ip(i).to_string();
            ip(&[
                "-n",
                &m.name,
                "route",
                "add",
                "default",
                "via",
                &gw,
                "dev",
                &self.member_ifs[i],
            ])?;
        }
        Ok(())
    }

    fn all_ns(&self) -> impl Iterator<Item = &Ns> {
        std::iter::once(&self.client)
            .chain(std::iter::once(&self.lb))
            .chain(self.members.iter())
    }

    /// The client namespace.
    pub fn client(&self) -> &Ns {
        &self.client
    }

    /// The load-balancer namespace.
    pub fn lb(&self) -> &Ns {
        &self.lb
    }

    /// The member namespaces, in order.
    pub fn members(&self) -> &[Ns] {
        &self.members
    }

    /// Names of all namespaces of this lab (client, lb, members).
    pub fn namespace_names(&self) -> Vec<String> {
        self.all_ns().map(|ns| ns.name.clone()).collect()
    }

    /// The client's address (10.199.0.2), on [`Lab::client_if`].
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, 0, 2)
    }

    /// The lb's address toward the client (10.199.0.1), on
    /// [`Lab::lb_client_if`]; the client's default gateway.
    pub fn lb_client_side_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, 0, 1)
    }

    /// The lb's address toward member `i` (10.199.<i+1>.1), on
    /// [`Lab::lb_member_if`]; member `i`'s default gateway.
    pub fn lb_member_side_ip(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.members.len(), "member {i} out of range");
        Ipv4Addr::new(10, 199, (i + 1) as u8, 1)
    }

    /// Member `i`'s address (10.199.<i+1>.2), on [`Lab::member_if`].
    pub fn member_ip(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.members.len(), "member {i} out of range");
        Ipv4Addr::new(10, 199, (i + 1) as u8, 2)
    }

    /// Interface in the lb ns toward the client (`lb-c`).
    pub fn lb_client_if(&self) -> &str {
        &self.lb_client_if
    }

    /// Interface in the lb ns toward member `i` (`lb-m<i>`).
    pub fn lb_member_if(&self, i: usize) -> &str {
        &self.lb_member_ifs[i]
    }

    /// Member `i`'s interface, in member `i`'s ns (`m<i>-lb`): the peer of
    /// [`Lab::lb_member_if`].
    pub fn member_if(&self, i: usize) -> &str {
        &self.member_ifs[i]
    }

    /// The client's interface, in the client ns (`c-lb`): the peer of
    /// [`Lab::lb_client_if`].
    pub fn client_if(&self) -> &str {
        &self.client_if
    }

    /// Turns TX checksum offload off on the client's and every member's
    /// veth, so their frames carry complete TCP checksums, as frames from a
    /// real NIC do (needed by XDP programs that rewrite addresses).
    pub fn complete_checksums(&self) -> Result<(), String> {
        tx_checksum_off(self.client(), self.client_if())?;
        for (i, ns) in self.members().iter().enumerate() {
            tx_checksum_off(ns, self.member_if(i))?;
        }
        Ok(())
    }

    /// Adds `vip/32` to the lb ns's loopback and a route `vip/32 via
    /// lb_client_side_ip` in the client ns. Idempotent. Members reach the
    /// client (the source of proxied or forwarded traffic) through their
    /// default route anyway.
    pub fn add_vip(&self, vip: Ipv4Addr) -> Result<(), String> {
        let cidr = format!("{vip}/32");
        ip(&["-n", &self.lb.name, "addr", "replace", &cidr, "dev", "lo"])?;
        let gw = self.lb_client_side_ip().to_string();
        ip(&[
            "-n",
            &self.client.name,
            "route",
            "replace",
            &cidr,
            "via",
            &gw,
            "dev",
            &self.client_if,
        ])?;
        Ok(())
    }
}

/// A second topology: hosts on one Ethernet segment, for failover tests
/// (two load balancers sharing a VIP with VRRP, a client and members
/// beside them). Each host is a namespace whose `eth0` (address
/// `10.198.0.<i+2>/24`, the `i`-th host) is a veth port of the bridge
/// `br0` in a switch namespace. `10.198.0.100`..`.254` are free for VIPs.
/// Like [`Lab`], nothing leaves the namespaces, and dropping it removes
/// them (killing what runs in them).
#[derive(Debug)]
pub struct Segment {
    hosts: Vec<Ns>,
    _cleanup: Cleanup,
}

impl Segment {
    /// `hosts` namespaces on a bridge. `Err` with the reason when that is
    /// not possible (not root, no `ip`); whatever was created is removed.
    pub fn new(hosts: usize) -> Result<Segment, String> {
        if hosts > 90 {
            return Err(format!("netlab: {hosts} hosts asked, at most 90"));
        }
        STALE_CLEANUP.get_or_init(remove_stale_namespaces);
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        let switch = Ns {
            name: format!("{base}-sw"),
        };
        let host_ns: Vec<Ns> = (0..hosts)
            .map(|i| Ns {
                name: format!("{base}-h{i}"),
            })
            .collect();
        let mut cleanup = Cleanup::default();
        for ns in std::iter::once(&switch).chain(host_ns.iter()) {
            ip(&["netns", "add", &ns.name]).map_err(|e| format!("netlab: not permitted: {e}"))?;
            cleanup.created.push(ns.name.clone());
        }
        let wire = || -> Result<(), String> {
            let sw = switch.name.as_str();
            ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", sw, "link", "set", "br0", "up"])?;
            for (i, h) in host_ns.iter().enumerate() {
                let port = format!("p{i}");
                veth_pair(h, "eth0", &switch, &port)?;
                ip(&["-n", sw, "link", "set", &port, "master", "br0"])?;
                ip(&["-n", sw, "link", "set", &port, "up"])?;
                ip(&["-n", &h.name, "link", "set", "lo", "up"])?;
                let cidr = format!("{}/24", Segment::address(i));
                ip(&["-n", &h.name, "addr", "add", &cidr, "dev", "eth0"])?;
                ip(&["-n", &h.name, "link", "set", "eth0", "up"])?;
            }
            Ok(())
        };
        wire().map_err(|e| format!("netlab: setting up the segment: {e}"))?;
        Ok(Segment {
            hosts: host_ns,
            _cleanup: cleanup,
        })
    }

    /// The `i`-th host's namespace.
    pub fn host(&self, i: usize) -> &Ns {
        &self.hosts[i]
    }

    /// The `i`-th host's address on the segment.
    pub fn address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 198, 0, 2 + i as u8)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names: Vec<String> = self.created.drain(..).rev().collect();
        remove_namespaces(&names);
    }
}

/// Kills every process living in `names` (SIGTERM, then SIGKILL), then
/// deletes the namespaces. Never panics; reports problems on stderr.
fn remove_namespaces(names: &[String]) {
    let existing: Vec<&String> = names.iter().filter(|n| ns_path(n).exists()).collect();
    let ids: HashSet<(u64, u64)> = existing.iter().filter_map(|n| ns_id(n)).collect();
    for (sig, last) in [(libc::SIGTERM, false), (libc::SIGKILL, true)] {
        let pids = pids_in(&ids);
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid, sig) };
        }
        let deadline = Instant::now() + KILL_GRACE;
        while !pids_in(&ids).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if last {
            let left = pids_in(&ids);
            if !left.is_empty() {
                eprintln!("netlab: processes {left:?} survived SIGKILL in {existing:?}");
            }
        }
    }
    for name in existing {
        if let Err(e) = ip(&["netns", "del", name]) {
            eprintln!("netlab: cannot delete namespace {name}: {e}");
        }
    }
}

/// Deletes `lbd-<pid>-<n>-<role>` namespaces whose process is gone (or is
/// this process: runs before it creates any), e.g. after a SIGKILLed test.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let me = std::process::id();
    let stale: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| match parse_lab_name(name) {
            Some(pid) => pid == me || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            None => false,
        })
        .take(10_000)
        .collect();
    if !stale.is_empty() {
        eprintln!("netlab: removing stale namespaces {stale:?}");
        remove_namespaces(&stale);
    }
}

/// `lbd-<pid>-<n>-<c|lb|m<i>>` -> pid.
fn parse_lab_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid: u32 = parts.next()?.parse().ok()?;
    let _n: u32 = parts.next()?.parse().ok()?;
    let role = parts.next()?;
    let ok = role == "c"
        || role == "lb"
        || role
            .strip_prefix('m')
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(pid)
}

fn ns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// (device, inode) of a named namespace, as `/proc/<pid>/ns/net` shows it.
fn ns_id(name: &str) -> Option<(u64, u64)> {
    let md = std::fs::metadata(ns_path(name)).ok()?;
    Some((md.dev(), md.ino()))
}

/// Processes (other than this one) whose network namespace is one of `ids`.
fn pids_in(ids: &HashSet<(u64, u64)>) -> Vec<libc::pid_t> {
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as libc::pid_t;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // Zombies have no namespace any more: stat fails, skipped.
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|md| ids.contains(&(md.dev(), md.ino())))
                .unwrap_or(false)
        })
        .collect()
}

/// A veth pair with one end in each namespace, created directly there.
fn veth_pair(a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<(), String> {
    ip(&[
        "link", "add", "name", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if,
        "netns", &b.name,
    ])
    .map(|_| ())
}

/// Writes a sysctl of the calling thread's network namespace.
fn write_sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| format!("writing {value} to {path}: {e}"))
}

/// `ip <args>` (in the root ns), bounded by [`CMD_TIMEOUT`].
fn ip(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_cmd(cmd, &format!("ip {}", args.join(" ")))
}

/// Runs `cmd` to completion (at most [`CMD_TIMEOUT`], then it is killed);
/// stdout on success, `Err` with the exit status and stderr otherwise.
fn run_cmd(mut cmd: Command, what: &str) -> Result<String, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("`{what}`: {e}"))?;
    let out = child.stdout.take().map(reader_thread);
    let err = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // A grandchild may keep the pipes open: don't wait for it forever.
    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
        rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    };
    let stdout = collect(out);
    let stderr = collect(err);
    match status {
        Some(s) if s.success() => Ok(stdout),
        Some(s) => Err(format!("`{what}` failed ({s}): {}", stderr.trim())),
        None => Err(format!(
            "`{what}` did not finish within {CMD_TIMEOUT:?}: {}",
            stderr.trim()
        )),
    }
}

fn reader_thread(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_netns(path: &PathBuf) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    // SAFETY: a valid open fd; setns only changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl Ns {
    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        ns_path(&self.name)
    }

    /// Runs `f` on a new thread inside this namespace and returns its result
    /// (a panic in `f` is propagated). Sockets created in `f` stay in the
    /// namespace and can be used from any thread afterwards; threads spawned
    /// by `f` start in the namespace too.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Spawns a thread inside this namespace. Panics (here, not in the
    /// thread) when the namespace cannot be entered.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        let (tx, rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let handle = thread::Builder::new()
            .name(format!("ns {}", self.name))
            .spawn(move || match enter_netns(&path) {
                Ok(()) => {
                    let _ = tx.send(Ok(()));
                    f()
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    // Quietly: the caller panics with the reason.
                    std::panic::resume_unwind(Box::new("netlab: setns failed"))
                }
            })
            .unwrap_or_else(|e| panic!("netlab: cannot spawn a thread: {e}"));
        match rx.recv() {
            Ok(Ok(())) => handle,
            Ok(Err(e)) => {
                let _ = handle.join();
                panic!("netlab: cannot enter namespace {}: {e}", self.name)
            }
            Err(_) => {
                let _ = handle.join();
                panic!("netlab: thread for namespace {} died", self.name)
            }
        }
    }

    /// `ip netns exec <ns> <program>`: add args, spawn, etc. Processes still
    /// running in the namespace when the [`Lab`] is dropped are killed.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `argv` inside the namespace (`ip netns exec`), at most 30 s;
    /// returns stdout, or `Err` with the exit status and stderr.
    pub fn sh(&self, argv: &[&str]) -> Result<String, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("netlab: Ns::sh with an empty argv".to_string());
        };
        let mut cmd = self.command(program);
        cmd.args(args);
        run_cmd(cmd, &format!("[{}] {}", self.name, argv.join(" ")))
    }
}

/// Most connections an [`HttpServer`] serves at once (more are closed).
const MAX_CONNS: usize = 4096;
/// A keep-alive connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests served on one connection.
const MAX_REQUESTS_PER_CONN: u64 = 10_000_000;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Granularity at which server threads notice the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A tiny HTTP/1.1 server in a namespace: any `GET` answers 200 with
/// [`expected_body`]`(name, body_len)` (`HEAD`: headers only; other methods
/// 405), keep-alive and pipelining supported. Runs on threads inside the
/// namespace; stops on drop (closes every connection, joins its threads).
pub struct HttpServer {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` inside `ns` and starts serving.
    pub fn start(
        ns: &Ns,
        addr: SocketAddrV4,
        name: &str,
        body_len: usize,
    ) -> Result<HttpServer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let body = Arc::new(expected_body(name, body_len));
        let server_name = name.to_string();
        let (tx, rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let accept = ns.spawn(move || {
            let listener = match TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(format!("netlab: HttpServer bind {addr}: {e}")));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            accept_loop(listener, &server_name, body, &stop2, &requests2);
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(HttpServer {
                addr,
                stop,
                requests,
                accept: Some(accept),
            }),
            Ok(Err(e)) => {
                let _ = accept.join();
                Err(e)
            }
            Err(_) => {
                let _ = accept.join();
                Err(format!("netlab: HttpServer {addr}: server thread died"))
            }
        }
    }

    /// Requests answered so far, all connections (counted when the answer
    /// starts, so a client that has received an answer sees it counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    name: &str,
    body: Arc<Vec<u8>>,
    stop: &Arc<AtomicBool>,
    requests: &Arc<AtomicU64>,
) {
    let mut conns: Vec<(TcpStream, JoinHandle<()>)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                conns.retain(|(_, h)| !h.is_finished());
                if conns.len() >= MAX_CONNS {
                    continue; // dropped: closed
                }
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let (body, stop, requests) = (body.clone(), stop.clone(), requests.clone());
                let spawned = thread::Builder::new()
                    .name(format!("http {name}"))
                    .spawn(move || serve_conn(stream, &body, &stop, &requests));
                if let Ok(h) = spawned {
                    conns.push((clone, h));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                let mut pfd = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as libc::c_int) };
            }
            Err(_) => thread::sleep(POLL), // e.g. EMFILE: back off
        }
    }
    // Wake connection threads blocked in read/write, then wait for them.
    for (s, _) in &conns {
        let _ = s.shutdown(Shutdown::Both);
    }
    for (_, h) in conns {
        let _ = h.join();
    }
}

struct Request {
    head_len: usize,
    method: String,
    keep_alive: bool,
    content_length: usize,
    chunked: bool,
}

/// Parses a request head if `buf` holds a complete one.
fn parse_request(buf: &[u8]) -> Option<Result<Request, ()>> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(_path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(Err(()));
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "connection" if v.contains("close") => keep_alive = false,
            "connection" if v.contains("keep-alive") => keep_alive = true,
            "content-length" => match v.parse() {
                Ok(n) => content_length = n,
                Err(_) => return Some(Err(())),
            },
            "transfer-encoding" if v.contains("chunked") => chunked = true,
            _ => {}
        }
    }
    Some(Ok(Request {
        head_len: end + 4,
        method: method.to_string(),
        keep_alive,
        content_length,
        chunked,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more into `buf`. Ok(false): peer closed, idle too long or stopping.
fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
    idle_since: Instant,
) -> Result<bool, ()> {
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) || idle_since.elapsed() > IDLE_TIMEOUT {
            return Ok(false);
        }
        match stream.read(&mut tmp) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                return Ok(true);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return Err(()),
        }
    }
}

fn serve_conn(mut stream: TcpStream, body: &[u8], stop: &AtomicBool, requests: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    for _ in 0..MAX_REQUESTS_PER_CONN {
        let idle_since = Instant::now();
        let req = loop {
            match parse_request(&buf) {
                Some(Ok(req)) => break req,
                Some(Err(())) => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                None if buf.len() > MAX_HEAD => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                None => match fill(&mut stream, &mut buf, stop, idle_since) {
                    Ok(true) => {}
                    Ok(false) | Err(()) => return,
                },
            }
        };
        if req.chunked {
            let _ = stream.write_all(
                b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        // Discard the request body, if any.
        let total = req.head_len + req.content_length;
        while buf.len() < total {
            match fill(&mut stream, &mut buf, stop, idle_since) {
                Ok(true) => {}
                Ok(false) | Err(()) => return,
            }
        }
        buf.drain(..total);

        let conn = if req.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let (status, len, send_body) = match req.method.as_str() {
            "GET" => ("200 OK", body.len(), true),
            "HEAD" => ("200 OK", body.len(), false),
            _ => ("405 Method Not Allowed", 0, false),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: {conn}\r\n\r\n"
        );
        // Counted before sending: a client holding the answer sees it counted.
        requests.fetch_add(1, Ordering::Relaxed);
        let mut ok = stream.write_all(head.as_bytes()).is_ok();
        if ok && send_body {
            ok = stream.write_all(body).is_ok();
        }
        if !ok {
            return;
        }
        if !req.keep_alive {
            let _ = stream.shutdown(Shutdown::Write);
            // Let the client read everything before the socket closes.
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut sink = [0u8; 4096];
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                match stream.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            return;
        }
    }
}

/// The body [`HttpServer`] sends for `name`, `len` bytes: `name\n`, then
/// lines `%010d\n` of each line's own byte offset (so a misplaced or lost
/// chunk shows where it went wrong); cut at `len`.
pub fn expected_body(name: &str, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 16);
    v.extend_from_slice(name.as_bytes());
    v.push(b'\n');
    while v.len() < len {
        let off = v.len();
        let _ = writeln!(v, "{off:010}");
    }
    v.truncate(len);
    v
}

/// One `GET path` from inside `ns` to `addr` on a fresh connection
/// (`Connection: close`), all of it within `timeout`. Returns the body of a
/// 200 answer (Content-Length, chunked or until close); `Err` otherwise.
pub fn http_get(
    ns: &Ns,
    addr: SocketAddrV4,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let path = path.to_string();
    ns.run(move || http_get_here(addr, &path, timeout))
}

/// Most bytes [`http_get`] accepts in one answer.
const MAX_RESPONSE: usize = 1 << 30;

fn http_get_here(addr: SocketAddrV4, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let err =
        |what: &str, e: &dyn std::fmt::Display| format!("GET http://{addr}{path}: {what}: {e}");
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout)
        .map_err(|e| err("connect", &e))?;
    s.set_write_timeout(Some(left()))
        .map_err(|e| err("socket", &e))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: netlab\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| err("send", &e))?;

    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut tmp = vec![0u8; 64 * 1024];
    // (head length, content-length) once the head is in.
    let mut head: Option<(usize, Option<usize>, bool)> = None;
    loop {
        if let Some((head_len, Some(cl), _)) = head {
            if buf.len() >= head_len + cl {
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err(err(
                "timeout",
                &format!("{timeout:?} elapsed after {} bytes", buf.len()),
            ));
        }
        s.set_read_timeout(Some(left()))
            .map_err(|e| err("socket", &e))?;
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(err("receive", &e)),
        }
        if buf.len() > MAX_RESPONSE {
            return Err(err("response", &"larger than 1 GiB"));
        }
        if head.is_none() {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status_line = text.lines().next().unwrap_or("");
                let code = status_line.split_whitespace().nth(1).unwrap_or("");
                if code != "200" {
                    return Err(err("status", &status_line));
                }
                let mut cl = None;
                let mut chunked = false;
                for line in text.lines().skip(1) {
                    if let Some((k, v)) = line.split_once(':') {
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                        if k == "content-length" {
                            cl = Some(v.parse().map_err(|_| err("bad Content-Length", &v))?);
                        } else if k == "transfer-encoding"
                            && v.to_ascii_lowercase().contains("chunked")
                        {
                            chunked = true;
                        }
                    }
                }
                head = Some((end + 4, if chunked { None } else { cl }, chunked));
            }
        }
    }
    let Some((head_len, cl, chunked)) = head else {
        return Err(err(
            "response",
            &format!(
                "connection closed after {} bytes, no complete head",
                buf.len()
            ),
        ));
    };
    let body = &buf[head_len..];
    if chunked {
        return decode_chunked(body).map_err(|e| err("chunked body", &e));
    }
    match cl {
        Some(cl) if body.len() < cl => {
            Err(err("short body", &format!("{} of {cl} bytes", body.len())))
        }
        Some(cl) => Ok(body[..cl].to_vec()),
        None => Ok(body.to_vec()),
    }
}

fn decode_chunked(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for _ in 0..b.len() + 1 {
        let line_end = find(b, b"\r\n").ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".to_string());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
    Err("no last chunk".to_string())
}

/// A keep-alive HTTP/1.1 connection opened from inside a namespace.
pub struct KeepAlive {
    stream: TcpStream,
    timeout: Duration,
}

impl KeepAlive {
    /// Connects from inside `ns`; every later wait is bounded by `timeout`.
    pub fn open(ns: &Ns, addr: SocketAddrV4, timeout: Duration) -> std::io::Result<KeepAlive> {
        let stream = ns.run(move || TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(KeepAlive { stream, timeout })
    }

    /// One GET; returns the body.
    pub fn get(&mut self) -> Result<Vec<u8>, String> {
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: keep-alive\r\n\r\n")
            .map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let cl: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .ok_or("no content-length")?
                    .trim()
                    .parse()
                    .map_err(|_| "bad content-length")?;
                if buf.len() >= end + 4 + cl {
                    return Ok(buf[end + 4..end + 4 + cl].to_vec());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("timeout after {} bytes", buf.len()));
            }
            match self.stream.read(&mut tmp) {
                Ok(0) => return Err(format!("closed after {} bytes", buf.len())),
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
    }
}

/// Turns TX checksum offload off on `ifname` in `ns` (`ethtool -K ifname tx
/// off`, through the ioctl, as `ethtool` may not be installed).
fn tx_checksum_off(ns: &Ns, ifname: &str) -> Result<(), String> {
    let ifname = ifname.to_string();
    ns.run(move || {
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        const ETHTOOL_STXCSUM: u32 = 0x17;
        const SIOCETHTOOL: libc::c_ulong = 0x8946;
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        if ifname.len() >= libc::IFNAMSIZ {
            return Err(format!("interface name {ifname:?} is too long"));
        }
        // SAFETY: an ioctl on a socket we own, with a zeroed ifreq holding
        // the NUL-terminated name and a pointer to `value`, which outlives
        // the call.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return Err(format!("socket: {}", std::io::Error::last_os_error()));
            }
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.as_bytes()) {
                *d = *s as libc::c_char;
            }
            ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
            let rc = libc::ioctl(fd, SIOCETHTOOL, &mut ifr);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if rc != 0 {
                return Err(format!("TX checksum offload off on {ifname}: {err}"));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_parse() {
        assert_eq!(parse_lab_name("lbd-123-4-c"), Some(123));
        assert_eq!(parse_lab_name("lbd-123-4-lb"), Some(123));
        assert_eq!(parse_lab_name("lbd-123-4-m17"), Some(123));
        assert_eq!(parse_lab_name("lbd-123-4-m"), None);
        assert_eq!(parse_lab_name("lbd-123-4-x"), None);
        assert_eq!(parse_lab_name("lbd-abc-4-c"), None);
        assert_eq!(parse_lab_name("other"), None);
    }

    #[test]
    fn body_is_deterministic() {
        let b = expected_body("m0", 40);
        assert_eq!(b.len(), 40);
        assert_eq!(&b[..], b"m0\n0000000003\n0000000014\n0000000025\n0000");
        assert_eq!(expected_body("long-name", 3), b"lon");
        assert!(expected_body("x", 0).is_empty());
    }

    #[test]
    fn chunked_decodes() {
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(decode_chunked(b"3\r\nab").is_err());
    }

    #[test]
    fn request_heads_parse() {
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(r.head_len, 27);
        assert!(r.keep_alive);
        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
        let r = parse_request(b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        assert_eq!(r.content_length, 5);
        assert!(parse_request(b"GET / HTTP/1.1\r\n").is_none());
    }
}
