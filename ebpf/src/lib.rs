//! Optional XDP fast path for lbd: a full-NAT TCP load balancer in the kernel
//! (C program `bpf/xdp_lb.c`, built with clang by `build.rs`, loaded with aya
//! 0.14). lbd works without it; this crate builds without clang too (then
//! [`FastPath::attach`] returns [`Error::NotBuilt`]).
//!
//! # What the kernel program does
//!
//! IPv4 TCP only. For every packet arriving on an interface it is attached to:
//!
//! * **Established flow** (conntrack hit, either direction): rewrite source
//!   and destination address and port (full NAT: client -> VIP becomes
//!   `snat_ip`:port -> member, and back), decrement the TTL, fix the IP and
//!   TCP checksums incrementally, look up the next hop with
//!   `bpf_fib_lookup` (cached in the flow's entry for a second, so a
//!   route or neighbour change reaches established flows within a second)
//!   and send the frame with `XDP_TX` (same interface) or `bpf_redirect`
//!   (another one). The kernel's TCP stack never sees it.
//! * **New flow**: a SYN (without ACK) to a fast-path `VIP:port` with no
//!   state. A usable member is picked (weighted round robin, or Maglev on the
//!   client address, see [`Selection`]), a SNAT port is allocated (see
//!   below), both conntrack entries are created, then as above.
//! * **Everything else** is `XDP_PASS`ed to the kernel, counted by reason
//!   ([`Counters::passes`]): ARP, IPv6, VLAN, non-TCP, IP options,
//!   fragments, TCP not to a service, and **non-SYN packets to a service
//!   without flow state** (`no_flow`): they belong to connections the kernel
//!   or lbd's userspace proxy owns (e.g. set up before the fast path was
//!   enabled, or after a `no_neigh` fallback), or to flows whose state was
//!   deleted (their member was removed): the kernel then answers with a RST,
//!   which ends them.
//!
//! Neighbours: if `bpf_fib_lookup` finds no neighbour entry (ARP not
//! resolved) for either next hop of a *new* flow, the flow is not created
//! and the untouched SYN is passed to the kernel (counted `no_neigh`): lbd's
//! proxy listening on the VIP serves that connection, which also resolves
//! the neighbours for the following ones. For an *established* flow the
//! translated packet is passed (counted `no_neigh`): the kernel forwards it
//! (and resolves ARP) only if forwarding is on and, since its source is a
//! local address, `accept_local` is set on the interface; otherwise it is
//! dropped there and TCP retransmits. Health checks keep members' neighbour
//! entries valid in practice.
//!
//! # SNAT ports
//!
//! Per new flow, up to 8 ports from [`Options::snat_ports`] (default
//! 20000-32767, disjoint from Linux's default ephemeral range 32768-60999 so
//! the fast path never takes over a reply meant for a socket of the host
//! using `snat_ip`) are tried: the reply entry `(member ip:port -> snat_ip:
//! port)` is inserted only if absent, which makes the port unique per
//! `(snat_ip, member ip:port)`. When all tries collide the SYN is dropped
//! (counted `snat_ports_exhausted`) and the client retransmits.
//!
//! The ports are tried **in order per member** (a cursor per member, started
//! at a random place at every load), not at random: a member that closed a
//! flow first keeps its 4-tuple in TIME_WAIT (60 s on Linux), and a SYN of
//! *another* client connection landing on that pair is accepted only if its
//! timestamp (or sequence number) happens to be newer: a coin toss, as
//! clients derive both per 4-tuple. A rejected SYN costs the client a
//! retransmission. In order, a pair comes back only after the member has had
//! as many flows as there are ports; a member taking more new flows per
//! second than `ports / 60` still meets its TIME_WAIT entries: use a wider
//! range there (the bench measures this).
//!
//! **A SYN that reuses a closed flow's client 4-tuple keeps that flow's
//! member and SNAT port** while the member is usable. That is what a client
//! does right after such a rejection: it answers the member's ACK with a RST
//! (which ends that TIME_WAIT) and retransmits the SYN ~10 ms later, which
//! then gets through, instead of drawing another port that may meet another
//! TIME_WAIT (and then waiting a full second). It also keeps one client
//! 4-tuple on one member 4-tuple, whose timestamps keep increasing.
//!
//! A [`Service::full`] service (lbd sets it at the listener's
//! `connection_limit`) drops the SYNs of new flows (counted
//! `connection_limit`); its established flows go on.
//!
//! # Flow end
//!
//! FIN and RST are recorded in the entries; userspace expires flows with
//! [`FastPath::expire_idle`]. Entries live in an LRU map: under pressure the
//! least recently used ones are evicted (then later packets of those flows
//! are passed to the kernel, which resets them).
//!
//! # Requirements of the host (lb namespace)
//!
//! * Forwarding enabled on the interfaces the program is attached to
//!   (`net.ipv4.ip_forward=1` or `net.ipv4.conf.<if>.forwarding=1`):
//!   `bpf_fib_lookup` refuses otherwise (counted `fib_other`).
//! * Routes to clients and members, as for plain forwarding.
//! * The program must be attached to every interface packets of a flow
//!   *arrive* on: the client-facing ones and the member-facing ones.
//! * Packets must arrive with complete checksums (true for anything received
//!   from a NIC). On veth, frames sent by a local socket may carry only a
//!   partial TCP checksum (checksum offload); see the tests for how they
//!   disable that on the client and member ends.
//! * veth in native mode: a veth receiving `XDP_TX`/`XDP_REDIRECT` frames
//!   delivers them only if its *peer* has an XDP program (see
//!   [`attach_pass`]) or GRO enabled.
//! * Generic mode runs after GRO: a GRO-merged TCP packet carries a partial
//!   checksum, which the incremental update does not handle. Turn GRO/LRO
//!   off on interfaces that end up in generic mode (`ethtool -K <if> gro off
//!   lro off`); native mode sees frames as they came off the wire.
//!
//! # Not supported
//!
//! IPv6, UDP, IP options, fragments, VLAN tags, TCP MSS clamping, ICMP
//! errors for fast-path flows (passed to the kernel, which does not know the
//! flows), backup tiers (pass only the active tier's members).

mod batch;
mod fastpath;
mod maps;
mod relay;
pub mod select;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;

pub use maps::{MAGLEV_TABLE_SIZE, MAX_MEMBERS, RR_SLOTS};
pub use relay::{kick, tcp_counts, SockPairer, TcpCounts};

/// How an interface runs the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Driver mode (`xdpdrv`): before the kernel allocates an skb.
    Native,
    /// Generic mode (`xdpgeneric`): after the skb is built; works on any
    /// device, slower.
    Generic,
}

/// A member of a fast-path service: a Kubernetes NodePort or any TCP server
/// that answers whoever sent the packet (full NAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub addr: SocketAddrV4,
    /// Round-robin weight; 0 = never picked by round robin (Maglev: the
    /// table decides).
    pub weight: u32,
    /// `false`: no new flows (existing flows continue: drain).
    pub usable: bool,
}

/// How new flows pick a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Smooth weighted round robin over the usable members with weight > 0,
    /// one shared cursor per service (exact order across CPUs; see
    /// [`select::smooth_weighted_slots`]).
    RoundRobin,
    /// Maglev on the client address: `table[client_hash(client) % 65537]`
    /// is an index into [`Service::members`]; the table must have exactly
    /// [`MAGLEV_TABLE_SIZE`] (65 537, lbd's size) entries. An unusable
    /// member is skipped by walking on with lbd's per-client stride (at most
    /// 32 steps, then any usable member by hash), so with the table lbd
    /// builds, a client gets the same member as from lbd's proxy. See
    /// [`select::maglev_pick`].
    Maglev(Vec<u16>),
}

/// A fast-path service (a VIP:port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub vip: SocketAddrV4,
    /// Source address of packets sent to members (lbd's own address, which
    /// members route back through this host).
    pub snat_ip: Ipv4Addr,
    /// At most [`MAX_MEMBERS`]; addresses unique within the service.
    pub members: Vec<Member>,
    pub selection: Selection,
    /// At its connection limit: SYNs of new flows are dropped (counted
    /// `connection_limit`; clients retry) while established flows go on.
    /// The caller decides, e.g. from [`Expiry::open`].
    pub full: bool,
}

/// Counters summed over CPUs since the program was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets translated and sent by the fast path.
    pub packets: u64,
    /// Their bytes (Ethernet frames).
    pub bytes: u64,
    /// Flows created.
    pub new_flows: u64,
    /// Dropped packets by reason: `no_member`, `snat_ports_exhausted`,
    /// `conntrack_insert`, `connection_limit`.
    pub drops: Vec<(&'static str, u64)>,
    /// Packets passed to the kernel by reason: `not_ipv4`, `not_tcp`,
    /// `ip_options_or_fragment`, `malformed`, `not_service`, `no_flow`,
    /// `no_neigh`, `fib_other`, `ttl_expired`.
    pub passes: Vec<(&'static str, u64)>,
}

impl Counters {
    /// The drop counter `reason` (0 if unknown).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// The pass counter `reason` (0 if unknown).
    pub fn passed(&self, reason: &str) -> u64 {
        self.passes
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

/// Capacities and attach behaviour; [`Options::default`] is what
/// [`FastPath::attach`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Most services (default 64).
    pub max_services: u32,
    /// Most services with [`Selection::Maglev`] (default 16; 128 KiB of
    /// kernel memory each).
    pub max_maglev_services: u32,
    /// Conntrack entries, two per flow (default 262 144, ~ 30 MiB).
    pub conntrack_entries: u32,
    /// SNAT source ports (default 20000..=32767). Keep it out of the host's
    /// `net.ipv4.ip_local_port_range` (or reserve it with
    /// `ip_local_reserved_ports`).
    pub snat_ports: RangeInclusive<u16>,
    /// `None`: native mode, generic as a fallback (with a warning).
    /// `Some(mode)`: only that mode.
    pub mode: Option<AttachMode>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_services: 64,
            max_maglev_services: 16,
            conntrack_entries: 262_144,
            snat_ports: 20_000..=32_767,
            mode: None,
        }
    }
}

/// Errors of the fast path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the XDP fast path is not built in: clang or the libbpf headers were missing when \
         lbd-ebpf was compiled (apt-get install clang libbpf-dev, then rebuild)"
    )]
    NotBuilt,
    #[error(
        "permission denied {what}: the XDP fast path needs root (or CAP_BPF, CAP_NET_ADMIN \
         and CAP_PERFMON)"
    )]
    PermissionDenied {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no such network interface: {0}")]
    NoSuchInterface(String),
    #[error("loading the XDP program: {0}")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("attaching XDP to {interface}: {message}")]
    Attach {
        interface: String,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("invalid fast-path configuration: {0}")]
    Invalid(String),
}

pub use fastpath::{attach_pass, Expiry, FastPath, FlowInfo, PassGuard, CLOSED_LINGER};

/// Whether this build contains the XDP programs (clang was available).
pub const fn built() -> bool {
    cfg!(not(lbd_xdp_unavailable))
}
