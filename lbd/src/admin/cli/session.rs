//! One CLI connection, as HAProxy serves it: a line of commands separated
//! by `;`, each answer followed by an empty line; without `prompt` the
//! connection closes after the first line, with it the connection stays
//! and every answer is followed by `> ` until `quit` (or `prompt` again).
//!
//! # Lifecycle
//!
//! ```text
//! Waiting for a line (idle: may be closed to make room, see super)
//!   --no line within the socket's timeout, EOF, a line over MAX_LINE--> Closed
//!   --`_getsocks` as the first line--> hand-off (crate::handoff) --> Closed
//!   --a line--> Answering (each command in turn, read by the client within
//!               the socket's timeout)
//! Answering
//!   --`quit`, or not interactive--> Closed
//!   --interactive--> Waiting
//! ```

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use anyhow::Context as _;
use lbd_config::StatsSocket;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use super::commands;
use super::ctx::{Ctx, Session, UNENDED};
use super::words;
use crate::admin::stats::RateTracker;
use crate::server::Server;

/// The longest command line (HAProxy's default buffer size).
pub const MAX_LINE: usize = 16 * 1024;

/// What one line was.
enum Line {
    Text(String),
    /// The client closed its side.
    End,
    /// More than [`MAX_LINE`] bytes without a line end.
    TooLong,
}

/// Reads one line of at most [`MAX_LINE`] bytes.
async fn read_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(Line::End);
    }
    if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(String::from_utf8_lossy(&line).into_owned()))
}

/// A connection of a CLI socket: unix or TCP.
pub trait CliStream: AsyncRead + AsyncWrite + Unpin {
    /// The unix stream `_getsocks` passes sockets over; `None` on TCP.
    fn into_unix(self) -> Option<UnixStream>;
}

impl CliStream for UnixStream {
    fn into_unix(self) -> Option<UnixStream> {
        Some(self)
    }
}

impl CliStream for TcpStream {
    fn into_unix(self) -> Option<UnixStream> {
        None
    }
}

/// Serves one connection. `idle` is set while the connection waits for a
/// line (the only time it may be closed to make room for another).
pub async fn serve<S: CliStream>(
    stream: S,
    socket: &StatsSocket,
    server: &Server,
    rates: &RateTracker,
    idle: &AtomicBool,
) -> anyhow::Result<()> {
    // Reads through the buffer, writes straight to the stream.
    let mut conn = BufReader::new(stream);
    let mut session = Session {
        level: socket.level,
        interactive: false,
        quit: false,
    };
    let mut first = true;
    loop {
        idle.store(true, Relaxed);
        let line = tokio::time::timeout(socket.timeout, read_line(&mut conn))
            .await
            .context("no command within the read timeout")??;
        idle.store(false, Relaxed);
        let text = match line {
            Line::Text(text) => text,
            Line::End => return Ok(()),
            Line::TooLong => {
                let answer = format!("lbd: command line over {MAX_LINE} bytes; closing.\n\n");
                let _ =
                    tokio::time::timeout(socket.timeout, conn.write_all(answer.as_bytes())).await;
                anyhow::bail!("a command line over {MAX_LINE} bytes");
            }
        };
        let commands = words::split(&text);
        if first && commands.len() == 1 && commands[0] == ["_getsocks"] {
            return super::hand_off(conn.into_inner().into_unix(), socket, server).await;
        }
        first = false;
        let mut answer = String::new();
        for words in &commands {
            let text = run(server, rates, &mut session, words);
            match text.strip_suffix(UNENDED) {
                Some(text) => answer.push_str(text),
                None => {
                    answer.push_str(&text);
                    answer.push('\n');
                }
            }
            if session.quit {
                break;
            }
            // In prompt mode every answer gets its prompt.
            if session.interactive {
                answer.push_str("> ");
            }
        }
        tokio::time::timeout(socket.timeout, conn.write_all(answer.as_bytes()))
            .await
            .context("the client did not read the answer within the write timeout")??;
        if session.quit || !session.interactive {
            let _ = conn.shutdown().await;
            return Ok(());
        }
    }
}

fn run(server: &Server, rates: &RateTracker, session: &mut Session, words: &[String]) -> String {
    let mut ctx = Ctx {
        server,
        rates,
        session,
    };
    commands::run(&mut ctx, words)
}
