//! The XDP fast path's control loop, on its own thread ("lbd-xdp").
//!
//! For listeners with `fast_path = "xdp"`, packets are balanced in the
//! kernel by `lbd-ebpf`'s program; this loop keeps its maps in step with
//! lbd: it attaches to `[xdp] interfaces` (native mode, else generic, as
//! `lbd-ebpf` decides; after a failure, again at the next reload), and
//! compares what the kernel should know (each fast-path listener's VIP,
//! SNAT address and members with their weights and whether they may take
//! new flows, from the config snapshot and the health state) with what it
//! was last told, and tells it again when that changed. A health transition or a reload wakes it at once
//! ([`MEMBER_EVENTS`]), so a member that goes down stops getting new flows
//! right after the transition, and a removed member's flows end. Idle
//! flows are expired every second (after the listener's `tunnel_idle`, else
//! the larger of `client_idle` and `member_idle`), and
//! the kernel's counters are published for the stats page and `/metrics`.
//!
//! Nothing here is required: if attaching fails, the error is logged and
//! shown, and the listeners keep being served by the userspace proxy, whose
//! sockets stay bound either way.
//!
//! # Lifecycle
//!
//! ```text
//! Idle (no fast-path listener)
//!   --a snapshot wants interfaces-------------> attach: Attached | Failed
//! Attached (program loaded, maps written)
//!   --health transition, admin change, reload--> maps rewritten if the
//!                                               services differ (woken at once)
//!   --other [xdp] interfaces-------------------> program moved, flows kept
//!                                               (error: detached, Failed)
//!   --other snat_ports-------------------------> range rewritten in place
//!   --no fast-path listener left---------------> detached, Idle
//!   --every second-----------------------------> idle flows expired, open
//!                                               flows counted (connection_limit),
//!                                               counters published
//! Failed (attach error, shown on the stats page)
//!   --the next reload--------------------------> attach again
//!   --a panic anywhere in the loop-------------> the thread restarts (the
//!                                               program is detached with the
//!                                               dropped FastPath, then attached anew)
//! any state
//!   --shutdown (SIGTERM/SIGINT, after the drain)-> detached, the loop ends
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lbd_config::{Algorithm, FastPath, DEFAULT_SNAT_PORTS};
use tracing::{error, info, warn};

use crate::context::{Shared, XdpStatus};
use crate::events::MEMBER_EVENTS;
use crate::service::{BackgroundService, Shutdown};
use crate::snapshot::{PoolRt, Snapshot};
use crate::state::Status;

/// How often the tables are compared with the snapshot and health state
/// at the latest; a health transition or a reload wakes the loop at once.
pub const TICK: Duration = Duration::from_secs(1);

/// How often idle flows are expired and counters published.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Whether this lbd was built with the XDP programs, for `lbd --version`
/// and the startup line: built without clang or the libbpf headers, lbd
/// runs but cannot attach the fast path.
pub const BUILD_NOTE: &str = if lbd_ebpf::built() {
    "XDP fast path: built in"
} else {
    "XDP fast path: NOT built (clang or libbpf-dev were missing at build time; \
     install them and rebuild)"
};

/// `lbd --version`: the version and [`BUILD_NOTE`].
pub const VERSION_TEXT: &str = if lbd_ebpf::built() {
    concat!(env!("CARGO_PKG_VERSION"), " (XDP fast path: built in)")
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (XDP fast path: NOT built: clang or libbpf-dev were missing at build time)"
    )
};

/// The control loop as a service ("lbd-xdp"). It runs until shutdown,
/// then detaches the program from every interface (flows through the fast
/// path end with it). A panic restarts it (the program is detached with
/// it and attached again).
pub struct XdpService {
    pub shared: Arc<Shared>,
}

impl BackgroundService for XdpService {
    fn name(&self) -> &'static str {
        "lbd-xdp"
    }

    fn run(&mut self, shutdown: &Shutdown) {
        run(&self.shared, shutdown);
    }
}

/// The attached program and what it was last told.
struct Attached {
    interfaces: Vec<String>,
    fast_path: lbd_ebpf::FastPath,
    services: Vec<lbd_ebpf::Service>,
    /// Open flows per VIP at the last expiry pass (for `connection_limit`).
    open: HashMap<SocketAddrV4, usize>,
}

fn run(shared: &Shared, shutdown: &Shutdown) {
    let mut attached: Option<Attached> = None;
    // Interfaces whose attach failed, and why: not retried until the next
    // reload.
    let mut failed: Option<(Vec<String>, String)> = None;
    let mut housekeeping = Instant::now();
    let mut seen = 0;
    let mut generation = 0;
    while !shutdown.is_fired() {
        let snapshot = shared.snapshot();
        if snapshot.generation != generation {
            // A reload: worth another attempt.
            generation = snapshot.generation;
            failed = None;
        }
        let ports = snapshot
            .config
            .xdp
            .as_ref()
            .map_or(DEFAULT_SNAT_PORTS, |x| x.snat_ports.clone());
        let wanted = wanted_interfaces(&snapshot);
        let current = attached.as_ref().map(|a| &a.interfaces);
        if wanted.as_ref() != current {
            match (attached.as_mut(), wanted.as_ref()) {
                // Other interfaces: the loaded program moves, with its
                // flows (those arriving on a dropped interface end).
                (Some(a), Some(interfaces)) => {
                    let moved = a.fast_path.set_interfaces(interfaces);
                    match moved {
                        Ok(()) => {
                            info!("xdp: now attached to {}", modes(&a.fast_path, interfaces));
                            a.interfaces = interfaces.clone();
                        }
                        Err(e) => {
                            failed = Some(attach_failed(interfaces, &e, &snapshot));
                            attached = None;
                        }
                    }
                }
                (Some(_), None) => {
                    if let Some(old) = attached.take() {
                        info!("xdp: detached from {}", old.interfaces.join(", "));
                    }
                }
                (None, _) => {}
            }
        }
        if attached.is_none() {
            if let Some(interfaces) = wanted.filter(|w| failed.as_ref().map(|f| &f.0) != Some(w)) {
                match attach(&interfaces, &ports) {
                    Ok(fast_path) => {
                        failed = None;
                        attached = Some(Attached {
                            interfaces,
                            fast_path,
                            services: Vec::new(),
                            open: HashMap::new(),
                        });
                    }
                    Err(e) => failed = Some(attach_failed(&interfaces, &e, &snapshot)),
                }
            }
        }
        if let Some(a) = attached.as_mut() {
            // A new range applies to new flows; established ones keep
            // their ports (re-attaching would drop them all).
            if a.fast_path.options().snat_ports != ports {
                match a.fast_path.set_snat_ports(ports.clone()) {
                    Ok(()) => {
                        info!("xdp: SNAT ports {}-{}", ports.start(), ports.end());
                        warn_if_ephemeral(&ports);
                    }
                    Err(e) => warn!("xdp: cannot change the SNAT ports: {e}"),
                }
            }
            let snat = snapshot.config.xdp.as_ref().and_then(|x| x.snat_address);
            let services = services(&snapshot, snat, &a.open);
            log_limit_changes(&snapshot, &a.services, &services);
            if services != a.services {
                match a.fast_path.set_services(&services) {
                    Ok(()) => a.services = services,
                    Err(e) => warn!("xdp: cannot update the kernel maps: {e}"),
                }
            }
        }
        if housekeeping.elapsed() >= HOUSEKEEPING {
            housekeeping = Instant::now();
            let status = housekeep(attached.as_mut(), &failed, &snapshot);
            shared.xdp.store(status.map(Arc::new));
        }
        seen = MEMBER_EVENTS.wait(seen, TICK);
    }
    if let Some(a) = attached {
        let interfaces = a.interfaces.join(", ");
        // Dropping the FastPath detaches the program.
        drop(a);
        info!("xdp: shut down: detached from {interfaces}");
    }
}

/// Loads and attaches the program; logs how, and warns when the SNAT ports
/// overlap the host's ephemeral range.
fn attach(
    interfaces: &[String],
    ports: &RangeInclusive<u16>,
) -> Result<lbd_ebpf::FastPath, lbd_ebpf::Error> {
    let opts = lbd_ebpf::Options {
        snat_ports: ports.clone(),
        ..Default::default()
    };
    let fast_path = lbd_ebpf::FastPath::attach_with(interfaces, &opts)?;
    info!(
        "xdp: attached to {}; SNAT ports {}-{}",
        modes(&fast_path, interfaces),
        ports.start(),
        ports.end()
    );
    warn_if_ephemeral(ports);
    Ok(fast_path)
}

/// Logs a failed attach; returns what `failed` keeps (the interfaces are
/// not tried again until the next reload).
fn attach_failed(
    interfaces: &[String],
    e: &lbd_ebpf::Error,
    snapshot: &Snapshot,
) -> (Vec<String>, String) {
    error!(
        "xdp: cannot attach to {}: {e}; listener(s) {} stay on the userspace proxy",
        interfaces.join(", "),
        fast_path_listeners(snapshot).join(", ")
    );
    (interfaces.to_vec(), e.to_string())
}

/// `lb-c (native), lb-m0 (generic)`.
fn modes(fast_path: &lbd_ebpf::FastPath, interfaces: &[String]) -> String {
    interfaces
        .iter()
        .map(|i| format!("{i} ({})", mode_name(fast_path.mode(i))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Warns when the SNAT ports overlap this namespace's ephemeral range.
fn warn_if_ephemeral(ports: &RangeInclusive<u16>) {
    if let Some((lo, hi)) = ephemeral_ports() {
        if *ports.start() <= hi && lo <= *ports.end() {
            warn!(
                "xdp: snat_ports {}-{} overlap net.ipv4.ip_local_port_range {lo}-{hi}: replies \
                 to lbd's own connections (proxy, health checks) from the SNAT address on \
                 those ports may be taken by the fast path",
                ports.start(),
                ports.end()
            );
        }
    }
}

/// The host's ephemeral port range (this network namespace's).
fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// Expires idle flows and collects the status; `None` when no listener
/// asks for the fast path.
fn housekeep(
    attached: Option<&mut Attached>,
    failed: &Option<(Vec<String>, String)>,
    snapshot: &Snapshot,
) -> Option<XdpStatus> {
    let listeners = fast_path_listeners(snapshot);
    if listeners.is_empty() {
        return None;
    }
    let mut status = XdpStatus {
        listeners,
        ..Default::default()
    };
    let Some(a) = attached else {
        status.error = Some(match failed {
            Some((_, e)) => e.clone(),
            None => "not attached".into(),
        });
        return Some(status);
    };
    let idle = snapshot
        .listeners
        .iter()
        .filter(|l| l.cfg.fast_path == FastPath::Xdp)
        .map(|l| {
            l.cfg
                .tunnel_idle
                .unwrap_or(l.cfg.client_idle.max(l.cfg.member_idle))
        })
        .max()
        .unwrap_or(Duration::from_secs(50));
    match a.fast_path.expire_idle(idle) {
        Ok(expiry) => {
            status.flows = expiry.flows as u64;
            a.open = expiry.open;
        }
        Err(e) => warn!("xdp: cannot expire idle flows: {e}"),
    }
    status.interfaces = a
        .interfaces
        .iter()
        .map(|i| (i.clone(), mode_name(a.fast_path.mode(i))))
        .collect();
    match a.fast_path.counters() {
        Ok(c) => {
            status.packets = c.packets;
            status.bytes = c.bytes;
            status.new_flows = c.new_flows;
            status.drops = c.drops;
        }
        Err(e) => status.error = Some(format!("cannot read the counters: {e}")),
    }
    Some(status)
}

fn mode_name(mode: Option<lbd_ebpf::AttachMode>) -> &'static str {
    match mode {
        Some(lbd_ebpf::AttachMode::Native) => "native",
        Some(lbd_ebpf::AttachMode::Generic) => "generic",
        None => "not attached",
    }
}

/// `[xdp] interfaces` if any listener asks for the fast path.
fn wanted_interfaces(snapshot: &Snapshot) -> Option<Vec<String>> {
    let xdp = snapshot.config.xdp.as_ref()?;
    (!fast_path_listeners(snapshot).is_empty()).then(|| xdp.interfaces.clone())
}

fn fast_path_listeners(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .listeners
        .iter()
        .filter(|l| l.cfg.fast_path == FastPath::Xdp)
        .map(|l| l.cfg.name.clone())
        .collect()
}

/// What the kernel should know, from the snapshot and the health state.
/// A listener's `connection_limit` applies to its open fast-path flows as
/// counted at the last expiry pass (once a second): at the limit, the
/// kernel drops new SYNs (clients retry) until flows end, so a burst can
/// pass the limit by up to a second's worth of new connections.
fn services(
    snapshot: &Snapshot,
    snat: Option<Ipv4Addr>,
    open: &HashMap<SocketAddrV4, usize>,
) -> Vec<lbd_ebpf::Service> {
    let mut services = Vec::new();
    for listener in &snapshot.listeners {
        if listener.cfg.fast_path != FastPath::Xdp {
            continue;
        }
        // Validation made these IPv4.
        let SocketAddr::V4(vip) = listener.cfg.bind else {
            continue;
        };
        let pool = &snapshot.pools[listener.pool];
        let members = members(pool);
        let Some(snat_ip) = snat.or_else(|| route_source(&members)) else {
            continue;
        };
        let selection = match pool.plan.algorithm() {
            Algorithm::SourceIp => match pool.plan.maglev_slots() {
                Some(table) => lbd_ebpf::Selection::Maglev(table),
                // No member with weight > 0: nothing to pick from anyway.
                None => lbd_ebpf::Selection::RoundRobin,
            },
            Algorithm::RoundRobin | Algorithm::LeastConnections => lbd_ebpf::Selection::RoundRobin,
        };
        let limit = usize::try_from(listener.cfg.connection_limit).unwrap_or(usize::MAX);
        services.push(lbd_ebpf::Service {
            vip,
            snat_ip,
            members,
            selection,
            full: open.get(&vip).is_some_and(|&n| n >= limit),
        });
    }
    services
}

/// Logs the listeners whose fast path reached or left its connection limit.
fn log_limit_changes(snapshot: &Snapshot, old: &[lbd_ebpf::Service], new: &[lbd_ebpf::Service]) {
    for svc in new {
        let was = old
            .iter()
            .find(|o| o.vip == svc.vip)
            .is_some_and(|o| o.full);
        if svc.full == was {
            continue;
        }
        let Some(listener) = snapshot
            .listeners
            .iter()
            .find(|l| l.cfg.bind == SocketAddr::V4(svc.vip))
        else {
            continue;
        };
        let (name, limit) = (&listener.cfg.name, listener.cfg.connection_limit);
        if svc.full {
            warn!(
                "xdp: listener {name} has {limit} open fast-path connections (its \
                 connection_limit): new ones are dropped until some end"
            );
        } else {
            info!("xdp: listener {name} is below its connection_limit ({limit}) again");
        }
    }
}

/// The pool's IPv4 members; usable ones may take new flows: up or
/// unchecked, weight above 0, and backups only when no primary is usable.
fn members(pool: &PoolRt) -> Vec<lbd_ebpf::Member> {
    let takes_traffic =
        |status: Status, weight: u32| matches!(status, Status::Up | Status::NoCheck) && weight > 0;
    let primary_usable = pool
        .members
        .iter()
        .any(|m| !m.cfg.backup && takes_traffic(m.state.status(), m.cfg.weight));
    pool.members
        .iter()
        .filter_map(|m| {
            let SocketAddr::V4(addr) = m.addr else {
                return None;
            };
            let usable =
                takes_traffic(m.state.status(), m.cfg.weight) && (m.cfg.backup != primary_usable);
            Some(lbd_ebpf::Member {
                addr,
                weight: m.cfg.weight,
                usable,
            })
        })
        .collect()
}

/// lbd's own address on the route to the first member (what the kernel
/// would pick as the source of a connection to it).
fn route_source(members: &[lbd_ebpf::Member]) -> Option<Ipv4Addr> {
    let first: SocketAddrV4 = members.first()?.addr;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect(first).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}
