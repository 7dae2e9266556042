//! Checks a [`ConfigFile`] and builds the typed [`Config`].
//!
//! [`validate`] never stops at the first problem: it walks the whole file
//! (`[global]`, then every `[[listener]]`, then every `[[pool]]` with its
//! members) and returns every [`ConfigError`] in that order. Each error names
//! where it is (`listener "web"`, `pool "api": member 2`, `global`) and why,
//! quoting the offending field and value:
//!
//! ```text
//! pool "api": member 2: port 70000 out of range (1-65535)
//! ```
//!
//! Sections are named by their `name` when it is present, valid and unique,
//! otherwise by their 1-based position (`listener #2`). Members and list
//! entries (`allowed_cidrs[1]`) are numbered from 1 as well.
//!
//! One module per part of the file; [`fields`] holds what they share.

mod admin;
mod fields;
mod global;
mod health;
mod hedge;
mod listener;
mod pool;
mod program;
mod stats_socket;
mod xdp;

use std::collections::HashSet;

pub use admin::read_token;
pub use fields::{ConfigError, MAX_DURATION};
pub use listener::MAX_CONNECTION_LIMIT;
pub use pool::MAX_RETRIES;

use admin::validate_admin;
use global::validate_global;
use hedge::hedge_rules;
use listener::validate_listeners;
use pool::validate_pools;
use stats_socket::validate_stats_sockets;
use xdp::{fast_path_rules, validate_xdp};

use crate::file::ConfigFile;
use crate::model::Config;

/// Why an empty config is refused: an empty or truncated file (read while
/// being written) or an empty pushed document would otherwise remove every
/// listener and the admin server.
pub const EMPTY_CONFIG: &str = "empty config: it sets nothing (no [global], [admin], \
     [[stats_socket]], [xdp], [[listener]] or [[pool]]); an empty or truncated file is refused";

/// Checks `file` and builds the typed [`Config`], or returns every problem
/// found, in file order.
pub fn validate(file: &ConfigFile) -> Result<Config, Vec<ConfigError>> {
    if *file == ConfigFile::default() {
        return Err(vec![ConfigError {
            path: String::new(),
            reason: EMPTY_CONFIG.to_owned(),
        }]);
    }
    let mut errors = Vec::new();

    let global = validate_global(file.global.as_ref(), &mut errors);

    // Listeners may only refer to pools that are in the file. Any spelling
    // counts here: a pool with a bad name already gets its own error.
    let pool_names: HashSet<&str> = file
        .pools
        .iter()
        .filter_map(|p| p.name.as_deref())
        .collect();
    let listeners = validate_listeners(&file.listeners, &pool_names, &mut errors);
    let pools = validate_pools(&file.pools, &mut errors);
    let admin = match &file.admin {
        Some(section) => validate_admin(section, &listeners, &mut errors),
        None => None,
    };
    let stats_sockets =
        validate_stats_sockets(&file.stats_sockets, &listeners, admin.as_ref(), &mut errors);
    let xdp = match &file.xdp {
        Some(section) => validate_xdp(section, &mut errors),
        None => None,
    };
    fast_path_rules(xdp.as_ref(), &listeners, &pools, &mut errors);
    hedge_rules(&listeners, &pools, &mut errors);

    if errors.is_empty() {
        Ok(Config {
            global,
            admin,
            stats_sockets,
            xdp,
            listeners,
            pools,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
pub(crate) mod tests;
