//! Shared helpers for lb-agent's integration tests: the rest of a cluster
//! around the fake Kubernetes API server (lbd, nodes, the agent process) and
//! the real Octavia environment. The fake servers themselves are in
//! `lbd-test-support`.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod octavia_env;
