//! The driver's stream through real loopback sockets: data order across a
//! receive's pauses, partial takes and switches between ring and one-shot
//! reads, and the socket's release when a stream is dropped mid-receive.
//! Its UDP socket the same way: datagrams whole, in order and with their
//! sources across pauses, ICMP errors in their place, and ring buffers
//! given back by a socket dropped with datagrams queued.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use super::{TcpStream, UdpSocket, Uring};
use crate::runtime::{Datagram, Runtime, Stream};

/// A connected pair: (the std peer, the driver's stream's socket).
fn pair() -> (StdStream, OwnedFd) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // SAFETY: the descriptor was just released by its std socket.
    (peer, unsafe { OwnedFd::from_raw_fd(ours.into_raw_fd()) })
}

/// The byte at offset `i` of the test stream.
fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// 4 MiB written by a thread; read back through reads of changing sizes
/// (smaller than a ring buffer, the ring's size, bulk sizes that switch
/// the stream to one-shot reads and back), slowly enough at first that the
/// receive queues its cap and pauses: every byte arrives once, in order.
#[test]
fn reads_of_any_size_keep_the_order() {
    const TOTAL: usize = 4 << 20;
    let (mut peer, fd) = pair();
    let writer = std::thread::spawn(move || {
        let data: Vec<u8> = (0..TOTAL).map(byte).collect();
        peer.write_all(&data).expect("write");
        peer
    });
    let got = Uring::block_on(async move {
        let stream = TcpStream::from_fd(fd);
        let sizes = [1000usize, 16 << 10, 256 << 10, 7, 64 << 10, 16 << 10];
        let mut got = 0usize;
        let mut round = 0usize;
        // Bounded: every read returns at least a byte until EOF, and the
        // peer writes TOTAL bytes.
        while got < TOTAL && round < TOTAL {
            if round < 8 {
                // Let the receive fill its queue and pause.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if round.is_multiple_of(3) {
                stream.readable().await.expect("readable");
            }
            let buf = Vec::with_capacity(sizes[round % sizes.len()]);
            let (res, buf) = stream.read(buf).await;
            let n = res.expect("read");
            assert!(n > 0, "EOF after {got} bytes");
            for (k, b) in buf.iter().enumerate() {
                assert_eq!(*b, byte(got + k), "byte {} out of order", got + k);
            }
            got += n;
            round += 1;
        }
        got
    })
    .expect("runtime");
    assert_eq!(got, TOTAL);
    drop(writer.join().expect("writer"));
}

/// A stream dropped while its receive waits for data releases the socket
/// at once: the peer sees the connection end.
#[test]
fn a_dropped_stream_with_a_waiting_receive_closes_its_socket() {
    let (mut peer, fd) = pair();
    Uring::block_on(async move {
        let stream = TcpStream::from_fd(fd);
        // Arms the receive, then gives up waiting.
        let wait = tokio::time::timeout(Duration::from_millis(50), stream.readable()).await;
        assert!(wait.is_err(), "no data was sent");
        drop(stream);
        // The cancel goes to the kernel at the next park.
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .expect("runtime");
    let mut buf = [0u8; 16];
    match peer.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the peer's connection did not end: {other:?}"),
    }
}

/// Data and EOF arrive together: the data first, then EOF, then EOF again.
#[test]
fn eof_comes_after_the_data_and_stays() {
    let (mut peer, fd) = pair();
    peer.write_all(b"hello").expect("write");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let reads = Uring::block_on(async move {
        let stream = TcpStream::from_fd(fd);
        let mut reads = Vec::new();
        for _ in 0..3 {
            stream.readable().await.expect("readable");
            let (res, buf) = stream.read(Vec::with_capacity(64)).await;
            reads.push((res.expect("read"), buf));
        }
        reads
    })
    .expect("runtime");
    assert_eq!(reads[0], (5, b"hello".to_vec()));
    assert_eq!(reads[1].0, 0);
    assert_eq!(reads[2].0, 0);
}

/// What splicing relies on (see `nonblocking`): where the probe says the
/// ring waits on non-blocking sockets, a one-shot receive, a stream's
/// read and a write that fills the send buffer all wait on such a socket
/// rather than fail with EAGAIN.
#[test]
fn ring_operations_wait_on_a_non_blocking_socket() {
    use std::os::fd::AsRawFd;
    let mut ring = io_uring::IoUring::new(8).expect("ring");
    if !super::nonblocking::probe(&mut ring).expect("probe") {
        lbd_test_support::skip("this kernel's io_uring does not wait on non-blocking sockets");
        return;
    }
    let (mut peer, fd) = pair();
    crate::runtime::splice::set_nonblocking(fd.as_raw_fd()).expect("O_NONBLOCK");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        peer.write_all(b"hello").expect("write");
        std::thread::sleep(Duration::from_millis(200));
        peer.write_all(b"world").expect("write");
        // Kept open (and unread) until the test is done.
        std::thread::sleep(Duration::from_secs(2));
        peer
    });
    Uring::block_on(async move {
        let raw = fd.as_raw_fd();
        let started = std::time::Instant::now();
        let (res, buf) = super::op::recv(raw, Vec::with_capacity(100)).await;
        assert_eq!(res.expect("one-shot receive"), 5);
        assert_eq!(buf, b"hello");
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "did not wait"
        );
        let stream = TcpStream::from_fd(fd);
        let (res, buf) = stream.read(Vec::with_capacity(100)).await;
        assert_eq!(res.expect("stream read"), 5);
        assert_eq!(buf, b"world");
        // The peer reads nothing: the send buffer fills and the write waits.
        let big = vec![0u8; 64 << 20];
        let write = tokio::time::timeout(Duration::from_millis(500), stream.write_all(big)).await;
        assert!(
            write.is_err(),
            "a write into a full send buffer did not wait"
        );
    })
    .expect("runtime");
    let _ = writer.join();
}

/// Whether this kernel gives UDP sockets the datagram ring (the probe
/// decides, as lbd's start-up does); skips the test if not.
fn datagram_ring_here() -> bool {
    super::probe().expect("io_uring probe");
    let here =
        super::TUNED.load(std::sync::atomic::Ordering::Relaxed) && super::nonblocking::waits();
    if !here {
        lbd_test_support::skip("no multishot recvmsg here (Linux 6.0+)");
    }
    here
}

/// A bound loopback UDP socket for the driver (with a listener's receive
/// buffer), and its address.
fn bound() -> (std::net::UdpSocket, std::net::SocketAddr) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    crate::sockets::grow_receive_buffer(&socket2::SockRef::from(&socket));
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// Reads datagrams off `socket` until `count` arrived (bounded by time).
async fn receive(socket: &UdpSocket, count: usize) -> Vec<(Vec<u8>, std::net::SocketAddr)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < count && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, socket.readable()).await;
        // Bounded: the queue and the socket buffer hold finitely many.
        loop {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from, _)) => got.push((buf[..n].to_vec(), from)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("receive: {e}"),
            }
        }
    }
    got
}

/// Two clients send 300 datagrams each before the socket is read, so its
/// receive queues its cap, pauses, and the rest waits in the kernel:
/// every datagram arrives once, whole, in its client's order and with its
/// client's address, including a zero-length one and one of 65,507 bytes.
#[test]
fn datagrams_arrive_whole_in_order_with_their_sources() {
    if !datagram_ring_here() {
        return;
    }
    const EACH: usize = 300;
    let (ours, addr) = bound();
    let clients = [bound().0, bound().0];
    let got = Uring::block_on(async move {
        let socket = UdpSocket::from_std(ours).expect("socket");
        // Arms the receive.
        let _ = tokio::time::timeout(Duration::from_millis(20), socket.readable()).await;
        for i in 0..EACH {
            for (c, client) in clients.iter().enumerate() {
                let tag = format!("{c}:{i}");
                client.send_to(tag.as_bytes(), addr).expect("send");
            }
        }
        clients[0].send_to(&[], addr).expect("send empty");
        clients[1]
            .send_to(&vec![7u8; 65_507], addr)
            .expect("send big");
        // Let the ring take what it may: its cap, then it pauses.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (queued, armed) = socket.queued();
        assert!(queued >= 32, "the ring queued {queued} datagrams");
        assert!(!armed, "the receive did not pause at its cap");
        let got = receive(&socket, 2 * EACH + 2).await;
        let sources: Vec<_> = clients
            .iter()
            .map(|c| c.local_addr().expect("addr"))
            .collect();
        (got, sources)
    })
    .expect("runtime");
    let (got, sources) = got;
    assert_eq!(got.len(), 2 * EACH + 2, "datagrams lost or doubled");
    let mut next = [0usize; 2];
    for (data, from) in &got {
        let c = sources
            .iter()
            .position(|s| s == from)
            .expect("a known source");
        if data.is_empty() {
            assert_eq!(c, 0);
            continue;
        }
        if data.len() == 65_507 {
            assert_eq!(c, 1);
            assert!(data.iter().all(|b| *b == 7));
            continue;
        }
        assert_eq!(
            std::str::from_utf8(data).expect("tag"),
            format!("{c}:{}", next[c])
        );
        next[c] += 1;
    }
    assert_eq!(next, [EACH, EACH]);
}

/// A connected socket whose peer's port is closed: the ICMP port
/// unreachable shows as ECONNREFUSED on a receive, and the socket goes on
/// receiving once the port is served.
#[test]
fn an_icmp_refusal_is_reported_in_its_place() {
    if !datagram_ring_here() {
        return;
    }
    let (gone, member) = bound();
    drop(gone);
    let (ours, _) = bound();
    ours.connect(member).expect("connect");
    let ours_addr = ours.local_addr().expect("addr");
    Uring::block_on(async move {
        let socket = UdpSocket::from_std(ours).expect("socket");
        let _ = tokio::time::timeout(Duration::from_millis(20), socket.readable()).await;
        socket.try_send(b"anyone?").expect("send");
        tokio::time::timeout(Duration::from_secs(5), socket.readable())
            .await
            .expect("no refusal within 5s")
            .expect("readable");
        let mut buf = [0u8; 64];
        let err = socket.try_recv(&mut buf).expect_err("a refusal");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
        let back = std::net::UdpSocket::bind(member).expect("rebind the member's port");
        back.send_to(b"here", ours_addr).expect("send");
        tokio::time::timeout(Duration::from_secs(5), socket.readable())
            .await
            .expect("no datagram within 5s")
            .expect("readable");
        let n = socket.try_recv(&mut buf).expect("receive");
        assert_eq!(&buf[..n], b"here");
    })
    .expect("runtime");
}

/// A wildcard-bound socket learns each datagram's destination through
/// the ring (its control message rides in the ring's buffer).
#[test]
fn a_wildcard_socket_learns_destinations_through_the_ring() {
    if !datagram_ring_here() {
        return;
    }
    let ours = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let port = ours.local_addr().expect("addr").port();
    let got = Uring::block_on(async move {
        let socket = UdpSocket::from_std(ours).expect("socket");
        let _ = tokio::time::timeout(Duration::from_millis(20), socket.readable()).await;
        let client = bound().0;
        for last in [2u8, 3] {
            client
                .send_to(b"to", ("127.0.0.".to_string() + &last.to_string(), port))
                .expect("send");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(socket.queued().0, 2, "not received through the ring");
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for _ in 0..2 {
            let (_, _, to) = socket.try_recv_from(&mut buf).expect("receive");
            got.push(to);
        }
        got
    })
    .expect("runtime");
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().expect("ip"));
    assert_eq!(got, [ip("127.0.0.2"), ip("127.0.0.3")]);
}

/// Sockets dropped with full queues give their buffers back: after more
/// such sockets than the ring has buffers, a new one still receives
/// through the ring.
#[test]
fn dropped_sockets_give_their_buffers_back() {
    if !datagram_ring_here() {
        return;
    }
    Uring::block_on(async move {
        let client = bound().0;
        // 8 rounds of a full queue (32) use twice the ring's 128 buffers.
        for round in 0..8 {
            let (ours, addr) = bound();
            let socket = UdpSocket::from_std(ours).expect("socket");
            let _ = tokio::time::timeout(Duration::from_millis(20), socket.readable()).await;
            for i in 0..40 {
                client
                    .send_to(format!("{round}:{i}").as_bytes(), addr)
                    .expect("send");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                socket.queued().0 >= 32,
                "round {round}: the ring queued too few"
            );
            drop(socket);
        }
        let (ours, addr) = bound();
        let socket = UdpSocket::from_std(ours).expect("socket");
        let _ = tokio::time::timeout(Duration::from_millis(20), socket.readable()).await;
        client.send_to(b"last", addr).expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            socket.queued().0,
            1,
            "the ring had no buffer for a new socket"
        );
    })
    .expect("runtime");
}
