//! lbd: an L4 (TCP) load balancer.

pub mod balance;
pub mod config;
