//! Replies from the address the client wrote to, for a UDP listener bound
//! to a wildcard address (`0.0.0.0:53`, `[::]:53`).
//!
//! Such a socket receives datagrams sent to any of the host's addresses,
//! but a plain `sendto` answers from whichever address the route to the
//! client picks. A client that sent to another one (a second VIP, a
//! secondary address) drops that reply: its socket is connected to the
//! address it asked. So a wildcard listener's socket asks the kernel for
//! each datagram's destination (`IP_PKTINFO` / `IPV6_RECVPKTINFO`), the
//! flow keeps it, and replies name it as their source (the same control
//! message on `sendmsg`). A listener bound to one address needs none of
//! this and pays nothing for it.
//!
//! Both runtimes use these calls: the epoll one for every receive of such
//! a socket, the io_uring one where its ring cannot serve (its multishot
//! `recvmsg` leaves the control message in the ring's buffer, read with
//! [`destination`]).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::SockAddr;

/// Room for one packet-info control message of either family
/// (`CMSG_SPACE(sizeof(struct in6_pktinfo))` is 40 bytes on 64-bit).
pub const CONTROL_SPACE: usize = 64;

/// An 8-byte aligned control buffer.
type Control = [u64; CONTROL_SPACE / 8];

/// Sets the socket option that makes a wildcard-bound socket report each
/// datagram's destination: whether it did (the socket is bound to a
/// wildcard address, and not connected).
pub fn enable_if_wildcard(socket: &std::net::UdpSocket) -> io::Result<bool> {
    if socket.peer_addr().is_ok() {
        return Ok(false);
    }
    let (level, name) = match socket.local_addr()? {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
        }
        _ => return Ok(false),
    };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// The destination address in a received datagram's control data, if
/// it carries one.
pub fn destination(control: &[u8]) -> Option<IpAddr> {
    // Copied for the alignment `cmsghdr` needs (a ring buffer's control
    // data sits behind the address at any offset).
    let mut aligned: Control = [0; CONTROL_SPACE / 8];
    let len = control.len().min(CONTROL_SPACE);
    // SAFETY: copies `len` bytes, within both the source and `aligned`.
    unsafe {
        std::ptr::copy_nonoverlapping(control.as_ptr(), aligned.as_mut_ptr().cast(), len);
    }
    // SAFETY: an all-zero msghdr is valid; it only describes `aligned`.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_control = aligned.as_mut_ptr().cast();
    msg.msg_controllen = len as _;
    // SAFETY: the CMSG_* macros walk `aligned` within `msg_controllen`,
    // and each header's data is read only within its `cmsg_len`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        // Bounded: each step moves forward within `len` bytes.
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            let room = c.cmsg_len as usize - (data as usize - cmsg as usize);
            if c.cmsg_level == libc::IPPROTO_IP
                && c.cmsg_type == libc::IP_PKTINFO
                && room >= size_of::<libc::in_pktinfo>()
            {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            if c.cmsg_level == libc::IPPROTO_IPV6
                && c.cmsg_type == libc::IPV6_PKTINFO
                && room >= size_of::<libc::in6_pktinfo>()
            {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    None
}

/// One non-blocking `recvmsg` on `fd`: the datagram's length in `buf`, its
/// source, and its destination where the socket reports it.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all-zero storage and msghdr are valid empty values.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut control: Control = [0; CONTROL_SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_SPACE as _;
    // SAFETY: every pointer in `msg` points at live buffers of the sizes
    // given, for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote an address of `msg_namelen` bytes.
    let from = unsafe { SockAddr::new(name, msg.msg_namelen) }
        .as_socket()
        .ok_or_else(|| io::Error::other("datagram from an address of another family"))?;
    let control_len = (msg.msg_controllen as usize).min(CONTROL_SPACE);
    // SAFETY: `control` holds CONTROL_SPACE initialised bytes.
    let control_bytes =
        unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), control_len) };
    Ok((n as usize, from, destination(control_bytes)))
}

/// One non-blocking send of `buf` to `to` on `fd`, from local address
/// `from` where given (else the one the route picks).
pub fn send(fd: RawFd, buf: &[u8], to: SocketAddr, from: Option<IpAddr>) -> io::Result<usize> {
    let to = SockAddr::from(to);
    let mut control: Control = [0; CONTROL_SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = to.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = to.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(from) = from {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: the control buffer has room for one pktinfo message of
        // either family (CONTROL_SPACE), which the header and data below
        // fill within.
        unsafe {
            let (level, kind, len) = match from {
                IpAddr::V4(_) => (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    size_of::<libc::in_pktinfo>(),
                ),
                IpAddr::V6(_) => (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    size_of::<libc::in6_pktinfo>(),
                ),
            };
            msg.msg_controllen = libc::CMSG_SPACE(len as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as _;
            let data = libc::CMSG_DATA(cmsg);
            match from {
                IpAddr::V4(ip) => {
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                    std::ptr::write_unaligned(data.cast(), info);
                }
                IpAddr::V6(ip) => {
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = ip.octets();
                    std::ptr::write_unaligned(data.cast(), info);
                }
            }
        }
    }
    // SAFETY: every pointer in `msg` points at live buffers of the sizes
    // given, for the duration of the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// Waits (up to 5 s) for a datagram on `server`, then takes it with
    /// [`recv`].
    fn wait_and_recv(server: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr, Option<IpAddr>) {
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut probe = [0u8; 1];
        let _ = server.peek_from(&mut probe);
        recv(server.as_raw_fd(), buf).expect("recvmsg")
    }

    /// A wildcard-bound socket learns each datagram's destination and
    /// answers from it: a client connected to 127.0.0.3 (which a plain
    /// reply, from 127.0.0.1, would not reach) gets the answer.
    #[test]
    fn a_wildcard_socket_answers_from_the_address_asked() {
        let server = UdpSocket::bind("0.0.0.0:0").expect("bind");
        assert!(enable_if_wildcard(&server).expect("option"));
        let port = server.local_addr().expect("addr").port();
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .connect(("127.0.0.3", port))
            .expect("connect to 127.0.0.3");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.send(b"ping").expect("send");
        let mut buf = [0u8; 64];
        let (n, from, to) = wait_and_recv(&server, &mut buf);
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, client.local_addr().expect("addr"));
        assert_eq!(to, Some("127.0.0.3".parse().expect("ip")));
        send(server.as_raw_fd(), b"pong", from, to).expect("sendmsg");
        let n = client.recv(&mut buf).expect("the answer from 127.0.0.3");
        assert_eq!(&buf[..n], b"pong");
    }

    /// A socket bound to one address sets nothing and reports nothing.
    #[test]
    fn a_socket_bound_to_one_address_needs_no_option() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(!enable_if_wildcard(&server).expect("option"));
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .send_to(b"x", server.local_addr().expect("addr"))
            .expect("send");
        let mut buf = [0u8; 8];
        let (n, _, to) = wait_and_recv(&server, &mut buf);
        assert_eq!((n, to), (1, None));
    }
}
