//! What the run needs from the machine: Debian packages (installed when
//! root), the open-file limit, the lbd binary, and the facts recorded with
//! every result (kernel, CPU, versions, git commit, date).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::procs::{self, Pin};

/// Debian packages the bench runs.
pub const PACKAGES: &[&str] = &[
    "haproxy",
    "nginx",
    "libnginx-mod-stream",
    "wrk",
    "iperf3",
    // The `xdp` bench reads the XDP program's run statistics with it.
    "bpftool",
];

/// Where Debian's nginx keeps the stream module.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs the missing packages with apt-get when root (with `apt-get
/// update` first), otherwise prints the command and exits 1. Package
/// scripts must not start system-wide nginx/haproxy services: while
/// installing, a temporary `/usr/sbin/policy-rc.d` (if there is none)
/// tells them not to.
pub fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!("apt-get install -y {}", missing.join(" "));
    if !is_root() {
        eprintln!("bench: missing Debian packages: {}", missing.join(" "));
        eprintln!("install them as root, then run again:\n  sudo apt-get update && sudo {cmd}");
        std::process::exit(1);
    }
    eprintln!(
        "bench: installing {} (apt-get update, then {cmd})",
        missing.join(" ")
    );
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            policy,
            "#!/bin/sh\n# lbd bench: no service starts while installing\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = (|| -> Result<()> {
        let status = Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .context("cannot run apt-get update")?;
        if !status.success() {
            bail!("apt-get update failed ({status})");
        }
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get install")?;
        if !status.success() {
            bail!("{cmd} failed ({status})");
        }
        Ok(())
    })();
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result?;
    let still: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("still missing after apt-get: {}", still.join(" "));
    }
    if !Path::new(NGINX_STREAM_MODULE).exists() {
        bail!("{NGINX_STREAM_MODULE} is missing although libnginx-mod-stream is installed");
    }
    Ok(())
}

/// The open-file limit the run got.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
    /// Whether the wanted limit was reached (raising the hard limit needs
    /// CAP_SYS_RESOURCE, which containers often drop).
    pub raised_to_wanted: bool,
}

/// Raises RLIMIT_NOFILE (soft and hard) to `wanted` so every child inherits
/// it; where the hard limit cannot be raised, the soft one goes to the hard.
pub fn raise_fd_limit(wanted: u64) -> Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with pointers to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    let want = libc::rlimit {
        rlim_cur: wanted.max(lim.rlim_cur),
        rlim_max: wanted.max(lim.rlim_max),
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(FdLimit {
            soft: want.rlim_cur,
            hard: want.rlim_max,
            raised_to_wanted: true,
        });
    }
    let err = std::io::Error::last_os_error();
    let soft = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    eprintln!(
        "bench: cannot raise the open-file limit to {wanted} ({err}); using {} (the hard limit)",
        lim.rlim_max
    );
    Ok(FdLimit {
        soft: lim.rlim_max,
        hard: lim.rlim_max,
        raised_to_wanted: false,
    })
}

/// The workspace root (where `cargo build -p lbd` runs).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Builds lbd (`cargo build --release -p lbd` at the workspace root) and
/// returns the binary, or checks the one given with `--lbd`.
pub fn lbd_binary(given: Option<&Path>, logs: &Path) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--lbd {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "bench: building lbd (cargo build --release -p lbd in {})",
        root.display()
    );
    let argv: Vec<String> = vec![
        cargo,
        "build".into(),
        "--release".into(),
        "-p".into(),
        "lbd".into(),
        "--manifest-path".into(),
        root.join("Cargo.toml").display().to_string(),
    ];
    let done = procs::run(
        "cargo-build-lbd",
        &argv,
        Pin::Any,
        logs,
        Duration::from_secs(1800),
    )?;
    if !done.status.success() {
        bail!(
            "building lbd failed ({}): {}\n{}",
            done.status,
            done.command_line,
            procs::tail(&done.stderr, 4000)
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("lbd");
    if !bin.is_file() {
        bail!("built lbd but {} is missing", bin.display());
    }
    Ok(bin)
}

/// The machine and software a result belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub started_utc: String,
    pub commit: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub versions: Versions,
    pub fd_limit: FdLimit,
}

#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub lbd: String,
    pub haproxy: String,
    pub nginx: String,
    pub wrk: String,
    pub iperf3: String,
}

pub fn machine(lbd: &Path, fd_limit: FdLimit) -> Machine {
    let (date, started_utc) = utc_now();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        date,
        started_utc,
        commit: git_commit(),
        kernel: first_line(&command_output("uname", &["-r"])),
        cpu_model: cpu_model(&cpuinfo),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        versions: Versions {
            lbd: first_line(&command_output(&lbd.display().to_string(), &["--version"])),
            haproxy: first_line(&command_output("haproxy", &["-v"])),
            nginx: first_line(&command_output("nginx", &["-v"])),
            wrk: first_line(&command_output("wrk", &["-v"])),
            iperf3: first_line(&command_output("iperf3", &["-v"])),
        },
        fd_limit,
    }
}

/// stdout then stderr of a short command (version probes print to either,
/// and some exit non-zero); empty if it cannot run.
fn command_output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("unavailable ({e})"),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// `model name` from /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `git rev-parse --short HEAD`, plus `-dirty` when the tree has changes.
pub fn git_commit() -> String {
    let root = workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain"]) {
        Some(s) if !s.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

/// Today's date (`YYYY-MM-DD`) and the time (`YYYY-MM-DDTHH:MM:SSZ`), UTC.
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

pub fn format_utc(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let time = format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, time)
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_utc(0).1, "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400).0, "2000-02-29");
        assert_eq!(format_utc(1_700_000_000).1, "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(1_735_689_599).1, "2024-12-31T23:59:59Z");
    }

    #[test]
    fn cpu_model_line() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n";
        assert_eq!(cpu_model(info), "AMD EPYC 7B13");
        assert_eq!(cpu_model(""), "unknown");
    }

    #[test]
    fn first_non_empty_line() {
        assert_eq!(
            first_line("\n  nginx version: nginx/1.22.1\nx"),
            "nginx version: nginx/1.22.1"
        );
        assert_eq!(first_line(""), "unknown");
    }
}
