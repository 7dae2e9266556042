//! From the sections read to lbd's [`ConfigFile`], and the TOML text of
//! `lbd convert`.
//!
//! * every `backend` and `listen` with servers (or used as a backend) is a
//!   `[[pool]]` of the same name;
//! * every address of every `bind` of a `frontend` or `listen` is a
//!   `[[listener]]` on its `default_backend` (a `listen`: itself), named
//!   after the proxy, then `<name>.2`, `<name>.3`, ...;
//! * the listener's `member_connect`, `member_idle` and `proxy_protocol`
//!   come from its backend (`timeout connect`, `timeout server`, the
//!   servers' `send-proxy`), `client_idle` and `connection_limit` from the
//!   frontend (`timeout client`, `maxconn`, else the global `maxconn`);
//! * the stats proxy is the `[admin]` bind; `hard-stop-after` is
//!   `[global] drain_timeout`.

use std::collections::HashMap;
use std::time::Duration;

use super::sections::{At, Balance, Global, Kind, Mode, Proxy, Reader, StateFrom, L4_ONLY};
use super::server_state::{self, StateSource};
use super::{acl, checks, Diags, Reading, Refused, Reported};
use crate::file::{
    AdminSection, ConfigFile, GlobalSection, ListenerSection, MemberSection, PoolSection,
    StatsSocketSection,
};
use crate::model::ProxyProtocol;

/// What listeners take from the backend they use.
#[derive(Debug, Clone)]
struct BackendView {
    connect: Option<Duration>,
    idle: Option<Duration>,
    /// `timeout tunnel` and `timeout server-fin`.
    tunnel: Option<Duration>,
    server_fin: Option<Duration>,
    proxy: Option<ProxyProtocol>,
    /// A splice option.
    splice: bool,
}

fn text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Converts what `reader` read; `Err` with every error found.
pub fn convert(reader: Reader) -> Result<Reading, Refused> {
    let Reader {
        mut diags,
        global,
        proxies,
        ..
    } = reader;
    let mut file = ConfigFile::default();
    let mut origins = Vec::new();
    if let Some(h) = &global.hard_stop_after {
        file.global = Some(GlobalSection {
            drain_timeout: Some(text(h.value)),
        });
    }
    file.stats_sockets = global
        .stats_sockets
        .iter()
        .map(|s| StatsSocketSection {
            timeout: global.stats_timeout.map(text),
            ..s.value.clone()
        })
        .collect();
    if proxies.is_empty() && diags.errors.is_empty() {
        diags.error(
            None,
            "no 'frontend', 'backend' or 'listen' section: nothing to run (an empty or \
             truncated config is refused)",
        );
    }

    // HTTP-only lines of `defaults` sections, with the tcp proxies that
    // inherit them.
    let mut inherited: Vec<(At<String>, Vec<String>)> = Vec::new();
    let mut backends: HashMap<&str, BackendView> = HashMap::new();
    let mut server_state = Vec::new();

    for proxy in &proxies {
        if proxy.parts.stats.is_stats() {
            stats_proxy(proxy, &mut file, &mut diags);
            continue;
        }
        if let Some(loc) = &proxy.parts.disabled {
            diags.warn(
                Some(loc.clone()),
                format!(
                    "'disabled': {} '{}' is not started (lbd leaves it out)",
                    proxy.kind.name(),
                    proxy.name
                ),
            );
            continue;
        }
        if proxy.mode() != Mode::Tcp {
            let mode = proxy.settings.mode.as_ref();
            let set_at = mode
                .map(|m| format!(" (set at {})", m.loc))
                .unwrap_or_default();
            diags.error(
                Some(proxy.loc.clone()),
                format!(
                    "{} '{}' is 'mode {}'{set_at}: {L4_ONLY}; use 'mode tcp'",
                    proxy.kind.name(),
                    proxy.name,
                    if proxy.mode() == Mode::Http {
                        "http"
                    } else {
                        "health"
                    },
                ),
            );
            continue;
        }
        for rule in &proxy.parts.http_rules {
            diags.error(
                Some(rule.loc.clone()),
                format!("'{}': an HTTP rule; {L4_ONLY}", rule.value),
            );
        }
        for line in &proxy.inherited_http {
            match inherited.iter_mut().find(|(l, _)| l.loc == line.loc) {
                Some((_, names)) => names.push(proxy.name.clone()),
                None => inherited.push((line.clone(), vec![proxy.name.clone()])),
            }
        }
        let is_backend = match proxy.kind {
            Kind::Backend => true,
            Kind::Listen => {
                !proxy.parts.servers.is_empty() || proxy.settings.default_backend.is_none()
            }
            _ => false,
        };
        if is_backend {
            if let Some((pool, view)) = pool(proxy, &mut diags) {
                origins.push((format!("pool {}", proxy.name), proxy.loc.clone()));
                server_state.extend(state_source(proxy, &global, &mut diags));
                file.pools.push(pool);
                backends.insert(proxy.name.as_str(), view);
            }
        }
    }

    for proxy in &proxies {
        if !proxy.kind.frontend_side()
            || proxy.parts.stats.is_stats()
            || proxy.parts.disabled.is_some()
            || proxy.mode() != Mode::Tcp
        {
            continue;
        }
        if proxy.parts.binds.is_empty() {
            if proxy.kind == Kind::Frontend {
                diags.warn(
                    Some(proxy.loc.clone()),
                    format!(
                        "frontend '{}' has no 'bind': not started (as in HAProxy)",
                        proxy.name
                    ),
                );
            }
            continue;
        }
        let pool_name = match (&proxy.settings.default_backend, proxy.kind) {
            (Some(b), _) => b.clone(),
            (None, Kind::Listen) => At {
                value: proxy.name.clone(),
                loc: proxy.loc.clone(),
            },
            (None, _) => {
                diags.error(
                    Some(proxy.loc.clone()),
                    format!(
                        "frontend '{}' has no 'default_backend': every lbd listener sends its \
                         connections to one pool",
                        proxy.name
                    ),
                );
                continue;
            }
        };
        let Some(view) = backends.get(pool_name.value.as_str()).cloned() else {
            let why = match proxies
                .iter()
                .find(|p| p.name == pool_name.value && p.kind.backend_side())
            {
                Some(p) if p.parts.disabled.is_some() => "it is disabled",
                Some(p) if p.mode() != Mode::Tcp => "it is not 'mode tcp'",
                Some(_) => "it could not be converted",
                None => "no backend has that name",
            };
            diags.error(
                Some(pool_name.loc.clone()),
                format!("'default_backend {}': {why}", pool_name.value),
            );
            continue;
        };
        let Ok(allowed_cidrs) = acl::allowed_cidrs(proxy, &mut diags) else {
            continue;
        };
        let client_idle = proxy.settings.timeouts.client.as_ref().map(|t| t.value);
        if client_idle.is_none() {
            diags.warn(
                Some(proxy.loc.clone()),
                format!(
                    "{} '{}': 'timeout client' is not set (HAProxy would wait forever); lbd uses \
                     its default client_idle of 50s",
                    proxy.kind.name(),
                    proxy.name
                ),
            );
        }
        let client_fin = proxy.settings.timeouts.client_fin.as_ref().map(|t| t.value);
        // As in HAProxy, either side's splice option splices.
        let splice = view.splice || proxy.settings.splice.as_ref().is_some_and(|s| s.value);
        let limit = proxy
            .settings
            .maxconn
            .as_ref()
            .map(|m| m.value)
            .or(global.default_maxconn)
            .or(global.maxconn.as_ref().map(|m| m.value))
            .map(i64::from);
        let mut n = 0;
        for bind in &proxy.parts.binds {
            for addr in &bind.value.addrs {
                n += 1;
                let name = if n == 1 {
                    proxy.name.clone()
                } else {
                    format!("{}.{n}", proxy.name)
                };
                origins.push((format!("listener {name}"), bind.loc.clone()));
                file.listeners.push(ListenerSection {
                    name: Some(name),
                    bind: Some(addr.to_string()),
                    pool: Some(pool_name.value.clone()),
                    connection_limit: limit,
                    allowed_cidrs: allowed_cidrs.clone(),
                    client_idle: client_idle.map(text),
                    member_connect: view.connect.map(text),
                    member_idle: view.idle.map(text),
                    proxy_protocol: view.proxy.map(|p| p.name().to_owned()),
                    freebind: bind.value.freebind.then_some(true),
                    fast_path: None,
                    kernel_relay: None,
                    splice: splice.then_some(true),
                    tunnel_idle: view.tunnel.map(text),
                    client_fin: client_fin.map(text),
                    member_fin: view.server_fin.map(text),
                    connect_hedge: None,
                    // HAProxy has no UDP: every haproxy.cfg listener is TCP.
                    protocol: None,
                    session_idle: None,
                });
            }
        }
    }

    for (line, names) in inherited {
        diags.warn(
            Some(line.loc.clone()),
            format!(
                "'{}': HTTP-only, ignored by the mode tcp proxies that inherit it ({}), as in \
                 HAProxy",
                line.value,
                names.join(", ")
            ),
        );
    }
    if diags.errors.is_empty() {
        Ok(Reading {
            file,
            process: global.process,
            warnings: sorted(diags.warnings),
            origins,
            server_state,
        })
    } else {
        Err(Refused {
            errors: sorted(diags.errors),
            warnings: sorted(diags.warnings),
        })
    }
}

/// Diagnostics in file order (those without a line first), stable.
fn sorted(mut list: Vec<super::Diag>) -> Vec<super::Diag> {
    let order: Vec<std::sync::Arc<str>> = {
        let mut files = Vec::new();
        for d in &list {
            if let Some(loc) = &d.loc {
                if !files.contains(&loc.file) {
                    files.push(loc.file.clone());
                }
            }
        }
        files
    };
    list.sort_by_key(|d| {
        d.loc.as_ref().map_or((0, 0), |l| {
            (
                1 + order.iter().position(|f| *f == l.file).unwrap_or(0),
                l.line,
            )
        })
    });
    list
}

fn stats_proxy(proxy: &Proxy, file: &mut ConfigFile, diags: &mut Diags) {
    let addrs: Vec<_> = proxy
        .parts
        .binds
        .iter()
        .flat_map(|b| b.value.addrs.iter())
        .collect();
    let [addr] = addrs.as_slice() else {
        diags.error(
            Some(proxy.loc.clone()),
            format!(
                "stats {} '{}' must bind exactly one address (lbd's stats page has one bind), \
                 it has {}",
                proxy.kind.name(),
                proxy.name,
                addrs.len()
            ),
        );
        return;
    };
    if let Some(server) = proxy.parts.servers.first() {
        diags.error(
            Some(server.loc.clone()),
            format!(
                "stats {} '{}' cannot also have servers in lbd",
                proxy.kind.name(),
                proxy.name
            ),
        );
        return;
    }
    if file.admin.is_some() {
        diags.error(
            Some(proxy.loc.clone()),
            format!(
                "a second stats proxy '{}': lbd serves its stats page on one bind",
                proxy.name
            ),
        );
        return;
    }
    for rule in &proxy.parts.http_rules {
        diags.warn(
            Some(rule.loc.clone()),
            format!(
                "'{}': lbd's stats listener serves only its own pages (/, /stats.csv, \
                 /stats.json, /metrics, /api); ignored",
                rule.value
            ),
        );
    }
    diags.warn(
        Some(proxy.loc.clone()),
        format!(
            "{} '{}' is lbd's admin server on {addr}: stats page, CSV, /metrics and the runtime \
             API (writes only from a loopback bind or with a token_file)",
            proxy.kind.name(),
            proxy.name
        ),
    );
    let stats = &proxy.parts.stats;
    let realm = match &stats.realm {
        Some(realm) if stats.auth.is_empty() => {
            diags.warn(
                Some(realm.loc.clone()),
                "'stats realm' with no 'stats auth': the pages are not protected; ignored",
            );
            None
        }
        realm => realm.as_ref().map(|r| r.value.clone()),
    };
    file.admin = Some(AdminSection {
        bind: Some(addr.to_string()),
        stats_users: stats.auth.iter().map(|a| a.value.clone()).collect(),
        stats_realm: realm,
        stats_uri: stats.uri.as_ref().map(|u| u.value.clone()),
        ..AdminSection::default()
    });
}

/// The one value all servers agree on for a per-pool setting, or an error
/// at the first that differs.
fn agreed<T: Clone + PartialEq + std::fmt::Debug>(
    proxy: &Proxy,
    what: &str,
    get: impl Fn(&super::server::ServerOptions) -> Option<T>,
    diags: &mut Diags,
) -> Result<Option<T>, Reported> {
    let servers = &proxy.parts.servers;
    let Some(first) = servers.first() else {
        return Ok(None);
    };
    let value = get(&first.value.options);
    for s in &servers[1..] {
        if get(&s.value.options) != value {
            diags.error(
                Some(s.loc.clone()),
                format!(
                    "server '{}' has another '{what}' than server '{}' of backend '{}': in lbd it \
                     is one setting of the pool",
                    s.value.name, first.value.name, proxy.name
                ),
            );
            return Err(Reported);
        }
    }
    Ok(value)
}

/// Where a backend's `load-server-state-from-file` reads from.
fn state_source(proxy: &Proxy, global: &Global, diags: &mut Diags) -> Option<StateSource> {
    let from = proxy.settings.load_server_state.as_ref()?;
    let base = global.server_state_base.as_ref().map(|b| b.value.as_str());
    let file = match from.value {
        StateFrom::None => return None,
        StateFrom::Global => match &global.server_state_file {
            Some(file) => file.value.clone(),
            None => {
                diags.warn(
                    Some(from.loc.clone()),
                    "'load-server-state-from-file global': no global 'server-state-file'; ignored",
                );
                return None;
            }
        },
        StateFrom::Local => match proxy.settings.server_state_file_name.as_ref() {
            Some(name) if !name.value.is_empty() && name.value != "use-backend-name" => {
                name.value.clone()
            }
            _ => proxy.name.clone(),
        },
    };
    Some(StateSource {
        pool: proxy.name.clone(),
        path: server_state::resolve(base, &file),
        loc: from.loc.clone(),
    })
}

fn pool(proxy: &Proxy, diags: &mut Diags) -> Option<(PoolSection, BackendView)> {
    let parts = &proxy.parts;
    let settings = &proxy.settings;
    let errors_before = diags.errors.len();
    let algorithm = if parts.stick_on_src.is_some() {
        "source_ip"
    } else {
        match settings.balance.as_ref().map(|b| b.value) {
            None | Some(Balance::RoundRobin | Balance::StaticRr) => "round_robin",
            Some(Balance::LeastConn) => "least_connections",
            Some(Balance::Source) => "source_ip",
        }
    };
    match (&parts.stick_table, &parts.stick_on_src) {
        (None, Some(loc)) => diags.error(
            Some(loc.clone()),
            format!(
                "'stick on src': backend '{}' has no 'stick-table'",
                proxy.name
            ),
        ),
        (Some(loc), None) => diags.warn(
            Some(loc.clone()),
            "'stick-table': unused without 'stick on src'; ignored",
        ),
        _ => {}
    }
    if let Some(retries) = &settings.retries {
        if retries.value > 0 && settings.redispatch.as_ref().map(|r| r.value) != Some(true) {
            diags.warn(
                Some(retries.loc.clone()),
                "'retries': lbd retries failed connects on other members (as with 'option \
                 redispatch'), never on the same one",
            );
        }
    }
    let backups = parts
        .servers
        .iter()
        .filter(|s| s.value.options.backup == Some(true))
        .count();
    if backups > 1 && settings.allbackups.as_ref().map(|a| a.value) != Some(true) {
        diags.warn(
            Some(proxy.loc.clone()),
            format!(
                "backend '{}': lbd balances over all backup servers (as 'option allbackups'); \
                 HAProxy without it uses only the first",
                proxy.name
            ),
        );
    }
    let max_queue = agreed(proxy, "maxqueue", |o| o.maxqueue, diags).ok()?;
    let slow_start = agreed(proxy, "slowstart", |o| o.slowstart, diags).ok()?;
    let shutdown_on_down = agreed(proxy, "on-marked-down", |o| o.shutdown_on_down, diags).ok()?;
    let proxy_protocol = agreed(proxy, "send-proxy", |o| o.proxy.flatten(), diags).ok()?;
    let health = checks::health_section(proxy, &parts.servers, diags).ok()?;
    for (what, value) in [
        ("connect", &settings.timeouts.connect),
        ("server", &settings.timeouts.server),
    ] {
        if value.is_none() {
            diags.warn(
                Some(proxy.loc.clone()),
                format!(
                    "{} '{}': 'timeout {what}' is not set (HAProxy would wait forever); lbd uses \
                     its default {}",
                    proxy.kind.name(),
                    proxy.name,
                    if what == "connect" {
                        "member_connect of 5s"
                    } else {
                        "member_idle of 50s"
                    }
                ),
            );
        }
    }
    let members = parts
        .servers
        .iter()
        .map(|s| {
            let o = &s.value.options;
            MemberSection {
                address: Some(s.value.ip.to_string()),
                port: Some(i64::from(s.value.port)),
                weight: o.weight.map(i64::from),
                backup: o.backup.filter(|b| *b),
                max_connections: o.maxconn.map(i64::from),
                admin_state: (o.disabled == Some(true)).then(|| "maint".to_owned()),
                monitor_address: o.addr.map(|a| a.to_string()),
                monitor_port: o.port.map(i64::from),
                id: None,
                name: Some(s.value.name.clone()),
            }
        })
        .collect();
    if diags.errors.len() > errors_before {
        return None;
    }
    let pool = PoolSection {
        name: Some(proxy.name.clone()),
        algorithm: Some(algorithm.to_owned()),
        retries: settings.retries.as_ref().map(|r| i64::from(r.value)),
        health,
        max_queue: max_queue.map(i64::from),
        queue_timeout: settings.timeouts.queue.as_ref().map(|t| text(t.value)),
        slow_start: slow_start.map(text),
        on_down: (shutdown_on_down == Some(true)).then(|| "shutdown_sessions".to_owned()),
        on_maint: None,
        connect_hedge: None,
        members,
    };
    let view = BackendView {
        connect: settings.timeouts.connect.as_ref().map(|t| t.value),
        idle: settings.timeouts.server.as_ref().map(|t| t.value),
        tunnel: settings.timeouts.tunnel.as_ref().map(|t| t.value),
        server_fin: settings.timeouts.server_fin.as_ref().map(|t| t.value),
        proxy: proxy_protocol,
        splice: settings.splice.as_ref().is_some_and(|s| s.value),
    };
    Some((pool, view))
}

/// `lbd convert`'s output: a comment for everything not carried over,
/// then the TOML of `reading.file`, which loads back to the same config.
pub fn render_toml(reading: &Reading, sources: &[String]) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(&format!(
        "# lbd config converted from {} by 'lbd convert'.\n",
        sources.join(", ")
    ));
    if let Some(workers) = reading.process.workers {
        out.push_str(&format!(
            "# nbthread {workers}: run lbd with --workers {workers} (not part of the file)\n"
        ));
    }
    if !reading.warnings.is_empty() {
        out.push_str("# Not carried over as written (lbd's reasons):\n");
        for w in &reading.warnings {
            let place = w.loc.as_ref().map(|l| format!("{l}: ")).unwrap_or_default();
            let message = w.message.replace('\n', " ");
            out.push_str(&format!("#   {place}{message}\n"));
        }
    }
    out.push('\n');
    let body = toml::to_string(&reading.file).map_err(|e| format!("cannot render TOML: {e}"))?;
    out.push_str(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::test_util::*;
    use crate::haproxy::{read_sources, validate_reading};

    /// What Octavia 19 renders for a TCP listener with a PROXY pool, an
    /// HTTP monitor, SOURCE_IP persistence and a backup, disabled member
    /// (the amphora's user/group file is the second file).
    const OCTAVIA: &str = "# Configuration for loadbalancer sample_loadbalancer_id_1
global
    daemon
    user nobody
    log /run/rsyslog/octavia/log local0
    log /run/rsyslog/octavia/log local1 notice
    stats socket /var/lib/octavia/sample_loadbalancer_id_1.sock mode 0666 level user
    server-state-file /var/lib/octavia/sample_loadbalancer_id_1/servers-state
    maxconn 100

defaults
    log global
    retries 3
    option redispatch
    option splice-request
    option splice-response
    option http-keep-alive

peers sample_loadbalancer_id_1_peers
    peer 3dVescsRZ-RdRBfYVLW6snVI9gI 10.0.0.1:1025
    peer l_Ustq0qE-h-_Q1dlXLXBAiWR8U 10.0.0.2:1025

frontend sample_listener_id_1
    maxconn 100
    bind 10.0.0.2:80
    mode tcp
    default_backend sample_pool_id_1:sample_listener_id_1
    timeout client 50000
    log-format 12345\\ sample_loadbalancer_id_1\\ %f\\ %ci\\ %cp\\ %t\\ -\\ -\\ %B\\ %U\\ %[ssl_c_verify]\\ %{+Q}[ssl_c_s_dn]\\ %b\\ %s\\ %Tt\\ %tsc

backend sample_pool_id_1:sample_listener_id_1
    mode tcp
    balance roundrobin
    stick-table type ipv6 size 10k peers sample_loadbalancer_id_1_peers
    stick on src
    load-server-state-from-file global
    timeout check 31s
    option httpchk GET /index.html HTTP/1.0
    http-check expect rstatus 418
    fullconn 100
    option allbackups
    timeout connect 5000
    timeout server 50000
    server sample_member_id_1 10.0.0.99:82 weight 13 check inter 30s fall 3 rise 2 addr 192.168.1.1 port 9000 send-proxy
    server sample_member_id_2 10.0.0.98:82 weight 13 check inter 30s fall 3 rise 2 addr 192.168.1.1 port 9000 send-proxy backup disabled
";
    const USER_GROUP: &str = "global\n    user nobody\n    group nogroup\n";

    fn octavia() -> Reading {
        read_sources(
            &[
                ("lb.cfg", OCTAVIA.as_bytes()),
                ("ug.cfg", USER_GROUP.as_bytes()),
            ],
            env(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn splice_options_splice_the_listener() {
        let cfg = |option: &str| {
            format!(
                "defaults\n    mode tcp\n    timeout client 5s\n{option}\n\
                 frontend f\n    bind 127.0.0.1:8080\n    default_backend b\n\
                 backend b\n    server s 127.0.0.1:9000\n"
            )
        };
        let splice = |text: &str| {
            read_sources(&[("lb.cfg", text.as_bytes())], env())
                .unwrap_or_else(|e| panic!("{e}"))
                .file
                .listeners[0]
                .splice
        };
        assert_eq!(splice(&cfg("")), None);
        assert_eq!(splice(&cfg("    option splice-auto")), Some(true));
        assert_eq!(splice(&cfg("    option splice-response")), Some(true));
        assert_eq!(
            splice(&cfg("    option splice-auto\n    no option splice-auto")),
            None
        );
    }

    #[test]
    fn octavia_listener_and_pool() {
        let reading = octavia();
        let file = &reading.file;
        assert_eq!(file.listeners.len(), 1);
        let l = &file.listeners[0];
        assert_eq!(l.name.as_deref(), Some("sample_listener_id_1"));
        assert_eq!(l.bind.as_deref(), Some("10.0.0.2:80"));
        assert_eq!(
            l.pool.as_deref(),
            Some("sample_pool_id_1:sample_listener_id_1")
        );
        assert_eq!(l.connection_limit, Some(100));
        assert_eq!(l.client_idle.as_deref(), Some("50s"));
        assert_eq!(l.member_connect.as_deref(), Some("5s"));
        assert_eq!(l.member_idle.as_deref(), Some("50s"));
        assert_eq!(l.proxy_protocol.as_deref(), Some("v1"));
        // `option splice-request` / `splice-response` in its defaults.
        assert_eq!(l.splice, Some(true));
        let p = &file.pools[0];
        assert_eq!(p.algorithm.as_deref(), Some("source_ip"));
        assert_eq!(p.retries, Some(3));
        assert_eq!(p.members.len(), 2);
        assert_eq!(p.members[0].weight, Some(13));
        assert_eq!(p.members[0].monitor_address.as_deref(), Some("192.168.1.1"));
        assert_eq!(p.members[0].monitor_port, Some(9000));
        assert_eq!(p.members[1].backup, Some(true));
        assert_eq!(p.members[1].admin_state.as_deref(), Some("maint"));
        let h = p.health.as_ref().expect("checked");
        assert_eq!(h.kind.as_deref(), Some("http"));
        assert_eq!(h.expected_codes.as_deref(), Some("418"));
        assert!(validate_reading(reading.clone()).is_ok());
    }

    #[test]
    fn octavia_warnings_name_file_and_line() {
        let warnings: Vec<String> = octavia().warnings.iter().map(ToString::to_string).collect();
        for (place, text) in [
            ("lb.cfg:3", "'daemon'"),
            ("lb.cfg:4", "'user'"),
            ("lb.cfg:17", "'option http-keep-alive': HTTP-only, ignored by the mode tcp proxies that inherit it (sample_listener_id_1, sample_pool_id_1:sample_listener_id_1)"),
            ("lb.cfg:19", "'peers'"),
            ("lb.cfg:29", "'log-format'"),
            ("lb.cfg:40", "'fullconn'"),
            ("ug.cfg:3", "'group'"),
        ] {
            assert!(
                warnings.iter().any(|w| w.contains(&format!("[{place}] : ")) && w.contains(text)),
                "{place} {text}:\n{}",
                warnings.join("\n")
            );
        }
    }

    #[test]
    fn convert_output_loads_back_to_the_same_config() {
        let reading = octavia();
        let toml_text = render_toml(&reading, &["lb.cfg".to_owned()]).expect("renders");
        assert!(toml_text.contains("#   lb.cfg:3: 'daemon'"), "{toml_text}");
        let (config, _) = validate_reading(reading).expect("valid");
        let loaded = crate::load::from_toml_str(&toml_text, "converted").expect("loads");
        assert_eq!(loaded, config);
        // Octavia's `stats socket <dir>/<lb>.sock mode 0666 level user`.
        let [socket] = &config.stats_sockets[..] else {
            panic!("{:?}", config.stats_sockets)
        };
        assert_eq!(
            (socket.mode, socket.level, socket.expose_fd_listeners),
            (Some(0o666), crate::model::CliLevel::User, false)
        );
        assert!(toml_text.contains("[[stats_socket]]"), "{toml_text}");
    }

    #[test]
    fn mode_http_and_http_rules_are_errors() {
        assert_error(
            "frontend f\n mode http\n bind 127.0.0.1:7000\n default_backend b\nbackend b\n server s 127.0.0.1:1\n",
            1,
            "frontend 'f' is 'mode http' (set at t.cfg:2): lbd is L4 (TCP) only",
        );
        assert_error(
            "defaults\n mode http\nlisten l\n bind 127.0.0.1:7000\n server s 127.0.0.1:1\n",
            3,
            "'mode http' (set at t.cfg:2)",
        );
        assert_error(
            "listen l\n bind 127.0.0.1:7000\n http-request deny\n server s 127.0.0.1:1\n",
            3,
            "'http-request deny': an HTTP rule; lbd is L4",
        );
        assert_error(
            "listen l\n bind 127.0.0.1:7000\n use_backend x if y\n server s 127.0.0.1:1\n",
            3,
            "content switching is not supported",
        );
    }

    #[test]
    fn frontend_wiring_errors() {
        assert_error(
            "frontend f\n bind 127.0.0.1:7000\n",
            1,
            "has no 'default_backend'",
        );
        assert_error(
            "frontend f\n bind 127.0.0.1:7000\n default_backend nope\n",
            3,
            "'default_backend nope': no backend has that name",
        );
        assert_error(
            "frontend f\n bind 127.0.0.1:7000\n default_backend b\nbackend b\n mode http\n server s 127.0.0.1:1\n",
            4,
            "backend 'b' is 'mode http'",
        );
        let e = errors("global\n daemon\n");
        assert!(e[0].to_string().contains("nothing to run"), "{e:?}");
    }

    #[test]
    fn balance_and_stickiness() {
        for (lines, algorithm) in [
            ("", "round_robin"),
            (" balance roundrobin", "round_robin"),
            (" balance static-rr", "round_robin"),
            (" balance leastconn", "least_connections"),
            (" balance source\n hash-type consistent", "source_ip"),
            (
                " balance leastconn\n stick-table type ip size 10k\n stick on src",
                "source_ip",
            ),
        ] {
            let file = convert_ok(&format!(
                "listen l\n bind 127.0.0.1:7000\n timeout client 1s\n timeout connect 1s\n \
                 timeout server 1s\n{lines}\n server s 127.0.0.1:1\n"
            ));
            assert_eq!(
                file.pools[0].algorithm.as_deref(),
                Some(algorithm),
                "{lines}"
            );
        }
        for (lines, line, reason) in [
            (" balance uri", 3, "'balance uri' is not supported"),
            (" balance roundrobin extra", 3, "takes no argument"),
            (" stick on src", 3, "has no 'stick-table'"),
            (
                " stick-table type string len 32",
                3,
                "'stick-table type string' is not supported",
            ),
            (" stick on dst", 3, "'stick on src'"),
        ] {
            assert_error(
                &format!("listen l\n bind 127.0.0.1:7000\n{lines}\n server s 127.0.0.1:1\n"),
                line,
                reason,
            );
        }
    }

    #[test]
    fn unknown_keywords_and_argument_counts() {
        for (text, line, reason) in [
            (
                "global\n frobnicate\n",
                2,
                "unknown keyword 'frobnicate' in 'global' section",
            ),
            (
                "frobnicate\n",
                1,
                "unknown keyword 'frobnicate' out of section",
            ),
            (
                "listen l\n frobnicate 1\n",
                2,
                "unknown keyword 'frobnicate' in 'listen' section",
            ),
            ("listen l\n option frob\n", 2, "unknown option 'frob'"),
            ("listen l\n maxconn\n", 2, "'maxconn' expects 1 argument(s)"),
            (
                "listen l\n maxconn 1 2\n",
                2,
                "expects 1 argument(s) (usage: maxconn <number>), got 2",
            ),
            ("listen l\n retries x\n", 2, "retries \"x\" is not a number"),
            ("global\n nbthread 1 2\n", 2, "expects 1 argument(s)"),
            (
                "resolvers dns\n nameserver a 1.1.1.1:53\n",
                1,
                "section 'resolvers' is not supported",
            ),
            ("defaults a b c d\n", 1, "'defaults' expects at most a name"),
            ("listen\n", 1, "'listen' expects a name"),
            (
                "listen l from nope\n",
                1,
                "no defaults section named 'nope'",
            ),
        ] {
            assert_error(text, line, reason);
        }
    }

    #[test]
    fn named_defaults_and_from() {
        let file = convert_ok(
            "defaults base\n timeout client 7s\n timeout connect 1s\n timeout server 1s\n\
             defaults other\n timeout client 9s\n\
             listen a from base\n bind 127.0.0.1:7000\n server s 127.0.0.1:1\n\
             listen b\n bind 127.0.0.1:7001\n timeout connect 1s\n timeout server 1s\n server s 127.0.0.1:1\n\
             defaults derived from base\n timeout server 3s\n\
             listen c\n bind 127.0.0.1:7002\n server s 127.0.0.1:1\n",
        );
        let idle: Vec<_> = file
            .listeners
            .iter()
            .map(|l| l.client_idle.clone())
            .collect();
        assert_eq!(
            idle,
            [
                Some("7s".to_owned()),
                Some("9s".to_owned()),
                Some("7s".to_owned())
            ]
        );
        assert_eq!(file.listeners[2].member_idle.as_deref(), Some("3s"));
    }

    #[test]
    fn connection_limits_and_drain() {
        let file = convert_ok(
            "global\n maxconn 500\n hard-stop-after 2m\n nbthread 3\n\
             defaults\n timeout client 1s\n timeout connect 1s\n timeout server 1s\n\
             frontend f\n maxconn 100\n bind 127.0.0.1:7000\n default_backend b\n\
             frontend g\n bind 127.0.0.1:7001\n default_backend b\n\
             backend b\n server s 127.0.0.1:1\n",
        );
        assert_eq!(file.listeners[0].connection_limit, Some(100));
        assert_eq!(file.listeners[1].connection_limit, Some(500));
        assert_eq!(
            file.global.and_then(|g| g.drain_timeout).as_deref(),
            Some("2m")
        );
    }

    #[test]
    fn command_line_maxconn_n_and_big_n() {
        use crate::haproxy::{read_sources_with, CommandLine};
        let text = "defaults\n timeout client 1s\n timeout connect 1s\n timeout server 1s\n\
             frontend f\n maxconn 100\n bind 127.0.0.1:7000\n default_backend b\n\
             frontend g\n bind 127.0.0.1:7001\n default_backend b\n\
             backend b\n server s 127.0.0.1:1\n";
        let limits = |cmd: CommandLine| {
            let reading = read_sources_with(&[("t.cfg", text.as_bytes())], env(), cmd)
                .unwrap_or_else(|e| panic!("{e}"));
            reading
                .file
                .listeners
                .iter()
                .map(|l| l.connection_limit)
                .collect::<Vec<_>>()
        };
        assert_eq!(limits(CommandLine::default()), vec![Some(100), None]);
        // -n: the global maxconn; -N: frontends without one, before it.
        let n = CommandLine {
            global_maxconn: Some(900),
            ..CommandLine::default()
        };
        assert_eq!(limits(n), vec![Some(100), Some(900)]);
        let big_n = CommandLine {
            default_maxconn: Some(300),
            global_maxconn: Some(900),
        };
        assert_eq!(limits(big_n), vec![Some(100), Some(300)]);
    }

    #[test]
    fn validator_errors_name_the_section_line() {
        let errors = errors(
            "defaults\n timeout client 1s\n timeout connect 1s\n timeout server 1s\n\
             listen a\n bind 127.0.0.1:7000\n server s 127.0.0.1:1 check rise 20\n",
        );
        let text = errors[0].to_string();
        assert!(
            text.contains("[t.cfg:5] : pool \"a\": health: rise 20"),
            "{text}"
        );
    }

    #[test]
    fn several_files_and_directories_in_order() {
        let dir = std::env::temp_dir().join(format!("lbd-haproxy-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("20-backend.cfg"),
            "backend b\n timeout connect 1s\n timeout server 1s\n server s 127.0.0.1:1\n",
        )
        .expect("w");
        std::fs::write(
            dir.join("10-defaults.cfg"),
            "defaults\n timeout client 3s\n",
        )
        .expect("w");
        std::fs::write(dir.join(".hidden.cfg"), "garbage\n").expect("w");
        std::fs::write(dir.join("notes.txt"), "garbage\n").expect("w");
        let front = dir.join("front.conf");
        std::fs::write(
            &front,
            "frontend f\n bind 127.0.0.1:7000\n default_backend b\n",
        )
        .expect("w");
        let reading = super::super::read_paths(&[dir.clone(), front], env()).expect("reads");
        assert_eq!(reading.file.listeners[0].client_idle.as_deref(), Some("3s"));
        let missing =
            super::super::read_paths(&[dir.join("nope.cfg")], env()).expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("Cannot open configuration file/directory")
                && missing.to_string().contains("nope.cfg"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
