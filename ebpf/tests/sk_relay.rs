//! The sockmap relay experiment's program (`bpf/sk_relay.c`, measured by
//! `bench --bin sockmap`): two loopback connections paired in its map relay
//! each other's data in the kernel, both ways, in order, and the end of one
//! still shows to userspace. Needs root and BPF; skips (or fails under
//! `LBD_TEST_REQUIRE_TOOLS`) without them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use lbd_ebpf::{Error, SockPairer};
use lbd_test_support::skip;

/// (the outside end, the end the relay holds) of one loopback connection.
fn connection() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let outside = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (inside, _) = listener.accept().expect("accept");
    outside
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (outside, inside)
}

fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("relayed data");
    buf
}

/// The relay, or `None` (after `skip`) where it cannot be loaded.
fn load() -> Option<SockPairer> {
    match SockPairer::load() {
        Ok(relay) => Some(relay),
        Err(e @ (Error::PermissionDenied { .. } | Error::NotBuilt)) => {
            skip(&e.to_string());
            None
        }
        Err(e) => panic!("loading the relay: {e}"),
    }
}

#[test]
fn paired_sockets_relay_both_ways_in_order() {
    let Some(relay) = load() else {
        return;
    };
    let (mut client, client_side) = connection();
    let (mut member, member_side) = connection();
    relay
        .pair(client_side.as_raw_fd(), member_side.as_raw_fd())
        .expect("pair");

    // Request/response rounds, then a stream of 1 MiB in 64 KiB writes.
    for round in 0..100u32 {
        let request = format!("request {round}\n");
        client.write_all(request.as_bytes()).expect("write");
        assert_eq!(read_exactly(&mut member, request.len()), request.as_bytes());
        let answer = format!("answer {round}\n");
        member.write_all(answer.as_bytes()).expect("write");
        assert_eq!(read_exactly(&mut client, answer.len()), answer.as_bytes());
    }
    let data: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut member = member.try_clone().expect("clone");
        let data = data.clone();
        std::thread::spawn(move || {
            for chunk in data.chunks(64 << 10) {
                member.write_all(chunk).expect("write");
            }
        })
    };
    assert!(
        read_exactly(&mut client, data.len()) == data,
        "bytes out of order"
    );
    writer.join().expect("writer");

    // The data never reached the relay's own sockets; the end does.
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut inside = client_side;
    inside
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let ended = (0..100).find_map(|_| match inside.read(&mut buf) {
        Ok(0) => Some(true),
        Ok(n) => panic!("{n} bytes reached userspace"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("reading the relay's socket: {e}"),
    });
    assert_eq!(ended, Some(true), "the relay's socket did not see the EOF");
    drop(member_side);
}

/// Waits (bounded by `limit`) until `s` sees the end of its stream.
fn wait_for_end(s: &TcpStream, limit: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
        if rc > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return true;
        }
    }
    false
}

/// The hand-over: a request queued on the relay's socket before the
/// pairing, whose client waits for the answer (so no later data would
/// make the kernel look at it), then 8 MiB streamed without pause; a
/// PROXY-like header written to the member first. The relay never reads:
/// pairing, then `kick`, relays what was queued and what follows, in
/// order; at the client's EOF the relay shuts the member side down once
/// it has queued everything. The member gets the header, the request and
/// every byte once, in order, then EOF.
#[test]
fn the_hand_over_keeps_a_streaming_clients_bytes_in_order() {
    const TOTAL: usize = 8 << 20;
    const HEADER: &[u8] = b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n";
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
    const ANSWER: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let Some(relay) = load() else {
        return;
    };
    let (client, inside) = connection();
    let (mut member, mut upstream) = connection();
    let writer = std::thread::spawn(move || {
        let mut client = client;
        // A request that waits for its answer: queued before the pairing,
        // and nothing follows it until it is relayed.
        client.write_all(REQUEST).expect("request");
        assert_eq!(read_exactly(&mut client, ANSWER.len()), ANSWER);
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(4096) {
            client.write_all(chunk).expect("client write");
        }
        client.shutdown(Shutdown::Write).expect("client shutdown");
        client
    });
    // The request is queued on the relay's socket before the pairing.
    std::thread::sleep(Duration::from_millis(100));
    upstream.write_all(HEADER).expect("header");
    relay
        .pair(inside.as_raw_fd(), upstream.as_raw_fd())
        .expect("pair");
    lbd_ebpf::kick(inside.as_raw_fd()).expect("kick");
    lbd_ebpf::kick(upstream.as_raw_fd()).expect("kick upstream");

    let reader = std::thread::spawn(move || {
        assert_eq!(read_exactly(&mut member, HEADER.len()), HEADER);
        assert_eq!(read_exactly(&mut member, REQUEST.len()), REQUEST);
        member.write_all(ANSWER).expect("answer");
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        // Bounded: TOTAL bytes, then EOF (or the read timeout).
        loop {
            let n = member.read(&mut buf).expect("member read");
            if n == 0 {
                return got;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((got + k) % 251) as u8, "byte {} out of order", got + k);
            }
            got += n;
        }
    });
    assert!(
        wait_for_end(&inside, Duration::from_secs(30)),
        "the relay's socket saw no EOF"
    );
    let received = lbd_ebpf::tcp_counts(inside.as_raw_fd())
        .expect("counts")
        .received;
    let want = received + HEADER.len() as u64;
    let mut queued = 0;
    for _ in 0..1000 {
        queued = lbd_ebpf::tcp_counts(upstream.as_raw_fd())
            .expect("counts")
            .queued_out;
        if queued >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(queued >= want, "the member side queued {queued} of {want}");
    upstream.shutdown(Shutdown::Write).expect("pass the EOF on");
    let got = reader.join().expect("member");
    drop(writer.join().expect("client"));
    assert_eq!(received, (REQUEST.len() + TOTAL) as u64);
    assert_eq!(got, TOTAL);
}
