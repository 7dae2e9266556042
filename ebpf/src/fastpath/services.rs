//! Writing the service maps: [`FastPath::set_services`] makes `services`,
//! `members`, `rr_tables`, `rr_cursor` and `maglev_tables` say exactly the
//! list lbd passes. It validates the whole list before changing anything,
//! writes only what changed (in an order that never lets a new flow reach a
//! member that is unusable or gone), deletes the flows of removed members and
//! services (with the conntrack module's map access), and recycles the slots
//! of removed services.

use super::error::{has_errno, map_error};
use super::handle::{FastPath, SvcState};
use crate::maps::{
    be_ip, be_port, FlowKey, MaglevTable, MemberVal, RrTable, ServiceKey, ServiceVal, DIR_ORIGINAL,
    DIR_REPLY, MAGLEV_ALLOC, MAGLEV_TABLE_SIZE, MAX_MEMBERS, NO_MAGLEV, RR_SLOTS, SVC_FULL,
};
use crate::select::smooth_weighted_slots;
use crate::{Error, Selection, Service};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;

impl FastPath {
    /// Makes the kernel maps say exactly `services`: services not listed are
    /// removed (with their flows), members not listed lose their flows
    /// (later packets of those flows go to the kernel, which resets them),
    /// members with `usable == false` get no new flows (their flows go on).
    /// Members are identified by address: a member listed again keeps its
    /// flows, whatever its position. Validates everything before changing
    /// anything. While it runs, new flows may be balanced by the old or the
    /// new tables, never to a member that is unusable or gone.
    pub fn set_services(&mut self, services: &[Service]) -> Result<(), Error> {
        self.validate(services)?;
        let wanted: HashSet<SocketAddrV4> = services.iter().map(|s| s.vip).collect();

        // Members gone from a service that stays, or services gone: their
        // flows must end.
        let mut cleanup = false;
        for (vip, st) in &self.state {
            match services.iter().find(|s| s.vip == *vip) {
                None => cleanup = true,
                Some(s) => {
                    let new: HashSet<(u32, u16)> = s
                        .members
                        .iter()
                        .map(|m| (be_ip(*m.addr.ip()), be_port(m.addr.port())))
                        .collect();
                    if st
                        .members
                        .iter()
                        .any(|m| m.ip != 0 && !new.contains(&(m.ip, m.port)))
                    {
                        cleanup = true;
                    }
                }
            }
        }

        // 1. Services no longer listed: no new flows from now on.
        let removed: Vec<SocketAddrV4> = self
            .state
            .keys()
            .filter(|v| !wanted.contains(v))
            .copied()
            .collect();
        for vip in &removed {
            self.remove_service_entry(*vip)?;
        }

        // 2. Listed services: members, tables, then the service entry.
        for svc in services {
            self.upsert(svc)?;
        }

        // 3. Flows of removed members / services.
        if cleanup {
            self.delete_stale_flows(&wanted)?;
        }

        // 4. Recycle the removed services' slots (their flows are gone).
        for vip in removed {
            if let Some(st) = self.state.remove(&vip) {
                let zero = MemberVal::default();
                for (i, m) in st.members.iter().enumerate() {
                    if *m != zero {
                        let idx = st.id * MAX_MEMBERS as u32 + i as u32;
                        self.members
                            .set(idx, zero, 0)
                            .map_err(|e| map_error("members", e))?;
                    }
                }
                self.free_ids.push(st.id);
                if let Some(m) = st.maglev {
                    self.free_maglev.push(m);
                }
            }
        }
        Ok(())
    }

    fn validate(&self, services: &[Service]) -> Result<(), Error> {
        let mut vips = HashSet::new();
        let mut new_services = 0usize;
        let mut new_maglev = 0usize;
        for s in services {
            if !vips.insert(s.vip) {
                return Err(Error::Invalid(format!("service {} listed twice", s.vip)));
            }
            if s.snat_ip.is_unspecified() {
                return Err(Error::Invalid(format!(
                    "service {}: snat_ip is 0.0.0.0",
                    s.vip
                )));
            }
            if s.members.len() > MAX_MEMBERS {
                return Err(Error::Invalid(format!(
                    "service {}: {} members, at most {MAX_MEMBERS}",
                    s.vip,
                    s.members.len()
                )));
            }
            let mut addrs = HashSet::new();
            for m in &s.members {
                if m.addr.ip().is_unspecified() {
                    return Err(Error::Invalid(format!(
                        "service {}: member address {} is unspecified",
                        s.vip, m.addr
                    )));
                }
                if !addrs.insert(m.addr) {
                    return Err(Error::Invalid(format!(
                        "service {}: member {} listed twice",
                        s.vip, m.addr
                    )));
                }
            }
            let is_maglev = matches!(s.selection, Selection::Maglev(_));
            if let Selection::Maglev(table) = &s.selection {
                if table.len() != MAGLEV_TABLE_SIZE {
                    return Err(Error::Invalid(format!(
                        "service {}: Maglev table has {} entries, must have {MAGLEV_TABLE_SIZE}",
                        s.vip,
                        table.len()
                    )));
                }
                if let Some(bad) = table.iter().find(|&&i| usize::from(i) >= s.members.len()) {
                    return Err(Error::Invalid(format!(
                        "service {}: Maglev table refers to member {bad}, there are {}",
                        s.vip,
                        s.members.len()
                    )));
                }
            }
            match self.state.get(&s.vip) {
                None => {
                    new_services += 1;
                    new_maglev += usize::from(is_maglev);
                }
                Some(st) => {
                    if is_maglev && st.maglev.is_none() {
                        new_maglev += 1;
                    }
                }
            }
        }
        let removed: Vec<&SvcState> = self
            .state
            .iter()
            .filter(|(v, _)| !vips.contains(v))
            .map(|(_, st)| st)
            .collect();
        // Slots of removed services are recycled only at the end of
        // set_services, so new services need free slots now.
        if new_services > self.free_ids.len() {
            return Err(Error::Invalid(format!(
                "{} services, at most {} (Options::max_services)",
                self.state.len() - removed.len() + new_services,
                self.opts.max_services
            )));
        }
        // Likewise Maglev slots (a service switching to round robin frees
        // its slot only after its entry stops pointing at it).
        if new_maglev > self.free_maglev.len() {
            return Err(Error::Invalid(format!(
                "too many Maglev services, at most {} (Options::max_maglev_services)",
                self.opts.max_maglev_services
            )));
        }
        Ok(())
    }

    fn remove_service_entry(&mut self, vip: SocketAddrV4) -> Result<(), Error> {
        match self.services.remove(&ServiceKey::new(vip)) {
            Ok(()) => Ok(()),
            Err(e) if has_errno(&e, libc::ENOENT) => Ok(()),
            Err(e) => Err(map_error("services", e)),
        }
    }

    fn upsert(&mut self, svc: &Service) -> Result<(), Error> {
        let is_new = !self.state.contains_key(&svc.vip);
        if is_new {
            let id = self.free_ids.pop().expect("validated");
            // A recycled slot starts from a clean cursor.
            self.rr_cursor
                .set(id, 0u64, 0)
                .map_err(|e| map_error("rr_cursor", e))?;
            self.state.insert(
                svc.vip,
                SvcState {
                    id,
                    maglev: None,
                    val: ServiceVal::default(),
                    members: Vec::new(),
                    rr: Vec::new(),
                    maglev_table: None,
                },
            );
        }
        let st = self.state.get_mut(&svc.vip).expect("inserted above");
        let id = st.id;

        // Members: changed slots, and clear slots no longer used.
        let new_members: Vec<MemberVal> = svc
            .members
            .iter()
            .map(|m| MemberVal {
                ip: be_ip(*m.addr.ip()),
                port: be_port(m.addr.port()),
                usable: u8::from(m.usable),
                pad: 0,
            })
            .collect();
        let n = new_members.len().max(st.members.len());
        for i in 0..n {
            let new = new_members.get(i).copied().unwrap_or_default();
            let old = st.members.get(i).copied().unwrap_or_default();
            if is_new || new != old {
                self.members
                    .set(id * MAX_MEMBERS as u32 + i as u32, new, 0)
                    .map_err(|e| map_error("members", e))?;
            }
        }
        st.members = new_members;

        // Round-robin table: usable members with weight > 0 (also the
        // fallback of Maglev services).
        let weights: Vec<(u16, u32)> = svc
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.usable)
            .map(|(i, m)| (i as u16, m.weight))
            .collect();
        let rr = smooth_weighted_slots(&weights);
        if is_new || rr != st.rr {
            let mut table: RrTable = [0; RR_SLOTS];
            table[..rr.len()].copy_from_slice(&rr);
            self.rr_tables
                .set(id, table, 0)
                .map_err(|e| map_error("rr_tables", e))?;
            st.rr = rr;
        }

        // Maglev table.
        let mut freed_maglev = None;
        match &svc.selection {
            Selection::Maglev(table) => {
                let slot = match st.maglev {
                    Some(m) => m,
                    None => {
                        let m = self.free_maglev.pop().expect("validated");
                        st.maglev = Some(m);
                        st.maglev_table = None;
                        m
                    }
                };
                if st.maglev_table.as_deref() != Some(table.as_slice()) {
                    let mut full: Box<MaglevTable> = vec![0u16; MAGLEV_ALLOC]
                        .into_boxed_slice()
                        .try_into()
                        .expect("MAGLEV_ALLOC entries");
                    full[..MAGLEV_TABLE_SIZE].copy_from_slice(table);
                    self.maglev_tables
                        .set(u32::from(slot), full.as_ref(), 0)
                        .map_err(|e| map_error("maglev_tables", e))?;
                    st.maglev_table = Some(table.clone());
                }
            }
            Selection::RoundRobin => {
                freed_maglev = st.maglev.take();
                st.maglev_table = None;
            }
        }

        let val = ServiceVal {
            id,
            snat_ip: be_ip(svc.snat_ip),
            rr_len: st.rr.len() as u16,
            maglev: st.maglev.unwrap_or(NO_MAGLEV),
            members: svc.members.len() as u16,
            flags: if svc.full { SVC_FULL } else { 0 },
        };
        if is_new || val != st.val {
            self.services
                .insert(ServiceKey::new(svc.vip), val, 0)
                .map_err(|e| map_error("services", e))?;
            st.val = val;
        }
        if let Some(m) = freed_maglev {
            self.free_maglev.push(m);
        }
        Ok(())
    }

    /// Deletes the flows whose service or member is no longer configured.
    fn delete_stale_flows(&mut self, wanted: &HashSet<SocketAddrV4>) -> Result<usize, Error> {
        let mut valid: HashMap<(u32, u16), HashSet<(u32, u16)>> = HashMap::new();
        for (vip, st) in &self.state {
            if !wanted.contains(vip) {
                continue;
            }
            let set = valid
                .entry((be_ip(*vip.ip()), be_port(vip.port())))
                .or_default();
            for m in &st.members {
                set.insert((m.ip, m.port));
            }
        }
        let snap = self.snapshot()?;
        let mut doomed = Vec::new();
        for (k, f) in &snap {
            let (vip, member) = match f.dir {
                DIR_ORIGINAL => ((k.daddr, k.dport), (f.nat_daddr, f.nat_dport)),
                DIR_REPLY => ((f.nat_saddr, f.nat_sport), (k.saddr, k.sport)),
                _ => continue,
            };
            let ok = valid.get(&vip).is_some_and(|m| m.contains(&member));
            if !ok {
                doomed.push((*k, f.dir == DIR_ORIGINAL));
            }
        }
        let flows = doomed.iter().filter(|(_, original)| *original).count();
        let keys: Vec<FlowKey> = doomed.into_iter().map(|(k, _)| k).collect();
        self.delete_flow_entries(&keys)?;
        if flows > 0 {
            tracing::debug!(flows, "deleted fast-path flows of removed members/services");
        }
        Ok(flows)
    }
}
