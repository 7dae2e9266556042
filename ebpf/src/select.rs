//! Pure helpers for member selection, shared by the map sync and the tests:
//! the smooth weighted round-robin slot table and a userspace mirror of the
//! kernel's pick (to predict where a client goes). The arithmetic itself
//! (client hash, Maglev walk, SWRR step) is `lbd_select`'s, the same code
//! lbd's proxy runs.

use crate::maps::{MAGLEV_TABLE_SIZE, RR_SLOTS};
use lbd_select::maglev;
use std::net::Ipv4Addr;

/// lbd's stable client hash of an IPv4 address
/// ([`lbd_select::client_hash_v4`]). The kernel program computes the same
/// (`bpf/lb_select.h`, checked by `tests/select_c.rs`), so a `source_ip`
/// pool sends a client to the same member on the fast path as in the
/// userspace proxy (given the same table).
pub use lbd_select::client_hash_v4 as client_hash;

/// Smooth weighted round robin (as in nginx) over `(member index, weight)`
/// pairs with weight > 0: a cycle in which every member appears `weight`
/// times (after dividing all weights by their gcd), interleaved as evenly as
/// possible, e.g. weights 5,1,1 -> a a b a c a a. Cycles longer than
/// [`RR_SLOTS`] are scaled down proportionally (every member keeps at least
/// one slot). Empty if no member has weight > 0.
pub fn smooth_weighted_slots(members: &[(u16, u32)]) -> Vec<u16> {
    let mut entries: Vec<(u16, u64)> = members
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|&(i, w)| (i, u64::from(w)))
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    // More members than slots: keep the heaviest (ties: lowest index).
    if entries.len() > RR_SLOTS {
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        entries.truncate(RR_SLOTS);
        entries.sort_by_key(|e| e.0);
    }
    let g = entries.iter().fold(0u64, |g, e| gcd(g, e.1));
    for e in entries.iter_mut() {
        e.1 /= g;
    }
    let total: u64 = entries.iter().map(|e| e.1).sum();
    if total > RR_SLOTS as u64 {
        for e in entries.iter_mut() {
            e.1 = (e.1 * RR_SLOTS as u64 / total).max(1);
        }
        // The max(1) may overshoot: take from the heaviest until it fits.
        while entries.iter().map(|e| e.1).sum::<u64>() > RR_SLOTS as u64 {
            let heaviest = entries
                .iter_mut()
                .max_by_key(|e| e.1)
                .expect("entries is not empty");
            heaviest.1 -= 1;
        }
    }
    // One nginx step per slot: a full cycle.
    let total: u64 = entries.iter().map(|e| e.1).sum();
    let mut current = vec![0i64; entries.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let best = lbd_select::swrr::step(
            &mut current,
            entries.iter().enumerate().map(|(j, e)| (j, e.1 as i64)),
        )
        .expect("entries is not empty");
        out.push(entries[best].0);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Steps the kernel walks past the client's own Maglev slot (`LB_MAGLEV_WALK`).
pub const MAGLEV_WALK: usize = 32;

/// What the kernel program picks for a new flow from `client` of a Maglev
/// service: the member in slot `client_hash % 65537` if usable, else the
/// next usable one walking with lbd's per-client stride (at most
/// [`MAGLEV_WALK`] steps), else `rr[client_hash % rr.len()]` if usable.
/// `table` must be [`MAGLEV_TABLE_SIZE`] long.
pub fn maglev_pick(
    table: &[u16],
    rr: &[u16],
    usable: impl Fn(u16) -> bool,
    client: Ipv4Addr,
) -> Option<u16> {
    assert_eq!(table.len(), MAGLEV_TABLE_SIZE, "Maglev table length");
    let h = client_hash(client);
    let mut slot = maglev::home_slot(h);
    let stride = maglev::stride(h);
    for _ in 0..=MAGLEV_WALK {
        let idx = table[slot];
        if usable(idx) {
            return Some(idx);
        }
        slot = maglev::next_slot(slot, stride);
    }
    if rr.is_empty() {
        return None;
    }
    let idx = rr[(h % rr.len() as u64) as usize];
    usable(idx).then_some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(slots: &[u16], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &s in slots {
            c[s as usize] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_alternate() {
        let s = smooth_weighted_slots(&[(0, 1), (1, 1), (2, 1)]);
        assert_eq!(s, vec![0, 1, 2]);
        // gcd reduction: 100,100,100 is the same cycle.
        assert_eq!(smooth_weighted_slots(&[(0, 100), (1, 100), (2, 100)]), s);
    }

    #[test]
    fn weights_are_smooth() {
        let s = smooth_weighted_slots(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = smooth_weighted_slots(&[(3, 2), (7, 1)]);
        assert_eq!(s, vec![3, 7, 3]);
    }

    #[test]
    fn zero_weights_and_empty() {
        assert!(smooth_weighted_slots(&[]).is_empty());
        assert!(smooth_weighted_slots(&[(0, 0), (1, 0)]).is_empty());
        assert_eq!(smooth_weighted_slots(&[(0, 0), (1, 4)]), vec![1]);
    }

    #[test]
    fn long_cycles_are_scaled_to_fit() {
        let s = smooth_weighted_slots(&[(0, 1000), (1, 999), (2, 1)]);
        assert!(s.len() <= RR_SLOTS, "{}", s.len());
        let c = counts(&s, 3);
        assert!(c[2] >= 1);
        let ratio = c[0] as f64 / c[1] as f64;
        assert!((ratio - 1000.0 / 999.0).abs() < 0.01, "{c:?}");

        // 256 members with coprime-ish weights: everybody keeps a slot.
        let many: Vec<(u16, u32)> = (0..256u16).map(|i| (i, 1 + u32::from(i) * 7)).collect();
        let s = smooth_weighted_slots(&many);
        assert!(s.len() <= RR_SLOTS);
        assert!(counts(&s, 256).iter().all(|&c| c >= 1));
    }

    #[test]
    fn client_hash_matches_lbd() {
        // Pinned in select/src/hash.rs (PINNED_CLIENT).
        assert_eq!(
            client_hash(Ipv4Addr::new(192, 0, 2, 1)),
            0x1805_95ab_c238_d6b4
        );
    }

    #[test]
    fn maglev_pick_walks_past_unusable() {
        let table: Vec<u16> = (0..MAGLEV_TABLE_SIZE).map(|i| (i % 3) as u16).collect();
        let client = Ipv4Addr::new(10, 199, 0, 2);
        let first = maglev_pick(&table, &[0, 1, 2], |_| true, client).unwrap();
        assert_eq!(first as usize, (client_hash(client) % 65_537 % 3) as usize);
        let other = maglev_pick(&table, &[0, 1, 2], |i| i != first, client).unwrap();
        assert_ne!(other, first);
        assert_eq!(maglev_pick(&table, &[0, 1, 2], |_| false, client), None);
        // Only reachable through the round-robin fallback.
        let only0 = vec![0u16; MAGLEV_TABLE_SIZE];
        assert_eq!(maglev_pick(&only0, &[2], |i| i == 2, client), Some(2));
    }
}
