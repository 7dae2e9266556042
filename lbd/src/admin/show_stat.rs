//! HAProxy 2.6's `show stat` on the stats socket: the CSV (`# ` and the
//! header line, one line per row; the CLI adds the empty line), `typed`
//! and `json`
//! answers, laid out byte for byte as HAProxy 2.6.12 does, for what lbd
//! has: Octavia's amphora health daemon reads `show stat -1 -1 -1` through
//! `csv.DictReader` (`pxname`, `svname`, `status`, `weight`, `bin`,
//! `bout`, `scur`, `stot`, `ereq`), and `show stat -1 6 -1` for pools.
//!
//! Rows, in proxy order: a `FRONTEND` row per listener, then the pool's
//! servers and its `BACKEND` row. Columns lbd has nothing for stay empty
//! where HAProxy leaves them empty and are `0` where HAProxy fills them
//! (HTTP, SSL, compression, agent...). Where lbd keeps less than HAProxy:
//!
//! * `smax` (servers, backends) and `rate_max`/`conn_rate_max` are the
//!   current value (a lower bound): lbd keeps no maximum for them;
//! * a server's `rate` is 0 and a backend's is the sum of its listeners';
//! * `wretr` is 0 and `wredis` counts lbd's retries: lbd retries on
//!   another member, which HAProxy counts as a redispatch;
//! * `chkfail` counts every failed check (HAProxy: only those while up);
//! * `downtime` is the time since the last change while down or in
//!   maint, else 0 (lbd keeps no total); a backend's `lastchg` is derived
//!   from its members' (the longest usable one while up, the last to
//!   change while down), its `chkdown` and `downtime` are 0;
//! * `lastsess` is -1 (never) and the `*time` columns but `qtime` 0: lbd
//!   keeps no per-session timings; `lbtot` and `connect` are `stot`;
//! * `check_status` comes from lbd's check result (`L4OK`, `L4CON`,
//!   `L7STS`...; never the `* ` of a check in progress) and `last_chk` is
//!   lbd's text of a failed check; `NOLB` never shows (lbd has no
//!   `disable-on-404` or agent).
//!
//! # Ids
//!
//! HAProxy numbers proxies (`iid`) in declaration order from 1, or from 2
//! when there is a `stats socket` (1 is then its CLI's own proxy). lbd keeps listeners and pools in two lists, so the
//! rule is: each listener in order takes the next id, and its pool, if not
//! numbered yet, takes the same id when it has the listener's name (a
//! `listen` section) or else the next one; pools no listener uses follow,
//! in order. That is HAProxy's numbering for haproxy.cfg files that
//! declare each backend after its first frontend (Octavia's do). The
//! listeners `<name>.2`, `<name>.3`... that a `frontend` with several
//! binds becomes are one `FRONTEND` row (summed), as in HAProxy. A
//! server's `sid` is its position in the pool from 1 (lbd ignores
//! haproxy.cfg's `id`; HAProxy numbers the same way without it). The
//! filters (`<iid|name> <type> <sid>`) use these ids.
//!
//! Text is ASCII only (Octavia decodes the answer as ASCII): listener and
//! pool names are ASCII by validation; any other character of a member
//! name or a check result becomes `?`.

use std::fmt::Write;

use super::stats::{CheckStats, ListenerStats, MemberStats, PoolStats, Stats};

/// The answer's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatFormat {
    Csv,
    Typed,
    Json,
}

/// Which proxy `show stat <proxy> <type> <sid>` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFilter {
    /// No filter given, or `-1`.
    All,
    /// A proxy name, else the number HAProxy's `atoi` reads in it.
    Named { name: String, id: i64 },
}

/// What `show stat` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatQuery {
    pub proxy: ProxyFilter,
    /// Bits: 1 frontends, 2 backends, 4 servers; -1 all.
    pub types: i64,
    /// A server id (`sid`); -1 all.
    pub server: i64,
    pub format: StatFormat,
    /// `up`: hide servers in maint and those down and not coming up.
    pub hide_down: bool,
    /// `no-maint`: hide servers in maint.
    pub hide_maint: bool,
}

impl Default for StatQuery {
    fn default() -> Self {
        StatQuery {
            proxy: ProxyFilter::All,
            types: -1,
            server: -1,
            format: StatFormat::Csv,
            hide_down: false,
            hide_maint: false,
        }
    }
}

/// HAProxy's answer to an unknown proxy.
const NO_SUCH_PROXY: &str = "No such proxy.\n";

/// Reads the words after `show stat` as HAProxy 2.6 does: `[domain proxy]
/// [{<iid>|<proxy>} <type> <sid>] [typed|json] [desc] [up|no-maint]`
/// (the last of `typed`/`json` wins; unknown words are ignored). `Err`:
/// HAProxy's message, with its line end (the CLI adds the empty line).
pub fn parse_args(args: &[&str]) -> Result<StatQuery, String> {
    let mut args = args;
    if args.first() == Some(&"domain") {
        // lbd has no resolvers: only the proxy domain.
        match args.get(1) {
            Some(&"proxy") => args = &args[2..],
            _ => return Err("Invalid statistics domain.\n".to_owned()),
        }
    }
    let mut query = StatQuery::default();
    if let [proxy, types, server, ..] = args {
        let id = atoi(proxy);
        if id == -1 {
            query.proxy = ProxyFilter::All;
        } else {
            query.proxy = ProxyFilter::Named {
                name: (*proxy).to_owned(),
                id,
            };
        }
        query.types = atoi(types);
        query.server = atoi(server);
    }
    for word in args {
        match *word {
            "typed" => query.format = StatFormat::Typed,
            "json" => query.format = StatFormat::Json,
            "up" => query.hide_down = true,
            "no-maint" => query.hide_maint = true,
            _ => {}
        }
    }
    Ok(query)
}

/// C's `atoi` (as HAProxy reads these numbers, as `int`): leading blanks,
/// a sign, digits up to the first other character; 0 when none.
fn atoi(text: &str) -> i64 {
    let text = text.trim_start();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        value = value.wrapping_mul(10).wrapping_add(i64::from(b - b'0'));
    }
    let value = if negative {
        value.wrapping_neg()
    } else {
        value
    };
    // An `int`.
    i64::from(value as i32)
}

/// The answer to `show stat` with `query`, as HAProxy lays it out, but for
/// the empty line ending every CLI answer (the session adds it).
pub fn render(stats: &Stats, query: &StatQuery) -> String {
    let proxies = proxies(stats);
    let wanted = match &query.proxy {
        ProxyFilter::All => None,
        ProxyFilter::Named { name, id } => match proxies.iter().find(|p| p.name == name.as_str()) {
            Some(p) => Some(p.iid),
            None if *id == 0 => return NO_SUCH_PROXY.to_owned(),
            None => Some(*id),
        },
    };
    let mut rows = Vec::new();
    for p in &proxies {
        if wanted.is_some_and(|iid| iid != p.iid) {
            continue;
        }
        if query.types & 1 != 0 && !p.frontend.is_empty() {
            rows.push(frontend_row(p));
        }
        let Some(pool) = p.pool else { continue };
        if query.types & 4 != 0 {
            for (i, m) in pool.members.iter().enumerate() {
                let sid = i as i64 + 1;
                if query.server != -1 && query.server != sid {
                    continue;
                }
                let status = server_status(m);
                if query.hide_maint && m.status == "maint" {
                    continue;
                }
                // `up`: not in maint, not down unless coming up.
                let down = m.status == "down" && status.health == Some(0);
                if query.hide_down && (m.status == "maint" || down) {
                    continue;
                }
                rows.push(server_row(p, pool, m, sid, status));
            }
        }
        if query.types & 2 != 0 {
            rows.push(backend_row(
                p,
                pool,
                &proxies,
                query.hide_down || query.hide_maint,
            ));
        }
    }
    match query.format {
        StatFormat::Csv => csv(&rows),
        StatFormat::Typed => typed(&rows),
        StatFormat::Json => json(&rows),
    }
}

/// One proxy of HAProxy's: a frontend (lbd listeners), a backend (a lbd
/// pool), or both (a `listen` section).
struct Proxy<'a> {
    iid: i64,
    name: &'a str,
    frontend: Vec<&'a ListenerStats>,
    pool: Option<&'a PoolStats>,
}

/// The proxies in id order (see the module doc).
fn proxies(stats: &Stats) -> Vec<Proxy<'_>> {
    let mut out: Vec<Proxy> = Vec::new();
    let mut numbered = vec![false; stats.pools.len()];
    let mut next = if stats.has_cli { 2 } else { 1 };
    for l in &stats.listeners {
        if let Some(base) = extra_bind_of(&l.name) {
            if let Some(p) = out
                .iter_mut()
                .find(|p| p.name == base && p.frontend.first().is_some_and(|f| f.pool == l.pool))
            {
                p.frontend.push(l);
                continue;
            }
        }
        let mut proxy = Proxy {
            iid: next,
            name: &l.name,
            frontend: vec![l],
            pool: None,
        };
        next += 1;
        let pool = stats.pools.iter().position(|p| p.name == l.pool);
        match pool {
            Some(i) if !numbered[i] && stats.pools[i].name == l.name => {
                numbered[i] = true;
                proxy.pool = Some(&stats.pools[i]);
                out.push(proxy);
            }
            Some(i) if !numbered[i] => {
                numbered[i] = true;
                out.push(proxy);
                out.push(Proxy {
                    iid: next,
                    name: &stats.pools[i].name,
                    frontend: Vec::new(),
                    pool: Some(&stats.pools[i]),
                });
                next += 1;
            }
            _ => out.push(proxy),
        }
    }
    for (i, pool) in stats.pools.iter().enumerate() {
        if !numbered[i] {
            out.push(Proxy {
                iid: next,
                name: &pool.name,
                frontend: Vec::new(),
                pool: Some(pool),
            });
            next += 1;
        }
    }
    out
}

/// HAProxy's proxy id of pool `pool` (its backend), as `show stat` gives
/// it; `show servers state` uses the same.
pub fn backend_iid(stats: &Stats, pool: &str) -> Option<i64> {
    proxies(stats)
        .iter()
        .find(|p| p.pool.is_some_and(|b| b.name == pool))
        .map(|p| p.iid)
}

/// `web` for `web.2`, `web.3`...: the further binds of a frontend.
fn extra_bind_of(name: &str) -> Option<&str> {
    let (base, n) = name.rsplit_once('.')?;
    let canonical = !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit());
    (canonical && n.parse::<u32>().is_ok_and(|n| n >= 2)).then_some(base)
}

/// What kind of object a row is (HAProxy's `type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Frontend,
    Backend,
    Server,
}

impl Kind {
    fn code(self) -> u64 {
        match self {
            Kind::Frontend => 0,
            Kind::Backend => 1,
            Kind::Server => 2,
        }
    }
}

/// A field's value; `Empty` is left out of `typed` and `json`.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Empty,
    Str(String),
    U(u64),
    S(i64),
}

struct Row {
    kind: Kind,
    iid: i64,
    sid: i64,
    values: Vec<Val>,
}

impl Row {
    /// A row with HAProxy's zeros: every numeric field HAProxy always fills
    /// for `kind` is 0 (`lastsess`: -1), the others empty.
    fn new(kind: Kind, iid: i64, sid: i64) -> Row {
        /// Server fields HAProxy fills only in some states.
        const SOMETIMES: [&str; 14] = [
            "slim",
            "qlimit",
            "throttle",
            "chkfail",
            "chkdown",
            "downtime",
            "check_status",
            "check_code",
            "check_duration",
            "last_chk",
            "check_desc",
            "check_rise",
            "check_fall",
            "check_health",
        ];
        let values = FIELDS
            .iter()
            .map(|f| match f.of(kind) {
                Some((_, Ty::Str)) | None => Val::Empty,
                Some(_) if kind == Kind::Server && SOMETIMES.contains(&f.name) => Val::Empty,
                Some((_, Ty::S32)) => Val::S(-1),
                Some(_) => Val::U(0),
            })
            .collect();
        let mut row = Row {
            kind,
            iid,
            sid,
            values,
        };
        row.set("pid", Val::U(1));
        row.set("iid", Val::U(iid.max(0) as u64));
        row.set("sid", Val::U(sid.max(0) as u64));
        row.set("type", Val::U(kind.code()));
        row.text("mode", "tcp");
        row.text("-", "-");
        row
    }

    fn set(&mut self, name: &str, value: Val) {
        match FIELDS.iter().position(|f| f.name == name) {
            Some(i) => self.values[i] = value,
            None => debug_assert!(name == "-", "no stat field {name}"),
        }
    }

    fn num(&mut self, name: &str, value: u64) {
        self.set(name, Val::U(value));
    }

    fn text(&mut self, name: &str, value: &str) {
        self.set(name, Val::Str(ascii(value)));
    }
}

/// `value` with every character that is not printable ASCII as `?`.
fn ascii(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Seconds (or a rate), rounded, never negative.
fn whole(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// Whole milliseconds (HAProxy truncates).
fn millis(seconds: f64) -> u64 {
    let ms = seconds * 1000.0;
    if ms.is_finite() && ms > 0.0 {
        ms as u64
    } else {
        0
    }
}

fn frontend_row(p: &Proxy) -> Row {
    let mut r = Row::new(Kind::Frontend, p.iid, 0);
    let sum = |f: fn(&ListenerStats) -> u64| p.frontend.iter().map(|l| f(l)).sum::<u64>();
    let scur = sum(|l| l.current_sessions);
    let limit = p.frontend.first().map_or(0, |l| u64::from(l.session_limit));
    let rate = whole(p.frontend.iter().map(|l| l.session_rate).sum());
    r.text("pxname", p.name);
    r.text("svname", "FRONTEND");
    r.num("scur", scur);
    r.num(
        "smax",
        p.frontend
            .iter()
            .map(|l| l.max_sessions)
            .max()
            .unwrap_or(0)
            .max(scur),
    );
    r.num("slim", limit);
    r.num("stot", sum(|l| l.sessions_total));
    r.num("bin", sum(|l| l.bytes_in_total));
    r.num("bout", sum(|l| l.bytes_out_total));
    let status = if p.frontend.iter().all(|l| l.status == "closed") {
        "STOP"
    } else if limit > 0 && scur >= limit {
        "FULL"
    } else {
        "OPEN"
    };
    r.text("status", status);
    r.num("rate", rate);
    r.num("rate_max", rate);
    r.num("conn_rate", rate);
    r.num("conn_rate_max", rate);
    r.num("conn_tot", sum(|l| l.connections_total));
    r.num("dcon", sum(|l| l.denied_total));
    r
}

/// HAProxy's server status and check health.
struct ServerStatus {
    text: String,
    /// `check_health`, for a checked member outside maint.
    health: Option<u32>,
}

fn server_status(m: &MemberStats) -> ServerStatus {
    let plain = |text: &str| ServerStatus {
        text: text.to_owned(),
        health: None,
    };
    let streak = match (m.status, m.check_streak) {
        ("maint", _) => return plain("MAINT"),
        ("drain", None) => return plain("DRAIN"),
        ("down", None) => return plain("DOWN"),
        (_, None) => return plain("no check"),
        // Checks disabled (`disable health`) on an up member.
        ("no_check", Some(_)) => return plain("no check"),
        (_, Some(s)) => s,
    };
    let (rise, fall) = (streak.rise.max(1), streak.fall.max(1));
    let full = rise + fall - 1;
    if m.status == "down" {
        let health = streak.passes.min(rise - 1);
        let text = if health == 0 {
            "DOWN".to_owned()
        } else {
            format!("DOWN {health}/{rise}")
        };
        return ServerStatus {
            text,
            health: Some(health),
        };
    }
    // Up (or drained while up). Unconfirmed: HAProxy's initial health.
    let health = if streak.confirmed {
        full - streak.failures.min(fall - 1)
    } else {
        rise
    };
    let word = if m.status == "drain" { "DRAIN" } else { "UP" };
    let text = if health < full {
        format!("{word} {}/{fall}", health - rise + 1)
    } else {
        word.to_owned()
    };
    ServerStatus {
        text,
        health: Some(health),
    }
}

fn server_row(p: &Proxy, pool: &PoolStats, m: &MemberStats, sid: i64, status: ServerStatus) -> Row {
    let mut r = Row::new(Kind::Server, p.iid, sid);
    r.text("pxname", &pool.name);
    r.text("svname", &m.server);
    r.num("scur", m.current_sessions);
    r.num("smax", m.current_sessions);
    if let Some(limit) = m.max_connections {
        r.num("slim", u64::from(limit));
    }
    r.num("stot", m.sessions_total);
    r.num("lbtot", m.sessions_total);
    r.num("connect", m.sessions_total);
    r.num("bin", m.bytes_in_total);
    r.num("bout", m.bytes_out_total);
    r.num("econ", m.connect_errors_total);
    r.num("wredis", m.retries_total);
    r.text("status", &status.text);
    r.num("weight", u64::from(m.current_weight));
    r.num("uweight", u64::from(m.weight));
    r.num("act", u64::from(!m.backup));
    r.num("bck", u64::from(m.backup));
    let lastchg = m.seconds_since_change.max(0.0) as u64;
    r.num("lastchg", lastchg);
    if m.weight > 0 && m.current_weight < m.weight {
        r.num(
            "throttle",
            u64::from(m.current_weight) * 100 / u64::from(m.weight),
        );
    }
    r.text("addr", &m.address);
    let Some(streak) = m.check_streak else {
        return r;
    };
    r.num("chkfail", m.check_failures_total);
    r.num("chkdown", m.down_transitions_total);
    let down = matches!(m.status, "down" | "maint");
    r.num("downtime", if down { lastchg } else { 0 });
    let Some(health) = status.health else {
        return r;
    };
    // HAProxy's estimate of the connections needed counts the check's.
    r.num("need_conn_est", 1);
    r.num("check_rise", u64::from(streak.rise));
    r.num("check_fall", u64::from(streak.fall));
    r.num("check_health", u64::from(health));
    match &m.last_check {
        // HAProxy leaves the check's status empty while it is disabled.
        _ if m.checks_paused => r.text("check_status", ""),
        None => {
            r.text("check_status", "INI");
            r.text("check_desc", "Initializing");
            r.text("last_chk", "");
        }
        Some(c) => {
            let result = check_result(pool.check_type, c);
            r.text("check_status", result.status);
            if let Some(code) = result.code {
                r.num("check_code", code);
            }
            r.num("check_duration", millis(c.duration_seconds));
            r.text("last_chk", &result.info);
            r.text("check_desc", description(result.status));
        }
    }
    r
}

/// What HAProxy would have said of a check.
struct CheckResult {
    /// `L4OK`, `L7STS`...
    status: &'static str,
    /// `check_code`: the HTTP status or the program's exit code.
    code: Option<u64>,
    /// `last_chk`.
    info: String,
}

/// Reads lbd's check result (see `health::probe`) as HAProxy's status.
fn check_result(kind: Option<&str>, c: &CheckStats) -> CheckResult {
    let text = c.result.as_str();
    let http = text
        .strip_prefix("HTTP ")
        .and_then(|n| n.parse::<u64>().ok());
    let exit = text
        .strip_prefix("external: exit ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.trim().parse::<u64>().ok());
    let result = |status, code, info: &str| CheckResult {
        status,
        code,
        info: info.to_owned(),
    };
    if c.passed {
        return match text {
            "TLS handshake done" => result("L6OK", None, ""),
            "tcp_script passed" => result("L7OK", None, ""),
            _ if http.is_some() => result("L7OK", http, ""),
            _ if exit.is_some() => result("PROCOK", exit, ""),
            _ => result("L4OK", None, ""),
        };
    }
    let status = if text == "connect refused" {
        return result("L4CON", None, "Connection refused");
    } else if text.starts_with("connect: ") {
        "L4CON"
    } else if http.is_some() {
        "L7STS"
    } else if text.starts_with("external: ") {
        if text.contains("timeout") {
            "PROCTOUT"
        } else {
            "PROCERR"
        }
    } else if text.starts_with("timeout") {
        match kind {
            Some("tcp") => "L4TOUT",
            Some("tls_hello") => "L6TOUT",
            _ => "L7TOUT",
        }
    } else if text.starts_with("TLS: ") {
        "L6RSP"
    } else if text.starts_with("bad HTTP response") || text.starts_with("tcp_script") {
        "L7RSP"
    } else if text == "closed before answering" {
        if kind == Some("tls_hello") {
            "L6RSP"
        } else {
            "L7RSP"
        }
    } else {
        "SOCKERR"
    };
    result(status, http.or(exit), text)
}

/// HAProxy's `check_desc` of a check status.
fn description(status: &str) -> &'static str {
    match status {
        "INI" => "Initializing",
        "SOCKERR" => "Socket error",
        "L4OK" => "Layer4 check passed",
        "L4TOUT" => "Layer4 timeout",
        "L4CON" => "Layer4 connection problem",
        "L6OK" => "Layer6 check passed",
        "L6TOUT" => "Layer6 timeout",
        "L6RSP" => "Layer6 invalid response",
        "L7TOUT" => "Layer7 timeout",
        "L7RSP" => "Layer7 invalid response",
        "L7OK" => "Layer7 check passed",
        "L7STS" => "Layer7 wrong status",
        "PROCERR" => "External check error",
        "PROCTOUT" => "External check timeout",
        "PROCOK" => "External check passed",
        _ => "Unknown",
    }
}

/// Whether a member takes new connections (HAProxy's usable server).
fn usable(m: &MemberStats) -> bool {
    matches!(m.status, "up" | "no_check") && m.weight > 0
}

fn backend_row(p: &Proxy, pool: &PoolStats, proxies: &[Proxy], counts: bool) -> Row {
    let mut r = Row::new(Kind::Backend, p.iid, 0);
    r.text("pxname", &pool.name);
    r.text("svname", "BACKEND");
    let q = &pool.queue;
    r.num("qcur", q.current);
    r.num("qmax", q.max.max(q.current));
    r.num("scur", pool.current_sessions);
    r.num("smax", pool.current_sessions);
    // HAProxy's default `fullconn`: a tenth of the frontends' maxconn.
    let fronts: Vec<&ListenerStats> = proxies
        .iter()
        .filter_map(|f| f.frontend.first().copied())
        .filter(|l| l.pool == pool.name)
        .collect();
    let maxconn: u64 = fronts.iter().map(|l| u64::from(l.session_limit)).sum();
    r.num("slim", maxconn.div_ceil(10));
    r.num("stot", pool.sessions_total);
    r.num("lbtot", pool.sessions_total);
    r.num("connect", pool.sessions_total);
    r.num("bin", pool.bytes_in_total);
    r.num("bout", pool.bytes_out_total);
    r.num("econ", pool.connect_errors_total);
    r.num("wredis", pool.retries_total);
    let active: Vec<&MemberStats> = pool
        .members
        .iter()
        .filter(|m| !m.backup && usable(m))
        .collect();
    let in_use = if active.is_empty() {
        pool.members
            .iter()
            .filter(|m| m.backup && usable(m))
            .collect()
    } else {
        active
    };
    let up = !in_use.is_empty() || pool.members.is_empty();
    let mut status = if up { "UP" } else { "DOWN" }.to_owned();
    if counts {
        let running = pool
            .members
            .iter()
            .filter(|m| matches!(m.status, "up" | "drain" | "no_check"))
            .count();
        let _ = write!(status, " ({running}/{})", pool.members.len());
    }
    r.text("status", &status);
    r.num(
        "weight",
        in_use.iter().map(|m| u64::from(m.current_weight)).sum(),
    );
    r.num("uweight", in_use.iter().map(|m| u64::from(m.weight)).sum());
    r.num("act", pool.active_members as u64);
    r.num("bck", pool.backup_members as u64);
    let changes = pool
        .members
        .iter()
        .map(|m| m.seconds_since_change.max(0.0) as u64);
    let lastchg = if up {
        in_use
            .iter()
            .map(|m| m.seconds_since_change.max(0.0) as u64)
            .max()
    } else {
        changes.min()
    };
    r.num("lastchg", lastchg.unwrap_or(0));
    let rate = whole(fronts.iter().map(|l| l.session_rate).sum());
    r.num("rate", rate);
    r.num("rate_max", rate);
    r.num("qtime", millis(q.time_average_seconds));
    r.num("qtime_max", millis(q.time_max_seconds));
    r.text("algo", algo(pool.algorithm));
    r
}

/// HAProxy's `balance` name of a lbd algorithm.
fn algo(name: &str) -> &str {
    match name {
        "round_robin" => "roundrobin",
        "least_connections" => "leastconn",
        "source_ip" => "source",
        other => other,
    }
}

/// The field positions of HAProxy's CSV before which it writes a `-`
/// column (the start of the stats modules' fields).
const MODULES_START: usize = 103;

fn csv(rows: &[Row]) -> String {
    let mut out = String::with_capacity(1024 + rows.len() * 512);
    out.push_str("# ");
    for (i, f) in FIELDS.iter().enumerate() {
        if i == MODULES_START {
            out.push_str("-,");
        }
        out.push_str(f.name);
        out.push(',');
    }
    out.push('\n');
    for row in rows {
        for (i, v) in row.values.iter().enumerate() {
            if i == MODULES_START {
                out.push_str("-,");
            }
            match v {
                Val::Empty => {}
                Val::Str(s) if s.contains([',', '"']) => {
                    let _ = write!(out, "\"{}\"", s.replace('"', "\"\""));
                }
                Val::Str(s) => out.push_str(s),
                Val::U(n) => {
                    let _ = write!(out, "{n}");
                }
                Val::S(n) => {
                    let _ = write!(out, "{n}");
                }
            }
            out.push(',');
        }
        out.push('\n');
    }
    out
}

/// The present fields of a row: (position, definition, tags, type, value).
fn present(row: &Row) -> impl Iterator<Item = (usize, &FieldDef, &'static str, Ty, &Val)> {
    row.values.iter().enumerate().filter_map(move |(i, v)| {
        let def = &FIELDS[i];
        match (v, def.of(row.kind)) {
            (Val::Empty, _) | (_, None) => None,
            (v, Some((tags, ty))) => Some((i, def, tags, ty, v)),
        }
    })
}

/// A number as its field's type says (u32 fields saturate).
fn number(ty: Ty, v: &Val) -> String {
    match (ty, v) {
        (Ty::U32, Val::U(n)) => (*n).min(u64::from(u32::MAX)).to_string(),
        (Ty::S32, Val::S(n)) => (*n)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
            .to_string(),
        (_, Val::U(n)) => n.to_string(),
        (_, Val::S(n)) => n.to_string(),
        (_, Val::Str(s)) => s.clone(),
        (_, Val::Empty) => String::new(),
    }
}

fn typed(rows: &[Row]) -> String {
    let mut out = String::with_capacity(rows.len() * 4096 + 1);
    for row in rows {
        let letter = match row.kind {
            Kind::Frontend => 'F',
            Kind::Backend => 'B',
            Kind::Server => 'S',
        };
        for (i, def, tags, ty, v) in present(row) {
            let _ = writeln!(
                out,
                "{letter}.{}.{}.{i}.{}.1:{tags}:{}:{}",
                row.iid,
                row.sid,
                def.name,
                ty.name(),
                number(ty, v)
            );
        }
    }
    out
}

fn json(rows: &[Row]) -> String {
    let mut out = String::with_capacity(rows.len() * 16384 + 4);
    out.push('[');
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('[');
        let kind = match row.kind {
            Kind::Frontend => "Frontend",
            Kind::Backend => "Backend",
            Kind::Server => "Server",
        };
        for (k, (i, def, tags, ty, v)) in present(row).enumerate() {
            if k > 0 {
                out.push(',');
            }
            let tag = tags.as_bytes();
            let value = match v {
                Val::Str(s) => format!("\"{}\"", json_escape(s)),
                v => number(ty, v),
            };
            let _ = write!(
                out,
                "{{\"objType\":\"{kind}\",\"proxyId\":{},\"id\":{},\"field\":{{\"pos\":{i},\"name\":\"{}\"}},\"processNum\":1,\"tags\":{{\"origin\":\"{}\",\"nature\":\"{}\",\"scope\":\"{}\"}},\"value\":{{\"type\":\"{}\",\"value\":{value}}}}}",
                row.iid,
                row.sid,
                def.name,
                origin(tag[0]),
                nature(tag[1]),
                scope(tag[2]),
                ty.name(),
            );
        }
        out.push(']');
    }
    out.push_str("]\n");
    out
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn origin(c: u8) -> &'static str {
    match c {
        b'M' => "Metric",
        b'S' => "Status",
        b'K' => "Key",
        b'C' => "Config",
        _ => "Product",
    }
}

fn nature(c: u8) -> &'static str {
    match c {
        b'A' => "Age",
        b'a' => "Avg",
        b'C' => "Counter",
        b'D' => "Duration",
        b'G' => "Gauge",
        b'L' => "Limit",
        b'M' => "Max",
        b'N' => "Name",
        b'O' => "Output",
        b'R' => "Rate",
        _ => "Time",
    }
}

fn scope(c: u8) -> &'static str {
    match c {
        b'P' => "Process",
        b'S' => "Service",
        b's' => "System",
        _ => "Cluster",
    }
}

/// A field's type in `typed` and `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Str,
    U32,
    U64,
    S32,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "str",
            Ty::U32 => "u32",
            Ty::U64 => "u64",
            Ty::S32 => "s32",
        }
    }
}

/// One of HAProxy's stat fields: its name and, per object type, its tags
/// (origin, nature, scope letters) and type when HAProxy fills it there.
struct FieldDef {
    name: &'static str,
    fe: Option<(&'static str, Ty)>,
    be: Option<(&'static str, Ty)>,
    sv: Option<(&'static str, Ty)>,
}

impl FieldDef {
    fn of(&self, kind: Kind) -> Option<(&'static str, Ty)> {
        match kind {
            Kind::Frontend => self.fe,
            Kind::Backend => self.be,
            Kind::Server => self.sv,
        }
    }
}

// Read from HAProxy 2.6.12's `show stat typed` (fields no row filled there
// from its source: `throttle`, `check_code`).
#[rustfmt::skip]
/// HAProxy 2.6.12's stat fields in order: (name, frontend, backend, server),
/// each `(tags, type)` when HAProxy fills it for that object type.
const FIELDS: [FieldDef; 127] = [
    FieldDef { name: "pxname", fe: Some(("KNS", Ty::Str)), be: Some(("KNS", Ty::Str)), sv: Some(("KNS", Ty::Str)) },
    FieldDef { name: "svname", fe: Some(("KNS", Ty::Str)), be: Some(("KNS", Ty::Str)), sv: Some(("KNS", Ty::Str)) },
    FieldDef { name: "qcur", fe: None, be: Some(("MGP", Ty::U32)), sv: Some(("MGP", Ty::U32)) },
    FieldDef { name: "qmax", fe: None, be: Some(("MMP", Ty::U32)), sv: Some(("MMP", Ty::U32)) },
    FieldDef { name: "scur", fe: Some(("MGP", Ty::U32)), be: Some(("MGP", Ty::U32)), sv: Some(("MGP", Ty::U32)) },
    FieldDef { name: "smax", fe: Some(("MMP", Ty::U32)), be: Some(("MMP", Ty::U32)), sv: Some(("MMP", Ty::U32)) },
    FieldDef { name: "slim", fe: Some(("CLP", Ty::U32)), be: Some(("CLP", Ty::U32)), sv: Some(("CLP", Ty::U32)) },
    FieldDef { name: "stot", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "bin", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "bout", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "dreq", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "dresp", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "ereq", fe: Some(("MCP", Ty::U64)), be: None, sv: None },
    FieldDef { name: "econ", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "eresp", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "wretr", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "wredis", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "status", fe: Some(("SGP", Ty::Str)), be: Some(("SGP", Ty::Str)), sv: Some(("SGP", Ty::Str)) },
    FieldDef { name: "weight", fe: None, be: Some(("MaP", Ty::U32)), sv: Some(("MaP", Ty::U32)) },
    FieldDef { name: "act", fe: None, be: Some(("MGP", Ty::U32)), sv: Some(("SGP", Ty::U32)) },
    FieldDef { name: "bck", fe: None, be: Some(("MGP", Ty::U32)), sv: Some(("SGP", Ty::U32)) },
    FieldDef { name: "chkfail", fe: None, be: None, sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "chkdown", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "lastchg", fe: None, be: Some(("MAP", Ty::U32)), sv: Some(("MAP", Ty::U32)) },
    FieldDef { name: "downtime", fe: None, be: Some(("MCP", Ty::U32)), sv: Some(("MCP", Ty::U32)) },
    FieldDef { name: "qlimit", fe: None, be: None, sv: Some(("CGS", Ty::U32)) },
    FieldDef { name: "pid", fe: Some(("KGP", Ty::U32)), be: Some(("KGP", Ty::U32)), sv: Some(("KGP", Ty::U32)) },
    FieldDef { name: "iid", fe: Some(("KGS", Ty::U32)), be: Some(("KGS", Ty::U32)), sv: Some(("KGS", Ty::U32)) },
    FieldDef { name: "sid", fe: Some(("KGS", Ty::U32)), be: Some(("KGS", Ty::U32)), sv: Some(("KGS", Ty::U32)) },
    FieldDef { name: "throttle", fe: None, be: None, sv: Some(("MaP", Ty::U32)) },
    FieldDef { name: "lbtot", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "tracked", fe: None, be: None, sv: None },
    FieldDef { name: "type", fe: Some(("CGS", Ty::U32)), be: Some(("CGS", Ty::U32)), sv: Some(("CGS", Ty::U32)) },
    FieldDef { name: "rate", fe: Some(("MRP", Ty::U32)), be: Some(("MGP", Ty::U32)), sv: Some(("MRP", Ty::U32)) },
    FieldDef { name: "rate_lim", fe: Some(("CLP", Ty::U32)), be: None, sv: None },
    FieldDef { name: "rate_max", fe: Some(("MMP", Ty::U32)), be: Some(("MGP", Ty::U32)), sv: Some(("MMP", Ty::U32)) },
    FieldDef { name: "check_status", fe: None, be: None, sv: Some(("MOP", Ty::Str)) },
    FieldDef { name: "check_code", fe: None, be: None, sv: Some(("MOP", Ty::U32)) },
    FieldDef { name: "check_duration", fe: None, be: None, sv: Some(("MDP", Ty::U64)) },
    FieldDef { name: "hrsp_1xx", fe: None, be: None, sv: None },
    FieldDef { name: "hrsp_2xx", fe: None, be: None, sv: None },
    FieldDef { name: "hrsp_3xx", fe: None, be: None, sv: None },
    FieldDef { name: "hrsp_4xx", fe: None, be: None, sv: None },
    FieldDef { name: "hrsp_5xx", fe: None, be: None, sv: None },
    FieldDef { name: "hrsp_other", fe: None, be: None, sv: None },
    FieldDef { name: "hanafail", fe: None, be: None, sv: None },
    FieldDef { name: "req_rate", fe: Some(("MRP", Ty::U32)), be: None, sv: None },
    FieldDef { name: "req_rate_max", fe: Some(("MMP", Ty::U32)), be: None, sv: None },
    FieldDef { name: "req_tot", fe: Some(("MCP", Ty::U64)), be: None, sv: None },
    FieldDef { name: "cli_abrt", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "srv_abrt", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "comp_in", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "comp_out", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "comp_byp", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "comp_rsp", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "lastsess", fe: None, be: Some(("MAP", Ty::S32)), sv: Some(("MAP", Ty::S32)) },
    FieldDef { name: "last_chk", fe: None, be: None, sv: Some(("MOP", Ty::Str)) },
    FieldDef { name: "last_agt", fe: None, be: None, sv: None },
    FieldDef { name: "qtime", fe: None, be: Some(("MaP", Ty::U32)), sv: Some(("MaP", Ty::U32)) },
    FieldDef { name: "ctime", fe: None, be: Some(("MaP", Ty::U32)), sv: Some(("MaP", Ty::U32)) },
    FieldDef { name: "rtime", fe: None, be: Some(("MaP", Ty::U32)), sv: Some(("MaP", Ty::U32)) },
    FieldDef { name: "ttime", fe: None, be: Some(("MaP", Ty::U32)), sv: Some(("MaP", Ty::U32)) },
    FieldDef { name: "agent_status", fe: None, be: None, sv: None },
    FieldDef { name: "agent_code", fe: None, be: None, sv: None },
    FieldDef { name: "agent_duration", fe: None, be: None, sv: None },
    FieldDef { name: "check_desc", fe: None, be: None, sv: Some(("MOP", Ty::Str)) },
    FieldDef { name: "agent_desc", fe: None, be: None, sv: None },
    FieldDef { name: "check_rise", fe: None, be: None, sv: Some(("CGS", Ty::U32)) },
    FieldDef { name: "check_fall", fe: None, be: None, sv: Some(("CGS", Ty::U32)) },
    FieldDef { name: "check_health", fe: None, be: None, sv: Some(("CGS", Ty::U32)) },
    FieldDef { name: "agent_rise", fe: None, be: None, sv: None },
    FieldDef { name: "agent_fall", fe: None, be: None, sv: None },
    FieldDef { name: "agent_health", fe: None, be: None, sv: None },
    FieldDef { name: "addr", fe: None, be: None, sv: Some(("CGS", Ty::Str)) },
    FieldDef { name: "cookie", fe: None, be: None, sv: None },
    FieldDef { name: "mode", fe: Some(("CGS", Ty::Str)), be: Some(("CGS", Ty::Str)), sv: Some(("CGS", Ty::Str)) },
    FieldDef { name: "algo", fe: None, be: Some(("CGS", Ty::Str)), sv: None },
    FieldDef { name: "conn_rate", fe: Some(("MRP", Ty::U32)), be: None, sv: None },
    FieldDef { name: "conn_rate_max", fe: Some(("MMP", Ty::U32)), be: None, sv: None },
    FieldDef { name: "conn_tot", fe: Some(("MCP", Ty::U64)), be: None, sv: None },
    FieldDef { name: "intercepted", fe: None, be: None, sv: None },
    FieldDef { name: "dcon", fe: Some(("MCP", Ty::U64)), be: None, sv: None },
    FieldDef { name: "dses", fe: Some(("MCP", Ty::U64)), be: None, sv: None },
    FieldDef { name: "wrew", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "connect", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "reuse", fe: None, be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "cache_lookups", fe: None, be: None, sv: None },
    FieldDef { name: "cache_hits", fe: None, be: None, sv: None },
    FieldDef { name: "srv_icur", fe: None, be: None, sv: Some(("MGP", Ty::U32)) },
    FieldDef { name: "src_ilim", fe: None, be: None, sv: None },
    FieldDef { name: "qtime_max", fe: None, be: Some(("MMP", Ty::U32)), sv: Some(("MMP", Ty::U32)) },
    FieldDef { name: "ctime_max", fe: None, be: Some(("MMP", Ty::U32)), sv: Some(("MMP", Ty::U32)) },
    FieldDef { name: "rtime_max", fe: None, be: Some(("MMP", Ty::U32)), sv: Some(("MMP", Ty::U32)) },
    FieldDef { name: "ttime_max", fe: None, be: Some(("MMP", Ty::U32)), sv: Some(("MMP", Ty::U32)) },
    FieldDef { name: "eint", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "idle_conn_cur", fe: None, be: None, sv: Some(("MGP", Ty::U32)) },
    FieldDef { name: "safe_conn_cur", fe: None, be: None, sv: Some(("MGP", Ty::U32)) },
    FieldDef { name: "used_conn_cur", fe: None, be: None, sv: Some(("MGP", Ty::U32)) },
    FieldDef { name: "need_conn_est", fe: None, be: None, sv: Some(("MGP", Ty::U32)) },
    FieldDef { name: "uweight", fe: None, be: Some(("MaP", Ty::U32)), sv: Some(("MaP", Ty::U32)) },
    FieldDef { name: "agg_server_status", fe: None, be: Some(("MGP", Ty::U32)), sv: None },
    FieldDef { name: "agg_server_check_status", fe: None, be: Some(("MGP", Ty::U32)), sv: None },
    FieldDef { name: "agg_check_status", fe: None, be: Some(("MGP", Ty::U32)), sv: None },
    FieldDef { name: "ssl_sess", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "ssl_reused_sess", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "ssl_failed_handshake", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: Some(("MCP", Ty::U64)) },
    FieldDef { name: "h2_headers_rcvd", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_data_rcvd", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_settings_rcvd", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_rst_stream_rcvd", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_goaway_rcvd", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_detected_conn_protocol_errors", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_detected_strm_protocol_errors", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_rst_stream_resp", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_goaway_resp", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_open_connections", fe: Some(("MGP", Ty::U64)), be: Some(("MGP", Ty::U64)), sv: None },
    FieldDef { name: "h2_backend_open_streams", fe: Some(("MGP", Ty::U64)), be: Some(("MGP", Ty::U64)), sv: None },
    FieldDef { name: "h2_total_connections", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h2_backend_total_streams", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h1_open_connections", fe: Some(("MGP", Ty::U64)), be: Some(("MGP", Ty::U64)), sv: None },
    FieldDef { name: "h1_open_streams", fe: Some(("MGP", Ty::U64)), be: Some(("MGP", Ty::U64)), sv: None },
    FieldDef { name: "h1_total_connections", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h1_total_streams", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h1_bytes_in", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h1_bytes_out", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h1_spliced_bytes_in", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
    FieldDef { name: "h1_spliced_bytes_out", fe: Some(("MCP", Ty::U64)), be: Some(("MCP", Ty::U64)), sv: None },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::stats::CheckStreak;

    fn listener(name: &str, pool: &str, limit: u32) -> ListenerStats {
        ListenerStats {
            name: name.into(),
            protocol: "tcp",
            bind: "127.0.0.1:19080".into(),
            pool: pool.into(),
            status: "open",
            current_sessions: 0,
            max_sessions: 0,
            session_limit: limit,
            connections_total: 0,
            sessions_total: 0,
            session_rate: 0.0,
            bytes_in_total: 0,
            bytes_out_total: 0,
            denied_total: 0,
            limit_hits_total: 0,
            no_member_total: 0,
            local_errors_total: 0,
            hedges_total: 0,
            hedges_won_total: 0,
            datagrams_in_total: 0,
            datagrams_out_total: 0,
            datagrams_dropped_total: 0,
        }
    }

    fn member(server: &str, port: u16, status: &'static str) -> MemberStats {
        MemberStats {
            server: server.into(),
            address: format!("127.0.0.1:{port}"),
            name: Some(server.into()),
            id: None,
            status,
            admin_state: if status == "maint" { "maint" } else { "ready" },
            weight: 1,
            current_weight: 1,
            backup: false,
            max_connections: None,
            current_sessions: 0,
            sessions_total: 0,
            connect_errors_total: 0,
            retries_total: 0,
            sessions_shutdown_total: 0,
            bytes_in_total: 0,
            bytes_out_total: 0,
            datagrams_in_total: 0,
            datagrams_out_total: 0,
            last_check: Some(CheckStats {
                passed: status != "down",
                result: if status == "down" {
                    "connect refused"
                } else {
                    "connected"
                }
                .into(),
                duration_seconds: 0.0002,
            }),
            check_failures_total: 0,
            down_transitions_total: 0,
            seconds_since_change: 19.3,
            check_streak: Some(CheckStreak {
                rise: 2,
                fall: 3,
                failures: 0,
                passes: 0,
                confirmed: true,
            }),
            checks_paused: false,
        }
    }

    fn pool(name: &str, algorithm: &'static str, members: Vec<MemberStats>) -> PoolStats {
        let count = |backup: bool| {
            members
                .iter()
                .filter(|m| m.backup == backup && usable(m))
                .count()
        };
        let usable = (count(false), count(true));
        PoolStats::with_totals(name.into(), algorithm, Some("tcp"), usable, members)
    }

    fn stats(listeners: Vec<ListenerStats>, pools: Vec<PoolStats>) -> Stats {
        Stats {
            version: "test",
            pid: 1,
            uptime_seconds: 100.0,
            runtime: "epoll",
            workers: 1,
            generation: 1,
            reloads_total: 0,
            reload_failures_total: 0,
            current_connections: 0,
            xdp: None,
            listeners,
            pools,
            has_cli: true,
        }
    }

    /// The oracle's fe1/be1 (see show_stat_oracle/README.md), in lbd terms.
    fn oracle() -> Stats {
        let up = MemberStats {
            check_failures_total: 1,
            down_transitions_total: 1,
            ..member("s-up", 19091, "up")
        };
        let down = MemberStats {
            check_failures_total: 1,
            down_transitions_total: 1,
            ..member("s-down", 19092, "down")
        };
        let dis = MemberStats {
            last_check: None,
            ..member("s-dis", 19091, "maint")
        };
        let bck = MemberStats {
            backup: true,
            ..member("s-bck", 19091, "up")
        };
        let w0 = MemberStats {
            weight: 0,
            current_weight: 0,
            ..member("s-w0", 19091, "up")
        };
        stats(
            vec![listener("fe1", "be1", 100)],
            vec![pool("be1", "round_robin", vec![up, down, dis, bck, w0])],
        )
    }

    fn query(args: &[&str]) -> StatQuery {
        parse_args(args).expect("valid arguments")
    }

    #[test]
    fn csv_is_haproxys() {
        let expected = include_str!("show_stat_oracle/csv.txt")
            .replace(
                "be1,s-w0,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,0,1,0,0,0,19,0,,1,3,6,",
                "be1,s-w0,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,0,1,0,0,0,19,0,,1,3,5,",
            )
            .replace(
                "be1,BACKEND,0,0,0,0,10,0,0,0,0,0,,0,0,0,0,UP,3,3,1,",
                "be1,BACKEND,0,0,0,0,10,0,0,0,0,0,,0,0,0,0,UP,1,1,1,",
            );
        // uweight of the BACKEND row follows its weight.
        let expected = expected.replace(",,,,,3,0,0,0,-,", ",,,,,1,0,0,0,-,");
        let answer = render(&oracle(), &query(&[]));
        assert_eq!(answer, expected);
        assert!(answer.ends_with(",\n"));
        assert!(answer.is_ascii());
    }

    #[test]
    fn typed_is_haproxys() {
        let mut stats = oracle();
        stats.pools[0].members[1].seconds_since_change = 116.0;
        let typed = render(&stats, &query(&["typed"]));
        let lines = |prefix: &str| -> String {
            typed
                .lines()
                .filter(|l| l.starts_with(prefix))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        assert_eq!(
            lines("F.2.0."),
            include_str!("show_stat_oracle/frontend.typed")
        );
        assert_eq!(
            lines("S.3.2."),
            include_str!("show_stat_oracle/server_down.typed")
        );
        assert!(typed.ends_with(":0\n"), "{typed}");
        assert_eq!(render(&stats, &query(&["-1", "0", "-1", "typed"])), "");
    }

    #[test]
    fn json_is_haproxys() {
        let json = render(&oracle(), &query(&["json"]));
        assert!(json.starts_with(
            r#"[[{"objType":"Frontend","proxyId":2,"id":0,"field":{"pos":0,"name":"pxname"},"processNum":1,"tags":{"origin":"Key","nature":"Name","scope":"Service"},"value":{"type":"str","value":"fe1"}},{"objType":"Frontend","proxyId":2,"id":0,"field":{"pos":1,"name":"svname"},"#
        ), "{json}");
        assert!(json.contains(r#"{"objType":"Server","proxyId":3,"id":2,"field":{"pos":56,"name":"last_chk"},"processNum":1,"tags":{"origin":"Metric","nature":"Output","scope":"Process"},"value":{"type":"str","value":"Connection refused"}}"#));
        assert!(json.contains(r#""field":{"pos":55,"name":"lastsess"},"processNum":1,"tags":{"origin":"Metric","nature":"Age","scope":"Process"},"value":{"type":"s32","value":-1}}"#));
        assert!(json.ends_with("}]]\n"));
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let rows = parsed.as_array().expect("rows");
        assert_eq!(rows.len(), 7);
        assert_eq!(
            render(&oracle(), &query(&["9", "-1", "-1", "json"])),
            "[]\n"
        );
    }

    /// (pxname, svname, status, iid, sid) of each row.
    fn rows(answer: &str) -> Vec<(String, String, String, String, String)> {
        answer
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (
                    f[0].into(),
                    f[1].into(),
                    f[17].into(),
                    f[27].into(),
                    f[28].into(),
                )
            })
            .collect()
    }

    #[test]
    fn filters() {
        let stats = oracle();
        let names = |args: &[&str]| -> Vec<String> {
            rows(&render(&stats, &query(args)))
                .into_iter()
                .map(|r| format!("{}/{}", r.0, r.1))
                .collect()
        };
        assert_eq!(
            names(&["-1", "6", "-1"]),
            [
                "be1/s-up",
                "be1/s-down",
                "be1/s-dis",
                "be1/s-bck",
                "be1/s-w0",
                "be1/BACKEND"
            ]
        );
        assert_eq!(names(&["-1", "1", "-1"]), ["fe1/FRONTEND"]);
        assert_eq!(names(&["be1", "6", "2"]), ["be1/s-down", "be1/BACKEND"]);
        assert_eq!(names(&["3", "4", "-1"]).len(), 5);
        assert_eq!(names(&["2", "-1", "-1"]), ["fe1/FRONTEND"]);
        assert!(names(&["-2", "-1", "-1"]).is_empty());
        assert!(names(&["-1", "0", "-1"]).is_empty());
        assert_eq!(names(&["-1", "6", "x"]), ["be1/BACKEND"]);
        // Fewer than three words: no filter.
        assert_eq!(names(&["-1", "6"]).len(), 7);
        assert_eq!(
            render(&stats, &query(&["nope", "-1", "-1"])),
            "No such proxy.\n"
        );
        assert_eq!(
            render(&stats, &query(&["0", "-1", "-1"])),
            "No such proxy.\n"
        );
        assert_eq!(
            names(&["up"]),
            [
                "fe1/FRONTEND",
                "be1/s-up",
                "be1/s-bck",
                "be1/s-w0",
                "be1/BACKEND"
            ]
        );
        assert_eq!(names(&["no-maint"]).len(), 6);
        let backend = rows(&render(&stats, &query(&["up"])))
            .pop()
            .expect("BACKEND");
        assert_eq!(backend.2, "UP (3/5)");
        assert_eq!(
            parse_args(&["domain", "dns"]),
            Err("Invalid statistics domain.\n".into())
        );
        assert_eq!(query(&["domain", "proxy", "json"]).format, StatFormat::Json);
        assert_eq!(query(&["json", "typed"]).format, StatFormat::Typed);
        assert_eq!(query(&["typed", "json"]).format, StatFormat::Json);
        assert_eq!(atoi(" 42abc"), 42);
        assert_eq!(atoi("-1"), -1);
        assert_eq!(atoi("4294967297"), 1);
    }

    #[test]
    fn transitional_statuses() {
        let streak = |failures, passes, confirmed| {
            Some(CheckStreak {
                rise: 2,
                fall: 3,
                failures,
                passes,
                confirmed,
            })
        };
        let status = |status, s| {
            server_status(&MemberStats {
                check_streak: s,
                ..member("m", 1, status)
            })
            .text
        };
        assert_eq!(status("up", streak(0, 0, true)), "UP");
        assert_eq!(status("up", streak(1, 0, true)), "UP 2/3");
        assert_eq!(status("up", streak(2, 0, true)), "UP 1/3");
        assert_eq!(status("up", streak(0, 0, false)), "UP 1/3");
        assert_eq!(status("drain", streak(1, 0, true)), "DRAIN 2/3");
        assert_eq!(status("drain", streak(0, 0, true)), "DRAIN");
        assert_eq!(status("down", streak(3, 0, true)), "DOWN");
        assert_eq!(status("down", streak(3, 1, true)), "DOWN 1/2");
        assert_eq!(status("maint", streak(0, 0, true)), "MAINT");
        assert_eq!(status("no_check", None), "no check");
        assert_eq!(status("drain", None), "DRAIN");
    }

    #[test]
    fn ids_follow_haproxys_declaration_order() {
        // Octavia: frontend L1, backend P1:L1, frontend L2, backend P2:L2;
        // a `listen` (one name); a frontend with two binds; an unused pool.
        let s = stats(
            vec![
                listener("L1", "P1:L1", 10),
                listener("L2", "P2:L2", 20),
                listener("both", "both", 30),
                listener("two", "P1:L1", 40),
                listener("two.2", "P1:L1", 40),
            ],
            vec![
                pool("P1:L1", "least_connections", vec![member("a", 1, "up")]),
                pool("unused", "source_ip", vec![]),
                pool(
                    "P2:L2",
                    "round_robin",
                    vec![member("b", 2, "up"), member("c", 3, "down")],
                ),
                pool("both", "round_robin", vec![member("d", 4, "no_check")]),
            ],
        );
        let all = rows(&render(&s, &query(&[])));
        let ids: Vec<String> = all
            .iter()
            .map(|r| format!("{}/{}:{}.{}", r.0, r.1, r.3, r.4))
            .collect();
        assert_eq!(
            ids,
            [
                "L1/FRONTEND:2.0",
                "P1:L1/a:3.1",
                "P1:L1/BACKEND:3.0",
                "L2/FRONTEND:4.0",
                "P2:L2/b:5.1",
                "P2:L2/c:5.2",
                "P2:L2/BACKEND:5.0",
                "both/FRONTEND:6.0",
                "both/d:6.1",
                "both/BACKEND:6.0",
                "two/FRONTEND:7.0",
                "unused/BACKEND:8.0",
            ]
        );
        // fullconn: a tenth of the maxconn of the frontends using the pool.
        let p1 = render(&s, &query(&["P1:L1", "2", "-1"]));
        let line = p1.lines().nth(1).expect("BACKEND row");
        assert_eq!(line.split(',').nth(6), Some("5"), "{line}");
        assert!(line.contains(",tcp,leastconn,"), "{line}");
        // An empty pool is UP, as HAProxy's backend without servers.
        assert_eq!(all[11].2, "UP");
    }

    #[test]
    fn frontend_rows_sum_their_binds_and_show_full_and_stop() {
        let mut a = listener("two", "p", 2);
        a.current_sessions = 1;
        a.sessions_total = 5;
        a.bytes_in_total = 7;
        let mut b = listener("two.2", "p", 2);
        b.current_sessions = 1;
        b.sessions_total = 6;
        b.bytes_in_total = 8;
        let s = stats(vec![a, b], vec![pool("p", "round_robin", vec![])]);
        let csv = render(&s, &query(&["-1", "1", "-1"]));
        let f: Vec<&str> = csv.lines().nth(1).expect("row").split(',').collect();
        assert_eq!((f[4], f[7], f[8], f[17]), ("2", "11", "15", "FULL"));
        let mut s = s;
        for l in &mut s.listeners {
            l.status = "closed";
        }
        assert_eq!(rows(&render(&s, &query(&["-1", "1", "-1"])))[0].2, "STOP");
    }

    #[test]
    fn check_results_read_as_haproxy_statuses() {
        let result = |kind, passed, text: &str| {
            let r = check_result(
                kind,
                &CheckStats {
                    passed,
                    result: text.into(),
                    duration_seconds: 0.0,
                },
            );
            (r.status, r.code)
        };
        assert_eq!(result(Some("http"), true, "HTTP 200"), ("L7OK", Some(200)));
        assert_eq!(
            result(Some("http"), false, "HTTP 503"),
            ("L7STS", Some(503))
        );
        assert_eq!(
            result(Some("tcp"), false, "timeout after 1s"),
            ("L4TOUT", None)
        );
        assert_eq!(
            result(Some("http"), false, "timeout after 1s"),
            ("L7TOUT", None)
        );
        assert_eq!(
            result(Some("tls_hello"), true, "TLS handshake done"),
            ("L6OK", None)
        );
        assert_eq!(
            result(Some("external"), false, "external: exit 2: no"),
            ("PROCERR", Some(2))
        );
        assert_eq!(
            result(
                Some("tcp"),
                false,
                "read: Connection reset by peer (os error 104)"
            ),
            ("SOCKERR", None)
        );
    }

    #[test]
    fn text_is_ascii_and_quoted() {
        let mut s = oracle();
        s.pools[0].members[0].server = "caf\u{e9}, \"x\"\n".into();
        let csv = render(&s, &query(&[]));
        assert!(csv.is_ascii());
        assert!(csv.contains("\nbe1,\"caf?, \"\"x\"\"?\",0,"), "{csv}");
        let json = render(&s, &query(&["json"]));
        assert!(json.is_ascii());
        serde_json::from_str::<serde_json::Value>(&json).expect("valid JSON");
    }
}
