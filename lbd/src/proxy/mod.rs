//! The proxy: one file per protocol, and what they share.
//!
//! * [`tcp`]: one proxied TCP connection, accept to close.
//! * [`slots`]: a connection's slot on its member (`max_connections`, the
//!   pool's queue).
//! * [`local`]: what a worker lends its connections (counters, buffers,
//!   its view of the config).
//! * [`copy`]: the copy loop both ways and how a connection ends;
//!   [`buffers`] and [`sizing`]: its buffers; [`header`]: the PROXY
//!   protocol header.
//!
//! Nothing here knows about worker threads, health checks, the admin server
//! or the XDP fast path: a connection reads the config snapshot and member
//! states, and writes counters.

pub mod buffers;
pub mod copy;
pub mod header;
pub mod local;
pub mod sizing;
pub mod slots;
pub mod tcp;

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
