//! The proxy: one file per protocol, and what they share.
//!
//! * [`tcp`]: one proxied TCP connection, accept to close.
//! * [`udp`]: a UDP listener on one worker: its flows, each to one member.
//! * [`connect`]: picking a member and connecting, with retries;
//!   [`hedge`]: hedged connects (`connect_hedge`); [`attempt`]: what one
//!   connect records against its member.
//! * [`slots`]: a connection's slot on its member (`max_connections`, the
//!   pool's queue).
//! * [`local`]: what a worker lends its connections (counters, buffers,
//!   its view of the config).
//! * [`sessions`]: closing a member's connections when it goes down or
//!   into maint (`on_down` / `on_maint`).
//! * [`wake`]: a task's wake-up slot on one worker thread (kill switch,
//!   idle watchdog).
//! * [`copy`]: the copy loop both ways and how a connection ends;
//!   [`buffers`] and [`sizing`]: its buffers; [`pipes`]: its pipes for
//!   `splice`; [`header`]: the PROXY
//!   protocol header.
//!
//! Nothing here knows about worker threads, health checks, the admin server
//! or the XDP fast path: a connection reads the config snapshot and member
//! states, and writes counters.

pub mod attempt;
pub mod buffers;
pub mod connect;
pub mod copy;
pub mod header;
pub mod hedge;
pub mod kernel;
pub mod local;
pub mod pipes;
pub mod sessions;
pub mod sizing;
pub mod slots;
pub mod tcp;
pub mod udp;
pub mod wake;

use std::net::{IpAddr, SocketAddr};

/// Turns an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as accepted on a
/// dual-stack socket) into plain IPv4, so CIDR checks, hashing and PROXY
/// headers see one form.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}
