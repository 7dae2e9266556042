/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Shared definitions of the lbd XDP fast path: map keys and values as the
 * kernel program (xdp_lb.c) and the Rust loader (src/maps.rs) see them.
 *
 * Rules for every struct here:
 *  - fixed-width types only, no #pragma pack, every padding byte explicit
 *    (named `pad*`, always written as zero by both sides: hash keys are
 *    compared bytewise);
 *  - sizes are asserted below and again on the Rust side (the `#[repr(C)]`
 *    mirrors in src/maps.rs), so a change that breaks the layout fails to
 *    build on both sides;
 *  - addresses and ports are in network byte order (`__be*`) wherever they
 *    are copied to or from packet headers; indices and counters are host
 *    order.
 *
 * IPv4 and TCP only.
 */
#ifndef LBD_XDP_LB_H
#define LBD_XDP_LB_H

#include <linux/types.h>

/* Members per service: member indices are 0..LB_MAX_MEMBERS-1 (u16 in the
 * selection tables). The members map is indexed service_id * LB_MAX_MEMBERS
 * + member_index. */
#define LB_MAX_MEMBERS 256

/* Round-robin slot table length (entries used: lb_service.rr_len). */
#define LB_RR_SLOTS 1024

/* Maglev lookup table length: a prime, the same as lbd's userspace Maglev
 * (select/src/maglev.rs TABLE_SIZE), so the daemon can hand its table
 * over unchanged. LB_MAGLEV_ALLOC rounds the value up to 8 bytes. */
#define LB_MAGLEV_SIZE 65537
#define LB_MAGLEV_ALLOC 65540

/* How many further slots a Maglev lookup walks when the client's slot holds
 * an unusable member, before falling back to the round-robin table. */
#define LB_MAGLEV_WALK 32

/* lb_service.maglev when the service uses round robin. */
#define LB_NO_MAGLEV 0xffff

/* Default capacities (userspace may change max_entries at load time). */
#define LB_DEFAULT_MAX_SERVICES 64
#define LB_DEFAULT_MAX_MAGLEV 16
#define LB_DEFAULT_CT_ENTRIES 262144

/* services: HASH, key lb_service_key -> lb_service. One entry per
 * fast-path VIP:port. */
struct lb_service_key {
	__be32 vip;     /* VIP address */
	__be16 port;    /* VIP port */
	__u8 proto;     /* IPPROTO_TCP (6) */
	__u8 pad;       /* 0 */
};                      /* 8 bytes */

struct lb_service {
	__u32 id;       /* index into members / rr_tables / rr_cursor */
	__be32 snat_ip; /* source address of translated client->member packets */
	__u16 rr_len;   /* used entries of rr_tables[id]; 0 = no usable member */
	__u16 maglev;   /* index into maglev_tables, or LB_NO_MAGLEV */
	__u16 members;  /* number of member slots in use (informational) */
	__u16 flags;    /* LB_SVC_* */
};                      /* 16 bytes */

/* lb_service.flags: at its connection limit: SYNs of new flows are dropped
 * (counted LB_DROP_CONN_LIMIT) until userspace clears it. */
#define LB_SVC_FULL 0x0001

/* members: ARRAY, key u32 (id * LB_MAX_MEMBERS + index) -> lb_member. */
struct lb_member {
	__be32 ip;
	__be16 port;
	__u8 usable;    /* 1: may get new flows; 0: no new flows (or empty slot) */
	__u8 pad;       /* 0 */
};                      /* 8 bytes */

/* rr_tables: ARRAY, key u32 service id -> lb_rr_table. The first rr_len
 * entries are member indices in smooth weighted round-robin order, usable
 * members only. Also the fallback of Maglev services. */
struct lb_rr_table {
	__u16 slots[LB_RR_SLOTS];
};                      /* 2048 bytes */

/* rr_cursor: ARRAY, key u32 service id -> u64, advanced atomically (one
 * shared cursor per service: exact weighted round robin across CPUs; only
 * touched on SYNs). */

/* maglev_tables: ARRAY, key u32 (lb_service.maglev) -> lb_maglev_table.
 * slots[client_hash % LB_MAGLEV_SIZE] is a member index; the last 3 entries
 * are padding. */
struct lb_maglev_table {
	__u16 slots[LB_MAGLEV_ALLOC];
};                      /* 131080 bytes */

/* config: ARRAY, key 0 -> lb_config (written once by userspace at load). */
struct lb_config {
	__u16 port_min;    /* SNAT source ports are port_min .. port_min+port_count-1 */
	__u16 pad0;        /* 0 */
	__u32 port_count;  /* >= 1 */
	__u32 port_offset; /* random per load: where the port cursors start */
	__u32 pad1;        /* 0 */
};                         /* 16 bytes */

/* snat_cursor: ARRAY, key u32 (hash of member ip:port % LB_SNAT_CURSORS)
 * -> u32, advanced atomically on every SNAT port try. A member's SNAT ports
 * are handed out in order (port_min + (cursor + port_offset) % port_count),
 * so a (snat_ip:port, member) pair is used again as late as possible: a
 * member that closed the previous flow on that pair keeps it in TIME_WAIT,
 * and a SYN from another client connection landing on it is a coin toss
 * (the client's timestamps and sequence numbers are per 4-tuple). Members
 * that share a cursor only skip each other's ports. */
#define LB_SNAT_CURSORS 4096

/* conntrack: LRU_HASH, key lb_flow_key -> lb_flow. Two entries per flow:
 *   original: (client ip, vip, client port, vip port)
 *             -> rewrite to (snat_ip, member ip, snat port, member port)
 *   reply:    (member ip, snat_ip, member port, snat port)
 *             -> rewrite to (vip, client ip, vip port, client port)
 * i.e. a packet whose (saddr, daddr, sport, dport) equals a key gets its
 * (saddr, daddr, sport, dport) replaced by the entry's nat_* fields, and the
 * key of the other direction's entry is always
 * (nat_daddr, nat_saddr, nat_dport, nat_sport). */
struct lb_flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;     /* IPPROTO_TCP (6) */
	__u8 pad[3];    /* 0 */
};                      /* 16 bytes */

#define LB_DIR_ORIGINAL 1 /* client -> member */
#define LB_DIR_REPLY 2    /* member -> client */

#define LB_FLOW_FIN 0x01  /* a FIN was seen in this entry's direction */
#define LB_FLOW_RST 0x02  /* a RST was seen in this entry's direction */

struct lb_flow {
	__u64 last_seen_ns; /* bpf_ktime_get_coarse_ns() of the last packet (CLOCK_MONOTONIC_COARSE) */
	__be32 nat_saddr;
	__be32 nat_daddr;
	__be16 nat_sport;
	__be16 nat_dport;
	__u32 service_id;   /* lb_service.id at creation (informational) */
	__u8 dir;           /* LB_DIR_* */
	__u8 flags;         /* LB_FLOW_* */
	__u16 member;       /* member index at creation (informational) */
	__u32 pad;          /* 0 */
	/* The next hop of this direction, cached from bpf_fib_lookup for
	 * LB_HOP_CACHE_NS (0 when none yet): the egress device and the
	 * Ethernet addresses to write. */
	__u64 hop_ns;       /* bpf_ktime_get_coarse_ns() of the lookup */
	__u32 hop_ifindex;
	__u8 hop_smac[6];
	__u8 hop_dmac[6];
};                          /* 56 bytes */

/* How long an established flow direction reuses its next hop before it
 * looks it up again: a route or neighbour change reaches established
 * flows within this (new flows look it up at once). */
#define LB_HOP_CACHE_NS 1000000000ULL

/* stats: PERCPU_ARRAY, key 0 -> lb_stats (sum over CPUs in userspace). */
enum lb_drop_reason {
	LB_DROP_NO_MEMBER = 0,       /* new flow, no usable member */
	LB_DROP_PORTS_EXHAUSTED = 1, /* new flow, no free SNAT port found */
	LB_DROP_CT_INSERT = 2,       /* new flow, conntrack insert failed */
	LB_DROP_CONN_LIMIT = 3,      /* new flow, service at its connection limit */
	LB_DROP_MAX = 8,
};

enum lb_pass_reason {
	LB_PASS_NOT_IPV4 = 0,     /* ARP, IPv6, VLAN-tagged, ... */
	LB_PASS_NOT_TCP = 1,      /* ICMP, UDP, ... */
	LB_PASS_IP_OPTIONS = 2,   /* ihl != 5 or a fragment */
	LB_PASS_MALFORMED = 3,    /* truncated headers */
	LB_PASS_NOT_SERVICE = 4,  /* TCP, no flow, not to a fast-path VIP:port */
	LB_PASS_NO_FLOW = 5,      /* to a VIP:port, no flow state, not a SYN */
	LB_PASS_NO_NEIGH = 6,     /* next hop has no neighbour entry */
	LB_PASS_FIB_OTHER = 7,    /* other bpf_fib_lookup failure */
	LB_PASS_TTL = 8,          /* TTL <= 1: the kernel sends the ICMP */
	LB_PASS_MAX = 16,
};

struct lb_stats {
	__u64 packets;      /* packets translated and sent (TX/REDIRECT) */
	__u64 bytes;        /* their frame bytes (as received) */
	__u64 new_flows;    /* flows created */
	__u64 pad;          /* 0 */
	__u64 drops[LB_DROP_MAX];
	__u64 passes[LB_PASS_MAX];
};                          /* 224 bytes */

#ifdef __BPF__
_Static_assert(sizeof(struct lb_service_key) == 8, "lb_service_key");
_Static_assert(sizeof(struct lb_service) == 16, "lb_service");
_Static_assert(sizeof(struct lb_member) == 8, "lb_member");
_Static_assert(sizeof(struct lb_rr_table) == 2048, "lb_rr_table");
_Static_assert(sizeof(struct lb_maglev_table) == 131080, "lb_maglev_table");
_Static_assert(sizeof(struct lb_config) == 16, "lb_config");
_Static_assert(sizeof(struct lb_flow_key) == 16, "lb_flow_key");
_Static_assert(sizeof(struct lb_flow) == 56, "lb_flow");
_Static_assert(sizeof(struct lb_stats) == 224, "lb_stats");
#endif

#endif /* LBD_XDP_LB_H */
