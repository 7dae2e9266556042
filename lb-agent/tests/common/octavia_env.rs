//! A real OpenStack Octavia 19 (API, driver agent, health manager) on
//! loopback for integration tests, run by `scripts/octavia/octavia_env.py`
//! from the venv `scripts/octavia/setup.sh` makes. A stand-in provider
//! (`scripts/octavia/provider.py`) turns pending objects ACTIVE (or DELETED)
//! within about a second, so the real API can be driven like a cloud's.
//!
//! [`OctaviaEnv::start`] returns `None` (the test skips) when the venv is
//! missing, unless `LBD_TEST_REQUIRE_TOOLS` is set. Dropping the env stops
//! every process it started. Every wait is bounded; all traffic stays on
//! 127.0.0.0/8.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// The project every test object belongs to (sent as `X-Project-Id`).
pub const PROJECT_ID: &str = "e3cd678b11784734bc366148aa37580e";
/// Any UUID is a valid `vip_subnet_id` with the no-op network driver.
pub const VIP_SUBNET_ID: &str = "11111111-2222-3333-4444-555555555555";
/// Octavia version `scripts/octavia/setup.sh` installs (its marker file).
const OCTAVIA_VERSION: &str = "19.0.0";
/// Longest `octavia_env.py up` may take (it gives up itself after 90 s).
const UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the other script commands may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a wait for ACTIVE (or for a 409 to clear) may take.
pub const WAIT: Duration = Duration::from_secs(30);

static ENV_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A running Octavia; stopped on drop.
pub struct OctaviaEnv {
    dir: PathBuf,
    python: PathBuf,
    script: PathBuf,
    api_url: String,
    api_addr: SocketAddr,
    health_manager: SocketAddr,
    heartbeat_key: String,
    heartbeats_sent: AtomicUsize,
}

/// The repo root, the venv and the script, wherever the test runs from.
fn paths() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned();
    // A relative LBD_OCTAVIA_VENV is taken from the repo root, as setup.sh does.
    let venv = std::env::var_os("LBD_OCTAVIA_VENV")
        .map(|v| root.join(v))
        .unwrap_or_else(|| root.join("target/octavia-venv"));
    (root, venv)
}

/// Runs `cmd` with its output in `log`, killing it after `timeout`.
fn run_bounded(mut cmd: Command, log: &Path, timeout: Duration) -> Result<(), String> {
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let out = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("{cmd:?} failed ({status}):\n{out}"));
            }
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("{cmd:?} still running after {timeout:?}:\n{out}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    }
}

/// `fields[key]` merged with the keys of `extra` (an object or null).
fn merged(mut fields: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(more)) = (fields.as_object_mut(), extra) {
        base.extend(more);
    }
    fields
}

impl OctaviaEnv {
    /// Starts Octavia in a fresh temp dir, or `None` when it is not installed
    /// (see the module doc). Panics when it is installed but does not start.
    pub fn start() -> Option<OctaviaEnv> {
        let (root, venv) = paths();
        let python = venv.join("bin/python");
        let marker = venv.join(format!(".lbd-octavia-{OCTAVIA_VERSION}"));
        if !python.exists() || !marker.exists() {
            if let Some(why) = std::env::var_os("LBD_OCTAVIA_SKIP") {
                println!("skipped: {}", why.to_string_lossy());
                return None;
            }
            let msg = format!(
                "no Octavia {OCTAVIA_VERSION} in {} (run: bash scripts/octavia/setup.sh)",
                venv.display()
            );
            assert!(
                std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_none(),
                "LBD_TEST_REQUIRE_TOOLS is set but {msg}"
            );
            println!("skipped: {msg}");
            return None;
        }
        let n = ENV_COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lbd-octavia-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("octavia temp dir");
        let script = root.join("scripts/octavia/octavia_env.py");
        let mut up = Command::new(&python);
        up.arg(&script).arg("up").arg("--dir").arg(&dir);
        let started = Instant::now();
        if let Err(e) = run_bounded(up, &dir.join("up.log"), UP_TIMEOUT) {
            // `up` stops what it started when it fails, but not when killed.
            let mut down = Command::new(&python);
            down.arg(&script).arg("down").arg("--dir").arg(&dir);
            let _ = run_bounded(down, &dir.join("down.log"), SCRIPT_TIMEOUT);
            panic!("Octavia did not start (logs in {}): {e}", dir.display());
        }
        let env: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("env.json")).expect("env.json"))
                .expect("env.json is JSON");
        let field = |k: &str| env[k].as_str().expect(k).to_owned();
        let api_url = field("api_url");
        let api_addr = api_url
            .trim_start_matches("http://")
            .parse()
            .expect("api_url is http://IP:PORT");
        let health_manager = field("health_manager").parse().expect("health_manager");
        println!(
            "octavia up in {:.1} s: {api_url}, health manager {health_manager}, dir {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        Some(OctaviaEnv {
            heartbeat_key: field("heartbeat_key"),
            dir,
            python,
            script,
            api_url,
            api_addr,
            health_manager,
            heartbeats_sent: AtomicUsize::new(0),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Where heartbeats go (UDP).
    pub fn health_manager(&self) -> SocketAddr {
        self.health_manager
    }

    /// The health manager's HMAC key.
    pub fn heartbeat_key(&self) -> &str {
        &self.heartbeat_key
    }

    /// The env's directory: octavia.conf, the SQLite DB, one log per process.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of one process's log (`api`, `health-manager`,
    /// `driver-agent`, `provider`), for failure messages.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `octavia_env.py <args>` against this env; panics on failure.
    fn script(&self, args: &[&str], log: &str) {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).args(args).arg("--dir").arg(&self.dir);
        if let Err(e) = run_bounded(cmd, &self.dir.join(log), SCRIPT_TIMEOUT) {
            panic!("octavia_env.py {args:?}: {e}");
        }
    }

    /// One API request as the test project; returns the status code and the
    /// JSON body (`null` when empty, a string when not JSON).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.request(method, path, body)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => panic!("{method} {path}: {e:#}"),
            Err(_) => panic!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"),
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let stream = tokio::net::TcpStream::connect(self.api_addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.api_addr.to_string())
            .header("x-project-id", PROJECT_ID)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        conn.abort();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// Polls until the load balancer and every child in its status tree are
    /// ACTIVE; panics with the last state seen after [`WAIT`].
    pub async fn wait_active(&self, lb_id: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let lb = self
                .api("GET", &format!("/v2/lbaas/loadbalancers/{lb_id}"), None)
                .await;
            let tree = self
                .api(
                    "GET",
                    &format!("/v2/lbaas/loadbalancers/{lb_id}/status"),
                    None,
                )
                .await;
            let active = lb.0 == 200
                && lb.1["loadbalancer"]["provisioning_status"] == "ACTIVE"
                && tree.0 == 200
                && !tree.1.to_string().contains("\"PENDING_");
            if active {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "load balancer {lb_id} not ACTIVE within {WAIT:?}: {lb:?} {tree:?}\nprovider log:\n{}",
                self.log_tail("provider", 10)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a change, retrying while the load balancer is immutable (409);
    /// panics unless it is accepted (2xx), then waits for `lb_id` to be
    /// ACTIVE again. Returns the answer.
    pub async fn change(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        lb_id: &str,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, answer) = self.api(method, path, body.clone()).await;
            match code {
                200..=299 => {
                    self.wait_active(lb_id).await;
                    return answer;
                }
                409 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => panic!("{method} {path} {body:?}: {code} {answer}"),
            }
        }
    }

    /// The load balancer a pool belongs to.
    pub async fn lb_of_pool(&self, pool_id: &str) -> String {
        let (code, pool) = self
            .api("GET", &format!("/v2/lbaas/pools/{pool_id}"), None)
            .await;
        assert_eq!(code, 200, "pool {pool_id}: {pool}");
        pool["pool"]["loadbalancers"][0]["id"]
            .as_str()
            .expect("pool's load balancer")
            .to_owned()
    }

    /// Creates a load balancer with its VIP on `vip_address` (e.g. a
    /// 127.0.0.x address) and waits for it to be ACTIVE. Returns its id.
    pub async fn create_lb(&self, vip_address: &str) -> String {
        let body = json!({"loadbalancer": {
            "name": format!("lb-{vip_address}"),
            "vip_subnet_id": VIP_SUBNET_ID,
            "vip_address": vip_address,
        }});
        let (code, answer) = self
            .api("POST", "/v2/lbaas/loadbalancers", Some(body))
            .await;
        assert_eq!(code, 201, "create load balancer: {answer}");
        let id = answer["loadbalancer"]["id"]
            .as_str()
            .expect("lb id")
            .to_owned();
        self.wait_active(&id).await;
        id
    }

    /// Deletes a load balancer with everything in it (cascade) and waits
    /// until the API no longer lists it.
    pub async fn delete_lb(&self, lb_id: &str) {
        let path = format!("/v2/lbaas/loadbalancers/{lb_id}");
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, answer) = self
                .api("DELETE", &format!("{path}?cascade=true"), None)
                .await;
            match code {
                204 => break,
                409 if Instant::now() < deadline => {}
                _ => panic!("DELETE {path}: {code} {answer}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let (code, answer) = self.api("GET", &path, None).await;
            if code == 404 || answer["loadbalancer"]["provisioning_status"] == "DELETED" {
                return;
            }
            assert!(Instant::now() < deadline, "{lb_id} not deleted: {answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a TCP listener (override with `extra`, e.g.
    /// `{"protocol": "HTTP"}`); waits for ACTIVE. Returns its id.
    pub async fn create_listener(&self, lb_id: &str, port: u16, extra: Value) -> String {
        let fields = json!({"loadbalancer_id": lb_id, "protocol": "TCP", "protocol_port": port});
        let body = json!({"listener": merged(fields, extra)});
        let answer = self
            .change("POST", "/v2/lbaas/listeners", Some(body), lb_id)
            .await;
        answer["listener"]["id"]
            .as_str()
            .expect("listener id")
            .to_owned()
    }

    /// Creates a TCP pool as the listener's default pool; waits for ACTIVE.
    pub async fn create_pool(&self, listener_id: &str, algorithm: &str, extra: Value) -> String {
        let (code, listener) = self
            .api("GET", &format!("/v2/lbaas/listeners/{listener_id}"), None)
            .await;
        assert_eq!(code, 200, "listener {listener_id}: {listener}");
        let lb_id = listener["listener"]["loadbalancers"][0]["id"]
            .as_str()
            .expect("listener's load balancer")
            .to_owned();
        let fields =
            json!({"listener_id": listener_id, "protocol": "TCP", "lb_algorithm": algorithm});
        let body = json!({"pool": merged(fields, extra)});
        let answer = self
            .change("POST", "/v2/lbaas/pools", Some(body), &lb_id)
            .await;
        answer["pool"]["id"].as_str().expect("pool id").to_owned()
    }

    /// Adds a member to a pool; waits for ACTIVE. Returns its id.
    pub async fn create_member(
        &self,
        pool_id: &str,
        address: &str,
        port: u16,
        extra: Value,
    ) -> String {
        let lb_id = self.lb_of_pool(pool_id).await;
        let fields = json!({"address": address, "protocol_port": port});
        let body = json!({"member": merged(fields, extra)});
        let path = format!("/v2/lbaas/pools/{pool_id}/members");
        let answer = self.change("POST", &path, Some(body), &lb_id).await;
        answer["member"]["id"]
            .as_str()
            .expect("member id")
            .to_owned()
    }

    /// Adds a health monitor (`fields`, e.g. `{"type": "HTTP", "delay": 1,
    /// "timeout": 1, "max_retries": 1}`) to a pool; waits for ACTIVE.
    pub async fn create_healthmonitor(&self, pool_id: &str, fields: Value) -> String {
        let lb_id = self.lb_of_pool(pool_id).await;
        let body = json!({"healthmonitor": merged(json!({"pool_id": pool_id}), fields)});
        let answer = self
            .change("POST", "/v2/lbaas/healthmonitors", Some(body), &lb_id)
            .await;
        answer["healthmonitor"]["id"]
            .as_str()
            .expect("health monitor id")
            .to_owned()
    }

    /// Registers an amphora for `lb_id` in Octavia's DB, so the health
    /// manager accepts heartbeats carrying `amphora_id` (no REST call
    /// creates amphorae).
    pub fn register_amphora(&self, amphora_id: &str, lb_id: &str) {
        self.script(
            &[
                "register-amphora",
                "--amphora-id",
                amphora_id,
                "--lb-id",
                lb_id,
            ],
            "register-amphora.log",
        );
    }

    /// Sends one heartbeat (`message` as the amphora agent would, its "id"
    /// replaced by `amphora_id`) with Octavia's own Python code: zlib + HMAC
    /// with this env's key, UDP to the health manager.
    pub fn send_heartbeat_py(&self, amphora_id: &str, message: &Value) {
        let n = self.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.join(format!("heartbeat-{n}.json"));
        std::fs::write(&file, message.to_string()).expect("write heartbeat json");
        let file = file.to_str().expect("utf-8 path").to_owned();
        self.script(
            &[
                "send-heartbeat",
                "--json",
                &file,
                "--amphora-id",
                amphora_id,
            ],
            "send-heartbeat.log",
        );
    }
}

impl Drop for OctaviaEnv {
    fn drop(&mut self) {
        let mut down = Command::new(&self.python);
        down.arg(&self.script)
            .arg("down")
            .arg("--dir")
            .arg(&self.dir);
        if let Err(e) = run_bounded(down, &self.dir.join("down.log"), SCRIPT_TIMEOUT) {
            eprintln!("octavia_env down: {e}");
        }
        if std::thread::panicking() {
            eprintln!("octavia logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
