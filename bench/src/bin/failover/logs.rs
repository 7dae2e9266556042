//! Reading lbd's log: RFC 3339 timestamps (a small parser, UTC only), the
//! failed data-path connects to one member and its `is DOWN` line.
//!
//! Lines look like
//! `2026-11-23T17:19:03.458012Z  WARN lbd::proxy: connect failed: ... member=api/127.0.0.1:4000`
//! (tracing's fmt layer: timestamp, level, target, message, then fields).

/// Microseconds since the Unix epoch of a line's leading timestamp
/// (`YYYY-MM-DDTHH:MM:SS[.frac]Z`), or None if the line has none.
pub fn timestamp_us(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Microseconds: the first six digits of the fraction, right-padded.
    let us = format!("{:0<6}", &frac[..frac.len().min(6)])
        .parse::<i64>()
        .ok()?;
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs * 1_000_000 + us)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for microseconds since the epoch.
pub fn format_utc(us: i64) -> String {
    let (secs, ms) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000) / 1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Whether `line` carries the field `member=<label>` (exactly that label,
/// not one that merely starts with it).
fn has_member_field(line: &str, label: &str) -> bool {
    let field = format!("member={label}");
    line.match_indices(&field).any(|(i, _)| {
        line[i + field.len()..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
    })
}

/// What the log says about one member around its death.
#[derive(Debug, Default)]
pub struct Findings {
    /// Failed data-path connects to it logged at or after the kill: the
    /// log time and whether the connect timed out (rather than failing at
    /// once), so it began `member_connect` earlier.
    pub failed_connects: Vec<(i64, bool)>,
    /// Failed data-path connects to it before the kill (expected: 0).
    pub failed_before_kill: usize,
    /// Failed data-path connects to any other member (expected: 0).
    pub failed_elsewhere: usize,
    /// The first `is DOWN` line for it at or after the kill: time, reason.
    pub down: Option<(i64, String)>,
    /// Its lines from the kill on (the first few), for the report.
    pub excerpt: Vec<String>,
}

/// Lines kept in [`Findings::excerpt`].
const EXCERPT_LINES: usize = 8;

/// Scans `log` for member `label` (`api/127.0.0.1:PORT`) killed at `kill_us`.
pub fn analyse(log: &str, label: &str, kill_us: i64) -> Findings {
    let down_marker = format!("member {label} is DOWN: ");
    let mut f = Findings::default();
    for line in log.lines() {
        let Some(ts) = timestamp_us(line) else {
            continue;
        };
        let mine = has_member_field(line, label);
        if line.contains("connect failed") {
            match (mine, ts >= kill_us) {
                (true, true) => f
                    .failed_connects
                    .push((ts, line.contains("connect failed: timeout"))),
                (true, false) => f.failed_before_kill += 1,
                (false, _) => f.failed_elsewhere += 1,
            }
        }
        if ts < kill_us || !mine {
            continue;
        }
        if f.down.is_none() {
            if let Some((_, rest)) = line.split_once(&down_marker) {
                let reason = rest.rsplit_once(" member=").map_or(rest, |(r, _)| r);
                f.down = Some((ts, reason.trim().to_string()));
            }
        }
        if f.excerpt.len() < EXCERPT_LINES {
            f.excerpt.push(line.to_string());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = timestamp_us("2026-11-23T17:19:03.458012Z  WARN lbd::proxy: x").unwrap();
        // date -u -d 2026-11-23T17:19:03Z +%s
        assert_eq!(t, 1_795_454_343_458_012);
        assert_eq!(format_utc(t), "2026-11-23T17:19:03.458Z");
        assert_eq!(timestamp_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(
            timestamp_us("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000)
        );
        assert_eq!(timestamp_us("  at lbd::main"), None);
        assert_eq!(timestamp_us("2026-13-01T00:00:00Z x"), None);
    }

    #[test]
    fn findings() {
        let log = "\
2026-11-23T17:19:02.000000Z  INFO lbd::health::checker: member api/127.0.0.1:400 checked: up (connected in 0s) member=api/127.0.0.1:400
2026-11-23T17:19:03.100000Z  WARN lbd::proxy: connect failed: refused; avoiding it member=api/127.0.0.1:4000
2026-11-23T17:19:03.200000Z  WARN lbd::proxy: connect failed: refused; avoiding it member=api/127.0.0.1:400
2026-11-23T17:19:03.300000Z DEBUG lbd::proxy: connect failed: refused member=api/127.0.0.1:400 failures=2
2026-11-23T17:19:03.300100Z  WARN lbd::health::checker: member api/127.0.0.1:400 is DOWN: connect refused (check took 0s) member=api/127.0.0.1:400
";
        let kill = timestamp_us("2026-11-23T17:19:03.000000Z").unwrap();
        let f = analyse(log, "api/127.0.0.1:400", kill);
        assert_eq!(
            f.failed_connects,
            [(kill + 200_000, false), (kill + 300_000, false)]
        );
        assert_eq!((f.failed_before_kill, f.failed_elsewhere), (0, 1));
        let (at, reason) = f.down.unwrap();
        assert_eq!(at - kill, 300_100);
        assert_eq!(reason, "connect refused (check took 0s)");
        assert_eq!(f.excerpt.len(), 3);
    }
}
