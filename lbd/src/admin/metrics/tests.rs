//! Tests of `/metrics` rendering, on a fixed [`Stats`] fixture.

use std::io::Write;
use std::process::{Command, Stdio};

use super::super::stats::{CheckStats, ListenerStats, MemberStats, PoolStats, QueueStats};
use super::catalog::{self, ADMIN_STATES, SERVER_STATES};
use super::*;

const WEIRD: &str = "we\"ird\\name\nline\r\t é";

fn listener(name: &str, pool: &str, status: &'static str) -> ListenerStats {
    ListenerStats {
        name: name.to_owned(),
        protocol: "tcp",
        bind: "0.0.0.0:80".to_owned(),
        pool: pool.to_owned(),
        status,
        current_sessions: 7,
        max_sessions: 42,
        session_limit: 50_000,
        connections_total: 1000,
        sessions_total: 990,
        session_rate: 12.5,
        bytes_in_total: 1234,
        bytes_out_total: 5678,
        denied_total: 4,
        limit_hits_total: 6,
        no_member_total: 3,
        local_errors_total: 0,
        hedges_total: 7,
        hedges_won_total: 5,
        datagrams_in_total: 0,
        datagrams_out_total: 0,
        datagrams_dropped_total: 0,
    }
}

fn member(server: &str, status: &'static str, admin_state: &'static str) -> MemberStats {
    MemberStats {
        server: server.to_owned(),
        address: format!("10.0.0.{}:8080", server.len()),
        name: Some(server.to_owned()),
        id: None,
        status,
        admin_state,
        weight: 10,
        current_weight: 10,
        backup: false,
        max_connections: None,
        current_sessions: 2,
        sessions_total: 100,
        connect_errors_total: 5,
        retries_total: 4,
        sessions_shutdown_total: 0,
        bytes_in_total: 300,
        bytes_out_total: 900,
        datagrams_in_total: 0,
        datagrams_out_total: 0,
        last_check: None,
        check_failures_total: 0,
        down_transitions_total: 0,
        seconds_since_change: 61.5,
        check_streak: None,
        checks_paused: false,
    }
}

/// 2 listeners, 2 pools, members in every status, one with a weird name.
fn fixture() -> Stats {
    let checked = |mut m: MemberStats, passed: bool| {
        m.last_check = Some(CheckStats {
            passed,
            result: if passed {
                "HTTP 200"
            } else {
                "connect refused"
            }
            .to_owned(),
            duration_seconds: 0.004,
        });
        m
    };
    let mut up = checked(member("app-1", "up", "ready"), true);
    up.id = Some("5a1e6c1d-uuid".to_owned());
    // At its limit, and ramping up in slow start.
    up.max_connections = Some(2);
    up.current_weight = 4;
    let mut down = checked(member("app-2", "down", "ready"), false);
    down.check_failures_total = 9;
    down.down_transitions_total = 2;
    down.sessions_shutdown_total = 3;
    let drain = checked(member("app-3", "drain", "drain"), true);
    let maint = member("app-4", "maint", "maint");
    let mut backup = checked(member("app-5", "up", "ready"), true);
    backup.backup = true;
    let web = PoolStats {
        name: "web_pool".to_owned(),
        algorithm: "round_robin",
        check_type: Some("http"),
        active_members: 1,
        backup_members: 1,
        current_sessions: 10,
        sessions_total: 500,
        bytes_in_total: 1500,
        bytes_out_total: 4500,
        connect_errors_total: 25,
        retries_total: 20,
        sessions_shutdown_total: 3,
        queue: QueueStats {
            current: 3,
            max: 7,
            limit: Some(100),
            time_average_seconds: 0.25,
            time_max_seconds: 1.5,
            timeouts_total: 4,
            full_total: 1,
        },
        members: vec![up, down, drain, maint, backup],
    };
    let mut weird = member(WEIRD, "no_check", "ready");
    weird.address = "[2001:db8::1]:443".to_owned();
    let api = PoolStats {
        name: "api".to_owned(),
        algorithm: "least_connections",
        check_type: None,
        active_members: 2,
        backup_members: 0,
        current_sessions: 4,
        sessions_total: 200,
        bytes_in_total: 600,
        bytes_out_total: 1800,
        connect_errors_total: 10,
        retries_total: 8,
        sessions_shutdown_total: 0,
        queue: QueueStats::default(),
        members: vec![member("10.0.0.9:6443", "no_check", "ready"), weird],
    };
    let dead = PoolStats {
        name: "dead".to_owned(),
        algorithm: "source_ip",
        check_type: Some("tcp"),
        active_members: 0,
        backup_members: 0,
        current_sessions: 0,
        sessions_total: 0,
        bytes_in_total: 0,
        bytes_out_total: 0,
        connect_errors_total: 0,
        retries_total: 0,
        sessions_shutdown_total: 0,
        queue: QueueStats::default(),
        members: vec![checked(member("gone", "down", "ready"), false)],
    };
    let mut closed = listener("api", "api", "closed");
    closed.connections_total = 77;
    closed.sessions_total = 70;
    closed.session_rate = 0.0;
    Stats {
        version: "0.1.0",
        pid: 4242,
        uptime_seconds: 3600.25,
        runtime: "io_uring",
        workers: 2,
        generation: 3,
        reloads_total: 2,
        reload_failures_total: 1,
        current_connections: 11,
        xdp: Some(super::super::stats::XdpStats {
            listeners: vec!["web".into()],
            interfaces: vec![super::super::stats::XdpInterface {
                interface: "eth0".into(),
                mode: "native",
            }],
            error: None,
            packets_total: 10,
            bytes_total: 1000,
            new_flows_total: 2,
            flows: 1,
            drops_total: vec![super::super::stats::XdpDrop {
                reason: "no_member",
                packets: 3,
            }],
        }),
        listeners: vec![listener("web", "web_pool", "open"), closed],
        pools: vec![web, api, dead],
        has_cli: false,
    }
}

fn empty() -> Stats {
    Stats {
        listeners: Vec::new(),
        pools: Vec::new(),
        ..fixture()
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[track_caller]
fn assert_line(text: &str, line: &str) {
    assert!(
        lines(text).contains(&line),
        "missing line {line:?} in:\n{text}"
    );
}

#[track_caller]
fn assert_no_line_starting(text: &str, prefix: &str) {
    assert!(
        !text.lines().any(|l| l.starts_with(prefix)),
        "unexpected {prefix:?} in:\n{text}"
    );
}

#[test]
fn exact_series() {
    let text = render(&fixture());
    for line in [
        r#"lbd_info{version="0.1.0",runtime="io_uring"} 1"#,
        "lbd_uptime_seconds 3600.25",
        "lbd_workers 2",
        "lbd_config_generation 3",
        "lbd_reloads_total 2",
        "lbd_reload_failures_total 1",
        "lbd_current_connections 11",
        r#"haproxy_frontend_bytes_in_total{proxy="web"} 1234"#,
        r#"haproxy_frontend_bytes_out_total{proxy="web"} 5678"#,
        r#"haproxy_frontend_current_sessions{proxy="web"} 7"#,
        r#"haproxy_frontend_max_sessions{proxy="web"} 42"#,
        r#"haproxy_frontend_limit_sessions{proxy="web"} 50000"#,
        r#"haproxy_frontend_sessions_total{proxy="web"} 990"#,
        r#"haproxy_frontend_connections_total{proxy="web"} 1000"#,
        r#"haproxy_frontend_sessions_total{proxy="api"} 70"#,
        r#"haproxy_frontend_connections_total{proxy="api"} 77"#,
        r#"haproxy_frontend_current_session_rate{proxy="api"} 0"#,
        r#"haproxy_frontend_current_session_rate{proxy="web"} 12.5"#,
        r#"haproxy_frontend_denied_connections_total{proxy="web"} 4"#,
        r#"lbd_frontend_limit_hits_total{proxy="web"} 6"#,
        r#"lbd_frontend_no_member_total{proxy="web"} 3"#,
        r#"lbd_frontend_info{proxy="web",bind="0.0.0.0:80",pool="web_pool"} 1"#,
        r#"haproxy_frontend_status{proxy="web",state="DOWN"} 0"#,
        r#"haproxy_frontend_status{proxy="web",state="UP"} 1"#,
        r#"haproxy_frontend_status{proxy="api",state="DOWN"} 1"#,
        r#"haproxy_frontend_status{proxy="api",state="UP"} 0"#,
        r#"haproxy_backend_status{proxy="web_pool",state="UP"} 1"#,
        r#"haproxy_backend_status{proxy="dead",state="DOWN"} 1"#,
        r#"haproxy_backend_status{proxy="dead",state="UP"} 0"#,
        r#"haproxy_backend_active_servers{proxy="web_pool"} 1"#,
        r#"haproxy_backend_backup_servers{proxy="web_pool"} 1"#,
        r#"haproxy_backend_agg_server_status{proxy="web_pool",state="UP"} 2"#,
        r#"haproxy_backend_agg_server_status{proxy="web_pool",state="DOWN"} 1"#,
        r#"haproxy_backend_agg_server_status{proxy="web_pool",state="NOLB"} 0"#,
        r#"haproxy_backend_agg_server_status{proxy="api",state="UP"} 2"#,
        r#"haproxy_backend_current_sessions{proxy="web_pool"} 10"#,
        r#"haproxy_backend_sessions_total{proxy="web_pool"} 500"#,
        r#"haproxy_backend_bytes_in_total{proxy="web_pool"} 1500"#,
        r#"haproxy_backend_bytes_out_total{proxy="web_pool"} 4500"#,
        r#"haproxy_backend_connection_errors_total{proxy="web_pool"} 25"#,
        r#"haproxy_backend_retry_warnings_total{proxy="web_pool"} 20"#,
        r#"haproxy_backend_redispatch_warnings_total{proxy="web_pool"} 20"#,
        r#"lbd_backend_info{proxy="web_pool",algorithm="round_robin",check="http"} 1"#,
        r#"lbd_backend_info{proxy="api",algorithm="least_connections",check="none"} 1"#,
        r#"haproxy_server_current_sessions{proxy="web_pool",server="app-1"} 2"#,
        r#"haproxy_server_sessions_total{proxy="web_pool",server="app-1"} 100"#,
        r#"haproxy_server_bytes_in_total{proxy="web_pool",server="app-1"} 300"#,
        r#"haproxy_server_bytes_out_total{proxy="web_pool",server="app-1"} 900"#,
        r#"haproxy_server_connection_errors_total{proxy="web_pool",server="app-1"} 5"#,
        r#"haproxy_server_retry_warnings_total{proxy="web_pool",server="app-1"} 4"#,
        r#"haproxy_server_check_failures_total{proxy="web_pool",server="app-2"} 9"#,
        r#"haproxy_server_check_up_down_total{proxy="web_pool",server="app-2"} 2"#,
        r#"haproxy_server_check_last_change_seconds{proxy="web_pool",server="app-2"} 61.5"#,
        r#"haproxy_server_check_duration_seconds{proxy="web_pool",server="app-1"} 0.004"#,
        r#"haproxy_server_weight{proxy="web_pool",server="app-1"} 4"#,
        r#"haproxy_server_uweight{proxy="web_pool",server="app-1"} 10"#,
        r#"haproxy_server_limit_sessions{proxy="web_pool",server="app-1"} 2"#,
        r#"haproxy_backend_current_queue{proxy="web_pool"} 3"#,
        r#"haproxy_backend_max_queue{proxy="web_pool"} 7"#,
        r#"haproxy_backend_current_queue{proxy="api"} 0"#,
        r#"haproxy_backend_queue_time_average_seconds{proxy="web_pool"} 0.25"#,
        r#"haproxy_backend_max_queue_time_seconds{proxy="web_pool"} 1.5"#,
        r#"lbd_backend_queue_timeouts_total{proxy="web_pool"} 4"#,
        r#"lbd_backend_queue_full_total{proxy="web_pool"} 1"#,
        r#"haproxy_server_weight{proxy="web_pool",server="app-3"} 0"#,
        r#"haproxy_server_weight{proxy="web_pool",server="app-4"} 0"#,
        r#"haproxy_server_uweight{proxy="web_pool",server="app-3"} 10"#,
        r#"haproxy_server_active{proxy="web_pool",server="app-1"} 1"#,
        r#"haproxy_server_active{proxy="web_pool",server="app-5"} 0"#,
        r#"haproxy_server_backup{proxy="web_pool",server="app-5"} 1"#,
        r#"lbd_server_check_passed{proxy="web_pool",server="app-1"} 1"#,
        r#"lbd_server_check_passed{proxy="web_pool",server="app-2"} 0"#,
        r#"lbd_server_info{proxy="web_pool",server="app-1",address="10.0.0.5:8080",id="5a1e6c1d-uuid"} 1"#,
        r#"lbd_server_info{proxy="web_pool",server="app-2",address="10.0.0.5:8080",id=""} 1"#,
    ] {
        assert_line(&text, line);
    }
    // Only members checked at least once have check results.
    assert_no_line_starting(
        &text,
        r#"haproxy_server_check_duration_seconds{proxy="web_pool",server="app-4"}"#,
    );
    assert_no_line_starting(&text, r#"lbd_server_check_passed{proxy="api""#);
    // Only members with max_connections have a session limit.
    assert_no_line_starting(
        &text,
        r#"haproxy_server_limit_sessions{proxy="web_pool",server="app-2"}"#,
    );
}

#[test]
fn server_status_is_one_hot_like_haproxy() {
    let text = render(&fixture());
    let expect = [
        ("web_pool", "app-1", "UP"),
        ("web_pool", "app-2", "DOWN"),
        ("web_pool", "app-3", "DRAIN"),
        ("web_pool", "app-4", "MAINT"),
        ("web_pool", "app-5", "UP"),
        ("api", "10.0.0.9:6443", "UP"),
        ("dead", "gone", "DOWN"),
    ];
    for (pool, server, current) in expect {
        for &state in SERVER_STATES {
            let value = u8::from(state == current);
            assert_line(
                &text,
                &format!(
                    r#"haproxy_server_status{{proxy="{pool}",server="{server}",state="{state}"}} {value}"#
                ),
            );
        }
    }
    for (server, current) in [("app-1", "ready"), ("app-3", "drain"), ("app-4", "maint")] {
        for &state in ADMIN_STATES {
            let value = u8::from(state == current);
            assert_line(
                &text,
                &format!(
                    r#"lbd_server_admin_state{{proxy="web_pool",server="{server}",state="{state}"}} {value}"#
                ),
            );
        }
    }
}

#[test]
fn types_help_and_order_follow_the_table() {
    let text = render(&fixture());
    let types: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let expected: Vec<(&str, &str)> = metrics().map(|m| (m.name, m.kind.name())).collect();
    assert_eq!(types, expected, "every family, in metrics() order");
    for info in metrics() {
        assert!(!info.help.is_empty(), "{}", info.name);
        assert_line(&text, &format!("# HELP {} {}", info.name, info.help));
        assert_eq!(
            info.kind == Kind::Counter,
            info.name.ends_with("_total"),
            "{}: counters and only counters end in _total",
            info.name
        );
        assert!(
            info.haproxy() || info.name.starts_with("lbd_"),
            "{}",
            info.name
        );
        // Every series carries exactly the documented labels, in order.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = line.strip_prefix(info.name) else {
                continue;
            };
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                continue; // a longer name sharing the prefix
            }
            let names: Vec<&str> = info
                .labels
                .iter()
                .copied()
                .filter(|label| rest.contains(&format!("{label}=\"")))
                .collect();
            assert_eq!(names, info.labels, "{line}");
        }
    }
    assert_line(&text, "# TYPE haproxy_frontend_bytes_in_total counter");
    assert_line(&text, "# TYPE haproxy_server_status gauge");
    assert_line(&text, "# TYPE haproxy_backend_sessions_total counter");
    assert_line(&text, "# TYPE haproxy_frontend_current_sessions gauge");
}

#[test]
fn odd_member_names_are_escaped() {
    let text = render(&fixture());
    let escaped = r#"we\"ird\\name\nline"#;
    assert_line(
        &text,
        &format!(
            "haproxy_server_status{{proxy=\"api\",server=\"{escaped}\r\t é\",state=\"UP\"}} 1"
        ),
    );
    assert_line(
        &text,
        &format!(
            "lbd_server_info{{proxy=\"api\",server=\"{escaped}\r\t é\",address=\"[2001:db8::1]:443\",id=\"\"}} 1"
        ),
    );
    // Every physical line is a comment or a sample: no raw newline leaked.
    for line in text.lines() {
        assert!(
            line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || line.starts_with("haproxy_")
                || line.starts_with("lbd_"),
            "{line:?}"
        );
    }
}

#[test]
fn repeated_labels_keep_the_first_series() {
    let mut stats = fixture();
    let twin = stats.pools[0].members[0].clone();
    stats.pools[0].members.push(MemberStats {
        sessions_total: 999_999,
        ..twin
    });
    let text = render(&stats);
    let prefix = r#"haproxy_server_sessions_total{proxy="web_pool",server="app-1"}"#;
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found, [format!("{prefix} 100")]);
}

#[test]
fn nothing_configured_still_renders_the_process() {
    let text = render(&empty());
    assert_line(&text, "lbd_workers 2");
    assert_no_line_starting(&text, "haproxy_");
    assert_no_line_starting(&text, "# TYPE haproxy_");
}

#[test]
fn non_finite_values_become_nan() {
    let mut stats = fixture();
    stats.uptime_seconds = f64::INFINITY;
    stats.listeners[0].session_rate = f64::NAN;
    let text = render(&stats);
    assert_line(&text, "lbd_uptime_seconds NaN");
    assert_line(
        &text,
        r#"haproxy_frontend_current_session_rate{proxy="web"} NaN"#,
    );
}

/// `render`'s whole output for `stats` must equal the file `name` under
/// `metrics/` byte for byte: names, help, types, labels, values and
/// order. After a deliberate change, rewrite the files with
/// `LBD_BLESS_METRICS=1 cargo test -p lbd --lib metrics` and review the diff.
#[track_caller]
fn assert_pinned(name: &str, stats: &Stats, pinned: &str) {
    let text = render(stats);
    if std::env::var_os("LBD_BLESS_METRICS").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/admin/metrics")
            .join(name);
        std::fs::write(&path, &text).expect("write the pinned output");
        return;
    }
    if text != pinned {
        let first = text
            .lines()
            .zip(pinned.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(text.lines().count().min(pinned.lines().count()));
        panic!(
            "/metrics output differs from metrics/{name} from line {}:\n got: {:?}\nwant: {:?}\n--- whole output ---\n{text}",
            first + 1,
            text.lines().nth(first),
            pinned.lines().nth(first),
        );
    }
}

#[test]
fn output_is_pinned() {
    assert_pinned("fixture.prom", &fixture(), include_str!("fixture.prom"));
    assert_pinned("empty.prom", &empty(), include_str!("empty.prom"));
}

#[test]
fn builds_nothing_global() {
    let a = render(&fixture());
    let b = render(&empty());
    assert_eq!(render(&fixture()), a);
    assert_ne!(a, b);
}

/// `promtool check metrics` on `text`: Ok, or what it said.
fn promtool(text: &str) -> Option<Result<(), String>> {
    const PROMTOOL: &str = "/usr/bin/promtool";
    if !std::path::Path::new(PROMTOOL).exists() {
        if std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_some() {
            panic!("promtool missing: install Debian package prometheus (scripts/test does)");
        }
        eprintln!(
            "SKIPPED: {PROMTOOL} not found; install Debian package prometheus to lint /metrics"
        );
        return None;
    }
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool {}: {said}", out.status))
    })
}

#[test]
fn promtool_accepts_the_output() {
    for stats in [fixture(), empty()] {
        let text = render(&stats);
        if let Some(Err(e)) = promtool(&text) {
            panic!("{e}\n--- output ---\n{text}");
        }
    }
}

#[test]
fn promtool_check_is_real() {
    // The same check rejects a badly named counter, so a pass means
    // something.
    let bad = "# HELP foo_count x\n# TYPE foo_count counter\nfoo_count 1\n";
    if let Some(result) = promtool(bad) {
        assert!(result.is_err());
    }
}

#[test]
fn declarations_start_with_their_rows_labels() {
    #[track_caller]
    fn check<R>(table: &[Metric<R>], row_labels: &[&str]) {
        for metric in table {
            let info = &metric.info;
            assert!(info.labels.starts_with(row_labels), "{info:?}");
        }
    }
    check(catalog::PROCESS, &[]);
    check(catalog::XDP, &[]);
    check(catalog::LISTENERS, &["proxy"]);
    check(catalog::POOLS, &["proxy"]);
    check(catalog::MEMBERS, &["proxy", "server"]);
    let mut names: Vec<&str> = metrics().map(|m| m.name).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "a name declared twice");
}

#[test]
fn readme_lists_every_metric() {
    let readme = include_str!("../../../../README.md");
    for metric in metrics() {
        let labels = if metric.labels.is_empty() {
            "–".to_owned()
        } else {
            let quoted: Vec<String> = metric.labels.iter().map(|l| format!("`{l}`")).collect();
            quoted.join(", ")
        };
        let row = format!("| `{}` | {} | {labels} |", metric.name, metric.kind.name());
        let line = readme
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("README.md has no row starting {row}"));
        let haproxy = if metric.haproxy() {
            "| same name"
        } else {
            "| lbd only |"
        };
        assert!(line.contains(haproxy), "{line}: HAProxy column");
    }
    // And no row for a metric lbd does not export.
    for line in readme.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let name = rest.split('`').next().unwrap_or_default();
        if name.starts_with("lbd_") || name.starts_with("haproxy_") {
            assert!(
                metrics().any(|m| m.name == name),
                "README.md documents {name}, which lbd does not export"
            );
        }
    }
}

#[test]
fn xdp_families_only_with_the_fast_path() {
    let mut stats = fixture();
    let text = render(&stats);
    for line in [
        "lbd_xdp_attached{interface=\"eth0\",mode=\"native\"} 1",
        "lbd_xdp_packets_total 10",
        "lbd_xdp_bytes_total 1000",
        "lbd_xdp_new_flows_total 2",
        "lbd_xdp_flows 1",
        "lbd_xdp_drops_total{reason=\"no_member\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    stats.xdp = None;
    assert!(!render(&stats).contains("lbd_xdp"));
}
