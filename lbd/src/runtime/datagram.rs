//! UDP sockets for the epoll runtime, on readiness: the worker waits until a
//! socket is readable, then takes what is queued with non-blocking
//! `recvfrom`/`recv` into one per-listener buffer, so a flow holds no
//! buffer of its own while it waits. Sends are non-blocking too: a
//! datagram that finds the socket's send buffer full is dropped and
//! counted, as a router would.
//!
//! The io_uring runtime has its own ([`super::uring::UdpSocket`]: multishot
//! `recvmsg` into provided buffers) behind the same [`super::Datagram`].

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;

use super::pktinfo;

/// A UDP socket registered with the worker's reactor.
pub struct ReadyDatagram {
    socket: tokio::net::UdpSocket,
    /// Bound to a wildcard address: receives learn each datagram's
    /// destination ([`pktinfo`]).
    pktinfo: bool,
}

impl ReadyDatagram {
    /// Takes over a bound (or connected) std socket.
    pub fn from_std(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let pktinfo = pktinfo::enable_if_wildcard(&socket)?;
        Ok(ReadyDatagram {
            socket: tokio::net::UdpSocket::from_std(socket)?,
            pktinfo,
        })
    }
}

impl AsRawFd for ReadyDatagram {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl super::Datagram for ReadyDatagram {
    async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        if self.pktinfo {
            let fd = self.as_raw_fd();
            return self
                .socket
                .try_io(Interest::READABLE, || pktinfo::recv(fd, buf));
        }
        let (n, from) = self.socket.try_recv_from(buf)?;
        Ok((n, from, None))
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.try_recv(buf)
    }

    // Sends go straight to the (non-blocking) socket: tokio's `try_send`
    // would refuse with WouldBlock until its reactor has seen the socket
    // writable once, which drops the first datagram of every new flow.
    fn try_send_to(&self, buf: &[u8], to: SocketAddr, from: Option<IpAddr>) -> io::Result<usize> {
        pktinfo::send(self.as_raw_fd(), buf, to, from)
    }

    fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(&self.socket).send(buf)
    }
}

/// A UDP socket connected to `member` (bound to an ephemeral port of the
/// member's family): what a flow sends through, so the member's replies
/// come back to it alone, and an ICMP port unreachable shows as
/// ECONNREFUSED on its next receive or send.
pub fn connected_to(member: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if member.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any)?;
    socket.connect(member)?;
    Ok(socket)
}
