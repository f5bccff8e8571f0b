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

use duct_core::{Event, Metric};
use serde_json::Value;

/// `text` with every character OpenTSDB does not take as `_`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One data point, or `None` when the event has none.
pub fn data_point(event: &Event) -> Option<Value> {
    let metric = event.metric.filter(|m| m.as_f64().is_finite())?;
    let service = sanitize(&event.service);
    if service.is_empty() {
        return None;
    }
    let mut tags = serde_json::Map::new();
    let mut tag = |k: &str, v: &str| {
        let (k, v) = (sanitize(k.trim()), sanitize(v.trim()));
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

/// The `/api/put` body for `events`, and how many of them have a point.
pub fn put_body<'a>(events: impl Iterator<Item = &'a Event>) -> (Vec<u8>, usize) {
    let points: Vec<Value> = events.filter_map(data_point).collect();
    let n = points.len();
    (serde_json::to_vec(&points).expect("JSON values serialize"), n)
}

/// Bosun's metadata for a metric seen for the first time: Duct's
/// `{"Metric": service, "Name": "rate", "Value": "gauge"}`.
pub fn rate_metadata(metric: &str) -> Value {
    serde_json::json!({"Metric": sanitize(metric), "Name": "rate", "Value": "gauge"})
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            rate_metadata("cpu user"),
            serde_json::json!({"Metric": "cpu_user", "Name": "rate", "Value": "gauge"})
        );
    }
}
