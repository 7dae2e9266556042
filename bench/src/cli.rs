//! Command-line pieces both bench programs use.

use std::path::PathBuf;
use std::time::Duration;

/// `--duration`: `10s`, `1m` or plain seconds; 1 s to 1 h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60)
    } else {
        (s, 1)
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected whole seconds like 10s or minutes like 1m"))?;
    let d = Duration::from_secs(n.saturating_mul(mult));
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err("the duration must be between 1s and 1h".into());
    }
    Ok(d)
}

/// What a list option selects: every item when none was given, else the
/// given ones, sorted, each once.
pub fn selection<T: Ord + Clone>(given: Vec<T>, all: &[T]) -> Vec<T> {
    let mut v = if given.is_empty() {
        all.to_vec()
    } else {
        given
    };
    v.sort();
    v.dedup();
    v
}

/// `--out`'s default: `bench/results` in the workspace.
pub fn default_results_dir() -> PathBuf {
    crate::setup::workspace_root().join("bench").join("results")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("61m").is_err());
    }

    #[test]
    fn selections() {
        assert_eq!(selection(vec![], &[1, 2, 3]), [1, 2, 3]);
        assert_eq!(selection(vec![3, 1, 3], &[1, 2, 3]), [1, 3]);
    }
}
