//! `lb-agent octavia`: serves OpenStack Octavia load balancers with lbd, in
//! the place of the amphora's HAProxy, and reports health and stats back in
//! the amphora's own heartbeat format.
//!
//! * [`connect`], [`http`], [`keystone`], [`auth`]: reaching Octavia's v2 API
//!   (Keystone v3 or noauth);
//! * [`api`]: reading a load balancer and its children;
//! * [`model`]: what lbd serves for them (pure);
//! * [`report`], [`heartbeat`], [`amphora_conf`]: the health heartbeat;
//! * [`agent`]: the loops.

pub mod agent;
pub mod amphora_conf;
pub mod api;
pub mod auth;
pub mod connect;
pub mod heartbeat;
pub mod http;
pub mod keystone;
pub mod model;
pub mod report;
