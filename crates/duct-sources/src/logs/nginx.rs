//! `duct.sources.nginx.NginxLogMetrics` and `duct.sources.nginx.NginxLog`:
//! nginx access logs as metrics per time window, or as one log event per
//! line.
//!
//! Each tick runs on a blocking thread (`spawn_blocking`): the tailer reads
//! the files, the compiled `log_format` splits the lines, and the events
//! are handed to the pipeline from there (waiting while a full output asks
//! sources to wait); then the positions of what was handed on are committed
//! and saved. The arbiter thread only waits. A tick that finds the previous
//! one still running (a slow disk, a blocked output) does nothing.
//!
//! Lines that do not fit `log_format` are counted, and one in a while is
//! logged as a sample; they never stop the source. NginxLog still ships
//! them (as a log event with only `message`, `@timestamp` and `logname`,
//! and `parse_error`), since dropping log lines is worse than shipping
//! them unparsed; NginxLogMetrics skips them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duct_core::civil::iso8601_utc;
use duct_core::config::Diagnostic;
use duct_core::event::now;
use duct_core::throttle::Throttle;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use serde::Deserialize;

use super::aggregate::{Aggregator, Request, Window, GROUPS};
use super::checkpoint::{self, state_dir, Checkpoint};
use super::format::{Fields, LogFormat};
use super::glob::FilePattern;
use super::tail::{FileKey, TailOptions, Tailer, ROTATED_IDLE};

/// How often a repeating problem (unparsed lines, unreadable files, a
/// state file that cannot be written) is logged.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// NginxLog's lines per file per tick with `max_lines: 0`: every line is
/// an event held in memory until it is handed on, so even "no limit" has
/// one.
const MOST_EVENTS_PER_TICK: usize = 100_000;

/// Longest line sample in a log message.
const SAMPLE_BYTES: usize = 300;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct MetricsOptions {
    /// The access log: a path or a pattern (`/var/log/nginx/*.log`).
    file: Option<String>,
    /// `combined`, `main`, `common`, `vhcommon`, or a format string.
    log_format: String,
    /// Read files that exist at first start from the beginning.
    history: bool,
    /// Lines per file per tick (0: no limit).
    max_lines: usize,
    /// Window length in seconds.
    resolution: f64,
    /// Where positions are kept across restarts.
    state_dir: Option<PathBuf>,
    /// Longer lines are skipped.
    max_line_bytes: usize,
    /// Keys per grouping per window; the rest are summed as `_other`.
    max_keys: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            file: None,
            log_format: "combined".into(),
            history: false,
            max_lines: 2000,
            resolution: 10.0,
            state_dir: None,
            max_line_bytes: 64 << 10,
            max_keys: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct LogOptions {
    /// The access log: a path or a pattern (`/var/log/nginx/*.log`).
    file: Option<String>,
    /// `combined`, `main`, `common`, `vhcommon`, or a format string.
    log_format: String,
    /// Read files that exist at first start from the beginning.
    history: bool,
    /// Lines per file per tick (0: no limit).
    max_lines: usize,
    /// Where positions are kept across restarts.
    state_dir: Option<PathBuf>,
    /// Longer lines are skipped.
    max_line_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        let m = MetricsOptions::default();
        LogOptions {
            file: m.file,
            log_format: m.log_format,
            history: m.history,
            max_lines: m.max_lines,
            state_dir: m.state_dir,
            max_line_bytes: m.max_line_bytes,
        }
    }
}

pub fn metrics_spec() -> SourceSpec {
    SourceSpec::new::<MetricsOptions>(
        "duct.sources.nginx.NginxLogMetrics",
        "Tails nginx access logs (file, log_format, history, max_lines, resolution) and sums requests and bytes per window",
        &[
            "(service).total_requests, .total_rbytes: per `resolution` window, stamped with its start",
            "(service).status.(code).requests, .rbytes",
            "(service).client.(address).requests, .rbytes",
            "(service).user-agent.(agent, . as ,).requests, .rbytes",
            "(service).request.(path, . as ,).requests, .rbytes",
            "(service).request_time.p50, .p99: seconds, when the format has $request_time",
        ],
        build_metrics,
    )
}

pub fn log_spec() -> SourceSpec {
    SourceSpec::new::<LogOptions>(
        "duct.sources.nginx.NginxLog",
        "Tails nginx access logs (file, log_format, max_lines) into one log event per line",
        &["nginx: a log event per line, its fields as attributes with @timestamp, message and logname"],
        build_log,
    )
}

/// What both sources are built from.
struct Common<'a> {
    file: &'a Option<String>,
    log_format: &'a str,
    history: bool,
    max_lines: usize,
    state_dir: &'a Option<PathBuf>,
    max_line_bytes: usize,
}

fn setup(args: &SourceArgs<'_>, kind: &'static str, c: Common<'_>) -> Result<Setup, Diagnostic> {
    let Some(file) = c.file.as_deref().filter(|f| !f.trim().is_empty()) else {
        return Err(args.invalid("file", "missing required option `file` (the access log, or a pattern)"));
    };
    let format = LogFormat::compile(c.log_format).map_err(|e| args.invalid("log_format", e))?;
    if c.max_line_bytes == 0 {
        return Err(args.invalid("max_line_bytes", "must be at least 1"));
    }
    Ok(Setup {
        kind,
        pattern: FilePattern::new(file),
        format,
        tail: TailOptions {
            history: c.history,
            max_lines: c.max_lines,
            max_line_bytes: c.max_line_bytes,
            rotated_idle: ROTATED_IDLE,
        },
        state_dir: state_dir(c.state_dir.as_deref()),
    })
}

fn build_metrics(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: MetricsOptions = args.options()?;
    if !(o.resolution.is_finite() && o.resolution > 0.0) {
        return Err(args.invalid("resolution", "must be a number of seconds above 0"));
    }
    if o.max_keys == 0 {
        return Err(args.invalid("max_keys", "must be at least 1"));
    }
    let common = Common {
        file: &o.file,
        log_format: &o.log_format,
        history: o.history,
        max_lines: o.max_lines,
        state_dir: &o.state_dir,
        max_line_bytes: o.max_line_bytes,
    };
    let setup = setup(args, "nginx-log-metrics", common)?;
    Ok(Box::new(NginxLogSource::new(
        setup,
        Mode::Metrics(Aggregator::new(o.resolution, o.max_keys)),
    )))
}

fn build_log(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: LogOptions = args.options()?;
    let common = Common {
        file: &o.file,
        log_format: &o.log_format,
        history: o.history,
        max_lines: if o.max_lines == 0 {
            MOST_EVENTS_PER_TICK
        } else {
            o.max_lines
        },
        state_dir: &o.state_dir,
        max_line_bytes: o.max_line_bytes,
    };
    let setup = setup(args, "nginx-log", common)?;
    Ok(Box::new(NginxLogSource::new(setup, Mode::Events)))
}

/// Everything a source needs to start reading.
struct Setup {
    /// Names the state file.
    kind: &'static str,
    pattern: FilePattern,
    format: LogFormat,
    tail: TailOptions,
    state_dir: PathBuf,
}

enum Mode {
    Metrics(Aggregator),
    Events,
}

/// Either source: the reading state, behind a lock so that a tick can
/// take it to a blocking thread.
pub struct NginxLogSource {
    engine: Arc<Mutex<Engine>>,
}

impl NginxLogSource {
    fn new(setup: Setup, mode: Mode) -> Self {
        NginxLogSource {
            engine: Arc::new(Mutex::new(Engine {
                setup,
                mode,
                tailer: None,
                spans: Vec::new(),
                problems: Problems::default(),
                waiting_logged: false,
                guard: None,
            })),
        }
    }
}

impl Source for NginxLogSource {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        let engine = self.engine.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            // The blocking thread hands the events on through this runtime,
            // waiting while an output it feeds is full.
            let runtime = tokio::runtime::Handle::current();
            let job = tokio::task::spawn_blocking(move || {
                let mut engine = match engine.try_lock() {
                    Ok(e) => e,
                    // A tick that panicked left the state as it was between
                    // two lines; carry on from there.
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        tracing::debug!(service = %ctx.service(), "the previous read is still running; tick skipped");
                        return;
                    }
                };
                engine.tick(&ctx, &runtime);
            });
            job.await
                .map_err(|e| -> SourceError { format!("reading the log failed: {e}").into() })?;
            Ok(Vec::new())
        })
    }
}

/// Repeating problems, each logged at most once per [`REPORT_EVERY`].
#[derive(Default)]
struct Problems {
    unparsed: Throttle,
    /// Lines that did not fit since the last report.
    unparsed_count: u64,
    overlong: Throttle,
    overlong_count: u64,
    io: Throttle,
    save: Throttle,
    behind: Throttle,
}

struct Engine {
    setup: Setup,
    mode: Mode,
    /// Created by the first tick (building a source has no side effects).
    tailer: Option<Tailer>,
    /// Scratch for the parser.
    spans: Vec<(u32, u32)>,
    problems: Problems,
    /// "Waiting for the file" was logged (once per absence).
    waiting_logged: bool,
    /// The state file's lock, held for a whole tick (see
    /// [`checkpoint::exclusive`]).
    guard: Option<Arc<Mutex<()>>>,
}

impl Engine {
    fn tailer(&mut self, ctx: &SourceContext) -> &mut Tailer {
        let setup = &self.setup;
        self.tailer.get_or_insert_with(|| {
            let ckpt = Checkpoint::new(&setup.state_dir, setup.kind, ctx.service(), setup.pattern.as_str());
            let (tailer, problem) = Tailer::new(setup.pattern.clone(), setup.tail.clone(), Some(ckpt));
            if let Some(problem) = problem {
                tracing::warn!(service = %ctx.service(), "{problem}");
            }
            tailer
        })
    }

    fn tick(&mut self, ctx: &SourceContext, runtime: &tokio::runtime::Handle) {
        let setup = &self.setup;
        let guard = self
            .guard
            .get_or_insert_with(|| {
                let ckpt = Checkpoint::new(&setup.state_dir, setup.kind, ctx.service(), setup.pattern.as_str());
                checkpoint::exclusive(ckpt.path())
            })
            .clone();
        let _held = guard.lock().unwrap_or_else(|p| p.into_inner());
        self.tailer(ctx);
        let Engine {
            setup,
            mode,
            tailer: Some(tailer),
            spans,
            problems,
            ..
        } = self
        else {
            return;
        };
        let format = &setup.format;
        let service = ctx.service();
        let mut events = Vec::new();
        // The last end read per file, committed once the events are handed on.
        let mut ends: Vec<(FileKey, u64)> = Vec::new();
        let mut unparsed_sample: Option<(PathBuf, String)> = None;
        let read_at = now();
        let report = tailer.poll(&mut |line| {
            let parsed = format.parse(line.text, spans);
            if parsed.is_none() {
                problems.unparsed_count += 1;
                if unparsed_sample.is_none() {
                    unparsed_sample = Some((line.path.to_path_buf(), sample(line.text)));
                }
            }
            match mode {
                Mode::Events => {
                    events.push(log_event(ctx, format, parsed.as_ref(), line.text, line.path, read_at));
                    note_end(&mut ends, line.key, line.end);
                }
                Mode::Metrics(agg) => match parsed {
                    Some(fields) => {
                        agg.add(line.key, line.end, &Request::of(format, &fields, read_at));
                    }
                    None => {
                        if let Some((k, e)) = agg.skip(line.key, line.end) {
                            note_end(&mut ends, k, e);
                        }
                    }
                },
            }
        });
        if let Mode::Metrics(agg) = mode {
            // A one-off run has no later tick to complete a window: it hands
            // on what it read, the last windows partial.
            let horizon = if ctx.is_one_off() {
                Some(f64::INFINITY)
            } else {
                report.caught_up.then(now)
            };
            for w in agg.close(horizon) {
                events.extend(window_events(ctx, format, &w));
                for (k, e) in w.ends() {
                    note_end(&mut ends, k, e);
                }
            }
        }
        if ctx.cancellation().is_cancelled() {
            // The source was stopped while this tick read: the pipeline may
            // already be draining for shutdown. Hand nothing on and save
            // nothing, so that the next start reads these lines again.
            return;
        }
        // Publishing, committing and saving stay together on this thread: a
        // tick the runtime gives up on still finishes them. Waiting for room
        // (an output's `when_full`) keeps a backlog — `history: true` on a
        // large file — from overflowing an output's queue.
        runtime.block_on(ctx.queue_back_wait(events));
        for (k, e) in ends {
            tailer.commit(k, e);
        }
        // `ductd once` reads from the agent's positions but leaves them as
        // they are: the agent, running or not, resumes where it stopped,
        // neither skipping what `once` printed nor reading it twice.
        let saved = if ctx.is_one_off() { Ok(()) } else { tailer.save() };
        if let Err(e) = saved {
            if let Some(held) = problems.save.allow(REPORT_EVERY) {
                tracing::warn!(service = %service, held_back = held, "{e}; positions are kept in memory only");
            }
        } else {
            problems.save.reset();
        }
        self.report(ctx, report, unparsed_sample);
    }

    fn report(&mut self, ctx: &SourceContext, report: super::tail::PollReport, unparsed: Option<(PathBuf, String)>) {
        let service = ctx.service();
        let pattern = self.setup.pattern.as_str();
        let p = &mut self.problems;
        if report.missing {
            if !self.waiting_logged {
                tracing::info!(service = %service, file = %pattern, "no file to read yet; waiting for it to appear");
                self.waiting_logged = true;
            }
        } else {
            self.waiting_logged = false;
        }
        for r in &report.rotations {
            tracing::info!(service = %service, "{r}");
        }
        if !report.errors.is_empty() {
            if let Some(held) = p.io.allow(REPORT_EVERY) {
                tracing::warn!(service = %service, held_back = held, "{}", report.errors.join("; "));
            }
        }
        if let Some((path, line)) = unparsed {
            if let Some(_held) = p.unparsed.allow(REPORT_EVERY) {
                tracing::warn!(
                    service = %service,
                    file = %path.display(),
                    lines = p.unparsed_count,
                    log_format = %self.setup.format.source(),
                    "lines do not match log_format; one of them: {line}"
                );
                p.unparsed_count = 0;
            }
        }
        p.overlong_count += report.overlong as u64;
        if report.overlong > 0 {
            if let Some(_held) = p.overlong.allow(REPORT_EVERY) {
                tracing::warn!(
                    service = %service,
                    lines = p.overlong_count,
                    max_line_bytes = self.setup.tail.max_line_bytes,
                    "lines longer than max_line_bytes were skipped"
                );
                p.overlong_count = 0;
            }
        }
        if !report.caught_up {
            if let Some(held) = p.behind.allow(REPORT_EVERY) {
                tracing::warn!(
                    service = %service,
                    max_lines = self.setup.tail.max_lines,
                    held_back = held,
                    "the log grows faster than max_lines per tick; reading is falling behind (raise max_lines or shorten interval)"
                );
            }
        }
    }
}

/// Records that `key`'s lines up to `end` were handed on.
fn note_end(ends: &mut Vec<(FileKey, u64)>, key: FileKey, end: u64) {
    match ends.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = slot.1.max(end),
        None => ends.push((key, end)),
    }
}

fn sample(line: &[u8]) -> String {
    let cut = &line[..line.len().min(SAMPLE_BYTES)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > SAMPLE_BYTES {
        s.push('…');
    }
    s
}

fn text(v: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(v)
}

/// One window's events under Duct's names.
fn window_events(ctx: &SourceContext, format: &LogFormat, w: &Window) -> Vec<Event> {
    let mut events = vec![
        ctx.create_event_prefixed("total_rbytes", "ok", "Nginx rbytes", w.rbytes)
            .at(w.start),
        ctx.create_event_prefixed("total_requests", "ok", "Nginx requests", w.requests)
            .at(w.start),
    ];
    for (group, keys) in GROUPS.iter().zip(&w.groups) {
        // Keys as text (non-UTF-8 bytes as U+FFFD). Duct wrote dots in user
        // agents and paths as commas (so that they do not split the metric
        // name). Keys that become equal are merged.
        let commas = matches!(*group, "user-agent" | "request");
        let mut named: HashMap<String, (u64, u64)> = HashMap::with_capacity(keys.len());
        for (key, (b, n)) in keys {
            let key = text(key);
            let key = if commas {
                key.replace('.', ",")
            } else {
                key.into_owned()
            };
            let slot = named.entry(key).or_default();
            slot.0 += b;
            slot.1 += n;
        }
        for (key, (rbytes, requests)) in &named {
            events.push(
                ctx.create_event_prefixed(
                    &format!("{group}.{key}.rbytes"),
                    "ok",
                    format!("Nginx {group} {key} rbytes"),
                    *rbytes,
                )
                .at(w.start),
            );
            events.push(
                ctx.create_event_prefixed(
                    &format!("{group}.{key}.requests"),
                    "ok",
                    format!("Nginx {group} {key} requests"),
                    *requests,
                )
                .at(w.start),
            );
        }
    }
    if format.roles.request_time.is_some() {
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            if let Some(v) = w.request_times.quantile(p) {
                events.push(
                    ctx.create_event_prefixed(
                        &format!("request_time.{name}"),
                        "ok",
                        format!("Nginx request time {name}"),
                        v,
                    )
                    .at(w.start),
                );
            }
        }
    }
    events
}

/// Duct's NginxLog event: type `nginx`, the fields as attributes, with
/// `@timestamp`, `message` and `logname`.
fn log_event(
    ctx: &SourceContext,
    format: &LogFormat,
    fields: Option<&Fields<'_>>,
    line: &[u8],
    path: &Path,
    read_at: f64,
) -> Event {
    let message = text(line).into_owned();
    let mut ev = ctx.create_log("nginx", message.clone());
    let time = match fields {
        Some(f) => {
            for (name, i) in format.names().iter().zip(0..) {
                if let Some(v) = f.get(i) {
                    ev.attributes.push((name.clone(), text(v).into_owned()));
                }
            }
            format.time_of(f).unwrap_or(read_at)
        }
        None => {
            ev.attributes
                .push(("parse_error".into(), "does not match log_format".into()));
            read_at
        }
    };
    ev.time = time;
    ev.attributes.push(("@timestamp".into(), iso8601_utc(time)));
    ev.attributes.push(("message".into(), message));
    ev.attributes.push(("logname".into(), path.display().to_string()));
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;
    use duct_core::{EventKind, Metric};
    use std::io::Write;

    const COMBINED_LOG: &str = include_str!("../../tests/fixtures/nginx-log/combined.log");
    const TIMED_LOG: &str = include_str!("../../tests/fixtures/nginx-log/timed.log");
    const TIMED: &str = r#"$remote_addr $host [$time_iso8601] "$request" $status $bytes_sent $request_time $msec "$http_user_agent" ${request_length}b"#;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("duct-nginx-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn source(dir: &Dir, format: &str, mode: Mode) -> NginxLogSource {
        NginxLogSource::new(
            Setup {
                kind: "test",
                pattern: FilePattern::new(&dir.0.join("access.log").display().to_string()),
                format: LogFormat::compile(format).unwrap(),
                tail: TailOptions {
                    history: true,
                    max_lines: 0,
                    max_line_bytes: 1 << 16,
                    rotated_idle: ROTATED_IDLE,
                },
                state_dir: dir.0.join("state"),
            },
            mode,
        )
    }

    fn append(dir: &Dir, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("access.log"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn metric_of(events: &[Event], service: &str) -> Option<Metric> {
        events.iter().find(|e| e.service == service).and_then(|e| e.metric)
    }

    #[tokio::test]
    async fn metrics_of_captured_lines_under_ducts_names() {
        let dir = Dir::new("metrics");
        append(&dir, COMBINED_LOG);
        let mut src = source(&dir, "combined", Mode::Metrics(Aggregator::new(1.0, 100)));
        let (ctx, sink) = context("nginx");
        assert!(src.get(&ctx).await.unwrap().is_empty(), "events go through queue_back");
        let events = sink.0.lock().unwrap().clone();
        // Every captured line is in the past: all windows are closed.
        let total: i64 = events
            .iter()
            .filter(|e| e.service == "nginx.total_requests")
            .map(|e| match e.metric {
                Some(Metric::Int(n)) => n,
                _ => 0,
            })
            .sum();
        assert_eq!(total, COMBINED_LOG.lines().count() as i64);
        // The first line (06:20:02) is alone in its one-second window.
        let first = events.iter().find(|e| e.service == "nginx.total_rbytes").unwrap();
        assert_eq!(first.time, 1796278802.0);
        assert_eq!(first.metric, Some(Metric::Int(6)));
        assert_eq!(first.description, "Nginx rbytes");
        assert_eq!(metric_of(&events, "nginx.status.404.requests"), Some(Metric::Int(3)));
        assert_eq!(metric_of(&events, "nginx.client.::1.requests"), Some(Metric::Int(1)));
        assert_eq!(
            metric_of(&events, "nginx.request./static/app,min,js.rbytes"),
            Some(Metric::Int(5000))
        );
        assert!(events
            .iter()
            .any(|e| e.service.starts_with("nginx.user-agent.Mozilla/5,0 (X11")));
        assert!(events
            .iter()
            .any(|e| e.service == "nginx.request./missing,png.requests"));
        assert!(
            !events.iter().any(|e| e.service.contains("request_time")),
            "combined has none"
        );
        // The garbage request line has no path: counted, but not by path.
        assert!(!events.iter().any(|e| e.service == "nginx.request..requests"));
    }

    #[tokio::test]
    async fn request_time_percentiles_when_the_format_has_it() {
        let dir = Dir::new("percentiles");
        let base = "127.0.0.1 h [2026-12-03T06:20:02+00:00] \"GET / HTTP/1.1\" 200 10";
        for ms in 1..=100 {
            append(&dir, &format!("{base} {}.{ms:03} 1796278802.000 \"ua\" 1b\n", 0));
        }
        let mut src = source(&dir, TIMED, Mode::Metrics(Aggregator::new(10.0, 100)));
        let (ctx, sink) = context("web");
        src.get(&ctx).await.unwrap();
        let events = sink.0.lock().unwrap().clone();
        assert_eq!(metric_of(&events, "web.request_time.p50"), Some(Metric::Float(0.05)));
        assert_eq!(metric_of(&events, "web.request_time.p99"), Some(Metric::Float(0.099)));
        assert_eq!(metric_of(&events, "web.total_requests"), Some(Metric::Int(100)));
    }

    #[tokio::test]
    async fn one_log_event_per_line_with_fields_and_unparsed_lines_kept() {
        let dir = Dir::new("events");
        let lines: Vec<&str> = TIMED_LOG.lines().take(4).collect();
        append(&dir, &format!("{}\nnot an access log line\n", lines.join("\n")));
        let mut src = source(&dir, TIMED, Mode::Events);
        let (ctx, sink) = context("web");
        src.get(&ctx).await.unwrap();
        let events = sink.0.lock().unwrap().clone();
        assert_eq!(events.len(), 5);
        let ev = &events[3];
        assert_eq!(ev.kind, EventKind::Log);
        assert_eq!(ev.service, "nginx");
        assert_eq!(ev.time, 1796278808.0);
        let attr = |ev: &Event, k: &str| ev.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(attr(ev, "remote_addr").as_deref(), Some("::1"));
        assert_eq!(attr(ev, "request").as_deref(), Some("GET /index.html HTTP/1.1"));
        assert_eq!(attr(ev, "@timestamp").as_deref(), Some("2026-12-03T06:20:08Z"));
        assert_eq!(attr(ev, "message").as_deref(), Some(lines[3]));
        assert_eq!(ev.description, lines[3]);
        assert!(attr(ev, "logname").unwrap().ends_with("access.log"));
        let bad = &events[4];
        assert_eq!(attr(bad, "parse_error").as_deref(), Some("does not match log_format"));
        assert_eq!(attr(bad, "message").as_deref(), Some("not an access log line"));

        // A new source over the same state resumes after what was handed on.
        append(&dir, &format!("{}\n", lines[0]));
        let mut again = source(&dir, TIMED, Mode::Events);
        let (ctx, sink) = context("web");
        again.get(&ctx).await.unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }
}
