//! The stats page: one self-contained HTML5 document (its CSS, kept in
//! `page.css`, is inlined at build time; no JavaScript, no external
//! resources) in the spirit of HAProxy's stats page.
//!
//! Everything that comes from the config or from health checks (names,
//! addresses, check results) is HTML-escaped. Member rows carry
//! `data-member="<address>"` and `data-state="<status>"`, their state cell
//! the class `state-<status>`, for scripts and tests.

use std::fmt::Write;

use super::stats::{CheckStats, ListenerStats, MemberStats, PoolStats, Stats, XdpStats};

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($($arg:tt)*) => {{
        let _ = write!($($arg)*);
    }};
}

/// The stats page. `refresh`: seconds for an auto-refresh
/// (`<meta http-equiv="refresh">`), None for none.
pub fn render(stats: &Stats, refresh: Option<u32>) -> String {
    let mut out = String::with_capacity(16 * 1024 + 2048 * stats.pools.len());
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    );
    if let Some(seconds) = refresh {
        w!(out, "<meta http-equiv=\"refresh\" content=\"{seconds}\">\n");
    }
    w!(out, "<title>lbd stats · pid {}</title>\n", stats.pid);
    out.push_str("<style>");
    out.push_str(CSS);
    out.push_str("</style>\n</head>\n<body>\n");
    header(&mut out, stats, refresh);
    out.push_str("<main>\n");
    if let Some(x) = &stats.xdp {
        xdp_section(&mut out, x);
    }
    listeners(&mut out, &stats.listeners);
    for pool in &stats.pools {
        pool_section(&mut out, pool);
    }
    if stats.pools.is_empty() {
        out.push_str(
            "<section><h2>Pools</h2><p class=\"empty\">No pools configured.</p></section>\n",
        );
    }
    out.push_str("</main>\n<footer>");
    w!(
        out,
        "lbd {} · pid {} · the same data as <a href=\"stats.json\">JSON</a>, \
         <a href=\"stats.csv\">CSV</a> and <a href=\"metrics\">Prometheus metrics</a>",
        esc(stats.version),
        stats.pid
    );
    out.push_str("</footer>\n</body>\n</html>\n");
    out
}

/// The XDP fast path: where it runs (or why not) and its counters.
fn xdp_section(out: &mut String, x: &XdpStats) {
    out.push_str("<section id=\"xdp\">\n<div class=\"head\"><h2>XDP fast path</h2></div>\n");
    w!(out, "<p>Listeners: {}.", esc(&x.listeners.join(", ")));
    if x.interfaces.is_empty() {
        out.push_str(" Not attached");
    } else {
        let attached: Vec<String> = x
            .interfaces
            .iter()
            .map(|i| format!("{} ({})", esc(&i.interface), i.mode))
            .collect();
        w!(out, " Attached to {}", attached.join(", "));
    }
    match &x.error {
        Some(e) => w!(
            out,
            "; <span class=\"state-down\">{}</span>: these listeners are served by the \
             userspace proxy.</p>\n",
            esc(e)
        ),
        None => out.push_str(".</p>\n"),
    }
    w!(
        out,
        "<p>{} packets, {} forwarded, {} flows balanced, {} in the flow table",
        x.packets_total,
        human_bytes(x.bytes_total),
        x.new_flows_total,
        x.flows
    );
    for d in x.drops_total.iter().filter(|d| d.packets > 0) {
        w!(out, "; {} dropped ({})", d.packets, esc(d.reason));
    }
    out.push_str(".</p>\n</section>\n");
}

fn header(out: &mut String, s: &Stats, refresh: Option<u32>) {
    out.push_str("<header class=\"top\">\n<div class=\"bar\">\n");
    w!(
        out,
        "<h1>lbd <span class=\"ver\">{}</span></h1>\n<nav>",
        esc(s.version)
    );
    match refresh {
        Some(seconds) => {
            w!(
                out,
                "<span class=\"live\">refreshing every {seconds} s</span>\
                 <a href=\"?\">stop refreshing</a>"
            );
        }
        None => out.push_str("<a href=\"?refresh=5\">refresh every 5 s</a>"),
    }
    out.push_str(
        "<a href=\"stats.json\">stats.json</a><a href=\"stats.csv\">stats.csv</a>\
         <a href=\"metrics\">metrics</a></nav>\n</div>\n<dl class=\"facts\">\n",
    );
    let fact = |out: &mut String, label: &str, value: &str, title: Option<String>| match title {
        Some(t) => w!(
            out,
            "<div><dt>{label}</dt><dd title=\"{}\">{value}</dd></div>\n",
            esc(&t)
        ),
        None => w!(out, "<div><dt>{label}</dt><dd>{value}</dd></div>\n"),
    };
    fact(
        out,
        "Connections",
        &s.current_connections.to_string(),
        Some("client connections open now, all listeners".into()),
    );
    fact(
        out,
        "Uptime",
        &human_duration(s.uptime_seconds),
        Some(format!("{:.0} s", s.uptime_seconds.max(0.0))),
    );
    fact(out, "PID", &s.pid.to_string(), None);
    fact(out, "Runtime", &esc(s.runtime), None);
    fact(out, "Workers", &s.workers.to_string(), None);
    fact(
        out,
        "Generation",
        &s.generation.to_string(),
        Some("config generation: 1 at start, +1 per applied reload".into()),
    );
    let reloads = if s.reload_failures_total > 0 {
        format!(
            "{} <span class=\"bad\">({} failed)</span>",
            s.reloads_total, s.reload_failures_total
        )
    } else {
        format!("{} <span class=\"dim\">(0 failed)</span>", s.reloads_total)
    };
    fact(out, "Reloads", &reloads, None);
    out.push_str("</dl>\n</header>\n");
}

fn listeners(out: &mut String, listeners: &[ListenerStats]) {
    out.push_str("<section id=\"listeners\">\n<div class=\"head\"><h2>Listeners</h2></div>\n");
    if listeners.is_empty() {
        out.push_str("<p class=\"empty\">No listeners configured.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<p class=\"hint\">Scroll the table sideways for all columns.</p>\n<div class=\"scroll\">\n<table class=\"listeners\">\n<thead>\n<tr>\
         <th rowspan=\"2\" class=\"first\">Name</th><th rowspan=\"2\">Bind</th>\
         <th rowspan=\"2\">Pool</th><th rowspan=\"2\">Status</th>\
         <th colspan=\"5\" class=\"group\">Sessions</th>\
         <th colspan=\"2\" class=\"group\">Bytes</th>\
         <th colspan=\"3\" class=\"group\">Refused / reset</th>\
         <th colspan=\"2\" class=\"group\">Hedged connects</th></tr>\n<tr>\
         <th class=\"num\">Cur</th><th class=\"num\">Max</th><th class=\"num\">Limit</th>\
         <th class=\"num\">Total</th><th class=\"num\">Rate</th>\
         <th class=\"num\">In</th><th class=\"num\">Out</th>\
         <th class=\"num\" title=\"refused by allowed_cidrs\">Denied</th>\
         <th class=\"num\" title=\"refused because connection_limit was reached\">Limit hits</th>\
         <th class=\"num\" title=\"reset: no usable member or every connect failed\">No member</th>\
         <th class=\"num\" title=\"connect_hedge: a second member's connect started\">Started</th>\
         <th class=\"num\" title=\"connect_hedge: the second member connected first\">Won</th>\
         </tr>\n</thead>\n<tbody>\n",
    );
    for l in listeners {
        let near_limit =
            l.session_limit > 0 && l.current_sessions * 10 >= u64::from(l.session_limit) * 9;
        w!(
            out,
            "<tr data-listener=\"{name}\">\
             <th scope=\"row\" class=\"first\">{name}</th>\
             <td class=\"mono\">{bind}</td>\
             <td><a href=\"#pool-{pool}\">{pool}</a></td>\
             <td class=\"lstate-{status}\"><span class=\"badge\">{status}</span></td>\
             <td class=\"num{cur_class}\">{cur}</td><td class=\"num\">{max}</td>\
             <td class=\"num\">{limit}</td><td class=\"num\">{total}</td>\
             <td class=\"num\" title=\"new sessions per second\">{rate}/s</td>",
            name = esc(&l.name),
            bind = esc(&l.bind),
            pool = esc(&l.pool),
            status = esc(l.status),
            cur_class = if near_limit { " warn" } else { "" },
            cur = l.current_sessions,
            max = l.max_sessions,
            limit = l.session_limit,
            total = l.sessions_total,
            rate = human_rate(l.session_rate),
        );
        bytes_cell(out, l.bytes_in_total);
        bytes_cell(out, l.bytes_out_total);
        count_cell(out, l.denied_total, "warn");
        count_cell(out, l.limit_hits_total, "warn");
        count_cell(out, l.no_member_total, "bad");
        count_cell(out, l.hedges_total, "warn");
        count_cell(out, l.hedges_won_total, "warn");
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</div>\n</section>\n");
}

fn pool_section(out: &mut String, p: &PoolStats) {
    let name = esc(&p.name);
    w!(
        out,
        "<section class=\"pool\" id=\"pool-{name}\" data-pool=\"{name}\">\n\
         <div class=\"head\"><h2><span class=\"kind\">Pool</span> {name}</h2>"
    );
    // Whether the pool can take connections at all, in words and colour.
    let (class, text) = match (p.active_members, p.backup_members) {
        (0, 0) => ("bad", "no usable member".to_owned()),
        (0, b) => ("warn", format!("on backup: {b} backup member{}", plural(b))),
        (a, _) => ("ok", format!("{a} active member{}", plural(a))),
    };
    w!(out, "<span class=\"pill {class}\">{text}</span></div>\n");

    out.push_str("<dl class=\"meta\">");
    w!(
        out,
        "<div><dt>Algorithm</dt><dd>{}</dd></div>",
        esc(p.algorithm)
    );
    match p.check_type {
        Some(kind) => w!(out, "<div><dt>Check</dt><dd>{}</dd></div>", esc(kind)),
        None => out.push_str("<div><dt>Check</dt><dd class=\"dim\">none</dd></div>"),
    }
    w!(
        out,
        "<div><dt>Active</dt><dd>{}</dd></div><div><dt>Backup</dt><dd>{}</dd></div>",
        p.active_members,
        p.backup_members
    );
    // Members per status, in a fixed order.
    let mut counts = String::new();
    for status in ["up", "down", "drain", "maint", "no_check"] {
        let n = p.members.iter().filter(|m| m.status == status).count();
        if n > 0 {
            if !counts.is_empty() {
                counts.push_str(", ");
            }
            w!(counts, "{n} {}", status_label(status));
        }
    }
    if counts.is_empty() {
        counts.push_str("none");
    }
    w!(
        out,
        "<div><dt>Members</dt><dd>{} ({counts})</dd></div>",
        p.members.len()
    );
    queue_meta(out, p);
    out.push_str("</dl>\n");

    if p.members.is_empty() {
        out.push_str("<p class=\"empty\">No members.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<p class=\"hint\">Scroll the table sideways for all columns.</p>\n<div class=\"scroll\">\n<table class=\"members\">\n<thead>\n<tr>\
         <th rowspan=\"2\" class=\"first\">Server</th><th rowspan=\"2\">State</th>\
         <th rowspan=\"2\" class=\"num\">Weight</th><th rowspan=\"2\">Backup</th>\
         <th rowspan=\"2\">Admin</th>\
         <th colspan=\"3\" class=\"group\">Sessions</th>\
         <th colspan=\"2\" class=\"group\">Errors</th>\
         <th colspan=\"2\" class=\"group\">Bytes</th>\
         <th colspan=\"3\" class=\"group\">Health</th>\
         <th rowspan=\"2\" class=\"num\" title=\"time since the state last changed\">Changed</th>\
         </tr>\n<tr>\
         <th class=\"num\">Cur</th><th class=\"num\">Total</th>\
         <th class=\"num\" title=\"established connections closed because the member went down or into maint (on_down / on_maint)\">Shut</th>\
         <th class=\"num\" title=\"failed connects\">Connect</th>\
         <th class=\"num\" title=\"connections that went to another member after failing here\">Retries</th>\
         <th class=\"num\">In</th><th class=\"num\">Out</th>\
         <th>Last check</th>\
         <th class=\"num\" title=\"failed health checks\">Failed</th>\
         <th class=\"num\" title=\"transitions from up to down\">Downs</th>\
         </tr>\n</thead>\n<tbody>\n",
    );
    for m in &p.members {
        member_row(out, m);
    }
    out.push_str("</tbody>\n<tfoot>\n<tr><th scope=\"row\" class=\"first\">Total</th>");
    out.push_str("<td></td><td></td><td></td><td></td>");
    w!(
        out,
        "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
        p.current_sessions,
        p.sessions_total
    );
    count_cell(out, p.sessions_shutdown_total, "warn");
    count_cell(out, p.connect_errors_total, "bad");
    count_cell(out, p.retries_total, "warn");
    bytes_cell(out, p.bytes_in_total);
    bytes_cell(out, p.bytes_out_total);
    out.push_str(
        "<td></td><td></td><td></td><td></td></tr>\n</tfoot>\n</table>\n</div>\n</section>\n",
    );
}

fn member_row(out: &mut String, m: &MemberStats) {
    let address = esc(&m.address);
    let status = esc(m.status);
    w!(
        out,
        "<tr data-member=\"{address}\" data-state=\"{status}\"{backup}>",
        backup = if m.backup { " class=\"backup\"" } else { "" },
    );
    // Server: the label, then the address and the configured name when they
    // say something the label does not.
    match &m.id {
        Some(id) => w!(
            out,
            "<th scope=\"row\" class=\"first server\" title=\"id {}\">",
            esc(id)
        ),
        None => out.push_str("<th scope=\"row\" class=\"first server\">"),
    }
    // An address does not break; a free-text name may, anywhere.
    let label_class = if m.server == m.address {
        "label mono nowrap"
    } else {
        "label"
    };
    w!(
        out,
        "<span class=\"{label_class}\">{}</span>",
        esc(&m.server)
    );
    if m.address != m.server {
        w!(out, "<span class=\"sub mono\">{address}</span>");
    }
    if let Some(name) = m.name.as_deref().filter(|n| *n != m.server) {
        w!(out, "<span class=\"sub\">name: {}</span>", esc(name));
    }
    out.push_str("</th>");
    w!(
        out,
        "<td class=\"state state-{status}\"><span class=\"badge\">{}</span></td>",
        status_label(m.status)
    );
    if m.current_weight != m.weight {
        w!(
            out,
            "<td class=\"num warn\" title=\"slow start: {} of {}\">{}/{}</td>",
            m.current_weight,
            m.weight,
            m.current_weight,
            m.weight
        );
    } else {
        w!(
            out,
            "<td class=\"num{}\">{}</td>",
            if m.weight == 0 { " dim" } else { "" },
            m.weight
        );
    }
    out.push_str(if m.backup {
        "<td><span class=\"tag\">backup</span></td>"
    } else {
        "<td class=\"dim\">no</td>"
    });
    w!(
        out,
        "<td class=\"admin-{a}\">{a}</td>",
        a = esc(m.admin_state)
    );
    match m.max_connections {
        Some(limit) => w!(
            out,
            "<td class=\"num{}\" title=\"max_connections {limit}\">{}/{limit}</td>",
            if m.current_sessions >= u64::from(limit) {
                " warn"
            } else {
                ""
            },
            m.current_sessions
        ),
        None => w!(out, "<td class=\"num\">{}</td>", m.current_sessions),
    }
    w!(out, "<td class=\"num\">{}</td>", m.sessions_total);
    count_cell(out, m.sessions_shutdown_total, "warn");
    count_cell(out, m.connect_errors_total, "bad");
    count_cell(out, m.retries_total, "warn");
    bytes_cell(out, m.bytes_in_total);
    bytes_cell(out, m.bytes_out_total);
    check_cell(out, m.last_check.as_ref());
    count_cell(out, m.check_failures_total, "warn");
    count_cell(out, m.down_transitions_total, "warn");
    w!(
        out,
        "<td class=\"num\" title=\"{:.0} s\">{}</td>",
        m.seconds_since_change.max(0.0),
        human_duration(m.seconds_since_change)
    );
    out.push_str("</tr>\n");
}

fn check_cell(out: &mut String, check: Option<&CheckStats>) {
    match check {
        None => out.push_str("<td class=\"check dim\">not checked</td>"),
        Some(c) => {
            let (class, mark) = if c.passed {
                ("check check-ok", "✓")
            } else {
                ("check check-fail", "✗")
            };
            w!(
                out,
                "<td class=\"{class}\"><span class=\"mark\" aria-hidden=\"true\">{mark}</span> \
                 {} <span class=\"took\">in {}</span></td>",
                esc(&c.result),
                human_check_duration(c.duration_seconds)
            );
        }
    }
}

/// A byte count, humanized, with the exact value in `title`.
fn bytes_cell(out: &mut String, n: u64) {
    w!(
        out,
        "<td class=\"num\" title=\"{n} bytes\">{}</td>",
        human_bytes(n)
    );
}

/// A counter of bad things: dimmed at 0, highlighted with `class` above.
/// The queue of clients waiting for a member slot, for pools whose members
/// have limits (or that ever queued).
fn queue_meta(out: &mut String, p: &PoolStats) {
    let q = &p.queue;
    let limited = p.members.iter().any(|m| m.max_connections.is_some());
    if !limited && q.max == 0 {
        return;
    }
    let limit = q
        .limit
        .map_or("no limit".to_owned(), |l| format!("max {l}"));
    w!(
        out,
        "<div><dt>Queue</dt><dd{}>{} waiting ({limit}; peak {}; avg wait {:.3} s, longest {:.3} s; \
         {} timed out, {} refused full)</dd></div>",
        if q.current > 0 { " class=\"warn\"" } else { "" },
        q.current,
        q.max,
        q.time_average_seconds,
        q.time_max_seconds,
        q.timeouts_total,
        q.full_total
    );
}

fn count_cell(out: &mut String, n: u64, class: &str) {
    if n == 0 {
        out.push_str("<td class=\"num dim\">0</td>");
    } else {
        w!(out, "<td class=\"num {class}\">{n}</td>");
    }
}

fn status_label(status: &str) -> &str {
    match status {
        "no_check" => "no check",
        other => other,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `512 B`, `1.2 KiB`, `3.4 MiB`... (IEC units, one decimal).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // 1023.95 would print as 1024.0 of the smaller unit.
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `42s`, `3m 12s`, `5h 07m`, `12d 3h`.
pub(crate) fn human_duration(seconds: f64) -> String {
    // `as` saturates: negative and NaN become 0.
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A health check's duration: `0.4 ms`, `3 ms`, `1.5 s`.
fn human_check_duration(seconds: f64) -> String {
    let ms = seconds.max(0.0) * 1000.0;
    if ms < 1.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// Sessions per second: `0`, `0.5`, `12`.
fn human_rate(rate: f64) -> String {
    let rate = rate.max(0.0);
    if rate == rate.trunc() || rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

/// Colours: every state badge pairs a tinted background with text of at
/// least 8:1 contrast (light and dark scheme), and spells the state out;
/// all other text is at least 4.5:1 (WCAG AA).
const CSS: &str = include_str!("page.css");

#[cfg(test)]
pub(crate) fn sample() -> Stats {
    fn member(
        server: &str,
        address: &str,
        name: Option<&str>,
        status: &'static str,
        admin_state: &'static str,
    ) -> MemberStats {
        MemberStats {
            server: server.into(),
            address: address.into(),
            name: name.map(Into::into),
            id: None,
            status,
            admin_state,
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
            last_check: None,
            check_failures_total: 0,
            down_transitions_total: 0,
            seconds_since_change: 0.0,
            check_streak: None,
            checks_paused: false,
        }
    }
    let check = |passed: bool, result: &str, duration_seconds: f64| {
        Some(CheckStats {
            passed,
            result: result.into(),
            duration_seconds,
        })
    };
    let web = vec![
        MemberStats {
            id: Some("6f0c2b1e-9d1a-4c55-8f0e-2d7b9f3a1c01".into()),
            weight: 10,
            current_weight: 4,
            max_connections: Some(17),
            current_sessions: 17,
            sessions_total: 48_213,
            bytes_in_total: 1_258_291,
            bytes_out_total: 7_340_032_123,
            datagrams_in_total: 0,
            datagrams_out_total: 0,
            last_check: check(true, "HTTP 200", 0.003),
            seconds_since_change: 192.4,
            ..member("web-1", "10.0.0.11:8080", Some("web-1"), "up", "ready")
        },
        MemberStats {
            weight: 10,
            current_weight: 10,
            sessions_total: 12_001,
            connect_errors_total: 37,
            retries_total: 37,
            bytes_in_total: 310_000,
            bytes_out_total: 2_900_000,
            datagrams_in_total: 0,
            datagrams_out_total: 0,
            last_check: check(false, "connect refused", 0.0004),
            check_failures_total: 112,
            down_transitions_total: 2,
            sessions_shutdown_total: 5,
            seconds_since_change: 47.0,
            ..member("web-2", "10.0.0.12:8080", Some("web-2"), "down", "ready")
        },
        MemberStats {
            weight: 5,
            current_weight: 5,
            current_sessions: 3,
            sessions_total: 9_870,
            bytes_in_total: 880_000,
            bytes_out_total: 51_000_000,
            datagrams_in_total: 0,
            datagrams_out_total: 0,
            last_check: check(true, "HTTP 204", 0.012),
            seconds_since_change: 3_725.0,
            ..member(
                r#"<script>alert("x, y")</script>"#,
                "10.0.0.13:8080",
                Some(r#"<script>alert("x, y")</script>"#),
                "drain",
                "drain",
            )
        },
        MemberStats {
            weight: 10,
            current_weight: 10,
            sessions_total: 4_410,
            bytes_in_total: 1_000,
            bytes_out_total: 20_000,
            check_failures_total: 3,
            down_transitions_total: 1,
            seconds_since_change: 200_000.0,
            ..member("web-4", "10.0.0.14:8080", Some("web-4"), "maint", "maint")
        },
        MemberStats {
            backup: true,
            last_check: check(false, "timeout after 1s", 1.0),
            check_failures_total: 5,
            seconds_since_change: 12.0,
            ..member("sorry", "10.0.0.99:8080", Some("sorry"), "down", "ready")
        },
    ];
    let api = vec![
        MemberStats {
            current_sessions: 41,
            sessions_total: 1_204_332,
            bytes_in_total: 88_123_456_789,
            bytes_out_total: 412_987_654_321,
            retries_total: 4,
            seconds_since_change: 864_000.0,
            ..member(
                "10.0.1.1:6443",
                "10.0.1.1:6443",
                Some("master"),
                "no_check",
                "ready",
            )
        },
        MemberStats {
            current_sessions: 39,
            sessions_total: 1_199_870,
            bytes_in_total: 87_000_000_000,
            bytes_out_total: 409_000_000_000,
            seconds_since_change: 864_000.0,
            ..member(
                "10.0.1.2:6443",
                "10.0.1.2:6443",
                Some("master"),
                "no_check",
                "ready",
            )
        },
        MemberStats {
            backup: true,
            weight: 1,
            seconds_since_change: 864_000.0,
            ..member("10.0.1.3:6443", "10.0.1.3:6443", None, "up", "ready")
        },
    ];
    let pool = |name: &str,
                algorithm: &'static str,
                check_type: Option<&'static str>,
                active_members: usize,
                backup_members: usize,
                members: Vec<MemberStats>| {
        PoolStats::with_totals(
            name.into(),
            algorithm,
            check_type,
            (active_members, backup_members),
            members,
        )
    };
    Stats {
        version: "0.1.0",
        pid: 4242,
        uptime_seconds: 93_784.6,
        runtime: "io_uring",
        workers: 2,
        generation: 4,
        reloads_total: 3,
        reload_failures_total: 1,
        current_connections: 100,
        xdp: Some(super::stats::XdpStats {
            listeners: vec!["web".into()],
            interfaces: vec![super::stats::XdpInterface {
                interface: "eth0".into(),
                mode: "generic",
            }],
            error: None,
            packets_total: 1234,
            bytes_total: 56_789,
            new_flows_total: 12,
            flows: 3,
            drops_total: Vec::new(),
        }),
        listeners: vec![
            ListenerStats {
                name: "web".into(),
                protocol: "tcp",
                bind: "0.0.0.0:80".into(),
                pool: "web".into(),
                status: "open",
                current_sessions: 20,
                max_sessions: 311,
                session_limit: 50_000,
                connections_total: 74_620,
                sessions_total: 74_494,
                session_rate: 12.5,
                bytes_in_total: 2_449_291,
                bytes_out_total: 7_393_952_123,
                denied_total: 120,
                limit_hits_total: 6,
                no_member_total: 3,
                local_errors_total: 0,
                hedges_total: 7,
                hedges_won_total: 5,
                datagrams_in_total: 0,
                datagrams_out_total: 0,
                datagrams_dropped_total: 0,
            },
            ListenerStats {
                name: "kube-apiserver".into(),
                protocol: "tcp",
                bind: "[::]:6443".into(),
                pool: "api".into(),
                status: "closed",
                current_sessions: 80,
                max_sessions: 95,
                session_limit: 100,
                connections_total: 2_404_202,
                sessions_total: 2_404_202,
                session_rate: 0.4,
                bytes_in_total: 175_123_456_789,
                bytes_out_total: 821_987_654_321,
                denied_total: 0,
                limit_hits_total: 0,
                no_member_total: 0,
                local_errors_total: 0,
                hedges_total: 0,
                hedges_won_total: 0,
                datagrams_in_total: 0,
                datagrams_out_total: 0,
                datagrams_dropped_total: 0,
            },
        ],
        pools: vec![
            super::stats::PoolStats {
                queue: super::stats::QueueStats {
                    current: 2,
                    max: 9,
                    limit: Some(50),
                    time_average_seconds: 0.042,
                    time_max_seconds: 1.3,
                    timeouts_total: 5,
                    full_total: 0,
                },
                ..pool("web", "round_robin", Some("http"), 1, 0, web)
            },
            pool("api", "least_connections", None, 2, 1, api),
        ],
        has_cli: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const WEIRD: &str = r#"<script>alert("x, y")</script>"#;

    #[test]
    fn limits_slow_start_and_the_queue_are_shown() {
        let page = render(&sample(), None);
        assert!(
            page.contains("title=\"max_connections 17\">17/17</td>"),
            "{page}"
        );
        assert!(page.contains("title=\"slow start: 4 of 10\">4/10</td>"));
        assert!(page.contains("<dt>Queue</dt><dd class=\"warn\">2 waiting (max 50; peak 9;"));
        assert_eq!(
            page.matches("<dt>Queue</dt>").count(),
            1,
            "only where members have limits"
        );
    }

    #[test]
    fn every_member_row_with_its_state() {
        let stats = sample();
        let page = render(&stats, None);
        let mut seen = 0;
        for pool in &stats.pools {
            assert!(page.contains(&format!("id=\"pool-{}\"", pool.name)));
            for m in &pool.members {
                let row = format!(
                    "<tr data-member=\"{}\" data-state=\"{}\"",
                    m.address, m.status
                );
                assert_eq!(page.matches(&row).count(), 1, "{row}");
                assert!(page.contains(&format!("class=\"state state-{}\"", m.status)));
                seen += 1;
            }
        }
        for status in ["up", "down", "drain", "maint", "no_check"] {
            assert!(
                page.contains(&format!("data-state=\"{status}\"")),
                "{status}"
            );
        }
        assert_eq!(page.matches("<tr data-member=").count(), seen);
        for l in &stats.listeners {
            assert!(page.contains(&format!("<tr data-listener=\"{}\">", l.name)));
        }
    }

    #[test]
    fn header_and_links() {
        let page = render(&sample(), None);
        for needle in [
            "<!DOCTYPE html>",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "lbd <span class=\"ver\">0.1.0</span>",
            "<dd>4242</dd>",
            "<dd>io_uring</dd>",
            "1d 2h",
            "3 <span class=\"bad\">(1 failed)</span>",
            "href=\"?refresh=5\"",
            "href=\"stats.json\"",
            "href=\"stats.csv\"",
            "href=\"metrics\"",
            // Humanized, exact in the title.
            "<td class=\"num\" title=\"1258291 bytes\">1.2 MiB</td>",
            "HTTP 200 <span class=\"took\">in 3 ms</span>",
            "<td class=\"num\" title=\"192 s\">3m 12s</td>",
            "check-fail",
        ] {
            assert!(page.contains(needle), "missing {needle:?}");
        }
    }

    #[test]
    fn refresh_meta_only_when_asked() {
        let stats = sample();
        let without = render(&stats, None);
        assert!(!without.contains("http-equiv"));
        assert!(!without.contains("stop refreshing"));
        let with = render(&stats, Some(5));
        assert_eq!(
            with.matches("<meta http-equiv=\"refresh\" content=\"5\">")
                .count(),
            1
        );
        assert!(with.contains("<a href=\"?\">stop refreshing</a>"));
        assert!(render(&stats, Some(30)).contains("content=\"30\""));
    }

    #[test]
    fn everything_is_escaped_and_there_is_no_script() {
        let page = render(&sample(), Some(5));
        assert!(!page.contains(WEIRD));
        assert!(!page.to_ascii_lowercase().contains("<script"));
        assert!(page.contains("&lt;script&gt;alert(&quot;x, y&quot;)&lt;/script&gt;"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("src=") && !page.contains("@import") && !page.contains("url("));
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    /// Every element closed in order, except the void ones.
    #[test]
    fn structure_is_balanced() {
        let page = render(&sample(), Some(5));
        assert_eq!(
            page.matches("<table").count(),
            page.matches("</table>").count()
        );
        assert_eq!(page.matches("<table").count(), 3);
        let mut stack: Vec<String> = Vec::new();
        let mut rest = page.strip_prefix("<!DOCTYPE html>\n").expect("doctype");
        // The stylesheet is raw text; take it out.
        let (before, after) = rest.split_once("<style>").expect("style");
        let (_, after) = after.split_once("</style>").expect("/style");
        let joined = format!("{before}<style></style>{after}");
        rest = &joined;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().unwrap_or_else(|| panic!("stray </{name}>"));
                assert_eq!(open, name, "</{name}> closes <{open}>");
                continue;
            }
            let name = tag
                .split(|c: char| c.is_ascii_whitespace())
                .next()
                .unwrap()
                .to_owned();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad tag {tag}"
            );
            if !matches!(
                name.as_str(),
                "meta" | "br" | "link" | "hr" | "img" | "input"
            ) {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn humanizing() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1_258_291), "1.2 MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(human_duration(-1.0), "0s");
        assert_eq!(human_duration(f64::NAN), "0s");
        assert_eq!(human_duration(42.9), "42s");
        assert_eq!(human_duration(192.0), "3m 12s");
        assert_eq!(human_duration(3_725.0), "1h 02m");
        assert_eq!(human_duration(93_784.0), "1d 2h");
        assert_eq!(human_check_duration(0.003), "3 ms");
        assert_eq!(human_check_duration(0.0004), "0.4 ms");
        assert_eq!(human_check_duration(1.5), "1.5 s");
        assert_eq!(human_rate(0.0), "0");
        assert_eq!(human_rate(0.4), "0.4");
        assert_eq!(human_rate(12.5), "12");
        assert_eq!(human_rate(3.0), "3");
    }

    // --- Headless Chromium --------------------------------------------------

    const CHROMIUM: &str = "/usr/bin/chromium";
    const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);
    /// Viewport widths of small phones and of a common one.
    const PHONE_WIDTHS: [u32; 2] = [320, 390];

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!(
                "lbd-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir(&path).expect("create temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs Chromium headless on `page` with `extra` arguments and a fresh
    /// profile; returns stdout. Chromium and its helpers run in their own
    /// process group, killed as a whole on timeout.
    fn chromium(dir: &Path, page: &Path, extra: &[String]) -> String {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let profile = TempDir::new("chromium-profile");
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-crash-reporter",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let pgid = child.id() as libc::pid_t;
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + CHROMIUM_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for chromium") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Helpers (zygote, renderer) may outlive the browser process; the
        // group holds only what this call started.
        // SAFETY: kill(2) on a process group this test created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let status = match status {
            Some(status) => status,
            None => {
                let _ = child.wait();
                panic!(
                    "chromium {extra:?} took more than {CHROMIUM_TIMEOUT:?}; stderr:\n{}",
                    err.join().unwrap_or_default()
                );
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        assert!(
            status.success(),
            "chromium {extra:?}: {status}; stderr:\n{stderr}"
        );
        stdout
    }

    fn chromium_available() -> bool {
        if Path::new(CHROMIUM).exists() {
            return true;
        }
        let message = "chromium missing: install Debian package chromium (scripts/test does)";
        assert!(
            std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_none(),
            "{message}"
        );
        eprintln!("skipping the headless Chromium check: {message}");
        false
    }

    /// Renders the page in headless Chromium: the DOM it builds has every
    /// member row and state, and screenshots at desktop and phone sizes are
    /// real images. With `LBD_STATS_SHOTS=<dir>` the page and screenshots
    /// are copied there to look at.
    #[test]
    fn renders_in_headless_chromium() {
        if !chromium_available() {
            return;
        }
        let stats = sample();
        let dir = TempDir::new("stats-page");
        let page = dir.0.join("stats.html");
        std::fs::write(&page, render(&stats, None)).expect("write page");

        // A test-only probe page (the stats page itself has no script): the
        // page in iframes of phone widths, each reporting whether its
        // document is wider than its viewport.
        let probe = dir.0.join("probe.html");
        let mut frames = String::new();
        for width in PHONE_WIDTHS {
            frames.push_str(&format!(
                "<iframe style=\"border:0;width:{width}px;height:844px\" srcdoc=\"{}\"></iframe>",
                esc(&render(&stats, None))
            ));
        }
        std::fs::write(
            &probe,
            format!(
                "<!DOCTYPE html><html><body style=\"margin:0\">{frames}<script>\
                 addEventListener('load', () => document.body.setAttribute('data-probe', \
                 [...document.querySelectorAll('iframe')].map(f => {{ \
                 const d = f.contentDocument.documentElement; \
                 return d.scrollWidth + '/' + d.clientWidth; }}).join(' ')));\
                 </script></body></html>"
            ),
        )
        .expect("write probe");

        let shots = [("desktop", "1280,900"), ("phone", "390,844")];
        let (dom, probed) = std::thread::scope(|s| {
            let dom = s.spawn(|| chromium(&dir.0, &page, &["--dump-dom".to_owned()]));
            let probed = s.spawn(|| {
                let args = ["--dump-dom".to_owned(), "--window-size=1280,900".to_owned()];
                chromium(&dir.0, &probe, &args)
            });
            for (label, size) in shots {
                let png = dir.0.join(format!("stats-{label}.png"));
                let args = [
                    format!("--screenshot={}", png.display()),
                    format!("--window-size={size}"),
                    "--hide-scrollbars".to_owned(),
                ];
                chromium(&dir.0, &page, &args);
                let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{label} png: {e}"));
                assert!(
                    bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                    "{label}: not a PNG"
                );
                assert!(bytes.len() > 20_000, "{label}: only {} bytes", bytes.len());
            }
            (
                dom.join().expect("dump-dom thread"),
                probed.join().expect("probe thread"),
            )
        });

        // No page-wide horizontal scroll on a phone: tables scroll inside
        // their own container.
        let widths = probed
            .split("data-probe=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no probe result in:\n{probed}"));
        let widths: Vec<(u32, u32)> = widths
            .split(' ')
            .map(|pair| {
                let (scroll, client) = pair.split_once('/').expect("scroll/client");
                (
                    scroll.parse().expect("scroll"),
                    client.parse().expect("client"),
                )
            })
            .collect();
        assert_eq!(widths.len(), PHONE_WIDTHS.len());
        for (width, (scroll, client)) in PHONE_WIDTHS.iter().zip(widths) {
            assert!(client > 0 && client <= *width, "{width}px: client {client}");
            assert!(
                scroll <= client,
                "{width}px wide: the page scrolls sideways ({scroll}px of content)"
            );
        }

        assert!(dom.contains("<table"), "no table in the DOM:\n{dom}");
        for pool in &stats.pools {
            for m in &pool.members {
                let row = format!(
                    "<tr data-member=\"{}\" data-state=\"{}\"",
                    m.address, m.status
                );
                assert!(dom.contains(&row), "{row} missing from the DOM");
            }
        }
        for status in ["up", "down", "drain", "maint", "no_check"] {
            assert!(dom.contains(&format!("state-{status}")), "{status}");
        }
        assert!(!dom.to_ascii_lowercase().contains("<script"));
        assert!(dom.contains("&lt;script&gt;"));

        if let Some(keep) = std::env::var_os("LBD_STATS_SHOTS") {
            let keep = PathBuf::from(keep);
            std::fs::create_dir_all(&keep).expect("LBD_STATS_SHOTS dir");
            for file in ["stats.html", "stats-desktop.png", "stats-phone.png"] {
                std::fs::copy(dir.0.join(file), keep.join(file)).expect("copy");
            }
            std::fs::write(keep.join("stats.dom.html"), &dom).expect("write dom");
        }
    }
}
