//! Fault injection for tests of how lbd survives panics (`tests/panics.rs`):
//! debug builds only, compiled away in release builds. At the bottom of the
//! crate so the data path can carry an injection point without depending
//! on the service machinery.

/// Fault injection for lbd's panic tests, in debug builds only (the
/// test profile): panics once per process at `point` when the environment
/// variable `LBD_TEST_PANIC` names it. Release builds compile it away.
pub fn injected_panic(point: &str) {
    #[cfg(debug_assertions)]
    {
        static FIRED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let wanted =
            std::env::var("LBD_TEST_PANIC").is_ok_and(|v| v.split(',').any(|p| p == point));
        if !wanted {
            return;
        }
        let mut fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
        if fired.iter().any(|p| p == point) {
            return;
        }
        fired.push(point.to_owned());
        drop(fired);
        panic!("injected panic at {point} (LBD_TEST_PANIC)");
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
