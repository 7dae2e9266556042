//! The sockmap relay experiment's program (`bpf/sk_relay.c`, measured by
//! `bench --bin sockmap`): two loopback connections paired in its map relay
//! each other's data in the kernel, both ways, in order, and the end of one
//! still shows to userspace. Needs root and BPF; skips (or fails under
//! `LBD_TEST_REQUIRE_TOOLS`) without them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
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
