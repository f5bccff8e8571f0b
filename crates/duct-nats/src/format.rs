//! The payloads Duct 2.2.1 puts on NATS subjects, one event per message,
//! as pure functions: [`encode`] writes them byte for byte as Duct does
//! (Python's `json.dumps` layout and float forms, cbor2's CBOR), [`decode`]
//! reads what Duct (or ductd) writes.
//!
//! - `json`: Duct's event dictionary, `{"hostname": …, "state": …,
//!   "service": …, "metric": …, "ttl": …, "tags": […], "time": …, "type":
//!   "metric", "description": …, "attributes": {…}}`. Read back, `host`
//!   (ductd's own event JSON) is taken for `hostname` as well.
//! - `senml-json` and `senml-cbor-extended`: a SenML pack (RFC 8428 names
//!   as text keys, as Duct writes them even in CBOR): a first record
//!   `{"bn": "<host>/", "bt": <time>, "n": <service>, "v": <metric>}`, then
//!   `<service>/state`, `/description` (`vs`), `/ttl` (`v`), `/tags` (`vs`,
//!   comma-joined) and one `<service>/attr/<key>` (`vs`) per attribute,
//!   each only when set. `senml-cbor` is the first record alone.
//!   Read back, records may also use RFC 8428's integer CBOR labels.
//!
//! Where ductd differs: a NaN or infinite metric is written in JSON as
//! the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (Python writes bare
//! `NaN`, which is not JSON); Duct's `float()` reads those strings back.

use std::borrow::Cow;
use std::fmt::Write as _;

use duct_core::event::{now, EventKind, Metric};
use duct_core::Event;
use serde_json::Value as Json;

use crate::cbor::{self, Value as Cbor};

/// Duct's `format` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    SenmlJson,
    SenmlCbor,
    SenmlCborExtended,
}

impl Format {
    pub const NAMES: &'static str = "json, senml-json, senml-cbor or senml-cbor-extended";

    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "json" => Format::Json,
            "senml-json" => Format::SenmlJson,
            "senml-cbor" => Format::SenmlCbor,
            "senml-cbor-extended" => Format::SenmlCborExtended,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::SenmlJson => "senml-json",
            Format::SenmlCbor => "senml-cbor",
            Format::SenmlCborExtended => "senml-cbor-extended",
        }
    }
}

/// Appends `event` encoded as `format` to `out`.
pub fn encode(format: Format, event: &Event, out: &mut Vec<u8>) {
    match format {
        Format::Json => json_event(event, out),
        Format::SenmlJson => senml_json(&pack(event, true), out),
        Format::SenmlCbor => senml_cbor(&pack(event, false), out),
        Format::SenmlCborExtended => senml_cbor(&pack(event, true), out),
    }
}

/// What a message does not say, a decoded event gets.
#[derive(Debug, Clone)]
pub struct Defaults<'a> {
    /// Host of an event without one (Duct: this machine's name).
    pub host: &'a str,
    /// TTL of an event without one (Duct: 60).
    pub ttl: f32,
}

/// Why a message is not an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not CBOR: {0}")]
    Cbor(#[from] cbor::Error),
    #[error("{0}")]
    Shape(String),
}

fn shape(message: impl Into<String>) -> DecodeError {
    DecodeError::Shape(message.into())
}

/// Reads one event from a message in `format` (the two SenML CBOR
/// formats read alike).
pub fn decode(format: Format, data: &[u8], defaults: &Defaults<'_>) -> Result<Event, DecodeError> {
    match format {
        Format::Json => json_to_event(&serde_json::from_slice(data)?, defaults),
        Format::SenmlJson => {
            let records = match serde_json::from_slice::<Json>(data)? {
                Json::Array(items) => items.iter().map(record_from_json).collect::<Result<Vec<_>, _>>()?,
                _ => return Err(shape("a SenML pack is an array of records")),
            };
            from_pack(records, defaults)
        }
        Format::SenmlCbor | Format::SenmlCborExtended => {
            let records = match cbor::decode(data)? {
                Cbor::Array(items) => items.iter().map(record_from_cbor).collect::<Result<Vec<_>, _>>()?,
                _ => return Err(shape("a SenML pack is an array of records")),
            };
            from_pack(records, defaults)
        }
    }
}

// --- writing -------------------------------------------------------------

/// A record's value as Duct writes it.
enum Value<'a> {
    /// The event's metric (an integer stays one, none is null).
    Metric(Option<Metric>),
    Float(f64),
    Text(Cow<'a, str>),
}

struct Record<'a> {
    name: String,
    value: Value<'a>,
}

/// The first record's base name and time, then the records.
struct Pack<'a> {
    base: String,
    time: f64,
    records: Vec<Record<'a>>,
}

fn pack(event: &Event, extended: bool) -> Pack<'_> {
    let service = &event.service;
    let mut records = vec![Record {
        name: service.clone(),
        value: Value::Metric(event.metric),
    }];
    if extended {
        let mut add = |sub: &str, value| {
            records.push(Record {
                name: format!("{service}/{sub}"),
                value,
            })
        };
        if let Some(state) = event.state.as_deref().filter(|s| !s.is_empty()) {
            add("state", Value::Text(state.into()));
        }
        if !event.description.is_empty() {
            add("description", Value::Text(event.description.as_str().into()));
        }
        if event.ttl != 0.0 {
            add("ttl", Value::Float(ttl_f64(event.ttl)));
        }
        if !event.tags.is_empty() {
            records.push(Record {
                name: format!("{service}/tags"),
                value: Value::Text(event.tags.join(",").into()),
            });
        }
        for (k, v) in unique_attributes(&event.attributes) {
            records.push(Record {
                name: format!("{service}/attr/{k}"),
                value: Value::Text(v.into()),
            });
        }
    }
    Pack {
        base: format!("{}/", event.host),
        time: event.time,
        records,
    }
}

/// A TTL as the decimal it was written as (60.1, not 60.09999847).
fn ttl_f64(ttl: f32) -> f64 {
    ttl.to_string().parse().unwrap_or(ttl.into())
}

/// Attributes with each key once, holding its last value where it last
/// appears (as a Python dict built from them would hold it).
fn unique_attributes(pairs: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    pairs
        .iter()
        .enumerate()
        .filter(move |(i, (k, _))| !pairs[i + 1..].iter().any(|(later, _)| later == k))
        .map(|(_, (k, v))| (k.as_str(), v.as_str()))
}

fn senml_json(pack: &Pack<'_>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, r) in pack.records.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.push(b'{');
        if i == 0 {
            out.extend_from_slice(b"\"bn\": ");
            py_str(out, &pack.base);
            out.extend_from_slice(b", \"bt\": ");
            py_float(out, pack.time);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"\"n\": ");
        py_str(out, &r.name);
        match &r.value {
            Value::Metric(m) => {
                out.extend_from_slice(b", \"v\": ");
                py_metric(out, *m);
            }
            Value::Float(v) => {
                out.extend_from_slice(b", \"v\": ");
                py_float(out, *v);
            }
            Value::Text(s) => {
                out.extend_from_slice(b", \"vs\": ");
                py_str(out, s);
            }
        }
        out.push(b'}');
    }
    out.push(b']');
}

fn senml_cbor(pack: &Pack<'_>, out: &mut Vec<u8>) {
    cbor::array(out, pack.records.len());
    for (i, r) in pack.records.iter().enumerate() {
        if i == 0 {
            cbor::map(out, 4);
            cbor::text(out, "bn");
            cbor::text(out, &pack.base);
            cbor::text(out, "bt");
            cbor::float(out, pack.time);
        } else {
            cbor::map(out, 2);
        }
        cbor::text(out, "n");
        cbor::text(out, &r.name);
        match &r.value {
            Value::Metric(m) => {
                cbor::text(out, "v");
                match m {
                    Some(Metric::Int(v)) => cbor::int(out, *v),
                    Some(Metric::Float(v)) => cbor::float(out, *v),
                    None => cbor::null(out),
                }
            }
            Value::Float(v) => {
                cbor::text(out, "v");
                cbor::float(out, *v);
            }
            Value::Text(s) => {
                cbor::text(out, "vs");
                cbor::text(out, s);
            }
        }
    }
}

fn json_event(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"hostname\": ");
    py_str(out, &event.host);
    out.extend_from_slice(b", \"state\": ");
    match &event.state {
        Some(s) => py_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b", \"service\": ");
    py_str(out, &event.service);
    out.extend_from_slice(b", \"metric\": ");
    py_metric(out, event.metric);
    out.extend_from_slice(b", \"ttl\": ");
    py_float(out, ttl_f64(event.ttl));
    out.extend_from_slice(b", \"tags\": [");
    for (i, t) in event.tags.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        py_str(out, t);
    }
    out.extend_from_slice(b"], \"time\": ");
    py_float(out, event.time);
    out.extend_from_slice(b", \"type\": ");
    py_str(out, if event.kind == EventKind::Log { "log" } else { "metric" });
    out.extend_from_slice(b", \"description\": ");
    py_str(out, &event.description);
    if !event.attributes.is_empty() {
        out.extend_from_slice(b", \"attributes\": {");
        for (i, (k, v)) in unique_attributes(&event.attributes).enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            py_str(out, k);
            out.extend_from_slice(b": ");
            py_str(out, v);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// A string as Python's `json.dumps` writes it (`ensure_ascii`).
fn py_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let mut s = String::new();
                    let _ = write!(s, "\\u{u:04x}");
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

fn py_metric(out: &mut Vec<u8>, m: Option<Metric>) {
    match m {
        Some(Metric::Int(v)) => out.extend_from_slice(v.to_string().as_bytes()),
        Some(Metric::Float(v)) => py_float(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// A float as Python's `repr` writes it: the shortest digits that read
/// back the same, positional from 1e-4 up to 1e16, else `1.5e+16`.
fn py_float(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        let s = if v.is_nan() {
            "\"NaN\""
        } else if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        };
        return out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(python_repr(v).as_bytes());
}

/// A finite float as Python's `repr` (and `str`) writes it.
pub fn python_repr(v: f64) -> String {
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.2345e-7`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{sign}{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{sign}{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{rest}e{esign}{:02}", exp.abs())
    }
}

// --- reading -------------------------------------------------------------

/// A record's fields that an event is made of.
#[derive(Debug, Default)]
struct Incoming {
    bn: Option<String>,
    bt: Option<f64>,
    n: Option<String>,
    /// `Some(None)`: a null value.
    v: Option<Option<f64>>,
    vs: Option<String>,
}

fn record_from_json(item: &Json) -> Result<Incoming, DecodeError> {
    let Json::Object(fields) = item else {
        return Err(shape("a SenML record is an object"));
    };
    let mut r = Incoming::default();
    for (k, v) in fields {
        match k.as_str() {
            "bn" => r.bn = Some(json_text(v, "bn")?),
            "bt" => r.bt = Some(json_number(v, "bt")?.ok_or_else(|| shape("bt is null"))?),
            "n" => r.n = Some(json_text(v, "n")?),
            "v" => r.v = Some(json_number(v, "v")?),
            "vs" => r.vs = Some(json_text(v, "vs")?),
            _ => {}
        }
    }
    Ok(r)
}

fn json_text(v: &Json, field: &str) -> Result<String, DecodeError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| shape(format!("{field} is not a string")))
}

/// A number, or none for null; the strings Python's `float()` takes for
/// NaN and the infinities are numbers too.
fn json_number(v: &Json, field: &str) -> Result<Option<f64>, DecodeError> {
    match v {
        Json::Null => Ok(None),
        Json::Number(n) => Ok(n.as_f64()),
        Json::String(s) => special_float(s)
            .map(Some)
            .ok_or_else(|| shape(format!("{field} is not a number"))),
        _ => Err(shape(format!("{field} is not a number"))),
    }
}

fn special_float(s: &str) -> Option<f64> {
    match s.trim().to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "inf" | "infinity" | "+inf" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn record_from_cbor(item: &Cbor) -> Result<Incoming, DecodeError> {
    let Cbor::Map(fields) = item else {
        return Err(shape("a SenML record is a map"));
    };
    let mut r = Incoming::default();
    for (k, v) in fields {
        // Duct's text keys, or RFC 8428's labels: bn -2, bt -3, n 0, v 2, vs 3.
        let key = match k {
            Cbor::Text(t) => t.as_str(),
            Cbor::Int(-2) => "bn",
            Cbor::Int(-3) => "bt",
            Cbor::Int(0) => "n",
            Cbor::Int(2) => "v",
            Cbor::Int(3) => "vs",
            _ => continue,
        };
        let text = |field| match v {
            Cbor::Text(t) => Ok(t.clone()),
            _ => Err(shape(format!("{field} is not text"))),
        };
        let number = |field| match v {
            Cbor::Int(i) => Ok(Some(*i as f64)),
            Cbor::Float(f) => Ok(Some(*f)),
            Cbor::Null | Cbor::Undefined => Ok(None),
            _ => Err(shape(format!("{field} is not a number"))),
        };
        match key {
            "bn" => r.bn = Some(text("bn")?),
            "bt" => r.bt = Some(number("bt")?.ok_or_else(|| shape("bt is null"))?),
            "n" => r.n = Some(text("n")?),
            "v" => r.v = Some(number("v")?),
            "vs" => r.vs = Some(text("vs")?),
            _ => {}
        }
    }
    Ok(r)
}

/// An event from a pack's records, read as Duct reads them.
fn from_pack(records: Vec<Incoming>, defaults: &Defaults<'_>) -> Result<Event, DecodeError> {
    let first = records
        .first()
        .ok_or_else(|| shape("a SenML pack has at least one record"))?;
    let host = first.bn.as_deref().unwrap_or("").trim_end_matches('/');
    let mut ev = Event::new(if host.is_empty() { defaults.host } else { host }, "");
    ev.time = first.bt.unwrap_or_else(now);
    ev.state = Some("ok".into());
    ev.ttl = defaults.ttl;
    ev.metric = Some(Metric::Float(0.0));
    for r in records {
        let name = r.n.unwrap_or_default();
        match name.split_once('/') {
            None => {
                ev.metric = r.v.unwrap_or(Some(0.0)).map(Metric::Float);
                ev.service = name;
            }
            Some((_, "state")) => ev.state = Some(r.vs.unwrap_or_else(|| "ok".into())),
            Some((_, "description")) => ev.description = r.vs.unwrap_or_default(),
            Some((_, "ttl")) => ev.ttl = r.v.flatten().map_or(defaults.ttl, |t| t as f32),
            Some((_, "tags")) => {
                let tags = r.vs.unwrap_or_default();
                ev.tags = tags
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect();
            }
            Some((_, sub)) => {
                if let Some(key) = sub.strip_prefix("attr/") {
                    let value = match (r.v, r.vs) {
                        (Some(Some(v)), _) => python_repr(v),
                        (_, Some(s)) => s,
                        _ => String::new(),
                    };
                    ev.attributes.push((key.to_string(), value));
                }
            }
        }
    }
    Ok(ev)
}

/// An event from Duct's JSON event dictionary (or ductd's event JSON).
fn json_to_event(value: &Json, defaults: &Defaults<'_>) -> Result<Event, DecodeError> {
    let Json::Object(d) = value else {
        return Err(shape("a JSON event is an object"));
    };
    let text = |key: &str| -> Result<Option<String>, DecodeError> {
        match d.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(shape(format!("{key} is not a string"))),
        }
    };
    let host = text("hostname")?.or(text("host")?).filter(|h| !h.is_empty());
    let mut ev = Event::new(
        host.as_deref().unwrap_or(defaults.host),
        text("service")?.unwrap_or_default(),
    );
    ev.state = match d.get("state") {
        None => Some("ok".into()),
        Some(_) => text("state")?,
    };
    ev.description = text("description")?.unwrap_or_default();
    ev.metric = match d.get("metric") {
        None => Some(Metric::Float(0.0)),
        Some(Json::Number(n)) => Some(match n.as_i64() {
            Some(i) => Metric::Int(i),
            None => Metric::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Some(m) => json_number(m, "metric")?.map(Metric::Float),
    };
    ev.ttl = match d.get("ttl") {
        None => defaults.ttl,
        Some(t) => json_number(t, "ttl")?.map_or(defaults.ttl, |t| t as f32),
    };
    ev.time = match d.get("time") {
        None | Some(Json::Null) => now(),
        Some(t) => json_number(t, "time")?.unwrap_or_else(now),
    };
    match d.get("tags") {
        None | Some(Json::Null) => {}
        Some(Json::Array(tags)) => {
            for t in tags {
                ev.tags
                    .push(t.as_str().ok_or_else(|| shape("tags are not strings"))?.to_string());
            }
        }
        Some(_) => return Err(shape("tags is not a list")),
    }
    match d.get("attributes") {
        None | Some(Json::Null) => {}
        Some(Json::Object(attrs)) => {
            for (k, v) in attrs {
                let v = match v {
                    Json::String(s) => s.clone(),
                    Json::Number(n) => match n.as_i64() {
                        Some(i) => i.to_string(),
                        None => python_repr(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    other => other.to_string(),
                };
                ev.attributes.push((k.clone(), v));
            }
        }
        Some(_) => return Err(shape("attributes is not an object")),
    }
    if matches!(d.get("type").or(d.get("kind")), Some(Json::String(t)) if t == "log") {
        ev.kind = EventKind::Log;
    }
    Ok(ev)
}

#[cfg(test)]
mod tests;
