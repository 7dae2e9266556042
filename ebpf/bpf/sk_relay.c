// SPDX-License-Identifier: GPL-2.0
/*
 * An in-kernel relay for established proxied connections (issue 19's
 * sockmap experiment, measured by `bench --bin sockmap`).
 *
 * Both sockets of a proxied connection go into `lb_relay_socks`, each under
 * the socket cookie of the *other* one. The stream verdict program runs
 * for every chunk of data arriving on a socket in the map and redirects it
 * to the egress of the socket stored under its own cookie: its peer. Data
 * never reaches userspace; a socket without a peer keeps its data (SK_PASS).
 * FIN and RST are not data: userspace still sees EOF and errors on a read.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} lb_relay_socks SEC(".maps");

SEC("sk_skb/stream_verdict")
int lb_relay(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);

	return bpf_sk_redirect_hash(skb, &lb_relay_socks, &cookie, 0);
}
