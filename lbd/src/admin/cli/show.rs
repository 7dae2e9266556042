//! The reading commands: `show info`, `show stat`, `show servers state`,
//! `show backend`, `show version`, `show cli level`, `get weight`, in
//! HAProxy 2.6's formats.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use lbd_config::{AdminState, HealthCheck};

use super::ctx::Ctx;
use super::target::{self, Target};
use crate::admin::show_stat;
use crate::admin::stats::{RateTracker, Stats};
use crate::state::Status;

/// The version HAProxy's version commands report: HAProxy's, with lbd's in
/// the suffix (as `haproxy -v` prints it).
pub fn version_string() -> String {
    format!(
        "{}-lbd{}",
        lbd_config::haproxy::HAPROXY_VERSION,
        env!("CARGO_PKG_VERSION")
    )
}

pub fn version(_: &mut Ctx<'_>, _: &[&str]) -> String {
    format!("{}\n", version_string())
}

pub fn cli_level(ctx: &mut Ctx<'_>, _: &[&str]) -> String {
    format!("{}\n", ctx.session.level.name())
}

pub fn backend(ctx: &mut Ctx<'_>, _: &[&str]) -> String {
    let snapshot = ctx.server.shared().snapshot();
    let mut out = "# name\n".to_owned();
    for p in &snapshot.pools {
        let _ = writeln!(out, "{}", p.name);
    }
    out
}

/// `get weight <bk>/<srv>`: `<current> (initial <initial>)`.
pub fn get_weight(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    let snapshot = ctx.server.shared().snapshot();
    let target = match target::find(&snapshot, args.first().copied()) {
        Ok(t) => t,
        Err(e) => return e.to_owned(),
    };
    let current = target.member(&snapshot).cfg.weight;
    let loaded = ctx.server.loaded_config();
    // A member added since the last reload started at its current weight.
    let initial = target::loaded_member(&loaded, &target, &snapshot).map_or(current, |m| m.weight);
    format!("{current} (initial {initial})\n")
}

pub fn stat(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    let query = match show_stat::parse_args(args) {
        Ok(q) => q,
        Err(e) => return e,
    };
    let stats = Stats::collect(ctx.server.shared(), ctx.rates);
    show_stat::render(&stats, &query)
}

/// `show info`: HAProxy's `Key: value` lines, every key HAProxy 2.6 prints,
/// 0 where lbd has no such thing.
pub fn info(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    if let Some(format) = args.iter().find(|a| **a != "desc" && **a != "float") {
        return format!("lbd answers 'show info' in the plain format only, not '{format}'.\n");
    }
    info_text(&Stats::collect(ctx.server.shared(), ctx.rates), ctx.rates)
}

fn info_text(stats: &Stats, _: &RateTracker) -> String {
    let uptime = stats.uptime_seconds as u64;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let nofile = nofile_limit();
    let sum = |f: fn(&crate::admin::stats::ListenerStats) -> u64| -> u64 {
        stats.listeners.iter().map(f).sum()
    };
    let cum_conns = sum(|l| l.connections_total);
    let sess_rate: f64 = stats.listeners.iter().map(|l| l.session_rate).sum();
    let maxconn: u64 = stats
        .listeners
        .iter()
        .map(|l| u64::from(l.session_limit))
        .sum();
    let version = version_string();
    let node = hostname();
    let fields: Vec<(&str, String)> = vec![
        ("Name", "HAProxy".into()),
        ("Version", version.clone()),
        ("Release_date", "2026/01/01".into()),
        ("Nbthread", stats.workers.to_string()),
        ("Nbproc", "1".into()),
        ("Process_num", "1".into()),
        ("Pid", stats.pid.to_string()),
        (
            "Uptime",
            format!(
                "{}d {}h{:02}m{:02}s",
                uptime / 86_400,
                uptime / 3_600 % 24,
                uptime / 60 % 60,
                uptime % 60
            ),
        ),
        ("Uptime_sec", uptime.to_string()),
        ("Memmax_MB", "0".into()),
        ("PoolAlloc_MB", "0".into()),
        ("PoolUsed_MB", "0".into()),
        ("PoolFailed", "0".into()),
        ("Ulimit-n", nofile.to_string()),
        ("Maxsock", nofile.to_string()),
        ("Maxconn", maxconn.to_string()),
        ("Hard_maxconn", maxconn.to_string()),
        ("CurrConns", stats.current_connections.to_string()),
        ("CumConns", cum_conns.to_string()),
        ("CumReq", "0".into()),
        ("MaxSslConns", "0".into()),
        ("CurrSslConns", "0".into()),
        ("CumSslConns", "0".into()),
        ("Maxpipes", "0".into()),
        ("PipesUsed", "0".into()),
        ("PipesFree", "0".into()),
        ("ConnRate", (sess_rate.round() as u64).to_string()),
        ("ConnRateLimit", "0".into()),
        ("MaxConnRate", "0".into()),
        ("SessRate", (sess_rate.round() as u64).to_string()),
        ("SessRateLimit", "0".into()),
        ("MaxSessRate", "0".into()),
        ("SslRate", "0".into()),
        ("SslRateLimit", "0".into()),
        ("MaxSslRate", "0".into()),
        ("SslFrontendKeyRate", "0".into()),
        ("SslFrontendMaxKeyRate", "0".into()),
        ("SslFrontendSessionReuse_pct", "0".into()),
        ("SslBackendKeyRate", "0".into()),
        ("SslBackendMaxKeyRate", "0".into()),
        ("SslCacheLookups", "0".into()),
        ("SslCacheMisses", "0".into()),
        ("CompressBpsIn", "0".into()),
        ("CompressBpsOut", "0".into()),
        ("CompressBpsRateLim", "0".into()),
        ("Tasks", "0".into()),
        ("Run_queue", "0".into()),
        ("Idle_pct", "100".into()),
        ("node", node),
        ("Stopping", "0".into()),
        ("Jobs", stats.current_connections.to_string()),
        ("Unstoppable Jobs", "0".into()),
        ("Listeners", stats.listeners.len().to_string()),
        ("ActivePeers", "0".into()),
        ("ConnectedPeers", "0".into()),
        ("DroppedLogs", "0".into()),
        ("BusyPolling", "0".into()),
        ("FailedResolutions", "0".into()),
        ("TotalBytesOut", sum(|l| l.bytes_out_total).to_string()),
        ("TotalSplicdedBytesOut", "0".into()),
        ("BytesOutRate", "0".into()),
        ("DebugCommandsIssued", "0".into()),
        ("CumRecvLogs", "0".into()),
        (
            "Build info",
            format!("{version} (lbd {})", env!("CARGO_PKG_VERSION")),
        ),
        ("Memmax_bytes", "0".into()),
        ("PoolAlloc_bytes", "0".into()),
        ("PoolUsed_bytes", "0".into()),
        ("Start_time_sec", now.saturating_sub(uptime).to_string()),
        ("Tainted", "0".into()),
    ];
    let mut out = String::with_capacity(2048);
    for (key, value) in fields {
        let _ = writeln!(out, "{key}: {value}");
    }
    out
}

fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The header of `show servers state` (format version 1, as HAProxy 2.6).
pub const SERVERS_STATE_HEADER: &str = "# be_id be_name srv_id srv_name srv_addr srv_op_state \
srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
srv_agent_addr srv_agent_port";

/// `show servers state [<backend>]`: what HAProxy saves before a reload
/// (Octavia's `save_state`) and reads back with
/// `load-server-state-from-file`.
pub fn servers_state(ctx: &mut Ctx<'_>, args: &[&str]) -> String {
    let snapshot = ctx.server.shared().snapshot();
    let loaded = ctx.server.loaded_config();
    let pools: Vec<usize> = match args.first() {
        None => (0..snapshot.pools.len()).collect(),
        Some(name) => match snapshot.pools.iter().position(|p| p.name == *name) {
            Some(i) => vec![i],
            None => return "Can't find backend.\n".to_owned(),
        },
    };
    let stats = Stats::collect(ctx.server.shared(), ctx.rates);
    let mut out = format!("1\n{SERVERS_STATE_HEADER}\n");
    for pool_index in pools {
        let pool = &snapshot.pools[pool_index];
        let be_id = show_stat::backend_iid(&stats, &pool.name).unwrap_or(0);
        let health = snapshot.config.pools[pool_index].health.as_ref();
        for member_index in 0..pool.members.len() {
            let target = Target {
                pool: pool_index,
                member: member_index,
            };
            let loaded_member = target::loaded_member(&loaded, &target, &snapshot);
            let _ = writeln!(
                out,
                "{}",
                server_state_line(be_id, &target, &snapshot, health, loaded_member)
            );
        }
    }
    out
}

fn server_state_line(
    be_id: i64,
    target: &Target,
    snapshot: &crate::snapshot::Snapshot,
    health: Option<&HealthCheck>,
    loaded: Option<&lbd_config::Member>,
) -> String {
    let pool = &snapshot.pools[target.pool];
    let m = &pool.members[target.member];
    let s = &m.state;
    let status = s.status();
    let checked = health.is_some();
    // srv_op_state: 0 stopped, 2 running.
    let op_state = match status {
        Status::Down | Status::Maint => 0,
        _ => 2,
    };
    // srv_admin_state bits: 0x04 maint from the config (`disabled`, which
    // HAProxy keeps while the server is made ready at run time), 0x01
    // forced maint, 0x08 forced drain. The server-state file reads them
    // back (lbd_config::haproxy::server_state).
    let config_maint = if loaded.is_some_and(|l| l.admin_state == AdminState::Maint) {
        0x04
    } else {
        0
    };
    let admin_state = config_maint
        | match s.admin() {
            AdminState::Ready => 0,
            AdminState::Drain => 0x08,
            AdminState::Maint => 0x01,
        };
    let initial_weight = loaded.map_or(m.cfg.weight, |l| l.weight);
    let record = s.record();
    let since_change = record.changed_at.elapsed().as_secs();
    // srv_check_status (HAProxy's HCHK_STATUS_*), srv_check_result
    // (CHK_RES_*: 0 unknown, 2 failed, 3 passed).
    let http = health.is_some_and(|h| {
        matches!(
            h.kind,
            lbd_config::CheckKind::Http | lbd_config::CheckKind::Https
        )
    });
    let (check_status, check_result) = match (checked, &record.last) {
        (false, _) | (true, None) => (1, 0),
        // L7OK / L4OK, passed.
        (true, Some((true, _, _))) => (if http { 15 } else { 6 }, 3),
        // L4TOUT, L7STS, L4CON; failed.
        (true, Some((false, text, _))) if text.contains("timeout") => (7, 2),
        (true, Some((false, text, _))) if text.starts_with("HTTP") => (17, 2),
        (true, Some(_)) => (8, 2),
    };
    let (rise, fall) = health.map_or((2, 3), |h| (h.rise, h.fall));
    // srv_check_health: HAProxy's counter, rise..rise+fall-1 while up,
    // 0..rise-1 while down.
    let check_health = if !checked {
        rise
    } else if status == Status::Down {
        0
    } else {
        (rise + fall - 1).saturating_sub(s.fall_streak())
    };
    // srv_check_state: 0x02 configured, 0x04 enabled (not while `disable
    // health`), 0x08 paused (maint).
    let mut check_state = match (checked, s.checks_paused()) {
        (false, _) => 0,
        (true, false) => 0x06,
        (true, true) => 0x02,
    };
    if status == Status::Maint {
        check_state |= 0x08;
    }
    let server = crate::admin::stats::server_label(pool, m);
    format!(
        "{be_id} {be} {srv_id} {srv} {addr} {op_state} {admin_state} {uweight} {iweight} \
         {since_change} {check_status} {check_result} {check_health} {check_state} 0 0 {forced} - \
         {port} - 0 {check_port} {check_addr} - 0",
        be = pool.name,
        srv_id = target.member + 1,
        srv = server,
        addr = m.addr.ip(),
        uweight = m.cfg.weight,
        iweight = initial_weight,
        forced = u8::from(m.cfg.id.is_some()),
        port = m.addr.port(),
        check_port = m.cfg.monitor_port.unwrap_or(0),
        check_addr = m
            .cfg
            .monitor_address
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
    )
}
