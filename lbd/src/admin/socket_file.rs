//! The file of the admin unix socket. lbd created it, so lbd removes it
//! when it stops serving it: at shutdown, after a reload that moved or
//! removed the socket, or when the admin thread stops by a panic (it binds
//! again when it restarts). It is removed only if it is still the socket
//! lbd created (same device and inode): a socket another process or a later
//! bind put at that path stays.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// Removes the socket file on drop, if it is still ours.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket file just bound at `path`.
    pub fn created(path: &Path) -> std::io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if !self.still_ours() {
            debug!(
                "admin socket {} was replaced; left in place",
                self.path.display()
            );
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => debug!("admin socket {} removed", self.path.display()),
            Err(e) => warn!(
                "cannot remove the admin socket {}: {e}",
                self.path.display()
            ),
        }
    }
}
