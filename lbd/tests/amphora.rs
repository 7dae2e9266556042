//! Octavia's stock amphora code, end to end against lbd: the readers of
//! the stats socket (`HAProxyQuery`) answered like real HAProxy answers
//! them; the health daemon's own heartbeats, built from lbd's socket,
//! moving statuses and statistics in a real Octavia API + health manager;
//! the amphora agent's REST API uploading, validating, starting and
//! reloading lbd through a `haproxy` symlink; keepalived's
//! `haproxy-vrrp-check` following lbd's process.
//!
//! Every piece of Octavia here is its own code, from Octavia 19 in the venv
//! of `scripts/octavia/setup.sh` (found by `octavia_python()`), run by the
//! helpers `scripts/octavia/amphora_*.py`. Stand-ins, and only these:
//! - `systemctl`: `scripts/octavia/amphora_systemctl.py`, on PATH, runs the
//!   unit the agent rendered (ExecStartPre, ExecStart in its own session,
//!   ExecReload with `$MAINPID`, stop by process group): there is no
//!   systemd for the test;
//! - the agent's systemd unit directory and user/group file
//!   (`constants.SYSTEMD_DIR`, `HAPROXY_USER_GROUP_CFG`) point at scratch
//!   paths, and the ExecStart's `ip netns exec amphora-haproxy` prefix is
//!   dropped: the test has no amphora network namespace;
//! - `util.send_vip_advertisements` (GARPs from that namespace through
//!   pyroute2) is a no-op, and pyroute2 itself, which the `octavia` wheel
//!   does not install (the amphora image does), is an import-only stand-in
//!   (`scripts/octavia/amphora_stubs`) when the venv lacks it;
//! - the amphora is a row in Octavia's DB (`octavia_env.py
//!   register-amphora`): no REST call creates one.
//!
//! Tests skip with a printed reason when the venv or `/usr/sbin/haproxy`
//! is missing, unless `LBD_TEST_REQUIRE_TOOLS` is set. All traffic stays on
//! 127.0.0.0/8; every wait and every helper process is bounded, and every
//! process a test starts is killed with its process group at the end.

mod common;
#[path = "../../lb-agent/tests/common/octavia_env.rs"]
#[allow(dead_code)]
mod octavia_env;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::tools::run_bounded;
use common::*;
use octavia_env::OctaviaEnv;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

/// The amphora agent's `/var/lib/octavia/haproxy-default-user-group.conf`.
const USER_GROUP: &str = "global\n    user nobody\n    group nogroup\n";
/// Longest one helper script or request to one may take.
const HELPER_LIMIT: Duration = Duration::from_secs(60);
/// Longest a wait on Octavia's API (heartbeat -> status) may take.
const API_WAIT: Duration = Duration::from_secs(30);

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/octavia")
        .join(name)
}

/// Renders `cases` with Octavia's templater into `dir` (`<name>.cfg`; the
/// stats socket and state file under `dir/amp`).
fn render(python: &Path, cases: &Value, dir: &Path) {
    let input = dir.join("cases.json");
    std::fs::write(&input, cases.to_string()).expect("write cases");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "exec '{}' '{}' '{}' < '{}'",
            python.display(),
            script("render_haproxy_cfg.py").display(),
            dir.display(),
            input.display()
        ))
        .env("PYTHONWARNINGS", "ignore");
    let out = run_bounded(cmd, HELPER_LIMIT);
    assert!(
        out.status.success(),
        "rendering failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One rendered load balancer `lb_id` with one TCP listener on
/// `127.0.0.1:port` (ids `listener`, `pool`) in front of `members` (id,
/// address), a TCP monitor; checks every 200 ms instead of Octavia's 30 s.
fn rendered(
    python: &Path,
    dir: &Path,
    lb_id: &str,
    ids: (&str, &str),
    port: u16,
    members: &[(&str, SocketAddr)],
) -> String {
    let case = json!([{
        "name": "lb",
        "lb_id": lb_id,
        "vip": "127.0.0.1",
        "listeners": [{
            "id": ids.0, "pool_id": ids.1,
            "port": port, "algorithm": "ROUND_ROBIN", "pool_protocol": "TCP",
            "monitor": "TCP", "connection_limit": 200, "timeouts": [10000, 2000, 10000],
            "members": members.iter().map(|(id, a)| json!({
                "id": id, "ip": a.ip().to_string(), "port": a.port(), "weight": 1,
            })).collect::<Vec<_>>(),
        }],
    }]);
    render(python, &case, dir);
    let text = std::fs::read_to_string(dir.join("lb.cfg")).expect("rendered");
    text.replace("inter 30s", "inter 200ms")
        .replace("timeout check 31s", "timeout check 100ms")
}

/// Sends `line` to a stats socket and reads the answer to its end.
async fn cli(path: &Path, line: &str) -> String {
    let exchange = async {
        let mut conn = UnixStream::connect(path).await?;
        conn.write_all(format!("{line}\n").as_bytes()).await?;
        let mut answer = Vec::new();
        (&mut conn).take(1 << 20).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(WAIT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => format!("(error: {e})"),
        Err(_) => "(no answer in time)".to_owned(),
    }
}

/// `show stat` rows by (pxname, svname) -> column -> value.
fn stat_rows(answer: &str) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    let mut lines = answer.strip_prefix("# ").unwrap_or_default().lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let mut rows = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: BTreeMap<String, String> = header
            .iter()
            .map(|h| h.to_string())
            .zip(line.split(',').map(str::to_owned))
            .collect();
        if let (Some(px), Some(sv)) = (fields.get("pxname"), fields.get("svname")) {
            rows.insert((px.clone(), sv.clone()), fields);
        }
    }
    rows
}

/// Waits (bounded) until each (svname, status) in `want` holds in `show
/// stat` on `sock` and the frontends hold no connection.
async fn wait_stat(sock: &Path, want: &[(&str, &str)], who: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = cli(sock, "show stat").await;
        let rows = stat_rows(&answer);
        let status_ok = want.iter().all(|(sv, status)| {
            rows.iter()
                .any(|((_, s), r)| s == sv && r.get("status").map(String::as_str) == Some(status))
        });
        let idle = rows
            .iter()
            .filter(|((_, s), _)| s == "FRONTEND")
            .all(|(_, r)| r.get("scur").map(String::as_str) == Some("0"));
        if status_ok && idle && !rows.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: never {want:?} with no connection:\n{answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One connection through `listener`: reads the member's tag line, sends
/// `payload` bytes, reads them echoed, half-closes, reads to EOF. Returns
/// (bytes sent, bytes received).
async fn exchange(listener: SocketAddr, payload: usize) -> (u64, u64) {
    let run = async {
        let mut conn = TcpStream::connect(listener).await?;
        let tag = read_raw_line(&mut conn).await?;
        let data = vec![b'x'; payload];
        conn.write_all(&data).await?;
        let mut echoed = vec![0u8; payload];
        conn.read_exact(&mut echoed).await?;
        conn.shutdown().await?;
        let mut rest = Vec::new();
        (&mut conn).take(1 << 20).read_to_end(&mut rest).await?;
        Ok::<_, std::io::Error>((
            payload as u64,
            (tag.len() + echoed.len() + rest.len()) as u64,
        ))
    };
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("exchange through {listener} timed out"))
        .unwrap_or_else(|e| panic!("exchange through {listener}: {e}"))
}

/// A Python helper reading one request per line on stdin and answering
/// one JSON line each; killed with its process group when dropped.
struct Helper {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr_path: PathBuf,
}

impl Helper {
    fn spawn(
        python: &Path,
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        dir: &Path,
    ) -> Helper {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("helper stderr");
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(script(name))
            .args(args)
            .envs(envs.iter().copied())
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Helper {
            child,
            stdin,
            stdout,
            stderr_path,
        }
    }

    /// Sends one request line, returns the JSON answer line (bounded).
    async fn ask(&mut self, line: &str) -> Value {
        let exchange = async {
            self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
            self.stdin.flush().await?;
            self.stdout.next_line().await
        };
        let answer = match tokio::time::timeout(HELPER_LIMIT, exchange).await {
            Ok(Ok(Some(answer))) => answer,
            other => panic!(
                "helper gave no answer to {}: {other:?}; stderr:\n{}",
                line.chars().take(200).collect::<String>(),
                std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
            ),
        };
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the process group this helper leads.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

// --- 1. HAProxyQuery against HAProxy and lbd --------------------------------

/// What `scripts/octavia/amphora_query.py` returns for each socket.
fn query(python: &Path, sockets: &[(&str, &Path, &Path)]) -> Value {
    let mut cmd = Command::new(python);
    cmd.arg(script("amphora_query.py"))
        .env("PYTHONWARNINGS", "ignore");
    for (name, sock, state) in sockets {
        cmd.arg(format!("{name}={}={}", sock.display(), state.display()));
    }
    let out = run_bounded(cmd, HELPER_LIMIT);
    assert!(
        out.status.success(),
        "amphora_query.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("amphora_query.py prints JSON")
}

/// `show_stat()` rows keyed by (pxname, svname).
fn rows_of(side: &Value) -> BTreeMap<(String, String), Value> {
    side["stat"]
        .as_array()
        .expect("stat rows")
        .iter()
        .map(|r| {
            let key = (
                r["pxname"].as_str().unwrap_or_default().to_owned(),
                r["svname"].as_str().unwrap_or_default().to_owned(),
            );
            (key, r.clone())
        })
        .collect()
}

/// A counter's increase between two `show_stat()` rows ("" stays "").
fn delta(before: &Value, after: &Value, column: &str) -> String {
    let num = |v: &Value| v[column].as_str().and_then(|s| s.parse::<u64>().ok());
    match (num(before), num(after)) {
        (Some(b), Some(a)) => a.saturating_sub(b).to_string(),
        _ => after[column].as_str().unwrap_or("(missing)").to_owned(),
    }
}

/// `show servers state` lines without `srv_time_since_last_change`.
fn state_lines(state: &str) -> Vec<String> {
    let mut lines = state.lines();
    let version = lines.next().unwrap_or_default().to_owned();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    // Seconds since the server's last state change: each process started,
    // and so saw each check result, at its own moment.
    let skip = header
        .iter()
        .position(|h| *h == "srv_time_since_last_change");
    let mut out = vec![version, header.join(" ")];
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line
            .split(' ')
            .enumerate()
            // The header starts with "#", one word more than each line.
            .filter(|(i, _)| skip.map(|s| s - 1) != Some(*i))
            .map(|(_, f)| f)
            .collect();
        out.push(fields.join(" "));
    }
    out
}

async fn octavia_readers_like_haproxy(rt: &str) {
    let Some(python) = octavia_python() else {
        return;
    };
    let up = Backend::start("a", Mode::TaggedEcho).await;
    let closed = free_addr(); // nothing listens: the member goes DOWN
    let (ha_port, lbd_port) = (free_port(), free_port());
    let dir = scratch_dir();
    let text = rendered(
        &python,
        &dir,
        "lb-readers",
        ("listener-r", "pool-r"),
        ha_port,
        &[("member-up", up.addr), ("member-down", closed)],
    );
    // The same file for both, but for the bind port and the directory of
    // the stats socket (and state file).
    let ha_amp = dir.join("amp");
    let lbd_amp = dir.join("amp-lbd");
    std::fs::create_dir_all(&lbd_amp).expect("mkdir");
    let lbd_text = text
        .replace(
            &format!("{}/", ha_amp.display()),
            &format!("{}/", lbd_amp.display()),
        )
        .replace(
            &format!("127.0.0.1:{ha_port}"),
            &format!("127.0.0.1:{lbd_port}"),
        );
    assert_ne!(lbd_text, text);
    let ha_listener: SocketAddr = ([127, 0, 0, 1], ha_port).into();
    let lbd_listener: SocketAddr = ([127, 0, 0, 1], lbd_port).into();
    let Some(_haproxy) = Haproxy::start(&format!("{text}\n{USER_GROUP}"), ha_listener).await else {
        return;
    };
    let user_group = dir.join("user-group.conf");
    std::fs::write(&user_group, USER_GROUP).expect("write");
    let ug = user_group.clone();
    let _lbd = Lbd::start_with(rt, 1, &lbd_text, move |cmd| {
        cmd.arg("-c").arg(&ug);
    })
    .await;
    let ha_sock = ha_amp.join("lb-readers.sock");
    let lbd_sock = lbd_amp.join("lb-readers.sock");
    let settled = [("member-up", "UP"), ("member-down", "DOWN")];
    wait_stat(&ha_sock, &settled, "haproxy").await;
    wait_stat(&lbd_sock, &settled, "lbd").await;

    let (ha_state, lbd_state) = (dir.join("ha.state"), dir.join("lbd.state"));
    let sockets = [
        ("haproxy", ha_sock.as_path(), ha_state.as_path()),
        ("lbd", lbd_sock.as_path(), lbd_state.as_path()),
    ];
    let before = query(&python, &sockets);
    // The same connections through each.
    let payloads = [1000, 1, 4096, 70_000, 333];
    let mut sent = BTreeMap::new();
    for (who, listener) in [("haproxy", ha_listener), ("lbd", lbd_listener)] {
        let mut total = (0, 0);
        for p in payloads {
            let (s, r) = exchange(listener, p).await;
            total = (total.0 + s, total.1 + r);
        }
        sent.insert(who, total);
    }
    assert_eq!(sent["haproxy"], sent["lbd"]);
    wait_stat(&ha_sock, &settled, "haproxy").await;
    wait_stat(&lbd_sock, &settled, "lbd").await;
    let after = query(&python, &sockets);
    let (ha, lb) = (&after["haproxy"], &after["lbd"]);

    // show_info(): every line parsed (HAProxyQuery fails on a line without
    // ':'), the same keys; what the agent reads (Uptime_sec: is the
    // process fresh after a reload?) an integer, both fresh; and the
    // values that do not depend on the process's identity.
    let keys = |side: &Value| -> Vec<String> {
        side["info"]
            .as_object()
            .expect("info")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys(ha), keys(lb), "show info keys");
    for side in [ha, lb] {
        let uptime: u64 = side["info"]["Uptime_sec"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Uptime_sec: {}", side["info"]));
        assert!(uptime < 600, "{uptime}");
    }
    for key in [
        "Name",
        "CurrConns",
        "Stopping",
        "Nbproc",
        "Process_num",
        "Maxconn",
    ] {
        assert_eq!(ha["info"][key], lb["info"][key], "show info {key}");
    }

    // show_stat(): the same columns and rows; what the health daemon reads
    // (pxname, svname, status, weight, scur) equal, the counters (stot,
    // bin, bout, ereq) equal as increments over these connections (the
    // harness probed HAProxy's port once before `before`).
    let (ha_rows, lb_rows) = (rows_of(ha), rows_of(lb));
    let (ha_before, lb_before) = (rows_of(&before["haproxy"]), rows_of(&before["lbd"]));
    assert_eq!(
        ha_rows.keys().collect::<Vec<_>>(),
        lb_rows.keys().collect::<Vec<_>>(),
        "show stat rows"
    );
    let columns = |rows: &BTreeMap<_, Value>| -> Vec<String> {
        rows.values()
            .next()
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(columns(&ha_rows), columns(&lb_rows), "show stat columns");
    for (key, h) in &ha_rows {
        let l = &lb_rows[key];
        for column in ["pxname", "svname", "status", "weight", "scur"] {
            assert_eq!(h[column], l[column], "{key:?} {column}");
        }
        for column in ["stot", "bin", "bout", "ereq"] {
            assert_eq!(
                delta(&ha_before[key], h, column),
                delta(&lb_before[key], l, column),
                "{key:?} {column} (increase)"
            );
        }
    }
    // And the increments are these connections, not just alike.
    let frontend = ("listener-r".to_owned(), "FRONTEND".to_owned());
    let (bytes_in, bytes_out) = sent["lbd"];
    assert_eq!(
        [
            delta(&lb_before[&frontend], &lb_rows[&frontend], "stot"),
            delta(&lb_before[&frontend], &lb_rows[&frontend], "bin"),
            delta(&lb_before[&frontend], &lb_rows[&frontend], "bout"),
        ],
        [
            payloads.len().to_string(),
            bytes_in.to_string(),
            bytes_out.to_string()
        ]
    );
    assert_eq!(lb_rows[&frontend]["status"], "OPEN");

    // get_pool_status(): all of it.
    assert_eq!(ha["pools"], lb["pools"], "get_pool_status");
    assert_eq!(
        lb["pools"]["pool-r:listener-r"],
        json!({"members": {"member-up": "UP", "member-down": "DOWN"},
               "pool_uuid": "pool-r", "listener_uuid": "listener-r", "status": "UP"})
    );

    // save_state(): both saved; the same lines but for
    // srv_time_since_last_change (see state_lines).
    assert_eq!((&ha["saved"], &lb["saved"]), (&json!(true), &json!(true)));
    let (ha_lines, lbd_lines) = (
        state_lines(ha["state"].as_str().expect("haproxy state")),
        state_lines(lb["state"].as_str().expect("lbd state")),
    );
    assert_eq!(ha_lines, lbd_lines, "show servers state");
    assert_eq!(lbd_lines.len(), 4, "{lbd_lines:?}");
}

// --- 2. Heartbeats from lbd reach Octavia ------------------------------------

/// One Octavia for the runs of both runtimes (each with its own load
/// balancer and amphora): started by the first that needs it, stopped when
/// the last one holding it is done (run one at a time, each starts its own).
static OCTAVIA: std::sync::Mutex<std::sync::Weak<OctaviaEnv>> =
    std::sync::Mutex::new(std::sync::Weak::new());

fn shared_octavia() -> Option<std::sync::Arc<OctaviaEnv>> {
    let mut shared = OCTAVIA.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = shared.upgrade() {
        return Some(env);
    }
    let env = std::sync::Arc::new(OctaviaEnv::start()?);
    *shared = std::sync::Arc::downgrade(&env);
    Some(env)
}

/// Member id -> operating status, from `GET .../members`.
async fn member_statuses(env: &OctaviaEnv, pool: &str) -> BTreeMap<String, String> {
    let (_, body) = env
        .api("GET", &format!("/v2/lbaas/pools/{pool}/members"), None)
        .await;
    body["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let f = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                    (f("id"), f("operating_status"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the API says of the test's objects.
struct Seen {
    members: BTreeMap<String, String>,
    pool_status: Value,
    listener_status: Value,
    stats: Value,
}

async fn seen(env: &OctaviaEnv, pool: &str, listener: &str) -> Seen {
    let (_, p) = env
        .api("GET", &format!("/v2/lbaas/pools/{pool}"), None)
        .await;
    let (_, stats) = env
        .api(
            "GET",
            &format!("/v2/lbaas/listeners/{listener}/stats"),
            None,
        )
        .await;
    let (_, l) = env
        .api("GET", &format!("/v2/lbaas/listeners/{listener}"), None)
        .await;
    Seen {
        listener_status: l["listener"]["operating_status"].clone(),
        members: member_statuses(env, pool).await,
        pool_status: p["pool"]["operating_status"].clone(),
        stats: stats["stats"].clone(),
    }
}

/// Sends a heartbeat (the health daemon's code) every 500 ms until `check`
/// accepts what the API says; panics after [`API_WAIT`].
async fn heartbeat_until(
    env: &OctaviaEnv,
    daemon: &mut Helper,
    (pool, listener): (&str, &str),
    what: &str,
    check: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + API_WAIT;
    loop {
        let msg = daemon.ask("send").await;
        assert!(msg.get("error").is_none(), "{msg}");
        let now = seen(env, pool, listener).await;
        if check(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {:?}, pool {}, listener {}, stats {}\nlast heartbeat: {msg}\nhealth manager:\n{}",
            now.members,
            now.pool_status,
            now.listener_status,
            now.stats,
            env.log_tail("health-manager", 20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn heartbeats_from_lbd_reach_octavia(rt: &str) {
    let amphora_id = match rt {
        "epoll" => "aaaaaaaa-0000-4000-8000-0000000000e1",
        _ => "aaaaaaaa-0000-4000-8000-0000000000a1",
    };
    let Some(python) = octavia_python() else {
        return;
    };
    let Some(env) = tokio::task::block_in_place(shared_octavia) else {
        return;
    };
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let port = free_port();

    // The objects, through the real API.
    let lb = env.create_lb("127.0.0.1").await;
    let listener = env.create_listener(&lb, port, Value::Null).await;
    let pool = env.create_pool(&listener, "ROUND_ROBIN", Value::Null).await;
    let ma = env
        .create_member(&pool, "127.0.0.1", a.addr.port(), Value::Null)
        .await;
    let mb = env
        .create_member(&pool, "127.0.0.1", b.addr.port(), Value::Null)
        .await;
    env.create_healthmonitor(
        &pool,
        json!({"type": "TCP", "delay": 1, "timeout": 1, "max_retries": 1}),
    )
    .await;
    env.register_amphora(amphora_id, &lb);

    // The amphora's directory as the agent leaves it: <base>/<lb>/haproxy.cfg
    // (the rendered config for these ids), <base>/<lb>/<lb>.pid, and the
    // socket the config names, <base>/<lb>.sock.
    let dir = scratch_dir();
    let text = rendered(
        &python,
        &dir,
        &lb,
        (&listener, &pool),
        port,
        &[(&ma, a.addr), (&mb, b.addr)],
    );
    let base = dir.join("amp");
    std::fs::create_dir_all(base.join(&lb)).expect("mkdir");
    std::fs::write(base.join(&lb).join("haproxy.cfg"), &text).expect("write");
    let user_group = dir.join("user-group.conf");
    std::fs::write(&user_group, USER_GROUP).expect("write");
    let ug = user_group.clone();
    let lbd = Lbd::start_with(rt, 1, &text, move |cmd| {
        cmd.arg("-c").arg(&ug);
    })
    .await;
    std::fs::write(
        base.join(&lb).join(format!("{lb}.pid")),
        lbd.pid().to_string(),
    )
    .expect("pid file");
    let sock = base.join(format!("{lb}.sock"));
    wait_stat(&sock, &[(&ma, "UP"), (&mb, "UP")], "lbd").await;

    let base_text = base.display().to_string();
    let hm = env.health_manager().to_string();
    let mut daemon = Helper::spawn(
        &python,
        "amphora_health.py",
        &[
            "--base-path",
            &base_text,
            "--amphora-id",
            amphora_id,
            "--controller",
            &hm,
            "--key",
            env.heartbeat_key(),
        ],
        &[],
        &dir,
    );

    // Traffic through lbd, then the heartbeats.
    let listener_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut bytes_in, mut bytes_out) = (0, 0);
    let payloads = [10, 2000, 30_000, 5];
    for p in payloads {
        let (s, r) = exchange(listener_addr, p).await;
        bytes_in += s;
        bytes_out += r;
    }
    wait_stat(&sock, &[(&ma, "UP"), (&mb, "UP")], "lbd").await;
    // Nothing has reported yet: what the heartbeats change is not there.
    let untouched = seen(&env, &pool, &listener).await;
    assert!(
        untouched.members.values().all(|s| s != "ONLINE")
            && untouched.stats["total_connections"] == 0,
        "before any heartbeat: {:?} {}",
        untouched.members,
        untouched.stats
    );
    // The first heartbeat: what the daemon read from lbd's socket (its
    // stats are deltas since the daemon's start: all of the traffic).
    let first = daemon.ask("send").await;
    assert_eq!(first["id"], amphora_id, "{first}");
    assert_eq!(first["ver"], 3, "{first}");
    assert_eq!(
        first["pools"][format!("{pool}:{listener}")],
        json!({"status": "UP", "members": {ma.as_str(): "UP", mb.as_str(): "UP"}}),
        "{first}"
    );
    assert_eq!(
        first["listeners"][&listener],
        json!({"status": "OPEN", "stats": {"tx": bytes_out, "rx": bytes_in, "conns": 0,
                                           "totconns": payloads.len(), "ereq": 0}}),
        "{first}"
    );

    let want_stats = json!({"bytes_in": bytes_in, "bytes_out": bytes_out,
                            "total_connections": payloads.len(), "active_connections": 0,
                            "request_errors": 0});
    let status = |seen: &Seen, id: &str| seen.members.get(id).cloned().unwrap_or_default();
    let objects = (pool.as_str(), listener.as_str());
    heartbeat_until(
        &env,
        &mut daemon,
        objects,
        "members ONLINE, stats counted",
        |seen| {
            status(seen, &ma) == "ONLINE"
                && status(seen, &mb) == "ONLINE"
                && seen.listener_status == "ONLINE"
                && seen.stats == want_stats
        },
    )
    .await;

    // One member's backend dies: lbd's checks see it, the heartbeat says
    // DOWN, Octavia says ERROR (and the pool DEGRADED).
    b.stop().await;
    wait_stat(&sock, &[(&ma, "UP"), (&mb, "DOWN")], "lbd").await;
    heartbeat_until(&env, &mut daemon, objects, "member b ERROR", |seen| {
        status(seen, &ma) == "ONLINE"
            && status(seen, &mb) == "ERROR"
            && seen.pool_status == "DEGRADED"
    })
    .await;
    // The statistics did not move without traffic.
    assert_eq!(seen(&env, &pool, &listener).await.stats, want_stats);
    drop(lbd);
}

// --- 3. The amphora agent uploads, starts and reloads lbd --------------------

/// Kills the process group systemctl's stand-in started for `unit`.
struct UnitGuard {
    pid_file: PathBuf,
}

impl Drop for UnitGuard {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| *p > 1) {
            // SAFETY: kill(2) on the group of the unit's main process, which
            // the stand-in started as its own session.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

fn put(path: &str, body: &str) -> String {
    json!({"method": "PUT", "path": path, "body": body}).to_string()
}

/// Waits (bounded) until a connection to `listener` reads `tag`.
async fn wait_tag(listener: SocketAddr, tag: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = hit(listener).await;
        if got.as_deref().ok() == Some(tag) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{listener} never served {tag:?} (last {got:?}); log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn agent_uploads_and_reloads_lbd(rt: &str) {
    let Some(python) = octavia_python() else {
        return;
    };
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let port = free_port();
    let listener: SocketAddr = ([127, 0, 0, 1], port).into();
    let (lb, amp) = ("lb-agent", "amp-agent");
    let ids = ("listener-g", "pool-g");
    let dir = scratch_dir();
    let to_a = rendered(&python, &dir, lb, ids, port, &[("member-a", a.addr)]);
    let to_b = rendered(&python, &dir, lb, ids, port, &[("member-b", b.addr)]);
    let base = dir.join("amp");

    // PATH: `haproxy` is lbd; `systemctl` the stand-in.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lbd"), bin.join("haproxy")).expect("symlink");
    let systemctl = bin.join("systemctl");
    std::fs::write(
        &systemctl,
        format!(
            "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
            python.display(),
            script("amphora_systemctl.py").display()
        ),
    )
    .expect("write systemctl");
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let user_group = dir.join("user-group.conf");
    std::fs::write(&user_group, USER_GROUP).expect("write");
    let (units, state) = (dir.join("systemd"), dir.join("systemctl"));
    std::fs::create_dir_all(&units).expect("mkdir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let unit = format!("haproxy-{lb}.service");
    let _unit = UnitGuard {
        pid_file: state.join(format!("{unit}.pid")),
    };
    let s = |p: &Path| p.display().to_string();
    let mut agent = Helper::spawn(
        &python,
        "amphora_agent.py",
        &[
            "--base-path",
            &s(&base),
            "--systemd-dir",
            &s(&units),
            "--network-dir",
            &s(&dir.join("interfaces")),
            "--user-group",
            &s(&user_group),
            "--haproxy-cmd",
            &s(&bin.join("haproxy")),
            "--amphora-id",
            amp,
        ],
        &[
            ("PATH", &path),
            ("AMPHORA_SYSTEMD_DIR", &s(&units)),
            ("AMPHORA_SYSTEMCTL_STATE", &s(&state)),
            ("LBD_RUNTIME", rt),
        ],
        &dir,
    );
    let unit_log =
        || std::fs::read_to_string(state.join(format!("{unit}.log"))).unwrap_or_default();

    // Upload: validated by `haproxy -c` (lbd), installed, unit written.
    let upload = format!("/1.0/loadbalancer/{amp}/{lb}/haproxy");
    let answer = agent.ask(&put(&upload, &to_a)).await;
    assert_eq!(answer["status"], 202, "{answer}");
    let installed = std::fs::read_to_string(base.join(lb).join("haproxy.cfg")).expect("installed");
    assert_eq!(installed, to_a);
    let unit_text = std::fs::read_to_string(units.join(&unit)).expect("unit");
    assert!(unit_text.contains(" -Ws -f "), "{unit_text}");

    // Start: the unit's ExecStart, `haproxy -Ws ... -p <pid>`: lbd serves.
    let answer = agent
        .ask(&put(&format!("/1.0/loadbalancer/{lb}/start"), ""))
        .await;
    assert_eq!(answer["status"], 202, "{answer}\n{}", unit_log());
    wait_tag(listener, "a", unit_log).await;
    let pid_file = base.join(lb).join(format!("{lb}.pid"));
    let main_pid = std::fs::read_to_string(&pid_file).expect("pid file");

    // A new config and reload: the agent saves the state through lbd's
    // socket, checks the file, USR2; the new member serves.
    let answer = agent.ask(&put(&upload, &to_b)).await;
    assert_eq!(answer["status"], 202, "{answer}");
    let answer = agent
        .ask(&put(&format!("/1.0/loadbalancer/{lb}/reload"), ""))
        .await;
    assert_eq!(answer["status"], 202, "{answer}\n{}", unit_log());
    assert_eq!(answer["json"]["details"], format!("Listener {lb} reloaded"));
    wait_tag(listener, "b", unit_log).await;
    let saved = std::fs::read_to_string(base.join(lb).join("servers-state")).expect("state");
    assert!(
        saved.starts_with("1\n# be_id be_name srv_id srv_name"),
        "{saved}"
    );
    assert!(saved.contains(" member-a 127.0.0.1 2 "), "{saved}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file"),
        main_pid,
        "a reload keeps the main process"
    );

    // An invalid config: 400 with lbd's alert, the running one untouched.
    let broken = format!("{to_b}\nfrontend broken\n    frobnicate\n");
    let answer = agent.ask(&put(&upload, &broken)).await;
    assert_eq!(answer["status"], 400, "{answer}");
    assert_eq!(answer["json"]["message"], "Invalid request");
    let details = answer["json"]["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("[ALERT]")
            && details.contains("unknown keyword 'frobnicate' in 'frontend' section"),
        "{details}"
    );
    assert!(base.join(lb).join("haproxy.cfg.new-failed").exists());
    assert_eq!(
        std::fs::read_to_string(base.join(lb).join("haproxy.cfg")).expect("cfg"),
        to_b
    );
    assert_eq!(hit(listener).await.expect("still served"), "b");

    // Stop: lbd goes away.
    let answer = agent
        .ask(&put(&format!("/1.0/loadbalancer/{lb}/stop"), ""))
        .await;
    assert_eq!(answer["status"], 202, "{answer}");
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(listener).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{listener} still listens after stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let main_pid: i32 = main_pid.trim().parse().expect("pid");
    assert!(
        !Path::new(&format!("/proc/{main_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{main_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "lbd ({main_pid}) still runs after stop"
    );
}

// --- 4. haproxy-vrrp-check follows the process --------------------------------

/// keepalived's check script as the agent writes it:
/// `haproxy-vrrp-check <sockets>; exit $?` (the venv's console script for
/// `octavia.cmd.haproxy_vrrp_check:main`; in Octavia 19 its arguments are
/// the stats socket files, `<base_path>/<lb>.sock`, not their directory).
/// It sends `show stat -1 -1 -1` and fails only when the socket cannot be
/// reached, times out (5 s) or closes without a byte: any answer, even an
/// empty one (the CLI's lone "\n"), counts as alive.
fn vrrp_check(python: &Path, sock: &Path) -> std::process::ExitStatus {
    let check = python.with_file_name("haproxy-vrrp-check");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "'{}' '{}'; exit $?",
        check.display(),
        sock.display()
    ));
    run_bounded(cmd, HELPER_LIMIT).status
}

async fn vrrp_check_follows_the_process(rt: &str) {
    let Some(python) = octavia_python() else {
        return;
    };
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let dir = scratch_dir();
    let port = free_port();
    let text = rendered(
        &python,
        &dir,
        "lb-vrrp",
        ("listener-v", "pool-v"),
        port,
        &[("m", a.addr)],
    );
    let user_group = dir.join("user-group.conf");
    std::fs::write(&user_group, USER_GROUP).expect("write");
    let ug = user_group.clone();
    let lbd = Lbd::start_with(rt, 1, &text, move |cmd| {
        cmd.arg("-c").arg(&ug);
    })
    .await;
    let sock = dir.join("amp").join("lb-vrrp.sock");
    let status = vrrp_check(&python, &sock);
    assert!(status.success(), "{status}; log:\n{}", lbd.log());

    lbd.signal(libc::SIGTERM);
    lbd.wait_exit(WAIT).await;
    let status = vrrp_check(&python, &sock);
    assert!(!status.success(), "{status} with lbd stopped");
}

on_both_runtimes!(
    octavia_readers_like_haproxy,
    heartbeats_from_lbd_reach_octavia,
    agent_uploads_and_reloads_lbd,
    vrrp_check_follows_the_process,
);
