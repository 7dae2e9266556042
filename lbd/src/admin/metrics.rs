//! `/metrics`: the Prometheus text format (0.0.4) of a [`Stats`] snapshot.
//!
//! Where HAProxy's built-in exporter (promex, `haproxy_frontend_*`,
//! `haproxy_backend_*`, `haproxy_server_*`) has a metric with the same
//! meaning, lbd uses its name, type and label names (`proxy` = listener or
//! pool name, `server` = [`super::stats::MemberStats::server`], `state` for one-hot status
//! series), so HAProxy dashboards and alerts keep working. Everything else is
//! `lbd_*`.
//!
//! Each metric is declared once, in `catalog`'s tables: one table per
//! kind of row (the process, the XDP fast path, listeners, pools, members).
//! This file turns those declarations into families; [`metrics`] lists them
//! all, in output order.
//!
//! Nothing here is global: every call builds the families from `stats`
//! alone and encodes them with `prometheus::TextEncoder`, which escapes label
//! values (`\`, `"` and newlines), so free-text member names stay valid.

use std::collections::HashSet;

use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::TextEncoder;

use super::stats::Stats;

mod catalog;

/// The content type to serve [`render`]'s output with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    /// `counter` or `gauge`, as in `# TYPE` lines.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// What Prometheus is told about a metric family.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names, in the order they appear on each series.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

impl MetricInfo {
    /// Same name, type, labels and meaning as HAProxy's built-in exporter:
    /// lbd names only those `haproxy_*`.
    pub fn haproxy(&self) -> bool {
        self.name.starts_with("haproxy_")
    }
}

/// One series: label values in the order of [`MetricInfo::labels`], value.
type Sample<'a> = (Vec<&'a str>, f64);

/// Where a family's series come from, in one row `R` of its table. The
/// row's own labels (`proxy`, `server`...) come first; these give the rest.
pub enum Source<R> {
    /// One series per row.
    Value(fn(&R) -> f64),
    /// One series per row that has the value.
    Optional(fn(&R) -> Option<f64>),
    /// One series per state (the last label), 1 for the row's current one.
    OneHot(&'static [&'static str], fn(&R) -> Option<&str>),
    /// One series per state (the last label), with the row's figure for it.
    PerState(&'static [&'static str], fn(&R, &str) -> f64),
    /// One series per row, always 1: the labels carry the information.
    Info(fn(&R) -> Vec<&str>),
    /// Any number of series per row.
    Series(fn(&R) -> Vec<Sample<'_>>),
}

impl<R> Source<R> {
    /// Appends `row`'s series to `out`, its own label values `key` first.
    fn samples<'a>(&self, key: &[&'a str], row: &'a R, out: &mut Vec<Sample<'a>>) {
        let labels = |rest: &[&'a str]| [key, rest].concat();
        match *self {
            Source::Value(value) => out.push((key.to_vec(), value(row))),
            Source::Optional(value) => out.extend(value(row).map(|v| (key.to_vec(), v))),
            Source::OneHot(states, current) => {
                let current = current(row);
                out.extend(states.iter().map(|&state| {
                    let on = current == Some(state);
                    (labels(&[state]), if on { 1.0 } else { 0.0 })
                }));
            }
            Source::PerState(states, value) => out.extend(
                states
                    .iter()
                    .map(|&state| (labels(&[state]), value(row, state))),
            ),
            Source::Info(rest) => out.push((labels(&rest(row)), 1.0)),
            Source::Series(series) => out.extend(
                series(row)
                    .into_iter()
                    .map(|(rest, value)| (labels(&rest), value)),
            ),
        }
    }
}

/// One metric family: its [`MetricInfo`] and [`Source`].
pub struct Metric<R: 'static> {
    pub info: MetricInfo,
    source: Source<R>,
}

/// Declares a counter (the name ends in `_total`).
const fn counter<R>(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    source: Source<R>,
) -> Metric<R> {
    declare(Kind::Counter, name, labels, help, source)
}

/// Declares a gauge.
const fn gauge<R>(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    source: Source<R>,
) -> Metric<R> {
    declare(Kind::Gauge, name, labels, help, source)
}

const fn declare<R>(
    kind: Kind,
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    source: Source<R>,
) -> Metric<R> {
    Metric {
        info: MetricInfo {
            name,
            kind,
            labels,
            help,
        },
        source,
    }
}

/// Every family [`render`] can produce, in output order. Families without
/// series (no listeners, no checked members...) are left out of the output.
pub fn metrics() -> impl Iterator<Item = &'static MetricInfo> {
    fn infos<R>(table: &'static [Metric<R>]) -> impl Iterator<Item = &'static MetricInfo> {
        table.iter().map(|m| &m.info)
    }
    infos(catalog::PROCESS)
        .chain(infos(catalog::XDP))
        .chain(infos(catalog::LISTENERS))
        .chain(infos(catalog::POOLS))
        .chain(infos(catalog::MEMBERS))
}

/// The Prometheus text format (0.0.4) of `stats`.
pub fn render(stats: &Stats) -> String {
    let families = families(stats);
    let encoder = TextEncoder::new();
    let mut out = String::new();
    for family in &families {
        // Families are never empty nor unnamed, the only encoder errors; if
        // one still fails, the rest of the page is worth serving.
        let mut text = String::new();
        match encoder.encode_utf8(std::slice::from_ref(family), &mut text) {
            Ok(()) => out.push_str(&text),
            Err(e) => tracing::warn!("metrics: {} left out: {e}", family.name()),
        }
    }
    out
}

/// Every table of [`catalog`] over its rows, in [`metrics`]' order.
fn families(s: &Stats) -> Vec<MetricFamily> {
    let mut f = Families::default();
    f.table(catalog::PROCESS, [(Vec::new(), s)]);
    f.table(catalog::XDP, s.xdp.iter().map(|x| (Vec::new(), x)));
    let listeners = s.listeners.iter();
    f.table(
        catalog::LISTENERS,
        listeners.map(|l| (vec![l.name.as_str()], l)),
    );
    f.table(
        catalog::POOLS,
        s.pools.iter().map(|p| (vec![p.name.as_str()], p)),
    );
    let members = s.pools.iter().flat_map(|p| {
        p.members
            .iter()
            .map(move |m| (vec![p.name.as_str(), m.server.as_str()], m))
    });
    f.table(catalog::MEMBERS, members);
    f.0
}

#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    /// Adds every family of `table`, each over all `rows` (a row's own
    /// label values, the row).
    fn table<'a, R: 'a>(
        &mut self,
        table: &[Metric<R>],
        rows: impl IntoIterator<Item = (Vec<&'a str>, &'a R)>,
    ) {
        let rows: Vec<_> = rows.into_iter().collect();
        for metric in table {
            let mut samples = Vec::new();
            for (key, row) in &rows {
                metric.source.samples(key, row, &mut samples);
            }
            self.add(&metric.info, samples);
        }
    }

    /// Adds `info`'s family with `samples`; leaves it out without any.
    /// A series whose label values repeat an earlier one is dropped: two
    /// series with the same labels would make the scrape invalid.
    fn add<'a>(&mut self, info: &MetricInfo, samples: impl IntoIterator<Item = Sample<'a>>) {
        let mut seen: HashSet<Vec<&'a str>> = HashSet::new();
        let mut metrics = Vec::new();
        for (values, value) in samples {
            debug_assert_eq!(values.len(), info.labels.len(), "{}", info.name);
            if values.len() != info.labels.len() || !seen.insert(values.clone()) {
                continue;
            }
            let labels = info
                .labels
                .iter()
                .zip(&values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value((*value).to_owned());
                    pair
                })
                .collect();
            let mut metric = proto::Metric::from_label(labels);
            // The encoder prints Rust's `inf`, which Prometheus rejects.
            let value = if value.is_finite() { value } else { f64::NAN };
            match info.kind {
                Kind::Counter => {
                    let mut counter = proto::Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                }
                Kind::Gauge => {
                    let mut gauge = proto::Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
            }
            metrics.push(metric);
        }
        if metrics.is_empty() {
            return;
        }
        let mut family = MetricFamily::default();
        family.set_name(info.name.to_owned());
        family.set_help(info.help.to_owned());
        family.set_field_type(match info.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
        });
        family.set_metric(metrics);
        self.0.push(family);
    }
}

#[cfg(test)]
mod tests;
