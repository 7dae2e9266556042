//! Buffers the kernel picks for a receive (io_uring "provided buffers"), so
//! a read costs one operation and an idle connection holds no buffer.
//!
//! Without them a connection that waits for data either holds a buffer in
//! a pending read, or waits for readiness first (IORING_OP_POLL_ADD) and
//! then reads: two operations, two completions and two task wake-ups per
//! chunk. With them the worker hands its ring a group of small buffers once
//! (IORING_OP_PROVIDE_BUFFERS); a receive with IOSQE_BUFFER_SELECT waits
//! without a buffer and the kernel takes one from the group only when data
//! arrives.
//!
//! # Lifecycle of a buffer
//!
//! ```text
//! InKernel (in the ring's group)
//!   --a receive completes with data or EOF-----> Lent (a [`Chunk`])
//! Lent
//!   --the chunk is dropped (written out)-------> Returned (on the list)
//! Returned
//!   --a receive finds BATCH on the list, or----> InKernel
//!     the kernel holding fewer than BATCH         (one PROVIDE_BUFFERS per
//!                                                 run of ids)
//! ```
//!
//! A receive whose future is dropped while in flight would lose the buffer
//! its completion carries (tokio-uring discards the completion). The copy
//! loop therefore never drops one: it shuts the sockets down and lets its
//! receives complete (see `proxy::copy`). When the group is empty the
//! receive fails with ENOBUFS and the caller reads into its own buffer.
//!
//! The memory lives as long as the process: the kernel may hold a buffer of
//! the group until the ring is gone, which happens after this thread's
//! objects are dropped. A worker makes its group once (about 2 MiB).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use io_uring::{cqueue, opcode, squeue, types};
use tokio_uring::buf::IoBuf;
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

/// Bytes per buffer: the copy loop's small buffer (`proxy::buffers`
/// checks that they agree).
pub const SIZE: usize = 16 * 1024;
/// Buffers per worker ring.
const COUNT: u16 = 32;
/// The group id (per ring: every worker has its own).
const GROUP: u16 = 0;
/// Returned buffers are given back in batches of at least this many (the
/// kernel uses them in order, so a sorted batch is a few runs of ids, each
/// one PROVIDE_BUFFERS), or sooner when the kernel has fewer than this.
const BATCH: usize = 8;

/// A worker's buffer group.
struct Group {
    /// `COUNT * SIZE` bytes, leaked (see the module doc).
    base: *mut u8,
    /// Ids of lent buffers that were dropped and wait to be given back.
    returned: RefCell<Vec<u16>>,
    /// Whether receives may select from the group (the kernel took it).
    usable: Cell<bool>,
    /// Buffers the kernel holds (given, not yet lent).
    in_kernel: Cell<usize>,
}

impl Group {
    fn ptr(&self, id: u16) -> *mut u8 {
        // SAFETY: ids are below COUNT, so the offset stays in the block.
        unsafe { self.base.add(usize::from(id) * SIZE) }
    }

    /// Gives the returned buffers back to the kernel, one PROVIDE_BUFFERS
    /// per run of consecutive ids. The operations complete on their own;
    /// SQEs run in order, so a receive submitted after them can use them.
    fn flush(&self) {
        let mut returned = self.returned.borrow_mut();
        if returned.is_empty() || (returned.len() < BATCH && self.in_kernel.get() >= BATCH) {
            return;
        }
        self.in_kernel.set(self.in_kernel.get() + returned.len());
        returned.sort_unstable();
        let mut i = 0;
        while i < returned.len() {
            let first = returned[i];
            let mut n: u16 = 1;
            while i + usize::from(n) < returned.len() && returned[i + usize::from(n)] == first + n {
                n += 1;
            }
            drop(provide(self.ptr(first), n, first).submit());
            i += usize::from(n);
        }
        returned.clear();
    }
}

thread_local! {
    static THIS_WORKER: RefCell<Option<Rc<Group>>> = const { RefCell::new(None) };
}

fn group() -> Option<Rc<Group>> {
    THIS_WORKER.with(|g| g.borrow().clone()).filter(|g| g.usable.get())
}

/// Makes this worker's group and hands it to the ring; call once inside
/// the runtime before serving. On failure (kernels before 5.7) receives
/// go on without lent buffers.
pub async fn set_up() {
    if THIS_WORKER.with(|g| g.borrow().is_some()) {
        return;
    }
    let block: &'static mut [u8] = Box::leak(vec![0u8; usize::from(COUNT) * SIZE].into_boxed_slice());
    let group = Rc::new(Group {
        base: block.as_mut_ptr(),
        returned: RefCell::new(Vec::with_capacity(usize::from(COUNT))),
        usable: Cell::new(false),
        in_kernel: Cell::new(usize::from(COUNT)),
    });
    match provide(group.ptr(0), COUNT, 0).submit().await {
        Ok(()) => group.usable.set(true),
        Err(e) => tracing::info!(
            "io_uring: the kernel takes no provided buffers ({e}); reads wait for readiness first"
        ),
    }
    THIS_WORKER.with(|g| *g.borrow_mut() = Some(group));
}

/// Bytes the kernel received into a buffer of the group; the buffer goes
/// back to the group when this is dropped.
pub struct Chunk {
    group: Rc<Group>,
    /// `None`: EOF, for which the kernel selects no buffer.
    id: Option<u16>,
    len: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the kernel wrote `len` bytes there, and the buffer is
        // this chunk's alone until it is dropped.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.len) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.group.returned.borrow_mut().push(id);
        }
    }
}

// SAFETY: the pointer is into the leaked block (stable, never freed), and
// the buffer is this chunk's alone until it is dropped.
unsafe impl IoBuf for Chunk {
    fn stable_ptr(&self) -> *const u8 {
        self.group.ptr(self.id.unwrap_or(0))
    }

    fn bytes_init(&self) -> usize {
        self.len
    }

    fn bytes_total(&self) -> usize {
        SIZE
    }
}

/// Receives into a buffer of this worker's group: `None` when there is no
/// group or it is empty (ENOBUFS): then wait for readiness and read into
/// an own buffer. A chunk of length 0 is EOF.
///
/// The returned future must be polled to completion (see the module doc).
pub async fn recv(fd: RawFd) -> Option<io::Result<Chunk>> {
    let group = group()?;
    group.flush();
    let sqe = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), SIZE as u32)
        .buf_group(GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
    let cqe = UnsubmittedOneshot::new((), Completion, sqe).submit().await;
    let res = cqe.result();
    let id = cqueue::buffer_select(cqe.flags());
    match (res, id) {
        (n, Some(id)) if n >= 0 && id < COUNT => {
            group.in_kernel.set(group.in_kernel.get().saturating_sub(1));
            Some(Ok(Chunk {
                group,
                id: Some(id),
                len: n as usize,
            }))
        }
        (0, None) => Some(Ok(Chunk {
            group,
            id: None,
            len: 0,
        })),
        (n, _) if n == -libc::ENOBUFS => None,
        (n, _) if n < 0 => Some(Err(io::Error::from_raw_os_error(-n))),
        (n, id) => Some(Err(io::Error::other(format!(
            "io_uring receive: {n} bytes without a buffer of the group ({id:?})"
        )))),
    }
}

/// The completion itself.
struct Completion;

impl OneshotOutputTransform for Completion {
    type Output = cqueue::Entry;
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), cqe: cqueue::Entry) -> cqueue::Entry {
        cqe
    }
}

/// Turns a PROVIDE_BUFFERS completion into a result.
struct Provided;

impl OneshotOutputTransform for Provided {
    type Output = io::Result<()>;
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), cqe: cqueue::Entry) -> io::Result<()> {
        match cqe.result() {
            res if res < 0 => Err(io::Error::from_raw_os_error(-res)),
            _ => Ok(()),
        }
    }
}

fn provide(
    at: *mut u8,
    n: u16,
    first: u16,
) -> UnsubmittedOneshot<(), Provided> {
    let sqe = opcode::ProvideBuffers::new(at, SIZE as i32, n, GROUP, first).build();
    UnsubmittedOneshot::new((), Provided, sqe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// A connected pair: a std client and a tokio-uring server side.
    fn pair() -> (std::net::TcpStream, tokio_uring::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, tokio_uring::net::TcpStream::from_std(server))
    }

    #[test]
    fn buffers_are_lent_given_back_and_run_dry() {
        tokio_uring::start(async {
            set_up().await;
            assert!(group().is_some(), "this kernel takes provided buffers");
            let (mut client, server) = pair();
            let fd = server.as_raw_fd();
            // Many more receives than buffers: each comes back to the
            // group when its chunk is dropped.
            for i in 0..3 * usize::from(COUNT) {
                let msg = format!("message {i}");
                client.write_all(msg.as_bytes()).expect("write");
                let chunk = recv(fd).await.expect("a buffer").expect("data");
                assert_eq!(chunk.as_ref(), msg.as_bytes());
            }
            // Holding every buffer: the next receive has none to take.
            let mut held = Vec::new();
            for _ in 0..COUNT {
                client.write_all(b"x").expect("write");
                held.push(recv(fd).await.expect("a buffer").expect("data"));
            }
            client.write_all(b"y").expect("write");
            assert!(recv(fd).await.is_none(), "the group is empty");
            // Given back, they serve again; EOF needs no buffer.
            drop(held);
            let chunk = recv(fd).await.expect("a buffer").expect("data");
            assert_eq!(chunk.as_ref(), b"y");
            drop(client);
            let eof = recv(fd).await.expect("no buffer needed").expect("eof");
            assert!(eof.as_ref().is_empty());
        });
    }
}
