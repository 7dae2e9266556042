//! The CPU split of a proxy from a short `perf record`: where perf exists,
//! the bench samples each proxy's processes during its first keep-alive
//! repetition (`perf record -e cpu-clock -g -p PIDS -- sleep S`, a quarter
//! into the wrk run) and classifies the samples `perf report` lists by the
//! symbol they hit (self time, `--no-children`): userspace, io_uring in the
//! kernel, epoll/poll in the kernel, and the rest of the kernel.
//!
//! Nothing here may fail a run: every failure comes back as an error the
//! caller prints as one line and goes on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::procs::{self, Pin};

/// The sampling window is half the run, at most this long.
pub const MAX_WINDOW: Duration = Duration::from_secs(5);
/// How long perf record may run past its window before it is killed.
const RECORD_GRACE: Duration = Duration::from_secs(15);
/// `perf report`'s bound (it runs after the measurement).
const REPORT_TIMEOUT: Duration = Duration::from_secs(120);
/// Symbols in the saved text.
pub const TOP_SYMBOLS: usize = 60;

/// `perf`, found on PATH.
#[derive(Debug, Clone)]
pub struct Perf {
    pub path: PathBuf,
}

impl Perf {
    /// The first executable `perf` on PATH, or why there is none.
    pub fn find() -> Result<Perf, String> {
        Perf::find_in(&std::env::var_os("PATH").unwrap_or_default())
    }

    /// The first executable `perf` in the directories of `path` (as PATH).
    pub fn find_in(path: &std::ffi::OsStr) -> Result<Perf, String> {
        std::env::split_paths(path)
            .map(|dir| dir.join("perf"))
            .find(|p| is_executable(p))
            .map(|path| Perf { path })
            .ok_or_else(|| "no `perf` on PATH (Debian: apt-get install linux-perf)".to_string())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// When to sample in a run of length `run`: from a quarter into it, for
/// half of it but at most [`MAX_WINDOW`]. Returns (delay, length).
pub fn window(run: Duration) -> (Duration, Duration) {
    (run / 4, (run / 2).min(MAX_WINDOW))
}

/// `3`, `2.5`: seconds as `sleep` takes them and the output shows them.
fn secs(d: Duration) -> String {
    format!("{}", (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

pub fn record_argv(perf: &Path, pids: &[i32], data: &Path, length: Duration) -> Vec<String> {
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    vec![
        perf.display().to_string(),
        "record".into(),
        "-e".into(),
        "cpu-clock".into(),
        "-g".into(),
        // Symbols are resolved from the binaries in place: no copies in ~/.debug.
        "--no-buildid-cache".into(),
        "-p".into(),
        pids.join(","),
        "-o".into(),
        data.display().to_string(),
        "--".into(),
        "sleep".into(),
        secs(length),
    ]
}

pub fn report_argv(perf: &Path, data: &Path) -> Vec<String> {
    [
        &perf.display().to_string(),
        "report",
        "-i",
        &data.display().to_string(),
        "-n",
        "--no-children",
        "--sort",
        "dso,sym",
        "-g",
        "none",
        "--stdio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A finished `perf record`.
#[derive(Debug, Clone)]
pub struct Recording {
    pub pids: Vec<i32>,
    pub window: Duration,
    pub data: PathBuf,
    pub command: String,
}

/// Call right after the load started: sleeps until the window, records
/// every live process of the group `pgid` (the processes whose CPU the
/// bench accounts: master and workers) for the window and waits for perf
/// (bounded; it is killed after [`RECORD_GRACE`] more). perf runs where
/// `pin` says (the clients' CPU), in its own process group.
pub fn record_during(
    perf: &Perf,
    pgid: i32,
    run: Duration,
    data: &Path,
    pin: Pin,
    logs: &Path,
) -> Result<Recording> {
    let (delay, length) = window(run);
    std::thread::sleep(delay);
    let pids = procs::group_live_pids(pgid)?;
    if pids.is_empty() {
        bail!("the proxy (process group {pgid}) has no live process to sample");
    }
    let _ = std::fs::remove_file(data);
    let argv = record_argv(&perf.path, &pids, data, length);
    let done = procs::run("perf-record", &argv, pin, logs, length + RECORD_GRACE)?;
    if !done.status.success() {
        bail!(
            "perf record failed ({}): {}",
            done.status,
            last_lines(&done.stderr, 3)
        );
    }
    if !data.exists() {
        bail!(
            "perf record wrote no {}: {}",
            data.display(),
            last_lines(&done.stderr, 3)
        );
    }
    Ok(Recording {
        pids,
        window: length,
        data: data.to_path_buf(),
        command: done.command_line,
    })
}

/// A classified profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub split: CpuSplit,
    /// perf report's rows, most samples first.
    pub rows: Vec<Row>,
    /// The samples' call stacks, folded ([`fold`]); `None` when
    /// `perf script` failed (the split does not need them).
    pub folded: Option<String>,
}

/// Runs `perf report` on a recording and classifies its samples (after the
/// measurement; bounded).
pub fn analyse(perf: &Perf, rec: &Recording, logs: &Path) -> Result<Profile> {
    let argv = report_argv(&perf.path, &rec.data);
    let done = procs::run("perf-report", &argv, Pin::Any, logs, REPORT_TIMEOUT)?;
    if !done.status.success() {
        bail!(
            "perf report failed ({}): {}",
            done.status,
            last_lines(&done.stderr, 3)
        );
    }
    let mut rows = parse_report(&done.stdout)
        .with_context(|| format!("perf report's stderr: {}", last_lines(&done.stderr, 3)))?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.samples));
    let counts = Counts::of(&rows);
    if counts.total() == 0 {
        bail!("perf recorded no samples of the proxy");
    }
    let script = [
        perf.path.display().to_string(),
        "script".into(),
        "-i".into(),
        rec.data.display().to_string(),
    ];
    let folded = match procs::run("perf-script", &script, Pin::Any, logs, REPORT_TIMEOUT) {
        Ok(out) if out.status.success() => Some(fold(&out.stdout)),
        _ => None,
    };
    Ok(Profile {
        split: counts.split(rec, done.command_line),
        rows,
        folded,
    })
}

/// Folds `perf script` output into flame graph input: one line per
/// distinct stack, `comm;root;...;leaf count`, sorted (the format of
/// `stackcollapse-perf.pl`, which `flamegraph.pl`, inferno and speedscope
/// read).
pub fn fold(script: &str) -> String {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let mut comm: Option<&str> = None;
    let mut frames: Vec<&str> = Vec::new();
    let mut flush = |comm: &mut Option<&str>, frames: &mut Vec<&str>| {
        if let Some(c) = comm.take() {
            let mut stack = c.replace(';', ":");
            for f in frames.iter().rev() {
                stack.push(';');
                stack.push_str(&f.replace(';', ":"));
            }
            *counts.entry(stack).or_default() += 1;
        }
        frames.clear();
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            flush(&mut comm, &mut frames);
        } else if !line.starts_with(char::is_whitespace) {
            // `comm pid [cpu] time: period event:` starts a sample.
            comm = line.split_whitespace().next();
        } else {
            // `\taddr symbol+0xoff (object)`: the symbol.
            let rest = line.trim_start();
            let sym = rest.split_once(' ').map_or(rest, |(_, s)| s);
            let sym = sym.rsplit_once(" (").map_or(sym, |(s, _)| s);
            let sym = sym.split_once("+0x").map_or(sym, |(s, _)| s);
            frames.push(if sym.is_empty() { "[unknown]" } else { sym });
        }
    }
    flush(&mut comm, &mut frames);
    let mut out = String::new();
    for (stack, n) in counts {
        let _ = writeln!(out, "{stack} {n}");
    }
    out
}

/// One row of `perf report -n --sort dso,sym`:
/// `  9.50%   3921  [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub percent: f64,
    pub samples: u64,
    pub dso: String,
    /// perf's `[k]` (a kernel-mode sample) or the kernel's own object.
    pub kernel: bool,
    pub symbol: String,
    /// The line as perf printed it.
    pub line: String,
}

/// Where a sample's CPU went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Not in the kernel: the binary, its libraries, the vDSO.
    User,
    /// Kernel symbols `io_*`, `__io_*` or containing `io_uring`.
    IoUring,
    /// Kernel symbols containing `epoll`, `ep_*`, and poll(2)'s own.
    Epoll,
    /// Every other kernel symbol (TCP, softirq, scheduler, syscall entry...).
    KernelOther,
}

impl Class {
    pub fn of(row: &Row) -> Class {
        if !row.kernel {
            return Class::User;
        }
        let s = row.symbol.as_str();
        if s.starts_with("io_") || s.starts_with("__io_") || s.contains("io_uring") {
            Class::IoUring
        } else if s.contains("epoll")
            || s.starts_with("ep_")
            || [
                "do_sys_poll",
                "do_poll",
                "__x64_sys_poll",
                "__x64_sys_ppoll",
            ]
            .iter()
            .any(|p| s.starts_with(p))
        {
            Class::Epoll
        } else {
            Class::KernelOther
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::User => "user",
            Class::IoUring => "io_uring",
            Class::Epoll => "epoll",
            Class::KernelOther => "kernel-other",
        }
    }
}

/// Parses perf report's stdio output: every sample row; headers (`#`),
/// blank lines and anything else that is not a row are skipped. No row at
/// all is an error.
pub fn parse_report(text: &str) -> Result<Vec<Row>> {
    let rows: Vec<Row> = text.lines().filter_map(parse_row).collect();
    if rows.is_empty() {
        bail!(
            "no sample rows in perf report's output: {:?}",
            procs::tail(text, 500)
        );
    }
    Ok(rows)
}

fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// perf's privilege-level tags: `[.]` user, `[k]` kernel, `[g]`/`[u]`
/// guest, `[H]` hypervisor.
fn is_tag(t: &str) -> bool {
    matches!(t, "[.]" | "[k]" | "[g]" | "[u]" | "[H]")
}

fn parse_row(line: &str) -> Option<Row> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let (pct, rest) = token(line)?;
    let percent: f64 = pct.strip_suffix('%')?.parse().ok()?;
    let (n, rest) = token(rest)?;
    let samples: u64 = n.parse().ok()?;
    // The object (one token, or more if its name has spaces), then the tag.
    let (first, mut rest) = token(rest)?;
    let mut dso = first.to_string();
    let tag = loop {
        let (t, after) = token(rest)?;
        rest = after;
        if is_tag(t) {
            break t;
        }
        dso.push(' ');
        dso.push_str(t);
    };
    let symbol = rest.trim().to_string();
    Some(Row {
        percent,
        samples,
        kernel: tag == "[k]" || dso == "[kernel.kallsyms]",
        dso,
        symbol,
        line: line.trim_end().to_string(),
    })
}

/// Samples per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub user: u64,
    pub io_uring: u64,
    pub epoll: u64,
    pub kernel_other: u64,
}

impl Counts {
    pub fn of(rows: &[Row]) -> Counts {
        let mut c = Counts::default();
        for r in rows {
            let slot = match Class::of(r) {
                Class::User => &mut c.user,
                Class::IoUring => &mut c.io_uring,
                Class::Epoll => &mut c.epoll,
                Class::KernelOther => &mut c.kernel_other,
            };
            *slot += r.samples;
        }
        c
    }

    pub fn total(&self) -> u64 {
        self.user + self.io_uring + self.epoll + self.kernel_other
    }

    fn pct(&self, n: u64) -> f64 {
        match self.total() {
            0 => 0.0,
            t => n as f64 * 100.0 / t as f64,
        }
    }

    fn split(&self, rec: &Recording, report_command: String) -> CpuSplit {
        CpuSplit {
            scenario: "keepalive".into(),
            rep: 1,
            user_pct: self.pct(self.user),
            io_uring_pct: self.pct(self.io_uring),
            epoll_pct: self.pct(self.epoll),
            kernel_other_pct: self.pct(self.kernel_other),
            samples: self.total(),
            seconds: rec.window.as_secs_f64(),
            pids: rec.pids.clone(),
            record_command: rec.command.clone(),
            report_command,
            text_file: None,
        }
    }
}

/// What the JSON holds per proxy (`cpu_split`).
#[derive(Debug, Clone, Serialize)]
pub struct CpuSplit {
    pub scenario: String,
    pub rep: u32,
    pub user_pct: f64,
    pub io_uring_pct: f64,
    pub epoll_pct: f64,
    pub kernel_other_pct: f64,
    pub samples: u64,
    /// The sampling window.
    pub seconds: f64,
    pub pids: Vec<i32>,
    pub record_command: String,
    pub report_command: String,
    /// The saved top symbols (`<json stem>-<proxy>-perf.txt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_file: Option<String>,
}

impl CpuSplit {
    /// `user 14.1% io_uring 5.5% epoll 0.3% kernel-other 80.1% (perf, 3 s, 41,234 samples)`
    pub fn line(&self) -> String {
        format!(
            "user {:.1}% io_uring {:.1}% epoll {:.1}% kernel-other {:.1}% (perf, {} s, {} samples)",
            self.user_pct,
            self.io_uring_pct,
            self.epoll_pct,
            self.kernel_other_pct,
            secs(Duration::from_secs_f64(self.seconds)),
            thousands(self.samples)
        )
    }
}

/// `41,234`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The text saved next to the JSON: how it was taken, the split, samples
/// by object and the top symbols (perf report's lines, each after its class).
pub fn text(p: &Profile, proxy: &str, variant: &str) -> String {
    let s = &p.split;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {proxy} ({variant} variant), keep-alive repetition 1 of lbd's bench (bench/src/profile.rs)"
    );
    let _ = writeln!(
        out,
        "# {}\n#   started a quarter into the wrk run; pids: the proxy's process group",
        s.record_command
    );
    let _ = writeln!(out, "# {}", s.report_command);
    let _ = writeln!(
        out,
        "\n## split (self samples by leaf symbol)\n{}",
        s.line()
    );
    let total: u64 = p.rows.iter().map(|r| r.samples).sum();
    let mut objects: Vec<(String, u64)> = Vec::new();
    for r in &p.rows {
        match objects.iter_mut().find(|(d, _)| *d == r.dso) {
            Some((_, n)) => *n += r.samples,
            None => objects.push((r.dso.clone(), r.samples)),
        }
    }
    objects.sort_by_key(|o| std::cmp::Reverse(o.1));
    let _ = writeln!(out, "\n## by object (samples)");
    for (dso, n) in &objects {
        let pct = if total > 0 {
            *n as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let _ = writeln!(out, "{pct:>9.2}%  {n:>9}  {dso}");
    }
    let _ = writeln!(
        out,
        "\n## top {TOP_SYMBOLS} symbols (class, then perf report's line: overhead, samples, object, symbol)"
    );
    for r in p.rows.iter().take(TOP_SYMBOLS) {
        let _ = writeln!(out, "{:<12} {}", Class::of(r).name(), r.line);
    }
    out
}

/// The last `n` non-empty lines of `s`, joined with ` | `: one line for a
/// message.
pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "(no output)".into()
    } else {
        joined
    }
}

/// An error as one line (for "cpu split X: not measured: ..."): its
/// first line (a timeout's message is followed by the output's tail),
/// at most 400 characters.
pub fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no message)");
    if first.chars().count() > 400 {
        let cut: String = first.chars().take(400).collect();
        format!("{cut}...")
    } else {
        first.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = include_str!("testdata/perf-report-lbd.txt");

    fn row(line: &str) -> Row {
        parse_row(line).unwrap()
    }

    #[test]
    fn rows_of_every_shape() {
        let r = row("     9.50%          3921  [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore");
        assert_eq!(
            (r.percent, r.samples, r.dso.as_str(), r.kernel),
            (9.5, 3921, "[kernel.kallsyms]", true)
        );
        assert_eq!(r.symbol, "_raw_spin_unlock_irqrestore");
        let r = row("     2.18%           899  lbd                [.] <tokio::future::maybe_done::MaybeDone<Fut> as core::future::future::Future>::poll");
        assert!(!r.kernel);
        assert_eq!(
            r.symbol,
            "<tokio::future::maybe_done::MaybeDone<Fut> as core::future::future::Future>::poll"
        );
        let r = row("     0.93%           383  [vdso]             [.] __vdso_clock_gettime");
        assert_eq!((r.dso.as_str(), r.kernel), ("[vdso]", false));
        assert_eq!(Class::of(&r), Class::User);
        // An object name with a space; an unresolved address.
        let r = row("     0.01%             2  my lib.so  [.] 0x0000000000001234");
        assert_eq!(
            (r.dso.as_str(), r.symbol.as_str()),
            ("my lib.so", "0x0000000000001234")
        );
        let r = row("     0.01%             2  [unknown]  [k] 0xffffffff81000000");
        assert_eq!(Class::of(&r), Class::KernelOther);
        for not_a_row in [
            "# Samples: 41K of event 'cpu-clock'",
            "# Overhead       Samples  Shared Object  Symbol",
            "",
            "    9.50%  [kernel.kallsyms]  [k] no_sample_column",
            "[ perf record: Woken up 5 times to write data ]",
        ] {
            assert_eq!(parse_row(not_a_row), None, "{not_a_row:?}");
        }
    }

    #[test]
    fn classes() {
        let k = |sym: &str| Class::of(&row(&format!("1.00%  1  [kernel.kallsyms]  [k] {sym}")));
        for s in [
            "io_submit_sqes",
            "__io_submit_flush_completions",
            "__x64_sys_io_uring_enter",
            "io_handle_tw_list",
        ] {
            assert_eq!(k(s), Class::IoUring, "{s}");
        }
        for s in [
            "ep_poll_callback",
            "do_epoll_wait",
            "__x64_sys_epoll_wait",
            "ep_send_events",
            "do_sys_poll",
            "__x64_sys_poll",
        ] {
            assert_eq!(k(s), Class::Epoll, "{s}");
        }
        for s in [
            "tcp_sendmsg_locked",
            "sock_poll",
            "iov_iter_advance",
            "finish_task_switch.isra.0",
        ] {
            assert_eq!(k(s), Class::KernelOther, "{s}");
        }
        // A user symbol named like a kernel one stays user.
        assert_eq!(
            Class::of(&row("1.00%  1  lbd  [.] io_uring::submit")),
            Class::User
        );
    }

    #[test]
    fn captured_report() {
        let rows = parse_report(REPORT).unwrap();
        let c = Counts::of(&rows);
        // Counted independently (awk over the file): 46 rows, 6068 samples.
        assert_eq!(rows.len(), 46);
        assert_eq!(c.total(), 6068);
        assert_eq!(
            (c.user, c.io_uring, c.epoll, c.kernel_other),
            (570, 364, 11, 5123)
        );
        // libc's epoll_wait is userspace; so are tokio-uring's symbols.
        let find = |sym: &str| rows.iter().find(|r| r.symbol == sym).unwrap();
        assert_eq!(Class::of(find("epoll_wait")), Class::User);
        assert_eq!(Class::of(find("__x64_sys_epoll_wait")), Class::Epoll);
        assert_eq!(Class::of(find("__do_sys_io_uring_enter")), Class::IoUring);
        assert_eq!(Class::of(find("sock_poll")), Class::KernelOther);
        assert_eq!(
            Class::of(find("io_uring::submit::Submitter::submit_and_wait")),
            Class::User
        );
        assert_eq!(find("__vdso_clock_gettime").dso, "[vdso]");
    }

    #[test]
    fn no_rows_is_an_error() {
        assert!(parse_report("# nothing\n\n").is_err());
        assert!(parse_report("").is_err());
    }

    #[test]
    fn split_line_and_text() {
        let rows = parse_report(REPORT).unwrap();
        let rec = Recording {
            pids: vec![10, 11],
            window: Duration::from_secs(3),
            data: PathBuf::from("/tmp/x.data"),
            command: "perf record ...".into(),
        };
        let split = Counts::of(&rows).split(&rec, "perf report ...".into());
        let sum = split.user_pct + split.io_uring_pct + split.epoll_pct + split.kernel_other_pct;
        assert!((sum - 100.0).abs() < 1e-9, "{sum}");
        assert!(split.line().contains("(perf, 3 s, "), "{}", split.line());
        let p = Profile {
            split,
            rows,
            folded: None,
        };
        let t = text(&p, "lbd", "pinned");
        assert!(t.contains("## by object"));
        assert!(t.contains("## top 60 symbols"));
        assert!(t.contains("[kernel.kallsyms]"));
    }

    #[test]
    fn perf_on_path() {
        let dir = std::env::temp_dir().join(format!("bench-profile-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let path = std::env::join_paths([dir.join("empty"), dir.join("bin")]).unwrap();
        let why = Perf::find_in(&path).unwrap_err();
        assert!(why.contains("no `perf` on PATH"), "{why}");
        // Not executable: not perf.
        std::fs::write(dir.join("bin/perf"), "#!/bin/sh\n").unwrap();
        assert!(Perf::find_in(&path).is_err());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("bin/perf"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_eq!(Perf::find_in(&path).unwrap().path, dir.join("bin/perf"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(41_234), "41,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(
            window(Duration::from_secs(6)),
            (Duration::from_millis(1500), Duration::from_secs(3))
        );
        assert_eq!(
            window(Duration::from_secs(20)),
            (Duration::from_secs(5), MAX_WINDOW)
        );
        assert_eq!(secs(Duration::from_secs(3)), "3");
        assert_eq!(secs(Duration::from_millis(500)), "0.5");
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 2), "(no output)");
        let e = anyhow::anyhow!("perf-record did not finish within 16s\n--- tail\nmore");
        assert_eq!(one_line(&e), "perf-record did not finish within 16s");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&e), "outer: inner");
        let argv = record_argv(
            Path::new("/usr/bin/perf"),
            &[7, 8],
            Path::new("/w/p.data"),
            Duration::from_millis(2500),
        );
        assert_eq!(
            argv.join(" "),
            "/usr/bin/perf record -e cpu-clock -g --no-buildid-cache -p 7,8 -o /w/p.data -- sleep 2.5"
        );
    }

    #[test]
    fn folds_perf_script_stacks() {
        let script = "lbd 42 [001] 1.0: 250000 cpu-clock:\n\
            \tffffffff81000001 tcp_sendmsg+0x10 ([kernel.kallsyms])\n\
            \t55d0c0000001 lbd::proxy::copy::pump+0x99 (/usr/bin/lbd)\n\
            \n\
            lbd 42 [001] 1.1: 250000 cpu-clock:\n\
            \tffffffff81000001 tcp_sendmsg+0x20 ([kernel.kallsyms])\n\
            \t55d0c0000001 lbd::proxy::copy::pump+0x98 (/usr/bin/lbd)\n\
            \n\
            lbd 42 [001] 1.2: 250000 cpu-clock:\n\
            \t7f0000000001 [unknown] ([vdso])\n";
        assert_eq!(
            fold(script),
            "lbd;[unknown] 1\nlbd;lbd::proxy::copy::pump;tcp_sendmsg 2\n"
        );
    }
}
