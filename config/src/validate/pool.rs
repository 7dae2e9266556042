//! `[[pool]]` and its `[[pool.member]]` tables.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::fields::{
    expected_list, int_field, int_in_range, ip_field, lookup, ConfigError, Names, Scope,
};
use super::health::validate_health;
use crate::file::{MemberSection, PoolSection};
use crate::model::{
    AdminState, Algorithm, Member, Pool, DEFAULT_RETRIES, DEFAULT_WEIGHT, MAX_WEIGHT,
};

/// Largest accepted pool `retries`.
pub const MAX_RETRIES: u32 = 100;

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
        let members = validate_members(&mut scope, &section.members);
        if let (Some(name), Some(algorithm), Some(retries), Some(health), Some(members)) =
            (name, algorithm, retries, health, members)
        {
            pools.push(Pool {
                name,
                algorithm,
                retries,
                health,
                members,
            });
        }
    }
    pools
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
