//! The JSON bodies of OpenTSDB's `/api/put` and Bosun's
//! `/api/metadata/put`, as the OpenTSDB and Bosun outputs send them.
//!
//! A data point is Duct's: `metric` the service, `timestamp` the event's
//! time in milliseconds, `value` the metric, tags `host`, `state` (when the
//! event has one) and every attribute. OpenTSDB takes only letters, digits
//! and `-_./` in metric names and tags, so anything else becomes `_` (Duct
//! replaced only spaces, and OpenTSDB refused the rest). Duct also sent a
//! `null` state, which OpenTSDB refuses, and replaced the tags object with
//! the event's tag list when there was one (a point OpenTSDB cannot read);
//! here a stateless event has no `state` tag and event tags written `k=v`
//! become tags, as in the InfluxDB outputs. Events without a finite metric
//! have no point.

use std::borrow::Cow;

use duct_core::{Event, Metric};
use serde::Serialize;

use crate::json_object::Object;

/// `text` with every character OpenTSDB does not take as `_`.
fn sanitize(text: &str) -> Cow<'_, str> {
    let taken = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if text.chars().all(taken) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| if taken(c) { c } else { '_' }).collect())
}

/// The metric name of a service, as OpenTSDB and Bosun are told it.
pub fn metric_name(service: &str) -> Cow<'_, str> {
    sanitize(service)
}

/// A data point, borrowed from its event where nothing needed replacing.
/// Fields in byte order, as a `serde_json::Map` holds them.
#[derive(Serialize)]
struct Point<'a> {
    metric: Cow<'a, str>,
    tags: Object<Cow<'a, str>, Cow<'a, str>>,
    timestamp: i64,
    value: PointValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PointValue {
    Int(i64),
    Float(f64),
}

/// `event`'s data point, or `None` when it has none.
fn point<'a>(event: &'a Event) -> Option<Point<'a>> {
    let metric = event.metric.filter(|m| m.as_f64().is_finite())?;
    let service = metric_name(&event.service);
    if service.is_empty() {
        return None;
    }
    let mut tags = Vec::with_capacity(2 + event.attributes.len());
    let mut tag = |k: &'a str, v: &'a str| {
        let (k, v) = (sanitize(k.trim()), sanitize(v.trim()));
        if !k.is_empty() && !v.is_empty() {
            tags.push((k, v));
        }
    };
    tag("host", &event.host);
    if let Some(state) = &event.state {
        tag("state", state);
    }
    for (k, v) in &event.attributes {
        tag(k, v);
    }
    for t in &event.tags {
        if let Some((k, v)) = t.split_once('=') {
            tag(k, v);
        }
    }
    Some(Point {
        metric: service,
        tags: Object::new(tags),
        timestamp: (event.time * 1000.0).round() as i64,
        value: match metric {
            Metric::Int(v) => PointValue::Int(v),
            Metric::Float(v) => PointValue::Float(v),
        },
    })
}

/// The `/api/put` body for `events`, and how many of them have a point.
pub fn put_body<'a>(events: impl Iterator<Item = &'a Event>) -> (Vec<u8>, usize) {
    let mut body = Vec::with_capacity(events.size_hint().0 * 120 + 2);
    body.push(b'[');
    let mut n = 0;
    for point in events.filter_map(point) {
        if n > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &point).expect("points serialize");
        n += 1;
    }
    body.push(b']');
    (body, n)
}

/// Bosun's metadata for metrics seen for the first time, named as
/// [`metric_name`] names them: Duct's `{"Metric": name, "Name": "rate",
/// "Value": "gauge"}` for each.
pub fn rate_metadata_body<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Metadata<'a> {
        metric: &'a str,
        name: &'static str,
        value: &'static str,
    }
    let entries: Vec<Metadata<'_>> = names
        .iter()
        .map(|n| Metadata {
            metric: n.as_ref(),
            name: "rate",
            value: "gauge",
        })
        .collect();
    serde_json::to_vec(&entries).expect("metadata serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn data_point(event: &Event) -> Option<Value> {
        point(event).map(|p| serde_json::to_value(p).unwrap())
    }

    /// The point built as a `serde_json::Value`, the plain way the writer
    /// must agree with.
    fn value_point(event: &Event) -> Option<Value> {
        let metric = event.metric.filter(|m| m.as_f64().is_finite())?;
        let service = sanitize(&event.service).into_owned();
        if service.is_empty() {
            return None;
        }
        let mut tags = serde_json::Map::new();
        let mut tag = |k: &str, v: &str| {
            let (k, v) = (sanitize(k.trim()).into_owned(), sanitize(v.trim()).into_owned());
            if !k.is_empty() && !v.is_empty() {
                tags.insert(k, Value::String(v));
            }
        };
        tag("host", &event.host);
        if let Some(state) = &event.state {
            tag("state", state);
        }
        for (k, v) in &event.attributes {
            tag(k, v);
        }
        for t in &event.tags {
            if let Some((k, v)) = t.split_once('=') {
                tag(k, v);
            }
        }
        let value = match metric {
            Metric::Int(v) => Value::from(v),
            Metric::Float(v) => Value::from(v),
        };
        Some(serde_json::json!({
            "metric": service,
            "timestamp": (event.time * 1000.0).round() as i64,
            "value": value,
            "tags": tags,
        }))
    }

    #[test]
    fn points_are_written_byte_for_byte_as_a_json_map_writes_them() {
        let mut events = vec![sample()];
        let mut e = sample();
        e.service = "disk:/var (used%)".into();
        e.state = Some("critical".into());
        e.metric = Some(0.1.into());
        e.attributes = vec![
            ("z z".into(), "1".into()),
            ("a".into(), " 2 ".into()),
            ("z_z".into(), "3".into()),
            ("host".into(), "other".into()),
            ("".into(), "x".into()),
        ];
        e.tags = vec!["dc=eu 1".into(), "a=late".into(), "plain".into()];
        events.push(e);
        let mut e = sample();
        e.metric = Some(i64::MIN.into());
        e.host = "ünï\u{1}code".into();
        e.time = f64::NAN;
        events.push(e);
        for event in &events {
            let (body, n) = put_body(std::iter::once(event));
            assert_eq!(n, 1);
            let expected = serde_json::to_string(&[value_point(event).unwrap()]).unwrap();
            assert_eq!(String::from_utf8(body).unwrap(), expected);
        }
        let (body, n) = put_body(events.iter());
        assert_eq!(n, 3);
        let all: Vec<Value> = events.iter().filter_map(value_point).collect();
        assert_eq!(body, serde_json::to_vec(&all).unwrap());
        assert_eq!(put_body(std::iter::empty()), (b"[]".to_vec(), 0));
    }

    fn sample() -> Event {
        let mut e = Event::new("web1.example.org", "cpu user");
        e.metric = Some(3.into());
        e.time = 1_700_000_000.25;
        e
    }

    #[test]
    fn a_point_has_ducts_fields() {
        let mut e = sample();
        e.state = Some("ok".into());
        e.attributes = vec![("core".into(), "0".into())];
        e.tags = vec!["dc=eu 1".into(), "plain".into()];
        assert_eq!(
            data_point(&e).unwrap(),
            serde_json::json!({
                "metric": "cpu_user",
                "timestamp": 1_700_000_000_250_i64,
                "value": 3,
                "tags": {"host": "web1.example.org", "state": "ok", "core": "0", "dc": "eu_1"},
            })
        );
    }

    #[test]
    fn no_state_means_no_state_tag_and_floats_stay_floats() {
        let mut e = sample();
        e.metric = Some(0.5.into());
        let p = data_point(&e).unwrap();
        assert_eq!(p["tags"], serde_json::json!({"host": "web1.example.org"}));
        assert_eq!(p["value"], serde_json::json!(0.5));
    }

    #[test]
    fn characters_opentsdb_refuses_become_underscores() {
        let mut e = sample();
        e.service = "disk:/var (used%)".into();
        e.attributes = vec![("mount point".into(), "/srv,x".into()), ("".into(), "x".into())];
        let p = data_point(&e).unwrap();
        assert_eq!(p["metric"], "disk_/var__used__");
        assert_eq!(p["tags"]["mount_point"], "/srv_x");
        assert_eq!(p["tags"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn the_body_counts_the_points_it_carries() {
        let mut none = sample();
        none.metric = None;
        let mut nan = sample();
        nan.metric = Some(f64::NAN.into());
        let events = [sample(), none, nan, sample()];
        let (body, n) = put_body(events.iter());
        assert_eq!(n, 2);
        let parsed: Vec<Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn bosun_metadata_is_ducts() {
        let name = metric_name("cpu user");
        assert_eq!(name, "cpu_user");
        let body: Value = serde_json::from_slice(&rate_metadata_body(&[name, "load".into()])).unwrap();
        assert_eq!(
            body,
            serde_json::json!([
                {"Metric": "cpu_user", "Name": "rate", "Value": "gauge"},
                {"Metric": "load", "Name": "rate", "Value": "gauge"},
            ])
        );
    }
}
