//! Compiles the XDP programs in `bpf/` with clang into `OUT_DIR`.
//!
//! Without clang or the libbpf headers (`bpf/bpf_helpers.h`) the crate still
//! builds: a `cargo:warning` says the XDP fast path is disabled, empty objects
//! are written and `cfg(lbd_xdp_unavailable)` is set, so that
//! `FastPath::attach` returns `Error::NotBuilt`. With `LBD_EBPF_REQUIRE=1` a
//! missing toolchain is a build error instead. A C compile error with the
//! toolchain present is always a build error.
//!
//! The script runs again when clang or the headers change, or appear (see
//! `watch_toolchain`).
//!
//! Environment: `LBD_EBPF_CLANG` (clang binary, default: `clang`, then
//! `clang-22` .. `clang-14`), `LBD_EBPF_REQUIRE`, `LBD_EBPF_CFLAGS` (extra
//! flags, whitespace-separated).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (source, object) pairs, relative to the crate / OUT_DIR.
const PROGRAMS: &[(&str, &str)] = &[
    ("bpf/xdp_lb.c", "xdp_lb.o"),
    ("bpf/xdp_pass.c", "xdp_pass.o"),
    ("bpf/sk_relay.c", "sk_relay.o"),
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lbd_xdp_unavailable)");
    println!("cargo::rerun-if-changed=bpf");
    for (src, _) in PROGRAMS {
        println!("cargo::rerun-if-changed={src}");
    }
    println!("cargo::rerun-if-changed=bpf/xdp_lb.h");
    println!("cargo::rerun-if-changed=bpf/lb_select.h");
    for var in [
        "LBD_EBPF_CLANG",
        "LBD_EBPF_REQUIRE",
        "LBD_EBPF_CFLAGS",
        "PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let require = env::var("LBD_EBPF_REQUIRE").is_ok_and(|v| !v.is_empty() && v != "0");

    let found = toolchain();
    watch_toolchain(found.as_ref().ok());
    match found {
        Ok(tc) => {
            for (src, obj) in PROGRAMS {
                compile(&tc, &manifest.join(src), &out_dir.join(obj));
            }
        }
        Err(why) => {
            if require {
                panic!(
                    "LBD_EBPF_REQUIRE is set but the XDP programs cannot be built: {why}. \
                     Install them with `apt-get install clang libbpf-dev`."
                );
            }
            println!(
                "cargo::warning=lbd-ebpf: XDP fast path disabled: {why}. \
                 To enable it: apt-get install clang libbpf-dev (then rebuild; \
                 set LBD_EBPF_REQUIRE=1 to make this an error)."
            );
            for (_, obj) in PROGRAMS {
                std::fs::write(out_dir.join(obj), b"")
                    .unwrap_or_else(|e| panic!("writing {}: {e}", out_dir.join(obj).display()));
            }
            println!("cargo::rustc-cfg=lbd_xdp_unavailable");
        }
    }
}

struct Toolchain {
    clang: String,
    flags: Vec<String>,
}

/// The libbpf and kernel headers the programs include.
const HEADERS: &[&str] = &["bpf/bpf_helpers.h", "linux/bpf.h"];

/// Makes cargo run this script again when the toolchain changes: the
/// clang binary and the headers it uses when found; when something is
/// missing, whatever changes when it is installed (the package database
/// and the `PATH` directories), so that an lbd built before
/// `apt-get install clang libbpf-dev` gets the XDP programs at the next
/// build instead of staying without them.
fn watch_toolchain(found: Option<&Toolchain>) {
    let Some(tc) = found else {
        for path in ["/var/lib/dpkg/status"] {
            if Path::new(path).exists() {
                println!("cargo::rerun-if-changed={path}");
            }
        }
        for dir in env::split_paths(&env::var_os("PATH").unwrap_or_default()) {
            if dir.is_dir() {
                println!("cargo::rerun-if-changed={}", dir.display());
            }
        }
        return;
    };
    if let Some(path) = which(&tc.clang) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    let mut include_dirs = vec![PathBuf::from("/usr/include")];
    include_dirs.extend(
        tc.flags
            .iter()
            .filter_map(|f| f.strip_prefix("-I"))
            .map(PathBuf::from),
    );
    for header in HEADERS {
        if let Some(path) = include_dirs
            .iter()
            .map(|d| d.join(header))
            .find(|p| p.is_file())
        {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
}

/// Where `program` is found on `PATH` (or itself, when it is a path).
fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Finds clang and the libbpf headers; `Err` says what is missing.
fn toolchain() -> Result<Toolchain, String> {
    let candidates: Vec<String> = match env::var("LBD_EBPF_CLANG") {
        Ok(c) if !c.is_empty() => vec![c],
        _ => std::iter::once("clang".to_string())
            .chain((14..=22).rev().map(|v| format!("clang-{v}")))
            .collect(),
    };
    let clang = candidates
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .cloned()
        .ok_or_else(|| format!("no clang found (tried {})", candidates.join(", ")))?;

    // bpfel/bpfeb: the target's byte order (plain `bpf` means clang's host).
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    // -mcpu=v3: atomic fetch-and-add (the round-robin cursor), kernel >= 5.12.
    let mut flags: Vec<String> = ["-O2", "-g", "-target", target, "-mcpu=v3", "-Wall"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // <asm/types.h> lives in the multiarch include directory on Debian.
    if let Some(dir) = multiarch_include() {
        flags.push(format!("-I{}", dir.display()));
    }
    if let Ok(extra) = env::var("LBD_EBPF_CFLAGS") {
        flags.extend(extra.split_whitespace().map(str::to_string));
    }

    // Headers present? Preprocess a probe (fast, and the same include paths).
    let probe = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n";
    let out = Command::new(&clang)
        .args(&flags)
        .args(["-E", "-x", "c", "-", "-o", "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(probe.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| format!("running {clang}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("")
            .trim();
        return Err(format!(
            "{clang} cannot find the libbpf / kernel headers ({first})"
        ));
    }
    Ok(Toolchain { clang, flags })
}

/// `/usr/include/<multiarch>` for the target, if it exists.
fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "x86" => "i386-linux-gnu",
        _ => return None,
    };
    let dir = Path::new("/usr/include").join(triple);
    dir.is_dir().then_some(dir)
}

fn compile(tc: &Toolchain, src: &Path, obj: &Path) {
    let out = Command::new(&tc.clang)
        .args(&tc.flags)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tc.clang));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        panic!(
            "compiling {} with {} failed:\n{stderr}",
            src.display(),
            tc.clang
        );
    }
    for line in stderr.lines().filter(|l| l.contains("warning:")) {
        println!("cargo::warning=lbd-ebpf: {line}");
    }
}
