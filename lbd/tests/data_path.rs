//! Data-path behaviour through real sockets on loopback: balancing, retries,
//! big transfers, half-close, concurrency, limits, CIDRs, PROXY headers and
//! idle timeouts. Every test runs on both runtimes.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn listener(name: &str, bind: SocketAddr, pool: &str, extra: &str) -> String {
    format!("[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\npool = \"{pool}\"\n{extra}\n")
}

fn pool(name: &str, extra: &str, members: &[String]) -> String {
    format!("[[pool]]\nname = \"{name}\"\n{extra}\n{}", members.concat())
}

async fn tagged(n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Backend::start(&format!("m{i}"), Mode::TaggedEcho).await);
    }
    v
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

async fn round_robin_spreads_evenly(rt: &str) {
    let b = tagged(3).await;
    let bind = free_addr();
    let cfg =
        listener("web", bind, "p", "") + &pool("p", "", &b.iter().map(member).collect::<Vec<_>>());
    let _lbd = Lbd::start(rt, 1, &cfg).await;
    assert_eq!(
        tally(bind, 300).await,
        counts(&[("m0", 100), ("m1", 100), ("m2", 100)])
    );
}

async fn round_robin_follows_weights(rt: &str) {
    let b = tagged(3).await;
    let bind = free_addr();
    let members: Vec<String> = b
        .iter()
        .enumerate()
        .map(|(i, m)| member(m) + &format!("weight = {}\n", i + 1))
        .collect();
    let cfg = listener("web", bind, "p", "") + &pool("p", "", &members);
    let _lbd = Lbd::start(rt, 1, &cfg).await;
    assert_eq!(
        tally(bind, 600).await,
        counts(&[("m0", 100), ("m1", 200), ("m2", 300)])
    );
}

async fn backup_only_when_primaries_unusable(rt: &str) {
    let mut b = tagged(3).await;
    let bind = free_addr();
    let members = vec![
        member(&b[0]),
        member(&b[1]),
        member(&b[2]) + "backup = true\n",
    ];
    let cfg = listener("web", bind, "p", "") + &pool("p", "", &members);
    let _lbd = Lbd::start(rt, 2, &cfg).await;
    let before = tally(bind, 40).await;
    assert_eq!(
        before.get("m2"),
        None,
        "backup used while primaries were up: {before:?}"
    );
    // Both primaries die (their ports close): every client must still be
    // served, by the backup, with no visible error.
    let backup = b.pop();
    for primary in b {
        primary.stop().await;
    }
    let after = tally(bind, 40).await;
    assert_eq!(after, counts(&[("m2", 40)]));
    drop(backup);
}

async fn maint_drain_and_weight_zero_members_get_nothing(rt: &str) {
    let b = tagged(4).await;
    let bind = free_addr();
    let members = vec![
        member(&b[0]),
        member(&b[1]) + "admin_state = \"maint\"\n",
        member(&b[2]) + "weight = 0\n",
        member(&b[3]) + "admin_state = \"drain\"\n",
    ];
    let cfg = listener("web", bind, "p", "") + &pool("p", "", &members);
    let _lbd = Lbd::start(rt, 2, &cfg).await;
    assert_eq!(tally(bind, 30).await, counts(&[("m0", 30)]));
}

async fn connect_retry_skips_a_dead_member(rt: &str) {
    let b = tagged(2).await;
    let dead = free_addr(); // nothing listens there: connect is refused
    let bind = free_addr();
    let members = vec![
        member(&b[0]),
        format!(
            "[[pool.member]]\naddress = \"127.0.0.1\"\nport = {}\n",
            dead.port()
        ),
        member(&b[1]),
    ];
    let cfg = listener("web", bind, "p", "") + &pool("p", "retries = 2", &members);
    let lbd = Lbd::start(rt, 1, &cfg).await;
    let got = tally(bind, 60).await;
    assert_eq!(got.values().sum::<usize>(), 60);
    assert!(
        got["m0"] >= 25 && got["m1"] >= 25,
        "uneven after skipping the dead member: {got:?}"
    );
    assert!(
        lbd.log().contains("connect failed"),
        "failure not logged:\n{}",
        lbd.log()
    );
}

async fn member_reset_reaches_the_client_as_a_reset(rt: &str) {
    let b = Backend::start("m0", Mode::TagThenReset).await;
    let bind = free_addr();
    let cfg = listener("web", bind, "p", "") + &pool("p", "", &[member(&b)]);
    let _lbd = Lbd::start(rt, 1, &cfg).await;
    for _ in 0..3 {
        let mut conn = connect_from(bind, None).await.expect("connect");
        assert_eq!(read_line(&mut conn).await.expect("tag"), "m0");
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .expect("lbd passes the end on");
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset),
            "a member's reset must not look like a complete answer"
        );
    }
}

async fn all_members_dead_closes_clients_at_once(rt: &str) {
    let dead = free_addr();
    let bind = free_addr();
    let members = vec![format!(
        "[[pool.member]]\naddress = \"127.0.0.1\"\nport = {}\n",
        dead.port()
    )];
    let cfg = listener("web", bind, "p", "") + &pool("p", "", &members);
    let lbd = Lbd::start(rt, 1, &cfg).await;
    for _ in 0..3 {
        let started = Instant::now();
        assert!(
            is_refused(bind, None, Duration::from_secs(3)).await,
            "client left hanging"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    lbd.wait_for_log("no usable member", 1).await;
}

/// Deterministic pseudo-random bytes (xorshift64*), chunk after chunk.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

async fn transfer_64_mib_each_way_intact(rt: &str) {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 64 << 10;
    let b = tagged(1).await;
    let bind = free_addr();
    let cfg = listener("web", bind, "p", "") + &pool("p", "", &[member(&b[0])]);
    let _lbd = Lbd::start(rt, 1, &cfg).await;

    let mut conn = connect_from(bind, None).await.expect("connect");
    assert_eq!(read_line(&mut conn).await.expect("tag"), "m0");
    let (mut r, mut w) = conn.into_split();
    // Upload 64 MiB while the echo brings the same 64 MiB back down.
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern(0x9E37_79B9_7F4A_7C15);
        let mut buf = vec![0u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            pattern.fill(&mut buf);
            w.write_all(&buf).await.expect("upload");
        }
        w.shutdown().await.expect("half-close");
    });
    let mut expected = Pattern(0x9E37_79B9_7F4A_7C15);
    let mut want = vec![0u8; CHUNK];
    let mut got = vec![0u8; CHUNK];
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..TOTAL / CHUNK {
        expected.fill(&mut want);
        tokio::time::timeout_at(deadline.into(), r.read_exact(&mut got))
            .await
            .expect("download in time")
            .expect("download");
        assert!(got == want, "corrupted data in chunk {i}");
    }
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.expect("eof");
    assert!(rest.is_empty(), "{} unexpected trailing bytes", rest.len());
    writer.await.expect("writer");
}

async fn half_close_reaches_the_member_and_the_reply_returns(rt: &str) {
    let b = Backend::start("count", Mode::CountThenReply).await;
    let bind = free_addr();
    let cfg = listener("web", bind, "p", "") + &pool("p", "", &[member(&b)]);
    let _lbd = Lbd::start(rt, 1, &cfg).await;
    let mut c = connect_from(bind, None).await.expect("connect");
    c.write_all(b"hello").await.expect("write");
    c.shutdown().await.expect("shutdown(WR)");
    let mut reply = String::new();
    tokio::time::timeout(WAIT, c.read_to_string(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(reply, "got 5 bytes\n");
}

async fn a_thousand_concurrent_connections(rt: &str) {
    const N: usize = 1000;
    let b = tagged(2).await;
    let bind = free_addr();
    let cfg =
        listener("web", bind, "p", "") + &pool("p", "", &b.iter().map(member).collect::<Vec<_>>());
    let _lbd = Lbd::start(rt, 2, &cfg).await;
    let mut open = Vec::with_capacity(N);
    // Open them all (in small batches to stay within the listen backlog) and
    // keep them open together.
    for batch in 0..N / 100 {
        let mut tasks = Vec::new();
        for i in 0..100 {
            tasks.push(tokio::spawn(async move {
                let mut c = connect_from(bind, None).await?;
                let tag = read_line(&mut c).await?;
                let msg = format!("conn {}\n", batch * 100 + i);
                c.write_all(msg.as_bytes()).await?;
                let echo = read_line(&mut c).await?;
                assert_eq!(format!("{echo}\n"), msg);
                Ok::<_, std::io::Error>((tag, c))
            }));
        }
        for t in tasks {
            open.push(t.await.expect("task").expect("connection"));
        }
    }
    assert_eq!(open.len(), N);
    // All still alive at the same time: each echoes once more.
    for (_, c) in open.iter_mut() {
        c.write_all(b"again\n").await.expect("write");
    }
    for (_, c) in open.iter_mut() {
        assert_eq!(read_line(c).await.expect("echo"), "again");
    }
    let on_m0 = open.iter().filter(|(t, _)| t == "m0").count();
    assert!(on_m0 > 300 && on_m0 < 700, "spread {on_m0}/{N}");
}

async fn connection_limit_refuses_the_excess_at_once(rt: &str) {
    let b = tagged(1).await;
    let bind = free_addr();
    let cfg = listener("web", bind, "p", "connection_limit = 5") + &pool("p", "", &[member(&b[0])]);
    let lbd = Lbd::start(rt, 2, &cfg).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut c = connect_from(bind, None).await.expect("connect");
        assert_eq!(read_line(&mut c).await.expect("served"), "m0");
        held.push(c);
    }
    let started = Instant::now();
    assert!(
        is_refused(bind, None, Duration::from_secs(3)).await,
        "6th connection not refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusal was not immediate"
    );
    drop(held.pop());
    // The freed slot is usable again once lbd has seen the close.
    let deadline = Instant::now() + WAIT;
    loop {
        if hit(bind).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot never came back; log:\n{}",
            lbd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn allowed_cidrs_admit_and_refuse_by_source(rt: &str) {
    let b = tagged(1).await;
    let bind = free_addr();
    let cfg = listener("web", bind, "p", "allowed_cidrs = [\"127.0.0.1/32\"]")
        + &pool("p", "", &[member(&b[0])]);
    let _lbd = Lbd::start(rt, 1, &cfg).await;
    let ok = hit_from(bind, Some("127.0.0.1:0".parse().unwrap())).await;
    assert_eq!(ok.expect("127.0.0.1 is allowed"), "m0");
    let from = Some("127.0.0.2:0".parse().unwrap());
    assert!(
        is_refused(bind, from, Duration::from_secs(3)).await,
        "127.0.0.2 was served"
    );
}

/// Maps 300 source addresses 127.0.1.x / 127.0.2.x to the member tag they
/// reach.
async fn map_sources(bind: SocketAddr) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for i in 0..300u32 {
        let src = SocketAddr::from(([127, 0, 1 + (i / 200) as u8, (i % 200 + 1) as u8], 0));
        let tag = hit_from(bind, Some(src)).await.expect("served");
        map.insert(src.ip().to_string(), tag);
    }
    map
}

async fn source_ip_is_sticky_and_remaps_about_one_nth(rt: &str) {
    let b = tagged(4).await;
    let bind = free_addr();
    let three = listener("web", bind, "p", "")
        + &pool(
            "p",
            "algorithm = \"source_ip\"",
            &b[..3].iter().map(member).collect::<Vec<_>>(),
        );
    let lbd = Lbd::start(rt, 2, &three).await;
    let first = map_sources(bind).await;
    let again = map_sources(bind).await;
    assert_eq!(first, again, "same client IP must reach the same member");
    let used: std::collections::BTreeSet<_> = first.values().collect();
    assert_eq!(used.len(), 3, "all three members should get clients");

    let four = listener("web", bind, "p", "")
        + &pool(
            "p",
            "algorithm = \"source_ip\"",
            &b.iter().map(member).collect::<Vec<_>>(),
        );
    assert!(lbd.reload(&four).await);
    let after = map_sources(bind).await;
    let moved: Vec<_> = first.keys().filter(|ip| first[*ip] != after[*ip]).collect();
    let share = moved.len() as f64 / first.len() as f64;
    assert!(
        (0.12..=0.40).contains(&share),
        "{} of 300 clients moved",
        moved.len()
    );
    let to_new = moved.iter().filter(|ip| after[**ip] == "m3").count();
    assert!(
        to_new * 10 >= moved.len() * 9,
        "moved clients should go to the new member: {to_new}/{}",
        moved.len()
    );
}

/// Sends a connection through a PROXY-protocol listener and returns the
/// header bytes the member received (echoed back) and the client's address.
async fn proxy_header_seen(bind: SocketAddr, len: Option<usize>) -> (Vec<u8>, SocketAddr) {
    let mut c = connect_from(bind, None).await.expect("connect");
    let client = c.local_addr().expect("local addr");
    assert_eq!(read_line(&mut c).await.expect("tag"), "m0");
    let header = match len {
        Some(n) => {
            let mut h = vec![0u8; n];
            tokio::time::timeout(WAIT, c.read_exact(&mut h))
                .await
                .expect("in time")
                .expect("read");
            h
        }
        None => read_raw_line(&mut c).await.expect("v1 line"),
    };
    (header, client)
}

async fn proxy_protocol_headers_are_byte_exact(rt: &str) {
    let b = tagged(1).await;
    let (v1, v2) = (free_addr(), free_addr());
    let cfg = listener("one", v1, "p", "proxy_protocol = \"v1\"")
        + &listener("two", v2, "p", "proxy_protocol = \"v2\"")
        + &pool("p", "", &[member(&b[0])]);
    let _lbd = Lbd::start(rt, 1, &cfg).await;

    let (line, client) = proxy_header_seen(v1, None).await;
    let want = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
        client.port(),
        v1.port()
    );
    assert_eq!(String::from_utf8(line).unwrap(), want);

    let (h, client) = proxy_header_seen(v2, Some(28)).await;
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend_from_slice(&client.port().to_be_bytes());
    want.extend_from_slice(&v2.port().to_be_bytes());
    assert_eq!(h, want);
}

async fn idle_connections_are_closed_busy_ones_are_not(rt: &str) {
    let b = tagged(1).await;
    let bind = free_addr();
    let cfg = listener(
        "web",
        bind,
        "p",
        "client_idle = \"1s\"\nmember_idle = \"1s\"",
    ) + &pool("p", "", &[member(&b[0])]);
    let _lbd = Lbd::start(rt, 1, &cfg).await;

    // Busy: a message every 300 ms for 2.5 s outlives the 1 s timeout.
    let mut busy = connect_from(bind, None).await.expect("connect");
    assert_eq!(read_line(&mut busy).await.expect("tag"), "m0");
    for i in 0..8 {
        busy.write_all(format!("{i}\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_line(&mut busy).await.expect("echo"), i.to_string());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Idle: closed by lbd after about a second.
    let started = Instant::now();
    let mut idle = connect_from(bind, None).await.expect("connect");
    assert_eq!(read_line(&mut idle).await.expect("tag"), "m0");
    assert!(
        is_closed_without_data(&mut idle, Duration::from_secs(5)).await,
        "idle connection kept open"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
}

async fn ipv6_listener_in_front_of_ipv4_members(rt: &str) {
    let b = tagged(1).await;
    let bind = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, free_port()));
    let cfg =
        listener("v6", bind, "p", "proxy_protocol = \"v2\"") + &pool("p", "", &[member(&b[0])]);
    let _lbd = Lbd::start(rt, 1, &cfg).await;
    let (h, client) = proxy_header_seen(bind, Some(16 + 36)).await;
    assert!(client.is_ipv6());
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend_from_slice(&[0x21, 0x21, 0, 36]);
    want.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    want.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    want.extend_from_slice(&client.port().to_be_bytes());
    want.extend_from_slice(&bind.port().to_be_bytes());
    assert_eq!(h, want);
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so
/// connects to it hang like connects to a black-holed host.
fn black_hole() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s.into());
    }
    std::thread::sleep(Duration::from_millis(100));
    (listener, fillers)
}

async fn connect_timeout_moves_on_to_another_member(rt: &str) {
    let good = tagged(1).await;
    let (hole, _fillers) = black_hole();
    let hole_addr = hole.local_addr().unwrap();
    let bind = free_addr();
    let members = vec![
        format!(
            "[[pool.member]]\naddress = \"127.0.0.1\"\nport = {}\n",
            hole_addr.port()
        ),
        member(&good[0]),
    ];
    let cfg = listener("web", bind, "p", "member_connect = \"300ms\"")
        + &pool("p", "retries = 1", &members);
    let lbd = Lbd::start(rt, 1, &cfg).await;
    let baseline = settled_fds(lbd.pid()).await;
    let syn_sent_before = syn_sent_to(hole_addr.port());
    let started = Instant::now();
    // The first connection meets the black hole first (round robin).
    assert_eq!(hit(bind).await.unwrap(), "m0");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "did not wait for the connect timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "connect timeout not enforced: {took:?}"
    );
    lbd.wait_for_log("timeout after 300ms", 1).await;
    // The timed-out socket is closed, not left to the kernel's SYN retries.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(lbd.pid()) > baseline || syn_sent_to(hole_addr.port()) > syn_sent_before {
        assert!(
            Instant::now() < deadline,
            "timed-out connect still alive: {} fds (baseline {baseline}), {} SYN-SENT (before {syn_sent_before})",
            open_fds(lbd.pid()),
            syn_sent_to(hole_addr.port())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sockets on this host in SYN-SENT towards 127.0.0.1:`port`.
fn syn_sent_to(port: u16) -> usize {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && f[3] == "02"
        })
        .count()
}

async fn bad_clients_and_members_leak_no_descriptors(rt: &str) {
    let b = tagged(1).await;
    let dead = free_addr();
    let (bind, bind_dead, bind_cidr) = (free_addr(), free_addr(), free_addr());
    let dead_member = format!(
        "[[pool.member]]\naddress = \"127.0.0.1\"\nport = {}\n",
        dead.port()
    );
    let cfg = listener("web", bind, "p", "client_idle = \"1s\"")
        + &listener("dead", bind_dead, "d", "")
        + &listener("cidr", bind_cidr, "p", "allowed_cidrs = [\"10.0.0.0/8\"]")
        + &pool("p", "", &[member(&b[0])])
        + &pool("d", "", &[dead_member]);
    let lbd = Lbd::start(rt, 2, &cfg).await;
    assert_eq!(hit(bind).await.unwrap(), "m0");
    let baseline = settled_fds(lbd.pid()).await;

    let mut idle = Vec::new();
    for _ in 0..20 {
        // Normal, then a client that resets mid-stream.
        assert_eq!(hit(bind).await.unwrap(), "m0");
        let mut c = connect_from(bind, None).await.unwrap();
        assert_eq!(read_line(&mut c).await.unwrap(), "m0");
        c.write_all(b"partial").await.unwrap();
        c.set_zero_linger().unwrap();
        drop(c);
        // Refused by the dead pool and by the CIDR filter.
        assert!(is_refused(bind_dead, None, Duration::from_secs(3)).await);
        assert!(is_refused(bind_cidr, None, Duration::from_secs(3)).await);
        // Left idle until lbd's client_idle closes it.
        let mut c = connect_from(bind, None).await.unwrap();
        assert_eq!(read_line(&mut c).await.unwrap(), "m0");
        idle.push(c);
    }
    assert!(
        open_fds(lbd.pid()) > baseline,
        "the idle connections should hold descriptors"
    );
    fds_back_to(lbd.pid(), baseline, Duration::from_secs(15)).await;
    drop(idle);
}

on_both_runtimes!(
    connect_timeout_moves_on_to_another_member,
    ipv6_listener_in_front_of_ipv4_members,
    bad_clients_and_members_leak_no_descriptors,
    round_robin_spreads_evenly,
    round_robin_follows_weights,
    backup_only_when_primaries_unusable,
    maint_drain_and_weight_zero_members_get_nothing,
    connect_retry_skips_a_dead_member,
    member_reset_reaches_the_client_as_a_reset,
    all_members_dead_closes_clients_at_once,
    transfer_64_mib_each_way_intact,
    half_close_reaches_the_member_and_the_reply_returns,
    a_thousand_concurrent_connections,
    connection_limit_refuses_the_excess_at_once,
    allowed_cidrs_admit_and_refuse_by_source,
    source_ip_is_sticky_and_remaps_about_one_nth,
    proxy_protocol_headers_are_byte_exact,
    idle_connections_are_closed_busy_ones_are_not,
);
