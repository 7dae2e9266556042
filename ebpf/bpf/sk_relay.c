// SPDX-License-Identifier: GPL-2.0
/*
 * An in-kernel relay for established proxied connections (issue 19's
 * sockmap experiment, measured by `bench --bin sockmap`).
 *
 * Every socket of a relayed connection is in `lb_relay_socks` under its own
 * socket cookie. The stream verdict program runs for each chunk of data
 * arriving on such a socket and either passes it to userspace (SK_PASS,
 * counted in `passed`) or redirects it to the egress of its peer (counted
 * in `relayed`, stamped in `last_ns`). It redirects only when userspace
 * has set the socket's peer and has declared, in `lb_relay_fwd`, that it
 * forwarded every byte passed so far (`fwd == passed`). So the switch from
 * userspace copying to kernel relaying keeps the byte order: data passed
 * to userspace is always forwarded before any later data is redirected.
 * FIN and RST are not data: userspace still sees EOF and errors on a read.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* What the program counts per socket (written by the program only). */
struct relay_stat {
	__u64 passed;
	__u64 relayed;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} lb_relay_socks SEC(".maps");

/* cookie -> the peer's cookie (written by userspace). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} lb_relay_peer SEC(".maps");

/* cookie -> bytes passed to userspace that it has forwarded (userspace). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} lb_relay_fwd SEC(".maps");

/* cookie -> struct relay_stat (the program). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct relay_stat);
} lb_relay_stat SEC(".maps");

SEC("sk_skb/stream_verdict")
int lb_relay(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct relay_stat *st = bpf_map_lookup_elem(&lb_relay_stat, &cookie);
	__u64 *peer, *fwd;

	if (!st)
		return SK_PASS;
	peer = bpf_map_lookup_elem(&lb_relay_peer, &cookie);
	fwd = bpf_map_lookup_elem(&lb_relay_fwd, &cookie);
	if (!peer || !fwd || *fwd != st->passed) {
		st->passed += skb->len;
		return SK_PASS;
	}
	st->relayed += skb->len;
	st->last_ns = bpf_ktime_get_coarse_ns();
	return bpf_sk_redirect_hash(skb, &lb_relay_socks, peer, 0);
}
