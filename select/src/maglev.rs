//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016), with weights: the table, and
//! where a client's lookup starts and how it walks on. What a walk skips
//! (unusable members) and when it gives up is the caller's policy: lbd's
//! proxy walks until it has seen every owner (`lbd/src/balance/maglev.rs`),
//! the XDP program at most `LB_MAGLEV_WALK` steps.
//!
//! # The table
//!
//! A lookup table of [`TABLE_SIZE`] slots (the prime 65 537, whatever the
//! member count) maps `client_hash % TABLE_SIZE` to a member. Every member has
//! its own *preference list*, a permutation of all slots derived only from
//! its key (never from its position in the config):
//!
//! ```text
//! offset = hash64(SEED_OFFSET, key) % M
//! skip   = hash64(SEED_SKIP,   key) % (M - 1) + 1
//! slot j = (offset + j * skip) % M          (a permutation because M is prime)
//! ```
//!
//! Members take turns claiming the next still-empty slot of their preference
//! list until the table is full. Because each member mostly gets its own
//! favourite slots, adding or removing a member mostly moves only the slots
//! it gains or loses: about 1/N of clients, not almost all of them as with
//! `hash % N`.
//!
//! # Weights
//!
//! Plain Maglev gives each member one turn per round, so every member ends up
//! with ~M/N slots. For weights, turns are rationed by credit: in round
//! `r = 1, 2, ...` a member with weight `w` takes a turn only while the number
//! of turns it has taken is below its share `ceil(r * w / w_max)`, where
//! `w_max` is the largest weight in the table. The heaviest member therefore
//! takes a turn every round, a member of half its weight every other round,
//! and so on, and each turn fills exactly one slot. When the table is full,
//! every member holds `M * w / sum(w)` slots to within one. The `ceil` gives
//! every member its first turn in round 1, so each member with weight > 0
//! owns at least one slot (as long as there are fewer members than slots).
//!
//! Within a round, members take their turns in order of key (then id, for
//! duplicate keys), so the table depends only on the set of `(key, weight)`
//! pairs, not on the order of members in the config file.
//!
//! # The walk
//!
//! A lookup starts at [`home_slot`] and, if that member is unusable, steps
//! forward by a per-client [`stride`] (`1..M`, from the bits of the client
//! hash not used to choose the slot), not by 1. Neighbouring slots of a
//! Maglev table are correlated (each member fills an arithmetic progression),
//! so with stride 1 the slot after each of B's slots is often owned by the
//! same other member; with a per-client stride the next slot is effectively
//! random, and the walk is still deterministic per client. Because `M` is
//! prime, any stride visits every slot within `M` steps.

use crate::hash::{hash64, SEED_OFFSET, SEED_SKIP};

/// Number of slots in every Maglev table: a prime, so that every `skip` in
/// `1..M` generates a full permutation. The XDP program's `LB_MAGLEV_SIZE`
/// is the same, so lbd's table is handed to the kernel unchanged.
pub const TABLE_SIZE: usize = 65_537;

/// Marks a slot nobody has claimed yet (only during construction).
const EMPTY: u32 = u32::MAX;

/// One member as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// What the table's slots hold for this member (lbd: its index in the
    /// pool). Breaks ties between equal keys; must be < `u32::MAX`.
    pub id: u32,
    /// Stable identity, e.g. `b"10.0.0.10:31320"`: the preference list is
    /// derived from it alone.
    pub key: &'a [u8],
    /// Relative share of the slots; 0 = no slot.
    pub weight: u32,
}

/// A built Maglev table: `slots()[s]` is the id of an [`Entry`].
#[derive(Clone, PartialEq, Eq)]
pub struct Table {
    /// Either empty (no entry with weight > 0) or exactly [`TABLE_SIZE`]
    /// long.
    slots: Box<[u32]>,
    /// How many distinct entries own at least one slot.
    owners: usize,
}

impl std::fmt::Debug for Table {
    // 65 537 slots are not useful in a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("slots", &self.slots.len())
            .field("owners", &self.owners)
            .finish()
    }
}

/// An entry's progress through its preference list during construction.
struct Turns {
    id: u32,
    weight: u64,
    /// The next slot on this entry's preference list.
    next: usize,
    skip: usize,
    /// Slots claimed so far.
    taken: u64,
}

impl Table {
    /// Builds the table of the entries with weight > 0 (empty if there is
    /// none). Allocates and takes a few milliseconds: build it off the hot
    /// path. The result depends only on the set of entries, not their order.
    pub fn build(entries: &[Entry<'_>]) -> Table {
        let mut order: Vec<&Entry<'_>> = entries.iter().filter(|e| e.weight > 0).collect();
        if order.is_empty() {
            return Table {
                slots: Box::new([]),
                owners: 0,
            };
        }
        // Independent of input order: by key, then id for duplicate keys.
        order.sort_by(|a, b| a.key.cmp(b.key).then(a.id.cmp(&b.id)));

        let m = TABLE_SIZE as u64;
        let mut turns: Vec<Turns> = order
            .iter()
            .map(|e| Turns {
                id: e.id,
                weight: u64::from(e.weight),
                next: (hash64(SEED_OFFSET, e.key) % m) as usize,
                skip: (hash64(SEED_SKIP, e.key) % (m - 1) + 1) as usize,
                taken: 0,
            })
            .collect();
        let max_weight = turns.iter().map(|t| t.weight).max().unwrap_or(1);

        let mut slots = vec![EMPTY; TABLE_SIZE].into_boxed_slice();
        let mut filled = 0;
        // The heaviest entry takes a turn every round and each turn fills a
        // slot, so this ends within TABLE_SIZE rounds.
        'fill: for round in 1u64.. {
            for t in turns.iter_mut() {
                let share = (round * t.weight).div_ceil(max_weight);
                if t.taken >= share {
                    continue;
                }
                // Claim the next free slot on this entry's preference list.
                // The table is not full and the list visits every slot, so
                // this finds one.
                loop {
                    let slot = t.next;
                    t.next = (t.next + t.skip) % TABLE_SIZE;
                    if slots[slot] == EMPTY {
                        slots[slot] = t.id;
                        break;
                    }
                }
                t.taken += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }

        let owners = turns.iter().filter(|t| t.taken > 0).count();
        Table { slots, owners }
    }

    /// The slots (entry ids): empty or [`TABLE_SIZE`] long.
    #[inline]
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// How many distinct entries own at least one slot: once a walk has seen
    /// that many unusable, it can stop.
    #[inline]
    pub fn owners(&self) -> usize {
        self.owners
    }
}

/// The slot a lookup for a client with hash `hash` starts at.
#[inline]
pub fn home_slot(hash: u64) -> usize {
    (hash % TABLE_SIZE as u64) as usize
}

/// The per-client stride of a lookup walk, in `1..TABLE_SIZE`: from the
/// quotient of the hash, independent of the remainder that chose
/// [`home_slot`].
#[inline]
pub fn stride(hash: u64) -> usize {
    (hash / TABLE_SIZE as u64 % (TABLE_SIZE as u64 - 1) + 1) as usize
}

/// The slot after `slot` on a walk with stride `stride` (both below
/// [`TABLE_SIZE`]).
#[inline]
pub fn next_slot(slot: usize, stride: usize) -> usize {
    let next = slot + stride;
    if next >= TABLE_SIZE {
        next - TABLE_SIZE
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries<'a>(members: &'a [(&'a str, u32)]) -> Vec<Entry<'a>> {
        members
            .iter()
            .enumerate()
            .map(|(i, &(key, weight))| Entry {
                id: i as u32,
                key: key.as_bytes(),
                weight,
            })
            .collect()
    }

    /// A stable fingerprint of a table's slots.
    fn fingerprint(t: &Table) -> u64 {
        let bytes: Vec<u8> = t.slots().iter().flat_map(|s| s.to_le_bytes()).collect();
        hash64(0, &bytes)
    }

    const MIXED: [(&str, u32); 5] = [
        ("10.0.0.10:80", 1),
        ("10.0.0.11:80", 2),
        ("10.0.0.12:80", 3),
        ("10.0.0.12:80", 1),
        ("192.0.2.9:443", 0),
    ];

    #[test]
    fn tables_are_pinned() {
        // Computed with lbd's own Maglev code before it moved into this
        // crate: if these change, every deployed table changes and clients
        // are remapped on upgrade.
        let t = Table::build(&entries(&MIXED));
        assert_eq!(t.slots().len(), TABLE_SIZE);
        assert_eq!(t.owners(), 4);
        assert_eq!(
            &t.slots()[..16],
            &[2, 1, 3, 1, 2, 0, 2, 2, 2, 1, 2, 2, 2, 2, 3, 0]
        );
        assert_eq!(fingerprint(&t), 0x93d6_ce20_603c_298c);

        let keys: Vec<(String, u32)> = (0..100)
            .map(|i| (format!("10.1.{}.{}:8080", i / 256, i % 256), 1 + i % 5))
            .collect();
        let members: Vec<(&str, u32)> = keys.iter().map(|(k, w)| (k.as_str(), *w)).collect();
        let t = Table::build(&entries(&members));
        assert_eq!(t.owners(), 100);
        assert_eq!(fingerprint(&t), 0x12ee_3429_dde3_ba1d);
    }

    #[test]
    fn input_order_does_not_matter() {
        let forward = entries(&MIXED);
        let mut reversed = forward.clone();
        reversed.reverse();
        assert_eq!(Table::build(&forward), Table::build(&reversed));
    }

    #[test]
    fn no_weight_no_table() {
        assert!(Table::build(&[]).slots().is_empty());
        let t = Table::build(&entries(&[("a", 0), ("b", 0)]));
        assert!(t.slots().is_empty());
        assert_eq!(t.owners(), 0);
    }

    #[test]
    fn walk_visits_every_slot() {
        for hash in [0u64, 1, 65_536, 65_537, u64::MAX, 0x1805_95ab_c238_d6b4] {
            let s = stride(hash);
            assert!((1..TABLE_SIZE).contains(&s), "{s}");
            let mut seen = vec![false; TABLE_SIZE];
            let mut slot = home_slot(hash);
            for _ in 0..TABLE_SIZE {
                assert!(!seen[slot], "slot {slot} visited twice");
                seen[slot] = true;
                slot = next_slot(slot, s);
            }
            assert_eq!(slot, home_slot(hash));
        }
    }
}
