//! The configurations under test: config rendering, start and reload for
//! lbd, HAProxy (plain and with `option splice-auto`) and nginx `stream`,
//! plus "direct" (no proxy: clients hit backend 1 / the iperf3 server).
//!
//! Each proxy has one worker and two listeners: `http` in front of the three
//! nginx backends (round robin) and `iperf` in front of the iperf3 server.
//! When a UDP scenario runs, those that carry UDP (lbd, nginx) have two UDP
//! listeners more: `udp` in front of the UDP echo server and `iperf-udp`
//! on the `iperf` listener's port (iperf3's UDP test: TCP control
//! connection and UDP datagrams to the same port) in front of the iperf3
//! server's UDP side.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;

use crate::procfs;
use crate::procs::{self, Guard, Pin};
use crate::setup::NGINX_STREAM_MODULE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Direct,
    Lbd,
    /// lbd forced onto its epoll runtime (opt-in: `--proxies ...,lbd-epoll`).
    LbdEpoll,
    /// Another lbd binary (`--lbd-old PATH`), e.g. the commit before a change,
    /// measured beside the current one (opt-in: `--proxies ...,lbd-old`).
    LbdOld,
    /// lbd with `splice = true` on both listeners (opt-in).
    LbdSplice,
    /// lbd with `kernel_relay = true` on both listeners (opt-in; needs
    /// root and BPF, else lbd logs that it copies).
    LbdKernel,
    Haproxy,
    HaproxySplice,
    Nginx,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::Lbd,
        Kind::Haproxy,
        Kind::HaproxySplice,
        Kind::Nginx,
    ];

    /// lbd under either runtime, or the other lbd binary.
    pub fn is_lbd(self) -> bool {
        matches!(
            self,
            Kind::Lbd | Kind::LbdEpoll | Kind::LbdOld | Kind::LbdSplice | Kind::LbdKernel
        )
    }

    /// Whether the column carries UDP (HAProxy has no UDP; `splice` and
    /// `kernel_relay` are TCP-only, so lbd-splice and lbd-kernel would
    /// repeat lbd's UDP numbers).
    pub fn serves_udp(self) -> bool {
        matches!(
            self,
            Kind::Direct | Kind::Lbd | Kind::LbdEpoll | Kind::LbdOld | Kind::Nginx
        )
    }

    /// What this column adds to each of lbd's TCP listeners.
    fn lbd_listener_option(self) -> &'static str {
        match self {
            Kind::LbdSplice => "splice = true\n",
            Kind::LbdKernel => "kernel_relay = true\n",
            _ => "",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Lbd => "lbd",
            Kind::LbdEpoll => "lbd-epoll",
            Kind::LbdOld => "lbd-old",
            Kind::LbdSplice => "lbd-splice",
            Kind::LbdKernel => "lbd-kernel",
            Kind::Haproxy => "haproxy",
            Kind::HaproxySplice => "haproxy-splice",
            Kind::Nginx => "nginx",
        }
    }
}

/// Where a configuration sends its listeners.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub http: Vec<u16>,
    pub iperf: u16,
    /// The UDP echo server (when a UDP scenario runs).
    pub udp_echo: Option<u16>,
}

/// The ports a configuration listens on (127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub http: u16,
    /// TCP, and UDP too when `udp` is there (iperf3's UDP test).
    pub iperf: u16,
    /// The UDP listener in front of the echo server (UDP scenarios, and
    /// only the columns that carry UDP).
    pub udp: Option<u16>,
}

/// How long a UDP flow lives without a datagram: lbd's `session_idle`
/// (its default) and nginx's `proxy_timeout` in the UDP servers.
pub const UDP_SESSION_IDLE: &str = "60s";

/// Whether the rendered config has the UDP listeners.
fn udp_listener(l: &Listen, up: &Upstreams) -> Option<(u16, u16)> {
    l.udp.zip(up.udp_echo)
}

/// Member weights of the `http` pool; reloads alternate between two sets.
pub const WEIGHTS_BASE: [u32; 3] = [1, 1, 1];
pub const WEIGHTS_ALT: [u32; 3] = [1, 2, 1];

/// lbd's config; `member_limit` adds `max_connections` to the `http`
/// members (`--lbd-max-connections`), `listener_option` a line to each
/// TCP listener. `stats_socket` is the unix socket a successor takes the
/// listeners over from (`lbd run --takeover`, the upgrade scenario).
pub fn render_lbd(
    l: &Listen,
    up: &Upstreams,
    weights: &[u32],
    member_limit: Option<u32>,
    listener_option: &str,
    stats_socket: &Path,
) -> String {
    let mut s = String::from(
        "# lbd bench: one worker (--workers 1); `http` -> 3 nginx backends, `iperf` -> iperf3\n\
         [global]\ndrain_timeout = \"1s\"\n",
    );
    let _ = write!(
        s,
        "\n[[stats_socket]]\npath = \"{}\"\nlevel = \"admin\"\nexpose_fd_listeners = true\n",
        stats_socket.display()
    );
    for (name, port) in [("http", l.http), ("iperf", l.iperf)] {
        let _ = write!(
            s,
            "\n[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\npool = \"{name}\"\n\
             connection_limit = 200000\nclient_idle = \"300s\"\nmember_idle = \"300s\"\n\
             {listener_option}"
        );
    }
    let udp = udp_listener(l, up);
    if let Some((udp_port, _)) = udp {
        // `iperf-udp` shares the `iperf` listener's address and port.
        for (name, port) in [("udp", udp_port), ("iperf-udp", l.iperf)] {
            let _ = write!(
                s,
                "\n[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\npool = \"{name}\"\n\
                 protocol = \"udp\"\nconnection_limit = 200000\nsession_idle = \"{UDP_SESSION_IDLE}\"\n"
            );
        }
    }
    s.push_str("\n[[pool]]\nname = \"http\"\nalgorithm = \"round_robin\"\n");
    for (i, port) in up.http.iter().enumerate() {
        let w = weights.get(i).copied().unwrap_or(1);
        let _ = write!(
            s,
            "\n[[pool.member]]\naddress = \"127.0.0.1\"\nport = {port}\nweight = {w}\n"
        );
        if let Some(limit) = member_limit {
            let _ = writeln!(s, "max_connections = {limit}");
        }
    }
    let mut single = vec![("iperf", up.iperf)];
    if let Some((_, echo)) = udp {
        single.extend([("udp", echo), ("iperf-udp", up.iperf)]);
    }
    for (name, port) in single {
        let _ = write!(
            s,
            "\n[[pool]]\nname = \"{name}\"\nalgorithm = \"round_robin\"\n\n[[pool.member]]\n\
             address = \"127.0.0.1\"\nport = {port}\n"
        );
    }
    s
}

/// HAProxy has no UDP: `l.udp` is ignored.
pub fn render_haproxy(l: &Listen, up: &Upstreams, weights: &[u32], splice: bool) -> String {
    let mut s = String::from(
        "# lbd bench: HAProxy master-worker, one thread\n\
         global\n    nbthread 1\n    maxconn 200000\n\
         \x20   # HAProxy 2.6 fails at start when it cannot raise the fd limit for maxconn\n\
         \x20   # (containers without CAP_SYS_RESOURCE); warn instead.\n\
         \x20   no strict-limits\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 300s\n\
         \x20   timeout server 300s\n    retries 3\n    option redispatch\n",
    );
    if splice {
        s.push_str("    option splice-auto\n");
    }
    let _ = write!(
        s,
        "\nlisten http\n    bind 127.0.0.1:{}\n    balance roundrobin\n",
        l.http
    );
    for (i, port) in up.http.iter().enumerate() {
        let w = weights.get(i).copied().unwrap_or(1);
        let _ = writeln!(s, "    server b{} 127.0.0.1:{port} weight {w}", i + 1);
    }
    let _ = write!(
        s,
        "\nlisten iperf\n    bind 127.0.0.1:{}\n    balance roundrobin\n\
         \x20   server i1 127.0.0.1:{}\n",
        l.iperf, up.iperf
    );
    s
}

/// nginx `stream`; with the UDP listeners, `listen ... udp` servers: the
/// echo one with `proxy_responses 1` (one answer per datagram ends the
/// session, nginx's setting for request/response protocols such as DNS),
/// the iperf3 one without (the data flows one way). Both get
/// `rcvbuf=4m`, the receive buffer lbd gives its UDP listener sockets.
pub fn render_nginx(dir: &Path, l: &Listen, up: &Upstreams, weights: &[u32]) -> String {
    let d = dir.display();
    let mut s = format!(
        "# lbd bench: nginx stream, one worker\n\
         load_module {NGINX_STREAM_MODULE};\n\
         worker_processes 1;\nworker_rlimit_nofile 70000;\ndaemon off;\nmaster_process on;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\n\
         events {{\n    worker_connections 30000;\n}}\n\n\
         stream {{\n    upstream http {{\n"
    );
    for (i, port) in up.http.iter().enumerate() {
        let w = weights.get(i).copied().unwrap_or(1);
        let _ = writeln!(s, "        server 127.0.0.1:{port} weight={w};");
    }
    let _ = write!(
        s,
        "    }}\n    upstream iperf {{\n        server 127.0.0.1:{};\n    }}\n",
        up.iperf
    );
    let udp = udp_listener(l, up);
    if let Some((_, echo)) = udp {
        let _ = writeln!(
            s,
            "    upstream udp {{\n        server 127.0.0.1:{echo};\n    }}"
        );
    }
    for (name, port) in [("http", l.http), ("iperf", l.iperf)] {
        let _ = write!(
            s,
            "    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n        proxy_pass {name};\n\
             \x20       proxy_connect_timeout 5s;\n        proxy_timeout 300s;\n    }}\n"
        );
    }
    if let Some((udp_port, _)) = udp {
        for (name, port, responses) in [
            ("udp", udp_port, "        proxy_responses 1;\n"),
            ("iperf", l.iperf, ""),
        ] {
            let _ = write!(
                s,
                "    server {{\n        listen 127.0.0.1:{port} udp rcvbuf=4m;\n        proxy_pass {name};\n\
                 {responses}        proxy_timeout {UDP_SESSION_IDLE};\n    }}\n"
            );
        }
    }
    s.push_str("}\n");
    s
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Reload {
    pub confirmed: bool,
    pub rejected: bool,
    /// From the signal to the proxy's confirmation in its log.
    pub millis: f64,
}

/// What an in-place upgrade did.
#[derive(Debug, Clone, Serialize)]
pub struct Upgrade {
    /// From starting the new process (lbd) or the signal (HAProxy's
    /// master re-executing itself) until the new one serves.
    pub serving_ms: f64,
    /// From then until the old process has exited (lbd only: HAProxy's
    /// old worker belongs to the master).
    pub old_exited_ms: Option<f64>,
}

/// A running configuration (for `direct`, nothing runs).
pub struct Proxy {
    pub kind: Kind,
    pub http_port: u16,
    pub iperf_port: u16,
    /// The UDP echo path (the proxy's `udp` listener, or for direct the
    /// echo server); None without UDP scenarios or for HAProxy.
    pub udp_port: Option<u16>,
    upstreams: Upstreams,
    dir: PathBuf,
    config_path: PathBuf,
    lbd: Option<PathBuf>,
    pin: Pin,
    logs: PathBuf,
    guard: Option<Guard>,
    /// lbd's runtime as it logged it (`io_uring` or `epoll`).
    pub runtime: Option<String>,
    /// `max_connections` on the `http` members (lbd and lbd-epoll only).
    member_limit: Option<u32>,
}

impl Proxy {
    /// Starts `kind` and waits until its listeners accept (TCP) or are
    /// bound (UDP). `listen` is ignored for direct.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        kind: Kind,
        listen: Listen,
        upstreams: &Upstreams,
        root: &Path,
        lbd: Option<&Path>,
        pin: Pin,
        logs: &Path,
        member_limit: Option<u32>,
    ) -> Result<Proxy> {
        let dir = root.join(kind.name());
        fs::create_dir_all(&dir)?;
        let config_path = dir.join(match kind {
            Kind::Lbd | Kind::LbdEpoll | Kind::LbdOld | Kind::LbdSplice | Kind::LbdKernel => {
                "lbd.toml"
            }
            Kind::Haproxy | Kind::HaproxySplice => "haproxy.cfg",
            Kind::Nginx => "nginx.conf",
            Kind::Direct => "none",
        });
        let listen = match kind {
            Kind::Direct => Listen {
                http: upstreams.http[0],
                iperf: upstreams.iperf,
                udp: upstreams.udp_echo,
            },
            _ if kind.serves_udp() && upstreams.udp_echo.is_some() => listen,
            _ => Listen {
                udp: None,
                ..listen
            },
        };
        let mut p = Proxy {
            kind,
            http_port: listen.http,
            iperf_port: listen.iperf,
            udp_port: listen.udp,
            upstreams: upstreams.clone(),
            dir,
            config_path,
            lbd: lbd.map(Path::to_path_buf),
            pin,
            logs: logs.to_path_buf(),
            guard: None,
            runtime: None,
            member_limit: member_limit.filter(|_| matches!(kind, Kind::Lbd | Kind::LbdEpoll)),
        };
        if kind != Kind::Direct {
            p.write_config(&WEIGHTS_BASE)?;
            p.launch()?;
        }
        Ok(p)
    }

    fn listen(&self) -> Listen {
        Listen {
            http: self.http_port,
            iperf: self.iperf_port,
            udp: self.udp_port,
        }
    }

    pub fn render(&self, weights: &[u32]) -> String {
        let (l, up) = (&self.listen(), &self.upstreams);
        match self.kind {
            Kind::Direct => String::new(),
            k @ (Kind::Lbd | Kind::LbdEpoll | Kind::LbdOld | Kind::LbdSplice | Kind::LbdKernel) => {
                render_lbd(
                    l,
                    up,
                    weights,
                    self.member_limit,
                    k.lbd_listener_option(),
                    &self.stats_socket(),
                )
            }
            Kind::Haproxy => render_haproxy(l, up, weights, false),
            Kind::HaproxySplice => render_haproxy(l, up, weights, true),
            Kind::Nginx => render_nginx(&self.dir, l, up, weights),
        }
    }

    fn write_config(&self, weights: &[u32]) -> Result<()> {
        // Written whole to a temporary file, then renamed: a reload never
        // reads half a file.
        let tmp = self.config_path.with_extension("tmp");
        fs::write(&tmp, self.render(weights))?;
        fs::rename(&tmp, &self.config_path)?;
        Ok(())
    }

    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    pub fn argv(&self) -> Vec<String> {
        let cfg = self.config_path.display().to_string();
        match self.kind {
            Kind::Direct => Vec::new(),
            Kind::Lbd | Kind::LbdEpoll | Kind::LbdOld | Kind::LbdSplice | Kind::LbdKernel => vec![
                self.lbd
                    .as_ref()
                    .map_or_else(|| "lbd".to_string(), |p| p.display().to_string()),
                "--workers".into(),
                "1".into(),
                "--runtime".into(),
                if self.kind == Kind::LbdEpoll {
                    "epoll"
                } else {
                    "auto"
                }
                .into(),
                "run".into(),
                "-c".into(),
                cfg,
            ],
            Kind::Haproxy | Kind::HaproxySplice => vec![
                "haproxy".into(),
                "-W".into(),
                "-f".into(),
                cfg,
                "-p".into(),
                self.dir.join("haproxy.pid").display().to_string(),
            ],
            Kind::Nginx => vec![
                "nginx".into(),
                "-p".into(),
                self.dir.display().to_string(),
                "-c".into(),
                cfg,
                "-e".into(),
                self.error_log().display().to_string(),
            ],
        }
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    fn launch(&mut self) -> Result<()> {
        let mut g = Guard::spawn(self.kind.name(), &self.argv(), self.pin, &self.logs)?;
        let explain = || {
            let mut msg = format!(
                "config {}:\n{}",
                self.config_path.display(),
                self.config_text()
            );
            if self.kind == Kind::Nginx {
                let log = fs::read_to_string(self.error_log()).unwrap_or_default();
                msg.push_str(&format!("\nerror.log:\n{log}"));
            }
            msg
        };
        for port in [self.http_port, self.iperf_port] {
            procs::wait_listening(&mut g, port, Duration::from_secs(15)).with_context(explain)?;
        }
        if let Some(udp) = self.udp_port {
            for port in [udp, self.iperf_port] {
                procs::wait_udp_bound(&mut g, port, Duration::from_secs(15))
                    .with_context(explain)?;
            }
        }
        if self.kind.is_lbd() {
            // The start line (`... runtime io_uring`) comes right after bind.
            let found = procs::wait_until(Duration::from_secs(5), || {
                Ok(runtime_from_log(&g.stderr_text()).is_some())
            })?;
            if !found {
                bail!(
                    "lbd logged no `runtime ...` start line\n{}",
                    g.output_tail()
                );
            }
            self.runtime = runtime_from_log(&g.stderr_text());
        }
        self.guard = Some(g);
        Ok(())
    }

    /// The process group to measure (None for direct).
    pub fn pgid(&self) -> Option<i32> {
        self.guard.as_ref().map(Guard::pid)
    }

    /// CPU seconds used so far by the proxy's processes.
    pub fn cpu_seconds(&self) -> Result<Option<f64>> {
        self.pgid().map(procs::group_cpu_seconds).transpose()
    }

    /// Stops the proxy and starts a fresh process with the base config.
    pub fn restart(&mut self) -> Result<()> {
        if self.kind == Kind::Direct {
            return Ok(());
        }
        // Dropping the guard kills the group and waits until it is gone.
        self.guard = None;
        self.write_config(&WEIGHTS_BASE)?;
        self.launch()
    }

    /// Restarts the proxy if it died; returns what happened then.
    pub fn ensure_running(&mut self) -> Result<Option<String>> {
        let Some(g) = &mut self.guard else {
            return Ok(None);
        };
        let Some(status) = g.try_wait()? else {
            return Ok(None);
        };
        let what = format!(
            "{} had exited ({status}); restarted it\n{}",
            self.kind.name(),
            g.output_tail()
        );
        self.guard = None;
        self.write_config(&WEIGHTS_BASE)?;
        self.launch()?;
        Ok(Some(what))
    }

    /// How many reloads the proxy has confirmed so far, and rejected.
    fn reload_counts(&self) -> Result<(usize, usize)> {
        let g = self.guard.as_ref().context("not running")?;
        Ok(match self.kind {
            Kind::Direct => (0, 0),
            Kind::Lbd | Kind::LbdEpoll | Kind::LbdOld | Kind::LbdSplice | Kind::LbdKernel => {
                let log = g.stderr_text();
                (
                    log.matches("reloaded:").count(),
                    log.matches("reload rejected").count(),
                )
            }
            Kind::Haproxy | Kind::HaproxySplice => {
                // The master prints "Loading success." per (re)load, the
                // first one at start.
                let log = g.stderr_text();
                (
                    log.matches("Loading success.").count(),
                    log.matches("Loading failure").count(),
                )
            }
            Kind::Nginx => {
                // One worker: one "start worker process" at start, one more
                // per accepted reload.
                let log = fs::read_to_string(self.error_log()).unwrap_or_default();
                (
                    log.matches("start worker process").count(),
                    log.matches("[emerg]").count(),
                )
            }
        })
    }

    /// Whether the master would act on a reload signal now: it catches
    /// the signal and does not block it. An HAProxy master re-executes
    /// itself twice per reload (to load the config, then to wait) and a
    /// SIGUSR2 sent in between is lost.
    fn ready_for_signal(&self, sig: libc::c_int) -> Result<bool> {
        let pid = self.guard.as_ref().context("not running")?.pid();
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            return Ok(false);
        };
        let (blocked, caught) = procfs::parse_sig_masks(&text)?;
        let bit = 1u64 << (sig - 1);
        Ok(caught & bit != 0 && blocked & bit == 0)
    }

    /// Rewrites the config with `weights`, signals the reload (lbd: SIGHUP,
    /// HAProxy: SIGUSR2 to the master, nginx: SIGHUP to the master) and waits
    /// (at most 10 s) until the proxy confirms it in its log. The wait also
    /// keeps reloads from overlapping (HAProxy coalesces signals that arrive
    /// while it re-executes).
    pub fn reload(&mut self, weights: &[u32]) -> Result<Reload> {
        let sig = match self.kind {
            Kind::Direct => bail!("direct has nothing to reload"),
            Kind::Lbd
            | Kind::LbdEpoll
            | Kind::LbdOld
            | Kind::LbdSplice
            | Kind::LbdKernel
            | Kind::Nginx => libc::SIGHUP,
            Kind::Haproxy | Kind::HaproxySplice => libc::SIGUSR2,
        };
        if !procs::wait_until(Duration::from_secs(10), || self.ready_for_signal(sig))? {
            bail!(
                "{} does not catch signal {sig} (not ready for a reload)",
                self.kind.name()
            );
        }
        let (done0, rejected0) = self.reload_counts()?;
        self.write_config(weights)?;
        let started = Instant::now();
        self.guard.as_ref().context("not running")?.signal(sig)?;
        let mut out = Reload {
            confirmed: false,
            rejected: false,
            millis: 0.0,
        };
        procs::wait_until(Duration::from_secs(10), || {
            let (done, rejected) = self.reload_counts()?;
            out.confirmed = done > done0;
            out.rejected = rejected > rejected0;
            Ok((out.confirmed || out.rejected) && self.ready_for_signal(sig)?)
        })?;
        out.millis = started.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }

    /// lbd's stats socket, which `--takeover` takes the listeners from.
    fn stats_socket(&self) -> PathBuf {
        self.dir.join("stats.sock")
    }

    /// Whether [`Proxy::upgrade`] can upgrade this configuration.
    pub fn can_upgrade(kind: Kind) -> bool {
        kind.is_lbd() || matches!(kind, Kind::Haproxy | Kind::HaproxySplice)
    }

    /// Replaces the running binary with a fresh process of the same binary
    /// and config, the way each proxy upgrades itself without dropping a
    /// connection:
    /// - lbd: a new `lbd run --takeover <stats socket>` receives the
    ///   listening sockets and tells the old process to drain; this waits
    ///   (at most 10 s each) until the new one logs that it serves and the
    ///   old one has exited;
    /// - HAProxy: SIGUSR2 to the master, which re-executes its binary from
    ///   disk (how a master-worker HAProxy is upgraded): the same as a
    ///   reload with an unchanged config.
    pub fn upgrade(&mut self) -> Result<Upgrade> {
        if matches!(self.kind, Kind::Haproxy | Kind::HaproxySplice) {
            let r = self.reload(&WEIGHTS_BASE)?;
            if !r.confirmed {
                bail!(
                    "HAProxy did not confirm the re-execution\n{}",
                    self.log_tail()
                );
            }
            return Ok(Upgrade {
                serving_ms: r.millis,
                old_exited_ms: None,
            });
        }
        if !self.kind.is_lbd() {
            bail!("{}: no in-place upgrade in the bench", self.kind.name());
        }
        let mut argv = self.argv();
        argv.push("--takeover".into());
        argv.push(self.stats_socket().display().to_string());
        let started = Instant::now();
        let mut new = Guard::spawn(self.kind.name(), &argv, self.pin, &self.logs)?;
        let serving = procs::wait_until(Duration::from_secs(10), || {
            if let Some(status) = new.try_wait()? {
                bail!("the new lbd exited ({status})\n{}", new.output_tail());
            }
            Ok(new
                .stderr_text()
                .contains("serving: sent SIGTERM to old process"))
        })?;
        if !serving {
            bail!(
                "the new lbd did not take over in 10 s\n{}",
                new.output_tail()
            );
        }
        let serving_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut old = self.guard.replace(new).context("not running")?;
        let exited = old.wait_timeout(Duration::from_secs(10))?;
        let old_exited_ms = started.elapsed().as_secs_f64() * 1e3 - serving_ms;
        if exited.is_none() {
            bail!(
                "the old lbd did not exit within 10 s of the takeover\n{}",
                old.output_tail()
            );
        }
        Ok(Upgrade {
            serving_ms,
            old_exited_ms: Some(old_exited_ms),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn log_tail(&self) -> String {
        self.guard
            .as_ref()
            .map(Guard::output_tail)
            .unwrap_or_default()
    }

    /// Kills the process group now (dropping `self` does it too: the
    /// guard kills on drop).
    pub fn stop(&mut self) {
        self.guard = None;
    }
}

/// The runtime lbd says it uses: its start line ends in `runtime io_uring`
/// or `runtime epoll`.
pub fn runtime_from_log(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let (_, rest) = l.split_once(" runtime ")?;
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        matches!(word.as_str(), "io_uring" | "epoll").then_some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Upstreams {
        Upstreams {
            http: vec![17001, 17002, 17003],
            iperf: 17004,
            udp_echo: None,
        }
    }

    /// With the UDP echo server at 17005.
    fn up_udp() -> Upstreams {
        Upstreams {
            udp_echo: Some(17005),
            ..up()
        }
    }

    const TCP_ONLY: Listen = Listen {
        http: 18000,
        iperf: 18001,
        udp: None,
    };

    const WITH_UDP: Listen = Listen {
        udp: Some(18002),
        ..TCP_ONLY
    };

    #[test]
    fn lbd_config_shape() {
        let sock = Path::new("/w/lbd/stats.sock");
        let c = render_lbd(&TCP_ONLY, &up(), &WEIGHTS_ALT, None, "", sock);
        assert_eq!(c.matches("[[listener]]").count(), 2);
        assert_eq!(c.matches("[[pool]]").count(), 2);
        assert_eq!(c.matches("[[pool.member]]").count(), 4);
        assert_eq!(c.matches("connection_limit = 200000").count(), 2);
        assert_eq!(c.matches("client_idle = \"300s\"").count(), 2);
        assert_eq!(c.matches("member_idle = \"300s\"").count(), 2);
        assert!(c.contains("bind = \"127.0.0.1:18000\""));
        assert!(c.contains("port = 17002\nweight = 2"));
        assert!(c.contains("port = 17004"));
        assert!(!c.contains("max_connections"));
        assert!(!c.contains("udp"));
        assert!(c.contains(
            "[[stats_socket]]\npath = \"/w/lbd/stats.sock\"\nlevel = \"admin\"\nexpose_fd_listeners = true\n"
        ));
        let limited = render_lbd(&TCP_ONLY, &up(), &WEIGHTS_BASE, Some(100_000), "", sock);
        assert_eq!(limited.matches("max_connections = 100000").count(), 3);
        // A UDP port without a UDP backend (or the reverse) adds nothing.
        assert_eq!(
            render_lbd(&WITH_UDP, &up(), &WEIGHTS_BASE, None, "", sock),
            render_lbd(&TCP_ONLY, &up(), &WEIGHTS_BASE, None, "", sock)
        );
        assert_eq!(
            render_lbd(&TCP_ONLY, &up_udp(), &WEIGHTS_BASE, None, "", sock),
            render_lbd(&TCP_ONLY, &up(), &WEIGHTS_BASE, None, "", sock)
        );
    }

    #[test]
    fn lbd_udp_config_shape() {
        let sock = Path::new("/w/lbd/stats.sock");
        let c = render_lbd(
            &WITH_UDP,
            &up_udp(),
            &WEIGHTS_BASE,
            None,
            "splice = true\n",
            sock,
        );
        assert_eq!(c.matches("[[listener]]").count(), 4);
        assert_eq!(c.matches("[[pool]]").count(), 4);
        assert_eq!(c.matches("protocol = \"udp\"").count(), 2);
        assert_eq!(c.matches("session_idle = \"60s\"").count(), 2);
        // The TCP-only settings stay on the TCP listeners.
        assert_eq!(c.matches("splice = true").count(), 2);
        assert_eq!(c.matches("client_idle").count(), 2);
        assert_eq!(c.matches("connection_limit = 200000").count(), 4);
        for needle in [
            "name = \"udp\"\nbind = \"127.0.0.1:18002\"\npool = \"udp\"\nprotocol = \"udp\"\n",
            // The same address and port as the TCP `iperf` listener.
            "name = \"iperf\"\nbind = \"127.0.0.1:18001\"\npool = \"iperf\"\n",
            "name = \"iperf-udp\"\nbind = \"127.0.0.1:18001\"\npool = \"iperf-udp\"\nprotocol = \"udp\"\n",
            "[[pool]]\nname = \"udp\"\nalgorithm = \"round_robin\"\n\n[[pool.member]]\naddress = \"127.0.0.1\"\nport = 17005\n",
            "[[pool]]\nname = \"iperf-udp\"\nalgorithm = \"round_robin\"\n\n[[pool.member]]\naddress = \"127.0.0.1\"\nport = 17004\n",
        ] {
            assert!(c.contains(needle), "missing {needle:?} in\n{c}");
        }
        // The UDP listeners come after the TCP ones: a TCP listener's
        // settings never run into a UDP one.
        let udp_at = c.find("protocol = \"udp\"").unwrap();
        assert!(c.rfind("client_idle").unwrap() < udp_at);
    }

    #[test]
    fn haproxy_config_shape() {
        let c = render_haproxy(&TCP_ONLY, &up(), &WEIGHTS_BASE, false);
        for needle in [
            "nbthread 1",
            "maxconn 200000",
            "mode tcp",
            "timeout connect 5s",
            "timeout client 300s",
            "timeout server 300s",
            "retries 3",
            "option redispatch",
            "balance roundrobin",
            "bind 127.0.0.1:18000",
            "server b3 127.0.0.1:17003 weight 1",
            "server i1 127.0.0.1:17004",
        ] {
            assert!(c.contains(needle), "missing {needle:?} in\n{c}");
        }
        assert!(!c.contains("splice"));
        assert!(
            render_haproxy(&TCP_ONLY, &up(), &WEIGHTS_BASE, true).contains("option splice-auto")
        );
        // No UDP in HAProxy.
        assert_eq!(
            render_haproxy(&WITH_UDP, &up_udp(), &WEIGHTS_BASE, false),
            c
        );
    }

    #[test]
    fn nginx_config_shape() {
        let c = render_nginx(Path::new("/w/nginx"), &TCP_ONLY, &up(), &WEIGHTS_ALT);
        for needle in [
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;",
            "worker_processes 1;",
            "worker_rlimit_nofile 70000;",
            "worker_connections 30000;",
            "server 127.0.0.1:17002 weight=2;",
            "listen 127.0.0.1:18000",
            "proxy_pass http;",
            "proxy_pass iperf;",
            "proxy_timeout 300s;",
            "pid /w/nginx/nginx.pid;",
        ] {
            assert!(c.contains(needle), "missing {needle:?} in\n{c}");
        }
        assert!(!c.contains("udp"));
    }

    #[test]
    fn nginx_udp_config_shape() {
        let c = render_nginx(Path::new("/w/nginx"), &WITH_UDP, &up_udp(), &WEIGHTS_BASE);
        for needle in [
            "    upstream udp {\n        server 127.0.0.1:17005;\n    }\n",
            // The echo: one answer per datagram ends nginx's session.
            "    server {\n        listen 127.0.0.1:18002 udp rcvbuf=4m;\n        proxy_pass udp;\n\
             \x20       proxy_responses 1;\n        proxy_timeout 60s;\n    }\n",
            // iperf3: TCP and UDP on the same port, both to the iperf3 server.
            "    server {\n        listen 127.0.0.1:18001 backlog=4096;\n        proxy_pass iperf;\n",
            "    server {\n        listen 127.0.0.1:18001 udp rcvbuf=4m;\n        proxy_pass iperf;\n\
             \x20       proxy_timeout 60s;\n    }\n",
        ] {
            assert!(c.contains(needle), "missing {needle:?} in\n{c}");
        }
        assert_eq!(c.matches(" udp rcvbuf=4m;").count(), 2);
        assert_eq!(c.matches("proxy_responses").count(), 1);
        assert!(c.ends_with("    }\n}\n"), "{c}");
    }

    #[test]
    fn udp_columns() {
        let served: Vec<Kind> = [
            Kind::Direct,
            Kind::Lbd,
            Kind::LbdEpoll,
            Kind::LbdOld,
            Kind::LbdSplice,
            Kind::LbdKernel,
            Kind::Haproxy,
            Kind::HaproxySplice,
            Kind::Nginx,
        ]
        .into_iter()
        .filter(|k| k.serves_udp())
        .collect();
        assert_eq!(
            served,
            [
                Kind::Direct,
                Kind::Lbd,
                Kind::LbdEpoll,
                Kind::LbdOld,
                Kind::Nginx
            ]
        );
    }

    #[test]
    fn runtime_line() {
        // Captured: `lbd --workers 1 --runtime auto run -c configs/local.toml`.
        let uring = "2026-11-23T15:28:21.662414Z  WARN lbd::limits: open file limit is 20000 but the listeners' connection_limit values need about 100256: connections beyond that fail to open (raise LimitNOFILE / ulimit -n)
2026-11-23T15:28:21.662942Z  INFO lbd: lbd 0.1.0 started: pid 14481, 1 worker(s), runtime io_uring
2026-11-23T15:28:21.662948Z  INFO lbd: listener \"local\" on 127.0.0.1:8080 -> pool \"local\" (3 member(s))
2026-11-23T15:28:22.359410Z  INFO lbd: SIGHUP: reloading configs/local.toml
2026-11-23T15:28:22.359554Z  INFO lbd: reloaded: generation 2, listeners +0 -0, members +0 -0
";
        assert_eq!(runtime_from_log(uring).as_deref(), Some("io_uring"));
        assert_eq!(uring.matches("reloaded:").count(), 1);
        // As the README words the fallback, with the start line after it.
        let epoll = "WARN lbd::runtime: io_uring unavailable (Operation not permitted); falling back to the epoll runtime\n\
            INFO lbd: lbd 0.1.0 started: pid 1, 1 worker(s), runtime epoll\n";
        assert_eq!(runtime_from_log(epoll).as_deref(), Some("epoll"));
        assert_eq!(
            runtime_from_log("INFO lbd: listener \"http\" on 127.0.0.1:1"),
            None
        );
    }
}
