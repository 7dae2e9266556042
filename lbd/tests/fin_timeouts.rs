//! A listener's `tunnel_idle`, `client_fin` and `member_fin`, compared with
//! HAProxy 2.6's `timeout tunnel`, `timeout client-fin` and `timeout
//! server-fin` as the oracle: the same scenario runs through lbd (both
//! runtimes) and through a `mode tcp` HAProxy configured alike, and the
//! times at which each closes the watched connection must agree.
//!
//! Scenarios, on one probe connection while steady echo traffic runs on
//! other connections through the same listener and member:
//!
//! * the client half-closes, the member stays open and silent: closed after
//!   `member_fin` (`server-fin`), whether shorter or longer than the idle
//!   timeouts;
//! * the member half-closes, the client stays open and silent: closed after
//!   `client_fin` (`client-fin`), likewise;
//! * nothing happens: closed after `tunnel_idle` (`timeout tunnel`), well
//!   after `client_idle`/`member_idle`;
//! * with `tunnel_idle` long, a half-close closes after the `*_fin` timeout;
//! * without `*_fin` timeouts, a half-close leaves the side that sent it
//!   untimed: the other side's idle timeout ends the connection.
//!
//! Close times are measured from the half-close (or the last exchange) to
//! the moment the watched peer sees the connection end. Timeouts are
//! 0.7-1.2 s; a close must come no earlier than the timeout less
//! [`EARLY`], no later than the timeout plus [`LATE`], and lbd's and
//! HAProxy's must be within [`AGREE`] of each other. Loopback only.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A close may come this much before its timeout (the timer may start at
/// the last byte lbd wrote, a little before the test saw it).
const EARLY: Duration = Duration::from_millis(150);
/// ... and this much after it, on a loaded machine.
const LATE: Duration = Duration::from_millis(1000);
/// lbd's and HAProxy's close times differ by at most this much.
const AGREE: Duration = Duration::from_millis(600);
/// How long past the expected close a measurement waits before it reports
/// the connection as still open.
const GIVE_UP: Duration = Duration::from_secs(4);

/// The member: connections that start with `probe\n` are handed to the
/// test; those that start with `echo\n` are echoed until EOF; anything else
/// (HAProxy's start-up probes, which send nothing) is dropped.
struct Member {
    addr: SocketAddr,
    probes: mpsc::UnboundedReceiver<TcpStream>,
    task: JoinHandle<()>,
}

impl Member {
    async fn start() -> Member {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind member");
        let addr = listener.local_addr().expect("member addr");
        let (tx, probes) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    match read_line(&mut conn).await.as_deref() {
                        Ok("probe") => {
                            let _ = tx.send(conn);
                        }
                        Ok("echo") => {
                            let (mut r, mut w) = conn.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            let _ = w.shutdown().await;
                        }
                        _ => {}
                    }
                });
            }
        });
        Member { addr, probes, task }
    }

    /// The member's end of the next probe connection.
    async fn probe(&mut self) -> TcpStream {
        tokio::time::timeout(WAIT, self.probes.recv())
            .await
            .expect("the probe connection reaches the member in time")
            .expect("member task alive")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Steady echo traffic through `front`: a few connections, each doing
/// round trips every 10 ms and reconnecting every 50 rounds, until
/// stopped (and at most a bounded number of rounds).
struct Traffic {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

const TRAFFIC_CONNECTIONS: usize = 3;
const MAX_ROUNDS: u64 = 20_000;

impl Traffic {
    fn start(front: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let tasks = (0..TRAFFIC_CONNECTIONS)
            .map(|i| {
                let (stop, rounds, errors) = (stop.clone(), rounds.clone(), errors.clone());
                tokio::spawn(async move {
                    let line = format!("traffic {i} {}\n", "x".repeat(100));
                    while !stop.load(SeqCst) && rounds.load(SeqCst) < MAX_ROUNDS {
                        if echo_rounds(front, &line, 50, &stop, &rounds).await.is_err() {
                            errors.fetch_add(1, SeqCst);
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            rounds,
            errors,
            tasks,
        }
    }

    /// Stops the traffic; returns the round trips done and the failures.
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, SeqCst);
        for task in self.tasks {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("traffic stops in time")
                .expect("traffic task");
        }
        (self.rounds.load(SeqCst), self.errors.load(SeqCst))
    }
}

/// One traffic connection: up to `n` echoed lines, 10 ms apart.
async fn echo_rounds(
    front: SocketAddr,
    line: &str,
    n: usize,
    stop: &AtomicBool,
    rounds: &AtomicU64,
) -> std::io::Result<()> {
    let mut conn = connect_from(front, None).await?;
    conn.write_all(b"echo\n").await?;
    for _ in 0..n {
        if stop.load(SeqCst) {
            break;
        }
        conn.write_all(line.as_bytes()).await?;
        let back = read_raw_line(&mut conn).await?;
        if back != line.as_bytes() {
            return Err(std::io::Error::other("echo mismatch"));
        }
        rounds.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// What the probe connection does after one exchange both ways.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// The client shuts down its write side; the member stays open and
    /// silent. Watched at the client.
    ClientHalfCloses,
    /// The member shuts down its write side; the client stays open and
    /// silent. Watched at the member.
    MemberHalfCloses,
    /// Both stay open and silent. Watched at the client.
    Idle,
}

/// One comparison: the listener's timeouts (ms) and the scenario.
#[derive(Debug, Clone, Copy)]
struct Case {
    client_idle: u64,
    member_idle: u64,
    tunnel_idle: Option<u64>,
    client_fin: Option<u64>,
    member_fin: Option<u64>,
    scenario: Scenario,
    /// When the probe connection should be closed, after the trigger (ms).
    expect: u64,
}

impl Case {
    fn lbd_fields(&self) -> String {
        let mut s = format!(
            "client_idle = \"{}ms\"\nmember_idle = \"{}ms\"\n",
            self.client_idle, self.member_idle
        );
        for (field, value) in [
            ("tunnel_idle", self.tunnel_idle),
            ("client_fin", self.client_fin),
            ("member_fin", self.member_fin),
        ] {
            if let Some(ms) = value {
                s += &format!("{field} = \"{ms}ms\"\n");
            }
        }
        s
    }

    fn haproxy_timeouts(&self) -> String {
        let mut s = format!(
            "  timeout connect 5s\n  timeout client {}ms\n  timeout server {}ms\n",
            self.client_idle, self.member_idle
        );
        for (keyword, value) in [
            ("tunnel", self.tunnel_idle),
            ("client-fin", self.client_fin),
            ("server-fin", self.member_fin),
        ] {
            if let Some(ms) = value {
                s += &format!("  timeout {keyword} {ms}ms\n");
            }
        }
        s
    }

    fn expect(&self) -> Duration {
        Duration::from_millis(self.expect)
    }
}

/// Runs the probe connection of `case` through `front`; returns how long
/// after the trigger the watched peer saw the connection end (`None`: still
/// open `GIVE_UP` after the expected time).
async fn measure(front: SocketAddr, member: &mut Member, case: &Case) -> Option<Duration> {
    let (mut client, mut m) = open_probe(front, member).await;
    let t0 = Instant::now();
    let watched = match case.scenario {
        Scenario::ClientHalfCloses => {
            client.shutdown().await.expect("client half-close");
            expect_eof(&mut m, "the member").await;
            &mut client
        }
        Scenario::MemberHalfCloses => {
            m.shutdown().await.expect("member half-close");
            expect_eof(&mut client, "the client").await;
            &mut m
        }
        Scenario::Idle => &mut client,
    };
    closed_after(watched, t0, case.expect() + GIVE_UP).await
}

/// A probe connection through `front` after one exchange both ways: the
/// client's end and the member's.
async fn open_probe(front: SocketAddr, member: &mut Member) -> (TcpStream, TcpStream) {
    let mut client = connect_from(front, None).await.expect("probe connects");
    client.write_all(b"probe\n").await.expect("probe line");
    let mut m = member.probe().await;
    m.write_all(b"ready\n").await.expect("member answers");
    assert_eq!(read_line(&mut client).await.expect("answer"), "ready");
    (client, m)
}

/// How long after `t0` the peer ended `conn` (EOF or reset); `None` if it
/// is still open `limit` after `t0`.
async fn closed_after(conn: &mut TcpStream, t0: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 64];
    let left = limit.saturating_sub(t0.elapsed());
    match tokio::time::timeout(left, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(t0.elapsed()),
        Ok(Ok(n)) => panic!("unexpected {n} bytes on the probe connection"),
        Err(_) => None,
    }
}

/// The half-close was passed on: `conn` reads EOF.
async fn expect_eof(conn: &mut TcpStream, who: &str) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{who} got no EOF"))
        .unwrap_or_else(|e| panic!("{who}: {e}"));
    assert_eq!(n, 0, "{who} should see the half-close");
}

/// Measures `case` under steady traffic through `front`.
async fn measure_with_traffic(
    who: &str,
    front: SocketAddr,
    member: &mut Member,
    case: &Case,
) -> Option<Duration> {
    let traffic = Traffic::start(front);
    let closed = measure(front, member, case).await;
    let (rounds, errors) = traffic.finish().await;
    eprintln!(
        "{who}: {case:?}: closed after {}, with {rounds} echo round trips beside it",
        closed.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()))
    );
    assert_eq!(errors, 0, "{who}: the traffic beside the probe failed");
    assert!(rounds > 0, "{who}: no traffic ran beside the probe");
    closed
}

/// `closed` is within [`EARLY`]/[`LATE`] of the expected time.
fn assert_on_time(who: &str, closed: Option<Duration>, case: &Case) {
    let expect = case.expect();
    let Some(closed) = closed else {
        panic!(
            "{who}: {case:?}: still open {} ms after the trigger (expected a close after \
             {} ms)",
            (expect + GIVE_UP).as_millis(),
            expect.as_millis()
        );
    };
    assert!(
        closed + EARLY >= expect,
        "{who}: {case:?}: closed too early, after {} ms",
        closed.as_millis()
    );
    assert!(
        closed <= expect + LATE,
        "{who}: {case:?}: closed too late, after {} ms",
        closed.as_millis()
    );
}

/// Runs `case` through lbd on `rt` and through HAProxy; both must close on
/// time and agree.
async fn compare(rt: &str, case: Case) {
    let mut member = Member::start().await;
    let bind = free_addr();
    let cfg = format!(
        "[[listener]]\nname = \"l\"\nbind = \"{bind}\"\npool = \"p\"\n{}\n\
         [[pool]]\nname = \"p\"\n{}",
        case.lbd_fields(),
        member_at(member.addr)
    );
    let lbd = Lbd::start(rt, 2, &cfg).await;
    let by_lbd = measure_with_traffic(&format!("lbd ({rt})"), bind, &mut member, &case).await;
    drop(lbd);
    assert_on_time(&format!("lbd ({rt})"), by_lbd, &case);

    let mut member = Member::start().await;
    let bind = free_addr();
    let cfg = format!(
        "global\n  maxconn 1000\ndefaults\n  mode tcp\n{}listen l\n  bind {bind}\n  \
         server m {}\n",
        case.haproxy_timeouts(),
        member.addr
    );
    let Some(haproxy) = Haproxy::start(&cfg, bind).await else {
        return;
    };
    let by_haproxy = measure_with_traffic("haproxy", bind, &mut member, &case).await;
    assert_on_time("haproxy", by_haproxy, &case);
    drop(haproxy);
    if let (Some(a), Some(b)) = (by_lbd, by_haproxy) {
        let diff = a.abs_diff(b);
        assert!(
            diff <= AGREE,
            "{case:?}: lbd ({rt}) closed after {} ms, haproxy after {} ms",
            a.as_millis(),
            b.as_millis()
        );
    }
}

const LONG: u64 = 6000;

/// The client half-closes and the member stays silent: `member_fin` ends
/// the connection, shorter than `member_idle` or longer.
async fn member_fin_ends_what_the_client_half_closed(rt: &str) {
    compare(
        rt,
        Case {
            client_idle: LONG,
            member_idle: LONG,
            tunnel_idle: None,
            client_fin: None,
            member_fin: Some(700),
            scenario: Scenario::ClientHalfCloses,
            expect: 700,
        },
    )
    .await;
    // Longer than member_idle: it replaces it (as server-fin does).
    compare(
        rt,
        Case {
            client_idle: LONG,
            member_idle: 400,
            tunnel_idle: None,
            client_fin: None,
            member_fin: Some(1200),
            scenario: Scenario::ClientHalfCloses,
            expect: 1200,
        },
    )
    .await;
}

/// The member half-closes and the client stays silent: `client_fin` ends
/// the connection, shorter than `client_idle` or longer.
async fn client_fin_ends_what_the_member_half_closed(rt: &str) {
    compare(
        rt,
        Case {
            client_idle: LONG,
            member_idle: LONG,
            tunnel_idle: None,
            client_fin: Some(700),
            member_fin: None,
            scenario: Scenario::MemberHalfCloses,
            expect: 700,
        },
    )
    .await;
    compare(
        rt,
        Case {
            client_idle: 400,
            member_idle: LONG,
            tunnel_idle: None,
            client_fin: Some(1200),
            member_fin: None,
            scenario: Scenario::MemberHalfCloses,
            expect: 1200,
        },
    )
    .await;
}

/// A side that sent its own EOF is no longer timed: with no `*_fin`
/// timeouts, a client that half-closes while the member stays silent is
/// closed after `member_idle`, not the shorter `client_idle` (HAProxy:
/// `timeout server`, not `timeout client`); the same the other way round.
async fn a_side_that_sent_eof_is_not_timed(rt: &str) {
    compare(
        rt,
        Case {
            client_idle: 400,
            member_idle: 1200,
            tunnel_idle: None,
            client_fin: None,
            member_fin: None,
            scenario: Scenario::ClientHalfCloses,
            expect: 1200,
        },
    )
    .await;
    compare(
        rt,
        Case {
            client_idle: 1200,
            member_idle: 400,
            tunnel_idle: None,
            client_fin: None,
            member_fin: None,
            scenario: Scenario::MemberHalfCloses,
            expect: 1200,
        },
    )
    .await;
}

/// An idle connection outlives `client_idle` and `member_idle` and ends
/// after `tunnel_idle`.
async fn tunnel_idle_replaces_client_and_member_idle(rt: &str) {
    compare(
        rt,
        Case {
            client_idle: 300,
            member_idle: 300,
            tunnel_idle: Some(1200),
            client_fin: None,
            member_fin: None,
            scenario: Scenario::Idle,
            expect: 1200,
        },
    )
    .await;
}

/// With a long `tunnel_idle`, a half-closed connection ends after the
/// `*_fin` timeout of the side that got the FIN.
async fn fin_timeouts_cut_a_tunnel_short(rt: &str) {
    for scenario in [Scenario::ClientHalfCloses, Scenario::MemberHalfCloses] {
        compare(
            rt,
            Case {
                client_idle: 300,
                member_idle: 300,
                tunnel_idle: Some(LONG),
                client_fin: Some(800),
                member_fin: Some(800),
                scenario,
                expect: 800,
            },
        )
        .await;
    }
}

/// A reload that changes `tunnel_idle` applies to new connections only: one
/// established before keeps the old value, one opened after gets the new.
async fn a_reload_applies_new_timeouts_to_new_connections(rt: &str) {
    let mut member = Member::start().await;
    let bind = free_addr();
    let member_addr = member.addr;
    let cfg = |tunnel: u64| {
        format!(
            "[[listener]]\nname = \"l\"\nbind = \"{bind}\"\npool = \"p\"\n\
             client_idle = \"300ms\"\nmember_idle = \"300ms\"\ntunnel_idle = \"{tunnel}ms\"\n\
             [[pool]]\nname = \"p\"\n{}",
            member_at(member_addr)
        )
    };
    let (short, long) = (1200, 8000);
    let lbd = Lbd::start(rt, 2, &cfg(short)).await;
    let traffic = Traffic::start(bind);
    let (mut old, _old_member) = open_probe(bind, &mut member).await;
    let t_old = Instant::now();
    assert!(lbd.reload(&cfg(long)).await, "reload applied");
    let (mut new, _new_member) = open_probe(bind, &mut member).await;
    let t_new = Instant::now();
    let case = Case {
        client_idle: 300,
        member_idle: 300,
        tunnel_idle: Some(short),
        client_fin: None,
        member_fin: None,
        scenario: Scenario::Idle,
        expect: short,
    };
    let old_closed = closed_after(&mut old, t_old, case.expect() + GIVE_UP).await;
    assert_on_time(
        &format!("lbd ({rt}), opened before the reload"),
        old_closed,
        &case,
    );
    // The new connection outlives the old value by more than LATE.
    let past = Duration::from_millis(short) + LATE + Duration::from_millis(500);
    let new_closed = closed_after(&mut new, t_new, past).await;
    assert!(
        new_closed.is_none(),
        "lbd ({rt}): a connection opened after the reload to tunnel_idle {long} ms closed \
         after {:?}",
        new_closed
    );
    let (rounds, errors) = traffic.finish().await;
    eprintln!(
        "lbd ({rt}): reload: old connection closed after {:?}, new one open past {} ms; \
         {rounds} echo round trips beside them",
        old_closed,
        past.as_millis()
    );
    assert_eq!(errors, 0, "the traffic beside the probes failed");
    assert!(rounds > 0, "no traffic ran beside the probes");
}

on_both_runtimes!(
    a_reload_applies_new_timeouts_to_new_connections,
    member_fin_ends_what_the_client_half_closed,
    client_fin_ends_what_the_member_half_closed,
    tunnel_idle_replaces_client_and_member_idle,
    fin_timeouts_cut_a_tunnel_short,
    a_side_that_sent_eof_is_not_timed,
);
