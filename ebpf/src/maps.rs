//! `#[repr(C)]` mirrors of the map keys and values in `bpf/xdp_lb.h`, with
//! their sizes pinned at compile time (the C side asserts the same sizes).
//! Addresses and ports are stored in network byte order, exactly as the
//! kernel program copies them from and to packet headers.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Members per service (`LB_MAX_MEMBERS`).
pub const MAX_MEMBERS: usize = 256;
/// Round-robin slot table length (`LB_RR_SLOTS`).
pub const RR_SLOTS: usize = 1024;
/// Maglev lookup table length (`LB_MAGLEV_SIZE`): the prime 65 537, the size
/// of every table `lbd_select` builds (lbd hands its table over unchanged).
pub const MAGLEV_TABLE_SIZE: usize = lbd_select::maglev::TABLE_SIZE;
/// Allocated Maglev table length (`LB_MAGLEV_ALLOC`, 8-byte multiple).
pub(crate) const MAGLEV_ALLOC: usize = 65_540;
/// `lb_service.maglev` of a round-robin service (`LB_NO_MAGLEV`).
pub(crate) const NO_MAGLEV: u16 = 0xffff;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const DIR_ORIGINAL: u8 = 1;
pub(crate) const DIR_REPLY: u8 = 2;
pub(crate) const FLOW_FIN: u8 = 0x01;
pub(crate) const FLOW_RST: u8 = 0x02;

pub(crate) const DROP_MAX: usize = 8;
pub(crate) const PASS_MAX: usize = 16;

/// Drop reasons, by index (`enum lb_drop_reason`).
pub(crate) const DROP_REASONS: &[&str] = &[
    "no_member",
    "snat_ports_exhausted",
    "conntrack_insert",
    "connection_limit",
];
/// Pass reasons, by index (`enum lb_pass_reason`).
pub(crate) const PASS_REASONS: &[&str] = &[
    "not_ipv4",
    "not_tcp",
    "ip_options_or_fragment",
    "malformed",
    "not_service",
    "no_flow",
    "no_neigh",
    "fib_other",
    "ttl_expired",
];

/// Network-order u32 as stored by the kernel (`__be32`).
pub(crate) fn be_ip(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub(crate) fn ip_from_be(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}

/// Network-order u16 (`__be16`).
pub(crate) fn be_port(port: u16) -> u16 {
    port.to_be()
}

pub(crate) fn port_from_be(v: u16) -> u16 {
    u16::from_be(v)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct ServiceKey {
    pub vip: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

impl ServiceKey {
    pub(crate) fn new(vip: SocketAddrV4) -> ServiceKey {
        ServiceKey {
            vip: be_ip(*vip.ip()),
            port: be_port(vip.port()),
            proto: IPPROTO_TCP,
            pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServiceVal {
    pub id: u32,
    pub snat_ip: u32,
    pub rr_len: u16,
    pub maglev: u16,
    pub members: u16,
    pub flags: u16,
}

/// `lb_service.flags`: no new flows (`LB_SVC_FULL`).
pub(crate) const SVC_FULL: u16 = 0x0001;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemberVal {
    pub ip: u32,
    pub port: u16,
    pub usable: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub port_min: u16,
    pub pad0: u16,
    pub port_count: u32,
    pub port_offset: u32,
    pub pad1: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flow {
    pub last_seen_ns: u64,
    pub nat_saddr: u32,
    pub nat_daddr: u32,
    pub nat_sport: u16,
    pub nat_dport: u16,
    pub service_id: u32,
    pub dir: u8,
    pub flags: u8,
    pub member: u16,
    pub pad: u32,
    /// The cached next hop of this direction (`hop_ns` 0: none yet).
    pub hop_ns: u64,
    pub hop_ifindex: u32,
    pub hop_smac: [u8; 6],
    pub hop_dmac: [u8; 6],
}

impl Flow {
    /// Key of the entry for the other direction of the same flow.
    pub(crate) fn other_key(&self) -> FlowKey {
        FlowKey {
            saddr: self.nat_daddr,
            daddr: self.nat_saddr,
            sport: self.nat_dport,
            dport: self.nat_sport,
            proto: IPPROTO_TCP,
            pad: [0; 3],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub pad: u64,
    pub drops: [u64; DROP_MAX],
    pub passes: [u64; PASS_MAX],
}

/// `struct lb_rr_table`.
pub(crate) type RrTable = [u16; RR_SLOTS];
/// `struct lb_maglev_table`.
pub(crate) type MaglevTable = [u16; MAGLEV_ALLOC];

// SAFETY (all): plain-old-data, `#[repr(C)]`, every byte is a named field
// (no implicit padding), any bit pattern is valid.
unsafe impl aya::Pod for ServiceKey {}
unsafe impl aya::Pod for ServiceVal {}
unsafe impl aya::Pod for MemberVal {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for Flow {}
unsafe impl aya::Pod for Stats {}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<ServiceKey>() == 8);
    assert!(size_of::<ServiceVal>() == 16);
    assert!(size_of::<MemberVal>() == 8);
    assert!(size_of::<Config>() == 16);
    assert!(size_of::<FlowKey>() == 16);
    assert!(size_of::<Flow>() == 56);
    assert!(size_of::<Stats>() == 224);
    assert!(size_of::<RrTable>() == 2048);
    assert!(size_of::<MaglevTable>() == 131_080);
    // LB_MAGLEV_SIZE in bpf/xdp_lb.h.
    assert!(MAGLEV_TABLE_SIZE == 65_537 && MAGLEV_TABLE_SIZE <= MAGLEV_ALLOC);
    assert!(DROP_REASONS.len() <= DROP_MAX);
    assert!(PASS_REASONS.len() <= PASS_MAX);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_matches_the_wire() {
        let ip = Ipv4Addr::new(10, 199, 1, 2);
        // In memory the kernel sees the octets in order.
        assert_eq!(be_ip(ip).to_ne_bytes(), [10, 199, 1, 2]);
        assert_eq!(ip_from_be(be_ip(ip)), ip);
        assert_eq!(be_port(8080).to_ne_bytes(), [0x1f, 0x90]);
        assert_eq!(port_from_be(be_port(8080)), 8080);
    }

    #[test]
    fn other_key_is_symmetric() {
        let f = Flow {
            nat_saddr: be_ip(Ipv4Addr::new(10, 199, 250, 1)),
            nat_daddr: be_ip(Ipv4Addr::new(10, 199, 1, 2)),
            nat_sport: be_port(20001),
            nat_dport: be_port(8080),
            dir: DIR_ORIGINAL,
            ..Flow::default()
        };
        let k = f.other_key();
        assert_eq!(k.saddr, f.nat_daddr);
        assert_eq!(k.daddr, f.nat_saddr);
        assert_eq!(k.sport, f.nat_dport);
        assert_eq!(k.dport, f.nat_sport);
        assert_eq!(k.proto, IPPROTO_TCP);
    }
}
