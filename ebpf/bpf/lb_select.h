/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The kernel's copy of lbd's selection arithmetic: the client hash and where
 * a Maglev lookup starts and steps. The Rust original is the lbd-select
 * crate (select/src/hash.rs client_hash_v4, select/src/maglev.rs home_slot
 * and stride), which lbd's proxy and the loader use; this copy must compute
 * exactly the same, or a source_ip client would get a different member on
 * the fast path than through the proxy.
 *
 * Plain C on fixed-width types, no BPF helpers: ebpf/tests/select_c.rs
 * compiles this header for the host and compares it with the crate on tens
 * of thousands of addresses.
 */
#ifndef LBD_LB_SELECT_H
#define LBD_LB_SELECT_H

#include <linux/types.h>

#include "xdp_lb.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define LB_FNV_OFFSET_BASIS 0xcbf29ce484222325ULL
#define LB_FNV_PRIME 0x00000100000001b3ULL
#define LB_SEED_CLIENT 0x6c62640000000003ULL

/* FNV-1a 64 over the seed's little-endian bytes and the address octets (in
 * packet order), then the splitmix64 finalizer. */
static __always_inline __u64 lb_client_hash(__be32 addr)
{
	__u64 h = LB_FNV_OFFSET_BASIS;
	__u64 seed = LB_SEED_CLIENT;
	__u8 *b = (__u8 *)&addr;
	int i;

#pragma unroll
	for (i = 0; i < 8; i++) { /* seed, little-endian bytes */
		h ^= (seed >> (8 * i)) & 0xff;
		h *= LB_FNV_PRIME;
	}
#pragma unroll
	for (i = 0; i < 4; i++) { /* the address octets, in order */
		h ^= b[i];
		h *= LB_FNV_PRIME;
	}
	/* splitmix64 finalizer */
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
	return h ^ (h >> 31);
}

/* The Maglev slot a client with hash h looks up first. */
static __always_inline __u32 lb_maglev_home(__u64 h)
{
	return h % LB_MAGLEV_SIZE;
}

/* lbd's per-client walk stride, in 1..LB_MAGLEV_SIZE-1: from the quotient
 * of the hash, independent of the remainder that chose the home slot. */
static __always_inline __u32 lb_maglev_stride(__u64 h)
{
	return (h / LB_MAGLEV_SIZE) % (LB_MAGLEV_SIZE - 1) + 1;
}

#endif /* LBD_LB_SELECT_H */
