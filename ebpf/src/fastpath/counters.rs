//! The program's counters: the per-CPU `stats` map summed into
//! [`Counters`] (packets, bytes, new flows, drops and passes by reason).
//! Read only; lbd publishes them every second.

use super::error::map_error;
use super::handle::FastPath;
use crate::maps::{DROP_REASONS, PASS_REASONS};
use crate::{Counters, Error};

impl FastPath {
    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let per_cpu = self.stats.get(&0, 0).map_err(|e| map_error("stats", e))?;
        let mut c = Counters::default();
        let mut drops = [0u64; crate::maps::DROP_MAX];
        let mut passes = [0u64; crate::maps::PASS_MAX];
        for s in per_cpu.iter() {
            c.packets += s.packets;
            c.bytes += s.bytes;
            c.new_flows += s.new_flows;
            for (d, v) in drops.iter_mut().zip(s.drops.iter()) {
                *d += v;
            }
            for (p, v) in passes.iter_mut().zip(s.passes.iter()) {
                *p += v;
            }
        }
        c.drops = DROP_REASONS.iter().copied().zip(drops).collect();
        c.passes = PASS_REASONS.iter().copied().zip(passes).collect();
        Ok(c)
    }
}
