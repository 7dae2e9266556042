//! Shared helpers for lb-agent's integration tests: the fake Kubernetes API
//! server and the rest of a cluster (lbd, nodes, the agent process).
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod fake_keystone;
pub mod fake_kube;
pub mod octavia_env;
