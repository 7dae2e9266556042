//! From lbd's `/stats.json` to a heartbeat [`Report`]: per-listener
//! status and traffic deltas, per-member states.
//!
//! Octavia's `ver` 3 heartbeat carries deltas since the previous heartbeat
//! for `tx`, `rx`, `totconns` and `ereq`; `conns` is the current value.
//! [`Deltas`] keeps the totals last reported per listener. The first
//! reading of a process starts from what lbd already counted (an agent
//! restart must not report lbd's whole history again); a listener that
//! appears later, or every listener after lbd restarted (another pid, or
//! a total that went down), starts from zero.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::heartbeat::{
    Counters, ListenerReport, ListenerStatus, MemberStatus, PoolReport, PoolStatus, Report,
};
use super::model::{listener_name, ServedListener};

/// The part of lbd's `/stats.json` a heartbeat needs.
#[derive(Debug, Clone, Deserialize)]
pub struct LbdStats {
    pub pid: u32,
    pub listeners: Vec<LbdListener>,
    pub pools: Vec<LbdPool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LbdListener {
    pub name: String,
    pub pool: String,
    pub current_sessions: u64,
    pub session_limit: u64,
    pub sessions_total: u64,
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    /// Clients reset because no member was usable: Octavia's
    /// `request_errors`.
    pub no_member_total: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LbdPool {
    pub name: String,
    pub active_members: u64,
    pub backup_members: u64,
    pub members: Vec<LbdMember>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LbdMember {
    pub id: Option<String>,
    pub status: String,
    pub weight: u32,
}

/// Totals already reported, per lbd listener name.
#[derive(Debug, Default)]
pub struct Deltas {
    /// The lbd process the totals belong to; `None` before the first read.
    pid: Option<u32>,
    reported: BTreeMap<String, Totals>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    tx: u64,
    rx: u64,
    sessions: u64,
    errors: u64,
}

impl Totals {
    fn of(l: &LbdListener) -> Totals {
        Totals {
            tx: l.bytes_out_total,
            rx: l.bytes_in_total,
            sessions: l.sessions_total,
            errors: l.no_member_total,
        }
    }

    /// `self - earlier`, or `None` if any total went down (lbd restarted
    /// or the listener was recreated).
    fn since(self, earlier: Totals) -> Option<Totals> {
        Some(Totals {
            tx: self.tx.checked_sub(earlier.tx)?,
            rx: self.rx.checked_sub(earlier.rx)?,
            sessions: self.sessions.checked_sub(earlier.sessions)?,
            errors: self.errors.checked_sub(earlier.errors)?,
        })
    }
}

impl Deltas {
    /// The heartbeat for the `served` listeners, moving the baseline to
    /// `stats`. Served listeners lbd does not show yet are left out;
    /// `refused` ones (enabled in Octavia, not served) are reported as
    /// `UNSUPPORTED`, so Octavia's listener count still matches.
    pub fn report(
        &mut self,
        stats: &LbdStats,
        served: &[ServedListener],
        refused: &[String],
    ) -> Report {
        let first_read = self.pid.is_none();
        if self.pid != Some(stats.pid) {
            // A new lbd process counts from zero; so does this agent's
            // view of it, except on the agent's very first read.
            self.reported.clear();
        }
        self.pid = Some(stats.pid);
        let mut report = Report::default();
        let mut reported = BTreeMap::new();
        for s in served {
            let name = listener_name(&s.listener_id);
            let Some(listener) = stats.listeners.iter().find(|l| l.name == name) else {
                continue;
            };
            let now = Totals::of(listener);
            let baseline = match self.reported.get(&name) {
                Some(before) => *before,
                None if first_read => now,
                None => Totals::default(),
            };
            let delta = now.since(baseline).unwrap_or(now);
            reported.insert(name, now);
            let status = if listener.current_sessions >= listener.session_limit {
                ListenerStatus::Full
            } else {
                ListenerStatus::Open
            };
            report.listeners.insert(
                s.listener_id.clone(),
                ListenerReport {
                    status,
                    stats: Counters {
                        tx: delta.tx,
                        rx: delta.rx,
                        conns: listener.current_sessions,
                        totconns: delta.sessions,
                        ereq: delta.errors,
                    },
                },
            );
            if let Some(pool_id) = &s.pool_id {
                if let Some(pool) = stats.pools.iter().find(|p| p.name == listener.pool) {
                    report
                        .pools
                        .insert(format!("{pool_id}:{}", s.listener_id), pool_report(pool));
                }
            }
        }
        self.reported = reported;
        for id in refused {
            report.listeners.insert(
                id.clone(),
                ListenerReport {
                    status: ListenerStatus::Unsupported,
                    stats: Counters::default(),
                },
            );
        }
        report
    }
}

fn pool_report(pool: &LbdPool) -> PoolReport {
    let status = if pool.active_members + pool.backup_members > 0 {
        PoolStatus::Up
    } else {
        PoolStatus::Down
    };
    let members = pool
        .members
        .iter()
        .filter_map(|m| Some((m.id.clone()?, member_status(m))))
        .collect();
    PoolReport { status, members }
}

/// HAProxy's server states as the amphora reports them; like HAProxy, a
/// healthy member of weight 0 shows as `DRAIN`.
fn member_status(m: &LbdMember) -> MemberStatus {
    match m.status.as_str() {
        "up" if m.weight == 0 => MemberStatus::Drain,
        "up" => MemberStatus::Up,
        "down" => MemberStatus::Down,
        "drain" => MemberStatus::Drain,
        "maint" => MemberStatus::Maint,
        _ => MemberStatus::NoCheck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pid: u32, sessions: u64, bytes_in: u64, statuses: &[(&str, &str, u32)]) -> LbdStats {
        LbdStats {
            pid,
            listeners: vec![LbdListener {
                name: "octavia:L1".into(),
                pool: "octavia:P1".into(),
                current_sessions: 2,
                session_limit: 50_000,
                sessions_total: sessions,
                bytes_in_total: bytes_in,
                bytes_out_total: bytes_in * 2,
                no_member_total: 0,
            }],
            pools: vec![LbdPool {
                name: "octavia:P1".into(),
                active_members: statuses.iter().filter(|s| s.1 == "up").count() as u64,
                backup_members: 0,
                members: statuses
                    .iter()
                    .map(|(id, status, weight)| LbdMember {
                        id: Some((*id).into()),
                        status: (*status).into(),
                        weight: *weight,
                    })
                    .collect(),
            }],
        }
    }

    fn served() -> Vec<ServedListener> {
        vec![ServedListener {
            listener_id: "L1".into(),
            pool_id: Some("P1".into()),
        }]
    }

    #[test]
    fn deltas_between_heartbeats_and_after_restarts() {
        let mut deltas = Deltas::default();
        let members = [("m1", "up", 1)];
        // The first read is the baseline: an agent restart must not
        // report lbd's history twice.
        let r = deltas.report(&stats(10, 5, 100, &members), &served(), &[]);
        assert_eq!(r.listeners["L1"].stats.totconns, 0);
        assert_eq!(r.listeners["L1"].stats.conns, 2);
        let r = deltas.report(&stats(10, 8, 400, &members), &served(), &[]);
        let c = &r.listeners["L1"].stats;
        assert_eq!((c.totconns, c.rx, c.tx), (3, 300, 600));
        // lbd restarted: everything it counted is new.
        let r = deltas.report(&stats(11, 2, 50, &members), &served(), &[]);
        let c = &r.listeners["L1"].stats;
        assert_eq!((c.totconns, c.rx, c.tx), (2, 50, 100));
        // A total going down (listener recreated): counted from zero.
        let r = deltas.report(&stats(11, 1, 10, &members), &served(), &[]);
        assert_eq!(r.listeners["L1"].stats.totconns, 1);
    }

    #[test]
    fn a_listener_appearing_later_counts_from_zero() {
        let mut deltas = Deltas::default();
        let r = deltas.report(&stats(10, 5, 100, &[]), &[], &[]);
        assert!(r.listeners.is_empty());
        let r = deltas.report(&stats(10, 5, 100, &[]), &served(), &[]);
        assert_eq!(r.listeners["L1"].stats.totconns, 5);
    }

    #[test]
    fn member_and_pool_states() {
        let mut deltas = Deltas::default();
        let r = deltas.report(
            &stats(
                1,
                0,
                0,
                &[
                    ("a", "up", 1),
                    ("b", "down", 1),
                    ("c", "drain", 1),
                    ("d", "maint", 1),
                    ("e", "no_check", 1),
                    ("f", "up", 0),
                ],
            ),
            &served(),
            &[],
        );
        let pool = &r.pools["P1:L1"];
        assert_eq!(pool.status, PoolStatus::Up);
        let states: Vec<_> = pool.members.values().cloned().collect();
        assert_eq!(
            states,
            [
                MemberStatus::Up,
                MemberStatus::Down,
                MemberStatus::Drain,
                MemberStatus::Maint,
                MemberStatus::NoCheck,
                MemberStatus::Drain
            ]
        );
        let r = deltas.report(&stats(1, 0, 0, &[("b", "down", 1)]), &served(), &[]);
        assert_eq!(r.pools["P1:L1"].status, PoolStatus::Down);
        assert_eq!(r.listeners["L1"].status, ListenerStatus::Open);
        // A pool Octavia should see as OFFLINE (disabled) is left out.
        let disabled = [ServedListener {
            listener_id: "L1".into(),
            pool_id: None,
        }];
        let r = deltas.report(&stats(1, 0, 0, &[]), &disabled, &["L2".to_owned()]);
        assert_eq!(r.listeners["L2"].status, ListenerStatus::Unsupported);
        assert!(r.pools.is_empty());
        assert!(r.listeners.contains_key("L1"));
    }

    #[test]
    fn a_full_listener() {
        let mut s = stats(1, 0, 0, &[]);
        s.listeners[0].session_limit = 2;
        let r = Deltas::default().report(&s, &served(), &[]);
        assert_eq!(r.listeners["L1"].status, ListenerStatus::Full);
    }
}
