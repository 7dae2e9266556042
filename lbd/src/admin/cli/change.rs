//! The changing commands: `set server`, `set weight`, `enable`/`disable
//! server`, `set maxconn`, `clear counters`. Every change of a server or a
//! limit edits the running config through [`Server::adjust`] (the path the
//! admin API's changes take too): validated ranges, swapped like a reload,
//! established connections untouched, and gone at the next reload from the
//! config file, as HAProxy's runtime changes are.
//!
//! Answers and error texts are HAProxy 2.6's.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use lbd_config::{AdminState, Config, MAX_WEIGHT};
use tracing::info;

use super::ctx::{Ctx, UNENDED};
use super::target::{self, Target};
use crate::server::{AdjustError, Server};

/// Applies `change` to the member `arg` names, given its pool (the
/// member's index in it) and its initial weight; `Ok(text)` is the answer.
fn change_member(
    server: &Server,
    arg: Option<&str>,
    what: &str,
    change: impl FnOnce(&mut lbd_config::Pool, usize, u32) -> Result<String, String>,
) -> String {
    let snapshot = server.shared().snapshot();
    let target = match target::find(&snapshot, arg) {
        Ok(t) => t,
        Err(e) => return e.to_owned(),
    };
    let loaded = server.loaded_config();
    let current = target.member(&snapshot).cfg.weight;
    let initial = target::loaded_member(&loaded, &target, &snapshot).map_or(current, |m| m.weight);
    let mut answer = String::new();
    let applied = server.adjust(|config: &mut Config| {
        let (pool, index) = target::config_member(config, &snapshot, &target)
            .ok_or_else(|| "No such server.\n".to_owned())?;
        answer = change(pool, index, initial)?;
        Ok::<(), String>(())
    });
    match applied {
        Ok(_) => {
            log_change(&snapshot, &target, what);
            answer
        }
        Err(AdjustError::Refused(text)) => text,
        Err(AdjustError::Reload(e)) => format!("not applied: {e}\n"),
    }
}

fn log_change(snapshot: &crate::snapshot::Snapshot, target: &Target, what: &str) {
    info!("stats socket: {} {what}", target.member(snapshot).label);
}

/// `set server <bk>/<srv> state|weight|addr ...`.
pub fn set_server(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    const USAGE: &str = "usage: set server <backend>/<server> addr | agent | agent-addr | \
                         agent-port | agent-send | check-addr | check-port | fqdn | health | ssl \
                         | state | weight\n";
    let rest = args.get(1..).unwrap_or_default();
    match rest.first().copied() {
        Some("state") => {
            let state = match rest.get(1).copied() {
                Some("ready") => AdminState::Ready,
                Some("drain") => AdminState::Drain,
                Some("maint") => AdminState::Maint,
                _ => {
                    return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
                        .to_owned()
                }
            };
            set_state(ctx.server, args.first().copied(), state)
        }
        Some("weight") => set_weight_to(ctx.server, args.first().copied(), rest.get(1).copied()),
        Some("addr") => set_addr(ctx.server, args.first().copied(), &rest[1..]),
        Some(
            other @ ("agent" | "agent-addr" | "agent-port" | "agent-send" | "check-addr"
            | "check-port" | "fqdn" | "health" | "ssl"),
        ) => format!(
            "lbd does not have 'set server ... {other}': health comes from lbd's own checks \
             (set the check address and port in the config and reload).\n"
        ),
        _ => USAGE.to_owned(),
    }
}

fn set_state(server: &Server, arg: Option<&str>, state: AdminState) -> String {
    change_member(
        server,
        arg,
        &format!("state {}", state.name()),
        |p, i, _| {
            p.members[i].admin_state = state;
            Ok(String::new())
        },
    )
}

/// `enable health <bk>/<srv>`: the member's checks resume.
pub fn enable_health(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    pause_checks(ctx.server, args.first().copied(), false)
}

/// `disable health <bk>/<srv>`: the member's checks stop and its health
/// stays as it is (HAProxy 2.6 keeps a DOWN server DOWN).
pub fn disable_health(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    pause_checks(ctx.server, args.first().copied(), true)
}

fn pause_checks(server: &Server, arg: Option<&str>, paused: bool) -> String {
    let snapshot = server.shared().snapshot();
    let target = match target::find(&snapshot, arg) {
        Ok(target) => target,
        Err(e) => return e.to_owned(),
    };
    let member = target.member(&snapshot);
    if member.state.pause_checks(paused) != paused {
        info!(
            "stats socket: health checks of {} {}",
            arg.unwrap_or_default(),
            if paused { "disabled" } else { "enabled" }
        );
    }
    String::new()
}

/// `shutdown sessions server <bk>/<srv>`: every worker closes the
/// member's established connections (both sides reset), as HAProxy kills
/// them; new connections are not affected.
pub fn shutdown_sessions(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    let arg = args.first().copied();
    let snapshot = ctx.server.shared().snapshot();
    match target::find(&snapshot, arg) {
        Ok(target) => {
            target.member(&snapshot).state.shutdown_sessions();
            info!(
                "stats socket: shutdown sessions server {}",
                arg.unwrap_or_default()
            );
            String::new()
        }
        Err(e) => e.to_owned(),
    }
}

pub fn enable_server(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    set_state(ctx.server, args.first().copied(), AdminState::Ready)
}

pub fn disable_server(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    set_state(ctx.server, args.first().copied(), AdminState::Maint)
}

/// `set weight <bk>/<srv> <weight>[%]`.
pub fn set_weight(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    set_weight_to(ctx.server, args.first().copied(), args.get(1).copied())
}

fn set_weight_to(server: &Server, arg: Option<&str>, value: Option<&str>) -> String {
    let Some(value) = value else {
        return "Require <weight> or <weight%>.\n".to_owned();
    };
    change_member(server, arg, &format!("weight {value}"), |p, i, initial| {
        p.members[i].weight = parse_weight(value, initial)?;
        Ok(String::new())
    })
}

/// HAProxy's weight argument: `N` (0..=256) or `N%` of the initial weight
/// (capped at 256).
fn parse_weight(text: &str, initial: u32) -> Result<u32, String> {
    let (digits, relative) = match text.strip_suffix('%') {
        Some(d) => (d, true),
        None => (text, false),
    };
    let negative = digits.starts_with('-');
    let body = digits.trim_start_matches(['-', '+']);
    let end = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    if end == 0 {
        return Err(format!(
            "Empty weight string empty or preceded by garbage\n{UNENDED}"
        ));
    }
    if end != body.len() {
        return Err(format!("Trailing garbage in weight string\n{UNENDED}"));
    }
    let n: u64 = body.parse().unwrap_or(u64::MAX);
    if relative {
        if negative {
            return Err("Relative weight must be positive.\n".to_owned());
        }
        let w = (u64::from(initial) * n / 100).min(u64::from(MAX_WEIGHT));
        return Ok(w as u32);
    }
    match u32::try_from(n) {
        Ok(w) if !negative && w <= MAX_WEIGHT => Ok(w),
        _ => Err(format!(
            "Absolute weight can only be between 0 and {MAX_WEIGHT} inclusive.\n"
        )),
    }
}

/// `set server <bk>/<srv> addr <ip> [port <port>]`: the member's address.
fn set_addr(server: &Server, arg: Option<&str>, rest: &[&str]) -> String {
    let Some(addr_text) = rest.first().copied() else {
        return "set server <b>/<s> addr requires an address and optionally a port.\n".to_owned();
    };
    let Ok(addr) = addr_text.parse::<IpAddr>() else {
        return format!("Invalid addr '{addr_text}' by 'stats socket command'\n");
    };
    let port = match rest.get(1..) {
        Some(["port", p]) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return format!("Invalid port '{p}' by 'stats socket command'\n"),
        },
        Some([]) | None => None,
        Some(_) => {
            return "set server <b>/<s> addr requires an address and optionally a port.\n"
                .to_owned()
        }
    };
    change_member(server, arg, &format!("addr {addr_text}"), |p, i, _| {
        let m = &p.members[i];
        let (old_ip, old_port) = (m.address, m.port);
        let new_port = port.unwrap_or(old_port);
        let new = std::net::SocketAddr::new(addr, new_port);
        // Members are told apart by address: two on one would be one.
        if p.members
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.socket_addr() == new)
        {
            return Err(format!(
                "lbd: another server of backend '{}' is at {new}; not changed.\n",
                p.name
            ));
        }
        let mut parts = Vec::new();
        if addr != old_ip {
            parts.push(format!("IP changed from '{old_ip}' to '{addr}'"));
        } else {
            parts.push("no need to change the addr".to_owned());
        }
        if new_port != old_port {
            parts.push(format!("port changed from '{old_port}' to '{new_port}'"));
        }
        let m = &mut p.members[i];
        m.address = addr;
        m.port = new_port;
        Ok(format!("{} by 'stats socket command'\n", parts.join(", ")))
    })
}

/// `set maxconn server <bk>/<srv> <n>`: the member's `max_connections`
/// (0 or less: no limit, as HAProxy takes it).
pub fn set_maxconn_server(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    let Some(value) = args.get(1).copied() else {
        return "Require <maxconn>.\n".to_owned();
    };
    let limit = match parse_int(value) {
        Some(n) if n > 0 => u32::try_from(n).ok(),
        Some(_) => None,
        None => return "Require <maxconn>.\n".to_owned(),
    };
    change_member(
        ctx.server,
        args.first().copied(),
        &format!("maxconn {value}"),
        |p, i, _| {
            p.members[i].max_connections = limit;
            Ok(String::new())
        },
    )
}

/// `set maxconn frontend <frontend> <n>`: the listener's
/// `connection_limit`.
pub fn set_maxconn_frontend(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    let Some(name) = args.first().copied() else {
        return "A frontend name is expected.\n".to_owned();
    };
    let Some(limit) = args
        .get(1)
        .and_then(|v| parse_int(v))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
    else {
        return "Integer value expected.\n".to_owned();
    };
    let applied = ctx.server.adjust(|config: &mut Config| {
        let listener = config
            .listeners
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or("No such frontend.\n")?;
        listener.connection_limit = limit;
        Ok::<(), &str>(())
    });
    match applied {
        Ok(_) => {
            info!("stats socket: frontend {name} maxconn {limit}");
            String::new()
        }
        Err(AdjustError::Refused(text)) => text.to_owned(),
        Err(AdjustError::Reload(e)) => format!("not applied: {e}\n"),
    }
}

fn parse_int(text: &str) -> Option<i64> {
    text.parse().ok()
}

/// `clear counters`: the maximums (most sessions and most queued at once)
/// start again from now. `clear counters all` is refused: lbd's totals are
/// Prometheus counters, which never go back.
pub fn clear_counters(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    if args.first() == Some(&"all") {
        return "lbd does not have 'clear counters all': its totals are monotonic counters \
                (/metrics); 'clear counters' clears the maximums.\n"
            .to_owned();
    }
    let snapshot = ctx.server.shared().snapshot();
    for l in &snapshot.listeners {
        l.state
            .max_active
            .store(l.state.active.load(Relaxed), Relaxed);
    }
    for p in &snapshot.pools {
        p.queue.reset_max();
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::parse_weight;

    #[test]
    fn weights_parse_as_haproxy_does() {
        assert_eq!(parse_weight("7", 3), Ok(7));
        assert_eq!(parse_weight("0", 3), Ok(0));
        assert_eq!(parse_weight("150%", 3), Ok(4));
        assert_eq!(parse_weight("1000%", 3), Ok(30));
        assert_eq!(parse_weight("100000%", 3), Ok(256));
        assert!(parse_weight("257", 3)
            .unwrap_err()
            .starts_with("Absolute weight"));
        assert!(parse_weight("-1", 3)
            .unwrap_err()
            .starts_with("Absolute weight"));
        assert!(parse_weight("-5%", 3)
            .unwrap_err()
            .starts_with("Relative weight"));
        assert!(parse_weight("abc", 3)
            .unwrap_err()
            .starts_with("Empty weight"));
        assert!(parse_weight("5x", 3)
            .unwrap_err()
            .starts_with("Trailing garbage"));
        assert!(parse_weight("99999999999999999999", 3).is_err());
    }
}
