//! Handing listening sockets from a running process to its successor:
//! HAProxy's `_getsocks` exchange on the stats socket, which `haproxy -x
//! <socket>` uses. Both directions are here: [`send_listeners`] (the old
//! process, on a stats socket with `expose-fd listeners`) and
//! [`fetch_listeners`] (the new process, `-x`). Both speak HAProxy 2.6's
//! wire format (`_getsocks` in src/cli.c, `sock_get_old_sockets` in
//! src/sock.c), so either side may be a real HAProxy.
//!
//! # Lifecycle
//!
//! One exchange on one unix stream connection to the stats socket:
//!
//! 1. the new process connects and sends `_getsocks\n`;
//! 2. the old process answers with the number of sockets, a native-endian
//!    C `int` on its own; with nothing to hand over (or without `expose-fd
//!    listeners`) it sends nothing and closes;
//! 3. the sockets follow in batches of at most [`MAX_SEND_FD`], one
//!    `sendmsg` each: the fds in one `SCM_RIGHTS` message and, as data,
//!    one record per fd: a length byte and the network namespace's name, a
//!    length byte and the interface's name, 4 zero bytes (listener options
//!    before HAProxy 2.3);
//! 4. the new process answers every `recvmsg` with an ack (an `int`, the
//!    number of fds it holds); the old process waits for one after every
//!    full batch, at most [`ACK_TIMEOUT`], before it sends the next;
//! 5. when the new process holds as many fds as announced, and one record
//!    for each, the exchange is over; either side closes.
//!
//! Neither side trusts the other: the old process gives up on a client
//! that does not ack, the new one on an old process that stops sending
//! ([`fetch_listeners`]'s `timeout` bounds every wait), that sends more or
//! fewer sockets than it announced, or records that do not add up. An
//! exchange that fails leaves no fd behind: every fd received so far is
//! closed.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Most fds in one `sendmsg` (HAProxy's `MAX_SEND_FD`).
pub const MAX_SEND_FD: usize = 253;

/// How long the old process waits for an ack after a full batch (HAProxy's
/// `SO_RCVTIMEO` on the CLI connection during `_getsocks`).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the new process sends to ask for the sockets.
pub const REQUEST: &[u8] = b"_getsocks\n";

/// The longest record of one fd: two names of at most 255 bytes (their
/// lengths are one byte each) and the 4 bytes of former options.
const MAX_RECORD: usize = 1 + 255 + 1 + 255 + 4;

/// Bytes of one fd in `SCM_RIGHTS`.
const FD_SIZE: usize = std::mem::size_of::<libc::c_int>();

/// More sockets than this announced is taken for garbage, not a count.
const MAX_COUNT: usize = 1 << 20;

/// A socket the old process handed over, with what it said of it.
#[derive(Debug)]
pub struct HandedSocket {
    pub fd: OwnedFd,
    /// The network namespace of the listener (`namespace` in HAProxy's
    /// `bind`), empty for none.
    pub namespace: String,
    /// The interface it is bound to (`interface`), empty for none.
    pub interface: String,
}

/// Sends `fds` on `stream`, whose client has sent `_getsocks`.
///
/// Sends nothing for no fds (the client reads that as "nothing to take").
/// The stream is made blocking for the exchange, with [`ACK_TIMEOUT`] on
/// every read and write; its mode and timeouts are restored afterwards. A
/// client that does not ack a full batch makes this fail after
/// [`ACK_TIMEOUT`]; the caller closes the stream in any case.
pub fn send_listeners(stream: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() {
        return Ok(());
    }
    let count = libc::c_int::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many sockets to send"))?;
    let _mode = BlockingMode::enter(stream, ACK_TIMEOUT)?;
    let fd = stream.as_fd();
    send_msg(fd, &count.to_ne_bytes(), &[])
        .map_err(|e| context(e, "cannot send the number of sockets"))?;

    let mut records = Vec::with_capacity(MAX_SEND_FD.min(fds.len()) * (1 + 1 + 4));
    let mut batch: Vec<RawFd> = Vec::with_capacity(MAX_SEND_FD.min(fds.len()));
    for (sent, chunk) in fds.chunks(MAX_SEND_FD).enumerate() {
        let sent = sent * MAX_SEND_FD;
        records.clear();
        batch.clear();
        for f in chunk {
            batch.push(f.as_raw_fd());
            encode_record(&mut records, "", "");
        }
        send_msg(fd, &records, &batch).map_err(|e| {
            context(
                e,
                &format!(
                    "cannot send sockets {}-{} of {}",
                    sent + 1,
                    sent + chunk.len(),
                    fds.len()
                ),
            )
        })?;
        // Like HAProxy: after every full batch, the last one too.
        if chunk.len() == MAX_SEND_FD {
            wait_ack(stream).map_err(|e| {
                context(
                    e,
                    &format!(
                        "no ack after {} of {} sockets",
                        sent + chunk.len(),
                        fds.len()
                    ),
                )
            })?;
        }
    }
    Ok(())
}

/// The pid of the process serving the stats socket at `path` (`show
/// info`'s `Pid:`), for `lbd run --takeover`: whom to tell to drain once
/// the new process serves. Every wait is bounded by `timeout`, and the
/// answer by 64 KiB.
pub fn owner_pid(path: &Path, timeout: Duration) -> io::Result<i32> {
    use std::io::Write;
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"show info\n")?;
    let mut answer = Vec::new();
    stream.take(64 << 10).read_to_end(&mut answer)?;
    String::from_utf8_lossy(&answer)
        .lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| io::Error::other("its `show info` has no Pid"))
}

/// Connects to the stats socket at `path`, sends `_getsocks` and returns
/// the listening sockets the process there sent.
///
/// `timeout` bounds the connect and every read, and the whole exchange
/// gives up after `timeout` × (batches of [`MAX_SEND_FD`] + 2). The fds
/// are close-on-exec. An old process with nothing to hand over (it announces 0)
/// gives an empty list; one that closes without a word gives an error.
pub fn fetch_listeners(path: &Path, timeout: Duration) -> io::Result<Vec<OwnedFd>> {
    Ok(fetch_sockets(path, timeout)?
        .into_iter()
        .map(|s| s.fd)
        .collect())
}

/// [`fetch_listeners`], with the namespace and interface names the old
/// process sent for each socket.
pub fn fetch_sockets(path: &Path, timeout: Duration) -> io::Result<Vec<HandedSocket>> {
    let at = path.display();
    if timeout.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the timeout for fetching sockets must not be zero",
        ));
    }
    let stream = connect(path, timeout)
        .map_err(|e| context(e, &format!("cannot connect to the stats socket {at}")))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    send_msg(stream.as_fd(), REQUEST, &[]).map_err(|e| {
        if closed(&e) {
            sent_none(path)
        } else {
            context(e, &format!("cannot send _getsocks to {at}"))
        }
    })?;

    let count = read_count(&stream, path, timeout)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    receive(&stream, count, timeout).map_err(|e| {
        context(
            e,
            &format!("fetching the {count} sockets announced by the process at {at}"),
        )
    })
}

/// The old process closed the connection without a word: what HAProxy
/// does on a stats socket without `expose-fd listeners`.
fn sent_none(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "the process at {} sent no sockets (does its stats socket have \
             'expose-fd listeners'?)",
            path.display()
        ),
    )
}

/// Whether `e` says the peer closed the connection (a close with data of
/// ours unread resets it).
fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// The number of sockets the old process announced.
fn read_count(mut stream: &UnixStream, path: &Path, timeout: Duration) -> io::Result<usize> {
    let at = path.display();
    let mut buf = [0u8; FD_SIZE];
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Err(sent_none(path)),
            // Closed with our request unread.
            Err(e) if got == 0 && closed(&e) => return Err(sent_none(path)),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the process at {at} closed after {got} bytes of the socket count"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the process at {at} did not answer _getsocks within {timeout:?}"),
                ))
            }
            Err(e) => {
                return Err(context(
                    e,
                    &format!("cannot read the socket count from {at}"),
                ))
            }
        }
    }
    let count = libc::c_int::from_ne_bytes(buf);
    usize::try_from(count)
        .ok()
        .filter(|&c| c <= MAX_COUNT)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the process at {at} announced {count} sockets"),
            )
        })
}

/// Receives `count` fds and their records: the loop of `recvmsg` and acks.
fn receive(stream: &UnixStream, count: usize, timeout: Duration) -> io::Result<Vec<HandedSocket>> {
    let batches = count.div_ceil(MAX_SEND_FD);
    let whole = timeout.saturating_mul(u32::try_from(batches + 2).unwrap_or(u32::MAX));
    let deadline = Instant::now().checked_add(whole);

    let mut data = vec![0u8; MAX_SEND_FD * MAX_RECORD];
    // u64s: the control buffer must be aligned for `cmsghdr`.
    let control_len = cmsg_space(MAX_SEND_FD);
    let mut control = vec![0u64; control_len.div_ceil(8)];
    // Owned from the moment they arrive: any error below closes them all.
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(count.min(4 * MAX_SEND_FD));
    let mut records: Vec<(String, String)> = Vec::with_capacity(count.min(4 * MAX_SEND_FD));
    // Bytes of a record not complete yet: fewer than MAX_RECORD.
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_RECORD);

    while fds.len() < count || records.len() < count {
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("got {} within {whole:?}", fds.len()),
                    ));
                }
                left.min(timeout)
            }
            None => timeout,
        };
        stream.set_read_timeout(Some(wait))?;
        let (n, truncated) = recv_msg(
            stream.as_fd(),
            &mut data,
            &mut control,
            control_len,
            &mut fds,
        )
        .map_err(|e| {
            if is_timeout(&e) {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("got {}, then nothing for {wait:?}", fds.len()),
                )
            } else if closed(&e) {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("got {}, then the connection closed ({e})", fds.len()),
                )
            } else {
                context(e, &format!("got {}", fds.len()))
            }
        })?;
        if truncated {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_SEND_FD} sockets in one message"),
            ));
        }
        if fds.len() > count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("got {}: more than announced", fds.len()),
            ));
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("got {}, then the connection closed", fds.len()),
            ));
        }
        // Like HAProxy: an ack for every message, whatever came in it. The
        // old process may have closed after its last batch: not an error.
        let held = libc::c_int::try_from(fds.len()).unwrap_or(libc::c_int::MAX);
        let _ = send_msg(stream.as_fd(), &held.to_ne_bytes(), &[]);

        pending.extend_from_slice(&data[..n]);
        let mut used = 0;
        while let Some((record, len)) = decode_record(&pending[used..]) {
            if records.len() >= fds.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "inconsistent data: record {} came before its socket (got {})",
                        records.len() + 1,
                        fds.len()
                    ),
                ));
            }
            records.push(record);
            used += len;
        }
        pending.drain(..used);
    }
    if !pending.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "inconsistent data: {} bytes after the last socket's record",
                pending.len()
            ),
        ));
    }
    Ok(fds
        .into_iter()
        .zip(records)
        .map(|(fd, (namespace, interface))| HandedSocket {
            fd,
            namespace,
            interface,
        })
        .collect())
}

/// Appends the record of one fd: namespace, interface, 4 zero bytes. Names
/// longer than 255 bytes are cut (their length is one byte).
fn encode_record(out: &mut Vec<u8>, namespace: &str, interface: &str) {
    for name in [namespace, interface] {
        let name = &name.as_bytes()[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
    }
    out.extend_from_slice(&[0; 4]);
}

/// The first record in `buf` and its length, if `buf` holds all of it.
fn decode_record(buf: &[u8]) -> Option<((String, String), usize)> {
    let mut at = 0;
    let mut names = [String::new(), String::new()];
    for name in &mut names {
        let len = usize::from(*buf.get(at)?);
        let bytes = buf.get(at + 1..at + 1 + len)?;
        *name = String::from_utf8_lossy(bytes).into_owned();
        at += 1 + len;
    }
    buf.get(at..at + 4)?;
    let [namespace, interface] = names;
    Some(((namespace, interface), at + 4))
}

/// Connects to the unix socket at `path`, retrying while its backlog is
/// full (a busy or hung process) until `timeout` passes.
fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let addr = SockAddr::unix(path)?;
    // socket2 makes it close-on-exec.
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match socket.connect(&addr) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("its backlog stayed full for {timeout:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
    socket.set_nonblocking(false)?;
    Ok(UnixStream::from(OwnedFd::from(socket)))
}

/// Waits for the client's ack (any bytes of it, as HAProxy does).
fn wait_ack(mut stream: &UnixStream) -> io::Result<()> {
    let mut ack = [0u8; FD_SIZE];
    loop {
        match stream.read(&mut ack) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection",
                ))
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client sent no ack within {ACK_TIMEOUT:?}"),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// `CMSG_SPACE` of `n` fds.
fn cmsg_space(n: usize) -> usize {
    // SAFETY: arithmetic only.
    unsafe { libc::CMSG_SPACE((n * FD_SIZE) as libc::c_uint) as usize }
}

/// Sends all of `data` in one `sendmsg`, with `fds` as `SCM_RIGHTS` unless
/// empty. A short send is an error: the peer would misread the rest.
fn send_msg(fd: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let control_len = if fds.is_empty() {
        0
    } else {
        cmsg_space(fds.len())
    };
    let mut control = vec![0u64; control_len.div_ceil(8)];
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_len as _;
        // SAFETY: the control buffer holds CMSG_SPACE(fds) aligned bytes,
        // so the first header and its data for `fds` lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * FD_SIZE) as libc::c_uint) as _;
            let dst = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, &raw) in fds.iter().enumerate() {
                dst.add(i).write_unaligned(raw);
            }
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the call.
        let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            let n = n as usize;
            if n != data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {n} of {} bytes", data.len()),
                ));
            }
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `recvmsg` into `data`: the fds that came with it are pushed to
/// `fds` (owned, close-on-exec). Returns the bytes read and whether the
/// control data was truncated (fds lost).
fn recv_msg(
    fd: BorrowedFd<'_>,
    data: &mut [u8],
    control: &mut [u64],
    control_len: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<(usize, bool)> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    loop {
        // SAFETY: a zeroed msghdr is a valid empty one.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_len.min(control.len() * 8) as _;
        // SAFETY: msg points at live buffers of the lengths it gives.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the kernel filled msg_control up to msg_controllen; the
        // CMSG_* walk stays within it, and each SCM_RIGHTS payload holds
        // fds just installed in our table, owned by nobody else.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let len =
                        ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let src = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..len / FD_SIZE {
                        let raw = src.add(i).read_unaligned();
                        if raw >= 0 {
                            fds.push(OwnedFd::from_raw_fd(raw));
                        }
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        return Ok((n as usize, msg.msg_flags & libc::MSG_CTRUNC != 0));
    }
}

/// Whether `e` is a socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` passed).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `e` with `what` in front, of the same kind.
fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A stream made blocking with timeouts for one exchange; its former mode
/// and timeouts come back on drop.
struct BlockingMode<'a> {
    stream: &'a UnixStream,
    flags: libc::c_int,
    read: Option<Duration>,
    write: Option<Duration>,
}

impl<'a> BlockingMode<'a> {
    fn enter(stream: &'a UnixStream, timeout: Duration) -> io::Result<BlockingMode<'a>> {
        let fd = stream.as_raw_fd();
        // SAFETY: fcntl on an fd we borrow.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let mode = BlockingMode {
            stream,
            flags,
            read: stream.read_timeout()?,
            write: stream.write_timeout()?,
        };
        if flags & libc::O_NONBLOCK != 0 {
            stream.set_nonblocking(false)?;
        }
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(mode)
    }
}

impl Drop for BlockingMode<'_> {
    fn drop(&mut self) {
        let _ = self.stream.set_read_timeout(self.read);
        let _ = self.stream.set_write_timeout(self.write);
        if self.flags & libc::O_NONBLOCK != 0 {
            let _ = self.stream.set_nonblocking(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Any single wait of these tests.
    const WAIT: Duration = Duration::from_secs(10);

    fn listeners(n: usize) -> Vec<TcpListener> {
        (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect()
    }

    fn inode(fd: BorrowedFd<'_>) -> u64 {
        // SAFETY: fstat into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        st.st_ino
    }

    fn local(fd: BorrowedFd<'_>) -> SocketAddr {
        socket2::SockRef::from(&fd)
            .local_addr()
            .expect("getsockname")
            .as_socket()
            .expect("an inet socket")
    }

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: fcntl on a borrowed fd.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    /// How many fds of this process are the sockets `inodes`. Counting all
    /// of /proc/self/fd would race with the other tests of the binary;
    /// these sockets are this test's own.
    fn fds_of(inodes: &[u64]) -> usize {
        let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| links.iter().any(|w| l.as_os_str() == w.as_str()))
            .count()
    }

    fn raise_nofile() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }

    /// A stats socket in a scratch dir that serves one connection in a
    /// thread: it reads `_getsocks` and runs `serve`; `client` runs meanwhile
    /// with the socket's path. Returns both results.
    fn exchange<S: Send, C>(
        serve: impl FnOnce(&UnixStream) -> S + Send,
        client: impl FnOnce(&Path) -> C,
    ) -> (S, C) {
        let path: PathBuf = lbd_test_support::scratch_dir().join("stats.sock");
        let listener = UnixListener::bind(&path).expect("bind the stats socket");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::scope(|scope| {
            let server = scope.spawn(|| {
                let deadline = Instant::now() + WAIT;
                let stream = loop {
                    match listener.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            assert!(Instant::now() < deadline, "no client within {WAIT:?}");
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                };
                stream.set_nonblocking(false).expect("blocking");
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                let mut request = [0u8; REQUEST.len()];
                (&stream).read_exact(&mut request).expect("the request");
                assert_eq!(&request, REQUEST);
                serve(&stream)
            });
            let c = client(&path);
            (server.join().expect("server thread"), c)
        })
    }

    /// `n` listening sockets go over and arrive as the same sockets, while
    /// clients keep connecting to the first one: every connection queued on
    /// it before, during and after the exchange is accepted on the fd that
    /// arrived (none is lost).
    fn pass(n: usize) {
        raise_nofile();
        let originals = listeners(n);
        let borrowed: Vec<BorrowedFd<'_>> = originals.iter().map(|l| l.as_fd()).collect();
        let target = originals.first().map(|l| l.local_addr().expect("addr"));
        let stop = AtomicBool::new(false);
        let (clients, (sent, got)) = std::thread::scope(|scope| {
            let traffic = scope.spawn(|| {
                let mut clients = Vec::new();
                let Some(target) = target else { return clients };
                // At least 10, fewer than the backlog (128): every one is
                // queued until the fd that arrived accepts it.
                while clients.len() < 10 || (clients.len() < 100 && !stop.load(Ordering::Relaxed)) {
                    clients.push(TcpStream::connect(target).expect("connect"));
                    std::thread::sleep(Duration::from_millis(2));
                }
                clients
            });
            let result = exchange(
                |s| send_listeners(s, &borrowed),
                |path| fetch_listeners(path, WAIT),
            );
            stop.store(true, Ordering::Relaxed);
            (traffic.join().expect("traffic"), result)
        });
        sent.expect("send_listeners");
        let got = got.expect("fetch_listeners");
        assert_eq!(got.len(), n);
        for (orig, fd) in originals.iter().zip(&got) {
            assert_eq!(local(fd.as_fd()), orig.local_addr().expect("addr"));
            assert_eq!(inode(fd.as_fd()), inode(orig.as_fd()), "the same socket");
            assert!(cloexec(fd.as_fd()), "received fds are close-on-exec");
        }
        if let Some(first) = got.first() {
            let new = TcpListener::from(first.try_clone().expect("dup"));
            new.set_nonblocking(true).expect("nonblocking");
            let deadline = Instant::now() + WAIT;
            let mut accepted = 0;
            while accepted < clients.len() {
                match new.accept() {
                    Ok(_) => accepted += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(
                            Instant::now() < deadline,
                            "accepted {accepted} of {} connections",
                            clients.len()
                        );
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            assert!(!clients.is_empty());
        }
    }

    #[test]
    fn no_listener_sends_nothing_and_the_client_gets_an_error() {
        let (sent, got) = exchange(
            |s| send_listeners(s, &[]),
            |path| fetch_listeners(path, WAIT),
        );
        sent.expect("nothing to send is fine");
        let e = got.expect_err("nothing sent");
        assert!(e.to_string().contains("sent no sockets"), "{e}");
    }

    #[test]
    fn one_listener_passes() {
        pass(1);
    }

    #[test]
    fn one_full_batch_passes() {
        pass(MAX_SEND_FD);
    }

    #[test]
    fn a_full_batch_and_one_pass() {
        pass(MAX_SEND_FD + 1);
    }

    #[test]
    fn six_hundred_listeners_pass() {
        pass(600);
    }

    #[test]
    fn a_nonblocking_stream_is_served_and_keeps_its_mode() {
        let originals = listeners(MAX_SEND_FD + 3);
        let borrowed: Vec<BorrowedFd<'_>> = originals.iter().map(|l| l.as_fd()).collect();
        let (sent, got) = exchange(
            |s| {
                s.set_nonblocking(true).expect("nonblocking");
                s.set_read_timeout(None).expect("no timeout");
                let sent = send_listeners(s, &borrowed);
                // SAFETY: fcntl on a borrowed fd.
                let flags = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_GETFL) };
                (
                    sent,
                    flags & libc::O_NONBLOCK != 0,
                    s.read_timeout().expect("get"),
                )
            },
            |path| fetch_listeners(path, WAIT),
        );
        sent.0.expect("send_listeners");
        assert!(sent.1, "the stream is nonblocking again");
        assert_eq!(sent.2, None, "its read timeout is restored");
        assert_eq!(got.expect("fetch_listeners").len(), MAX_SEND_FD + 3);
    }

    #[test]
    fn fewer_sockets_than_announced_fail_and_leak_nothing() {
        let originals = listeners(2);
        let inodes: Vec<u64> = originals.iter().map(|l| inode(l.as_fd())).collect();
        let raw: Vec<RawFd> = originals.iter().map(|l| l.as_raw_fd()).collect();
        let ((), got) = exchange(
            |s| {
                send_msg(s.as_fd(), &3i32.to_ne_bytes(), &[]).expect("count");
                let mut records = Vec::new();
                encode_record(&mut records, "", "");
                encode_record(&mut records, "", "");
                send_msg(s.as_fd(), &records, &raw).expect("2 sockets");
            },
            |path| fetch_listeners(path, WAIT),
        );
        let e = got.expect_err("3 announced, 2 sent");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        assert!(
            e.to_string().contains("got 2, then the connection closed"),
            "{e}"
        );
        assert_eq!(fds_of(&inodes), 2, "only the originals hold the sockets");
    }

    #[test]
    fn more_sockets_than_announced_fail_and_leak_nothing() {
        let originals = listeners(3);
        let inodes: Vec<u64> = originals.iter().map(|l| inode(l.as_fd())).collect();
        let raw: Vec<RawFd> = originals.iter().map(|l| l.as_raw_fd()).collect();
        let ((), got) = exchange(
            |s| {
                send_msg(s.as_fd(), &2i32.to_ne_bytes(), &[]).expect("count");
                let mut records = Vec::new();
                for _ in 0..3 {
                    encode_record(&mut records, "", "");
                }
                send_msg(s.as_fd(), &records, &raw).expect("3 sockets");
            },
            |path| fetch_listeners(path, WAIT),
        );
        let e = got.expect_err("2 announced, 3 sent");
        assert!(e.to_string().contains("more than announced"), "{e}");
        assert_eq!(fds_of(&inodes), 3, "only the originals hold the sockets");
    }

    #[test]
    fn a_record_without_its_socket_fails_and_leaks_nothing() {
        let originals = listeners(2);
        let inodes: Vec<u64> = originals.iter().map(|l| inode(l.as_fd())).collect();
        let raw: Vec<RawFd> = originals.iter().map(|l| l.as_raw_fd()).collect();
        let ((), got) = exchange(
            |s| {
                send_msg(s.as_fd(), &3i32.to_ne_bytes(), &[]).expect("count");
                let mut records = Vec::new();
                for _ in 0..3 {
                    encode_record(&mut records, "", "");
                }
                // Three records, two sockets; then nothing (the client must
                // fail on the records, not wait for the third socket).
                send_msg(s.as_fd(), &records, &raw).expect("2 sockets");
                std::thread::sleep(Duration::from_millis(300));
            },
            |path| fetch_listeners(path, WAIT),
        );
        let e = got.expect_err("inconsistent records");
        assert!(e.to_string().contains("inconsistent data"), "{e}");
        assert_eq!(fds_of(&inodes), 2, "only the originals hold the sockets");
    }

    #[test]
    fn records_split_over_messages_are_put_together() {
        let originals = listeners(3);
        let raw: Vec<RawFd> = originals.iter().map(|l| l.as_raw_fd()).collect();
        let ((), got) = exchange(
            |s| {
                send_msg(s.as_fd(), &3i32.to_ne_bytes(), &[]).expect("count");
                let mut records = Vec::new();
                encode_record(&mut records, "ns1", "");
                encode_record(&mut records, "", "eth0");
                let cut = 9 + 3; // in the middle of the second record
                send_msg(s.as_fd(), &records[..cut], &raw[..2]).expect("2 fds, 1.5 records");
                std::thread::sleep(Duration::from_millis(50));
                send_msg(s.as_fd(), &records[cut..], &[]).expect("the rest, no fd");
                std::thread::sleep(Duration::from_millis(50));
                let mut third = Vec::new();
                encode_record(&mut third, "blue", "lo");
                send_msg(s.as_fd(), &third, &raw[2..]).expect("the third");
            },
            |path| fetch_sockets(path, WAIT),
        );
        let got = got.expect("fetch_sockets");
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|s| (s.namespace.as_str(), s.interface.as_str()))
            .collect();
        assert_eq!(names, [("ns1", ""), ("", "eth0"), ("blue", "lo")]);
        for (orig, s) in originals.iter().zip(&got) {
            assert_eq!(inode(s.fd.as_fd()), inode(orig.as_fd()));
        }
    }

    #[test]
    fn an_old_process_that_closes_at_once_gives_a_clear_error() {
        let ((), got) = exchange(|_| {}, |path| fetch_listeners(path, WAIT));
        let e = got.expect_err("closed at once");
        let text = e.to_string();
        assert!(
            text.contains("sent no sockets") && text.contains("expose-fd listeners"),
            "{text}"
        );
        assert!(text.contains("stats.sock"), "names the socket: {text}");
    }

    #[test]
    fn an_old_process_that_closes_without_reading_gives_the_same_error() {
        let path = lbd_test_support::scratch_dir().join("rude.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // Accept and close at once, the request unread (whether it
                // came yet or not).
                listener.set_nonblocking(true).expect("nonblocking");
                let deadline = Instant::now() + WAIT;
                while Instant::now() < deadline {
                    if let Ok((s, _)) = listener.accept() {
                        drop(s);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            let e = fetch_listeners(&path, WAIT).expect_err("closed at once");
            assert!(e.to_string().contains("sent no sockets"), "{e}");
        });
    }

    #[test]
    fn an_old_process_that_never_answers_times_out() {
        let timeout = Duration::from_millis(300);
        let ((), (got, took)) = exchange(
            |s| {
                // Hold the connection until the client gives up (bounded).
                let _ = s.set_read_timeout(Some(WAIT));
                let _ = (&*s).read(&mut [0u8; 1]);
            },
            |path| {
                let start = Instant::now();
                (fetch_listeners(path, timeout), start.elapsed())
            },
        );
        let e = got.expect_err("no answer");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("did not answer _getsocks"), "{e}");
        assert!(
            took >= timeout.mul_f32(0.9),
            "not before the timeout: {took:?}"
        );
        assert!(took < WAIT, "gave up in {took:?}");
    }

    #[test]
    fn a_missing_socket_is_named() {
        let path = lbd_test_support::scratch_dir().join("none.sock");
        let e = fetch_listeners(&path, WAIT).expect_err("no socket");
        assert!(e.to_string().contains("none.sock"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn a_client_that_never_acks_fails_the_sender_within_the_ack_timeout() {
        let originals = listeners(300);
        let borrowed: Vec<BorrowedFd<'_>> = originals.iter().map(|l| l.as_fd()).collect();
        let done = AtomicBool::new(false);
        let ((sent, took), ()) = exchange(
            |s| {
                let start = Instant::now();
                let sent = send_listeners(s, &borrowed);
                done.store(true, Ordering::Relaxed);
                (sent, start.elapsed())
            },
            |path| {
                let mut client = UnixStream::connect(path).expect("connect");
                client.write_all(REQUEST).expect("request");
                // Never read, never ack; hold on until the sender gave up.
                let deadline = Instant::now() + WAIT;
                while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            },
        );
        let e = sent.expect_err("no ack");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("no ack after 253 of 300"), "{e}");
        assert!(
            took >= ACK_TIMEOUT.mul_f32(0.9),
            "not before the timeout: {took:?}"
        );
        assert!(took < ACK_TIMEOUT * 4, "gave up in {took:?}");
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode_record(&mut buf, "", "");
        assert_eq!(buf, [0, 0, 0, 0, 0, 0]);
        let long = "x".repeat(300);
        encode_record(&mut buf, &long, "eth1");
        let ((ns, ifc), len) = decode_record(&buf).expect("first");
        assert_eq!((ns.as_str(), ifc.as_str(), len), ("", "", 6));
        let ((ns, ifc), len) = decode_record(&buf[6..]).expect("second");
        assert_eq!(
            (ns.len(), ifc.as_str(), len),
            (255, "eth1", 1 + 255 + 1 + 4 + 4)
        );
        for cut in 0..buf.len() - 6 {
            assert!(decode_record(&buf[6..6 + cut]).is_none(), "{cut} bytes");
        }
    }
}
