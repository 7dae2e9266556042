//! Optional XDP fast path for lbd (C programs built with clang, loaded with aya).
//!
//! Empty on purpose: the XDP fast path is an open issue. lbd never depends on
//! this crate; it works without it.
