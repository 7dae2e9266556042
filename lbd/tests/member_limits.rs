//! Per-member `max_connections` with the pool's queue (`max_queue`,
//! `queue_timeout`) and `slow_start`, on a real lbd process, both runtimes,
//! with concurrent client traffic. Limits are asserted at the member: a
//! backend that counts the connections it holds at once. Loopback only.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::{http_request_once, stats};
use common::*;
use lbd_test_support::eventually;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// A member that holds every connection until the test releases it (or
/// lbd closes it), counting how many it holds at once. Each connection is
/// greeted with its accept number, `"<n>\n"`.
struct Holder {
    addr: SocketAddr,
    /// Connections held right now, and the most ever held at once.
    held: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    /// Release handles by accept number.
    releases: Arc<Mutex<HashMap<usize, oneshot::Sender<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Holder {
    async fn start() -> Holder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let releases: Arc<Mutex<HashMap<usize, oneshot::Sender<()>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (held, peak, releases) = (held.clone(), peak.clone(), releases.clone());
            let accepted = accepted.clone();
            async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let n = accepted.fetch_add(1, SeqCst);
                    let now = held.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    let (tx, rx) = oneshot::channel();
                    releases.lock().unwrap().insert(n, tx);
                    let held = held.clone();
                    tokio::spawn(async move {
                        let _ = conn.write_all(format!("{n}\n").as_bytes()).await;
                        let mut buf = [0u8; 64];
                        tokio::select! {
                            _ = rx => {}
                            _ = async { while matches!(conn.read(&mut buf).await, Ok(k) if k > 0) {} } => {}
                        }
                        // Uncounted before the close: whoever sees the close
                        // sees the count without this connection.
                        held.fetch_sub(1, SeqCst);
                        let _ = conn.shutdown().await;
                    });
                }
            }
        });
        Holder {
            addr,
            held,
            peak,
            releases,
            task,
        }
    }

    /// Ends the connection this member accepted `n`-th (from 0).
    fn release(&self, n: usize) {
        let tx = self.releases.lock().unwrap().remove(&n);
        let _ = tx.expect("no such held connection").send(());
    }

    fn held(&self) -> usize {
        self.held.load(SeqCst)
    }

    fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn member_line(addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[pool.member]]\naddress = \"{}\"\nport = {}\n{extra}\n",
        addr.ip(),
        addr.port()
    )
}

/// `[admin]` on `admin`, listener "l" on `bind` for pool "p".
fn config(admin: SocketAddr, bind: SocketAddr, pool: &str, members: &str) -> String {
    format!(
        "[admin]\nbind = \"{admin}\"\n\n[[listener]]\nname = \"l\"\nbind = \"{bind}\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\n{pool}\n{members}"
    )
}

async fn pool_stats(admin: SocketAddr, pool: &str) -> Value {
    let s = stats(admin).await;
    s["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool))
        .cloned()
        .unwrap_or_else(|| panic!("no pool {pool} in {s}"))
}

async fn queue_len(admin: SocketAddr, pool: &str) -> u64 {
    pool_stats(admin, pool).await["queue"]["current"]
        .as_u64()
        .expect("queue.current")
}

/// A client through lbd that reports `(client number, greeting)` once the
/// member greets it, then stays until the member or lbd closes.
async fn client(lbd: SocketAddr, number: usize, greeted: mpsc::UnboundedSender<(usize, String)>) {
    let mut conn = connect_from(lbd, None).await.expect("connect to lbd");
    tokio::spawn(async move {
        let line = tokio::time::timeout(Duration::from_secs(60), read_raw_line(&mut conn)).await;
        let line = match line {
            Ok(Ok(line)) => String::from_utf8_lossy(&line).trim_end().to_owned(),
            _ => "closed".to_owned(),
        };
        let _ = greeted.send((number, line));
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while matches!(conn.read(&mut buf).await, Ok(k) if k > 0) {}
        })
        .await;
    });
}

async fn next_greeting(rx: &mut mpsc::UnboundedReceiver<(usize, String)>) -> (usize, String) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a client to be served in time")
        .expect("client tasks alive")
}

/// Where a side of a comparison shows its queue.
enum QueueStats {
    /// lbd's admin server: `/stats.json`, pool "p".
    Lbd(SocketAddr),
    /// HAProxy's stats page: `/stats;csv`, backend "p".
    Haproxy(SocketAddr),
}

impl QueueStats {
    /// `(qcur, qmax)` of pool/backend "p".
    async fn queue(&self) -> (u64, u64) {
        match *self {
            QueueStats::Lbd(admin) => {
                let q = pool_stats(admin, "p").await["queue"].clone();
                (
                    q["current"].as_u64().unwrap_or(0),
                    q["max"].as_u64().unwrap_or(0),
                )
            }
            QueueStats::Haproxy(stats) => {
                // HTTP/1.0: the answer ends with the connection, unchunked.
                let mut conn = connect_from(stats, None).await.expect("connect to stats");
                let mut csv = String::new();
                tokio::time::timeout(WAIT, async {
                    conn.write_all(b"GET /stats;csv HTTP/1.0\r\n\r\n").await?;
                    conn.read_to_string(&mut csv).await
                })
                .await
                .expect("stats in time")
                .expect("GET /stats;csv");
                let row: Vec<&str> = csv
                    .lines()
                    .find(|l| l.starts_with("p,BACKEND,"))
                    .unwrap_or_else(|| panic!("no backend p in {csv}"))
                    .split(',')
                    .collect();
                let num = |i: usize| row[i].parse().unwrap_or(0);
                (num(2), num(3))
            }
        }
    }
}

/// 10 concurrent clients through `front` to one `member` that takes 2 at
/// once: 2 on the member, 8 in the queue; each slot freed goes to the
/// oldest waiter. The same for lbd and HAProxy.
async fn two_at_a_time_in_order(front: SocketAddr, member: &Holder, stats: &QueueStats) {
    let (tx, mut greeted) = mpsc::unbounded_channel();
    // The member's accept number of each served client, in service order.
    let mut served: Vec<(usize, usize)> = Vec::new();
    let served_one = |served: &mut Vec<(usize, usize)>, (client, greeting): (usize, String)| {
        let n: usize = greeting
            .parse()
            .unwrap_or_else(|_| panic!("client {client}: {greeting:?}"));
        served.push((client, n));
        client
    };
    for i in 0..10 {
        client(front, i, tx.clone()).await;
        if i < 2 {
            assert_eq!(
                served_one(&mut served, next_greeting(&mut greeted).await),
                i
            );
        } else {
            // Queued in arrival order: wait until it is in the queue.
            eventually(&format!("client {i} queued"), || async {
                stats.queue().await.0 == (i - 1) as u64
            })
            .await;
        }
    }
    assert_eq!(member.held(), 2);
    assert_eq!(member.peak(), 2);
    assert_eq!(stats.queue().await, (8, 8), "qcur, qmax");

    // Free one slot at a time (the longest served): the oldest waiter gets
    // it, and the limit holds.
    for freed in 0..8 {
        let (_, accept_number) = served[freed];
        member.release(accept_number);
        let next = served_one(&mut served, next_greeting(&mut greeted).await);
        assert_eq!(next, freed + 2, "the oldest waiter is served");
        assert!(member.peak() <= 2, "peak {} at the member", member.peak());
    }
    eventually("the queue empties", || async {
        stats.queue().await == (0, 8)
    })
    .await;
    assert_eq!(member.peak(), 2);
}

/// `max_connections = 2` and 10 concurrent clients, on lbd.
async fn the_limit_holds_at_the_member_and_waiters_go_in_order(rt: &str) {
    let member = Holder::start().await;
    let (admin, bind) = (free_addr(), free_addr());
    let cfg = config(
        admin,
        bind,
        "queue_timeout = \"60s\"",
        &member_line(member.addr, "max_connections = 2"),
    );
    let _lbd = Lbd::start(rt, 2, &cfg).await;
    two_at_a_time_in_order(bind, &member, &QueueStats::Lbd(admin)).await;
    let pool = pool_stats(admin, "p").await;
    assert_eq!(pool["members"][0]["max_connections"], 2, "{pool}");
    assert!(
        pool["queue"]["time_max_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{pool}"
    );
    assert!(
        pool["queue"]["time_average_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
}

/// The oracle: HAProxy with `maxconn 2` on the server and `timeout queue`
/// does the same as lbd in [`two_at_a_time_in_order`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_queues_the_same_way() {
    let member = Holder::start().await;
    let (stats, bind) = (free_addr(), free_addr());
    let cfg = format!(
        "global\n  maxconn 1000\n  nbthread 1\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  \
         timeout server 60s\n  timeout queue 60s\n\
         frontend stats\n  mode http\n  bind {stats}\n  stats enable\n  stats uri /stats\n\
         listen p\n  bind {bind}\n  server m {} maxconn 2\n",
        member.addr
    );
    let Some(_haproxy) = common::haproxy::Haproxy::start(&cfg, bind).await else {
        return;
    };
    two_at_a_time_in_order(bind, &member, &QueueStats::Haproxy(stats)).await;
}

/// A short `queue_timeout` resets the clients that waited too long, and
/// counts them; a full queue (`max_queue`) refuses at once.
async fn the_excess_is_reset_after_queue_timeout_or_at_once_when_full(rt: &str) {
    let member = Holder::start().await;
    let other = Holder::start().await;
    let (admin, bind, bind2) = (free_addr(), free_addr(), free_addr());
    let cfg = format!(
        "{}\n[[listener]]\nname = \"l2\"\nbind = \"{bind2}\"\npool = \"q\"\n\n\
         [[pool]]\nname = \"q\"\nmax_queue = 1\nqueue_timeout = \"60s\"\n{}",
        config(
            admin,
            bind,
            "queue_timeout = \"400ms\"",
            &member_line(member.addr, "max_connections = 2"),
        ),
        member_line(other.addr, "max_connections = 1"),
    );
    let _lbd = Lbd::start(rt, 2, &cfg).await;
    let (tx, mut greeted) = mpsc::unbounded_channel();
    for i in 0..2 {
        client(bind, i, tx.clone()).await;
        assert_eq!(next_greeting(&mut greeted).await.0, i);
    }
    // Four more at once, while the two stay: all wait, then all are reset.
    let started = Instant::now();
    let waits: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = connect_from(bind, None).await.expect("connect");
                let closed = is_closed_without_data(&mut conn, WAIT).await;
                (closed, started.elapsed())
            })
        })
        .collect();
    for w in waits {
        let (closed, after) = w.await.expect("task");
        assert!(closed, "a waiter got data from a full member");
        assert!(
            after >= Duration::from_millis(350),
            "reset after {after:?}, before queue_timeout"
        );
    }
    let pool = pool_stats(admin, "p").await;
    assert_eq!(pool["queue"]["timeouts_total"], 4, "{pool}");
    assert_eq!(pool["queue"]["current"], 0, "{pool}");
    assert_eq!(pool["queue"]["max"], 4, "{pool}");
    assert!(pool["connect_errors_total"].as_u64() >= Some(4), "{pool}");
    assert_eq!((member.held(), member.peak()), (2, 2));
    let (_, metrics) = http_request_once(admin, "GET", "/metrics", &[], b"")
        .await
        .expect("GET /metrics");
    assert!(metrics.contains("lbd_backend_queue_timeouts_total{proxy=\"p\"} 4"));
    assert!(metrics.contains("haproxy_server_limit_sessions{proxy=\"p\""));

    // Pool q: one slot, one place in the queue; the third client is
    // refused at once.
    client(bind2, 10, tx.clone()).await;
    assert_eq!(next_greeting(&mut greeted).await, (10, "0".to_owned()));
    client(bind2, 11, tx.clone()).await;
    eventually("one waiting in q", || async {
        queue_len(admin, "q").await == 1
    })
    .await;
    let t = Instant::now();
    assert!(is_refused(bind2, None, Duration::from_secs(5)).await);
    assert!(t.elapsed() < Duration::from_secs(2), "refused at once");
    assert_eq!(pool_stats(admin, "q").await["queue"]["full_total"], 1);
    other.release(0);
    assert_eq!(next_greeting(&mut greeted).await, (11, "1".to_owned()));
    assert_eq!(other.peak(), 1);
}

/// Share of `tag` among `hits` whose time falls in `[from, to)` seconds
/// after `t0`, and how many hits that is.
fn share(hits: &[(Instant, String)], t0: Instant, from: f64, to: f64, tag: &str) -> (f64, usize) {
    let in_bucket: Vec<&String> = hits
        .iter()
        .filter(|(at, _)| {
            let t = at.saturating_duration_since(t0).as_secs_f64();
            *at >= t0 && t >= from && t < to
        })
        .map(|(_, tag)| tag)
        .collect();
    let n = in_bucket.len();
    let of_tag = in_bucket.iter().filter(|t| t.as_str() == tag).count();
    (of_tag as f64 / n.max(1) as f64, n)
}

/// Steady traffic from 4 concurrent clients until `until`: one connection
/// after another, each recorded with the member that answered.
async fn traffic(lbd: SocketAddr, until: Instant) -> Vec<(Instant, String)> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < until {
                    if let Ok(tag) = hit(lbd).await {
                        seen.push((Instant::now(), tag));
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("traffic task"));
    }
    all
}

const TCP_CHECK: &str = "[pool.health]\ntype = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\n\
                         rise = 1\nfall = 1\n";

async fn member_status(admin: SocketAddr, index: usize) -> Value {
    pool_stats(admin, "p").await["members"][index].clone()
}

/// After a member comes back up, its share of new connections rises over
/// the ramp (1 s buckets), not at once; at lbd start there is no ramp.
async fn slow_start_ramps_a_recovered_members_share(rt: &str) {
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let a_addr = a.addr;
    let (admin, bind) = (free_addr(), free_addr());
    let cfg = config(
        admin,
        bind,
        &format!("slow_start = \"4s\"\n{TCP_CHECK}"),
        &(member_line(a.addr, "") + &member_line(b.addr, "")),
    );
    let lbd = Lbd::start(rt, 2, &cfg).await;
    eventually("both checked up", || async {
        let p = pool_stats(admin, "p").await;
        p["members"][0]["status"] == "up" && p["members"][1]["status"] == "up"
    })
    .await;

    // At start: no ramp, the full share at once.
    let start = Instant::now();
    let hits = traffic(bind, start + Duration::from_millis(600)).await;
    let (at_start, n) = share(&hits, start, 0.0, 10.0, "a");
    assert!(n >= 40, "only {n} connections");
    assert!(
        (0.4..=0.6).contains(&at_start),
        "a's share at start: {at_start}"
    );

    a.stop().await;
    eventually("a down", || async {
        member_status(admin, 0).await["status"] == "down"
    })
    .await;

    // Traffic all along; a comes back meanwhile.
    let until = Instant::now() + Duration::from_secs(9);
    let load = tokio::spawn(traffic(bind, until));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _a = Backend::start_on(a_addr, "a", Mode::TaggedEcho).await;
    eventually("a up again", || async {
        member_status(admin, 0).await["status"] == "up"
    })
    .await;
    let t0 = Instant::now();
    let hits = load.await.expect("traffic");

    let buckets: Vec<(f64, usize)> = [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (4.8, 6.0)]
        .iter()
        .map(|&(from, to)| share(&hits, t0, from, to, "a"))
        .collect();
    let report = format!("a's share per bucket after it came back: {buckets:?}");
    eprintln!("{rt}: {report}");
    for &(_, n) in &buckets {
        assert!(n >= 40, "too few connections per bucket: {report}");
    }
    let s: Vec<f64> = buckets.iter().map(|&(s, _)| s).collect();
    assert!(s[0] < 0.25, "not ramped in the first second: {report}");
    assert!(s[0] < s[2] && s[2] < s[4], "not rising: {report}");
    assert!(s[4] > 0.4, "not back to its share after the ramp: {report}");
    assert!(lbd.log().contains("is UP"), "{}", lbd.log());
}

/// A reload keeps the queue with its waiting clients and a member's ramp.
async fn reload_keeps_the_queue_and_slow_start(rt: &str) {
    let member = Holder::start().await;
    let a = Backend::start("a", Mode::TaggedEcho).await;
    let a_addr = a.addr;
    let b = Backend::start("b", Mode::TaggedEcho).await;
    let (admin, bind, bind2) = (free_addr(), free_addr(), free_addr());
    let cfg = |idle: &str| {
        format!(
            "{}\n[[listener]]\nname = \"s\"\nbind = \"{bind2}\"\n\
             pool = \"r\"\n\n[[pool]]\nname = \"r\"\nslow_start = \"6s\"\n{TCP_CHECK}\n{}{}",
            config(
                admin,
                bind,
                "queue_timeout = \"60s\"",
                &member_line(member.addr, "max_connections = 1"),
            )
            .replace(
                "pool = \"p\"\n\n",
                &format!("pool = \"p\"\nclient_idle = \"{idle}\"\n\n")
            ),
            member_line(a_addr, "weight = 100"),
            member_line(b.addr, "weight = 100"),
        )
    };
    let lbd = Lbd::start(rt, 2, &cfg("40s")).await;
    let (tx, mut greeted) = mpsc::unbounded_channel();
    client(bind, 0, tx.clone()).await;
    assert_eq!(next_greeting(&mut greeted).await.0, 0);
    for i in 1..4 {
        client(bind, i, tx.clone()).await;
        eventually(&format!("client {i} queued"), || async {
            queue_len(admin, "p").await == i as u64
        })
        .await;
    }

    // Member a of pool r goes down and comes back: it ramps.
    let ramp = |m: Value| m["current_weight"].as_u64().unwrap_or(0);
    let r_member = |admin| async move { pool_stats(admin, "r").await["members"][0].clone() };
    eventually("a checked up", || async {
        r_member(admin).await["status"] == "up"
    })
    .await;
    a.stop().await;
    eventually("a down", || async {
        r_member(admin).await["status"] == "down"
    })
    .await;
    let _a = Backend::start_on(a_addr, "a", Mode::TaggedEcho).await;
    eventually("a up and ramping", || async {
        let m = r_member(admin).await;
        m["status"] == "up" && (1..=50).contains(&ramp(m))
    })
    .await;
    let before = ramp(r_member(admin).await);

    assert!(lbd.reload(&cfg("45s")).await, "reload applied");
    let after = ramp(r_member(admin).await);
    assert!(
        (before..100).contains(&after),
        "the ramp went on across the reload: {before} -> {after}"
    );
    let pool = pool_stats(admin, "p").await;
    assert_eq!(pool["queue"]["current"], 3, "waiters kept: {pool}");
    assert_eq!(pool["queue"]["max"], 3, "{pool}");

    // A new client after the reload queues behind them.
    client(bind, 4, tx.clone()).await;
    eventually("client 4 queued", || async {
        queue_len(admin, "p").await == 4
    })
    .await;
    for freed in 0..4 {
        member.release(freed);
        let next = freed + 1;
        assert_eq!(next_greeting(&mut greeted).await, (next, next.to_string()));
    }
    assert_eq!(member.peak(), 1);
    eventually("the ramp ends", || async {
        ramp(r_member(admin).await) == 100
    })
    .await;
}

on_both_runtimes!(
    the_limit_holds_at_the_member_and_waiters_go_in_order,
    the_excess_is_reset_after_queue_timeout_or_at_once_when_full,
    slow_start_ramps_a_recovered_members_share,
    reload_keeps_the_queue_and_slow_start,
);
