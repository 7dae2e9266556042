//! Test support for the lbd workspace: what several crates' tests (and the
//! bench) share, kept out of the production crates.
//!
//! - [`netlab`]: the network-namespace lab (client, load balancer and
//!   members in their own namespaces) of the XDP tests and the XDP bench;
//! - [`scratch_dir`], [`TempFile`], [`free_port`]: scratch space on the
//!   machine, per test;
//! - [`eventually`] (feature `tokio`), [`eventually_blocking`]: bounded
//!   polling for a state instead of fixed sleeps;
//! - [`tools`]: external programs run within a time bound, or skipped
//!   when missing;
//! - [`skip`]: a test that cannot run here says why, or fails under
//!   `LBD_TEST_REQUIRE_TOOLS`;
//! - [`self_signed`] (feature `tls`): a throwaway certificate;
//! - [`fake_kube`], [`fake_keystone`] (feature `fakes`): fake servers of
//!   lb-agent's tests.
//!
//! It depends on no crate of the workspace, so every one of them can use it
//! as a dev-dependency.

pub mod netlab;
mod scratch;
mod skip;
pub mod tools;
mod wait;

#[cfg(feature = "fakes")]
pub mod fake_keystone;
#[cfg(feature = "fakes")]
pub mod fake_kube;
#[cfg(feature = "tls")]
mod tls;

pub use scratch::{free_port, scratch_dir, TempFile};
pub use skip::skip;
#[cfg(feature = "tokio")]
pub use wait::eventually;
pub use wait::{eventually_blocking, EVENTUALLY};

#[cfg(feature = "tls")]
pub use tls::self_signed;
