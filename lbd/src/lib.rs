//! lbd: an L4 (TCP) load balancer.
//!
//! * the config file, its validation and the typed model: the `lbd-config`
//!   crate ([`lbd_config`]).
//! * [`balance`]: member selection (round robin, least connections, Maglev).
//! * [`runtime`]: the seam to the I/O runtime (io_uring or epoll).
//! * [`proxy`]: one proxied connection, accept to close.
//! * [`worker`]: a data-plane thread and its accept loops.
//! * [`snapshot`], [`state`], [`sockets`]: what workers share.
//! * [`server`]: start, reload and drain; [`demo`]: the built-in demo;
//!   [`limits`]: process limits; [`memory`]: giving freed memory back.

pub mod admin;
pub mod balance;
pub mod context;
pub mod demo;
pub mod events;
pub mod health;
pub mod limits;
pub mod memory;
pub mod pick;
pub mod pidfile;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod sockets;
pub mod state;
pub mod tls;
pub mod worker;
pub mod xdp;
