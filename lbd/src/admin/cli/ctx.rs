//! What a command works with: the server, and its connection's session.

use lbd_config::CliLevel;

use crate::admin::stats::RateTracker;
use crate::server::Server;

/// Ends an answer that HAProxy sends without the empty line that ends the
/// others (a few of its error messages); the session drops it.
pub const UNENDED: char = '\u{0}';

/// What one connection carries from command to command.
#[derive(Debug)]
pub struct Session {
    pub level: CliLevel,
    /// `prompt` mode: the connection stays open and each answer is followed
    /// by `> `.
    pub interactive: bool,
    /// `quit` was asked.
    pub quit: bool,
}

/// What a command works with.
pub struct Ctx<'a> {
    pub server: &'a Server,
    /// Session rates between `show stat` / `show info` answers.
    pub rates: &'a RateTracker,
    pub session: &'a mut Session,
}
