//! `duct.sources.nginx.Nginx`: nginx's `stub_status` page, read over HTTP.
//!
//! Events, Duct's names: `(service).active`, `.reading`, `.writing`,
//! `.waiting` (connections now) and `.accepts`, `.handled`, `.requests`
//! (Counter64: per second). A page that cannot be read — refused, timed
//! out, not 2xx, not a stub_status page — is `(service)` critical with no
//! metric and the cause (Duct logged the exception and sent nothing).

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::conn::shown;
use super::web::{text, Access, Api, WebError};
use super::{budget, Faults, DEFAULT_TIMEOUT};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// The stub_status page.
    url: Option<String>,
    /// Duct's other name for `url`.
    stats_url: Option<String>,
    /// Seconds the request may take (also the common option).
    timeout: Option<f64>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.nginx.Nginx",
        "nginx stub_status over HTTP: `url` (or Duct's `stats_url`; required), `timeout`",
        &[
            "(service).active: open client connections",
            "(service).accepts, .handled, .requests: per second (Counter64)",
            "(service).reading, .writing, .waiting: connections in each state",
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
        (None, None) => return Err(args.invalid("url", "is required: the stub_status page")),
    };
    let budget = budget(args, DEFAULT_TIMEOUT);
    Ok(Box::new(Nginx {
        api: Api::new(args, key, url, Access::default(), budget)?,
        budget,
        faults: Faults::default(),
    }))
}

pub struct Nginx {
    api: Api,
    budget: Duration,
    faults: Faults,
}

service_source!(Nginx, counters);

impl Nginx {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let read = async { parse_stub_status(text(&self.api.get().await?)?).map_err(WebError::garbage) };
        match read.await {
            Ok(status) => {
                self.faults.worked(ctx);
                events(ctx, &status)
            }
            Err(e) => {
                let text = format!("{} - {e}", self.api.url());
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }
}

/// The figures of a stub_status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StubStatus {
    pub active: u64,
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

/// Duct's events, in Duct's order.
fn events(ctx: &SourceContext, s: &StubStatus) -> Vec<Event> {
    let gauge = |name: &str, v: u64| ctx.create_event_prefixed(name, "ok", format!("Nginx {name}"), v);
    let counter = |name: &str, v: u64| gauge(name, v).aggregated(Aggregation::Counter64);
    vec![
        gauge("active", s.active),
        counter("accepts", s.accepts),
        counter("requests", s.requests),
        counter("handled", s.handled),
        gauge("reading", s.reading),
        gauge("writing", s.writing),
        gauge("waiting", s.waiting),
    ]
}

/// Parses a stub_status page:
///
/// ```text
/// Active connections: 1
/// server accepts handled requests
///  5 5 5
/// Reading: 0 Writing: 1 Waiting: 0
/// ```
pub(crate) fn parse_stub_status(page: &str) -> Result<StubStatus, String> {
    let not_it = || format!("not a stub_status page: {}", shown(page.trim()));
    let mut lines = page.lines().map(str::trim).filter(|l| !l.is_empty());
    let active = lines
        .next()
        .and_then(|l| l.strip_prefix("Active connections:"))
        .ok_or_else(not_it)?;
    let active = number(active.trim(), "active connections")?;
    if lines.next() != Some("server accepts handled requests") {
        return Err(not_it());
    }
    let totals = lines.next().ok_or_else(not_it)?;
    let totals: Vec<&str> = totals.split_whitespace().collect();
    let [accepts, handled, requests] = totals[..] else {
        return Err(format!(
            "expected accepts, handled and requests, got {}",
            shown(&totals.join(" "))
        ));
    };
    let states = lines.next().ok_or_else(not_it)?;
    let words: Vec<&str> = states.split_whitespace().collect();
    let ["Reading:", reading, "Writing:", writing, "Waiting:", waiting] = words[..] else {
        return Err(format!("expected Reading, Writing and Waiting, got {}", shown(states)));
    };
    Ok(StubStatus {
        active,
        accepts: number(accepts, "accepts")?,
        handled: number(handled, "handled")?,
        requests: number(requests, "requests")?,
        reading: number(reading, "reading")?,
        writing: number(writing, "writing")?,
        waiting: number(waiting, "waiting")?,
    })
}

fn number(text: &str, what: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{what} is {}, not a count", shown(text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;
    use crate::testing::context;

    fn page(name: &str) -> String {
        String::from_utf8(fixture("nginx", name)).unwrap()
    }

    #[test]
    fn a_stub_status_page_of_nginx_1_22_parses() {
        // Captured after four requests, the fifth being this one.
        let s = parse_stub_status(&page("stub_status-1.22.1.txt")).unwrap();
        assert_eq!(
            s,
            StubStatus {
                active: 1,
                accepts: 5,
                handled: 5,
                requests: 5,
                reading: 0,
                writing: 1,
                waiting: 0
            }
        );
    }

    #[test]
    fn pages_that_are_not_stub_status_are_refused() {
        let html = "<html><body>Welcome to nginx!</body></html>";
        assert!(parse_stub_status(html)
            .unwrap_err()
            .starts_with("not a stub_status page: \"<html>"));
        let truncated: String = page("stub_status-1.22.1.txt")
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_stub_status(&truncated).is_err());
        let bad = "Active connections: 1\nserver accepts handled requests\n 5 x 5\nReading: 0 Writing: 1 Waiting: 0\n";
        assert_eq!(parse_stub_status(bad).unwrap_err(), "handled is \"x\", not a count");
        assert!(parse_stub_status("").is_err());
    }

    #[test]
    fn events_carry_ducts_names_and_counters() {
        let (ctx, _) = context("nginx");
        let s = parse_stub_status(&page("stub_status-1.22.1.txt")).unwrap();
        let evs = events(&ctx, &s);
        let names: Vec<&str> = evs.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(
            names,
            [
                "nginx.active",
                "nginx.accepts",
                "nginx.requests",
                "nginx.handled",
                "nginx.reading",
                "nginx.writing",
                "nginx.waiting"
            ]
        );
        let counters: Vec<&str> = evs
            .iter()
            .filter(|e| e.aggregation == Some(Aggregation::Counter64))
            .map(|e| e.service.as_str())
            .collect();
        assert_eq!(counters, ["nginx.accepts", "nginx.requests", "nginx.handled"]);
    }
}
