//! The backends every configuration shares: three separate nginx instances
//! (one process group each, so one can be killed) serving `/100b` and
//! `/1m`, one `iperf3 -s`, and (when a UDP scenario runs) one UDP echo
//! server (the bench binary's `__udp-echo`, see `udp.rs`).

use std::collections::BTreeSet;
use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::procs::{self, Guard, Pin};
use crate::udp;

/// Hands out free 127.0.0.1 ports below the ephemeral range (so outgoing
/// connections never take them), each once, free for TCP and for UDP (a
/// TCP and a UDP listener may share one: iperf3's UDP test).
pub struct Ports {
    next: u16,
    taken: BTreeSet<u16>,
}

impl Ports {
    pub fn new(first: u16) -> Ports {
        Ports {
            next: first,
            taken: BTreeSet::new(),
        }
    }

    pub fn take(&mut self) -> Result<u16> {
        while self.next < 32_000 {
            let p = self.next;
            self.next += 1;
            if self.taken.contains(&p) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", p)).is_ok()
                && UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && !procs::is_listening(p)?
            {
                self.taken.insert(p);
                return Ok(p);
            }
        }
        bail!("no free port on 127.0.0.1 below 32000")
    }
}

pub const SMALL_PATH: &str = "/100b";
pub const LARGE_PATH: &str = "/1m";
pub const SMALL_SIZE: usize = 100;
pub const LARGE_SIZE: usize = 1 << 20;

/// Writes the two files the backends serve into `www`.
pub fn write_content(www: &Path) -> Result<()> {
    fs::create_dir_all(www)?;
    let mut small = vec![b'x'; SMALL_SIZE - 1];
    small.push(b'\n');
    fs::write(www.join(&SMALL_PATH[1..]), small)?;
    let large: Vec<u8> = (0..LARGE_SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    fs::write(www.join(&LARGE_PATH[1..]), large)?;
    Ok(())
}

/// nginx.conf for one backend.
pub fn render_nginx(dir: &Path, www: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "# lbd bench: HTTP backend on 127.0.0.1:{port} (one worker; its own prefix, pid, logs)
worker_processes 1;
worker_rlimit_nofile 70000;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log notice;

events {{
    worker_connections 30000;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location / {{ }}
    }}
}}
",
        www = www.display()
    )
}

/// One nginx backend; restartable after a kill.
pub struct Backend {
    pub name: String,
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
    guard: Option<Guard>,
}

impl Backend {
    fn create(name: &str, port: u16, root: &Path, www: &Path) -> Result<Backend> {
        let dir = root.join(name);
        fs::create_dir_all(dir.join("tmp"))?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, render_nginx(&dir, www, port))?;
        Ok(Backend {
            name: name.to_string(),
            port,
            dir,
            conf,
            guard: None,
        })
    }

    pub fn argv(&self) -> Vec<String> {
        vec![
            "nginx".into(),
            "-p".into(),
            self.dir.display().to_string(),
            "-c".into(),
            self.conf.display().to_string(),
            "-e".into(),
            self.dir.join("error.log").display().to_string(),
        ]
    }

    pub fn start(&mut self, pin: Pin, logs: &Path) -> Result<()> {
        self.kill();
        let mut g = Guard::spawn(&self.name, &self.argv(), pin, logs)?;
        procs::wait_listening(&mut g, self.port, Duration::from_secs(10)).with_context(|| {
            format!(
                "error.log:\n{}",
                fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            )
        })?;
        self.guard = Some(g);
        Ok(())
    }

    /// SIGKILL to master and worker (the whole process group).
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
        }
    }

    pub fn is_running(&mut self) -> Result<bool> {
        match &mut self.guard {
            Some(g) => Ok(g.try_wait()?.is_none()),
            None => Ok(false),
        }
    }

    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.conf).unwrap_or_default()
    }
}

/// All backends of one run.
pub struct Backends {
    pub http: Vec<Backend>,
    pub iperf_port: u16,
    iperf: Option<Guard>,
    /// The UDP echo server's port, once [`Backends::start_udp_echo`] ran.
    pub udp_echo_port: Option<u16>,
    /// Its command line (the bench binary's `__udp-echo`).
    udp_echo_argv: Vec<String>,
    udp_echo: Option<Guard>,
    pub pin: Pin,
    logs: PathBuf,
}

impl Backends {
    pub fn start(root: &Path, logs: &Path, ports: &mut Ports, pin: Pin) -> Result<Backends> {
        let www = root.join("www");
        write_content(&www)?;
        let mut http = Vec::new();
        for i in 1..=3 {
            http.push(Backend::create(
                &format!("backend{i}"),
                ports.take()?,
                root,
                &www,
            )?);
        }
        let mut b = Backends {
            http,
            iperf_port: ports.take()?,
            iperf: None,
            udp_echo_port: None,
            udp_echo_argv: Vec::new(),
            udp_echo: None,
            pin,
            logs: logs.to_path_buf(),
        };
        for be in &mut b.http {
            be.start(pin, logs)?;
        }
        b.start_iperf()?;
        Ok(b)
    }

    fn start_iperf(&mut self) -> Result<()> {
        let argv: Vec<String> = vec![
            "iperf3".into(),
            "-s".into(),
            "-B".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.iperf_port.to_string(),
        ];
        let mut g = Guard::spawn("iperf3-server", &argv, self.pin, &self.logs)?;
        procs::wait_listening(&mut g, self.iperf_port, Duration::from_secs(10))?;
        self.iperf = Some(g);
        Ok(())
    }

    /// Starts the UDP echo server, `program __udp-echo --port P` (program:
    /// the bench binary), pinned like the other backends, and checks that
    /// it answers.
    pub fn start_udp_echo(&mut self, ports: &mut Ports, program: &Path) -> Result<()> {
        let port = ports.take()?;
        self.udp_echo_port = Some(port);
        self.udp_echo_argv = vec![
            program.display().to_string(),
            udp::ECHO_COMMAND.into(),
            "--port".into(),
            port.to_string(),
        ];
        self.launch_udp_echo()
    }

    fn launch_udp_echo(&mut self) -> Result<()> {
        let port = self.udp_echo_port.context("no UDP echo port")?;
        let mut g = Guard::spawn("udp-echo", &self.udp_echo_argv, self.pin, &self.logs)?;
        procs::wait_udp_bound(&mut g, port, Duration::from_secs(10))?;
        udp::check_echo(port).with_context(|| g.output_tail())?;
        self.udp_echo = Some(g);
        Ok(())
    }

    pub fn http_ports(&self) -> Vec<u16> {
        self.http.iter().map(|b| b.port).collect()
    }

    /// Restarts whatever is not running; returns what it restarted.
    pub fn ensure_running(&mut self) -> Result<Vec<String>> {
        let mut restarted = Vec::new();
        let (pin, logs) = (self.pin, self.logs.clone());
        for be in &mut self.http {
            if !be.is_running()? {
                be.start(pin, &logs)?;
                restarted.push(be.name.clone());
            }
        }
        let iperf_alive = match &mut self.iperf {
            Some(g) => g.try_wait()?.is_none(),
            None => false,
        };
        if !iperf_alive {
            if let Some(g) = &self.iperf {
                restarted.push(format!(
                    "iperf3 server ({})",
                    procs::tail(&g.stderr_text(), 300).trim()
                ));
            }
            self.start_iperf()?;
        }
        if self.udp_echo_port.is_some() {
            let alive = match &mut self.udp_echo {
                Some(g) => g.try_wait()?.is_none(),
                None => false,
            };
            if !alive {
                if let Some(g) = &self.udp_echo {
                    restarted.push(format!(
                        "udp echo ({})",
                        procs::tail(&g.stderr_text(), 300).trim()
                    ));
                }
                self.launch_udp_echo()?;
            }
        }
        Ok(restarted)
    }

    pub fn command_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .http
            .iter()
            .map(|b| procs::shell_words(&b.argv()))
            .collect();
        v.push(format!("iperf3 -s -B 127.0.0.1 -p {}", self.iperf_port));
        if self.udp_echo_port.is_some() {
            v.push(procs::shell_words(&self.udp_echo_argv));
        }
        v
    }

    pub fn stop(&mut self) {
        for be in &mut self.http {
            be.kill();
        }
        if let Some(mut g) = self.iperf.take() {
            g.kill();
        }
        if let Some(mut g) = self.udp_echo.take() {
            g.kill();
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_backend_config() {
        let c = render_nginx(Path::new("/w/backend1"), Path::new("/w/www"), 17001);
        for needle in [
            "worker_processes 1;",
            "worker_rlimit_nofile 70000;",
            "worker_connections 30000;",
            "access_log off;",
            "keepalive_requests 1000000;",
            "keepalive_timeout 300s;",
            "client_header_timeout 300s;",
            "pid /w/backend1/nginx.pid;",
            "error_log /w/backend1/error.log",
            "listen 127.0.0.1:17001",
            "root /w/www;",
        ] {
            assert!(c.contains(needle), "missing {needle:?} in\n{c}");
        }
    }

    #[test]
    fn ports_are_unique() {
        let mut p = Ports::new(23_000);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        assert_ne!(a, b);
        assert!(a >= 23_000 && b < 32_000);
    }
}
