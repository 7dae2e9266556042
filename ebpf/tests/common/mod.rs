//! What every test of this crate shares: skipping when the machine cannot
//! run it (no root, BPF, network namespaces or clang), or failing instead
//! when `LBD_TEST_REQUIRE_TOOLS` is set (as `scripts/test` does).

/// Skips (prints why) or, under `LBD_TEST_REQUIRE_TOOLS`, fails.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_none(),
        "LBD_TEST_REQUIRE_TOOLS is set but the test cannot run: {why}"
    );
    eprintln!("skipping: {why}");
}
