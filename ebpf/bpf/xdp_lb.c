// SPDX-License-Identifier: GPL-2.0
/*
 * lbd XDP fast path: full-NAT TCP load balancing for IPv4.
 *
 * For a TCP packet (IPv4, no IP options, not a fragment):
 *  1. conntrack hit (either direction): rewrite addresses and ports from the
 *     entry, fix the IP and TCP checksums incrementally, decrement the TTL,
 *     send it to the next hop (bpf_fib_lookup, cached in the entry for
 *     LB_HOP_CACHE_NS) with XDP_TX / bpf_redirect.
 *  2. miss, to a fast-path VIP:port, SYN without ACK: pick a usable member
 *     (weighted round robin or Maglev on the client address), allocate a SNAT
 *     source port unique per (snat_ip, member ip:port) by inserting the reply
 *     entry with BPF_NOEXIST (ports in order per member, see snat_cursor),
 *     insert the original entry, then as 1. A SYN that reuses the 4-tuple
 *     of a closed flow keeps that flow's member and SNAT port while the
 *     member is usable (see restart_flow).
 *  3. anything else: XDP_PASS (counted by reason).
 *
 * See xdp_lb.h for the maps, src/lib.rs for the userspace side.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdp_lb.h"
#include "lb_select.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* New flows try this many SNAT ports (the next ones of the member's
 * cursor) before giving up. */
#define LB_PORT_TRIES 8
/* A round-robin pick skips at most this many unusable slots. */
#define LB_RR_SKIP 4

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_DEFAULT_MAX_SERVICES);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_DEFAULT_MAX_SERVICES * LB_MAX_MEMBERS);
	__type(key, __u32);
	__type(value, struct lb_member);
} members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct lb_rr_table);
} rr_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
} rr_cursor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_DEFAULT_MAX_MAGLEV);
	__type(key, __u32);
	__type(value, struct lb_maglev_table);
} maglev_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_SNAT_CURSORS);
	__type(key, __u32);
	__type(value, __u32);
} snat_cursor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_DEFAULT_CT_ENTRIES);
	__type(key, struct lb_flow_key);
	__type(value, struct lb_flow);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_stats);
} stats SEC(".maps");

/* barrier_var (bpf_helpers.h) hides a value from the optimizer, so that a
 * bounds check the compiler can prove redundant (e.g. after a modulo) stays
 * for the verifier. Older libbpf headers lack it. */
#ifndef barrier_var
#define barrier_var(var) asm volatile("" : "=r"(var) : "0"(var))
#endif

/* ---- checksums (RFC 1624: HC' = ~(~HC + ~m + m')) ---------------------- */

/* One's-complement "replace `from` by `to`" contribution of a 32-bit field,
 * as a sum of 16-bit words (to be folded later). Byte order does not matter
 * as long as every word of one checksum is read the same way. */
static __always_inline __u64 csum_delta32(__u32 from, __u32 to)
{
	__u32 nf = ~from;
	return (__u64)(nf & 0xffff) + (nf >> 16) + (to & 0xffff) + (to >> 16);
}

static __always_inline __u64 csum_delta16(__u16 from, __u16 to)
{
	return (__u64)(__u16)~from + to;
}

static __always_inline __u16 csum_apply(__u16 check, __u64 delta)
{
	__u64 s = (__u64)(__u16)~check + delta;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* ---- member selection --------------------------------------------------- */

static __always_inline struct lb_member *usable_member(__u32 svc_id, __u32 idx)
{
	__u32 key;
	struct lb_member *m;

	if (idx >= LB_MAX_MEMBERS)
		return NULL;
	key = svc_id * LB_MAX_MEMBERS + idx;
	m = bpf_map_lookup_elem(&members, &key);
	if (!m || !m->usable || !m->ip)
		return NULL;
	return m;
}

/* Round-robin table entry `pos` (mod rr_len): the member if usable. */
static __always_inline struct lb_member *rr_member(struct lb_service *svc,
						   struct lb_rr_table *t, __u64 pos,
						   __u16 *idx_out)
{
	__u32 slot;
	__u16 idx;

	if (!svc->rr_len)
		return NULL;
	slot = pos % svc->rr_len;
	barrier_var(slot);
	if (slot >= LB_RR_SLOTS)
		return NULL;
	idx = t->slots[slot];
	*idx_out = idx;
	return usable_member(svc->id, idx);
}

static __always_inline struct lb_member *pick_member(struct lb_service *svc, __be32 client,
						     __u16 *idx_out)
{
	__u32 id = svc->id;
	struct lb_rr_table *rr = bpf_map_lookup_elem(&rr_tables, &id);
	struct lb_member *m;
	__u16 idx = 0;
	int i;

	if (!rr)
		return NULL;

	if (svc->maglev != LB_NO_MAGLEV) {
		__u32 mk = svc->maglev;
		struct lb_maglev_table *t = bpf_map_lookup_elem(&maglev_tables, &mk);
		__u64 h = lb_client_hash(client);

		if (t) {
			__u32 slot = lb_maglev_home(h);
			/* lbd's walk: stride from the quotient, in 1..M-1 */
			__u32 stride = lb_maglev_stride(h);

			for (i = 0; i <= LB_MAGLEV_WALK; i++) {
				barrier_var(slot);
				if (slot >= LB_MAGLEV_SIZE)
					break;
				idx = t->slots[slot];
				m = usable_member(id, idx);
				if (m) {
					*idx_out = idx;
					return m;
				}
				slot += stride;
				if (slot >= LB_MAGLEV_SIZE)
					slot -= LB_MAGLEV_SIZE;
			}
		}
		/* Walk exhausted (most members unusable): any usable member,
		 * still deterministic per client. */
		m = rr_member(svc, rr, h, &idx);
		if (m)
			*idx_out = idx;
		return m;
	}

	{
		__u64 *cur = bpf_map_lookup_elem(&rr_cursor, &id);
		__u64 pos;

		if (!cur)
			return NULL;
		pos = __sync_fetch_and_add(cur, 1);
		for (i = 0; i < LB_RR_SKIP; i++) {
			m = rr_member(svc, rr, pos + i, &idx);
			if (m) {
				*idx_out = idx;
				return m;
			}
		}
	}
	return NULL;
}

/* ---- forwarding --------------------------------------------------------- */

/* Rewrites the packet per `f` (addresses, ports, TTL, checksums). */
static __always_inline void translate(struct iphdr *iph, struct tcphdr *th,
				      const struct lb_flow *f)
{
	__u64 addr = csum_delta32(iph->saddr, f->nat_saddr) +
		     csum_delta32(iph->daddr, f->nat_daddr);
	__u64 ports = csum_delta16(th->source, f->nat_sport) +
		      csum_delta16(th->dest, f->nat_dport);
	__u16 *ttl_word = (__u16 *)&iph->ttl; /* ttl, protocol */
	__u16 old_tw = *ttl_word, new_tw;

	iph->ttl--;
	new_tw = *ttl_word;

	iph->check = csum_apply(iph->check, addr + csum_delta16(old_tw, new_tw));
	th->check = csum_apply(th->check, addr + ports);
	iph->saddr = f->nat_saddr;
	iph->daddr = f->nat_daddr;
	th->source = f->nat_sport;
	th->dest = f->nat_dport;
}

/* Next hop of a packet from saddr:sport to daddr:dport arriving on `ifindex`
 * (bpf_fib_lookup: routes, then the neighbour table). Returns the
 * BPF_FIB_LKUP_RET_* result; on success p->ifindex is the egress device and
 * p->smac / p->dmac the Ethernet addresses to use. */
static __always_inline int fib(struct xdp_md *ctx, struct bpf_fib_lookup *p, __u32 ifindex,
			       __u8 tos, __u16 tot_len, __be32 saddr, __be32 daddr,
			       __be16 sport, __be16 dport)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->family = AF_INET;
	p->tos = tos;
	p->l4_protocol = IPPROTO_TCP;
	p->sport = sport;
	p->dport = dport;
	p->tot_len = tot_len;
	p->ipv4_src = saddr;
	p->ipv4_dst = daddr;
	p->ifindex = ifindex;
	return bpf_fib_lookup(ctx, p, sizeof(*p), 0);
}

static __always_inline int fib_pass_reason(int rc)
{
	return rc == BPF_FIB_LKUP_RET_NO_NEIGH ? LB_PASS_NO_NEIGH : LB_PASS_FIB_OTHER;
}

/* Sets the Ethernet addresses and sends the frame out of `ifindex`. */
static __always_inline int send_via(struct xdp_md *ctx, struct lb_stats *st, struct ethhdr *eth,
				    __u32 ifindex, const __u8 *smac, const __u8 *dmac, __u64 len)
{
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	st->packets++;
	st->bytes += len;
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

/* Sends the frame along a successful lookup. */
static __always_inline int send(struct xdp_md *ctx, struct lb_stats *st, struct ethhdr *eth,
				const struct bpf_fib_lookup *p, __u64 len)
{
	return send_via(ctx, st, eth, p->ifindex, p->smac, p->dmac, len);
}

static __always_inline int pass(struct lb_stats *st, int reason)
{
	if (reason >= 0 && reason < LB_PASS_MAX)
		st->passes[reason]++;
	return XDP_PASS;
}

static __always_inline int drop(struct lb_stats *st, int reason)
{
	if (reason >= 0 && reason < LB_DROP_MAX)
		st->drops[reason]++;
	return XDP_DROP;
}

static __always_inline void other_key(const struct lb_flow *f, struct lb_flow_key *k)
{
	k->saddr = f->nat_daddr;
	k->daddr = f->nat_saddr;
	k->sport = f->nat_dport;
	k->dport = f->nat_sport;
	k->proto = IPPROTO_TCP;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/* snat_cursor index of a member. */
static __always_inline __u32 cursor_index(__be32 ip, __be16 port)
{
	__u32 h = (__u32)ip ^ ((__u32)port << 16) ^ (__u32)port;

	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	h ^= h >> 16;
	return h & (LB_SNAT_CURSORS - 1);
}

/* A SYN reuses the client 4-tuple of a closed flow (`f`, original entry;
 * `key` its key). The usual case: the client's first SYN met a member's
 * TIME_WAIT socket of an earlier flow on the same SNAT pair and was
 * rejected; the client answered the member's ACK with a RST (which ended
 * that TIME_WAIT) and now retransmits. Keeping the member and SNAT port
 * makes that retransmission succeed, and in general keeps one client
 * 4-tuple on one member 4-tuple, whose timestamps then keep increasing.
 * Returns 1 if the flow was reopened (flags cleared in both entries), 0 if
 * the caller must start over: the service, member or SNAT address changed,
 * the member is not usable, the service is full, or the reply entry is
 * gone. */
static __always_inline int restart_flow(struct lb_flow *f, const struct lb_flow_key *key,
					__u64 now)
{
	struct lb_service_key sk = {};
	struct lb_service *svc;
	struct lb_member *m;
	struct lb_flow_key rk;
	struct lb_flow *r;

	sk.vip = key->daddr;
	sk.port = key->dport;
	sk.proto = IPPROTO_TCP;
	svc = bpf_map_lookup_elem(&services, &sk);
	if (!svc || svc->id != f->service_id || svc->snat_ip != f->nat_saddr ||
	    (svc->flags & LB_SVC_FULL))
		return 0;
	m = usable_member(svc->id, f->member);
	if (!m || m->ip != f->nat_daddr || m->port != f->nat_dport)
		return 0;
	other_key(f, &rk);
	r = bpf_map_lookup_elem(&conntrack, &rk);
	if (!r || r->dir != LB_DIR_REPLY || r->nat_daddr != key->saddr ||
	    r->nat_dport != key->sport)
		return 0;
	r->flags = 0;
	r->last_seen_ns = now;
	f->flags = 0;
	return 1;
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct tcphdr *th;
	struct lb_flow_key key = {};
	struct lb_flow *f;
	struct lb_stats *st;
	struct bpf_fib_lookup p;
	__u32 zero = 0;
	__u64 now;
	int rc;

	st = bpf_map_lookup_elem(&stats, &zero);
	if (!st)
		return XDP_PASS;

	if ((void *)(eth + 1) > data_end)
		return pass(st, LB_PASS_MALFORMED);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return pass(st, LB_PASS_NOT_IPV4);
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return pass(st, LB_PASS_MALFORMED);
	if (iph->protocol != IPPROTO_TCP)
		return pass(st, LB_PASS_NOT_TCP);
	if (iph->ihl != 5 || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return pass(st, LB_PASS_IP_OPTIONS);
	th = (void *)(iph + 1);
	if ((void *)(th + 1) > data_end)
		return pass(st, LB_PASS_MALFORMED);

	key.saddr = iph->saddr;
	key.daddr = iph->daddr;
	key.sport = th->source;
	key.dport = th->dest;
	key.proto = IPPROTO_TCP;

	/* The kernel's tick (CLOCK_MONOTONIC_COARSE, Linux 5.11): cheaper than
	 * a clock read, and precise enough for idle expiry and the hop cache. */
	now = bpf_ktime_get_coarse_ns();
	f = bpf_map_lookup_elem(&conntrack, &key);
	if (f && f->dir == LB_DIR_ORIGINAL && th->syn && !th->ack &&
	    (f->flags & (LB_FLOW_FIN | LB_FLOW_RST))) {
		/* The client reuses the 4-tuple of a closed flow. */
		if (restart_flow(f, &key, now)) {
			st->new_flows++;
		} else {
			struct lb_flow_key reply_key;

			other_key(f, &reply_key);
			bpf_map_delete_elem(&conntrack, &reply_key);
			bpf_map_delete_elem(&conntrack, &key);
			f = NULL;
		}
	}

	if (f) {
		__u8 fl = f->flags;

		if (iph->ttl <= 1)
			return pass(st, LB_PASS_TTL);
		/* Written once per tick, not per packet. */
		if (f->last_seen_ns != now)
			f->last_seen_ns = now;
		if (th->fin)
			fl |= LB_FLOW_FIN;
		if (th->rst)
			fl |= LB_FLOW_RST;
		if (fl != f->flags)
			f->flags = fl;
		translate(iph, th, f);
		/* The next hop: cached in the entry, looked up again after
		 * LB_HOP_CACHE_NS (a lookup per packet was most of the
		 * program's cost on keep-alive traffic). */
		if (f->hop_ns && now - f->hop_ns < LB_HOP_CACHE_NS)
			return send_via(ctx, st, eth, f->hop_ifindex, f->hop_smac, f->hop_dmac,
					len);
		rc = fib(ctx, &p, ctx->ingress_ifindex, iph->tos, bpf_ntohs(iph->tot_len),
			 iph->saddr, iph->daddr, th->source, th->dest);
		if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
			f->hop_ifindex = p.ifindex;
			__builtin_memcpy(f->hop_smac, p.smac, ETH_ALEN);
			__builtin_memcpy(f->hop_dmac, p.dmac, ETH_ALEN);
			f->hop_ns = now;
			return send(ctx, st, eth, &p, len);
		}
		/* Hand the translated packet to the kernel: it forwards it
		 * (resolving the neighbour) if it can. */
		return pass(st, fib_pass_reason(rc));
	}

	/* No flow state: a new flow to a fast-path service? */
	{
		struct lb_service_key sk = {};
		struct lb_service *svc;
		struct lb_member *m;
		struct lb_config *cfg;
		struct lb_flow fwd = {}, rev = {};
		struct lb_flow_key rk = {};
		__u16 idx = 0;
		__u32 ck, *cur;
		int i, ok = 0, created = 1;

		sk.vip = iph->daddr;
		sk.port = th->dest;
		sk.proto = IPPROTO_TCP;
		svc = bpf_map_lookup_elem(&services, &sk);
		if (!svc)
			return pass(st, LB_PASS_NOT_SERVICE);
		if (!th->syn || th->ack || th->rst || th->fin)
			return pass(st, LB_PASS_NO_FLOW);
		if (iph->ttl <= 1)
			return pass(st, LB_PASS_TTL);
		if (svc->flags & LB_SVC_FULL)
			return drop(st, LB_DROP_CONN_LIMIT);
		cfg = bpf_map_lookup_elem(&config, &zero);
		if (!cfg || !cfg->port_count)
			return drop(st, LB_DROP_PORTS_EXHAUSTED);

		m = pick_member(svc, iph->saddr, &idx);
		if (!m)
			return drop(st, LB_DROP_NO_MEMBER);

		fwd.last_seen_ns = now;
		fwd.nat_saddr = svc->snat_ip;
		fwd.nat_daddr = m->ip;
		fwd.nat_dport = m->port;
		fwd.service_id = svc->id;
		fwd.dir = LB_DIR_ORIGINAL;
		fwd.member = idx;

		rev.last_seen_ns = now;
		rev.nat_saddr = iph->daddr;
		rev.nat_daddr = iph->saddr;
		rev.nat_sport = th->dest;
		rev.nat_dport = th->source;
		rev.service_id = svc->id;
		rev.dir = LB_DIR_REPLY;
		rev.member = idx;

		rk.saddr = m->ip;
		rk.daddr = svc->snat_ip;
		rk.sport = m->port;
		rk.proto = IPPROTO_TCP;

		/* SNAT port: unique per (snat_ip, member ip:port) because the
		 * reply entry is inserted only if absent; the member's next
		 * ports in order (see snat_cursor in xdp_lb.h). */
		ck = cursor_index(m->ip, m->port);
		cur = bpf_map_lookup_elem(&snat_cursor, &ck);
		if (!cur)
			return drop(st, LB_DROP_PORTS_EXHAUSTED);
		for (i = 0; i < LB_PORT_TRIES; i++) {
			__u32 n = __sync_fetch_and_add(cur, 1) + cfg->port_offset;
			__u32 port = cfg->port_min + n % cfg->port_count;

			rk.dport = bpf_htons((__u16)port);
			if (bpf_map_update_elem(&conntrack, &rk, &rev, BPF_NOEXIST) == 0) {
				ok = 1;
				break;
			}
		}
		if (!ok)
			return drop(st, LB_DROP_PORTS_EXHAUSTED);
		fwd.nat_sport = rk.dport;

		if (bpf_map_update_elem(&conntrack, &key, &fwd, BPF_NOEXIST) != 0) {
			/* Another CPU created this flow meanwhile (SYN
			 * retransmit): use its entry. */
			bpf_map_delete_elem(&conntrack, &rk);
			f = bpf_map_lookup_elem(&conntrack, &key);
			if (!f || f->dir != LB_DIR_ORIGINAL)
				return drop(st, LB_DROP_CT_INSERT);
			fwd = *f;
			created = 0;
		}

		/* Both next hops must be resolvable before the flow is
		 * committed: otherwise undo it and let the kernel (lbd's own
		 * proxy on the VIP) have the untouched SYN; that also gets the
		 * neighbours resolved for the next flows. */
		rc = fib(ctx, &p, ctx->ingress_ifindex, iph->tos, bpf_ntohs(iph->tot_len),
			 fwd.nat_saddr, fwd.nat_daddr, fwd.nat_sport, fwd.nat_dport);
		if (rc == BPF_FIB_LKUP_RET_SUCCESS && created) {
			struct bpf_fib_lookup back;

			rc = fib(ctx, &back, p.ifindex, iph->tos, bpf_ntohs(iph->tot_len),
				 key.daddr, key.saddr, key.dport, key.sport);
		}
		if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
			if (created) {
				bpf_map_delete_elem(&conntrack, &key);
				bpf_map_delete_elem(&conntrack, &rk);
			}
			return pass(st, fib_pass_reason(rc));
		}
		if (created)
			st->new_flows++;
		translate(iph, th, &fwd);
		return send(ctx, st, eth, &p, len);
	}
}
