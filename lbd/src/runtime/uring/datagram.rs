//! A UDP socket on the worker's ring.
//!
//! Receiving: one multishot `recvmsg` per socket, armed at the first wait
//! and kept in the ring while datagrams keep coming, puts each datagram
//! (behind its source address) into a buffer of the worker's datagram
//! ring (see [`super::driver::DatagramRing`]). The `try_recv` calls copy
//! the front one out and hand the buffer straight back: a receive costs
//! neither a readiness wait nor a syscall, and a burst of datagrams is
//! taken from the completion queue in one go. A socket with a full queue
//! (a listener's holds 32, a flow's 8) has its receive paused until it is
//! read; the kernel keeps what arrives meanwhile in the socket's buffer.
//! Where the ring cannot serve (no datagram ring on this kernel, or its
//! buffers ran out) the socket waits for readiness in the ring and
//! receives with a plain non-blocking syscall: slower, same results.
//!
//! Sends are plain non-blocking syscalls, as on the epoll runtime: a
//! datagram finding no room is dropped and counted by the proxy. (The UDP
//! profile puts a send's cost in the kernel's delivery, not in entering
//! it; see bench/README, issue 21.)

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::types::RecvMsgOut;
use socket2::SockAddr;

use super::driver::{self, Driver};
use super::{op, stream};
use crate::runtime::{pktinfo, Datagram};

pub struct UdpSocket {
    socket: std::net::UdpSocket,
    /// The driver slot of the receive side.
    recv: usize,
}

/// What the receive queue holds for a `try_recv`.
enum Queued {
    /// A datagram (its length in the caller's buffer, its source and
    /// destination) or an error the socket reported.
    Datagram(io::Result<(usize, SocketAddr, Option<IpAddr>)>),
    /// Nothing, and the multishot receive is armed: it will bring more.
    Empty,
    /// Nothing, and no receive is armed: ask the socket itself.
    Unarmed,
}

impl UdpSocket {
    /// Takes over a bound (or connected) std socket.
    pub(super) fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        // For the syscall paths: a receive or send never blocks the worker.
        socket.set_nonblocking(true)?;
        pktinfo::enable_if_wildcard(&socket)?;
        let bound = socket.peer_addr().is_err();
        let recv = driver::with(|d| d.new_datagram_recv(bound));
        Ok(UdpSocket { socket, recv })
    }

    /// (Datagrams queued from the ring, whether its receive is armed.)
    #[cfg(test)]
    pub(super) fn queued(&self) -> (usize, bool) {
        driver::with(|d| {
            let r = d.recv(self.recv);
            (r.queue.len(), r.armed)
        })
    }

    /// Takes the front of the receive queue, copying a datagram into
    /// `buf` (cut to its length) and giving its ring buffer back.
    fn take(&self, buf: &mut [u8]) -> Queued {
        driver::with(|d| {
            let r = d.recv(self.recv);
            let Some((res, bid)) = r.queue.pop_front() else {
                return if r.armed {
                    Queued::Empty
                } else {
                    Queued::Unarmed
                };
            };
            let Some(bid) = bid else {
                return Queued::Datagram(Err(io::Error::from_raw_os_error(-res)));
            };
            let out = copy_out(d, bid, res, buf);
            d.give_back(true, bid);
            Queued::Datagram(out)
        })
    }
}

/// The datagram in buffer `bid` (a `recvmsg` result of `res` bytes):
/// its payload copied into `buf`, its source and its destination (if the
/// socket reports it).
fn copy_out(
    d: &Driver,
    bid: u16,
    res: i32,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let Some(msghdr) = d.datagram_msghdr() else {
        return Err(io::Error::other("no datagram ring"));
    };
    let data = d.buffer(true, bid, res as usize);
    let out = RecvMsgOut::parse(data, msghdr)
        .map_err(|()| io::Error::other("recvmsg result shorter than its header"))?;
    if out.is_payload_truncated() || out.is_name_data_truncated() {
        // Cannot happen with buffers sized for the largest datagram.
        return Err(io::Error::other("datagram cut by the ring's buffer"));
    }
    let payload = out.payload_data();
    let n = payload.len().min(buf.len());
    buf[..n].copy_from_slice(&payload[..n]);
    let to = pktinfo::destination(out.control_data());
    Ok((n, source(out.name_data())?, to))
}

/// A `sockaddr` as the kernel wrote it.
fn source(name: &[u8]) -> io::Result<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is a valid (empty) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = name
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies `len` bytes, within both the name and the storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    // SAFETY: the storage holds the kernel's address of `len` bytes.
    let addr = unsafe { SockAddr::new(storage, len as libc::socklen_t) };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("datagram from an address of another family"))
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        // Cancels an armed receive; queued datagrams' buffers go back.
        driver::with(|d| d.drop_recv(self.recv));
    }
}

impl Datagram for UdpSocket {
    async fn readable(&self) -> io::Result<()> {
        let fd = self.as_raw_fd();
        let wait_one_shot =
            poll_fn(|cx| driver::with(|d| stream::poll_ready(d, self.recv, fd, cx))).await;
        if wait_one_shot {
            op::readable(fd).await?;
        }
        Ok(())
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        match self.take(buf) {
            Queued::Datagram(result) => result,
            Queued::Empty => Err(io::ErrorKind::WouldBlock.into()),
            Queued::Unarmed => pktinfo::recv(self.as_raw_fd(), buf),
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.take(buf) {
            Queued::Datagram(result) => result.map(|(n, _, _)| n),
            Queued::Empty => Err(io::ErrorKind::WouldBlock.into()),
            Queued::Unarmed => self.socket.recv(buf),
        }
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr, from: Option<IpAddr>) -> io::Result<usize> {
        pktinfo::send(self.as_raw_fd(), buf, to, from)
    }

    fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        self.socket.send(buf)
    }
}
