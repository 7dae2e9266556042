//! Member selection arithmetic shared by lbd's userspace balancer
//! (`lbd/src/balance`) and the XDP loader (`lbd-ebpf`).
//!
//! A `source_ip` pool must send a client to the same member whether its
//! connection is proxied by lbd or translated by the XDP fast path, and
//! whichever lbd instance or version handles it. That only holds if both
//! sides compute exactly the same hash and the same table, so the
//! arithmetic lives here, once:
//!
//! * [`hash`]: the stable seeded 64-bit hash and the client hash.
//! * [`maglev`]: the weighted Maglev table and where a client's lookup
//!   starts and how it walks on.
//! * [`swrr`]: one step of nginx's smooth weighted round robin.
//!
//! The kernel program (`ebpf/bpf/lb_select.h`) keeps its own C copy of the
//! client hash and the walk start; `ebpf/tests/select_c.rs` compiles it for
//! the host and compares it with this crate on many addresses.
//!
//! Pure computation on std only: no I/O, no locks, no dependencies. What
//! runs per connection ([`client_hash`], [`maglev::home_slot`],
//! [`maglev::stride`], [`swrr::step`]) never allocates.

pub mod hash;
pub mod maglev;
pub mod swrr;

pub use hash::{client_hash, client_hash_v4};
