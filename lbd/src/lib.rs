//! lbd: an L4 (TCP and UDP) load balancer. The config file, its validation and the
//! typed model are the `lbd-config` crate ([`lbd_config`]).
//!
//! The modules form layers; each uses only layers below it
//! (`tests/layers.rs` checks this, and that there is no import cycle):
//!
//! 1. at the bottom, what everything may use: [`events`] (member events),
//!    [`fault`] (test fault injection), [`clock`] (a cheap coarse clock),
//!    [`state`] (lock-free counters and
//!    member state), [`queue`] (a pool's queue of clients waiting for a
//!    member slot), [`sockets`], [`runtime`] (the seam to io_uring or
//!    epoll), [`balance`] (the algorithms), [`tls`], [`limits`], [`pidfile`],
//!    [`notify`] (systemd notifications), [`daemon`] (`haproxy -D`),
//!    [`takeover`] (`haproxy -sf/-st` without losing a connection),
//!    [`handoff`] (`haproxy -x`: listening sockets passed between processes);
//! 2. [`snapshot`]: one config generation as the workers read it;
//! 3. [`context`]: [`context::Shared`], what workers, control and services
//!    share;
//! 4. the hot path: [`pick`] (member picking), [`proxy`] (one file per
//!    protocol), [`worker`] (a data-plane thread). It uses only layers
//!    1-3, and from `lbd-config` only model types;
//! 5. [`service`] (background services and their shutdown signal),
//!    [`memory`], and the services: [`health`], [`xdp`];
//! 6. [`server`]: start, reload, drain, stop; [`admin`] (a service that
//!    drives the server); [`demo`]; [`haproxy_cli`] (HAProxy's command
//!    line, which `main.rs` acts on).

pub mod admin;
pub mod balance;
pub mod clock;
pub mod context;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod fault;
pub mod handoff;
pub mod haproxy_cli;
pub mod health;
pub mod limits;
pub mod memory;
pub mod notify;
pub mod pick;
pub mod pidfile;
pub mod proxy;
pub mod queue;
pub mod ready_probe;
pub mod runtime;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod sockets;
pub mod state;
pub mod takeover;
pub mod tls;
pub mod worker;
pub mod xdp;
