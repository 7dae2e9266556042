//! `[[pool]]` and its `[[pool.member]]` tables.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::fields::{
    choice_field, expected_list, int_field, int_in_range, ip_field, lookup, optional_duration,
    ConfigError, Names, Scope,
};
use super::health::validate_health;
use super::hedge::hedge_field;
use crate::file::{MemberSection, PoolSection};
use crate::model::{
    AdminState, Algorithm, Member, Pool, SessionPolicy, DEFAULT_RETRIES, DEFAULT_WEIGHT, MAX_WEIGHT,
};

/// Largest accepted pool `retries`.
pub const MAX_RETRIES: u32 = 100;

/// Largest accepted member `max_connections` and pool `max_queue` (a
/// listener's `connection_limit` cannot be higher either).
pub const MAX_MEMBER_LIMIT: u32 = super::listener::MAX_CONNECTION_LIMIT;

/// Checks every `[[pool]]`; returns those that are fully valid.
pub(super) fn validate_pools(sections: &[PoolSection], errors: &mut Vec<ConfigError>) -> Vec<Pool> {
    let names = Names::check("pool", sections.iter().map(|p| p.name.as_deref()));
    let mut pools = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let mut scope = Scope::new(names.label(index), errors);
        let name = names.take(index, &mut scope);
        let algorithm = algorithm_field(&mut scope, section.algorithm.as_deref());
        let retries = int_field(
            &mut scope,
            "retries",
            section.retries,
            0..=MAX_RETRIES,
            DEFAULT_RETRIES,
        );
        let health = match &section.health {
            Some(h) => validate_health(&mut scope.child("health"), h).map(Some),
            None => Some(None),
        };
        let max_queue = unlimited_or(&mut scope, "max_queue", section.max_queue);
        let queue_timeout = optional_duration(&mut scope, "queue_timeout", &section.queue_timeout);
        let slow_start = optional_duration(&mut scope, "slow_start", &section.slow_start);
        let on_down = policy_field(&mut scope, "on_down", section.on_down.as_deref());
        let on_maint = policy_field(&mut scope, "on_maint", section.on_maint.as_deref());
        let connect_hedge = hedge_field(&mut scope, section.connect_hedge.as_deref());
        let members = validate_members(&mut scope, &section.members);
        if let (
            Some(name),
            Some(algorithm),
            Some(retries),
            Some(health),
            Some(max_queue),
            Some(queue_timeout),
            Some(slow_start),
            Some(on_down),
            Some(on_maint),
            Some(connect_hedge),
            Some(members),
        ) = (
            name,
            algorithm,
            retries,
            health,
            max_queue,
            queue_timeout,
            slow_start,
            on_down,
            on_maint,
            connect_hedge,
            members,
        ) {
            pools.push(Pool {
                name,
                algorithm,
                retries,
                health,
                max_queue,
                queue_timeout,
                slow_start,
                on_down,
                on_maint,
                connect_hedge,
                members,
            });
        }
    }
    pools
}

/// A count where 0 (and absence) means no limit, as in HAProxy's `maxconn`
/// and `maxqueue`: `Some(None)` for no limit, `None` if out of range
/// (reported).
fn unlimited_or(scope: &mut Scope, field: &str, value: Option<i64>) -> Option<Option<u32>> {
    let limit = int_field(scope, field, value, 0..=MAX_MEMBER_LIMIT, 0)?;
    Some((limit > 0).then_some(limit))
}

/// `on_down` / `on_maint`: one of [`SessionPolicy::ALL`], default `"none"`.
fn policy_field(scope: &mut Scope, field: &str, value: Option<&str>) -> Option<SessionPolicy> {
    choice_field(
        scope,
        field,
        value,
        &SessionPolicy::ALL,
        SessionPolicy::name,
        SessionPolicy::None,
    )
}

/// `algorithm`: one of [`Algorithm::ALL`], default round robin.
fn algorithm_field(scope: &mut Scope, value: Option<&str>) -> Option<Algorithm> {
    let Some(text) = value else {
        return Some(Algorithm::default());
    };
    let algorithm = lookup(&Algorithm::ALL, Algorithm::name, text);
    if algorithm.is_none() {
        scope.error(format!(
            "algorithm {text:?} is not valid (expected {})",
            expected_list(&Algorithm::ALL, Algorithm::name)
        ));
    }
    algorithm
}

/// Checks the members of one pool (`pool_scope` is the pool's scope); `None`
/// if any member is invalid.
fn validate_members(pool_scope: &mut Scope, sections: &[MemberSection]) -> Option<Vec<Member>> {
    // Valid address:port of earlier members, with their 1-based number.
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let members: Vec<Option<Member>> = sections
        .iter()
        .enumerate()
        .map(|(index, section)| {
            let number = index + 1;
            let mut scope = pool_scope.child(format_args!("member {number}"));
            validate_member(&mut scope, section, number, &mut seen)
        })
        .collect();
    members.into_iter().collect()
}

/// Checks one `[[pool.member]]`, numbered `number` (1-based); `seen` holds
/// the address:port of earlier members of the pool, to reject duplicates.
fn validate_member(
    scope: &mut Scope,
    section: &MemberSection,
    number: usize,
    seen: &mut HashMap<SocketAddr, usize>,
) -> Option<Member> {
    let address = member_address(scope, section.address.as_deref());
    let port = member_port(scope, section.port);
    let unique = match (address, port) {
        (Some(address), Some(port)) => {
            unique_member_addr(scope, SocketAddr::new(address, port), number, seen)
        }
        _ => false,
    };
    let weight = int_field(
        scope,
        "weight",
        section.weight,
        0..=MAX_WEIGHT,
        DEFAULT_WEIGHT,
    );
    let max_connections = unlimited_or(scope, "max_connections", section.max_connections);
    let admin_state = admin_state_field(scope, section.admin_state.as_deref());
    let monitor_address = match section.monitor_address.as_deref() {
        Some(text) => ip_field(scope, "monitor_address", text).map(Some),
        None => Some(None),
    };
    let monitor_port = match section.monitor_port {
        Some(port) => int_in_range(scope, "monitor_port", port, 1..=u16::MAX).map(Some),
        None => Some(None),
    };
    if !unique {
        return None;
    }
    Some(Member {
        address: address?,
        port: port?,
        weight: weight?,
        backup: section.backup.unwrap_or(false),
        max_connections: max_connections?,
        admin_state: admin_state?,
        monitor_address: monitor_address?,
        monitor_port: monitor_port?,
        id: section.id.clone(),
        name: section.name.clone(),
    })
}

/// Records `addr` as used by member `number`, or reports that an earlier
/// member of the pool already uses it. Returns whether it was unique.
fn unique_member_addr(
    scope: &mut Scope,
    addr: SocketAddr,
    number: usize,
    seen: &mut HashMap<SocketAddr, usize>,
) -> bool {
    match seen.get(&addr) {
        Some(first) => {
            scope.error(format!("address {addr} is already used by member {first}"));
            false
        }
        None => {
            seen.insert(addr, number);
            true
        }
    }
}

/// `address`: a required IP address.
fn member_address(scope: &mut Scope, value: Option<&str>) -> Option<IpAddr> {
    let text = scope.required("address", value)?;
    ip_field(scope, "address", text)
}

/// `admin_state`: one of [`AdminState::ALL`], default ready.
fn admin_state_field(scope: &mut Scope, value: Option<&str>) -> Option<AdminState> {
    let Some(text) = value else {
        return Some(AdminState::default());
    };
    let state = lookup(&AdminState::ALL, AdminState::name, text);
    if state.is_none() {
        scope.error(format!(
            "admin_state {text:?} is not valid (expected {})",
            expected_list(&AdminState::ALL, AdminState::name)
        ));
    }
    state
}

/// `port`: required, 1..=65535.
fn member_port(scope: &mut Scope, value: Option<i64>) -> Option<u16> {
    let port = *scope.required("port", value.as_ref())?;
    int_in_range(scope, "port", port, 1..=u16::MAX)
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

    #[test]
    fn pool_name_rules() {
        let text = "[[pool]]\nname = \"api\"\n[[pool]]\nname = \"api\"\n[[pool]]\nname = \"é\"\n";
        assert_eq!(
            invalid(text),
            [
                "pool #2: name \"api\" is already used by pool #1",
                "pool #3: name \"é\" contains 'é'; only ASCII letters, digits, '_', '.', ':' and \
                 '-' are allowed",
            ]
        );
    }

    #[test]
    fn bad_algorithm() {
        assert_eq!(
            invalid(&pool_with("algorithm = \"roundrobin\"", &[])),
            [
                "pool \"api\": algorithm \"roundrobin\" is not valid (expected \"round_robin\", \
              \"least_connections\" or \"source_ip\")"
            ]
        );
    }

    #[test]
    fn retries_range() {
        assert_eq!(
            invalid(&pool_with("retries = -1", &[])),
            ["pool \"api\": retries -1 out of range (0-100)"]
        );
        assert_eq!(
            valid(&pool_with("retries = 100", &[])).pools[0].retries,
            100
        );
    }

    #[test]
    fn weight_257_is_rejected() {
        let text = pool_with("", &["address = \"10.0.0.1\"\nport = 80\nweight = 257"]);
        assert_eq!(
            invalid(&text),
            ["pool \"api\": member 1: weight 257 out of range (0-256)"]
        );
        let text = pool_with("", &["address = \"10.0.0.1\"\nport = 80\nweight = -1"]);
        assert_eq!(
            invalid(&text),
            ["pool \"api\": member 1: weight -1 out of range (0-256)"]
        );
    }

    #[test]
    fn weight_0_and_256_are_accepted() {
        let text = pool_with(
            "",
            &[
                "address = \"10.0.0.1\"\nport = 80\nweight = 0",
                "address = \"10.0.0.2\"\nport = 80\nweight = 256",
                "address = \"10.0.0.3\"\nport = 80",
            ],
        );
        let weights: Vec<u32> = valid(&text).pools[0]
            .members
            .iter()
            .map(|m| m.weight)
            .collect();
        assert_eq!(weights, [0, MAX_WEIGHT, DEFAULT_WEIGHT]);
    }

    #[test]
    fn duplicate_member() {
        let text = pool_with(
            "",
            &[
                "address = \"fd00::1\"\nport = 80",
                "address = \"fd00::1\"\nport = 81",
                "address = \"fd00:0::1\"\nport = 80\nweight = 999",
            ],
        );
        assert_eq!(
            invalid(&text),
            [
                "pool \"api\": member 3: address [fd00::1]:80 is already used by member 1",
                "pool \"api\": member 3: weight 999 out of range (0-256)",
            ]
        );
    }

    #[test]
    fn same_member_in_two_pools_is_fine() {
        let text = format!("{POOL_P}{}", POOL_P.replace("\"p\"", "\"q\""));
        assert_eq!(valid(&text).pools.len(), 2);
    }

    #[test]
    fn hostname_address() {
        let text = pool_with("", &["address = \"db.internal\"\nport = 5432"]);
        assert_eq!(
            invalid(&text),
            [
                "pool \"api\": member 1: address \"db.internal\" is not an IP address (hostnames \
              are not resolved)"
            ]
        );
    }

    #[test]
    fn member_port_out_of_range_exact_message() {
        let text = pool_with(
            "",
            &[
                "address = \"10.0.0.1\"\nport = 80",
                "address = \"10.0.0.2\"\nport = 70000",
            ],
        );
        assert_eq!(
            invalid(&text),
            ["pool \"api\": member 2: port 70000 out of range (1-65535)"]
        );
        let errors = validate(&parse(&text)).expect_err("invalid");
        assert_eq!(
            errors,
            [ConfigError {
                path: "pool \"api\": member 2".into(),
                reason: "port 70000 out of range (1-65535)".into(),
            }]
        );
    }

    #[test]
    fn member_admin_state_and_monitor_fields() {
        let config = valid(&pool_with(
            "",
            &[
                "address = \"10.0.0.1\"\nport = 80\nadmin_state = \"drain\"\n\
                 monitor_address = \"10.0.1.1\"\nmonitor_port = 8081",
                "address = \"10.0.0.2\"\nport = 80\nmonitor_port = 10256",
            ],
        ));
        let members = &config.pools[0].members;
        assert_eq!(members[0].admin_state, AdminState::Drain);
        assert_eq!(
            members[0].check_addr(),
            "10.0.1.1:8081".parse().expect("addr")
        );
        assert_eq!(members[1].admin_state, AdminState::Ready);
        assert_eq!(
            members[1].check_addr(),
            "10.0.0.2:10256".parse().expect("addr")
        );
        assert_eq!(
            invalid(&pool_with(
                "",
                &[
                    "address = \"10.0.0.1\"\nport = 80\nadmin_state = \"disabled\"\n\
                   monitor_address = \"node-1\"\nmonitor_port = 0"
                ]
            )),
            [
                "pool \"api\": member 1: admin_state \"disabled\" is not valid (expected \
                 \"ready\", \"drain\" or \"maint\")",
                "pool \"api\": member 1: monitor_address \"node-1\" is not an IP address \
                 (hostnames are not resolved)",
                "pool \"api\": member 1: monitor_port 0 out of range (1-65535)",
            ]
        );
    }

    #[test]
    fn member_limits_queue_and_slow_start() {
        let config = valid(&pool_with(
            "max_queue = 100\nqueue_timeout = \"2s\"\nslow_start = \"30s\"",
            &[
                "address = \"10.0.0.1\"\nport = 80\nmax_connections = 512",
                "address = \"10.0.0.2\"\nport = 80\nmax_connections = 0",
                "address = \"10.0.0.3\"\nport = 80",
            ],
        ));
        let pool = &config.pools[0];
        assert_eq!(pool.max_queue, Some(100));
        assert_eq!(pool.queue_timeout, Some(Duration::from_secs(2)));
        assert_eq!(pool.slow_start, Some(Duration::from_secs(30)));
        let limits: Vec<_> = pool.members.iter().map(|m| m.max_connections).collect();
        assert_eq!(limits, [Some(512), None, None], "0 is HAProxy's 'no limit'");
        assert!(pool.has_limits());

        // Defaults: no limits, an unbounded queue, the listener's
        // member_connect for the queue, no slow start.
        let plain = valid(&pool_with("", &["address = \"10.0.0.1\"\nport = 80"]));
        let pool = &plain.pools[0];
        assert_eq!(
            (pool.max_queue, pool.queue_timeout, pool.slow_start),
            (None, None, None)
        );
        assert!(!pool.has_limits());
        assert_eq!(
            (pool.on_down, pool.on_maint),
            (SessionPolicy::None, SessionPolicy::None)
        );
        let zero = valid(&pool_with("max_queue = 0", &[]));
        assert_eq!(zero.pools[0].max_queue, None);
    }

    #[test]
    fn session_policies() {
        let config = valid(&pool_with(
            "on_down = \"shutdown_sessions\"\non_maint = \"shutdown_sessions\"",
            &[],
        ));
        let pool = &config.pools[0];
        assert_eq!(pool.on_down, SessionPolicy::ShutdownSessions);
        assert_eq!(pool.on_maint, SessionPolicy::ShutdownSessions);
        let config = valid(&pool_with("on_down = \"none\"", &[]));
        assert_eq!(config.pools[0].on_down, SessionPolicy::None);
    }

    #[test]
    fn member_limits_queue_and_slow_start_errors() {
        assert_eq!(
            invalid(&pool_with(
                "max_queue = -1\nqueue_timeout = \"0s\"\nslow_start = \"soon\"",
                &["address = \"10.0.0.1\"\nport = 80\nmax_connections = 10000001"],
            )),
            [
                "pool \"api\": max_queue -1 out of range (0-10000000)",
                "pool \"api\": queue_timeout \"0s\" must be greater than zero",
                "pool \"api\": slow_start \"soon\" is not a duration (e.g. \"30s\", \"500ms\", \
                 \"2m\"): expected number at 0",
                "pool \"api\": member 1: max_connections 10000001 out of range (0-10000000)",
            ]
        );
        assert_eq!(
            invalid(&pool_with(
                "on_down = \"shutdown-sessions\"\non_maint = \"kill\"",
                &[]
            )),
            [
                "pool \"api\": on_down \"shutdown-sessions\" is not valid (expected \"none\" \
                 or \"shutdown_sessions\")",
                "pool \"api\": on_maint \"kill\" is not valid (expected \"none\" or \
                 \"shutdown_sessions\")",
            ]
        );
        assert_eq!(
            invalid(&pool_with("queue_timeout = \"31days\"", &[])),
            ["pool \"api\": queue_timeout \"31days\" is too long (at most 30days)"]
        );
    }
}
