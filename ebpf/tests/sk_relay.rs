//! The sockmap relay experiment's program (`bpf/sk_relay.c`, measured by
//! `bench --bin sockmap`): two loopback connections paired in its map relay
//! each other's data in the kernel, both ways, in order, and the end of one
//! still shows to userspace. Needs root and BPF; skips (or fails under
//! `LBD_TEST_REQUIRE_TOOLS`) without them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use lbd_ebpf::{Error, SockRelay};
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

#[test]
fn paired_sockets_relay_both_ways_in_order() {
    let mut relay = match SockRelay::load() {
        Ok(relay) => relay,
        Err(e @ (Error::PermissionDenied { .. } | Error::NotBuilt)) => {
            skip(&e.to_string());
            return;
        }
        Err(e) => panic!("loading the relay: {e}"),
    };
    let (mut client, client_side) = connection();
    let (mut member, member_side) = connection();
    relay.pair(&client_side, &member_side).expect("pair");

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

/// The hand-over under a client that never pauses: 8 MiB streamed from
/// before the sockets are paired; userspace copies first, then hands the
/// direction over to the kernel while data keeps coming (read the passed
/// count, drain, declare it forwarded; repeat while the program still
/// passes), then passes the EOF on once everything relayed is queued.
/// The member gets every byte once, in order, and most of them were
/// relayed by the kernel.
#[test]
fn the_hand_over_keeps_a_streaming_clients_bytes_in_order() {
    const TOTAL: usize = 8 << 20;
    let mut relay = match SockRelay::load() {
        Ok(relay) => relay,
        Err(e @ (Error::PermissionDenied { .. } | Error::NotBuilt)) => {
            skip(&e.to_string());
            return;
        }
        Err(e) => panic!("loading the relay: {e}"),
    };
    let (client, mut inside) = connection();
    let (mut member, mut upstream) = connection();
    let writer = std::thread::spawn(move || {
        let mut client = client;
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(4096) {
            client.write_all(chunk).expect("client write");
        }
        client.shutdown(Shutdown::Write).expect("client shutdown");
        client
    });
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        // Bounded: the stream is TOTAL bytes, then EOF (or the timeout).
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

    // Userspace copies the first MiB or so.
    let mut buf = vec![0u8; 64 << 10];
    let mut written = 0u64;
    while written < 1 << 20 {
        let n = inside.read(&mut buf).expect("read");
        assert!(n > 0, "early EOF");
        upstream.write_all(&buf[..n]).expect("forward");
        written += n as u64;
    }
    // Under the program: passed to userspace until handed over.
    let c = relay.add(&inside).expect("add");
    let u = relay.add(&upstream).expect("add upstream");
    relay.set_peer(c, u).expect("peer");
    inside.set_nonblocking(true).expect("nonblocking");
    let mut eof = false;
    let mut rounds = 0;
    // Bounded: each round drains what was passed; the stream is finite.
    while !eof && rounds < 100_000 {
        rounds += 1;
        let passed = relay.stat(c).expect("stat").passed;
        loop {
            match inside.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    upstream.write_all(&buf[..n]).expect("forward");
                    written += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        relay.set_forwarded(c, passed).expect("forwarded");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(eof, "no EOF after {rounds} rounds");
    // Everything relayed must be in the upstream socket before its FIN.
    let stat = relay.stat(c).expect("stat");
    let want = written + stat.relayed;
    let mut queued = 0;
    for _ in 0..1000 {
        queued = lbd_ebpf::queued_into(upstream.as_raw_fd()).expect("queued");
        if queued >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(queued >= want, "upstream queued {queued} of {want}");
    upstream.shutdown(Shutdown::Write).expect("pass the EOF on");
    let got = reader.join().expect("member");
    drop(writer.join().expect("client"));
    eprintln!(
        "{got} bytes: {written} copied by userspace, {} relayed by the kernel, {rounds} rounds",
        stat.relayed
    );
    assert_eq!(got, TOTAL);
    assert_eq!(written + stat.relayed, TOTAL as u64);
    assert!(
        stat.relayed > (TOTAL as u64) / 2,
        "the kernel relayed only {} bytes",
        stat.relayed
    );
    relay.forget(c);
    relay.forget(u);
}
