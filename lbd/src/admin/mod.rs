//! The admin server: stats page, `/stats.json`, `/stats.csv`, Prometheus
//! `/metrics` and the runtime API, on a thread of its own.

pub mod stats;
