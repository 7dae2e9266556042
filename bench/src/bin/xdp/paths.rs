//! The four paths from the client to the members, their configs, and the
//! running proxy (lbd or HAProxy in the lb namespace) with lbd's counters.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

use bench::procs::{self, Guard, Pin};
use lbd_test_support::netlab::http_get;

use crate::topo::{in_ns, Topo, MEMBERS, MEMBER_PORT, VIP, VIP_PORT};

/// lbd's admin server, inside the lb namespace.
const ADMIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8404);
/// Bound for a proxy's start (incl. lbd's health checks passing).
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// No proxy: the client asks member 0 directly, forwarded by the lb
    /// ns's kernel (plain IP routing).
    Direct,
    /// lbd, listener `fast_path = "xdp"`.
    Xdp,
    /// lbd, listener `fast_path = "none"` (its userspace proxy).
    Userspace,
    /// HAProxy 2.6 (Debian), `mode tcp`, `balance roundrobin`.
    Haproxy,
}

impl PathKind {
    pub const ALL: [PathKind; 4] = [
        PathKind::Direct,
        PathKind::Xdp,
        PathKind::Userspace,
        PathKind::Haproxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Xdp => "xdp",
            PathKind::Userspace => "userspace",
            PathKind::Haproxy => "haproxy",
        }
    }

    pub fn is_lbd(self) -> bool {
        matches!(self, PathKind::Xdp | PathKind::Userspace)
    }
}

/// lbd's config for the `xdp` (`fast_path = "xdp"`) or `userspace` path:
/// `interfaces` are the lb's veths (toward the client, then the members).
/// One worker (command line), TCP health checks every second (they also
/// make the lb resolve the members' MAC addresses, which the XDP path
/// needs); everything else at lbd's defaults.
pub fn render_lbd(xdp: bool, interfaces: &[String], members: &[Ipv4Addr]) -> String {
    let fast_path = if xdp { "xdp" } else { "none" };
    let mut s = format!(
        "# bench xdp: lbd in the lb namespace, fast_path = {fast_path}\n\
         [global]\ndrain_timeout = \"1s\"\n\n[admin]\nbind = \"{ADMIN}\"\n"
    );
    if xdp {
        let ifs: Vec<String> = interfaces.iter().map(|i| format!("\"{i}\"")).collect();
        let _ = write!(s, "\n[xdp]\ninterfaces = [{}]\n", ifs.join(", "));
    }
    let _ = write!(
        s,
        "\n[[listener]]\nname = \"web\"\nbind = \"{VIP}:{VIP_PORT}\"\npool = \"web\"\n\
         fast_path = \"{fast_path}\"\n\n\
         [[pool]]\nname = \"web\"\nalgorithm = \"round_robin\"\n\n\
         [pool.health]\ntype = \"tcp\"\ninterval = \"1s\"\n"
    );
    for ip in members {
        let _ = write!(
            s,
            "\n[[pool.member]]\naddress = \"{ip}\"\nport = {MEMBER_PORT}\n"
        );
    }
    s
}

/// HAProxy's config: the global/defaults of the bench's HAProxy
/// (`bench::proxies::render_haproxy`, which only renders 127.0.0.1
/// listeners and servers), one `listen` on the VIP, the members.
pub fn render_haproxy(members: &[Ipv4Addr]) -> String {
    let mut s = String::from(
        "# bench xdp: HAProxy master-worker, one thread (global/defaults as bench's HAProxy)\n\
         global\n    nbthread 1\n    maxconn 200000\n    no strict-limits\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 300s\n\
         \x20   timeout server 300s\n    retries 3\n    option redispatch\n",
    );
    let _ = write!(
        s,
        "\nlisten web\n    bind {VIP}:{VIP_PORT}\n    balance roundrobin\n"
    );
    for (i, ip) in members.iter().enumerate() {
        let _ = writeln!(s, "    server m{i} {ip}:{MEMBER_PORT}");
    }
    s
}

/// lbd's counters that tell which path carried the traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LbdCounters {
    /// Listener `web`: connections let in by the userspace proxy.
    pub sessions: u64,
    /// XDP: flows created, packets forwarded, packets dropped (0 without
    /// the fast path).
    pub xdp_new_flows: u64,
    pub xdp_packets: u64,
    pub xdp_drops: u64,
    /// Flows in the XDP connection table (a gauge, not a counter).
    pub xdp_flows: u64,
}

impl LbdCounters {
    pub fn since(&self, before: &LbdCounters) -> LbdCounters {
        LbdCounters {
            sessions: self.sessions.saturating_sub(before.sessions),
            xdp_new_flows: self.xdp_new_flows.saturating_sub(before.xdp_new_flows),
            xdp_packets: self.xdp_packets.saturating_sub(before.xdp_packets),
            xdp_drops: self.xdp_drops.saturating_sub(before.xdp_drops),
            xdp_flows: self.xdp_flows,
        }
    }
}

/// Reads them from `/stats.json`.
pub fn parse_counters(stats: &Value) -> Result<LbdCounters> {
    let web = stats["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == "web"))
        .context("no listener `web` in /stats.json")?;
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let xdp = &stats["xdp"];
    Ok(LbdCounters {
        sessions: web["sessions_total"]
            .as_u64()
            .context("no sessions_total for listener web")?,
        xdp_new_flows: num(&xdp["new_flows_total"]),
        xdp_packets: num(&xdp["packets_total"]),
        xdp_drops: xdp["drops_total"]
            .as_array()
            .map_or(0, |d| d.iter().map(|x| num(&x["packets"])).sum()),
        xdp_flows: num(&xdp["flows"]),
    })
}

/// A BPF program's run statistics (`bpftool prog show id N -j`; counted
/// while BPF stats are enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgStats {
    pub fn since(&self, b: &ProgStats) -> ProgStats {
        ProgStats {
            run_time_ns: self.run_time_ns.saturating_sub(b.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(b.run_cnt),
        }
    }
}

/// Parses `bpftool prog show id N -j` (the run fields are absent until the
/// program ran with stats enabled).
pub fn parse_prog_stats(json: &str) -> Result<ProgStats> {
    let v: Value = serde_json::from_str(json).context("parsing bpftool's JSON")?;
    if v.get("id").is_none() {
        bail!("no program in bpftool's answer: {json}");
    }
    Ok(ProgStats {
        run_time_ns: v["run_time_ns"].as_u64().unwrap_or(0),
        run_cnt: v["run_cnt"].as_u64().unwrap_or(0),
    })
}

/// The XDP program id attached to an interface, from `ip -j link show`:
/// `[{"ifname": ..., "xdp": {"mode": 1, "prog": {"id": N, ...}}}]`.
pub fn parse_xdp_prog_id(json: &str) -> Option<u32> {
    let v: Value = serde_json::from_str(json).ok()?;
    let id = v.get(0)?.get("xdp")?.get("prog")?.get("id")?.as_u64()?;
    u32::try_from(id).ok()
}

/// A path ready for load: the proxy running (none for `direct`).
pub struct Running {
    pub kind: PathKind,
    pub target: SocketAddrV4,
    guard: Option<Guard>,
    pub command: Option<String>,
    pub config: Option<String>,
    /// lbd's XDP attach line (`xdp: attached to lb-c (native), ...`).
    pub xdp_attached: Option<String>,
    pub runtime: Option<String>,
    /// The counters read last (nothing ran since): the next run's start.
    last: Option<LbdCounters>,
    /// The id of lbd's XDP program on the lb's client-side veth.
    pub xdp_prog_id: Option<u32>,
    /// The `xdp` object of the last `/stats.json` read (drops by reason,
    /// interfaces and modes, flows).
    pub last_xdp_json: Option<Value>,
}

/// Why a path could not start: the XDP fast path did not attach (a skip
/// for the whole bench) or anything else (an error).
pub enum StartError {
    XdpUnavailable(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Other(e.into())
    }
}

impl Running {
    pub fn start(
        kind: PathKind,
        topo: &Topo,
        dir: &Path,
        logs: &Path,
        lbd: &Path,
    ) -> std::result::Result<Running, StartError> {
        let lb = topo.lab.lb();
        let mut r = Running {
            kind,
            target: topo.vip(),
            guard: None,
            command: None,
            config: None,
            xdp_attached: None,
            runtime: None,
            last: None,
            xdp_prog_id: None,
            last_xdp_json: None,
        };
        let config_path: PathBuf;
        let argv = match kind {
            PathKind::Direct => {
                r.target = topo.member(0);
                return Ok(r);
            }
            PathKind::Xdp | PathKind::Userspace => {
                let text = render_lbd(
                    kind == PathKind::Xdp,
                    &topo.lb_interfaces(),
                    &topo.member_ips(),
                );
                config_path = dir.join(format!("lbd-{}.toml", kind.name()));
                std::fs::write(&config_path, &text)?;
                r.config = Some(text);
                let bin = lbd.display().to_string();
                let cfg = config_path.display().to_string();
                in_ns(
                    lb,
                    &[
                        &bin,
                        "--workers",
                        "1",
                        "--runtime",
                        "auto",
                        "run",
                        "-c",
                        &cfg,
                    ],
                )
            }
            PathKind::Haproxy => {
                let text = render_haproxy(&topo.member_ips());
                config_path = dir.join("haproxy.cfg");
                std::fs::write(&config_path, &text)?;
                r.config = Some(text);
                let pid = dir.join("haproxy.pid").display().to_string();
                let cfg = config_path.display().to_string();
                in_ns(lb, &["haproxy", "-W", "-f", &cfg, "-p", &pid])
            }
        };
        let mut g = Guard::spawn(kind.name(), &argv, Pin::Any, logs)?;
        r.command = Some(g.command_line.clone());
        if kind.is_lbd() {
            wait_log(&mut g, &[" started: "])?;
            r.runtime = bench::proxies::runtime_from_log(&g.stderr_text());
            if kind == PathKind::Xdp {
                let line = wait_log(&mut g, &["xdp: attached to", "xdp: cannot attach"])?;
                if !line.contains("xdp: attached to") {
                    return Err(StartError::XdpUnavailable(line));
                }
                r.xdp_attached = Some(line);
                let out = topo
                    .lab
                    .lb()
                    .sh(&["ip", "-j", "link", "show", "dev", topo.lab.lb_client_if()])
                    .map_err(anyhow::Error::msg)?;
                r.xdp_prog_id = parse_xdp_prog_id(&out);
                if r.xdp_prog_id.is_none() {
                    eprintln!("xdp: no XDP program id in `ip -j link show`: {out}");
                }
            }
            r.guard = Some(g);
            r.wait_members_up(topo)?;
        } else {
            r.guard = Some(g);
        }
        // Listening and forwarding: a GET through the VIP.
        topo.wait_get(r.target, Duration::from_secs(10))
            .with_context(|| format!("{} does not answer\n{}", kind.name(), r.log_tail()))?;
        Ok(r)
    }

    /// Waits until lbd's health checks have every member up.
    fn wait_members_up(&mut self, topo: &Topo) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            let last = match self.stats(topo) {
                Ok(v) => {
                    let statuses: Vec<String> = v["pools"][0]["members"]
                        .as_array()
                        .map(|ms| {
                            ms.iter()
                                .map(|m| m["status"].as_str().unwrap_or("?").to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    if statuses.len() == MEMBERS && statuses.iter().all(|s| s == "up") {
                        return Ok(());
                    }
                    format!("member statuses {statuses:?}")
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "lbd's members are not all up after {START_TIMEOUT:?}: {last}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// lbd's `/stats.json` (from inside the lb namespace).
    pub fn stats(&self, topo: &Topo) -> Result<Value> {
        let body = http_get(topo.lab.lb(), ADMIN, "/stats.json", Duration::from_secs(5))
            .map_err(anyhow::Error::msg)?;
        serde_json::from_slice(&body).context("parsing /stats.json")
    }

    /// lbd's counters, after waiting 1.2 s so that the XDP counters
    /// (published once a second) include everything before the call.
    pub fn counters(&mut self, topo: &Topo) -> Result<Option<LbdCounters>> {
        if !self.kind.is_lbd() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1200));
        let stats = self.stats(topo)?;
        let c = parse_counters(&stats)?;
        self.last = Some(c);
        self.last_xdp_json = Some(stats["xdp"].clone()).filter(|x| !x.is_null());
        Ok(Some(c))
    }

    /// The counters read by the last call of [`Running::counters`] if no
    /// traffic went through since (the caller knows), else reads them.
    pub fn counters_since_last(&mut self, topo: &Topo) -> Result<Option<LbdCounters>> {
        match self.last.take() {
            Some(c) => Ok(Some(c)),
            None => self.counters(topo),
        }
    }

    /// Run statistics of lbd's XDP program (None if unknown or bpftool
    /// fails).
    pub fn xdp_prog_stats(&self) -> Option<ProgStats> {
        let id = self.xdp_prog_id?.to_string();
        let out = std::process::Command::new("bpftool")
            .args(["prog", "show", "id", &id, "-j"])
            .output()
            .ok()?;
        parse_prog_stats(&String::from_utf8_lossy(&out.stdout)).ok()
    }

    pub fn pgid(&self) -> Option<i32> {
        self.guard.as_ref().map(Guard::pid)
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(g) = &mut self.guard {
            if let Some(status) = g.try_wait()? {
                bail!(
                    "{} exited ({status})\n{}",
                    self.kind.name(),
                    g.output_tail()
                );
            }
        }
        Ok(())
    }

    /// The first lines of the proxy's stdout and stderr.
    pub fn log_head(&self, lines: usize) -> String {
        self.guard.as_ref().map_or_else(String::new, |g| {
            g.stdout_text()
                .lines()
                .chain(g.stderr_text().lines())
                .take(lines)
                .collect::<Vec<_>>()
                .join("\n")
        })
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

/// Waits (bounded) for a line of lbd's log containing one of `needles`;
/// returns it.
fn wait_log(g: &mut Guard, needles: &[&str]) -> Result<String> {
    let mut found = None;
    let ok = procs::wait_until(START_TIMEOUT, || {
        if let Some(status) = g.try_wait()? {
            bail!("lbd exited ({status})\n{}", g.output_tail());
        }
        found = g
            .stderr_text()
            .lines()
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .map(str::to_string);
        Ok(found.is_some())
    })?;
    if !ok {
        bail!(
            "lbd logged no line with any of {needles:?} within {START_TIMEOUT:?}\n{}",
            g.output_tail()
        );
    }
    Ok(found.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Ipv4Addr> {
        (1..=3).map(|i| Ipv4Addr::new(10, 199, i, 2)).collect()
    }

    #[test]
    fn lbd_configs() {
        let ifs: Vec<String> = ["lb-c", "lb-m0", "lb-m1", "lb-m2"]
            .map(String::from)
            .to_vec();
        let x = render_lbd(true, &ifs, &members());
        for needle in [
            "[xdp]\ninterfaces = [\"lb-c\", \"lb-m0\", \"lb-m1\", \"lb-m2\"]\n",
            "bind = \"10.199.200.1:80\"",
            "fast_path = \"xdp\"",
            "[admin]\nbind = \"127.0.0.1:8404\"",
            "[pool.health]\ntype = \"tcp\"\ninterval = \"1s\"",
            "address = \"10.199.3.2\"\nport = 8080",
        ] {
            assert!(x.contains(needle), "missing {needle:?} in\n{x}");
        }
        assert_eq!(x.matches("[[pool.member]]").count(), 3);
        let u = render_lbd(false, &ifs, &members());
        assert!(u.contains("fast_path = \"none\""));
        assert!(!u.contains("[xdp]"));
        // The same config otherwise.
        let strip = |c: &str| {
            c.lines()
                .filter(|l| {
                    !l.contains("fast_path") && !l.starts_with("interfaces") && *l != "[xdp]"
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&x).replace("\n\n\n", "\n\n"), strip(&u));
    }

    #[test]
    fn haproxy_config() {
        let c = render_haproxy(&members());
        for needle in [
            "nbthread 1",
            "mode tcp",
            "balance roundrobin",
            "bind 10.199.200.1:80",
            "server m0 10.199.1.2:8080",
            "server m2 10.199.3.2:8080",
        ] {
            assert!(c.contains(needle), "missing {needle:?} in\n{c}");
        }
    }

    #[test]
    fn bpf_program_json() {
        // Shapes of `ip -j link show dev lb-c` (iproute2 6.1) and `bpftool
        // prog show id N -j` (v7.1), trimmed.
        let link = r#"[{"ifindex":2,"ifname":"lb-c","xdp":{"mode":1,"prog":{"id":4711}}}]"#;
        assert_eq!(parse_xdp_prog_id(link), Some(4711));
        assert_eq!(
            parse_xdp_prog_id(r#"[{"ifindex":2,"ifname":"lb-c"}]"#),
            None
        );
        let p = parse_prog_stats(
            r#"{"id":4711,"type":"xdp","name":"xdp_lb","run_time_ns":123456,"run_cnt":789}"#,
        )
        .unwrap();
        assert_eq!((p.run_time_ns, p.run_cnt), (123_456, 789));
        let fresh = parse_prog_stats(r#"{"id":4711,"type":"xdp","name":"xdp_lb"}"#).unwrap();
        assert_eq!(p.since(&fresh), p);
        assert!(parse_prog_stats("{}").is_err());
    }

    #[test]
    fn counters_from_stats_json() {
        // Shape of lbd's /stats.json (lbd/src/admin/stats.rs), trimmed.
        let v: Value = serde_json::from_str(
            r#"{"xdp":{"listeners":["web"],"interfaces":[{"interface":"lb-c","mode":"native"}],
                "error":null,"packets_total":900,"bytes_total":1,"new_flows_total":100,"flows":4,
                "drops_total":[{"reason":"no_member","packets":2},{"reason":"conntrack_insert","packets":1}]},
               "listeners":[{"name":"other","sessions_total":9},{"name":"web","sessions_total":7}],
               "pools":[]}"#,
        )
        .unwrap();
        let c = parse_counters(&v).unwrap();
        assert_eq!(
            c,
            LbdCounters {
                sessions: 7,
                xdp_new_flows: 100,
                xdp_packets: 900,
                xdp_drops: 3,
                xdp_flows: 4
            }
        );
        let none: Value =
            serde_json::from_str(r#"{"xdp":null,"listeners":[{"name":"web","sessions_total":5}]}"#)
                .unwrap();
        let c2 = parse_counters(&none).unwrap();
        assert_eq!((c2.sessions, c2.xdp_new_flows), (5, 0));
        assert_eq!(c.since(&c2).sessions, 2);
        assert!(parse_counters(&serde_json::json!({"listeners": []})).is_err());
    }
}
