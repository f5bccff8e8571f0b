//! The event: one observation, shaped like a Riemann event.
//!
//! Sources create events, the router rewrites their metric (aggregation) and
//! state (triggers), outputs encode them. The JSON form written here is the one
//! the Logger output, `ductd once`, exec plugins and NATS share.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// An event's value: integers stay integers on the wire (Riemann
/// `metric_sint64`), floats go as `metric_d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    Int(i64),
    Float(f64),
}

impl Metric {
    pub fn as_f64(self) -> f64 {
        match self {
            Metric::Int(v) => v as f64,
            Metric::Float(v) => v,
        }
    }
}

impl From<i64> for Metric {
    fn from(v: i64) -> Self {
        Metric::Int(v)
    }
}

impl From<i32> for Metric {
    fn from(v: i32) -> Self {
        Metric::Int(v.into())
    }
}

impl From<u32> for Metric {
    fn from(v: u32) -> Self {
        Metric::Int(v.into())
    }
}

/// Counters beyond `i64::MAX` keep their bit pattern, which is what the
/// `Counter64` aggregator reads back as an unsigned value.
impl From<u64> for Metric {
    fn from(v: u64) -> Self {
        Metric::Int(v as i64)
    }
}

impl From<usize> for Metric {
    fn from(v: usize) -> Self {
        Metric::from(v as u64)
    }
}

impl From<f64> for Metric {
    fn from(v: f64) -> Self {
        Metric::Float(v)
    }
}

impl From<f32> for Metric {
    fn from(v: f32) -> Self {
        Metric::Float(v.into())
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Int(v) => write!(f, "{v}"),
            Metric::Float(v) => write!(f, "{v}"),
        }
    }
}

/// Metric events go everywhere; log events (from log sources) skip
/// metric-only outputs such as Riemann.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventKind {
    #[default]
    Metric,
    Log,
}

/// How the router turns successive samples of a counter into a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Rate of an increasing counter; a sample that went backwards is dropped.
    Counter,
    /// Rate of a counter that wraps at 2^32.
    Counter32,
    /// Rate of a counter that wraps at 2^64.
    Counter64,
}

impl Aggregation {
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Counter => "Counter",
            Aggregation::Counter32 => "Counter32",
            Aggregation::Counter64 => "Counter64",
        }
    }

    /// Parses Duct's aggregator names (`duct.aggregators.Counter64` or the
    /// bare class name).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.rsplit('.').next()? {
            "Counter" => Some(Aggregation::Counter),
            "Counter32" => Some(Aggregation::Counter32),
            "Counter64" => Some(Aggregation::Counter64),
            _ => None,
        }
    }
}

/// One observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub host: String,
    pub service: String,
    /// `ok`, `warning`, `critical` or any short string; absent for events
    /// that carry no judgement.
    pub state: Option<String>,
    /// Seconds since the epoch, sub-second precision.
    pub time: f64,
    pub description: String,
    pub metric: Option<Metric>,
    /// Seconds the event stays valid.
    pub ttl: f32,
    pub tags: Vec<String>,
    pub attributes: Vec<(String, String)>,
    pub kind: EventKind,
    /// Set by sources that report raw counters; consumed by the router, never
    /// sent.
    pub aggregation: Option<Aggregation>,
}

impl Event {
    /// A metric event stamped now, with no state, description or metric.
    pub fn new(host: impl Into<String>, service: impl Into<String>) -> Self {
        Event {
            host: host.into(),
            service: service.into(),
            state: None,
            time: now(),
            description: String::new(),
            metric: None,
            ttl: 60.0,
            tags: Vec::new(),
            attributes: Vec::new(),
            kind: EventKind::Metric,
            aggregation: None,
        }
    }

    pub fn is_metric(&self) -> bool {
        self.kind == EventKind::Metric
    }

    /// The event as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(192);
        self.write_json(&mut out);
        // serde_json only writes valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the event's JSON form to `out`, reusing its allocation.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Serialising into a Vec cannot fail: every field is a plain value.
        let _ = serde_json::to_writer(&mut *out, self);
    }

    /// Whole seconds and microseconds since the epoch, as Riemann's `time`
    /// and `time_micros` want them.
    pub fn time_parts(&self) -> (i64, i64) {
        let micros = (self.time * 1_000_000.0).round() as i64;
        (micros.div_euclid(1_000_000), micros)
    }
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("host", &self.host)?;
        map.serialize_entry("service", &self.service)?;
        if let Some(state) = &self.state {
            map.serialize_entry("state", state)?;
        }
        map.serialize_entry("time", &self.time)?;
        map.serialize_entry("description", &self.description)?;
        match self.metric {
            Some(Metric::Int(v)) => map.serialize_entry("metric", &v)?,
            Some(Metric::Float(v)) => map.serialize_entry("metric", &Float(v))?,
            None => map.serialize_entry("metric", &())?,
        }
        map.serialize_entry("ttl", &Float(self.ttl.into()))?;
        if !self.tags.is_empty() {
            map.serialize_entry("tags", &self.tags)?;
        }
        if !self.attributes.is_empty() {
            map.serialize_entry("attributes", &Attributes(&self.attributes))?;
        }
        if self.kind == EventKind::Log {
            map.serialize_entry("kind", "log")?;
        }
        map.end()
    }
}

/// A float as JSON, which has no NaN or infinity: those are written as the
/// strings `"NaN"`, `"Infinity"` and `"-Infinity"` (the names JavaScript
/// and Python give them), so that they stay apart from `null`, no metric.
struct Float(f64);

impl Serialize for Float {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_finite() => serializer.serialize_f64(v),
            v if v.is_nan() => serializer.serialize_str("NaN"),
            v if v > 0.0 => serializer.serialize_str("Infinity"),
            _ => serializer.serialize_str("-Infinity"),
        }
    }
}

/// Attributes as a JSON object. A key given more than once (a Riemann
/// client may send that) is written once, with its last value, where it
/// last appears: JSON readers disagree on duplicate keys.
struct Attributes<'a>(&'a [(String, String)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pairs = self.0;
        // Few attributes: compare directly; many (a hostile client): index.
        let last: Option<std::collections::HashMap<&str, usize>> =
            (pairs.len() > 16).then(|| pairs.iter().enumerate().map(|(i, (k, _))| (k.as_str(), i)).collect());
        let is_last = |i: usize, k: &str| match &last {
            Some(index) => index.get(k) == Some(&i),
            None => !pairs[i + 1..].iter().any(|(later, _)| later == k),
        };
        let mut map = serializer.serialize_map(None)?;
        for (i, (k, v)) in pairs.iter().enumerate() {
            if is_last(i, k) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut ev = Event::new("h", "cpu");
        ev.state = Some("ok".into());
        ev.time = 1732500000.25;
        ev.description = "CPU 12%".into();
        ev.metric = Some(Metric::Float(0.12));
        ev.tags = vec!["a".into()];
        ev.attributes = vec![("k".into(), "v".into())];
        ev
    }

    #[test]
    fn json_form_matches_the_spec() {
        assert_eq!(
            sample().to_json(),
            r#"{"host":"h","service":"cpu","state":"ok","time":1732500000.25,"description":"CPU 12%","metric":0.12,"ttl":60.0,"tags":["a"],"attributes":{"k":"v"}}"#
        );
    }

    #[test]
    fn json_omits_empty_tags_and_writes_null_metrics() {
        let mut ev = sample();
        ev.tags.clear();
        ev.attributes.clear();
        ev.state = None;
        ev.metric = None;
        assert_eq!(
            ev.to_json(),
            r#"{"host":"h","service":"cpu","time":1732500000.25,"description":"CPU 12%","metric":null,"ttl":60.0}"#
        );
        ev.metric = Some(Metric::Float(f64::NAN));
        assert!(ev.to_json().contains(r#""metric":"NaN""#), "NaN is not null");
        ev.metric = Some(Metric::Float(f64::INFINITY));
        assert!(ev.to_json().contains(r#""metric":"Infinity""#));
        ev.metric = Some(Metric::Float(f64::NEG_INFINITY));
        assert!(ev.to_json().contains(r#""metric":"-Infinity""#));
        ev.ttl = f32::INFINITY;
        assert!(ev.to_json().contains(r#""ttl":"Infinity""#));
        ev.metric = Some(Metric::Int(-3));
        assert!(ev.to_json().contains(r#""metric":-3"#));
        ev.kind = EventKind::Log;
        assert!(ev.to_json().ends_with(r#""kind":"log"}"#));
    }

    #[test]
    fn a_repeated_attribute_key_is_written_once_with_its_last_value() {
        let mut ev = sample();
        ev.attributes = vec![
            ("dc".into(), "west".into()),
            ("rack".into(), "1".into()),
            ("dc".into(), "east".into()),
        ];
        assert!(
            ev.to_json().ends_with(r#""attributes":{"rack":"1","dc":"east"}}"#),
            "{}",
            ev.to_json()
        );
        // Many attributes take the indexed path; same answer.
        ev.attributes = (0..40).map(|i| (format!("k{}", i % 20), i.to_string())).collect();
        let json: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        let attributes = json["attributes"].as_object().unwrap();
        assert_eq!(attributes.len(), 20);
        assert_eq!(attributes["k3"], "23");
        assert_eq!(ev.to_json().matches(r#""k3":"#).count(), 1);
    }

    #[test]
    fn time_parts_split_seconds_and_micros() {
        let mut ev = sample();
        assert_eq!(ev.time_parts(), (1732500000, 1732500000250000));
        ev.time = -0.5;
        assert_eq!(ev.time_parts(), (-1, -500000));
    }

    #[test]
    fn aggregation_names_accept_duct_paths() {
        assert_eq!(
            Aggregation::from_name("duct.aggregators.Counter64"),
            Some(Aggregation::Counter64)
        );
        assert_eq!(Aggregation::from_name("Counter"), Some(Aggregation::Counter));
        assert_eq!(Aggregation::from_name("Gauge"), None);
    }
}
