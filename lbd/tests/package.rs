//! The Debian package (`scripts/package-deb`), built from this test run's
//! binaries: its file list, and `dpkg -i` into a scratch root (its own
//! dpkg database; the host's libc satisfies the dependencies, so they are
//! forced): every file in place, `/etc/lbd/lbd.toml` registered as a
//! conffile, and the installed lbd checks the installed config.
//!
//! Needs `dpkg-deb`, `dpkg` and lb-agent built beside lbd (as `cargo test
//! --workspace` does); skips with the reason otherwise, unless
//! `LBD_TEST_REQUIRE_TOOLS` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tools::{available, run_bounded};
use common::*;
use lbd_test_support::tools::succeeded as ok;

const LIMIT: Duration = Duration::from_secs(120);

const FILES: [&str; 8] = [
    "./usr/bin/lbd",
    "./usr/bin/lb-agent",
    "./lib/systemd/system/lbd.service",
    "./lib/systemd/system/lb-agent-octavia.service",
    "./lib/systemd/system/lb-agent-apiservers.service",
    "./etc/lbd/lbd.toml",
    "./usr/share/doc/lbd/README.md",
    "./usr/share/doc/lbd/examples/nodeport.toml",
];

fn lb_agent() -> Option<PathBuf> {
    let lbd = Path::new(env!("CARGO_BIN_EXE_lbd"));
    let agent = lbd.with_file_name("lb-agent");
    if agent.exists() {
        return Some(agent);
    }
    assert!(
        std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_none(),
        "{} missing: build the workspace (cargo test --workspace)",
        agent.display()
    );
    lbd_test_support::skip(&format!("{} is not built", agent.display()));
    None
}

#[test]
fn the_package_installs_and_its_lbd_runs() {
    if !available("/usr/bin/dpkg-deb", "dpkg") {
        return;
    }
    let Some(agent) = lb_agent() else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo");
    let out_dir = scratch_dir();
    let mut build = Command::new(repo.join("scripts/package-deb"));
    build
        .arg("--lbd")
        .arg(env!("CARGO_BIN_EXE_lbd"))
        .arg("--lb-agent")
        .arg(&agent)
        .arg("--out")
        .arg(&out_dir)
        .arg("--fast");
    let deb = PathBuf::from(ok(run_bounded(build, LIMIT), "package-deb").trim());
    assert!(deb.exists(), "{}", deb.display());

    let mut contents = Command::new("dpkg-deb");
    contents.arg("--contents").arg(&deb);
    let listing = ok(run_bounded(contents, LIMIT), "dpkg-deb --contents");
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for file in FILES {
        assert!(
            paths.contains(&file),
            "{file} not in the package:\n{listing}"
        );
    }

    let root = scratch_dir();
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).expect("dpkg info");
    std::fs::create_dir_all(admin.join("updates")).expect("dpkg updates");
    std::fs::write(admin.join("status"), "").expect("dpkg status");
    std::fs::write(admin.join("available"), "").expect("dpkg available");
    let mut install = Command::new("dpkg");
    install
        .arg(format!("--root={}", root.display()))
        .args([
            "--log=/dev/null",
            "--force-depends",
            "--force-script-chrootless",
            "--force-not-root",
            "-i",
        ])
        .arg(&deb);
    ok(run_bounded(install, LIMIT), "dpkg -i");
    for file in FILES {
        assert!(root.join(file).exists(), "{file} not installed");
    }
    let mut query = Command::new("dpkg-query");
    query.arg(format!("--admindir={}", admin.display())).args([
        "-W",
        "-f=${Status} ${Conffiles}",
        "lbd",
    ]);
    let status = ok(run_bounded(query, LIMIT), "dpkg-query");
    assert!(
        status.starts_with("install ok installed") && status.contains("/etc/lbd/lbd.toml"),
        "{status}"
    );
    let mut check = Command::new(root.join("usr/bin/lbd"));
    check.arg("check-config").arg(root.join("etc/lbd/lbd.toml"));
    let said = ok(run_bounded(check, LIMIT), "the installed lbd check-config");
    assert!(said.contains(": ok ("), "{said}");
}
