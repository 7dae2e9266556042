//! The SNAT port range: the program's one-entry `config` map (first port,
//! count, and the per-load offset where the per-member port cursors start).
//! Written at load and whenever lbd's `snat_ports` changes; established
//! flows keep their ports.

use super::error::map_error;
use super::handle::FastPath;
use crate::maps::Config;
use crate::Error;
use std::ops::RangeInclusive;

impl FastPath {
    /// Changes the SNAT port range for new flows. Established flows keep
    /// their ports (and stay unique per member: a port is taken only if no
    /// flow holds it).
    pub fn set_snat_ports(&mut self, ports: RangeInclusive<u16>) -> Result<(), Error> {
        if ports.is_empty() {
            return Err(Error::Invalid("empty SNAT port range".into()));
        }
        let old = std::mem::replace(&mut self.opts.snat_ports, ports);
        self.write_config()
            .inspect_err(|_| self.opts.snat_ports = old)
    }

    /// Writes the program's `config` map from `opts.snat_ports`.
    pub(super) fn write_config(&mut self) -> Result<(), Error> {
        let (lo, hi) = (*self.opts.snat_ports.start(), *self.opts.snat_ports.end());
        let config = Config {
            port_min: lo,
            pad0: 0,
            port_count: u32::from(hi - lo) + 1,
            port_offset: self.port_offset,
            pad1: 0,
        };
        self.config
            .set(0, config, 0)
            .map_err(|e| map_error("config", e))
    }
}
