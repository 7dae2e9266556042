//! `connect_hedge` on a `[[listener]]` or a `[[pool]]`: the field itself,
//! and the rules that need both sections (the pool's value overrides the
//! listener's, and must be shorter than each listener's `member_connect`).

use std::time::Duration;

use super::fields::{duration_field, ConfigError, Scope};
use crate::model::{Listener, Pool};

/// Why a hedge needs members without `max_connections`.
const TWO_SLOTS: &str = "a hedged connect holds connections to two members at once, so \
     max_connections could not stay exact";

/// `connect_hedge`: absent (`Some(None)`, off) or a duration greater than
/// zero; `None` if invalid (reported).
pub(super) fn hedge_field(scope: &mut Scope, value: Option<&str>) -> Option<Option<Duration>> {
    let Some(text) = value else {
        return Some(None);
    };
    if humantime::parse_duration(text).is_ok_and(|d| d.is_zero()) {
        scope.error(format!(
            "connect_hedge {text:?} must be greater than zero: 0 would open two connects for \
             every client (leave it out for no hedge)"
        ));
        return None;
    }
    duration_field(scope, "connect_hedge", Some(text), Duration::ZERO).map(Some)
}

/// The rules between sections: no hedge with `max_connections`, and the
/// hedge in force for a listener shorter than its `member_connect`.
pub(super) fn hedge_rules(listeners: &[Listener], pools: &[Pool], errors: &mut Vec<ConfigError>) {
    for pool in pools.iter().filter(|p| p.connect_hedge.is_some()) {
        if let Some(number) = pool
            .members
            .iter()
            .position(|m| m.max_connections.is_some())
        {
            Scope::new(format!("pool {:?}", pool.name), errors).error(format!(
                "connect_hedge is not allowed with max_connections (member {} has it): {TWO_SLOTS}",
                number + 1
            ));
        }
    }
    for listener in listeners {
        let Some(pool) = pools.iter().find(|p| p.name == listener.pool) else {
            continue;
        };
        let mut scope = Scope::new(format!("listener {:?}", listener.name), errors);
        if listener.connect_hedge.is_some() && pool.has_limits() {
            scope.error(format!(
                "connect_hedge is not allowed: pool {:?} has members with max_connections \
                 ({TWO_SLOTS})",
                pool.name
            ));
        }
        let Some(hedge) = listener.hedge_for(pool) else {
            continue;
        };
        if hedge >= listener.member_connect {
            let whose = if pool.connect_hedge.is_some() {
                format!("pool {:?}'s connect_hedge", pool.name)
            } else {
                "connect_hedge".to_owned()
            };
            scope.error(format!(
                "{whose} {} must be less than member_connect {}: the first connect would time \
                 out before the hedge starts",
                humantime::format_duration(hedge),
                humantime::format_duration(listener.member_connect)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

    /// A listener `l` (with `listener_line`) on pool `p` (with `pool_line`)
    /// of two members, the second with `member_line`.
    fn hedged(listener_line: &str, pool_line: &str, member_line: &str) -> String {
        format!(
            "[[listener]]\nname = \"l\"\nbind = \"0.0.0.0:80\"\npool = \"p\"\n{listener_line}\n\
             [[pool]]\nname = \"p\"\n{pool_line}\n\
             [[pool.member]]\naddress = \"10.0.0.1\"\nport = 80\n\
             [[pool.member]]\naddress = \"10.0.0.2\"\nport = 80\n{member_line}\n"
        )
    }

    #[test]
    fn hedge_on_listener_or_pool_and_which_wins() {
        let config = valid(&hedged("connect_hedge = \"150ms\"", "", ""));
        let (l, p) = (&config.listeners[0], &config.pools[0]);
        assert_eq!(l.connect_hedge, Some(Duration::from_millis(150)));
        assert_eq!(l.hedge_for(p), Some(Duration::from_millis(150)));

        let config = valid(&hedged(
            "connect_hedge = \"150ms\"",
            "connect_hedge = \"1s\"",
            "",
        ));
        let (l, p) = (&config.listeners[0], &config.pools[0]);
        assert_eq!(
            l.hedge_for(p),
            Some(Duration::from_secs(1)),
            "the pool's wins"
        );

        let config = valid(&hedged("", "", ""));
        assert_eq!(config.listeners[0].hedge_for(&config.pools[0]), None);
    }

    #[test]
    fn hedge_zero_and_bad_values() {
        assert_eq!(
            invalid(&hedged(
                "connect_hedge = \"0s\"",
                "connect_hedge = \"soon\"",
                ""
            )),
            [
                "listener \"l\": connect_hedge \"0s\" must be greater than zero: 0 would open \
                 two connects for every client (leave it out for no hedge)",
                "pool \"p\": connect_hedge \"soon\" is not a duration (e.g. \"30s\", \"500ms\", \
                 \"2m\"): expected number at 0",
            ]
        );
    }

    #[test]
    fn hedge_must_be_less_than_member_connect() {
        assert_eq!(
            invalid(&hedged(
                "member_connect = \"3s\"\nconnect_hedge = \"3s\"",
                "",
                ""
            )),
            [
                "listener \"l\": connect_hedge 3s must be less than member_connect 3s: the \
                 first connect would time out before the hedge starts"
            ]
        );
        // The default member_connect is 5s; a pool's hedge is checked
        // against every listener using it.
        assert_eq!(
            invalid(&hedged("", "connect_hedge = \"6s\"", "")),
            [
                "listener \"l\": pool \"p\"'s connect_hedge 6s must be less than member_connect \
                 5s: the first connect would time out before the hedge starts"
            ]
        );
        valid(&hedged(
            "member_connect = \"3s\"\nconnect_hedge = \"2999ms\"",
            "",
            "",
        ));
    }

    #[test]
    fn hedge_refused_with_max_connections() {
        assert_eq!(
            invalid(&hedged(
                "",
                "connect_hedge = \"150ms\"",
                "max_connections = 10"
            )),
            [
                "pool \"p\": connect_hedge is not allowed with max_connections (member 2 has \
                 it): a hedged connect holds connections to two members at once, so \
                 max_connections could not stay exact"
            ]
        );
        assert_eq!(
            invalid(&hedged(
                "connect_hedge = \"150ms\"",
                "",
                "max_connections = 10"
            )),
            [
                "listener \"l\": connect_hedge is not allowed: pool \"p\" has members with \
                 max_connections (a hedged connect holds connections to two members at once, \
                 so max_connections could not stay exact)"
            ]
        );
        // max_connections = 0 is no limit.
        valid(&hedged(
            "connect_hedge = \"150ms\"",
            "",
            "max_connections = 0",
        ));
    }
}
