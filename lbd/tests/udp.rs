//! UDP listeners (`protocol = "udp"`), on both runtimes, with real UDP
//! sockets on loopback: members answer `<tag> <length>`; each client
//! socket is its own flow (its own port).
//!
//! - flows are balanced round robin, and every datagram of a flow goes to
//!   the same member;
//! - `session_idle` ends a flow (the next datagram is a new flow) and its
//!   socket is closed;
//! - a member that stops (ICMP port unreachable) loses its flows to the
//!   others, and new flows avoid it;
//! - a reload keeps the flows of members still in the pool and moves the
//!   others;
//! - `allowed_cidrs` refuses flows from outside it (counted);
//! - a listener bound to `0.0.0.0` answers each client from the address
//!   it wrote to;
//! - `run --takeover` hands the UDP sockets over: new flows are answered
//!   all through it;
//! - `udp_connect` checks mark a stopped member down under traffic, and
//!   up again when it answers;
//! - bad input: a zero-length and a 65,507-byte datagram are carried; a
//!   flood of new flows at `connection_limit` is dropped while existing
//!   flows go on;
//! - 10,000 concurrent flows are all answered; memory per flow is
//!   reported and descriptors return to the baseline after expiry.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::udp::{ask, ask_until_answered, client, udp_member, UdpMember};
use common::*;

const ANSWER: Duration = Duration::from_millis(500);

fn config(bind: SocketAddr, listener_extra: &str, members: &[&UdpMember]) -> String {
    let mut c = format!(
        "[[listener]]\nname = \"dns\"\nbind = \"{bind}\"\npool = \"p\"\nprotocol = \"udp\"\n\
         {listener_extra}\n\n[[pool]]\nname = \"p\"\n"
    );
    for m in members {
        c.push_str(&udp_member(m));
    }
    c
}

async fn flows_are_balanced_and_sticky(rt: &str) {
    let ms = [
        UdpMember::start("a").await,
        UdpMember::start("b").await,
        UdpMember::start("c").await,
    ];
    let bind = free_addr();
    let _lbd = Lbd::start(rt, 1, &config(bind, "", &[&ms[0], &ms[1], &ms[2]])).await;
    let mut per_member: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let c = client().await;
        let mut tags = BTreeSet::new();
        for round in 0..4 {
            let (tag, len) = ask_until_answered(&c, bind, b"query", ANSWER, 5)
                .await
                .unwrap_or_else(|| panic!("client {i} round {round}: no answer"));
            assert_eq!(len, 5);
            tags.insert(tag);
        }
        assert_eq!(
            tags.len(),
            1,
            "client {i}: its flow changed member: {tags:?}"
        );
        *per_member
            .entry(tags.into_iter().next().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        per_member.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "round robin by flow: {per_member:?}"
    );
}

async fn session_idle_ends_a_flow(rt: &str) {
    let ms = [UdpMember::start("a").await, UdpMember::start("b").await];
    let bind = free_addr();
    let lbd = Lbd::start(
        rt,
        1,
        &config(bind, "session_idle = \"300ms\"", &[&ms[0], &ms[1]]),
    )
    .await;
    let baseline = settled_fds(lbd.pid()).await;
    let c = client().await;
    let (first, _) = ask_until_answered(&c, bind, b"x", ANSWER, 5)
        .await
        .expect("answer");
    assert_eq!(open_fds(lbd.pid()), baseline + 1, "one socket for the flow");
    // Within session_idle, again and again: the same member.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (tag, _) = ask_until_answered(&c, bind, b"x", ANSWER, 5)
            .await
            .expect("answer");
        assert_eq!(tag, first);
    }
    // Idle past it: the flow ends, its socket closes, and the next
    // datagram is a new flow (round robin: the other member).
    fds_back_to(lbd.pid(), baseline, Duration::from_secs(5)).await;
    let (tag, _) = ask_until_answered(&c, bind, b"x", ANSWER, 5)
        .await
        .expect("answer");
    assert_ne!(tag, first, "a new flow after session_idle");
}

async fn a_stopped_member_loses_its_flows(rt: &str) {
    let a = UdpMember::start("a").await;
    let b = UdpMember::start("b").await;
    let bind = free_addr();
    let _lbd = Lbd::start(rt, 1, &config(bind, "", &[&a, &b])).await;
    // Two flows: one on each member.
    let c1 = client().await;
    let c2 = client().await;
    let t1 = ask_until_answered(&c1, bind, b"1", ANSWER, 5)
        .await
        .expect("c1");
    let t2 = ask_until_answered(&c2, bind, b"2", ANSWER, 5)
        .await
        .expect("c2");
    assert_ne!(t1.0, t2.0);
    let (on_a, on_b) = if t1.0 == "a" { (c1, c2) } else { (c2, c1) };
    a.stop().await;
    // The next datagram of a's flow draws an ICMP port unreachable: the
    // flow ends and a later datagram goes to b.
    let moved = ask_until_answered(&on_a, bind, b"again", ANSWER, 6)
        .await
        .expect("a's flow answered again, by b");
    assert_eq!(moved.0, "b");
    // b's flow never noticed; new flows avoid a while it backs off.
    assert_eq!(
        ask_until_answered(&on_b, bind, b"b", ANSWER, 5)
            .await
            .expect("b")
            .0,
        "b"
    );
    for i in 0..4 {
        let c = client().await;
        let (tag, _) = ask_until_answered(&c, bind, b"new", ANSWER, 5)
            .await
            .unwrap_or_else(|| panic!("new flow {i}: no answer"));
        assert_eq!(tag, "b", "new flow {i}");
    }
}

async fn reload_keeps_flows_of_remaining_members(rt: &str) {
    let ms = [
        UdpMember::start("a").await,
        UdpMember::start("b").await,
        UdpMember::start("c").await,
    ];
    let bind = free_addr();
    let lbd = Lbd::start(rt, 1, &config(bind, "", &[&ms[0], &ms[1]])).await;
    let clients = [client().await, client().await];
    let mut tags = Vec::new();
    for c in &clients {
        tags.push(
            ask_until_answered(c, bind, b"x", ANSWER, 5)
                .await
                .expect("answer")
                .0,
        );
    }
    assert_ne!(tags[0], tags[1]);
    // c joins: both flows stay where they are.
    assert!(
        lbd.reload(&config(bind, "", &[&ms[0], &ms[1], &ms[2]]))
            .await
    );
    for (c, tag) in clients.iter().zip(&tags) {
        for _ in 0..3 {
            let (now, _) = ask_until_answered(c, bind, b"x", ANSWER, 5)
                .await
                .expect("answer");
            assert_eq!(&now, tag, "a flow moved in a reload that kept its member");
        }
    }
    // The first client's member leaves the pool: its flow moves; the
    // other's stays.
    let gone = ms.iter().position(|m| m.tag == tags[0]).expect("member");
    let left: Vec<&UdpMember> = ms
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, m)| m)
        .collect();
    assert!(lbd.reload(&config(bind, "", &left)).await);
    let (moved, _) = ask_until_answered(&clients[0], bind, b"x", ANSWER, 5)
        .await
        .expect("answer");
    assert_ne!(moved, tags[0], "the removed member still gets the flow");
    let (kept, _) = ask_until_answered(&clients[1], bind, b"x", ANSWER, 5)
        .await
        .expect("answer");
    assert_eq!(kept, tags[1]);
}

async fn odd_datagrams_and_a_flood_at_the_limit(rt: &str) {
    let m = UdpMember::start("m").await;
    let bind = free_addr();
    let (admin, lbd) = with_admin(rt, &config(bind, "connection_limit = 4", &[&m])).await;
    // Zero bytes and the largest IPv4 UDP payload both get through whole.
    let c = client().await;
    assert_eq!(
        ask_until_answered(&c, bind, b"", ANSWER, 5).await,
        Some(("m".to_string(), 0))
    );
    let big = vec![0x5a; 65_507];
    assert_eq!(
        ask_until_answered(&c, bind, &big, ANSWER, 5).await,
        Some(("m".to_string(), 65_507))
    );
    // Three more flows reach the limit of 4; a flood of new flows beyond
    // it gets nothing, and the first flows still get answers.
    let mut held = vec![c];
    for _ in 0..3 {
        let c = client().await;
        ask_until_answered(&c, bind, b"in", ANSWER, 5)
            .await
            .expect("within the limit");
        held.push(c);
    }
    let flood: Vec<_> = futures_like_join(40).await;
    let started = Instant::now();
    for c in &flood {
        c.send_to(b"flood", bind).await.expect("send");
    }
    for c in &flood {
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_millis(20), c.recv_from(&mut buf)).await;
        assert!(got.is_err(), "a flow beyond connection_limit was answered");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    for (i, c) in held.iter().enumerate() {
        assert!(
            ask_until_answered(c, bind, b"still", ANSWER, 5)
                .await
                .is_some(),
            "held flow {i} after the flood"
        );
    }
    assert!(lbd.exited().is_none());
    // Each counted: datagrams both ways, the flood's refusals, the flows.
    // A reply is counted just after its send, so the last answer can reach
    // the client before its count: wait (bounded) until the counts have
    // caught up with the answers received.
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut stats = common::apiserver::stats(admin).await;
    for _ in 0..100 {
        if n(&stats["listeners"][0]["datagrams_out_total"]) >= 2 + 3 + 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = common::apiserver::stats(admin).await;
    }
    let l = &stats["listeners"][0];
    assert_eq!(l["protocol"], "udp");
    assert_eq!(n(&l["current_sessions"]), 4, "{l}");
    assert_eq!(n(&l["max_sessions"]), 4, "{l}");
    assert!(n(&l["limit_hits_total"]) >= 40, "{l}");
    assert!(n(&l["datagrams_in_total"]) >= 2 + 3 + 40 + 4, "{l}");
    assert!(n(&l["datagrams_out_total"]) >= 2 + 3 + 4, "{l}");
    assert!(n(&l["bytes_in_total"]) >= 65_507, "{l}");
    let member = &stats["pools"][0]["members"][0];
    assert_eq!(n(&member["sessions_total"]), 4, "{member}");
    assert!(n(&member["datagrams_in_total"]) >= 2 + 3 + 4, "{member}");
    assert_eq!(
        n(&member["datagrams_out_total"]),
        n(&l["datagrams_out_total"]),
        "{member}"
    );
}

/// `allowed_cidrs` applies to the first datagram of a flow: a client
/// outside it gets nothing (counted), one inside is served.
async fn allowed_cidrs_refuse_flows(rt: &str) {
    let m = UdpMember::start("m").await;
    let bind = free_addr();
    let (admin, lbd) = with_admin(
        rt,
        &config(bind, "allowed_cidrs = [\"127.0.0.2/32\"]", &[&m]),
    )
    .await;
    let outside = client().await; // 127.0.0.1
    assert_eq!(ask(&outside, bind, b"no", ANSWER).await, None);
    let inside = tokio::net::UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind");
    assert!(ask_until_answered(&inside, bind, b"yes", ANSWER, 5)
        .await
        .is_some());
    let stats = common::apiserver::stats(admin).await;
    assert_eq!(stats["listeners"][0]["denied_total"], 1, "{stats}");
    assert_eq!(m.received.load(std::sync::atomic::Ordering::Relaxed), 1);
    drop(lbd);
}

/// A listener bound to `0.0.0.0` answers every client from the address
/// it wrote to (`ask` checks the answer's source): a plain reply would
/// come from 127.0.0.1 whichever loopback address was asked.
async fn a_wildcard_listener_answers_from_the_address_asked(rt: &str) {
    let m = UdpMember::start("m").await;
    let port = free_addr().port();
    let bind = SocketAddr::from(([0, 0, 0, 0], port));
    let _lbd = Lbd::start(rt, 1, &config(bind, "", &[&m])).await;
    for last in [3u8, 2, 1, 3] {
        let c = client().await;
        let to = SocketAddr::from(([127, 0, 0, last], port));
        for round in 0..3 {
            assert!(
                ask_until_answered(&c, to, b"q", ANSWER, 5).await.is_some(),
                "no answer through {to} (round {round})"
            );
        }
    }
}

/// lbd on `rt` (one worker) with `cfg` and an admin server: its address.
async fn with_admin(rt: &str, cfg: &str) -> (SocketAddr, Lbd) {
    let admin = free_addr();
    let lbd = Lbd::start(rt, 1, &format!("[admin]\nbind = \"{admin}\"\n\n{cfg}")).await;
    (admin, lbd)
}

/// `n` client sockets.
async fn futures_like_join(n: usize) -> Vec<tokio::net::UdpSocket> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(client().await);
    }
    v
}

/// A pool checked with `udp_connect`: a member that stops is marked down
/// by its checks while new flows keep arriving, and new flows then avoid
/// it; it comes back up when it answers again.
async fn udp_connect_marks_a_stopped_member_down(rt: &str) {
    let a = UdpMember::start("a").await;
    let b = UdpMember::start("b").await;
    let a_addr = a.addr;
    let bind = free_addr();
    let cfg = format!(
        "{}\n[pool.health]\ntype = \"udp_connect\"\n\
         interval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n",
        config(bind, "", &[&a, &b])
    );
    let (admin, _lbd) = with_admin(rt, &cfg).await;
    let status = |stats: &serde_json::Value, tag: &str| -> String {
        let port = if tag == "a" {
            a_addr.port()
        } else {
            b.addr.port()
        };
        stats["pools"][0]["members"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["address"] == format!("127.0.0.1:{port}"))
            })
            .map(|m| m["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // Steady new flows all along: each a new client socket.
    let traffic = tokio::spawn(async move {
        let mut answers = Vec::new();
        for _ in 0..150 {
            let c = client().await;
            answers.push(
                ask(&c, bind, b"t", Duration::from_millis(100))
                    .await
                    .map(|a| a.0),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&common::apiserver::stats(admin).await, "a"), "up");
    a.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if status(&common::apiserver::stats(admin).await, "a") == "down" {
            break;
        }
        assert!(Instant::now() < deadline, "a is not marked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let down_at = Instant::now();
    // New flows avoid it now.
    for i in 0..10 {
        let c = client().await;
        let (tag, _) = ask_until_answered(&c, bind, b"n", ANSWER, 5)
            .await
            .unwrap_or_else(|| panic!("new flow {i}: no answer"));
        assert_eq!(tag, "b", "new flow {i} went to the down member");
    }
    let answers = traffic.await.expect("traffic");
    assert!(
        answers.iter().filter(|a| a.is_some()).count() >= 100,
        "{answers:?}"
    );
    // Back: its checks pass again (rise 1) and it takes flows again.
    let _a = UdpMember::start_on(a_addr, "a").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&common::apiserver::stats(admin).await, "a") != "up" {
        assert!(Instant::now() < deadline, "a did not come back up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down_at.elapsed() < Duration::from_secs(30));
    let mut tags = BTreeSet::new();
    for _ in 0..4 {
        let c = client().await;
        tags.insert(
            ask_until_answered(&c, bind, b"r", ANSWER, 5)
                .await
                .expect("answer")
                .0,
        );
    }
    assert!(
        tags.contains("a"),
        "a gets no flows after coming back: {tags:?}"
    );
}

/// `run --takeover`: the new lbd receives the UDP listener's sockets with
/// the TCP ones and answers from then on; clients opening new flows all
/// along get answers (a datagram caught in the switch is asked again).
async fn takeover_hands_the_udp_sockets_over(rt: &str) {
    let ms = [UdpMember::start("a").await, UdpMember::start("b").await];
    let bind = free_addr();
    let sock = scratch_dir().join("stats.sock");
    let cfg = format!(
        "[global]\ndrain_timeout = \"2s\"\n\n[[stats_socket]]\npath = \"{}\"\n\
         level = \"admin\"\nexpose_fd_listeners = true\n\n{}",
        sock.display(),
        config(bind, "", &[&ms[0], &ms[1]])
    );
    let old = Lbd::start(rt, 1, &cfg).await;
    let traffic = tokio::spawn(async move {
        let mut unanswered = 0;
        for _ in 0..60 {
            let c = client().await;
            if ask_until_answered(&c, bind, b"t", Duration::from_millis(300), 5)
                .await
                .is_none()
            {
                unanswered += 1;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        unanswered
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = Lbd::start_with(rt, 1, &cfg, |cmd| {
        cmd.arg("--takeover").arg(&sock);
    })
    .await;
    new.wait_for_log("serving: sent SIGTERM to old process", 1)
        .await;
    old.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(traffic.await.expect("traffic"), 0, "flows unanswered");
    // The new process serves alone now.
    let c = client().await;
    assert!(ask_until_answered(&c, bind, b"after", ANSWER, 5)
        .await
        .is_some());
    assert!(!new.log().contains("cannot listen"), "{}", new.log());
}

on_both_runtimes!(
    allowed_cidrs_refuse_flows,
    a_wildcard_listener_answers_from_the_address_asked,
    takeover_hands_the_udp_sockets_over,
    udp_connect_marks_a_stopped_member_down,
    flows_are_balanced_and_sticky,
    session_idle_ends_a_flow,
    a_stopped_member_loses_its_flows,
    reload_keeps_flows_of_remaining_members,
    odd_datagrams_and_a_flood_at_the_limit,
);

/// RSS of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

const MANY: usize = 10_000;

/// 10,000 flows at once: every one answered; memory per flow reported;
/// descriptors back to the baseline once they expire. The runtimes run
/// one after the other (20,000 client sockets at once would pass the
/// test's descriptor limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_flows() {
    for rt in ["io-uring", "epoll"] {
        ten_thousand_flows_on(rt).await;
    }
}

async fn ten_thousand_flows_on(rt: &str) {
    let ms = [
        UdpMember::start("a").await,
        UdpMember::start("b").await,
        UdpMember::start("c").await,
    ];
    let bind = free_addr();
    let lbd = Lbd::start(
        rt,
        2,
        &config(
            bind,
            "session_idle = \"10s\"\nconnection_limit = 20000",
            &[&ms[0], &ms[1], &ms[2]],
        ),
    )
    .await;
    let baseline_fds = settled_fds(lbd.pid()).await;
    let rss_before = rss_kib(lbd.pid());
    let clients = futures_like_join(MANY).await;
    let mut answered = vec![false; MANY];
    let started = Instant::now();
    // In chunks of 250 clients (a burst of 10,000 datagrams would only
    // measure the socket buffers): each sends, then reads its answer; a
    // datagram lost on the way is asked again in a later round.
    for _round in 0..5 {
        for chunk in (0..MANY).collect::<Vec<_>>().chunks(250) {
            for &i in chunk {
                if !answered[i] {
                    clients[i].send_to(b"q", bind).await.expect("send");
                }
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            for &i in chunk {
                if answered[i] {
                    continue;
                }
                let mut buf = [0u8; 64];
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                if let Ok(Ok(_)) = tokio::time::timeout(left, clients[i].recv_from(&mut buf)).await
                {
                    answered[i] = true;
                }
            }
        }
        if answered.iter().all(|d| *d) {
            break;
        }
    }
    let missing = answered.iter().filter(|d| !**d).count();
    assert_eq!(missing, 0, "{rt}: {missing} of {MANY} flows never answered");
    let flows_fds = open_fds(lbd.pid());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "{rt}: answering took {took:?}: flows began to expire (session_idle 10s) before \
         they could be counted"
    );
    assert!(
        flows_fds >= baseline_fds + MANY,
        "{rt}: {flows_fds} descriptors for {MANY} flows (baseline {baseline_fds})"
    );
    let per_flow = (rss_kib(lbd.pid()).saturating_sub(rss_before)) as f64 * 1024.0 / MANY as f64;
    eprintln!("{rt}: {MANY} flows: {per_flow:.0} bytes of RSS per flow");
    assert!(per_flow < 8192.0, "{rt}: {per_flow:.0} bytes per flow");
    let spread: u64 = ms
        .iter()
        .map(|m| m.received.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(spread >= MANY as u64);
    for m in &ms {
        let got = m.received.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            got >= (MANY / 4) as u64,
            "{rt}: member {} got only {got}",
            m.tag
        );
    }
    // All idle now: they expire and their sockets close.
    fds_back_to(lbd.pid(), baseline_fds, Duration::from_secs(20)).await;
    drop(clients);
    let _ = ask; // (single-flow helper; used by the other tests)
}
