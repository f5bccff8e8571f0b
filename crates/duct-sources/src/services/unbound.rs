//! `duct.sources.unbound.Stats`: every numeric statistic of an unbound
//! resolver, from `unbound-control stats`.
//!
//! Events: `(service).(key)` for every `key=value` line whose value is a
//! number (`total.num.queries`, `thread0.num.cachehits`,
//! `num.answer.rcode.NXDOMAIN`, `histogram.…`), as Duct named them.
//! unbound resets its counters at each `stats` (so the figures are per
//! interval, as Duct reported them); `reset: false` reads them with
//! `stats_noreset` instead, for a resolver that another collector also
//! reads. Beyond Duct: `config` (unbound-control's `-c`, where it finds the
//! control interface and its keys) and `server` (`-s host[@port]`).
//! With `use_ssh: true`, unbound-control runs on `ssh_host` through the
//! shared SSH connection (docs/remote-checks.md). Faults (the program is
//! missing, cannot reach unbound, runs past the timeout, prints no
//! statistics, the SSH login fails): `(service)` critical with no metric.

use std::path::{Path, PathBuf};
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Metric, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::conn::shown;
use super::{budget, Faults, ServiceError, DEFAULT_TIMEOUT, MAX_REPLY_BYTES};
use crate::linux::host::Host;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    executable: PathBuf,
    /// unbound-control's configuration file (`-c`).
    config: Option<PathBuf>,
    /// The server to ask (`-s host[@port]`, or a socket path).
    server: Option<String>,
    /// `stats` (resets unbound's counters, as Duct did) or `stats_noreset`.
    reset: bool,
    /// Seconds unbound-control may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            executable: PathBuf::from("/usr/sbin/unbound-control"),
            config: None,
            server: None,
            reset: true,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.unbound.Stats",
        "unbound's statistics from `unbound-control stats`: `executable` (/usr/sbin/unbound-control), \
         `config` (-c), `server` (-s), `reset` (true: `stats`; false: `stats_noreset`), `timeout`",
        &[
            "(service).(key): every numeric key=value of the output (total.num.queries, thread0.num.cachehits, …)",
            "(service): critical with no metric when unbound-control fails",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    if o.executable.as_os_str().is_empty() {
        return Err(args.invalid("executable", "must name unbound-control"));
    }
    let mut argv = Vec::new();
    if let Some(config) = o.config {
        argv.push("-c".to_string());
        argv.push(config.to_string_lossy().into_owned());
    }
    if let Some(server) = o.server {
        argv.push("-s".to_string());
        argv.push(server);
    }
    argv.push(if o.reset { "stats" } else { "stats_noreset" }.to_string());
    Ok(Box::new(Stats {
        executable: o.executable,
        args: argv,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
        host: Host::of(args),
    }))
}

pub struct Stats {
    executable: PathBuf,
    args: Vec<String>,
    /// Where unbound-control runs: here, or over SSH (`use_ssh`).
    host: Host,
    budget: Duration,
    faults: Faults,
}

service_source!(Stats);

impl Stats {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        match self.stats().await {
            Ok(stats) => {
                self.faults.worked(ctx);
                stats
                    .into_iter()
                    .map(|(key, value)| ctx.create_event_prefixed(&key, "ok", key.clone(), value))
                    .collect()
            }
            Err(e) => {
                let text = format!("{} - {e}", self.executable.display());
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }

    async fn stats(&self) -> Result<Vec<(String, Metric)>, ServiceError> {
        let out = self
            .host
            .run(&self.executable, &self.args, &[], self.budget, MAX_REPLY_BYTES)
            .await
            .map_err(|e| ServiceError::Io {
                doing: "running it".into(),
                reason: strip_program(&e.to_string(), &self.executable),
            })?;
        if out.code != Some(0) {
            let said = complaint(&out.stderr).or_else(|| complaint(&out.stdout));
            return Err(ServiceError::Program(match (out.code, said) {
                (Some(code), Some(said)) => format!("{said} (exit status {code})"),
                (Some(code), None) => format!("exit status {code}, without a word"),
                (None, Some(said)) => format!("{said} (killed by a signal)"),
                (None, None) => "killed by a signal".to_string(),
            }));
        }
        if out.truncated {
            return Err(ServiceError::TooLarge {
                limit: MAX_REPLY_BYTES,
                doing: "from `stats`".into(),
            });
        }
        let stats = parse_stats(&out.stdout);
        if stats.is_empty() {
            return Err(ServiceError::Garbage {
                doing: "from `stats`".into(),
                detail: format!("no key=value statistics in {}", shown(out.stdout.trim())),
            });
        }
        Ok(stats)
    }
}

/// The fork error without the program's path, which the description
/// already starts with.
fn strip_program(message: &str, program: &Path) -> String {
    let path = program.display().to_string();
    message.replace(&format!(" {path}"), "").replace(&path, "it")
}

/// The first line unbound-control complained with, without its
/// `[time] unbound-control[pid:0] ` prefix.
fn complaint(text: &str) -> Option<&str> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut rest = line;
    while let Some(after) = rest.strip_prefix('[').and_then(|r| r.split_once("] ")).map(|(_, a)| a) {
        rest = after;
    }
    // `unbound-control[123:0] error: …`
    if let Some((head, after)) = rest.split_once("] ") {
        if !head.contains(' ') {
            rest = after;
        }
    }
    Some(rest)
}

/// The numeric `key=value` lines of `stats` output, in order.
pub(crate) fn parse_stats(text: &str) -> Vec<(String, Metric)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once('=')?;
            if key.is_empty() || key.contains(char::is_whitespace) {
                return None;
            }
            let value = match value.parse::<i64>() {
                Ok(i) => Metric::Int(i),
                Err(_) => Metric::Float(value.parse::<f64>().ok().filter(|v| v.is_finite())?),
            };
            Some((key.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    fn text(name: &str) -> String {
        String::from_utf8(fixture("unbound", name)).unwrap()
    }

    #[test]
    fn stats_of_unbound_1_17_parse() {
        let stats = parse_stats(&text("stats-extended-1.17.1.txt"));
        assert_eq!(stats.len(), 126, "every line is numeric");
        let get = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        // Three answered queries and one NXDOMAIN, all from local data.
        assert_eq!(get("total.num.queries"), Some(Metric::Int(4)));
        assert_eq!(get("thread0.num.cachehits"), Some(Metric::Int(4)));
        assert_eq!(get("num.answer.rcode.NXDOMAIN"), Some(Metric::Int(1)));
        assert_eq!(get("num.query.type.A"), Some(Metric::Int(4)));
        assert_eq!(get("total.recursion.time.avg"), Some(Metric::Float(0.0)));
        assert_eq!(get("time.now"), Some(Metric::Float(1796279443.894214)));
        assert!(get("histogram.000000.000000.to.000000.000001").is_some());
        assert_eq!(stats[0].0, "thread0.num.queries", "in unbound's order");
        assert!(!parse_stats(&text("stats-1.17.1.txt")).is_empty());
    }

    #[test]
    fn lines_that_are_not_numeric_statistics_are_skipped() {
        let stats = parse_stats("version: 1.17.1\nkey=text\na b=1\n=3\nok=5\nbig=1e400\n");
        assert_eq!(stats, [("ok".to_string(), Metric::Int(5))]);
    }

    #[test]
    fn complaints_lose_their_prefix() {
        let refused =
            "[1796279447] unbound-control[22729:0] error: connect: Connection refused for /tmp/ub/control.sock\n";
        assert_eq!(
            complaint(refused),
            Some("error: connect: Connection refused for /tmp/ub/control.sock")
        );
        assert_eq!(complaint("\n plain text\n"), Some("plain text"));
        assert_eq!(complaint(""), None);
    }
}
