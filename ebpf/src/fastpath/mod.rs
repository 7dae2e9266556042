//! The userspace side of the XDP fast path: [`FastPath`], the handle on the
//! loaded program and its maps, and [`attach_pass`]. Split by job, one
//! module each:
//!
//! * `handle`: the [`FastPath`] type (maps, links, what was last written)
//!   and its lifecycle;
//! * `attach`: load, attach native or generic, detach, move to other
//!   interfaces, detach on drop;
//! * `snat`: the SNAT port range (the `config` map);
//! * `services`: the service, member, round-robin and Maglev maps;
//! * `conntrack`: flow expiry, counting and listing;
//! * `counters`: the per-CPU counters, summed;
//! * `pass`: the pass-only program for veth peers;
//! * `error` (aya errors to [`Error`](crate::Error)) and `sys` (clock,
//!   random numbers), used by the others.
//!
//! Dependencies go one way: the job modules use `handle`, `error` and
//! `sys`; besides that only `attach` uses `snat` (the range is written at
//! load), `services` uses `conntrack` (the flows of removed members end) and
//! `pass` uses `attach` (attaching one program). No module uses this one.

mod attach;
mod conntrack;
mod counters;
mod error;
mod handle;
mod pass;
mod services;
mod snat;
mod sys;

pub use conntrack::{Expiry, FlowInfo, CLOSED_LINGER};
pub use handle::FastPath;
pub use pass::{attach_pass, PassGuard};

const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<FastPath>();
    assert_send::<PassGuard>();
};
