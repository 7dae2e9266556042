//! Active health checks, on a thread of their own ("lbd-health"), never on
//! the data-plane workers.
//!
//! * [`probe`] runs one check (tcp, http, https, tls_hello, external,
//!   tcp_script) and says why it failed, with its rustls client settings
//!   from [`crate::tls`]; `http` writes the request and reads the status
//!   line; [`external`] runs a program with HAProxy's `external-check`
//!   contract; `script` runs HAProxy-style `tcp-check` steps.
//! * This module keeps one task per checked member, in step with the
//!   published config snapshots: a reload starts tasks for new members,
//!   stops those of removed ones and restarts those whose check settings
//!   changed. The health itself lives in the member's
//!   [`MemberState`](crate::state::MemberState), which a reload carries over,
//!   so unchanged members keep their state and new ones start fresh.
//! * Checks of one member are `interval` apart; the first is delayed by a
//!   fixed fraction of the interval derived from the member's name, which
//!   spreads hundreds of members evenly over the interval instead of
//!   checking them all at once.
//! * Transitions are logged once, with the reason and the check's duration.

mod checker;
pub mod external;
mod http;
pub mod probe;
mod script;

pub use checker::HealthService;
