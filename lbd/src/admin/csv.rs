//! `/stats.csv`: one header line, then one line per listener, pool and
//! member, told apart by the `type` column (`listener`, `pool`, `member`).
//! Columns that do not apply to a type are empty.
//!
//! Fields are quoted as RFC 4180 says: a field holding `,`, `"`, CR or LF
//! is put in double quotes, inner quotes doubled. Lines end in LF (as
//! HAProxy's CSV does) so that shell tools see clean last fields.
//! Columns are only ever added at the end.

use std::fmt::Write;

use super::stats::{ListenerStats, MemberStats, PoolStats, Stats};

/// The header line, without its line end.
pub const HEADER: &str = "type,name,pool,bind,address,member_name,member_id,status,admin_state,\
weight,backup,algorithm,check_type,active_members,backup_members,\
current_sessions,max_sessions,session_limit,connections_total,sessions_total,session_rate,\
bytes_in_total,bytes_out_total,denied_total,limit_hits_total,no_member_total,\
connect_errors_total,retries_total,\
check_passed,check_result,check_duration_seconds,check_failures_total,down_transitions_total,\
seconds_since_change,\
queue_current,queue_max,queue_limit,queue_time_average_seconds,queue_time_max_seconds,\
queue_timeouts_total,queue_full_total,max_connections,current_weight";

/// Number of columns in [`HEADER`].
const COLUMNS: usize = 43;

/// One header line, then one line per listener, pool and member (a `type`
/// column: listener|pool|member), RFC 4180 quoting.
pub fn render(stats: &Stats) -> String {
    let members: usize = stats.pools.iter().map(|p| p.members.len()).sum();
    let mut out =
        String::with_capacity(256 * (1 + stats.listeners.len() + stats.pools.len() + members));
    out.push_str(HEADER);
    out.push('\n');
    for l in &stats.listeners {
        line(&mut out, &listener(l));
    }
    for p in &stats.pools {
        line(&mut out, &pool(p));
        for m in &p.members {
            line(&mut out, &member(p, m));
        }
    }
    out
}

/// One row, by column index.
type Row = [String; COLUMNS];

fn empty() -> Row {
    std::array::from_fn(|_| String::new())
}

fn listener(l: &ListenerStats) -> Row {
    let mut r = empty();
    r[0] = "listener".into();
    r[1] = l.name.clone();
    r[2] = l.pool.clone();
    r[3] = l.bind.clone();
    r[7] = l.status.into();
    r[15] = l.current_sessions.to_string();
    r[16] = l.max_sessions.to_string();
    r[17] = l.session_limit.to_string();
    r[18] = l.connections_total.to_string();
    r[19] = l.sessions_total.to_string();
    r[20] = decimal(l.session_rate);
    r[21] = l.bytes_in_total.to_string();
    r[22] = l.bytes_out_total.to_string();
    r[23] = l.denied_total.to_string();
    r[24] = l.limit_hits_total.to_string();
    r[25] = l.no_member_total.to_string();
    r
}

fn pool(p: &PoolStats) -> Row {
    let mut r = empty();
    r[0] = "pool".into();
    r[1] = p.name.clone();
    r[2] = p.name.clone();
    r[11] = p.algorithm.into();
    r[12] = p.check_type.unwrap_or_default().into();
    r[13] = p.active_members.to_string();
    r[14] = p.backup_members.to_string();
    r[15] = p.current_sessions.to_string();
    r[19] = p.sessions_total.to_string();
    r[21] = p.bytes_in_total.to_string();
    r[22] = p.bytes_out_total.to_string();
    r[26] = p.connect_errors_total.to_string();
    r[27] = p.retries_total.to_string();
    let q = &p.queue;
    r[34] = q.current.to_string();
    r[35] = q.max.to_string();
    r[36] = q.limit.map(|l| l.to_string()).unwrap_or_default();
    r[37] = decimal(q.time_average_seconds);
    r[38] = decimal(q.time_max_seconds);
    r[39] = q.timeouts_total.to_string();
    r[40] = q.full_total.to_string();
    r
}

fn member(p: &PoolStats, m: &MemberStats) -> Row {
    let mut r = empty();
    r[0] = "member".into();
    r[1] = m.server.clone();
    r[2] = p.name.clone();
    r[4] = m.address.clone();
    r[5] = m.name.clone().unwrap_or_default();
    r[6] = m.id.clone().unwrap_or_default();
    r[7] = m.status.into();
    r[8] = m.admin_state.into();
    r[9] = m.weight.to_string();
    r[10] = m.backup.to_string();
    r[15] = m.current_sessions.to_string();
    r[19] = m.sessions_total.to_string();
    r[21] = m.bytes_in_total.to_string();
    r[22] = m.bytes_out_total.to_string();
    r[26] = m.connect_errors_total.to_string();
    r[27] = m.retries_total.to_string();
    if let Some(c) = &m.last_check {
        r[28] = c.passed.to_string();
        r[29] = c.result.clone();
        // Microseconds: fast checks take well under a millisecond.
        r[30] = decimal_places(c.duration_seconds, 6);
    }
    r[31] = m.check_failures_total.to_string();
    r[32] = m.down_transitions_total.to_string();
    r[33] = decimal(m.seconds_since_change);
    r[41] = m.max_connections.map(|l| l.to_string()).unwrap_or_default();
    r[42] = m.current_weight.to_string();
    r
}

/// Three decimals, never `NaN`, `inf` or negative.
fn decimal(v: f64) -> String {
    decimal_places(v, 3)
}

fn decimal_places(v: f64, places: usize) -> String {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    format!("{v:.places$}")
}

fn line(out: &mut String, row: &Row) {
    for (i, field) in row.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field_into(out, field);
    }
    out.push('\n');
}

/// RFC 4180: quote when needed, double the quotes inside.
fn field_into(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        let _ = write!(out, "\"{}\"", field.replace('"', "\"\""));
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::page::sample;

    /// Splits one RFC 4180 line (no line breaks inside fields here).
    fn parse(line: &str) -> Vec<String> {
        let mut fields = vec![String::new()];
        let mut chars = line.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            let field = fields.last_mut().unwrap();
            match (quoted, c) {
                (false, '"') if field.is_empty() => quoted = true,
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (false, ',') => fields.push(String::new()),
                (_, c) => field.push(c),
            }
        }
        assert!(!quoted, "unterminated quote in {line}");
        fields
    }

    #[test]
    fn exact_header() {
        let csv = render(&sample());
        assert_eq!(
            csv.lines().next().unwrap(),
            "type,name,pool,bind,address,member_name,member_id,status,admin_state,weight,backup,\
             algorithm,check_type,active_members,backup_members,current_sessions,max_sessions,\
             session_limit,connections_total,sessions_total,session_rate,bytes_in_total,\
             bytes_out_total,denied_total,limit_hits_total,no_member_total,connect_errors_total,\
             retries_total,check_passed,check_result,check_duration_seconds,check_failures_total,\
             down_transitions_total,seconds_since_change,queue_current,queue_max,queue_limit,\
             queue_time_average_seconds,queue_time_max_seconds,queue_timeouts_total,\
             queue_full_total,max_connections,current_weight"
        );
        assert_eq!(HEADER.split(',').count(), COLUMNS);
    }

    #[test]
    fn one_line_per_listener_pool_and_member() {
        let stats = sample();
        let csv = render(&stats);
        assert!(csv.ends_with('\n') && !csv.contains('\r'));
        let lines: Vec<&str> = csv.lines().collect();
        let members: usize = stats.pools.iter().map(|p| p.members.len()).sum();
        assert_eq!(members, 8);
        assert_eq!(lines.len(), 1 + 2 + 2 + members);
        let types: Vec<String> = lines[1..].iter().map(|l| parse(l)[0].clone()).collect();
        assert_eq!(types.iter().filter(|t| *t == "listener").count(), 2);
        assert_eq!(types.iter().filter(|t| *t == "pool").count(), 2);
        assert_eq!(types.iter().filter(|t| *t == "member").count(), members);
        for l in &lines {
            assert_eq!(parse(l).len(), COLUMNS, "{l}");
        }
    }

    #[test]
    fn weird_name_is_quoted() {
        let csv = render(&sample());
        let line = csv
            .lines()
            .find(|l| l.contains("10.0.0.13:8080"))
            .expect("member line");
        assert!(line.starts_with(
            r#"member,"<script>alert(""x, y"")</script>",web,,10.0.0.13:8080,"<script>alert(""x, y"")</script>",,drain,drain,5,false,"#
        ), "{line}");
        let fields = parse(line);
        assert_eq!(fields[1], r#"<script>alert("x, y")</script>"#);
        assert_eq!(fields[5], fields[1]);
        assert_eq!(fields[7], "drain");
    }

    #[test]
    fn numeric_columns() {
        let stats = sample();
        let csv = render(&stats);
        let header = parse(csv.lines().next().unwrap());
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let find = |kind: &str, name: &str| {
            csv.lines()
                .map(parse)
                .find(|f| f[0] == kind && f[1] == name)
                .unwrap_or_else(|| panic!("{kind} {name}"))
        };
        let web = find("listener", "web");
        assert_eq!(web[col("bytes_out_total")], "7393952123");
        assert_eq!(web[col("session_rate")], "12.500");
        assert_eq!(web[col("denied_total")], "120");
        let pool = find("pool", "api");
        assert_eq!(
            pool[col("sessions_total")],
            stats.pools[1].sessions_total.to_string()
        );
        assert_eq!(pool[col("algorithm")], "least_connections");
        assert_eq!(pool[col("check_type")], "");
        let m = find("member", "web-2");
        assert_eq!(m[col("connect_errors_total")], "37");
        assert_eq!(m[col("check_passed")], "false");
        assert_eq!(m[col("check_result")], "connect refused");
        assert_eq!(m[col("check_duration_seconds")], "0.000400");
        assert_eq!(m[col("seconds_since_change")], "47.000");
        let m = find("member", "web-1");
        assert_eq!(m[col("member_id")], "6f0c2b1e-9d1a-4c55-8f0e-2d7b9f3a1c01");
        assert_eq!(m[col("check_duration_seconds")], "0.003000");
        assert_eq!(m[col("max_connections")], "17");
        assert_eq!(m[col("current_weight")], "4");
        let pool = find("pool", "web");
        assert_eq!(pool[col("queue_current")], "2");
        assert_eq!(pool[col("queue_max")], "9");
        assert_eq!(pool[col("queue_limit")], "50");
        assert_eq!(pool[col("queue_time_average_seconds")], "0.042");
        assert_eq!(pool[col("queue_timeouts_total")], "5");
        assert_eq!(find("pool", "api")[col("queue_limit")], "");
    }

    #[test]
    fn quoting() {
        let mut s = String::new();
        for f in ["plain", "a,b", "say \"hi\"", "two\nlines", "cr\r", ""] {
            field_into(&mut s, f);
            s.push('|');
        }
        assert_eq!(
            s,
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|\"cr\r\"||"
        );
        assert_eq!(decimal(f64::NAN), "0.000");
        assert_eq!(decimal(-1.0), "0.000");
    }
}
