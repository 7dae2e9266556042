//! Tests that need what a machine may lack (root, BPF, network namespaces,
//! clang) skip there, loudly, or fail where they must run.

/// Skips (prints why) or, when `LBD_TEST_REQUIRE_TOOLS` is set (as
/// `scripts/test` does), fails: a required test must not pass by skipping.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_none(),
        "LBD_TEST_REQUIRE_TOOLS is set but the test cannot run: {why}"
    );
    eprintln!("skipping: {why}");
}
