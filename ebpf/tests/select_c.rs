//! The kernel program's copy of the selection arithmetic
//! (`bpf/lb_select.h`: client hash, Maglev home slot and stride) computes
//! exactly what `lbd_select` computes, on tens of thousands of addresses.
//!
//! The header is compiled for the host with clang together with a small
//! driver (`tests/select_c/driver.c`) that reads addresses on stdin and
//! prints its results; the test compares them line by line with the Rust
//! crate. Also checks that `xdp_lb.c` uses that header rather than a copy
//! of its own.
//!
//! Needs clang (the same one `build.rs` looks for: `LBD_EBPF_CLANG`, else
//! `clang`, `clang-22` .. `clang-14`) and the kernel's `linux/types.h`.
//! Skips with a message when they are missing, unless
//! `LBD_TEST_REQUIRE_TOOLS` is set: then it fails.

use lbd_select::{client_hash_v4, maglev};
use lbd_test_support::skip;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The first working clang, as `build.rs` picks it.
fn clang() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("LBD_EBPF_CLANG") {
        Ok(c) if !c.is_empty() => vec![c],
        _ => std::iter::once("clang".to_string())
            .chain((14..=22).rev().map(|v| format!("clang-{v}")))
            .collect(),
    };
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The addresses to compare on: edge cases, every single-bit address, a
/// whole /20, and pseudo-random ones over the full space.
fn addresses() -> Vec<Ipv4Addr> {
    let mut out: Vec<u32> = vec![0, u32::MAX, 0x7f00_0001, 0xc000_0201, 0x0ac7_0002];
    out.extend((0..32).map(|b| 1u32 << b));
    out.extend((0..32).map(|b| !(1u32 << b)));
    out.extend((0..4096).map(|i| 0x0a00_0000 | i));
    // splitmix64 from a fixed seed: deterministic, covers all octets.
    let mut state = 0x6c62_6400_0000_00ffu64;
    out.extend((0..20_000).map(|_| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }));
    out.into_iter().map(Ipv4Addr::from).collect()
}

fn bpf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf")
}

/// Compiles the driver with the header for the host; `None` (after
/// `skip`) when the toolchain is missing.
fn build_driver() -> Option<PathBuf> {
    let Some(clang) = clang() else {
        skip("no clang found (LBD_EBPF_CLANG, clang, clang-22 .. clang-14)");
        return None;
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lb_select_driver-{}", std::process::id()));
    let out = Command::new(&clang)
        .args(["-O2", "-Wall", "-Werror"])
        .arg("-I")
        .arg(bpf_dir())
        .arg(manifest.join("tests/select_c/driver.c"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("running {clang}: {e}"));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // A missing system header is a missing tool; anything else is a
        // real failure of the C copy.
        if err.contains("file not found") && !err.contains("lb_select.h") {
            skip(&format!("{clang} cannot build for the host: {err}"));
            return None;
        }
        panic!("compiling the driver with {clang} failed:\n{err}");
    }
    Some(exe)
}

#[test]
fn c_copy_matches_the_crate() {
    let Some(exe) = build_driver() else { return };
    let addrs = addresses();
    let input: String = addrs.iter().map(|a| format!("{a}\n")).collect();

    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    // Write from a thread: the driver's output pipe may fill before its
    // input is consumed.
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("driver output");
    writer
        .join()
        .expect("writer thread")
        .expect("writing addresses");
    let _ = std::fs::remove_file(&exe);
    assert!(
        out.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stdout = String::from_utf8(out.stdout).expect("driver prints ASCII");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), addrs.len(), "one line per address");
    let mut mismatches = Vec::new();
    for (addr, line) in addrs.iter().zip(&lines) {
        let h = client_hash_v4(*addr);
        let want = format!("{h:016x} {} {}", maglev::home_slot(h), maglev::stride(h));
        if *line != want {
            mismatches.push(format!("{addr}: C {line}, Rust {want}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} addresses differ, e.g.:\n{}",
        mismatches.len(),
        addrs.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
}

#[test]
fn the_program_uses_the_shared_header() {
    let src = std::fs::read_to_string(bpf_dir().join("xdp_lb.c")).expect("reading xdp_lb.c");
    assert!(
        src.contains("#include \"lb_select.h\""),
        "xdp_lb.c must include lb_select.h"
    );
    for own_copy in ["FNV_PRIME", "0xbf58476d1ce4e5b9", "% (LB_MAGLEV_SIZE - 1)"] {
        assert!(
            !src.contains(own_copy),
            "xdp_lb.c has its own copy of the selection arithmetic ({own_copy}); \
             keep it in lb_select.h, which tests/select_c.rs checks"
        );
    }
}
