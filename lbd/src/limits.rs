//! Process limits that decide how many connections lbd can hold.

use tracing::{info, warn};

use lbd_config::Config;

/// File descriptors lbd needs beyond two per proxied connection (listening
/// sockets, rings, logs, admin).
const FD_HEADROOM: u64 = 256;

/// Raises the soft open-file limit to the hard limit (each proxied
/// connection holds two descriptors) and warns if the listeners'
/// `connection_limit`s still cannot all be reached.
pub fn raise_fd_limit(config: &Config) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    let available: u64 = lim.rlim_cur;
    let needed = needed_fds(config);
    if available < needed {
        warn!(
            "open file limit is {available} but the listeners' connection_limit values need about {needed}: \
             connections beyond that fail to open (raise LimitNOFILE / ulimit -n)"
        );
    } else {
        info!("open file limit {available} (listeners need about {needed})");
    }
}

/// Descriptors needed with every listener at its `connection_limit`.
pub fn needed_fds(config: &Config) -> u64 {
    let conns: u64 = config
        .listeners
        .iter()
        .map(|l| u64::from(l.connection_limit))
        .sum();
    conns * 2 + FD_HEADROOM
}
