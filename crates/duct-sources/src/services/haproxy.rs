//! `duct.sources.haproxy.HAProxy`: HAProxy's statistics page as CSV, read
//! over HTTP with Basic credentials, per frontend, backend and server.
//!
//! Events: `(service).state`, 1 when the page was read (0 and critical,
//! with the cause, when not: Duct's convention); then for each proxy,
//! under `frontends.(proxy)`, `backends.(proxy)` or, for a server,
//! `nodes.(proxy).(server)`: `.sessions` (current, as read) and, as
//! `Counter` rates, `.session_rate` (from the session total),
//! `.errors_req`, `.errors_con`, `.errors_resp`, `.retries`, `.switches`,
//! `.bytes_in`, `.bytes_out` (×8: bits, as Duct sent them), `.code_1xx` …
//! `.code_5xx`; a backend's `.active` servers and a server's
//! `.checks_failed` (a rate). A figure HAProxy leaves empty for that kind
//! of row is left out.
//!
//! Two changes from Duct, both because its series could not be read:
//! a server is named `nodes.(proxy).(server)`, not `nodes.(proxy)`, which
//! every server of a backend shared (their counters mixed into one
//! series); and `backends.(proxy).active` is the number of active servers,
//! not a rate of it.

use std::collections::HashMap;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::conn::shown;
use super::web::{text, Access, Api, WebError};
use super::{budget, Faults, DEFAULT_TIMEOUT};

/// Duct's metric, HAProxy's column, Duct's description; all but
/// `sessions` are counters.
const FIGURES: &[(&str, &str, &str)] = &[
    ("sessions", "scur", "Sessions"),
    ("session_rate", "stot", "Session rate"),
    ("errors_req", "ereq", "Request errors"),
    ("errors_con", "econ", "Backend connection errors"),
    ("errors_resp", "eresp", "Response errors"),
    ("retries", "wretr", "Retries"),
    ("switches", "wredis", "Switches"),
    ("bytes_in", "bin", "Bytes in"),
    ("bytes_out", "bout", "Bytes out"),
    ("code_1xx", "hrsp_1xx", "1xx codes"),
    ("code_2xx", "hrsp_2xx", "2xx codes"),
    ("code_3xx", "hrsp_3xx", "3xx codes"),
    ("code_4xx", "hrsp_4xx", "4xx codes"),
    ("code_5xx", "hrsp_5xx", "5xx codes"),
];

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The stats page in CSV (`;csv` after the stats URI).
    url: String,
    user: String,
    password: String,
    /// Verify an https server's certificate (against `ca`, else the
    /// system's CA store).
    tls_verify: bool,
    ca: Option<std::path::PathBuf>,
    /// Seconds the request may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "http://localhost/haproxy?stats;csv".into(),
            user: "haproxy".into(),
            password: "stats".into(),
            tls_verify: true,
            ca: None,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.haproxy.HAProxy",
        "HAProxy's stats page as CSV over HTTP: `url` (http://localhost/haproxy?stats;csv), `user` (haproxy), \
         `password` (stats), `tls_verify` (true), `ca`, `timeout`",
        &[
            "(service).state: 1 when the page was read, 0 and critical (with the cause) when not",
            "(service).(frontends|backends).(proxy).(stat) and .nodes.(proxy).(server).(stat): sessions (current); \
             Counter rates of session_rate, errors_req, errors_con, errors_resp, retries, switches, bytes_in, \
             bytes_out (bits), code_1xx … code_5xx",
            "(service).backends.(proxy).active: active servers",
            "(service).nodes.(proxy).(server).checks_failed: failed health checks (a rate)",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let _ = o.timeout;
    let budget = budget(args, DEFAULT_TIMEOUT);
    let access = Access {
        user: Some(o.user),
        password: Some(o.password),
        tls_verify: o.tls_verify,
        ca: o.ca,
    };
    Ok(Box::new(HAProxy {
        api: Api::new(args, "url", &o.url, access, budget)?,
        budget,
        faults: Faults::default(),
    }))
}

pub struct HAProxy {
    api: Api,
    budget: Duration,
    faults: Faults,
}

service_source!(HAProxy, counters);

impl HAProxy {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let read = async {
            let body = self.api.get().await?;
            parse_stats(text(&body)?).map_err(WebError::garbage)
        };
        match read.await {
            Ok(rows) => {
                self.faults.worked(ctx);
                let mut evs = vec![ctx.create_event_prefixed("state", "ok", "Connection ok", 1)];
                for row in &rows {
                    evs.extend(events(ctx, row));
                }
                evs
            }
            Err(e) => {
                let text = format!("{} - {e}", self.api.url());
                self.faults.failed(ctx, &text);
                vec![ctx.create_event_prefixed("state", "critical", format!("Connection failed: {text}"), 0)]
            }
        }
    }
}

/// What a row of the stats describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Frontend,
    Backend,
    Server,
}

/// One proxy or server of the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub kind: Kind,
    /// `frontends.web`, `backends.app`, `nodes.app.s1`.
    pub prefix: String,
    /// The columns HAProxy filled in, as numbers.
    pub figures: HashMap<String, u64>,
}

fn events(ctx: &SourceContext, row: &Row) -> Vec<Event> {
    let mut evs = Vec::new();
    let mut push = |name: &str, column: &str, what: &str, counter: bool| {
        let Some(&value) = row.figures.get(column) else { return };
        let value = if matches!(column, "bin" | "bout") {
            value.saturating_mul(8)
        } else {
            value
        };
        let ev = ctx.create_event_prefixed(
            &format!("{}.{name}", row.prefix),
            "ok",
            format!("{what}: {value}"),
            value,
        );
        evs.push(if counter {
            ev.aggregated(Aggregation::Counter)
        } else {
            ev
        });
    };
    match row.kind {
        Kind::Backend => push("active", "act", "Active servers", false),
        Kind::Server => push("checks_failed", "chkfail", "Check failures", true),
        Kind::Frontend => {}
    }
    for &(name, column, what) in FIGURES {
        push(name, column, what, name != "sessions");
    }
    evs
}

/// Parses the CSV of HAProxy's stats: a header line starting `# pxname,`,
/// then one row per frontend, backend, server (and listener, left out).
pub(crate) fn parse_stats(csv: &str) -> Result<Vec<Row>, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    let Some(header) = header.strip_prefix("# ") else {
        return Err(format!("not HAProxy's CSV statistics: {}", shown(csv.trim())));
    };
    let columns = fields(header);
    if columns.first().map(String::as_str) != Some("pxname") || columns.get(1).map(String::as_str) != Some("svname") {
        return Err(format!(
            "the header does not start with pxname,svname: {}",
            shown(header)
        ));
    }
    let type_column = columns.iter().position(|c| c == "type");
    let mut rows = Vec::new();
    for line in lines {
        let values = fields(line);
        if values.len() < 2 {
            return Err(format!("a row with no proxy and server: {}", shown(line)));
        }
        let (proxy, server) = (&values[0], &values[1]);
        let kind = match type_column.and_then(|i| values.get(i)).map(String::as_str) {
            Some("0") => Kind::Frontend,
            Some("1") => Kind::Backend,
            Some("2") => Kind::Server,
            Some("3") => continue,
            _ if server == "FRONTEND" => Kind::Frontend,
            _ if server == "BACKEND" => Kind::Backend,
            _ => Kind::Server,
        };
        let prefix = match kind {
            Kind::Frontend => format!("frontends.{proxy}"),
            Kind::Backend => format!("backends.{proxy}"),
            Kind::Server => format!("nodes.{proxy}.{server}"),
        };
        let mut figures = HashMap::new();
        for (column, value) in columns.iter().zip(&values).skip(2) {
            if value.is_empty() {
                continue;
            }
            if let Ok(n) = value.parse::<u64>() {
                figures.insert(column.clone(), n);
            } else if FIGURES.iter().any(|(_, c, _)| c == column) || matches!(column.as_str(), "act" | "chkfail") {
                return Err(format!("{column} of {proxy}/{server} is {}, not a count", shown(value)));
            }
        }
        rows.push(Row { kind, prefix, figures });
    }
    Ok(rows)
}

/// The fields of one CSV line; a field in double quotes may hold commas
/// (HAProxy quotes check descriptions that do) and `""` for a quote.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    // A line ends with a comma: no field after it.
    if !field.is_empty() {
        out.push(field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;
    use crate::testing::context;

    fn stats() -> Vec<Row> {
        parse_stats(&String::from_utf8(fixture("haproxy", "stats-2.6.12.csv")).unwrap()).unwrap()
    }

    fn row<'a>(rows: &'a [Row], prefix: &str) -> &'a Row {
        rows.iter().find(|r| r.prefix == prefix).unwrap()
    }

    #[test]
    fn haproxy_2_6_stats_parse_per_frontend_backend_and_server() {
        // A frontend `web` sending 10 requests to backend `app` (servers
        // s1 and s2, both up) and one to backend `down` (its one server
        // refused), captured on the stats page's third read.
        let rows = stats();
        let prefixes: Vec<&str> = rows.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(
            prefixes,
            [
                "frontends.web",
                "nodes.app.s1",
                "nodes.app.s2",
                "backends.app",
                "nodes.down.dead",
                "backends.down",
                "frontends.origin",
                "backends.origin",
                "frontends.origin2",
                "backends.origin2",
                "frontends.stats",
                "backends.stats"
            ]
        );
        let web = row(&rows, "frontends.web");
        assert_eq!(web.kind, Kind::Frontend);
        assert_eq!(web.figures["stot"], 11);
        assert_eq!(web.figures["hrsp_2xx"], 10);
        assert_eq!(web.figures["hrsp_5xx"], 1);
        assert!(!web.figures.contains_key("econ"), "empty for a frontend");
        assert_eq!(row(&rows, "backends.app").figures["act"], 2);
        assert_eq!(row(&rows, "backends.down").figures["act"], 0);
        assert_eq!(row(&rows, "nodes.down.dead").figures["chkfail"], 1);
        assert_eq!(row(&rows, "nodes.app.s1").figures["stot"], 5);
    }

    #[test]
    fn events_are_ducts_with_bits_and_counters() {
        let (ctx, _) = context("hap");
        let rows = stats();
        let evs = events(&ctx, row(&rows, "nodes.down.dead"));
        let names: Vec<&str> = evs.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(names[0], "hap.nodes.down.dead.checks_failed");
        // HAProxy counts request errors on frontends only.
        assert!(!names.contains(&"hap.nodes.down.dead.errors_req"));
        assert_eq!(names.len(), FIGURES.len());
        let web = events(&ctx, row(&rows, "frontends.web"));
        let get = |name: &str| web.iter().find(|e| e.service == name).unwrap();
        assert_eq!(
            get("hap.frontends.web.bytes_in").metric,
            Some(duct_core::Metric::Int(906 * 8))
        );
        assert_eq!(get("hap.frontends.web.sessions").aggregation, None);
        assert_eq!(
            get("hap.frontends.web.session_rate").aggregation,
            Some(Aggregation::Counter)
        );
        assert_eq!(get("hap.frontends.web.code_5xx").description, "5xx codes: 1");
        assert!(!web.iter().any(|e| e.service == "hap.frontends.web.errors_con"));
        let app = events(&ctx, row(&rows, "backends.app"));
        assert_eq!(app[0].service, "hap.backends.app.active");
        assert_eq!(app[0].aggregation, None);
    }

    #[test]
    fn what_is_not_the_csv_is_refused() {
        let denied = String::from_utf8(fixture("haproxy", "unauthorized-2.6.12.http")).unwrap();
        let (_, body) = denied.split_once("\r\n\r\n").unwrap();
        assert!(parse_stats(body)
            .unwrap_err()
            .starts_with("not HAProxy's CSV statistics: \"<html>"));
        assert!(parse_stats("# a,b\n").is_err());
        let bad = "# pxname,svname,scur\nweb,FRONTEND,lots\n";
        assert_eq!(
            parse_stats(bad).unwrap_err(),
            "scur of web/FRONTEND is \"lots\", not a count"
        );
        assert_eq!(fields(r#"a,"b,c",,"d""e","#), ["a", "b,c", "", "d\"e"]);
    }
}
