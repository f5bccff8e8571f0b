//! `duct.sources.apache.Apache`: Apache httpd's mod_status in its
//! machine-readable form (`/server-status?auto`), read over HTTP.
//!
//! Events, Duct's names, all as read (no rates): `(service).conns.active`
//! (ConnsTotal), `.conns.writing`, `.conns.closing`, `.conns.keep_alive`,
//! `.accesses`, `.uptime`, `.cpu_load`, `.total_kbytes`, `.request_rate`,
//! `.bytes_rate`, `.bytes_req`, `.workers.busy`, `.workers.idle`. A key
//! the server does not print is 0, as in Duct (Apache leaves out
//! `CPULoad` while it is 0, the prefork MPM has no `Conns*`). Apache 2.4
//! prints the server's name on a first line without `: ` and many keys
//! Duct never read (`Load1`, `Scoreboard`, …): those are skipped, where
//! Duct's parser failed on them. A page that cannot be read, or that is
//! not mod_status's `?auto` output (the HTML page, say), is `(service)`
//! critical with no metric and the cause.

use std::collections::HashMap;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Metric, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::conn::shown;
use super::web::{text, Access, Api, WebError};
use super::{budget, Faults, DEFAULT_TIMEOUT};

/// Duct's metric, mod_status's key, and whether the value is a fraction.
const FIGURES: &[(&str, &str, bool)] = &[
    ("conns.active", "ConnsTotal", false),
    ("conns.writing", "ConnsAsyncWriting", false),
    ("conns.closing", "ConnsAsyncClosing", false),
    ("conns.keep_alive", "ConnsAsyncKeepAlive", false),
    ("accesses", "Total Accesses", false),
    ("uptime", "Uptime", false),
    ("cpu_load", "CPULoad", true),
    ("total_kbytes", "Total kBytes", false),
    ("request_rate", "ReqPerSec", true),
    ("bytes_rate", "BytesPerSec", true),
    ("bytes_req", "BytesPerReq", true),
    ("workers.busy", "BusyWorkers", false),
    ("workers.idle", "IdleWorkers", false),
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// The status page, with `?auto`.
    url: Option<String>,
    /// Duct's other name for `url`.
    stats_url: Option<String>,
    /// Seconds the request may take (also the common option).
    timeout: Option<f64>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.apache.Apache",
        "Apache mod_status `?auto` over HTTP: `url` (or Duct's `stats_url`; required, e.g. \
         http://127.0.0.1/server-status?auto), `timeout`",
        &[
            "(service).conns.active, .conns.writing, .conns.closing, .conns.keep_alive: connections (ConnsTotal, ConnsAsync*)",
            "(service).accesses, .total_kbytes: totals since the start, as read",
            "(service).uptime: seconds",
            "(service).cpu_load, .request_rate, .bytes_rate, .bytes_req: Apache's own averages",
            "(service).workers.busy, .workers.idle: workers",
            "(service): critical with no metric when the page cannot be read",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let _ = o.timeout;
    let (key, url) = match (&o.url, &o.stats_url) {
        (Some(url), _) => ("url", url),
        (None, Some(url)) => ("stats_url", url),
        (None, None) => {
            return Err(args.invalid(
                "url",
                "is required: the status page, e.g. http://127.0.0.1/server-status?auto",
            ))
        }
    };
    let budget = budget(args, DEFAULT_TIMEOUT);
    Ok(Box::new(Apache {
        api: Api::new(args, key, url, Access::default(), budget)?,
        budget,
        faults: Faults::default(),
    }))
}

pub struct Apache {
    api: Api,
    budget: Duration,
    faults: Faults,
}

service_source!(Apache);

impl Apache {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let read = async { parse_status(text(&self.api.get().await?)?).map_err(WebError::garbage) };
        match read.await {
            Ok(figures) => {
                self.faults.worked(ctx);
                figures
                    .into_iter()
                    .map(|(name, value)| ctx.create_event_prefixed(name, "ok", format!("Apache {name}"), value))
                    .collect()
            }
            Err(e) => {
                let text = format!("{} - {e}", self.api.url());
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }
}

/// Duct's figures from a `?auto` page, in Duct's order; a key the page
/// does not have is 0.
pub(crate) fn parse_status(page: &str) -> Result<Vec<(&'static str, Metric)>, String> {
    let keys: HashMap<&str, &str> = page
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    // Every mod_status prints the workers, with or without ExtendedStatus.
    if !keys.contains_key("BusyWorkers") && !keys.contains_key("IdleWorkers") {
        return Err(format!(
            "not mod_status `?auto` output (no BusyWorkers or IdleWorkers): {}",
            shown(page.trim())
        ));
    }
    FIGURES
        .iter()
        .map(|&(name, key, fraction)| {
            let Some(text) = keys.get(key) else {
                return Ok((name, if fraction { Metric::Float(0.0) } else { Metric::Int(0) }));
            };
            let bad = || format!("{key} is {}, not a number", shown(text));
            let value = if fraction {
                Metric::Float(text.parse().map_err(|_| bad())?)
            } else {
                Metric::Int(text.parse().map_err(|_| bad())?)
            };
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    fn page(name: &str) -> String {
        String::from_utf8(fixture("apache", name)).unwrap()
    }

    fn get(figures: &[(&str, Metric)], name: &str) -> Metric {
        figures.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn apache_2_4_71_status_parses_past_its_name_line_and_new_keys() {
        // Captured 8 seconds after the start, 13 requests served; this
        // one, the 14th, is not counted yet.
        let text = page("status-auto-2.4.71.txt");
        assert!(
            !text.lines().next().unwrap().contains(": "),
            "the first line is the server's name"
        );
        let f = parse_status(&text).unwrap();
        let names: Vec<&str> = f.iter().map(|(n, _)| *n).collect();
        let duct: Vec<&str> = FIGURES.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, duct);
        assert_eq!(get(&f, "accesses"), Metric::Int(13));
        assert_eq!(get(&f, "total_kbytes"), Metric::Int(6));
        assert_eq!(get(&f, "uptime"), Metric::Int(8));
        assert_eq!(get(&f, "request_rate"), Metric::Float(1.625));
        assert_eq!(get(&f, "bytes_req"), Metric::Float(472.615));
        assert_eq!(get(&f, "workers.busy"), Metric::Int(1));
        assert_eq!(get(&f, "workers.idle"), Metric::Int(74));
        assert_eq!(get(&f, "conns.active"), Metric::Int(0));
        assert_eq!(get(&f, "cpu_load"), Metric::Float(0.0), "not printed while 0");
    }

    #[test]
    fn pages_that_are_not_auto_status_are_refused() {
        let html = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\">\n<html><head>\n<title>Apache Status</title>";
        assert!(parse_status(html)
            .unwrap_err()
            .starts_with("not mod_status `?auto` output"));
        let bad = page("status-auto-2.4.71.txt").replace("Total Accesses: 13", "Total Accesses: many");
        assert_eq!(
            parse_status(&bad).unwrap_err(),
            "Total Accesses is \"many\", not a number"
        );
        // Without ExtendedStatus only the workers and the scoreboard are
        // printed: the rest is 0.
        let basic = "127.0.0.1\nBusyWorkers: 2\nIdleWorkers: 48\nScoreboard: __W_\n";
        let f = parse_status(basic).unwrap();
        assert_eq!(get(&f, "workers.busy"), Metric::Int(2));
        assert_eq!(get(&f, "accesses"), Metric::Int(0));
    }
}
