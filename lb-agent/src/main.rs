//! lb-agent: the control plane that keeps lbd's configuration in sync with
//! OpenStack Octavia or a Kubernetes Service/Node watch.
//!
//! Not built yet: see the issues "lb-agent: Kubernetes Service watch" and
//! "lb-agent: sync from OpenStack Octavia". This binary says so and fails, so
//! nobody mistakes it for a working agent.

fn main() {
    eprintln!("lb-agent is not implemented yet (Kubernetes and Octavia modes are open issues)");
    std::process::exit(2);
}
