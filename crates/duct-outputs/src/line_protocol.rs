//! InfluxDB's line protocol, as the InfluxDB outputs write it: one point per
//! event, `measurement,tag=v,… value=…[,description="…"] timestamp`.
//!
//! The shape is Duct's: the measurement is the service; the tags are the
//! host, the state, every attribute, and every event tag written `k=v`;
//! the field `value` is the metric, always a float (a field keeps the type
//! it was first written with, so an integer sample after a float one would
//! be refused); `description`, when there is one, a string field.
//!
//! Escaping follows the protocol: commas and spaces in measurements; commas,
//! equals signs and spaces in tag keys, tag values and field keys; double
//! quotes and backslashes in string fields. The protocol has no way to
//! carry a line break outside a string field, so line breaks (and other
//! control characters) there become spaces, and a trailing backslash (which
//! would escape the separator after it, and which InfluxDB cannot store in
//! a tag) is left out. Tags with an empty key or value are left out
//! (InfluxDB refuses them); events without a finite metric, or with an
//! empty service, have no point.

use std::fmt::Write as _;

use duct_core::Event;

/// Timestamp precision, in the names each API takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanosecond,
    Microsecond,
    Millisecond,
    Second,
}

impl Precision {
    /// Reads Duct's long names (`nanosecond`) and the APIs' short ones (`ns`, `n`).
    pub fn parse(name: &str) -> Option<Precision> {
        Some(match name {
            "nanosecond" | "ns" | "n" => Precision::Nanosecond,
            "microsecond" | "us" | "u" => Precision::Microsecond,
            "millisecond" | "ms" => Precision::Millisecond,
            "second" | "s" => Precision::Second,
            _ => return None,
        })
    }

    /// Units of this precision in a second.
    fn per_second(self) -> f64 {
        match self {
            Precision::Nanosecond => 1e9,
            Precision::Microsecond => 1e6,
            Precision::Millisecond => 1e3,
            Precision::Second => 1.0,
        }
    }

    /// The query-string value for InfluxDB 3's `/api/v3/write_lp`.
    pub fn v3_name(self) -> &'static str {
        match self {
            Precision::Nanosecond => "nanosecond",
            Precision::Microsecond => "microsecond",
            Precision::Millisecond => "millisecond",
            Precision::Second => "second",
        }
    }

    /// The query-string value for the 1.x `/write` API.
    pub fn v1_name(self) -> &'static str {
        match self {
            Precision::Nanosecond => "n",
            Precision::Microsecond => "u",
            Precision::Millisecond => "ms",
            Precision::Second => "s",
        }
    }

    /// The query-string value for the 2.x `/api/v2/write` API.
    pub fn v2_name(self) -> &'static str {
        match self {
            Precision::Nanosecond => "ns",
            Precision::Microsecond => "us",
            Precision::Millisecond => "ms",
            Precision::Second => "s",
        }
    }
}

/// Which characters a part of a line escapes with a backslash.
#[derive(Clone, Copy)]
enum Part {
    Measurement,
    /// Tag keys, tag values and field keys.
    Key,
}

fn push_escaped(out: &mut String, text: &str, part: Part) {
    // A final backslash would escape the separator after it, and InfluxDB
    // has no way to write one (`\\\\` before a space is refused too).
    for c in text.trim_end_matches('\\').chars() {
        let c = if c.is_control() { ' ' } else { c };
        let special = match part {
            Part::Measurement => c == ',' || c == ' ',
            Part::Key => c == ',' || c == '=' || c == ' ',
        };
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

fn push_string_field(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Appends `event`'s point and a newline to `out`; returns false (and
/// appends nothing) when the event has no point.
pub fn write_point(out: &mut String, event: &Event, precision: Precision) -> bool {
    let Some(value) = event.metric.map(|m| m.as_f64()).filter(|v| v.is_finite()) else {
        return false;
    };
    if event.service.trim_end_matches('\\').is_empty() {
        return false;
    }
    let mut tags: Vec<(&str, &str)> = Vec::with_capacity(2 + event.attributes.len());
    tags.push(("host", &event.host));
    if let Some(state) = &event.state {
        tags.push(("state", state));
    }
    for (k, v) in &event.attributes {
        tags.push((k, v));
    }
    for tag in &event.tags {
        if let Some((k, v)) = tag.split_once('=') {
            tags.push((k.trim(), v.trim()));
        }
    }
    // Later entries win (event tags over attributes, as in Duct), and the
    // protocol wants tags sorted by key.
    tags.reverse();
    tags.sort_by(|a, b| a.0.cmp(b.0));
    tags.dedup_by(|later, earlier| later.0 == earlier.0);

    push_escaped(out, &event.service, Part::Measurement);
    for (k, v) in tags {
        let bare = |t: &str| t.trim_end_matches('\\').is_empty();
        if bare(k) || bare(v) {
            continue;
        }
        out.push(',');
        push_escaped(out, k, Part::Key);
        out.push('=');
        push_escaped(out, v, Part::Key);
    }
    // `{}` of a float prints no exponent and no `.0` for whole numbers;
    // without an `i` suffix InfluxDB reads either as a float.
    let _ = write!(out, " value={value}");
    if !event.description.is_empty() {
        out.push_str(",description=");
        push_string_field(out, &event.description);
    }
    let stamp = (event.time * precision.per_second()).round() as i64;
    let _ = writeln!(out, " {stamp}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(event: &Event, precision: Precision) -> String {
        let mut out = String::new();
        write_point(&mut out, event, precision);
        out
    }

    fn sample() -> Event {
        let mut e = Event::new("web1", "cpu.user");
        e.metric = Some(3.into());
        e.time = 1_700_000_000.5;
        e
    }

    #[test]
    fn a_point_has_ducts_shape() {
        let mut e = sample();
        e.state = Some("ok".into());
        e.attributes = vec![("core".into(), "0".into())];
        e.tags = vec!["dc=eu-1".into(), "plain".into()];
        e.description = "user time".into();
        assert_eq!(
            point(&e, Precision::Nanosecond),
            "cpu.user,core=0,dc=eu-1,host=web1,state=ok value=3,description=\"user time\" 1700000000500000000\n"
        );
        assert_eq!(
            point(&sample(), Precision::Second),
            "cpu.user,host=web1 value=3 1700000001\n"
        );
        assert_eq!(
            point(&sample(), Precision::Millisecond),
            "cpu.user,host=web1 value=3 1700000000500\n"
        );
    }

    #[test]
    fn text_is_escaped_as_the_protocol_requires() {
        let mut e = sample();
        e.service = "disk used,/var lib".into();
        e.host = "a=b c".into();
        e.attributes = vec![("mount point".into(), "/srv,x".into())];
        e.description = "say \"hi\" \\ bye".into();
        assert_eq!(
            point(&e, Precision::Second),
            "disk\\ used\\,/var\\ lib,host=a\\=b\\ c,mount\\ point=/srv\\,x value=3,description=\"say \\\"hi\\\" \\\\ bye\" 1700000001\n"
        );
    }

    #[test]
    fn line_breaks_cannot_start_a_new_point() {
        let mut e = sample();
        e.service = "a\nb".into();
        e.attributes = vec![("k".into(), "x\r\ny".into())];
        let line = point(&e, Precision::Second);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.starts_with("a\\ b,host=web1,k=x\\ \\ y "), "{line:?}");
    }

    #[test]
    fn later_tags_win_and_empty_ones_are_left_out() {
        let mut e = sample();
        e.attributes = vec![("env".into(), "a".into()), ("empty".into(), String::new())];
        e.tags = vec!["env=b".into(), "=x".into()];
        assert_eq!(
            point(&e, Precision::Second),
            "cpu.user,env=b,host=web1 value=3 1700000001\n"
        );
    }

    #[test]
    fn events_without_a_finite_metric_have_no_point() {
        let mut out = String::new();
        let mut e = sample();
        e.metric = None;
        assert!(!write_point(&mut out, &e, Precision::Second));
        e.metric = Some(f64::NAN.into());
        assert!(!write_point(&mut out, &e, Precision::Second));
        e.metric = Some(1.into());
        e.service.clear();
        assert!(!write_point(&mut out, &e, Precision::Second));
        assert!(out.is_empty());
    }

    #[test]
    fn a_trailing_backslash_is_left_out() {
        let mut e = sample();
        e.host = "dom\\".into();
        assert_eq!(point(&e, Precision::Second), "cpu.user,host=dom value=3 1700000001\n");
    }

    #[test]
    fn precision_names() {
        for (name, p) in [
            ("nanosecond", Precision::Nanosecond),
            ("ns", Precision::Nanosecond),
            ("u", Precision::Microsecond),
            ("ms", Precision::Millisecond),
            ("second", Precision::Second),
        ] {
            assert_eq!(Precision::parse(name), Some(p));
        }
        assert_eq!(Precision::parse("hours"), None);
        assert_eq!(Precision::Microsecond.v1_name(), "u");
        assert_eq!(Precision::Microsecond.v2_name(), "us");
        assert_eq!(Precision::Microsecond.v3_name(), "microsecond");
    }
}
