//! lb-agent: the control plane that keeps lbd's configuration in sync with
//! a Kubernetes Service/Node watch or with OpenStack Octavia.
//!
//! A library, so that its tests and other programs can use its modules; the
//! `lb-agent` binary (`main.rs`) only turns its command line into a [`Mode`]
//! and calls [`run`]. It uses lbd's config crate (the model and validation)
//! and none of lbd's data plane.

pub mod apiservers;
pub mod kubernetes;
pub mod lbd_push;
pub mod octavia;
pub mod sync;

use anyhow::Context;

/// What one lb-agent process does.
pub enum Mode {
    /// Serve Services of type LoadBalancer on the nodes' NodePorts.
    Kubernetes(kubernetes::Settings),
    /// Keep lbd's kube-apiserver pool in step with the apiservers.
    Apiservers(apiservers::Settings),
    /// Serve Octavia load balancers and report their health (boxed: much
    /// larger than the others).
    Octavia(Box<octavia::agent::Settings>),
}

/// Runs `mode` on a new multi-threaded tokio runtime, until the process is
/// stopped or the mode fails.
pub fn run(mode: Mode) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    match mode {
        Mode::Kubernetes(settings) => runtime.block_on(kubernetes::run(settings)),
        Mode::Apiservers(settings) => runtime.block_on(apiservers::run(settings)),
        Mode::Octavia(settings) => runtime.block_on(octavia::agent::run(*settings)),
    }
}
