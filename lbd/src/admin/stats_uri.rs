//! HAProxy's `stats uri`: the stats page at that URI, and HAProxy's
//! exports after it. As HAProxy 2.6 reads it, a request whose path and
//! query start with the URI asks for an export when `;csv`, `;json` or
//! `;typed` follows anywhere after it (`/haproxy?stats;csv;norefresh`),
//! with `;up` and `;no-maint` hiding servers as `show stat up|no-maint`
//! does. The export is the `show stat` answer (`text/plain`) or its JSON
//! (`application/json`).

use super::show_stat::{StatFormat, StatQuery};

/// What a request at the stats URI asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum StatsRequest {
    /// The stats page.
    Page,
    /// A `show stat` export.
    Export(StatQuery),
}

/// What `path_and_query` asks of a stats page at `stats_uri`; `None` when
/// it is not at the stats URI (lbd's own routes then answer).
pub fn classify(path_and_query: &str, stats_uri: &str) -> Option<StatsRequest> {
    let rest = path_and_query.strip_prefix(stats_uri)?;
    let has = |option: &str| rest.contains(option);
    let format = if has(";json") {
        StatFormat::Json
    } else if has(";typed") {
        StatFormat::Typed
    } else if has(";csv") {
        StatFormat::Csv
    } else {
        // The page only at the URI itself (with `/` every path starts
        // with it).
        return (rest.is_empty() || rest.starts_with(';')).then_some(StatsRequest::Page);
    };
    Some(StatsRequest::Export(StatQuery {
        format,
        hide_down: has(";up"),
        hide_maint: has(";no-maint"),
        ..StatQuery::default()
    }))
}

/// The export's content type, as HAProxy sends it.
pub fn content_type(format: StatFormat) -> &'static str {
    match format {
        StatFormat::Json => "application/json",
        StatFormat::Csv | StatFormat::Typed => "text/plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(format: StatFormat) -> Option<StatsRequest> {
        Some(StatsRequest::Export(StatQuery {
            format,
            ..StatQuery::default()
        }))
    }

    #[test]
    fn exports_follow_the_uri() {
        let uri = "/haproxy?stats";
        assert_eq!(classify("/haproxy?stats", uri), Some(StatsRequest::Page));
        assert_eq!(classify("/haproxy?stats;csv", uri), export(StatFormat::Csv));
        assert_eq!(
            classify("/haproxy?stats;csv;norefresh", uri),
            export(StatFormat::Csv)
        );
        assert_eq!(
            classify("/haproxy?statsXX;csv", uri),
            export(StatFormat::Csv)
        );
        assert_eq!(
            classify("/haproxy?stats;json", uri),
            export(StatFormat::Json)
        );
        assert_eq!(classify("/haproxy;csv", uri), None);
        assert_eq!(classify("/metrics", uri), None);
        let Some(StatsRequest::Export(q)) = classify("/haproxy?stats;up;csv;no-maint", uri) else {
            panic!("no export");
        };
        assert!(q.hide_down && q.hide_maint);
    }

    #[test]
    fn the_root_uri_keeps_lbds_own_routes() {
        assert_eq!(classify("/", "/"), Some(StatsRequest::Page));
        assert_eq!(classify("/;csv", "/"), export(StatFormat::Csv));
        assert_eq!(classify("/metrics", "/"), None);
        assert_eq!(classify("/stats.csv", "/"), None);
        assert_eq!(classify("/api/config", "/"), None);
    }
}
