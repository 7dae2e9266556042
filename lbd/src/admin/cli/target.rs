//! Finding the server a command names (`<backend>/<server>`), with
//! HAProxy's answers when there is none, and HAProxy's numbering of
//! backends and servers.
//!
//! A backend is a pool (by name); a server is a member, by the name stats
//! give it (its `name` when that names only it, else `address:port`; see
//! [`crate::admin::stats::server_label`]). Server ids are positions in the
//! pool from 1, as HAProxy numbers servers without an `id`. Proxy ids
//! are `show stat`'s ([`crate::admin::show_stat::backend_iid`]).

use lbd_config::{Config, Member};

use crate::admin::stats::server_label;
use crate::snapshot::{MemberRt, Snapshot};

/// A member of the running snapshot, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub pool: usize,
    pub member: usize,
}

impl Target {
    pub fn member<'s>(&self, snapshot: &'s Snapshot) -> &'s MemberRt {
        &snapshot.pools[self.pool].members[self.member]
    }
}

/// Resolves `<backend>/<server>`; the error is HAProxy's answer.
pub fn find(snapshot: &Snapshot, arg: Option<&str>) -> Result<Target, &'static str> {
    let Some((backend, server)) = arg.and_then(|a| a.split_once('/')) else {
        return Err("Require 'backend/server'.\n");
    };
    let pool = snapshot
        .pools
        .iter()
        .position(|p| p.name == backend)
        .ok_or("No such backend.\n")?;
    let p = &snapshot.pools[pool];
    let member = p
        .members
        .iter()
        .position(|m| server_label(p, m) == server)
        .ok_or("No such server.\n")?;
    Ok(Target { pool, member })
}

/// The member of `loaded` (the config of the last reload) that `target`
/// is, by pool name and address.
pub fn loaded_member<'c>(
    loaded: &'c Config,
    target: &Target,
    snapshot: &Snapshot,
) -> Option<&'c Member> {
    let pool = &snapshot.pools[target.pool];
    let addr = target.member(snapshot).addr;
    loaded
        .pools
        .iter()
        .find(|p| p.name == pool.name)?
        .members
        .iter()
        .find(|m| m.socket_addr() == addr)
}

/// The running config's pool and member index that `target` (found in
/// `snapshot`) is, by pool name and address.
pub fn config_member<'c>(
    config: &'c mut Config,
    snapshot: &Snapshot,
    target: &Target,
) -> Option<(&'c mut lbd_config::Pool, usize)> {
    let name = &snapshot.pools[target.pool].name;
    let addr = target.member(snapshot).addr;
    let pool = config.pools.iter_mut().find(|p| &p.name == name)?;
    let index = pool.members.iter().position(|m| m.socket_addr() == addr)?;
    Some((pool, index))
}
