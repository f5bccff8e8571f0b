//! `duct.outputs.prometheus.Prometheus`: a page for Prometheus to scrape,
//! `metric_path` (`/metrics`) on `port` (9100), served by the shared HTTP
//! server (`duct_http::server`).
//!
//! A pull output does not deliver anything, so it fits the output actor
//! without a second queue: the actor queues and flushes as for every output,
//! and `send` writes each event of the batch into a table of series (the
//! latest value of each) and always succeeds. What a scrape reads is the
//! table; the actor's queue stays empty between flushes, so events reach the
//! page within one `interval`.
//!
//! A series is the metric name (`prefix` + service, each character
//! Prometheus does not allow as `_`) with the host and the attributes as
//! labels. The state is a label too, but not part of the series' identity:
//! a service that turns critical replaces its `state="ok"` sample, rather
//! than leaving two. A series is dropped once its event's TTL has passed
//! (`time + ttl`), so a source that stops reporting disappears from the
//! page, as its events would expire in Riemann. Samples carry no timestamp:
//! Prometheus stamps them with the scrape time and marks them stale when
//! they leave the page.
//!
//! Every family is a `gauge` (events carry values, and counters have become
//! rates by the time they reach an output), with a `HELP` line naming the
//! service it came from. A scraper whose `Accept` asks for OpenMetrics gets
//! that format (the same lines, `# EOF` at the end); anyone else gets the
//! text format 0.0.4.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::throttle::Throttle;
use duct_core::{Batch, BoxFuture, Event, Metric, Output, OutputArgs, OutputError, OutputSpec};
use duct_http::server::{self, header, Limits, Method, Request, Response, Routes, ServerHandle, StatusCode};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    port: u16,
    /// Path of the page, with or without its leading `/`.
    metric_path: String,
    /// Put before every metric name.
    prefix: String,
    /// Address to listen on (ductd only); Duct listened on every IPv4
    /// interface.
    bind: String,
    /// Series kept at most (ductd only); events of new series past it are
    /// left out of the page, and logged.
    max_series: usize,
    /// Scrapers connected at once (ductd only).
    max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 9100,
            metric_path: "metrics".into(),
            prefix: "duct_".into(),
            bind: "0.0.0.0".into(),
            max_series: 100_000,
            max_connections: 16,
        }
    }
}

/// The output's entry in the registry.
pub fn spec() -> OutputSpec {
    OutputSpec::new::<Options>(
        "duct.outputs.prometheus.Prometheus",
        "Serves the latest value of every metric for Prometheus to scrape, at `metric_path` on `port` (text format or OpenMetrics)",
        true,
        build,
    )
}

fn build(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: Options = args.options()?;
    if opts.port == 0 {
        return Err(args.invalid("port", "must be between 1 and 65535"));
    }
    let ip: IpAddr = opts
        .bind
        .parse()
        .map_err(|_| args.invalid("bind", format!("`{}` is not an IP address", opts.bind)))?;
    let path = format!("/{}", opts.metric_path.trim_start_matches('/'));
    if path == "/" || path.contains(['?', '#']) || path.contains(char::is_whitespace) {
        return Err(args.invalid(
            "metric_path",
            "must be a path such as `metrics`, without spaces, `?` or `#`",
        ));
    }
    if opts.max_series == 0 {
        return Err(args.invalid("max_series", "must be at least 1"));
    }
    if opts.max_connections == 0 {
        return Err(args.invalid("max_connections", "must be at least 1"));
    }
    Ok(Box::new(Prometheus {
        listen: SocketAddr::new(ip, opts.port),
        path,
        max_connections: opts.max_connections,
        table: Arc::new(Mutex::new(SeriesTable::new(&opts.prefix, opts.max_series))),
        server: None,
        label: args.settings.label.clone(),
    }))
}

/// The output: the table of series and the server that shows it.
pub struct Prometheus {
    listen: SocketAddr,
    path: String,
    max_connections: usize,
    /// What `send` writes and a scrape reads.
    table: Arc<Mutex<SeriesTable>>,
    /// The running page; dropping it closes the port.
    server: Option<ServerHandle>,
    /// The output's name, for logs.
    label: String,
}

/// A poisoned lock only means a panic elsewhere; the table is still whole.
fn lock(table: &Mutex<SeriesTable>) -> std::sync::MutexGuard<'_, SeriesTable> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl Output for Prometheus {
    fn start(&mut self) -> BoxFuture<'_, Result<(), OutputError>> {
        let table = self.table.clone();
        let routes = Routes::new().route(self.path.clone(), move |r: Request| {
            let table = table.clone();
            async move { scrape(&r, &table) }
        });
        let limits = Limits {
            max_connections: self.max_connections,
            ..Limits::default()
        };
        let result = match server::serve(self.listen, routes, limits) {
            Ok(handle) => {
                tracing::info!(output = %self.label, local = %handle.local_addr(), path = %self.path, "serving metrics for Prometheus");
                self.server = Some(handle);
                Ok(())
            }
            Err(e) => Err(OutputError::new(format!("cannot listen on {}: {e}", self.listen))),
        };
        Box::pin(std::future::ready(result))
    }

    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        let mut table = lock(&self.table);
        let refused = table.update(batch.iter(), duct_core::event::now());
        if refused > 0 {
            if let Some(held) = table.refusals_log.allow(Duration::from_secs(60)) {
                tracing::warn!(
                    output = %self.label,
                    events = refused,
                    earlier_reports_held_back = held,
                    max_series = table.max_series,
                    "events of new series left off the page: max_series reached"
                );
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        Box::pin(std::future::ready(()))
    }
}

/// Answers a scrape: the page in the format the scraper asks for.
fn scrape(request: &Request, table: &Mutex<SeriesTable>) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return server::plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served");
    }
    let format = Format::from_accept(request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let page = lock(table).render(format, duct_core::event::now());
    let mut response = Response::new(page.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    response
}

/// The exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format, 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` names it (Prometheus 2.x asks for it
    /// first), else the text format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|a| {
            a.split(',').any(|choice| {
                let mut parts = choice.split(';').map(str::trim);
                let kind = parts.next().unwrap_or_default();
                let refused = parts.any(|p| p.replace(' ', "") == "q=0");
                kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The latest sample of every series, by family.
#[derive(Debug)]
pub struct SeriesTable {
    prefix: String,
    families: BTreeMap<String, Family>,
    series: usize,
    max_series: usize,
    /// When expired series were last removed by an update.
    pruned: Instant,
    refusals_log: Throttle,
    /// Reused for each event's name, series key and state label, so that
    /// updating a known series allocates nothing.
    name: String,
    key: String,
    state: String,
}

#[derive(Debug)]
struct Family {
    /// The service the family's first series came from.
    help: String,
    /// By series key: the host and attribute labels as the page writes
    /// them, `host="…"` then `,name="value"` in name order.
    series: BTreeMap<String, Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    /// Where the host label ends in the key (the state goes there).
    host_len: usize,
    /// `,state="…"`, or empty for an event without a state.
    state: String,
    value: Metric,
    /// Seconds since the epoch after which the series is dropped.
    expires: f64,
}

impl SeriesTable {
    /// An empty table whose names start with `prefix`, holding at most
    /// `max_series` series.
    pub fn new(prefix: &str, max_series: usize) -> Self {
        SeriesTable {
            prefix: prefix.to_string(),
            families: BTreeMap::new(),
            series: 0,
            max_series,
            pruned: Instant::now(),
            refusals_log: Throttle::default(),
            name: String::new(),
            key: String::new(),
            state: String::new(),
        }
    }

    /// Number of series on the page (expired ones until the next prune).
    pub fn len(&self) -> usize {
        self.series
    }

    /// No series on the page.
    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// Takes the latest value of each event's series; returns how many
    /// events were left out because they would start a series past
    /// `max_series`. Events without a metric have no sample.
    pub fn update<'a>(&mut self, events: impl Iterator<Item = &'a Event>, now: f64) -> usize {
        if self.pruned.elapsed() >= Duration::from_secs(1) {
            self.prune(now);
        }
        let mut refused = 0;
        for event in events {
            let Some(value) = event.metric else {
                continue;
            };
            self.name.clear();
            push_identifier(&mut self.name, self.prefix.chars().chain(event.service.chars()));
            let host_len = write_series_key(&mut self.key, event);
            self.state.clear();
            if let Some(state) = &event.state {
                self.state.push_str(",state=\"");
                push_escaped(&mut self.state, state);
                self.state.push('"');
            }
            let expires = event.time + f64::from(event.ttl);
            let full = self.series >= self.max_series;
            let family = match self.families.get_mut(self.name.as_str()) {
                Some(family) => family,
                None if full => {
                    refused += 1;
                    continue;
                }
                None => self.families.entry(self.name.clone()).or_insert_with(|| Family {
                    help: event.service.clone(),
                    series: BTreeMap::new(),
                }),
            };
            if let Some(old) = family.series.get_mut(self.key.as_str()) {
                if old.state != self.state {
                    old.state.clone_from(&self.state);
                }
                old.value = value;
                old.expires = expires;
            } else if full {
                refused += 1;
            } else {
                let sample = Sample {
                    host_len,
                    state: self.state.clone(),
                    value,
                    expires,
                };
                family.series.insert(self.key.clone(), sample);
                self.series += 1;
            }
        }
        refused
    }

    /// Drops the series whose TTL has passed at `now`.
    pub fn prune(&mut self, now: f64) {
        self.pruned = Instant::now();
        let mut removed = 0;
        self.families.retain(|_, family| {
            let before = family.series.len();
            family.series.retain(|_, s| s.expires >= now);
            removed += before - family.series.len();
            !family.series.is_empty()
        });
        self.series -= removed;
    }

    /// The page, after dropping what has expired.
    pub fn render(&mut self, format: Format, now: f64) -> String {
        self.prune(now);
        let mut out = String::with_capacity(self.series * 64 + 64);
        for (name, family) in &self.families {
            let help = escape_help(&family.help, format);
            // Writing to a String cannot fail.
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
            for (key, sample) in &family.series {
                let _ = writeln!(
                    out,
                    "{name}{{{}{}{}}} {}",
                    &key[..sample.host_len],
                    sample.state,
                    &key[sample.host_len..],
                    Value(sample.value)
                );
            }
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// A sample value as both formats write it.
struct Value(Metric);

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Metric::Int(v) => write!(f, "{v}"),
            Metric::Float(v) if v.is_nan() => f.write_str("NaN"),
            Metric::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Metric::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Metric::Float(v) => write!(f, "{v}"),
        }
    }
}

/// `prefix` + `service` as a metric name: every character other than an
/// ASCII letter, digit or `_` becomes `_` (colons are left to recording
/// rules), and a leading digit gets a `_` before it.
pub fn metric_name(prefix: &str, service: &str) -> String {
    let mut out = String::new();
    push_identifier(&mut out, prefix.chars().chain(service.chars()));
    out
}

fn push_identifier(out: &mut String, chars: impl Iterator<Item = char>) {
    let start = out.len();
    for c in chars {
        if out.len() == start && c.is_ascii_digit() {
            out.push('_');
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' });
    }
    if out.len() == start {
        out.push('_');
    }
}

/// An attribute name as a label name; `None` for those the output sets
/// itself (`host`, `state`). Names starting `__` are Prometheus' own, so
/// they get `attr` before them.
pub(crate) fn label_name(name: &str) -> Option<String> {
    let mut label = String::new();
    push_identifier(&mut label, name.chars());
    if label.starts_with("__") {
        label.insert_str(0, "attr");
    }
    (label != "host" && label != "state").then_some(label)
}

/// Writes the event's series key into `key` (cleared first); returns the
/// length of its host part.
fn write_series_key(key: &mut String, event: &Event) -> usize {
    key.clear();
    key.push_str("host=\"");
    push_escaped(key, &event.host);
    key.push('"');
    let host_len = key.len();
    if event.attributes.is_empty() {
        return host_len;
    }
    let mut labels = BTreeMap::new();
    for (name, value) in &event.attributes {
        if let Some(label) = label_name(name) {
            labels.entry(label).or_insert(value.as_str());
        }
    }
    for (label, value) in labels {
        key.push(',');
        key.push_str(&label);
        key.push_str("=\"");
        push_escaped(key, value);
        key.push('"');
    }
    host_len
}

/// A label value with `\`, `"` and newlines escaped (both formats).
fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    push_escaped(&mut out, v);
    out
}

fn push_escaped(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text: `\` and newlines escaped, and `"` too in OpenMetrics.
fn escape_help(v: &str, format: Format) -> String {
    match format {
        Format::OpenMetrics => escape_label_value(v),
        Format::Text => v.replace('\\', "\\\\").replace('\n', "\\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(host: &str, service: &str, metric: Metric) -> Event {
        let mut e = Event::new(host, service);
        e.metric = Some(metric);
        e.time = 1000.0;
        e.ttl = 60.0;
        e
    }

    #[test]
    fn names_and_labels_follow_prometheus_rules() {
        assert_eq!(metric_name("duct_", "cpu.core0.user"), "duct_cpu_core0_user");
        assert_eq!(
            metric_name("duct_", "/dev/sda.read latency"),
            "duct__dev_sda_read_latency"
        );
        assert_eq!(metric_name("", "9lives"), "_9lives");
        assert_eq!(metric_name("", "é:x"), "__x");
        assert_eq!(label_name("data.centre"), Some("data_centre".into()));
        assert_eq!(label_name("__name__"), Some("attr__name__".into()));
        assert_eq!(label_name("host"), None);
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_page_has_the_latest_value_per_series_with_help_and_type() {
        let mut table = SeriesTable::new("duct_", 100);
        let mut load = event("web1", "load", Metric::Float(0.5));
        load.state = Some("ok".into());
        load.attributes = vec![
            ("role".into(), "front \"end\"".into()),
            ("host".into(), "ignored".into()),
        ];
        let other = event("web2", "load", Metric::Int(3));
        table.update([&load, &other].into_iter(), 1000.0);
        // The same series again: its state and value are replaced.
        let mut worse = load.clone();
        worse.state = Some("critical".into());
        worse.metric = Some(Metric::Float(9.25));
        let mut none = event("web1", "no.metric", Metric::Int(1));
        none.metric = None;
        table.update([&worse, &none].into_iter(), 1000.0);
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.render(Format::Text, 1001.0),
            "# HELP duct_load load\n# TYPE duct_load gauge\n\
             duct_load{host=\"web1\",state=\"critical\",role=\"front \\\"end\\\"\"} 9.25\n\
             duct_load{host=\"web2\"} 3\n"
        );
        let om = table.render(Format::OpenMetrics, 1001.0);
        assert!(om.ends_with("duct_load{host=\"web2\"} 3\n# EOF\n"), "{om}");
    }

    #[test]
    fn series_go_when_their_ttl_passes() {
        let mut table = SeriesTable::new("", 100);
        let short = Event {
            ttl: 5.0,
            ..event("h", "short", Metric::Int(1))
        };
        let long = event("h", "long", Metric::Int(2));
        table.update([&short, &long].into_iter(), 1000.0);
        assert!(table.render(Format::Text, 1004.0).contains("short{"));
        let page = table.render(Format::Text, 1006.0);
        assert!(!page.contains("short"), "{page}");
        assert!(page.contains("long{host=\"h\"} 2"), "{page}");
        assert_eq!(table.len(), 1);
        assert_eq!(table.render(Format::Text, 1100.0), "");
        assert!(table.is_empty());
    }

    #[test]
    fn new_series_past_max_series_are_refused_but_known_ones_update() {
        let mut table = SeriesTable::new("", 2);
        let a = event("h", "a", Metric::Int(1));
        let b = event("h", "b", Metric::Int(1));
        let c = event("h", "c", Metric::Int(1));
        let a_host2 = event("h2", "a", Metric::Int(1));
        assert_eq!(table.update([&a, &b, &c, &a_host2].into_iter(), 1000.0), 2);
        let a2 = event("h", "a", Metric::Int(7));
        assert_eq!(table.update([&a2].into_iter(), 1000.0), 0);
        let page = table.render(Format::Text, 1000.0);
        assert!(
            page.contains("a{host=\"h\"} 7") && page.contains("b{host=\"h\"} 1"),
            "{page}"
        );
        assert!(!page.contains("c{"), "{page}");
    }

    #[test]
    fn special_values_are_written_as_prometheus_reads_them() {
        let mut table = SeriesTable::new("", 10);
        let events = [
            event("h", "nan", Metric::Float(f64::NAN)),
            event("h", "inf", Metric::Float(f64::INFINITY)),
            event("h", "ninf", Metric::Float(f64::NEG_INFINITY)),
            event("h", "tiny", Metric::Float(1.5e-7)),
        ];
        table.update(events.iter(), 1000.0);
        let page = table.render(Format::Text, 1000.0);
        for line in ["nan{host=\"h\"} NaN", "inf{host=\"h\"} +Inf", "ninf{host=\"h\"} -Inf"] {
            assert!(page.contains(line), "{line} in {page}");
        }
        let tiny: f64 = page
            .lines()
            .find_map(|l| l.strip_prefix("tiny{host=\"h\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(tiny, 1.5e-7);
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Text
        );
    }
}
