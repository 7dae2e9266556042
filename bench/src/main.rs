//! bench: runs lbd side by side with HAProxy, nginx `stream` and a direct
//! connection and reports ratios.
//!
//! Not built yet: see the issue "bench: lbd side by side with HAProxy, nginx
//! stream and a direct connection". This binary says so and fails.

fn main() {
    eprintln!("bench is not implemented yet (open issue: lbd side by side with HAProxy, nginx and direct)");
    std::process::exit(2);
}
