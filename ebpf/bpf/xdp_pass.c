// SPDX-License-Identifier: GPL-2.0
/*
 * A do-nothing XDP program. Attach it (natively) to the peer of a veth that
 * receives XDP_TX / XDP_REDIRECT frames from the lbd fast path: veth only
 * delivers such frames to a peer that has an XDP program (or GRO enabled).
 * Its own object, so attaching it creates no maps.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
