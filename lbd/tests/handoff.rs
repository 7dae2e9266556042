//! `haproxy -x` against the real HAProxy 2.6 (`/usr/sbin/haproxy`): lbd's
//! `_getsocks` client fetches the listening sockets of a running HAProxy,
//! and a new HAProxy started with `-x` takes its listener from lbd's
//! sender. Everything runs on 127.0.0.1 and unix sockets in a scratch
//! directory; skipped (loudly) without HAProxy.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lbd::handoff;
use lbd_test_support::{free_port, scratch_dir, skip};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// Any single wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

fn have_haproxy() -> bool {
    if Path::new(HAPROXY).exists() {
        return true;
    }
    skip(&format!(
        "{HAPROXY} missing (Debian package haproxy; scripts/test installs it)"
    ));
    false
}

/// A HAProxy process of this test, killed (with its process group) when
/// dropped, whatever the test's outcome.
struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, config: &str, extra: &[&str]) -> Haproxy {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("write haproxy.cfg");
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).expect("haproxy log");
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start haproxy");
        Haproxy { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test if HAProxy has exited, with what it said.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "haproxy exited ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

const DEFAULTS: &str = "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  \
                        timeout server 5s\n";

fn local(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
}

fn accepting(fd: BorrowedFd<'_>) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && val == 1
}

fn inode(fd: BorrowedFd<'_>) -> u64 {
    // SAFETY: fstat into a local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    st.st_ino
}

/// Whether process `pid` holds the socket with inode `ino`.
fn holds_socket(pid: u32, ino: u64) -> bool {
    let want = format!("socket:[{ino}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|l| l.as_os_str() == want.as_str())
        })
        .unwrap_or(false)
}

/// A client connection to `addr`, or none if HAProxy already accepted and
/// rejected it while it was being set up (a reset then reaches `connect`).
fn connect(addr: SocketAddr) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&addr, WAIT) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect to {addr}: {e}"),
    }
}

/// HAProxy as the old process: lbd's client fetches its two listeners.
#[test]
fn fetch_listeners_from_haproxy() {
    if !have_haproxy() {
        return;
    }
    let dir = scratch_dir();
    let sock = dir.join("h.sock");
    let (p1, p2, dead) = (free_port(), free_port(), free_port());
    let config = format!(
        "global\n  stats socket {} level admin expose-fd listeners\n{DEFAULTS}\
         frontend f1\n  bind 127.0.0.1:{p1}\n  default_backend b\n\
         frontend f2\n  bind 127.0.0.1:{p2}\n  default_backend b\n\
         backend b\n  server s1 127.0.0.1:{dead}\n",
        sock.display()
    );
    let mut haproxy = Haproxy::start(&dir, &config, &[]);

    // HAProxy serves once its stats socket accepts; bounded polling.
    let deadline = Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        haproxy.assert_running();
        assert!(Instant::now() < deadline, "no stats socket within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let fds: Vec<OwnedFd> = handoff::fetch_listeners(&sock, WAIT)
        .unwrap_or_else(|e| panic!("fetch_listeners: {e}\nhaproxy:\n{}", haproxy.log()));
    let addrs: Vec<SocketAddr> = fds.iter().filter_map(|fd| local(fd.as_fd())).collect();
    for port in [p1, p2] {
        let want = SocketAddr::from(([127, 0, 0, 1], port));
        let fd = fds
            .iter()
            .find(|fd| local(fd.as_fd()) == Some(want))
            .unwrap_or_else(|| panic!("no socket on {want} among {addrs:?}"));
        assert!(accepting(fd.as_fd()), "{want} is listening");
        // HAProxy's very socket, not a copy of its address.
        assert!(
            holds_socket(haproxy.pid(), inode(fd.as_fd())),
            "haproxy holds the socket of {want}"
        );
    }
    // Only HAProxy's own stats socket (a unix socket) may come besides.
    assert!(
        fds.len() <= 3 && addrs.len() == 2,
        "{} fds, inet ones {addrs:?}",
        fds.len()
    );
    haproxy.assert_running();
}

/// HAProxy as the new process: `haproxy -x` takes lbd's listener. The port
/// is bound without SO_REUSEPORT, so HAProxy cannot bind it itself: it
/// starts only by using the fd lbd sent. Clients connected before and
/// while it starts are all taken by HAProxy (its frontend rejects them, so
/// each sees its connection closed), none is lost.
#[test]
fn haproxy_takes_listeners_from_send_listeners() {
    if !have_haproxy() {
        return;
    }
    let dir = scratch_dir();
    // std's bind sets SO_REUSEADDR only. Port 0: the kernel's pick cannot
    // be taken by someone else between choosing and binding it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let port = addr.port();
    let ino = inode(listener.as_fd());

    let sock = dir.join("l.sock");
    let stats = UnixListener::bind(&sock).expect("bind l.sock");
    stats.set_nonblocking(true).expect("nonblocking");

    // Clients queued on our listener before HAProxy exists.
    let mut clients: Vec<TcpStream> = (0..20).filter_map(|_| connect(addr)).collect();

    let config = format!(
        "global\n{DEFAULTS}frontend f\n  bind 127.0.0.1:{port}\n  \
         tcp-request connection reject\n"
    );
    let sock_arg = sock.to_string_lossy().into_owned();

    let served = std::thread::scope(|scope| {
        let server = scope.spawn(|| -> io::Result<()> {
            let deadline = Instant::now() + WAIT;
            let stream = loop {
                match stats.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "haproxy -x never connected",
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(WAIT))?;
            let mut request = [0u8; 10];
            (&stream).read_exact(&mut request)?;
            assert_eq!(&request, handoff::REQUEST);
            handoff::send_listeners(&stream, &[listener.as_fd()])
        });
        // Steady traffic while HAProxy starts and takes over.
        let haproxy = Haproxy::start(&dir, &config, &["-x", &sock_arg]);
        for _ in 0..20 {
            clients.extend(connect(addr));
            std::thread::sleep(Duration::from_millis(10));
        }
        (server.join().expect("server thread"), haproxy)
    });
    let (sent, mut haproxy) = served;
    sent.unwrap_or_else(|e| panic!("send_listeners: {e}\nhaproxy:\n{}", haproxy.log()));

    // HAProxy now holds our very socket.
    let deadline = Instant::now() + WAIT;
    while !holds_socket(haproxy.pid(), ino) {
        haproxy.assert_running();
        assert!(
            Instant::now() < deadline,
            "haproxy does not hold socket:[{ino}]:\n{}",
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // More clients once it runs.
    for _ in 0..20 {
        clients.extend(connect(addr));
    }
    // Every client is accepted (and rejected) by HAProxy: its connection
    // closes. We never accept, so one left in the queue would time out.
    for (i, mut c) in clients.into_iter().enumerate() {
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        match c.read(&mut [0u8; 16]) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "client {i}: {other:?}, not closed by haproxy:\n{}",
                haproxy.log()
            ),
        }
    }
    haproxy.assert_running();
}
