//! The topology: `lbd_test_support::netlab`'s client / lb / 3 member
//! namespaces, the VIP, TX checksum offload off on the client and member
//! veths, the pass-only XDP programs on the client-side and member-side veth
//! peers (native XDP_TX / XDP_REDIRECT into a veth only delivers when its
//! peer has an XDP program), and one nginx per member namespace.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::backends;
use bench::procs::{Guard, Pin};
use lbd_ebpf::PassGuard;
use lbd_test_support::netlab::{http_get, Lab, Ns};

/// The fast-path service address (on the lb's loopback).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 199, 200, 1);
pub const VIP_PORT: u16 = 80;
/// Where nginx listens in each member namespace.
pub const MEMBER_PORT: u16 = 8080;
pub const MEMBERS: usize = 3;
/// The small object every scenario asks for (100 bytes).
pub const PATH: &str = backends::SMALL_PATH;
/// `/proc/net/tcp` state of a socket in TIME_WAIT.
const TCP_TIME_WAIT: u8 = 0x06;

/// Everything the paths share. Field order is drop order: nginx stopped,
/// pass programs detached, then the namespaces deleted.
pub struct Topo {
    backends: Vec<Guard>,
    /// nginx.conf of member 0 (the others differ only in the address).
    pub backend_config: String,
    pub backend_commands: Vec<String>,
    _pass: Vec<PassGuard>,
    pub lab: Lab,
}

/// Built, or why the bench cannot run here.
pub enum Built {
    Ready(Box<Topo>),
    Skip(String),
}

impl Topo {
    /// Builds the lab and starts the backends; `Skip` when this machine
    /// cannot (not root, no netns, no XDP on veth).
    pub fn build(root: &Path, logs: &Path, member_tw_buckets: Option<u32>) -> Result<Built> {
        let lab = match Lab::new(MEMBERS) {
            Ok(lab) => lab,
            Err(e) => return Ok(Built::Skip(format!("cannot build the netns lab: {e}"))),
        };
        lab.add_vip(VIP)
            .map_err(anyhow::Error::msg)
            .context("adding the VIP")?;
        if let Err(e) = lab.complete_checksums() {
            return Ok(Built::Skip(format!(
                "cannot turn TX checksum offload off on the client/member veths \
                 (the XDP path needs complete checksums): {e}"
            )));
        }
        // wrk closes a `Connection: close` connection itself as soon as the
        // response is in, often before the server's FIN arrives through a
        // proxy: the client keeps the connection in TIME_WAIT for 60 s. With
        // the default `tcp_tw_reuse = 2` (reuse for loopback only) the
        // client's ~28k ephemeral ports toward the VIP run out after a few
        // seconds at thousands of connections/s, and every connect() then
        // crawls through the port space (milliseconds of CPU in wrk). Let
        // the client reuse TIME_WAIT ports (as load generators do); this
        // sysctl is per namespace.
        lab.client()
            .run(|| std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1"))
            .context("setting net.ipv4.tcp_tw_reuse = 1 in the client ns")?;
        if let Some(n) = member_tw_buckets {
            for ns in lab.members() {
                let v = n.to_string();
                ns.run(move || std::fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", v))
                    .with_context(|| format!("setting tcp_max_tw_buckets in {}", ns.name))?;
            }
        }
        let mut pass = Vec::new();
        let mut peers: Vec<(Ns, String)> = vec![(lab.client().clone(), lab.client_if().into())];
        for (i, ns) in lab.members().iter().enumerate() {
            peers.push((ns.clone(), lab.member_if(i).into()));
        }
        for (ns, ifname) in peers {
            let name = ifname.clone();
            match ns.run(move || lbd_ebpf::attach_pass(&name)) {
                Ok(g) => pass.push(g),
                Err(e) => {
                    return Ok(Built::Skip(format!(
                        "XDP cannot attach (pass program on {ifname} in {}): {e}",
                        ns.name
                    )))
                }
            }
        }

        let www = root.join("www");
        backends::write_content(&www)?;
        let mut guards = Vec::new();
        let mut commands = Vec::new();
        let mut backend_config = String::new();
        for i in 0..MEMBERS {
            let dir = root.join(format!("m{i}"));
            std::fs::create_dir_all(dir.join("tmp"))?;
            let conf = dir.join("nginx.conf");
            // The bench's backend config, listening on the member's address.
            let text = backends::render_nginx(&dir, &www, MEMBER_PORT);
            let from = format!("listen 127.0.0.1:{MEMBER_PORT} ");
            if !text.contains(&from) {
                bail!("unexpected backend nginx.conf (no `{from}`):\n{text}");
            }
            let text = text.replace(
                &from,
                &format!("listen {}:{MEMBER_PORT} ", lab.member_ip(i)),
            );
            std::fs::write(&conf, &text)?;
            if i == 0 {
                backend_config = text;
            }
            let argv = in_ns(
                &lab.members()[i],
                &[
                    "nginx",
                    "-p",
                    &dir.display().to_string(),
                    "-c",
                    &conf.display().to_string(),
                    "-e",
                    &dir.join("error.log").display().to_string(),
                ],
            );
            let g = Guard::spawn(&format!("nginx-m{i}"), &argv, Pin::Any, logs)?;
            commands.push(g.command_line.clone());
            guards.push(g);
        }
        let topo = Topo {
            backends: guards,
            backend_config,
            backend_commands: commands,
            _pass: pass,
            lab,
        };
        // Every member answers the client directly (routed by the lb ns).
        for i in 0..MEMBERS {
            let addr = topo.member(i);
            topo.wait_get(addr, Duration::from_secs(10))
                .with_context(|| format!("backend m{i} ({addr}) does not answer the client"))?;
        }
        topo.resolve_neighbours()?;
        Ok(Built::Ready(Box::new(topo)))
    }

    pub fn member(&self, i: usize) -> SocketAddrV4 {
        SocketAddrV4::new(self.lab.member_ip(i), MEMBER_PORT)
    }

    pub fn member_ips(&self) -> Vec<Ipv4Addr> {
        (0..MEMBERS).map(|i| self.lab.member_ip(i)).collect()
    }

    /// The lb's veths: toward the client, then toward each member (where
    /// lbd attaches the fast path).
    pub fn lb_interfaces(&self) -> Vec<String> {
        std::iter::once(self.lab.lb_client_if().to_string())
            .chain((0..MEMBERS).map(|i| self.lab.lb_member_if(i).to_string()))
            .collect()
    }

    pub fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, VIP_PORT)
    }

    /// Makes the client and the lb know each other's MAC (the XDP path
    /// passes a SYN to the kernel when a neighbour entry is missing): a TCP
    /// connect from the client ns to 10.199.0.1:9 (closed: refused after an
    /// ARP exchange; there is no `ping` here).
    pub fn resolve_neighbours(&self) -> Result<()> {
        let lb = SocketAddr::V4(SocketAddrV4::new(self.lab.lb_client_side_ip(), 9));
        let r = self
            .lab
            .client()
            .run(move || TcpStream::connect_timeout(&lb, Duration::from_secs(3)).map(drop));
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            Ok(()) => Ok(()),
            Err(e) => bail!("client -> {lb}: {e} (expected `connection refused`)"),
        }
    }

    /// GETs `PATH` from the client ns until it succeeds (at most `timeout`).
    pub fn wait_get(&self, addr: SocketAddrV4, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match http_get(self.lab.client(), addr, PATH, Duration::from_secs(2)) {
                Ok(body) if body.len() == backends::SMALL_SIZE => return Ok(()),
                Ok(body) => bail!(
                    "GET {addr}{PATH}: {} bytes, want {}",
                    body.len(),
                    backends::SMALL_SIZE
                ),
                Err(e) if Instant::now() >= deadline => bail!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// TCP sockets in TIME_WAIT in the client namespace.
    pub fn client_time_wait(&self) -> Result<usize> {
        let text = self
            .lab
            .client()
            .run(|| std::fs::read_to_string("/proc/thread-self/net/tcp"))
            .context("reading the client ns's /proc/net/tcp")?;
        Ok(bench::procfs::parse_net_tcp(&text)?
            .iter()
            .filter(|r| r.state == TCP_TIME_WAIT)
            .count())
    }

    /// The backends' process groups (nginx master + worker each).
    pub fn backend_pgids(&self) -> Vec<i32> {
        self.backends.iter().map(Guard::pid).collect()
    }

    /// Fails if an nginx has exited.
    pub fn check_backends(&mut self) -> Result<()> {
        for g in &mut self.backends {
            if let Some(status) = g.try_wait()? {
                bail!("{} exited ({status})\n{}", g.name(), g.output_tail());
            }
        }
        Ok(())
    }
}

/// `ip netns exec <ns> argv...` (iproute2 execs the program: same pid).
pub fn in_ns<S: AsRef<str>>(ns: &Ns, argv: &[S]) -> Vec<String> {
    ["ip", "netns", "exec", ns.name.as_str()]
        .into_iter()
        .chain(argv.iter().map(AsRef::as_ref))
        .map(str::to_string)
        .collect()
}
