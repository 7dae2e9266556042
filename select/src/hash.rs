//! Stable hashing for Maglev and the client hash (moved here from
//! `lbd/src/balance/hash.rs`; the pinned values are unchanged).
//!
//! Everything a Maglev table depends on must hash the same way in every
//! process, on every platform and with every Rust version: otherwise two lbd
//! instances behind the same router (or one instance before and after an
//! upgrade) would send the same client to different members. `std`'s
//! `DefaultHasher` makes no such promise and `RandomState` is randomized on
//! purpose, so we use our own:
//!
//! * FNV-1a 64 over a 64-bit seed (little-endian bytes) followed by the
//!   input bytes. The seed lets us derive independent hashes of the same key
//!   (Maglev needs two per member: offset and skip).
//! * A final 64-bit mixer (the `splitmix64` finalizer) so every input bit
//!   affects every output bit. FNV alone has weak low bits for short inputs,
//!   and we reduce modulo a prime table size.
//!
//! Both steps are fully specified integer arithmetic with wrapping, so the
//! result is identical everywhere. The unit tests pin concrete values.

use std::net::{IpAddr, Ipv4Addr};

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Seed for the Maglev permutation offset of a member key.
pub const SEED_OFFSET: u64 = 0x6c62_6400_0000_0001;
/// Seed for the Maglev permutation skip of a member key.
pub const SEED_SKIP: u64 = 0x6c62_6400_0000_0002;
/// Seed for client addresses.
pub const SEED_CLIENT: u64 = 0x6c62_6400_0000_0003;

/// Plain FNV-1a 64 of `bytes`, continuing from `state`.
#[inline]
fn fnv1a64_from(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// The `splitmix64` finalizer: a bijective avalanche mix of 64 bits.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seeded stable 64-bit hash of `bytes`. Different seeds give independent
/// hashes of the same input.
#[inline]
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let state = fnv1a64_from(FNV_OFFSET_BASIS, &seed.to_le_bytes());
    mix64(fnv1a64_from(state, bytes))
}

/// Stable hash of a client address.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, which is what a dual-stack
/// socket reports for IPv4 clients) hashes exactly like `a.b.c.d`, so a client
/// keeps its member whichever kind of listener it came through.
#[inline]
pub fn client_hash(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(v4) => client_hash_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => client_hash_v4(v4),
            None => hash64(SEED_CLIENT, &v6.octets()),
        },
    }
}

/// Stable hash of an IPv4 client address: [`client_hash`] of `client`.
///
/// The XDP program computes the same in C (`ebpf/bpf/lb_select.h`
/// `lb_client_hash`: the seed's little-endian bytes, then the octets in
/// order), so a `source_ip` client gets the same member on the fast path as
/// through the proxy.
#[inline]
pub fn client_hash_v4(client: Ipv4Addr) -> u64 {
    hash64(SEED_CLIENT, &client.octets())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64_from(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64_from(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fnv1a64_from(FNV_OFFSET_BASIS, b"foobar"),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn hash64_is_pinned() {
        // If these change, every deployed Maglev table changes: clients would
        // be remapped on upgrade. Do not update them casually.
        assert_eq!(hash64(SEED_OFFSET, b"10.0.0.10:31320"), PINNED_OFFSET);
        assert_eq!(hash64(SEED_SKIP, b"10.0.0.10:31320"), PINNED_SKIP);
        assert_eq!(
            client_hash(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            PINNED_CLIENT
        );
    }

    const PINNED_OFFSET: u64 = 0x91dc_468c_0435_e3c7;
    const PINNED_SKIP: u64 = 0x6f4a_6305_ee91_c257;
    const PINNED_CLIENT: u64 = 0x1805_95ab_c238_d6b4;

    #[test]
    fn seeds_give_independent_hashes() {
        let key = b"10.0.0.10:31320";
        assert_ne!(hash64(SEED_OFFSET, key), hash64(SEED_SKIP, key));
        assert_ne!(
            hash64(SEED_OFFSET, key),
            hash64(SEED_OFFSET, b"10.0.0.11:31320")
        );
    }

    #[test]
    fn ipv4_mapped_hashes_like_ipv4() {
        let v4 = Ipv4Addr::new(203, 0, 113, 7);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(client_hash(IpAddr::V4(v4)), client_hash(mapped));
        // A genuine IPv6 address is hashed as its 16 bytes.
        let v6: Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_ne!(client_hash(IpAddr::V6(v6)), client_hash(IpAddr::V4(v4)));
    }
}
