//! HAProxy's command line, for lbd run as `haproxy` (a symlink named
//! `haproxy`, or `lbd haproxy ARGS...`).
//!
//! HAProxy's flags are not getopt style: `-sf`/`-st` take every following
//! word that is a pid, `-Ws` is one flag, `-db`/`-dM...` are debug flags,
//! and `--` ends the flags (the rest are config files). This module only
//! parses; `main.rs` acts on an [`Invocation`].

use std::ffi::OsString;
use std::path::PathBuf;

/// The HAProxy version lbd reads configs as and reports to `-v`: what
/// scripts that parse `haproxy -v` (Octavia's
/// `haproxy_compatibility.get_haproxy_versions`) see.
pub use lbd_config::haproxy::HAPROXY_VERSION;

/// What `-v`/`-vv` print on the first line: HAProxy's layout
/// (`HAProxy version X.Y.Z-suffix date - url`), so that parsers find the
/// version, with lbd's name and version in the suffix and after it.
pub fn version_line() -> String {
    format!(
        "HAProxy version {HAPROXY_VERSION}-lbd{lbd} 2026/01/01 - lbd {lbd}, an L4 (TCP) load \
         balancer reading HAProxy's configuration and command line",
        lbd = env!("CARGO_PKG_VERSION")
    )
}

/// What `-v` prints (`-vv` adds `extra`: build notes).
pub fn version_text(long: bool, extra: &str) -> String {
    let mut text = format!(
        "{}\nStatus: lbd, not HAProxy: mode tcp only; see lbd's README \"Running lbd as haproxy\".\n",
        version_line()
    );
    if long {
        text.push_str(&format!(
            "Build options :\n  {extra}\n\nSupported flags : -f -c -q -V -L -p -D -W -Ws -db -N -n \
             -C -sf -st -x -v -vv\n"
        ));
    }
    text
}

/// `-v` or `-vv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Short,
    Long,
}

/// How the old processes of `-sf`/`-st` are told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOld {
    /// `-sf`: SIGUSR1, finish the connections (soft stop).
    Finish,
    /// `-st`: SIGTERM, stop at once.
    Terminate,
}

/// `-W` or `-Ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterWorker {
    Plain,
    /// `-Ws`: also tell systemd (NOTIFY_SOCKET) READY/RELOADING/STOPPING.
    Systemd,
}

/// A parsed HAProxy command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `-f` (files or directories) and the words after `--`, in order.
    pub files: Vec<PathBuf>,
    /// `-c`: check the config and exit.
    pub check: bool,
    /// `-q`: no messages (HAProxy prints neither notices nor alerts).
    pub quiet: bool,
    /// `-V`: verbose (undoes `-q`).
    pub verbose: bool,
    pub version: Option<Version>,
    /// `-L`: the local peer name (HAProxy sets `HAPROXY_LOCALPEER`).
    pub local_peer: Option<String>,
    /// `-p`: write the pid here.
    pub pid_file: Option<PathBuf>,
    /// `-D`: daemonize.
    pub daemon: bool,
    /// `-db`: stay in the foreground (wins over `-D`).
    pub foreground: bool,
    pub master_worker: Option<MasterWorker>,
    /// `-N`: the default per-proxy maxconn (frontends without one).
    pub default_maxconn: Option<u32>,
    /// `-n`: the process-wide maxconn (lbd: the global `maxconn`).
    pub global_maxconn: Option<u32>,
    /// `-C`: change to this directory before reading files.
    pub chdir: Option<PathBuf>,
    /// `-sf`/`-st` and their pids (`-sf` with no pid is allowed, as in
    /// HAProxy: nothing to stop).
    pub stop_old: Option<(StopOld, Vec<i32>)>,
    /// `-x`: fetch listening sockets from this unix socket.
    pub sockets_from: Option<PathBuf>,
    /// Flags accepted and ignored (debug switches), for a notice.
    pub ignored: Vec<String>,
}

/// Why the command line was refused: HAProxy prints its usage and exits 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// HAProxy's usage text, trimmed to what lbd takes.
pub const USAGE: &str = "\
Usage : haproxy [-f <cfgfile|cfgdir>]* [ -vdVD ] [ -n <maxconn> ] [ -N <maxpconn> ]
        [ -p <pidfile> ] [ -C <dir> ] [-- <cfgfile>*]
        -v displays version ; -vv shows known build options.
        -db only disables background mode.
        -V enters verbose mode (disables quiet mode)
        -D goes daemon ; -C changes to <dir> before loading files.
        -W master-worker mode.
        -Ws master-worker mode with systemd notify support.
        -q quiet mode : don't display messages
        -c check mode : only check config files and exit
        -n sets the maximum total # of connections
        -N sets the default, per-proxy maximum # of connections
        -L set local peer name
        -p writes the pid to this file
        -sf/-st [pid ]* finishes/terminates old pids.
        -x <unix_socket> get listening sockets from a unix socket
(lbd: the -d debug switches are accepted and ignored)
";

/// Whether lbd was started as `haproxy` (argv[0]'s file name).
pub fn invoked_as_haproxy(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "haproxy")
}

/// Parses the words after the program name.
pub fn parse(args: &[OsString]) -> Result<Invocation, Usage> {
    let mut inv = Invocation::default();
    let mut i = 0;
    // The value of the flag at `i`: the next word.
    let value = |i: &mut usize, flag: &str| -> Result<OsString, Usage> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| Usage(format!("'{flag}' expects an argument")))
    };
    let number = |word: OsString, flag: &str| -> Result<u32, Usage> {
        word.to_str()
            .and_then(|w| w.parse::<u32>().ok())
            .ok_or_else(|| {
                Usage(format!(
                    "'{flag}' expects a number, got '{}'",
                    word.to_string_lossy()
                ))
            })
    };
    while i < args.len() {
        let Some(word) = args[i].to_str() else {
            return Err(Usage(format!(
                "'{}': not a flag (config files go after -f or --)",
                args[i].to_string_lossy()
            )));
        };
        match word {
            "--" => {
                inv.files.extend(args[i + 1..].iter().map(PathBuf::from));
                break;
            }
            "-f" => inv.files.push(value(&mut i, word)?.into()),
            "-c" => inv.check = true,
            "-q" => inv.quiet = true,
            "-V" => inv.verbose = true,
            "-v" => inv.version = Some(inv.version.map_or(Version::Short, |v| v)),
            "-vv" => inv.version = Some(Version::Long),
            "-L" => inv.local_peer = Some(value(&mut i, word)?.to_string_lossy().into_owned()),
            "-p" => inv.pid_file = Some(value(&mut i, word)?.into()),
            "-D" => inv.daemon = true,
            "-db" => inv.foreground = true,
            "-W" => inv.master_worker = Some(MasterWorker::Plain),
            "-Ws" => inv.master_worker = Some(MasterWorker::Systemd),
            "-N" => inv.default_maxconn = Some(number(value(&mut i, word)?, word)?),
            "-n" => inv.global_maxconn = Some(number(value(&mut i, word)?, word)?),
            "-C" => inv.chdir = Some(value(&mut i, word)?.into()),
            "-x" => inv.sockets_from = Some(value(&mut i, word)?.into()),
            "-sf" | "-st" => {
                let how = if word == "-sf" {
                    StopOld::Finish
                } else {
                    StopOld::Terminate
                };
                let mut pids = Vec::new();
                // Every following word that is a pid (HAProxy stops at the
                // first that is not).
                while let Some(pid) = args
                    .get(i + 1)
                    .and_then(|w| w.to_str())
                    .and_then(|w| w.parse::<i32>().ok())
                {
                    if pid <= 0 {
                        return Err(Usage(format!("'{word}': invalid pid {pid}")));
                    }
                    pids.push(pid);
                    i += 1;
                }
                inv.stop_old = Some((how, pids));
            }
            // Debug switches (memory poisoning, poller choice, ...): they
            // do not change what lbd does.
            d if d.starts_with("-d") && d.len() > 2 => inv.ignored.push(d.to_owned()),
            "-m" | "-S" => {
                let v = value(&mut i, word)?;
                inv.ignored.push(format!("{word} {}", v.to_string_lossy()));
            }
            other => return Err(Usage(format!("unknown option '{other}'"))),
        }
        i += 1;
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<Invocation, Usage> {
        parse(&words.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn octavia_s_command_lines() {
        let check = p(&["-c", "-L", "peer1", "-f", "lb.cfg", "-f", "ug.conf"]).expect("check");
        assert!(check.check);
        assert_eq!(check.local_peer.as_deref(), Some("peer1"));
        assert_eq!(
            check.files,
            vec![PathBuf::from("lb.cfg"), PathBuf::from("ug.conf")]
        );

        let pre = p(&["-f", "a", "-f", "b", "-c", "-q", "-L", "x"]).expect("pre");
        assert!(pre.check && pre.quiet);

        let start = p(&["-Ws", "-f", "a", "-f", "b", "-p", "/run/x.pid", "-L", "x"]).expect("run");
        assert_eq!(start.master_worker, Some(MasterWorker::Systemd));
        assert_eq!(start.pid_file, Some(PathBuf::from("/run/x.pid")));
        assert!(!start.check && !start.daemon);
    }

    #[test]
    fn sf_and_st_take_every_following_pid() {
        let inv = p(&["-f", "a", "-sf", "12", "34", "-p", "pid"]).expect("sf");
        assert_eq!(inv.stop_old, Some((StopOld::Finish, vec![12, 34])));
        assert_eq!(inv.pid_file, Some(PathBuf::from("pid")));
        let inv = p(&["-st", "7", "-f", "a"]).expect("st");
        assert_eq!(inv.stop_old, Some((StopOld::Terminate, vec![7])));
        assert_eq!(inv.files, vec![PathBuf::from("a")]);
        // `-sf $(cat pidfile)` with an empty pid file.
        let inv = p(&["-f", "a", "-sf"]).expect("sf alone");
        assert_eq!(inv.stop_old, Some((StopOld::Finish, vec![])));
        assert!(p(&["-sf", "0"]).is_err());
    }

    #[test]
    fn the_other_flags() {
        let inv = p(&[
            "-D", "-db", "-W", "-N", "100", "-n", "2000", "-C", "/etc", "-x", "/s.sock", "-dM",
            "-V", "-m", "64", "--", "c1", "c2",
        ])
        .expect("all");
        assert!(inv.daemon && inv.foreground && inv.verbose);
        assert_eq!(inv.master_worker, Some(MasterWorker::Plain));
        assert_eq!(inv.default_maxconn, Some(100));
        assert_eq!(inv.global_maxconn, Some(2000));
        assert_eq!(inv.chdir, Some(PathBuf::from("/etc")));
        assert_eq!(inv.sockets_from, Some(PathBuf::from("/s.sock")));
        assert_eq!(inv.ignored, vec!["-dM".to_owned(), "-m 64".to_owned()]);
        assert_eq!(inv.files, vec![PathBuf::from("c1"), PathBuf::from("c2")]);
        assert_eq!(p(&["-v"]).expect("v").version, Some(Version::Short));
        assert_eq!(p(&["-vv"]).expect("vv").version, Some(Version::Long));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert_eq!(p(&["-f"]), Err(Usage("'-f' expects an argument".into())));
        assert!(p(&["-N", "many"]).is_err());
        assert!(p(&["-Z"]).is_err());
        assert!(p(&["haproxy.cfg"]).is_err());
    }

    #[test]
    fn argv0_haproxy() {
        assert!(invoked_as_haproxy("/usr/sbin/haproxy".as_ref()));
        assert!(invoked_as_haproxy("haproxy".as_ref()));
        assert!(!invoked_as_haproxy("/usr/bin/lbd".as_ref()));
        assert!(!invoked_as_haproxy("haproxy-systemd-wrapper".as_ref()));
    }

    #[test]
    fn the_version_line_parses_as_octavia_parses_it() {
        // Octavia: re.search(r'.*version (.+?)\.(.+?)(\.|-dev).*', out)
        let line = version_line();
        let after = line
            .rsplit_once("version ")
            .map(|(_, rest)| rest)
            .expect("'version ' in the line");
        let mut parts = after.splitn(3, '.');
        assert_eq!(parts.next(), Some("2"));
        assert_eq!(parts.next(), Some("6"));
        assert!(line.contains("lbd"));
    }
}
