//! The bench's building blocks, shared by its programs: `bench` (lbd side
//! by side with HAProxy, nginx and a direct connection; `main.rs`),
//! `failover` (member death to the last routed attempt; `bin/failover.rs`),
//! `xdp` (the XDP fast path in a netns lab; `bin/xdp.rs`) and `sockmap`
//! (an in-kernel relay experiment; `bin/sockmap.rs`).

pub mod backends;
pub mod cli;
pub mod iperf;
pub mod procfs;
pub mod procs;
pub mod profile;
pub mod proxies;
pub mod report;
pub mod scenarios;
pub mod setup;
pub mod udp;
pub mod wrk;
