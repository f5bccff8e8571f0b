//! What an exec plugin prints, turned into events (docs/writing-sources.md,
//! "Exec plugins"). Pure functions: the output, the exit code and a
//! template event in; events and the problems worth logging out.
//!
//! Three forms are understood:
//! - JSON lines: one object per line with any of the event's fields;
//!   missing ones come from the template (the source's configuration);
//! - a single number: one event with that metric;
//! - Nagios plugin output: `STATUS - text | perfdata`, the state from the
//!   exit code (0 ok, 1 warning, 2 critical, 3 unknown), each perfdata
//!   item an event `service.label`.

use duct_core::{Aggregation, Event, EventKind, Metric};
use serde_json::{Map, Value};

/// Events read from an output, and the lines that could not be read.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub problems: Vec<String>,
}

/// Nagios' exit codes.
pub fn state_of_exit(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "ok",
        Some(1) => "warning",
        Some(2) => "critical",
        _ => "unknown",
    }
}

/// Reads a whole output of a polled plugin.
pub fn parse_output(stdout: &str, code: Option<i32>, template: &Event) -> Result<Parsed, String> {
    let text = stdout.trim();
    if text.is_empty() {
        if code == Some(0) {
            return Ok(Parsed::default());
        }
        let mut ev = template.clone();
        ev.state = Some(state_of_exit(code).into());
        ev.description = match code {
            Some(c) => format!("exited with status {c} and printed nothing"),
            None => "killed by a signal before printing anything".into(),
        };
        return Ok(Parsed {
            events: vec![ev],
            problems: Vec::new(),
        });
    }
    if !is_text(text) {
        return Err("the output is not text (binary data?)".into());
    }
    if text.starts_with('{') {
        let mut parsed = Parsed::default();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match parse_json_event(line, template) {
                Ok(ev) => parsed.events.push(ev),
                Err(e) => parsed.problems.push(format!("line {}: {e}", i + 1)),
            }
        }
        if parsed.events.is_empty() {
            return Err(format!(
                "no event could be read: {}",
                parsed.problems.first().map_or("", String::as_str)
            ));
        }
        return Ok(parsed);
    }
    if let Some(metric) = parse_number(text) {
        let mut ev = template.clone();
        ev.metric = Some(metric);
        ev.state = Some(state_of_exit(code).into());
        return Ok(Parsed {
            events: vec![ev],
            problems: Vec::new(),
        });
    }
    Ok(Parsed {
        events: parse_nagios(text, code, template),
        problems: Vec::new(),
    })
}

/// Reads one line of a streaming plugin: JSON or a number.
pub fn parse_line(line: &str, template: &Event) -> Result<Event, String> {
    let line = line.trim();
    if line.starts_with('{') {
        return parse_json_event(line, template);
    }
    match parse_number(line) {
        Some(metric) => {
            let mut ev = template.clone();
            ev.metric = Some(metric);
            Ok(ev)
        }
        None if is_text(line) => Err(format!("neither JSON nor a number: {}", shorten(line))),
        None => Err("not text (binary data?)".into()),
    }
}

/// Text a plugin may legitimately print: no control characters but tabs and
/// line ends, no bytes that were not UTF-8.
fn is_text(s: &str) -> bool {
    !s.chars()
        .any(|c| c == '\u{fffd}' || (c.is_control() && !matches!(c, '\n' | '\r' | '\t')))
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `42` is an integer metric, `4.2` a float one.
pub fn parse_number(s: &str) -> Option<Metric> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Metric::Int(i));
    }
    let f: f64 = s.parse().ok()?;
    // Rust also reads "inf" and "nan": a plugin printing them printed words.
    (f.is_finite() && s.bytes().any(|b| b.is_ascii_digit())).then_some(Metric::Float(f))
}

/// One JSON object as an event over the template.
pub fn parse_json_event(line: &str, template: &Event) -> Result<Event, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let mut ev = template.clone();
    apply_fields(&mut ev, &obj)?;
    Ok(ev)
}

fn apply_fields(ev: &mut Event, obj: &Map<String, Value>) -> Result<(), String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!("`{key}` must be a string, not {other}")),
        }
    };
    if let Some(host) = text("host")? {
        ev.host = host;
    }
    if let Some(service) = text("service")? {
        ev.service = service;
    }
    if let Some(prefix) = text("prefix")? {
        ev.service.push('.');
        ev.service.push_str(&prefix);
    }
    if obj.contains_key("state") {
        ev.state = text("state")?;
        if ev.state.as_ref().is_some_and(|s| s.len() > 255) {
            return Err("`state` is longer than 255 bytes".into());
        }
    }
    if let Some(description) = text("description")? {
        ev.description = description;
    }
    match obj.get("metric") {
        None => {}
        Some(Value::Null) => ev.metric = None,
        Some(Value::Number(n)) => {
            ev.metric = Some(if let Some(i) = n.as_i64() {
                Metric::Int(i)
            } else if let Some(u) = n.as_u64() {
                Metric::from(u)
            } else {
                Metric::Float(n.as_f64().ok_or("`metric` is out of range")?)
            })
        }
        Some(other) => return Err(format!("`metric` must be a number or null, not {other}")),
    }
    match obj.get("time") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => ev.time = n.as_f64().ok_or("`time` is out of range")?,
        Some(other) => return Err(format!("`time` must be seconds since the epoch, not {other}")),
    }
    match obj.get("ttl") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => ev.ttl = n.as_f64().ok_or("`ttl` is out of range")? as f32,
        Some(other) => return Err(format!("`ttl` must be a number of seconds, not {other}")),
    }
    match obj.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            ev.tags = items
                .iter()
                .map(|t| t.as_str().map(String::from).ok_or("`tags` must be strings"))
                .collect::<Result<_, _>>()?
        }
        Some(Value::String(s)) => {
            ev.tags = s
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()
        }
        Some(other) => return Err(format!("`tags` must be a list of strings, not {other}")),
    }
    match obj.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                match ev.attributes.iter_mut().find(|(have, _)| have == k) {
                    Some(slot) => slot.1 = v,
                    None => ev.attributes.push((k.clone(), v)),
                }
            }
        }
        Some(other) => return Err(format!("`attributes` must be an object, not {other}")),
    }
    if let Some(kind) = text("kind")? {
        ev.kind = match kind.as_str() {
            "metric" => EventKind::Metric,
            "log" => EventKind::Log,
            other => return Err(format!("`kind` must be `metric` or `log`, not `{other}`")),
        };
    }
    if let Some(agg) = text("aggregation")? {
        ev.aggregation = Some(
            Aggregation::from_name(&agg)
                .ok_or_else(|| format!("unknown aggregation `{agg}` (Counter, Counter32, Counter64)"))?,
        );
    }
    Ok(())
}

/// Nagios plugin output: the first line's text is the status event's
/// description; perfdata (after `|`, on the first line and on any later
/// line) gives one event per item.
pub fn parse_nagios(text: &str, code: Option<i32>, template: &Event) -> Vec<Event> {
    let state = state_of_exit(code);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let (status, mut perf) = match first.split_once('|') {
        Some((s, p)) => (s.trim(), p.to_string()),
        None => (first.trim(), String::new()),
    };
    for line in lines {
        if let Some((_, p)) = line.split_once('|') {
            perf.push(' ');
            perf.push_str(p);
        }
    }
    let mut status_event = template.clone();
    status_event.state = Some(state.into());
    status_event.description = truncate(status, MAX_STATUS_TEXT);
    status_event.metric = None;
    let mut events = vec![status_event];
    for item in perf_items(&perf) {
        let mut ev = template.clone();
        ev.service = format!("{}.{}", template.service, item.label);
        ev.state = Some(state.into());
        ev.description = format!("{}={}{}", item.label, item.value, item.unit);
        ev.metric = Some(Metric::Float(item.value));
        if item.unit == "c" {
            ev.aggregation = Some(Aggregation::Counter);
        }
        events.push(ev);
    }
    events
}

/// Nagios itself keeps 4 KiB of a plugin's output line; a runaway plugin
/// must not turn into megabyte-long descriptions.
const MAX_STATUS_TEXT: usize = 4096;

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One `label=value[UOM];warn;crit;min;max` item.
#[derive(Debug, PartialEq)]
struct PerfItem {
    label: String,
    value: f64,
    unit: String,
}

/// Perfdata items; labels may be quoted (`'free space'=3GB`). Items whose
/// value is missing or `U` (undetermined) are skipped.
fn perf_items(perf: &str) -> Vec<PerfItem> {
    let mut items = Vec::new();
    let mut rest = perf.trim_start();
    while !rest.is_empty() {
        let (label, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            match quoted.find("'=") {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 2..]),
                None => break,
            }
        } else {
            match rest.find('=') {
                Some(eq) if !rest[..eq].contains(char::is_whitespace) => (rest[..eq].to_string(), &rest[eq + 1..]),
                // A token with no `=` is not perfdata: skip it.
                _ => {
                    rest = rest.split_once(char::is_whitespace).map_or("", |(_, r)| r).trim_start();
                    continue;
                }
            }
        };
        let (data, next) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        rest = next.trim_start();
        let value_text = data.split(';').next().unwrap_or_default();
        let split = value_text
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(value_text.len());
        let (number, unit) = value_text.split_at(split);
        if let Ok(value) = number.parse::<f64>() {
            if value.is_finite() && !label.is_empty() {
                items.push(PerfItem {
                    label,
                    value,
                    unit: unit.to_string(),
                });
            }
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Event {
        let mut ev = Event::new("host-a", "plugin");
        ev.state = Some("ok".into());
        ev.ttl = 30.0;
        ev.tags = vec!["t".into()];
        ev.attributes = vec![("rack".into(), "1".into())];
        ev
    }

    #[test]
    fn a_bare_json_metric_takes_everything_else_from_the_config() {
        let p = parse_output("{\"metric\": 3}\n", Some(0), &template()).unwrap();
        assert_eq!(p.events.len(), 1);
        let ev = &p.events[0];
        assert_eq!(ev.metric, Some(Metric::Int(3)));
        assert_eq!((ev.host.as_str(), ev.service.as_str()), ("host-a", "plugin"));
        assert_eq!(ev.state.as_deref(), Some("ok"));
        assert_eq!(ev.ttl, 30.0);
        assert_eq!(ev.tags, vec!["t"]);
    }

    #[test]
    fn json_lines_override_fields() {
        let out = r#"{"service": "disk.sda", "state": "critical", "metric": 0.5, "description": "d", "ttl": 5, "tags": ["x"], "attributes": {"rack": "2", "dc": "ams"}, "time": 1700000000.5}
{"prefix": "rx", "metric": 10, "aggregation": "Counter64"}
{"kind": "log", "description": "a line of log", "metric": null}"#;
        let p = parse_output(out, Some(0), &template()).unwrap();
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let a = &p.events[0];
        assert_eq!(a.service, "disk.sda");
        assert_eq!(a.state.as_deref(), Some("critical"));
        assert_eq!(a.metric, Some(Metric::Float(0.5)));
        assert_eq!(a.ttl, 5.0);
        assert_eq!(a.time, 1700000000.5);
        assert_eq!(a.tags, vec!["x"]);
        assert_eq!(
            a.attributes,
            vec![("rack".into(), "2".into()), ("dc".into(), "ams".into())]
        );
        let b = &p.events[1];
        assert_eq!(b.service, "plugin.rx");
        assert_eq!(b.aggregation, Some(Aggregation::Counter64));
        assert_eq!(p.events[2].kind, EventKind::Log);
        assert_eq!(p.events[2].metric, None);
    }

    #[test]
    fn bad_json_lines_are_reported_and_skipped() {
        let out = "{\"metric\": 1}\n{\"metric\": \"high\"}\n{broken\n{\"metric\": 2}\n";
        let p = parse_output(out, Some(0), &template()).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.problems.len(), 2);
        assert!(
            p.problems[0].starts_with("line 2: `metric` must be a number"),
            "{:?}",
            p.problems
        );
        assert!(p.problems[1].starts_with("line 3: not JSON"), "{:?}", p.problems);
        assert!(parse_output("{nope\n{nope\n", Some(0), &template()).is_err());
    }

    #[test]
    fn a_single_number_is_a_metric() {
        let p = parse_output("  42\n", Some(0), &template()).unwrap();
        assert_eq!(p.events[0].metric, Some(Metric::Int(42)));
        let p = parse_output("0.25", Some(1), &template()).unwrap();
        assert_eq!(p.events[0].metric, Some(Metric::Float(0.25)));
        assert_eq!(p.events[0].state.as_deref(), Some("warning"));
        assert_eq!(parse_number("nan"), None);
        assert_eq!(parse_number("inf"), None);
    }

    #[test]
    fn nagios_output_maps_exit_codes_and_perfdata() {
        let out = "DISK WARNING - free space: / 3326 MB (56%) | /=2643MB;5948;5958;0;5968 'free space'=56%;;;0;100 time=0.5s\nmore detail\n| inodes=1200c;;; load=U";
        let p = parse_output(out, Some(1), &template()).unwrap();
        let services: Vec<&str> = p.events.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(
            services,
            [
                "plugin",
                "plugin./",
                "plugin.free space",
                "plugin.time",
                "plugin.inodes"
            ]
        );
        let status = &p.events[0];
        assert_eq!(status.state.as_deref(), Some("warning"));
        assert_eq!(status.description, "DISK WARNING - free space: / 3326 MB (56%)");
        assert_eq!(status.metric, None);
        assert_eq!(p.events[1].metric, Some(Metric::Float(2643.0)));
        assert_eq!(p.events[1].description, "/=2643MB");
        assert_eq!(p.events[2].metric, Some(Metric::Float(56.0)));
        assert_eq!(p.events[3].metric, Some(Metric::Float(0.5)));
        assert_eq!(p.events[4].aggregation, Some(Aggregation::Counter), "`c` is a counter");
        for (code, state) in [
            (Some(0), "ok"),
            (Some(2), "critical"),
            (Some(3), "unknown"),
            (Some(7), "unknown"),
            (None, "unknown"),
        ] {
            let p = parse_output("CHECK - text", code, &template()).unwrap();
            assert_eq!(p.events[0].state.as_deref(), Some(state), "{code:?}");
        }
    }

    #[test]
    fn a_runaway_status_line_is_cut() {
        let long = "x".repeat(100_000);
        let p = parse_output(&long, Some(0), &template()).unwrap();
        assert_eq!(p.events[0].description.len(), MAX_STATUS_TEXT + "…".len());
    }

    #[test]
    fn silence_and_garbage() {
        assert_eq!(parse_output("", Some(0), &template()).unwrap(), Parsed::default());
        let p = parse_output("\n", Some(2), &template()).unwrap();
        assert_eq!(p.events[0].state.as_deref(), Some("critical"));
        assert!(p.events[0].description.contains("status 2"));
        assert!(parse_output("\u{0}\u{1}\u{2}binary\u{fffd}", Some(0), &template()).is_err());
    }

    #[test]
    fn stream_lines_are_json_or_numbers() {
        assert_eq!(parse_line("7", &template()).unwrap().metric, Some(Metric::Int(7)));
        assert_eq!(
            parse_line("{\"metric\": 1.5, \"prefix\": \"x\"}", &template())
                .unwrap()
                .service,
            "plugin.x"
        );
        assert!(parse_line("OK - fine", &template())
            .unwrap_err()
            .contains("neither JSON nor a number"));
        assert!(parse_line("\u{1}\u{2}", &template()).unwrap_err().contains("not text"));
    }
}
