//! Sections of a haproxy.cfg and the keywords that are not of a family of
//! their own: `global`, `defaults` (anonymous or named, `from`),
//! `frontend`, `backend`, `listen`, `peers` and `userlist` (accepted),
//! and the sections lbd refuses (`resolvers`, ...).
//!
//! As in HAProxy, a proxy starts with a copy of the settings of the last
//! `defaults` section before it (or the one its `from` names) and its own
//! lines override them. HTTP-only settings of a `defaults` section that a
//! `mode tcp` proxy inherits are ignored with one warning per line of the
//! `defaults`, listing the proxies; in a proxy that carries traffic an HTTP
//! rule is an error (lbd is L4).

use std::time::Duration;

use super::lexer::{Env, FileLexer, Line};
use super::{acl, bind, checks, server, stats, timeouts, Diags, Loc, Process};

/// Keywords that open a section.
pub const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "userlist",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
];

/// A value and the line that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub loc: Loc,
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
    Health,
}

/// What kind of section a proxy keyword is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
        }
    }

    /// Has the frontend side (binds, client timeouts, `maxconn`).
    pub fn frontend_side(self) -> bool {
        !matches!(self, Kind::Backend)
    }

    /// Has the backend side (servers, checks, balancing).
    pub fn backend_side(self) -> bool {
        !matches!(self, Kind::Frontend)
    }
}

/// `balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    StaticRr,
    LeastConn,
    Source,
}

/// What a `defaults` section passes on, and what a proxy starts from.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub mode: Option<At<Mode>>,
    pub maxconn: Option<At<u32>>,
    pub balance: Option<At<Balance>>,
    pub timeouts: timeouts::Timeouts,
    pub retries: Option<At<u32>>,
    pub redispatch: Option<At<bool>>,
    pub allbackups: Option<At<bool>>,
    /// `option splice-auto` / `splice-request` / `splice-response` (the
    /// last one wins; `no option ...` turns it off).
    pub splice: Option<At<bool>>,
    pub default_backend: Option<At<String>>,
    pub checks: checks::CheckSettings,
    pub default_server: server::ServerOptions,
    /// HTTP-only settings: ignored (with a warning) by `mode tcp` proxies.
    pub http_only: Vec<At<String>>,
    /// `load-server-state-from-file`.
    pub load_server_state: Option<At<StateFrom>>,
    /// `server-state-file-name` (empty: the backend's name).
    pub server_state_file_name: Option<At<String>>,
}

/// `load-server-state-from-file global|local|none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFrom {
    /// The global `server-state-file`.
    Global,
    /// The backend's own file (`server-state-file-name`).
    Local,
    None,
}

/// A `defaults` section.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub name: Option<String>,
    pub loc: Loc,
    pub settings: Settings,
}

/// What only proxies (not `defaults`) have.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub binds: Vec<At<bind::Bind>>,
    pub servers: Vec<At<server::Server>>,
    pub acls: acl::Acls,
    pub tcp_rules: Vec<At<acl::TcpRule>>,
    /// `stick-table type ip|ipv6`.
    pub stick_table: Option<Loc>,
    /// `stick on src`.
    pub stick_on_src: Option<Loc>,
    pub stats: stats::Stats,
    /// `disabled`: the proxy is not started.
    pub disabled: Option<Loc>,
    /// HTTP rules (`http-request`, ...): errors unless this is the stats
    /// proxy.
    pub http_rules: Vec<At<String>>,
}

/// A `frontend`, `backend` or `listen` section.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub kind: Kind,
    pub name: String,
    pub loc: Loc,
    pub settings: Settings,
    /// HTTP-only settings inherited from `defaults` (see [`Settings`]).
    pub inherited_http: Vec<At<String>>,
    pub parts: Parts,
}

impl Proxy {
    pub fn mode(&self) -> Mode {
        self.settings.mode.as_ref().map_or(Mode::Tcp, |m| m.value)
    }
}

/// `global`.
#[derive(Debug, Clone, Default)]
pub struct Global {
    pub maxconn: Option<At<u32>>,
    /// `haproxy -N`: the maxconn of frontends that set none (before the
    /// global `maxconn`).
    pub default_maxconn: Option<u32>,
    pub hard_stop_after: Option<At<Duration>>,
    /// `stats socket` lines that lbd serves.
    pub stats_sockets: Vec<At<crate::file::StatsSocketSection>>,
    /// `stats timeout`: every stats socket's (HAProxy applies it to all,
    /// wherever the line is).
    pub stats_timeout: Option<Duration>,
    /// `server-state-file`, `server-state-base`.
    pub server_state_file: Option<At<String>>,
    pub server_state_base: Option<At<String>>,
    pub process: Process,
}

/// The section lines go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    /// Before any section (keywords are errors).
    None,
    Global,
    Defaults(usize),
    Proxy(usize),
    /// `peers`, `userlist`: accepted, lines not interpreted.
    Accepted,
    /// A refused section: its lines are skipped (one error at its start).
    Skipped,
}

/// Reads the files of one config in order.
pub struct Reader {
    pub env: Env,
    pub diags: Diags,
    pub global: Global,
    pub defaults: Vec<Defaults>,
    pub proxies: Vec<Proxy>,
    current: Current,
}

/// One keyword line being interpreted in a proxy or `defaults` section.
pub struct Ctx<'a> {
    pub loc: &'a Loc,
    pub words: &'a [String],
    pub kind: Kind,
    pub diags: &'a mut Diags,
}

impl Ctx<'_> {
    /// The arguments after the first `skip` words.
    pub fn args(&self, skip: usize) -> &[String] {
        self.words.get(skip..).unwrap_or_default()
    }

    /// A warning about this line.
    pub fn warn(&mut self, message: impl AsRef<str>) {
        let keyword = keyword_text(self.words);
        self.diags.warn(
            Some(self.loc.clone()),
            format!("'{keyword}': {}", message.as_ref()),
        );
    }

    /// The value with the line it came from.
    pub fn at<T>(&self, value: T) -> At<T> {
        At {
            value,
            loc: self.loc.clone(),
        }
    }
}

/// How a line's keyword is named in messages: `bind`, `option httpchk`,
/// `timeout client`, `no option redispatch`.
pub fn keyword_text(words: &[String]) -> String {
    let two_word = [
        "option",
        "timeout",
        "stats",
        "http-check",
        "tcp-check",
        "tcp-request",
        "http-request",
        "http-response",
        "external-check",
        "stick",
        "hash-type",
    ];
    let first = words.first().map_or("", String::as_str);
    if first == "no" || first == "default" {
        return format!("{first} {}", keyword_text(&words[1..]));
    }
    if two_word.contains(&first) && words.len() > 1 {
        format!("{first} {}", words[1])
    } else {
        first.to_owned()
    }
}

/// Checks the number of arguments after `skip` words.
pub fn arg_count(
    words: &[String],
    skip: usize,
    range: std::ops::RangeInclusive<usize>,
    usage: &str,
) -> Result<(), String> {
    let got = words.len().saturating_sub(skip);
    if range.contains(&got) {
        return Ok(());
    }
    let expected = if range.start() == range.end() {
        format!("{}", range.start())
    } else if *range.end() == usize::MAX {
        format!("at least {}", range.start())
    } else {
        format!("{} to {}", range.start(), range.end())
    };
    Err(format!(
        "'{}' expects {expected} argument(s) (usage: {usage}), got {got}",
        keyword_text(&words[..skip.min(words.len())])
    ))
}

/// A number in `range`.
pub fn number(text: &str, what: &str, range: std::ops::RangeInclusive<u64>) -> Result<u32, String> {
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => {
            u32::try_from(n).map_err(|_| format!("{what} {text} is too large"))
        }
        Ok(_) => Err(format!(
            "{what} {text} is out of range ({}-{})",
            range.start(),
            range.end()
        )),
        Err(_) => Err(format!("{what} {text:?} is not a number")),
    }
}

/// Why lbd cannot carry HTTP: the ending of errors about L7 features.
pub const L4_ONLY: &str = "lbd is L4 (TCP) only and cannot do it";

/// Logging keywords: accepted, lbd logs its own way.
const LOG_NOTE: &str = "lbd logs connections and events to stderr in its own format \
                        (journald under systemd); ignored";

impl Reader {
    pub fn new(env: Env) -> Self {
        Reader {
            env,
            diags: Diags::default(),
            global: Global::default(),
            defaults: Vec::new(),
            proxies: Vec::new(),
            current: Current::None,
        }
    }

    /// Reads one file; a file starts outside any section, as in HAProxy.
    pub fn read_file(&mut self, name: &str, bytes: &[u8]) {
        self.current = Current::None;
        let mut lexer = FileLexer::new(name.into(), bytes, &self.diags);
        while let Some(line) = lexer.next_line(&self.env, &mut self.diags) {
            self.line(line);
        }
    }

    fn line(&mut self, line: Line) {
        let keyword = line.words[0].as_str();
        if SECTION_KEYWORDS.contains(&keyword) {
            self.section(&line);
            return;
        }
        let result = match self.current {
            Current::None => Err(format!("unknown keyword '{keyword}' out of section")),
            Current::Global => self.global_keyword(&line),
            Current::Accepted | Current::Skipped => Ok(()),
            Current::Defaults(i) => {
                let mut ctx = Ctx {
                    loc: &line.loc,
                    words: &line.words,
                    kind: Kind::Defaults,
                    diags: &mut self.diags,
                };
                proxy_keyword(&mut ctx, &mut self.defaults[i].settings, None)
            }
            Current::Proxy(i) => {
                let proxy = &mut self.proxies[i];
                let mut ctx = Ctx {
                    loc: &line.loc,
                    words: &line.words,
                    kind: proxy.kind,
                    diags: &mut self.diags,
                };
                proxy_keyword(&mut ctx, &mut proxy.settings, Some(&mut proxy.parts))
            }
        };
        if let Err(reason) = result {
            self.diags.error(Some(line.loc), reason);
        }
    }

    fn section(&mut self, line: &Line) {
        let words = &line.words;
        let keyword = words[0].as_str();
        let loc = &line.loc;
        match keyword {
            "global" => {
                if words.len() > 1 {
                    self.diags
                        .error(Some(loc.clone()), "'global' takes no argument");
                }
                self.current = Current::Global;
            }
            "defaults" => self.defaults_section(line),
            "frontend" | "backend" | "listen" => self.proxy_section(line),
            "peers" => {
                self.diags.warn(
                    Some(loc.clone()),
                    "'peers': accepted; lbd does not synchronise stick tables: its source_ip \
                     balancing (what 'stick on src' becomes) sends a client to the same member on \
                     every lbd that has the same members, without a table to share",
                );
                self.current = Current::Accepted;
            }
            "userlist" => {
                self.diags.warn(
                    Some(loc.clone()),
                    "'userlist': accepted and unused; lbd has no HTTP authentication",
                );
                self.current = Current::Accepted;
            }
            _ => {
                let why = match keyword {
                    "resolvers" => "lbd does not resolve names: members are IP addresses",
                    "mailers" => "lbd sends no mail alerts",
                    "program" => "lbd runs no external programs besides checks",
                    "cache" | "http-errors" | "fcgi-app" => L4_ONLY,
                    _ => "lbd has no such feature",
                };
                self.diags.error(
                    Some(loc.clone()),
                    format!("section '{keyword}' is not supported: {why}"),
                );
                self.current = Current::Skipped;
            }
        }
    }

    fn defaults_section(&mut self, line: &Line) {
        let words = &line.words;
        let (name, from) = match &words[1..] {
            [] => (None, None),
            [name] => (Some(name.clone()), None),
            [name, from_kw, from] if from_kw == "from" => (Some(name.clone()), Some(from)),
            [from_kw, from] if from_kw == "from" => (None, Some(from)),
            _ => {
                self.diags.error(
                    Some(line.loc.clone()),
                    "'defaults' expects at most a name and 'from <defaults>' \
                     (usage: defaults [<name>] [from <defaults>])",
                );
                self.current = Current::Skipped;
                return;
            }
        };
        let settings = match from {
            None => Settings::default(),
            Some(from) => {
                match self.named_defaults(from) {
                    Some(d) => d.settings.clone(),
                    None => {
                        self.diags.error(
                        Some(line.loc.clone()),
                        format!("'from {from}': no defaults section named '{from}' before this line"),
                    );
                        Settings::default()
                    }
                }
            }
        };
        let mut settings = settings;
        settings.checks.inherit();
        self.defaults.push(Defaults {
            name,
            loc: line.loc.clone(),
            settings,
        });
        self.current = Current::Defaults(self.defaults.len() - 1);
    }

    fn named_defaults(&self, name: &str) -> Option<&Defaults> {
        self.defaults
            .iter()
            .rev()
            .find(|d| d.name.as_deref() == Some(name))
    }

    fn proxy_section(&mut self, line: &Line) {
        let words = &line.words;
        let kind = match words[0].as_str() {
            "frontend" => Kind::Frontend,
            "backend" => Kind::Backend,
            _ => Kind::Listen,
        };
        let (name, from) = match &words[1..] {
            [name] => (name.clone(), None),
            [name, from_kw, from] if from_kw == "from" => (name.clone(), Some(from.clone())),
            _ => {
                self.diags.error(
                    Some(line.loc.clone()),
                    format!(
                        "'{}' expects a name and at most 'from <defaults>' (usage: {} <name> \
                         [from <defaults>])",
                        words[0], words[0]
                    ),
                );
                self.current = Current::Skipped;
                return;
            }
        };
        if let Some(other) = self.proxies.iter().find(|p| {
            p.name == name
                && (p.kind.frontend_side() && kind.frontend_side()
                    || p.kind.backend_side() && kind.backend_side())
        }) {
            self.diags.error(
                Some(line.loc.clone()),
                format!(
                    "{} '{name}' has the same name as {} '{name}' declared at {}",
                    kind.name(),
                    other.kind.name(),
                    other.loc
                ),
            );
        }
        let defaults = match &from {
            Some(from) => self.named_defaults(from),
            None => self.defaults.last(),
        };
        let mut settings = defaults.map(|d| d.settings.clone()).unwrap_or_default();
        if let (Some(from), None) = (&from, defaults) {
            self.diags.error(
                Some(line.loc.clone()),
                format!("'from {from}': no defaults section named '{from}' before this line"),
            );
        }
        let inherited_http = std::mem::take(&mut settings.http_only);
        settings.checks.inherit();
        self.proxies.push(Proxy {
            kind,
            name,
            loc: line.loc.clone(),
            settings,
            inherited_http,
            parts: Parts::default(),
        });
        self.current = Current::Proxy(self.proxies.len() - 1);
    }

    fn global_keyword(&mut self, line: &Line) -> Result<(), String> {
        let words = &line.words;
        let keyword = words[0].as_str();
        let loc = &line.loc;
        let warn = |diags: &mut Diags, note: &str| {
            diags.warn(Some(loc.clone()), format!("'{keyword}': {note}"));
        };
        match keyword {
            "maxconn" => {
                arg_count(words, 1, 1..=1, "maxconn <number>")?;
                let n = number(&words[1], "maxconn", 1..=u64::from(u32::MAX))?;
                self.global.maxconn = Some(At {
                    value: n,
                    loc: loc.clone(),
                });
                warn(
                    &mut self.diags,
                    "lbd has no process-wide connection limit; it is the connection_limit of \
                     listeners whose frontend sets no maxconn",
                );
            }
            "nbthread" => {
                arg_count(words, 1, 1..=1, "nbthread <number>")?;
                let n = number(&words[1], "nbthread", 1..=4096)?;
                self.global.process.workers = Some(n as usize);
            }
            "hard-stop-after" => {
                arg_count(words, 1, 1..=1, "hard-stop-after <time>")?;
                let d = timeouts::parse_time(&words[1], "hard-stop-after")?;
                self.global.hard_stop_after = Some(At {
                    value: d,
                    loc: loc.clone(),
                });
            }
            "setenv" | "presetenv" => {
                arg_count(words, 1, 2..=2, &format!("{keyword} <name> <value>"))?;
                if keyword == "setenv" || self.env.get(&words[1]).is_none() {
                    self.env.set(&words[1], Some(words[2].clone()));
                }
            }
            "unsetenv" => {
                arg_count(words, 1, 1..=usize::MAX, "unsetenv <name>...")?;
                for name in &words[1..] {
                    self.env.set(name, None);
                }
            }
            // Switches that only allow what lbd does anyway.
            "external-check"
            | "insecure-fork-wanted"
            | "insecure-setuid-wanted"
            | "expose-experimental-directives"
            | "localpeer" => {}
            "daemon" | "master-worker" => warn(
                &mut self.diags,
                "lbd stays in the foreground unless started with -D (haproxy command line); ignored",
            ),
            "user" | "group" | "uid" | "gid" | "chroot" => warn(
                &mut self.diags,
                "lbd does not change its user, group or root directory; start it as the \
                 user it should run as (systemd User=); ignored",
            ),
            "log" | "log-send-hostname" | "log-tag" => warn(&mut self.diags, LOG_NOTE),
            "stats" => {
                let mut notes = Vec::new();
                let read = super::cli_socket::global_stats(words, &mut |n: &str| {
                    notes.push(n.to_owned())
                })?;
                for note in notes {
                    warn(&mut self.diags, &note);
                }
                match read {
                    super::cli_socket::GlobalStats::Sockets(sections) => {
                        for section in sections {
                            self.global.stats_sockets.push(At {
                                value: section,
                                loc: loc.clone(),
                            });
                        }
                    }
                    super::cli_socket::GlobalStats::NotServed => {}
                    super::cli_socket::GlobalStats::Timeout(t) => {
                        self.global.stats_timeout = Some(t);
                    }
                    super::cli_socket::GlobalStats::Accepted(note) => warn(&mut self.diags, note),
                }
            }
            "server-state-file" | "server-state-base" => {
                arg_count(words, 1, 1..=1, &format!("{keyword} <path>"))?;
                let at = Some(At {
                    value: words[1].clone(),
                    loc: loc.clone(),
                });
                if keyword == "server-state-file" {
                    self.global.server_state_file = at;
                } else {
                    self.global.server_state_base = at;
                }
            }
            "pidfile" => warn(&mut self.diags, "use 'lbd run --pid-file'; ignored"),
            "cpu-map" => warn(&mut self.diags, "lbd does not pin threads to CPUs; ignored"),
            "ulimit-n" | "fd-hard-limit" => warn(
                &mut self.diags,
                "lbd raises its open-file limit to the hard limit and warns when it is too \
                 low for the listeners' connection limits; ignored",
            ),
            "spread-checks" => warn(
                &mut self.diags,
                "lbd spreads checks over the interval by itself; ignored",
            ),
            "node" | "description" => warn(&mut self.diags, "ignored"),
            k if k.starts_with("tune.")
                || k.starts_with("ssl-default-")
                || k.starts_with("ssl-") =>
            {
                warn(
                    &mut self.diags,
                    "lbd's own buffers and TLS defaults apply; ignored",
                )
            }
            _ => {
                if let Some(why) = super::not_yet(words) {
                    return Err(format!("'{keyword}': {why}"));
                }
                return Err(format!("unknown keyword '{keyword}' in 'global' section"));
            }
        }
        Ok(())
    }
}

/// A keyword family's entry point: `None` when the line is not one of its
/// keywords.
type Family = fn(&mut Ctx, &mut Settings, Option<&mut Parts>) -> Option<Result<(), String>>;

/// A keyword of a `defaults`, `frontend`, `backend` or `listen` section.
fn proxy_keyword(
    ctx: &mut Ctx,
    settings: &mut Settings,
    mut parts: Option<&mut Parts>,
) -> Result<(), String> {
    let words = ctx.words;
    if let Some(why) = super::not_yet(words) {
        return Err(format!("'{}': {why}", keyword_text(words)));
    }
    let families: [Family; 6] = [
        timeouts::keyword,
        bind::keyword,
        server::keyword,
        checks::keyword,
        acl::keyword,
        stats::keyword,
    ];
    for family in families {
        if let Some(result) = family(ctx, settings, parts.as_deref_mut()) {
            return result;
        }
    }
    general_keyword(ctx, settings, parts)
}

/// Requires the section to be a proxy with the given side.
pub fn need_side<'p>(
    ctx: &Ctx,
    parts: Option<&'p mut Parts>,
    frontend: bool,
) -> Result<&'p mut Parts, String> {
    let keyword = keyword_text(ctx.words);
    let ok = if frontend {
        ctx.kind.frontend_side()
    } else {
        ctx.kind.backend_side()
    };
    match parts {
        Some(parts) if ok => Ok(parts),
        _ => Err(format!(
            "'{keyword}' is not allowed in a '{}' section (only in {})",
            ctx.kind.name(),
            if frontend {
                "'frontend' and 'listen'"
            } else {
                "'backend' and 'listen'"
            }
        )),
    }
}

/// HTTP-only `option`s: ignored by `mode tcp` proxies, as HAProxy does.
const HTTP_OPTIONS: &[&str] = &[
    "http-keep-alive",
    "http-server-close",
    "httpclose",
    "forceclose",
    "forwardfor",
    "originalto",
    "httplog",
    "http-pretend-keepalive",
    "http-buffer-request",
    "http-no-delay",
    "http-ignore-probes",
    "http-use-proxy-header",
    "http-restrict-req-hdr-names",
    "checkcache",
    "accept-invalid-http-request",
    "accept-invalid-http-response",
    "h1-case-adjust-bogus-client",
    "h1-case-adjust-bogus-server",
    "disable-h2-upgrade",
];

/// HTTP rules and settings: errors in a proxy that carries traffic; in a
/// `defaults` section, ignored by the `mode tcp` proxies that inherit them.
const HTTP_KEYWORDS: &[&str] = &[
    "http-request",
    "http-response",
    "http-after-response",
    "http-reuse",
    "http-send-name-header",
    "redirect",
    "errorfile",
    "errorloc",
    "errorloc302",
    "errorloc303",
    "errorfiles",
    "compression",
    "cookie",
    "capture",
    "unique-id-format",
    "unique-id-header",
    "monitor-uri",
    "monitor",
    "use-fcgi-app",
    "filter",
    "declare",
    "email-alert",
];

fn general_keyword(
    ctx: &mut Ctx,
    settings: &mut Settings,
    parts: Option<&mut Parts>,
) -> Result<(), String> {
    let words = ctx.words;
    let keyword = words[0].as_str();
    match keyword {
        "mode" => {
            arg_count(words, 1, 1..=1, "mode tcp|http")?;
            let mode = match words[1].as_str() {
                "tcp" => Mode::Tcp,
                "http" => Mode::Http,
                "health" => Mode::Health,
                other => return Err(format!("'mode {other}': expected tcp or http")),
            };
            settings.mode = Some(ctx.at(mode));
        }
        "maxconn" => {
            arg_count(words, 1, 1..=1, "maxconn <number>")?;
            if !ctx.kind.frontend_side() {
                ctx.warn("ignored in a backend (as HAProxy does); use the server's maxconn");
                return Ok(());
            }
            let n = number(&words[1], "maxconn", 0..=u64::from(u32::MAX))?;
            settings.maxconn = Some(ctx.at(n));
        }
        "fullconn" => {
            arg_count(words, 1, 1..=1, "fullconn <number>")?;
            number(&words[1], "fullconn", 0..=u64::from(u32::MAX))?;
            ctx.warn(
                "only matters with a server 'minconn' (dynamic limits), which lbd does not have; \
                 ignored",
            );
        }
        "default_backend" => {
            arg_count(words, 1, 1..=1, "default_backend <backend>")?;
            if ctx.kind == Kind::Backend {
                return Err("'default_backend' is not allowed in a 'backend' section".to_owned());
            }
            settings.default_backend = Some(ctx.at(words[1].clone()));
        }
        "use_backend" | "use-server" | "force-persist" | "ignore-persist" => {
            return Err(format!(
                "'{keyword}': content switching is not supported; lbd sends a listener's \
                 connections to its default_backend"
            ));
        }
        "balance" => {
            arg_count(words, 1, 1..=usize::MAX, "balance <algorithm>")?;
            if !ctx.kind.backend_side() {
                return Err("'balance' is not allowed in a 'frontend' section".to_owned());
            }
            let balance = match words[1].as_str() {
                "roundrobin" => Balance::RoundRobin,
                "static-rr" => Balance::StaticRr,
                "leastconn" => Balance::LeastConn,
                "source" => Balance::Source,
                other => {
                    return Err(format!(
                        "'balance {other}' is not supported: lbd balances with roundrobin, \
                         static-rr, leastconn or source"
                    ))
                }
            };
            if words.len() > 2 {
                return Err(format!("'balance {}' takes no argument", words[1]));
            }
            settings.balance = Some(ctx.at(balance));
        }
        "hash-type" => {
            arg_count(
                words,
                1,
                1..=2,
                "hash-type map-based|consistent [<function>]",
            )?;
            match words[1].as_str() {
                "consistent" => {}
                "map-based" => ctx.warn(
                    "lbd always hashes consistently (Maglev): removing a member remaps only its \
                     own clients",
                ),
                other => {
                    return Err(format!(
                        "'hash-type {other}': expected map-based or consistent"
                    ))
                }
            }
        }
        "hash-balance-factor" => {
            ctx.warn("lbd's consistent hashing does not bound member loads; ignored");
        }
        "retries" => {
            arg_count(words, 1, 1..=1, "retries <number>")?;
            let n = number(&words[1], "retries", 0..=u64::from(u32::MAX))?;
            settings.retries = Some(ctx.at(n));
        }
        "stick-table" => {
            let parts = need_side(ctx, parts, false)?;
            let kind = words
                .iter()
                .position(|w| w == "type")
                .and_then(|i| words.get(i + 1));
            match kind.map(String::as_str) {
                Some("ip" | "ipv6") => parts.stick_table = Some(ctx.loc.clone()),
                Some(other) => {
                    return Err(format!(
                        "'stick-table type {other}' is not supported: lbd can only keep clients \
                         on a member by their source address (type ip or ipv6)"
                    ))
                }
                None => return Err("'stick-table' needs 'type ip' or 'type ipv6'".to_owned()),
            }
            if words.iter().any(|w| w == "store" || w == "srvkey") {
                return Err("'stick-table ... store/srvkey' is not supported".to_owned());
            }
        }
        "stick" => {
            let parts = need_side(ctx, parts, false)?;
            if words.get(1).map(String::as_str) == Some("on")
                && words.get(2).map(String::as_str) == Some("src")
                && words.len() == 3
            {
                parts.stick_on_src = Some(ctx.loc.clone());
            } else {
                return Err(format!(
                    "'{}' is not supported: lbd can only keep clients on a member by source \
                     address ('stick on src')",
                    words.join(" ")
                ));
            }
        }
        "disabled" => {
            arg_count(words, 1, 0..=0, "disabled")?;
            match parts {
                Some(parts) => parts.disabled = Some(ctx.loc.clone()),
                None => {
                    return Err("'disabled' in a 'defaults' section is not supported".to_owned())
                }
            }
        }
        "enabled" => {
            if let Some(parts) = parts {
                parts.disabled = None;
            }
        }
        "description" | "id" | "guid" => {}
        "log" | "log-format" | "log-format-sd" | "log-tag" | "error-log-format" => {
            ctx.warn(LOG_NOTE)
        }
        "backlog" => ctx.warn("lbd uses the kernel's somaxconn for its listen backlog; ignored"),
        "bind-process" => ctx.warn("lbd's workers all serve every listener; ignored"),
        "load-server-state-from-file" => {
            arg_count(
                words,
                1,
                1..=1,
                "load-server-state-from-file global|local|none",
            )?;
            let from = match words[1].as_str() {
                "global" => StateFrom::Global,
                "local" => StateFrom::Local,
                "none" => StateFrom::None,
                other => {
                    return Err(format!(
                        "'load-server-state-from-file' expects 'global', 'local' or 'none', got \
                         '{other}'"
                    ))
                }
            };
            settings.load_server_state = Some(ctx.at(from));
        }
        "server-state-file-name" => {
            arg_count(
                words,
                1,
                0..=1,
                "server-state-file-name [<file>|use-backend-name]",
            )?;
            settings.server_state_file_name =
                Some(ctx.at(words.get(1).cloned().unwrap_or_default()));
        }
        "option" | "no" => return option(ctx, settings, parts),
        "rate-limit"
        | "source"
        | "dispatch"
        | "server-template"
        | "persist"
        | "tcp-response"
        | "stick-store-request"
        | "stick-store-response"
        | "stick-match"
        | "unique-id" => return Err(format!("'{keyword}' is not supported by lbd")),
        k if HTTP_KEYWORDS.contains(&k) => {
            let text = ctx.words.join(" ");
            match parts {
                None => settings.http_only.push(ctx.at(text)),
                Some(parts) => parts.http_rules.push(ctx.at(text)),
            }
        }
        _ => {
            return Err(format!(
                "unknown keyword '{keyword}' in '{}' section",
                ctx.kind.name()
            ))
        }
    }
    Ok(())
}

/// `option X` and `no option X`.
fn option(ctx: &mut Ctx, settings: &mut Settings, parts: Option<&mut Parts>) -> Result<(), String> {
    let words = ctx.words;
    let negated = words[0] == "no";
    let skip = usize::from(negated);
    if negated && words.get(1).map(String::as_str) == Some("log") {
        ctx.warn(LOG_NOTE);
        return Ok(());
    }
    if words.get(skip).map(String::as_str) != Some("option") {
        return Err(format!(
            "unknown keyword '{}' in '{}' section",
            keyword_text(words),
            ctx.kind.name()
        ));
    }
    let Some(name) = words.get(skip + 1) else {
        return Err("'option' expects an option name".to_owned());
    };
    let args = &words[skip + 2..];
    let no_args = |args: &[String]| -> Result<(), String> {
        if args.is_empty() {
            Ok(())
        } else {
            Err(format!("'option {name}' takes no argument"))
        }
    };
    match name.as_str() {
        "redispatch" => {
            if args.len() > 1 {
                return Err("'option redispatch' takes at most an interval".to_owned());
            }
            settings.redispatch = Some(ctx.at(!negated));
        }
        "allbackups" => {
            no_args(args)?;
            settings.allbackups = Some(ctx.at(!negated));
        }
        "tcplog"
        | "dontlognull"
        | "log-separate-errors"
        | "log-health-checks"
        | "dontlog-normal"
        | "logasap" => ctx.warn(LOG_NOTE),
        "splice-request" | "splice-response" | "splice-auto" => {
            no_args(args)?;
            if !negated && name.as_str() != "splice-auto" {
                ctx.warn(
                    "lbd splices both directions of a listener that has any splice option, \
                     and only streaming ones (as splice-auto): listener splice = true",
                );
            }
            settings.splice = Some(ctx.at(!negated));
        }
        "tcpka" | "clitcpka" | "srvtcpka" => {
            ctx.warn("lbd does not enable TCP keep-alive probes; its idle timeouts apply; ignored")
        }
        "abortonclose"
        | "nolinger"
        | "independent-streams"
        | "socket-stats"
        | "contstats"
        | "prefer-last-server"
        | "persist" => ctx.warn("no effect in lbd; ignored"),
        "transparent" => return Err(format!("'option transparent': {L4_ONLY}")),
        n if HTTP_OPTIONS.contains(&n) => {
            let text = ctx.words.join(" ");
            match parts {
                None => settings.http_only.push(ctx.at(text)),
                Some(_) => ctx.warn("ignored: it needs 'mode http' (as in HAProxy)"),
            }
        }
        _ => {
            if let Some(result) = checks::option(ctx, settings, name, args, negated) {
                return result;
            }
            return Err(format!(
                "unknown option '{name}' in '{}' section",
                ctx.kind.name()
            ));
        }
    }
    Ok(())
}
