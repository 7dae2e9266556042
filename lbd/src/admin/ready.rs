//! `GET /ready`: whether this lbd can serve, for a VRRP health script
//! (keepalived's `vrrp_script`, see `configs/keepalived/`) or any other
//! failover. 200 `ready` or 503 `not ready: <why>`:
//!
//! - draining (stopping: its listeners are closed) is never ready;
//! - `?pools=any` (the default): not ready when no listener's pool has a
//!   usable member (up or unchecked, weight > 0, backups included), so a
//!   peer whose members are reachable takes the address over;
//! - `?pools=all`: not ready as soon as one listener's pool has none;
//! - `?pools=ignore`: only running and not draining.
//!
//! A config without listeners (an amphora waiting for its agent) is ready.
//! Not answering at all (lbd not running) fails the script too.

use super::stats::Stats;

/// What `/ready` asks of the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRule {
    Any,
    All,
    Ignore,
}

impl PoolRule {
    /// From the query string (`pools=any|all|ignore`; absent: any).
    pub fn from_query(query: Option<&str>) -> Result<PoolRule, String> {
        let value = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("pools="));
        match value {
            None | Some("any") => Ok(PoolRule::Any),
            Some("all") => Ok(PoolRule::All),
            Some("ignore") => Ok(PoolRule::Ignore),
            Some(other) => Err(format!(
                "pools={other} is not valid (expected any, all or ignore)"
            )),
        }
    }
}

/// `Ok` when ready, else why not.
pub fn verdict(stats: &Stats, rule: PoolRule) -> Result<(), String> {
    if stats.listeners.iter().any(|l| l.status == "closed") {
        return Err("draining (stopping)".to_owned());
    }
    let empty: Vec<&str> = stats
        .listeners
        .iter()
        .filter(|l| {
            stats
                .pools
                .iter()
                .find(|p| p.name == l.pool)
                .is_none_or(|p| p.active_members + p.backup_members == 0)
        })
        .map(|l| l.name.as_str())
        .collect();
    let fails = match rule {
        PoolRule::Ignore => false,
        PoolRule::All => !empty.is_empty(),
        PoolRule::Any => !stats.listeners.is_empty() && empty.len() == stats.listeners.len(),
    };
    if fails {
        return Err(format!(
            "no usable member in the pool of listener(s) {}",
            empty.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_rules_from_the_query() {
        assert_eq!(PoolRule::from_query(None), Ok(PoolRule::Any));
        assert_eq!(PoolRule::from_query(Some("pools=all")), Ok(PoolRule::All));
        assert_eq!(
            PoolRule::from_query(Some("x=1&pools=ignore")),
            Ok(PoolRule::Ignore)
        );
        assert!(PoolRule::from_query(Some("pools=some")).is_err());
    }
}
