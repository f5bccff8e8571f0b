//! `duct.sources.power.nut.UPS`: a UPS's state and figures from NUT's
//! upsd (`LIST VAR ups` over TCP, port 3493), as `upsc` shows them.
//!
//! Events: `(service).ups.status` with no metric, its state from the
//! status flags (`OB` on battery or `LB` low battery: critical; `ALARM` or
//! `OVER` overload: warning; no status: unknown; else ok) and the flags in
//! the description; then each of Duct's figures the UPS reports
//! (`battery.charge`, `battery.runtime`, `input.voltage`, …) with the same
//! state, so a trigger-less dashboard sees the UPS's condition on every
//! series, as Duct sent them. Faults: `(service)` critical with no metric.

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::conn::shown;
use super::{budget, host_option, port_option, Conn, Faults, ServiceError, MAX_REPLY_BYTES};

/// Duct's default `timeout`, in seconds.
const DEFAULT_TIMEOUT: f64 = 10.0;

/// The variables Duct reported, with its descriptions.
const FIGURES: &[(&str, &str)] = &[
    ("battery.charge", "Battery charge percent"),
    ("battery.charge.low", "Battery low charge threshold"),
    ("battery.runtime", "Battery runtime remaining (s)"),
    ("battery.voltage", "Battery voltage"),
    ("input.voltage", "Input voltage"),
    ("input.frequency", "Input frequency"),
    ("output.voltage", "Output voltage"),
    ("output.frequency", "Output frequency"),
    ("ups.load", "UPS load percent"),
    ("ups.temperature", "UPS temperature"),
    ("ups.realpower", "Real power (W)"),
    ("ups.power", "Apparent power (VA)"),
];

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The UPS's name in upsd's `ups.conf`.
    ups: String,
    host: String,
    port: i64,
    /// Seconds the whole conversation may take (Duct's option, 10).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ups: "ups".into(),
            host: "localhost".into(),
            port: 3493,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.power.nut.UPS",
        "A UPS from NUT's upsd (`LIST VAR`): `ups` (ups), `host` (localhost), `port` (3493), `timeout` (10)",
        &[
            "(service).ups.status: no metric; critical on battery (OB) or low battery (LB), warning on ALARM or \
             OVER, unknown without a status, else ok",
            "(service).battery.charge, .battery.charge.low, .battery.runtime, .battery.voltage, .input.voltage, \
             .input.frequency, .output.voltage, .output.frequency, .ups.load, .ups.temperature, .ups.realpower, \
             .ups.power: as upsd reports them, with the status's state",
            "(service): critical with no metric when upsd fails",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    if o.ups.is_empty() || !o.ups.chars().all(|c| c.is_ascii_graphic()) {
        return Err(args.invalid("ups", "must be a UPS name as in upsd's ups.conf"));
    }
    Ok(Box::new(Ups {
        ups: o.ups,
        host: host_option(args, o.host)?,
        port: port_option(args, o.port)?,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct Ups {
    ups: String,
    host: String,
    port: u16,
    budget: Duration,
    faults: Faults,
}

service_source!(Ups);

impl Ups {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let vars = match self.list_vars().await {
            Ok(vars) => vars,
            Err(e) => {
                let text = format!("{}@{}:{} - {e}", self.ups, self.host, self.port);
                self.faults.failed(ctx, &text);
                return vec![ctx.create_event("critical", text, None::<i64>)];
            }
        };
        self.faults.worked(ctx);
        let get = |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let status = get("ups.status").unwrap_or("");
        let state = status_state(status);
        let shown_status = if status.is_empty() { "unknown" } else { status };
        let mut events =
            vec![ctx.create_event_prefixed("ups.status", state, format!("UPS status: {shown_status}"), None::<i64>)];
        for (key, description) in FIGURES {
            let Some(value) = get(key).and_then(|v| v.trim().parse::<f64>().ok()) else {
                continue;
            };
            events.push(ctx.create_event_prefixed(key, state, *description, value));
        }
        events
    }

    async fn list_vars(&self) -> Result<Vec<(String, String)>, ServiceError> {
        let mut conn = Conn::open(&self.host, self.port, self.budget, MAX_REPLY_BYTES, None).await?;
        let request = format!("LIST VAR {}\n", self.ups);
        conn.send(request.as_bytes(), "`LIST VAR`").await?;
        let what = format!("the reply to `LIST VAR {}`", self.ups);
        let first = conn.line(&what).await?;
        if let Some(error) = first.strip_prefix("ERR ") {
            return Err(ServiceError::Refused(format!("ERR {error}")));
        }
        if first != format!("BEGIN LIST VAR {}", self.ups) {
            return Err(ServiceError::Garbage {
                doing: format!("to `LIST VAR {}`", self.ups),
                detail: format!("{} is not the start of a list", shown(&first)),
            });
        }
        // Anything but a VAR line ends the list: the END line, or
        // something that is not upsd, reported at once.
        let (lines, end) = conn.lines_until(&what, |l| !l.starts_with("VAR ")).await?;
        if !end.starts_with("END LIST VAR") {
            return Err(ServiceError::Garbage {
                doing: format!("to `LIST VAR {}`", self.ups),
                detail: format!("{} is not a VAR line", shown(&end)),
            });
        }
        parse_vars(&self.ups, &lines).map_err(|detail| ServiceError::Garbage {
            doing: format!("to `LIST VAR {}`", self.ups),
            detail,
        })
    }
}

/// Duct's state for a status (`OL`, `OB LB`, `OL CHRG ALARM`): by flag.
pub(crate) fn status_state(status: &str) -> &'static str {
    let flags: Vec<&str> = status.split_ascii_whitespace().collect();
    if flags.is_empty() {
        "unknown"
    } else if flags.iter().any(|f| *f == "LB" || *f == "OB") {
        "critical"
    } else if flags.iter().any(|f| *f == "ALARM" || *f == "OVER") {
        "warning"
    } else {
        "ok"
    }
}

/// The variables of `VAR <ups> <name> "<value>"` lines, with the value's
/// `\"` and `\\` escapes undone.
pub(crate) fn parse_vars(ups: &str, lines: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let bad = || format!("{} is not `VAR {ups} name \"value\"`", shown(line));
        let rest = line
            .strip_prefix("VAR ")
            .and_then(|r| r.strip_prefix(ups))
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(bad)?;
        let (name, quoted) = rest.split_once(' ').ok_or_else(bad)?;
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .ok_or_else(bad)?;
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                c => value.push(c),
            }
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    fn lines(name: &str) -> Vec<String> {
        String::from_utf8(fixture("nut", name))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_list_from_upsd_2_8_with_dummy_ups_parses() {
        let all = lines("nut-list-var.txt");
        assert_eq!(all[0], "BEGIN LIST VAR dummy");
        assert_eq!(all.last().unwrap(), "END LIST VAR dummy");
        let vars = parse_vars("dummy", &all[1..all.len() - 1]).unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(vars.len(), 25);
        assert_eq!(get("ups.status"), Some("OL CHRG"));
        assert_eq!(get("battery.charge"), Some("87"));
        assert_eq!(get("input.voltage"), Some("231.5"));
        assert_eq!(get("device.mfr"), Some("Duct Test"));
        assert_eq!(get("driver.parameter.port"), Some("/tmp/nut/ups.dev"));
        for (key, _) in FIGURES {
            assert!(get(key).is_some(), "the replayed UPS has {key}");
        }
    }

    #[test]
    fn upsd_errors_and_odd_lines() {
        assert_eq!(lines("nut-unknown-ups.txt"), ["ERR UNKNOWN-UPS"]);
        assert_eq!(lines("nut-driver-gone.txt"), ["ERR DRIVER-NOT-CONNECTED"]);
        assert_eq!(lines("nut-bogus.txt"), ["ERR UNKNOWN-COMMAND"]);
        let escaped = parse_vars("u", &[r#"VAR u ups.mfr "say \"hi\" \\ o""#.to_string()]).unwrap();
        assert_eq!(escaped[0].1, r#"say "hi" \ o"#);
        assert!(
            parse_vars("u", &["VAR other x \"1\"".into()]).is_err(),
            "another UPS's line"
        );
        assert!(parse_vars("u", &["VAR u x 1".into()]).is_err(), "unquoted");
    }

    #[test]
    fn status_flags_give_ducts_states() {
        assert_eq!(status_state("OL"), "ok");
        assert_eq!(status_state("OL CHRG"), "ok");
        assert_eq!(status_state("OB DISCHRG"), "critical");
        assert_eq!(status_state("OB LB"), "critical");
        assert_eq!(status_state("OL OVER"), "warning");
        assert_eq!(status_state("OL ALARM"), "warning");
        assert_eq!(status_state("OB ALARM"), "critical");
        assert_eq!(status_state(""), "unknown");
    }
}
