//! The flows in the conntrack map: reading it (in batches where the kernel
//! can, else by walking it), deleting entries, expiring idle and closed flows
//! ([`FastPath::expire_idle`]), and counting and listing them. The kernel
//! program creates flows and stamps their last packet and FIN/RST; ending
//! them is userspace's job, done here.

use super::error::{has_errno, map_error};
use super::handle::FastPath;
use super::sys::monotonic_ns;
use crate::batch::BatchError;
use crate::maps::{
    ip_from_be, port_from_be, Flow, FlowKey, DIR_ORIGINAL, DIR_REPLY, FLOW_FIN, FLOW_RST,
};
use crate::Error;
use aya::maps::MapError;
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::Duration;

/// Closed flows (RST seen, or FIN seen both ways) are expired after at most
/// this long, whatever `idle` [`FastPath::expire_idle`] gets.
pub const CLOSED_LINGER: Duration = Duration::from_secs(10);

impl FastPath {
    /// Most entries any walk over the conntrack map visits (an LRU map
    /// changes under the walk: get_next_key may restart from the start).
    fn walk_limit(&self) -> usize {
        self.opts.conntrack_entries as usize * 2 + 1024
    }

    /// A snapshot of the conntrack map: batch reads (a few syscalls), or
    /// a walk (two per entry) where the kernel does not do them.
    pub(super) fn snapshot(&self) -> Result<HashMap<FlowKey, Flow>, Error> {
        if self.batch_lookup.get() {
            match self.conntrack_batch.read_all() {
                Ok(entries) => return Ok(entries.into_iter().collect()),
                Err(BatchError::Unsupported) => {
                    tracing::info!("conntrack: no batch lookups on this kernel; walking the map");
                    self.batch_lookup.set(false);
                }
                Err(BatchError::Io(e)) => {
                    return Err(Error::Map {
                        map: "conntrack",
                        source: Box::new(e),
                    })
                }
            }
        }
        let mut out = HashMap::new();
        for item in self.conntrack.iter().take(self.walk_limit()) {
            match item {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                // Deleted between get_next_key and lookup: skip it.
                Err(MapError::KeyNotFound) => {}
                Err(e) if has_errno(&e, libc::ENOENT) => {}
                Err(e) => return Err(map_error("conntrack", e)),
            }
        }
        Ok(out)
    }

    /// Deletes conntrack entries (those already gone are skipped): in
    /// batches, or one by one where the kernel does not do batch deletes.
    pub(super) fn delete_flow_entries(&mut self, keys: &[FlowKey]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        if self.batch_delete {
            match self.conntrack_batch.delete(keys) {
                Ok(_) => return Ok(()),
                Err(BatchError::Unsupported) => {
                    tracing::info!("conntrack: no batch deletes on this kernel; one by one");
                    self.batch_delete = false;
                }
                Err(BatchError::Io(e)) => {
                    return Err(Error::Map {
                        map: "conntrack",
                        source: Box::new(e),
                    })
                }
            }
        }
        for key in keys {
            match self.conntrack.remove(key) {
                Ok(()) => {}
                Err(e) if has_errno(&e, libc::ENOENT) => {}
                Err(e) => return Err(map_error("conntrack", e)),
            }
        }
        Ok(())
    }

    /// Deletes the flows idle for longer than `idle` (closed flows: RST
    /// seen, or FIN seen in both directions, after `min(idle,
    /// CLOSED_LINGER)`). Reads the whole conntrack map (in batches where the
    /// kernel can): call it every second or so, not per packet. An idle
    /// open flow is read again just before it is deleted, in case a packet
    /// came meanwhile; a closed one is not (that would cost two syscalls
    /// per connection): a client reopening the same 4-tuple in the
    /// milliseconds between the read and the delete, after more than the
    /// linger time, loses that connection (its next packet goes to the
    /// kernel, which resets it).
    pub fn expire_idle(&mut self, idle: Duration) -> Result<Expiry, Error> {
        let idle_ns = idle.as_nanos().min(u128::from(u64::MAX)) as u64;
        let closed_ns = idle.min(CLOSED_LINGER).as_nanos() as u64;
        let snap = self.snapshot()?;
        let now = monotonic_ns();
        let closed = |a: &Flow, b: Option<&Flow>| {
            let flags = a.flags | b.map_or(0, |b| b.flags);
            flags & FLOW_RST != 0 || b.is_some_and(|b| a.flags & b.flags & FLOW_FIN != 0)
        };
        let expired = |a: &Flow, b: Option<&Flow>| {
            let last = b.map_or(a.last_seen_ns, |b| a.last_seen_ns.max(b.last_seen_ns));
            let limit = if closed(a, b) { closed_ns } else { idle_ns };
            now.saturating_sub(last) > limit
        };
        let mut doomed = Vec::new();
        let mut flows = 0;
        let mut ended = 0;
        let mut open: HashMap<SocketAddrV4, usize> = HashMap::new();
        for (k, f) in &snap {
            let other_key = f.other_key();
            let other = snap.get(&other_key);
            let orphan = other.is_none_or(|o| o.other_key() != *k);
            match (f.dir, orphan) {
                (DIR_ORIGINAL, _) => flows += 1,
                // Handled with its original entry.
                (DIR_REPLY, false) => continue,
                // A reply entry whose original is gone (LRU eviction).
                (DIR_REPLY, true) => {}
                _ => continue,
            }
            let other = if orphan { None } else { other };
            if !expired(f, other) {
                if f.dir == DIR_ORIGINAL && !closed(f, other) {
                    let vip = SocketAddrV4::new(ip_from_be(k.daddr), port_from_be(k.dport));
                    *open.entry(vip).or_default() += 1;
                }
                continue;
            }
            if !closed(f, other) {
                // Re-read: a packet may have arrived since the snapshot.
                let Ok(f_now) = self.conntrack.get(k, 0) else {
                    continue;
                };
                let other_now = if orphan {
                    None
                } else {
                    self.conntrack.get(&other_key, 0).ok()
                };
                if !expired(&f_now, other_now.as_ref()) {
                    continue;
                }
            }
            doomed.push(*k);
            if !orphan {
                doomed.push(other_key);
            }
            if f.dir == DIR_ORIGINAL {
                ended += 1;
            }
        }
        self.delete_flow_entries(&doomed)?;
        Ok(Expiry {
            ended,
            flows: flows - ended,
            open,
        })
    }

    /// Whether conntrack reads and deletes still go in batches (the kernel
    /// has not refused them; Linux 5.6+ does them).
    pub fn uses_batches(&self) -> bool {
        self.batch_lookup.get() && self.batch_delete
    }

    /// Current flows (original-direction conntrack entries). Walks the map.
    pub fn flows(&self) -> Result<usize, Error> {
        Ok(self
            .snapshot()?
            .values()
            .filter(|f| f.dir == DIR_ORIGINAL)
            .count())
    }

    /// Current flows as (client, vip, snat address, member), for
    /// diagnostics and tests. Walks the map.
    pub fn flow_table(&self) -> Result<Vec<FlowInfo>, Error> {
        let snap = self.snapshot()?;
        let mut out: Vec<FlowInfo> = snap
            .iter()
            .filter(|(_, f)| f.dir == DIR_ORIGINAL)
            .map(|(k, f)| {
                let other = snap.get(&f.other_key());
                FlowInfo {
                    client: SocketAddrV4::new(ip_from_be(k.saddr), port_from_be(k.sport)),
                    vip: SocketAddrV4::new(ip_from_be(k.daddr), port_from_be(k.dport)),
                    snat: SocketAddrV4::new(ip_from_be(f.nat_saddr), port_from_be(f.nat_sport)),
                    member: SocketAddrV4::new(ip_from_be(f.nat_daddr), port_from_be(f.nat_dport)),
                    closed: {
                        let flags = f.flags | other.map_or(0, |o| o.flags);
                        flags & FLOW_RST != 0
                            || other.is_some_and(|o| f.flags & o.flags & FLOW_FIN != 0)
                    },
                    reply_entry: other.is_some(),
                }
            })
            .collect();
        out.sort_by_key(|f| (f.vip, f.client));
        Ok(out)
    }
}

/// What [`FastPath::expire_idle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Flows that ended (deleted).
    pub ended: usize,
    /// Flows left in the table.
    pub flows: usize,
    /// Of those, the open ones (no RST, not FIN both ways) by VIP:port.
    pub open: HashMap<SocketAddrV4, usize>,
}

/// One fast-path flow, see [`FastPath::flow_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    /// The translated source: `snat_ip`:port.
    pub snat: SocketAddrV4,
    pub member: SocketAddrV4,
    /// RST seen, or FIN seen in both directions.
    pub closed: bool,
    /// The reply-direction entry exists.
    pub reply_entry: bool,
}
