// SPDX-License-Identifier: GPL-2.0
/*
 * An in-kernel relay for established proxied connections (issue 19's
 * sockmap experiment, measured by `bench --bin sockmap`).
 *
 * Both sockets of a proxied connection go into `lb_relay_peers`, each under
 * the socket cookie of the *other* one, then into `lb_relay_socks`, which
 * the stream verdict program is attached to. It runs for every chunk of
 * data arriving on a socket there and redirects it to the egress of the
 * socket stored under its own cookie in `lb_relay_peers`: its peer. Data
 * never reaches userspace.
 * FIN and RST are not data: userspace still sees EOF and errors on a read.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Relayed sockets, under their own cookie: the verdict runs on them. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} lb_relay_socks SEC(".maps");

/*
 * Where data goes: each socket under the cookie of the socket whose data
 * it receives. No program is attached to this map, so a socket's peer can
 * be in place before the socket itself enters lb_relay_socks.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} lb_relay_peers SEC(".maps");

SEC("sk_skb/stream_verdict")
int lb_relay(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);

	/*
	 * A FIN arrives as an skb without data. Redirected, the peer's send
	 * of zero bytes counts as a failure there (EPIPE on the peer socket);
	 * the FIN is the reader's to see (EOF), so keep it.
	 */
	if (skb->len == 0)
		return SK_PASS;

	/*
	 * SK_PASS with the redirect set sends the data to the peer. Without
	 * a peer (it closed) the helper sets nothing and answers SK_DROP;
	 * passing instead hands the data to the socket's own reader.
	 */
	bpf_sk_redirect_hash(skb, &lb_relay_peers, &cookie, 0);
	return SK_PASS;
}
