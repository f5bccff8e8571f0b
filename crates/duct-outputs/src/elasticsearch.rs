//! `duct.outputs.elasticsearch.ElasticSearch` (and Tensor's name for it,
//! `ElasticSearchLog`): events as documents through the bulk API, one
//! request per batch. Log events (from the log sources) go here too.
//!
//! A document has Duct's fields: `hostname`, `service`, `state`, `metric`
//! (a float), `tags`, `time`, `type` (`metric` or `log`), `description`,
//! `attributes` and `@timestamp`. A log event's fields are its attributes;
//! Duct put them in `description` (an object), and so does this output, so
//! that searches written against Duct's documents keep working.
//!
//! Each document is created with an `_id` derived from its content, so a
//! batch sent again after a lost answer is not stored twice: the second
//! copy is answered 409 (already there), which counts as delivered. The
//! bulk answer is read item by item: a retryable item (429, 5xx) keeps it
//! and every item after it queued, to be sent again after backoff; a
//! refused item (400 mapping errors and the like) is counted as dropped.

use std::hash::{Hash, Hasher};

use duct_core::civil::{DatePattern, Iso8601Utc};
use duct_core::config::Diagnostic;
use duct_core::{Batch, BoxFuture, Event, EventKind, Metric, Output, OutputArgs, OutputError, OutputSpec};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http_push::{body_excerpt, names_with_http, url_with_path, BodySize, Endpoint, HttpOptions};
use crate::json_object::Object;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    url: String,
    /// The index name, a `strftime` pattern of the event's time in UTC.
    index: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "http://localhost:9200".into(),
            index: "duct-%Y.%m.%d".into(),
        }
    }
}

fn options() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    names_with_http::<Options>(&NAMES)
}

fn make_spec(name: &'static str) -> OutputSpec {
    let mut spec = OutputSpec::new::<Options>(
        name,
        "Indexes events (metrics and log events) in Elasticsearch through the bulk API, one request per batch",
        false,
        build,
    )
    .with_default_maxrate(100.0);
    spec.options = options;
    spec
}

pub fn spec() -> OutputSpec {
    make_spec("duct.outputs.elasticsearch.ElasticSearch")
}

/// Tensor's and Duct 1.x's name for the same output.
pub fn log_spec() -> OutputSpec {
    make_spec("duct.outputs.elasticsearch.ElasticSearchLog")
}

fn build(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: Options = args.options()?;
    let http: HttpOptions = args.options()?;
    let index = DatePattern::parse(&opts.index).map_err(|e| args.invalid("index", e))?;
    let url = url_with_path(args, &opts.url, "/_bulk")?;
    Ok(Box::new(ElasticSearch {
        endpoint: Endpoint::new(args, "url", url.as_str(), &http)?,
        index,
        body_size: BodySize::new(300),
    }))
}

struct ElasticSearch {
    endpoint: Endpoint,
    index: DatePattern,
    body_size: BodySize,
}

/// The document for an event, in Duct's shape, borrowed from the event and
/// written as it is serialized. Fields in byte order, as a
/// `serde_json::Map` holds them (the `_id` is a hash of these bytes).
#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<Object<&'a str, &'a str>>,
    description: Description<'a>,
    hostname: &'a str,
    metric: Option<DocumentMetric>,
    service: &'a str,
    state: Option<&'a str>,
    tags: &'a [String],
    time: f64,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Description<'a> {
    /// A metric event's description.
    Text(&'a str),
    /// A log event's fields.
    Fields(Object<&'a str, &'a str>),
}

/// `metric` as Duct wrote it: a float, or `NaN`, `Infinity`, `-Infinity`
/// as strings (JSON has no such numbers).
#[derive(Serialize)]
#[serde(untagged)]
enum DocumentMetric {
    Number(f64),
    Text(&'static str),
}

impl<'a> Document<'a> {
    fn new(event: &'a Event, timestamp: &'a str) -> Self {
        let metric = event.metric.map(|m| match m {
            m if m.as_f64().is_finite() => DocumentMetric::Number(m.as_f64()),
            Metric::Float(v) if v.is_nan() => DocumentMetric::Text("NaN"),
            m if m.as_f64() > 0.0 => DocumentMetric::Text("Infinity"),
            _ => DocumentMetric::Text("-Infinity"),
        });
        let pairs = |skip: Option<&str>| -> Object<&'a str, &'a str> {
            Object::new(
                event
                    .attributes
                    .iter()
                    .filter(|(k, _)| Some(k.as_str()) != skip)
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            )
        };
        let (kind, description, attributes) = match event.kind {
            // A log event's fields are its attributes; its time is the
            // document's own.
            EventKind::Log => ("log", Description::Fields(pairs(Some("@timestamp"))), None),
            EventKind::Metric => {
                let attributes = Some(pairs(None)).filter(|a| !a.is_empty());
                ("metric", Description::Text(&event.description), attributes)
            }
        };
        Document {
            timestamp,
            attributes,
            description,
            hostname: &event.host,
            metric,
            service: &event.service,
            state: event.state.as_deref(),
            tags: &event.tags,
            time: event.time,
            kind,
        }
    }
}

/// Writes a batch's bulk body: an action line and a document line per
/// event.
#[derive(Default)]
struct BulkWriter {
    /// The index name of the last event's second (a batch's events mostly
    /// share their second).
    index: Option<(i64, String)>,
    stamps: Iso8601Utc,
    /// The document being written, before the action line that names it.
    doc: Vec<u8>,
}

impl BulkWriter {
    /// Appends `event`'s lines to `out`, its index named by `pattern`.
    fn push(&mut self, out: &mut Vec<u8>, pattern: &DatePattern, event: &Event) {
        let second = event.time.floor() as i64;
        if self.index.as_ref().is_none_or(|(s, _)| *s != second) {
            self.index = Some((second, pattern.format(event.time)));
        }
        let (_, index) = self.index.as_ref().expect("set above");
        self.doc.clear();
        let doc = Document::new(event, self.stamps.format(event.time));
        serde_json::to_writer(&mut self.doc, &doc).expect("documents serialize");
        out.extend_from_slice(br#"{"create":{"_id":""#);
        push_document_id(out, index, &self.doc);
        out.extend_from_slice(br#"","_index":"#);
        serde_json::to_writer(&mut *out, index).expect("strings serialize");
        out.extend_from_slice(b"}}\n");
        out.extend_from_slice(&self.doc);
        out.push(b'\n');
    }
}

/// A content-derived `_id`, 32 hex digits: the same event gets the same
/// id.
fn push_document_id(out: &mut Vec<u8>, index: &str, doc: &[u8]) {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    index.hash(&mut a);
    doc.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    0x5eed_u32.hash(&mut b);
    doc.hash(&mut b);
    index.hash(&mut b);
    for half in [a.finish(), b.finish()] {
        for shift in (0..16).rev() {
            out.push(b"0123456789abcdef"[(half >> (shift * 4)) as usize & 0xf]);
        }
    }
}

/// What the bulk answer says of a batch of `n` documents.
#[derive(Debug, PartialEq, Eq)]
struct BulkOutcome {
    /// Documents at the front that are done with (stored or refused).
    done: usize,
    /// Of those, how many were refused for good.
    refused: usize,
    /// The first error, for the log.
    first_error: Option<String>,
}

/// The bulk answer, as far as it is read: each item's status and error
/// (the rest of an item, a few hundred bytes each, is skipped unread).
#[derive(Deserialize)]
struct BulkAnswer {
    items: Vec<BulkItem>,
}

/// An item, `{"create": {...}}`: the one value of a one-key object.
struct BulkItem(ItemResult);

#[derive(Deserialize)]
struct ItemResult {
    status: u64,
    #[serde(default)]
    error: Option<Value>,
}

impl<'de> Deserialize<'de> for BulkItem {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = BulkItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object holding the item's result")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<BulkItem, A::Error> {
                let (_, result) = map
                    .next_entry::<IgnoredAny, ItemResult>()?
                    .ok_or_else(|| serde::de::Error::custom("an empty item"))?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(BulkItem(result))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

fn read_bulk_answer(body: &[u8], n: usize) -> Option<BulkOutcome> {
    let answer: BulkAnswer = serde_json::from_slice(body).ok()?;
    let mut outcome = BulkOutcome {
        done: 0,
        refused: 0,
        first_error: None,
    };
    for BulkItem(result) in answer.items.iter().take(n) {
        let status = result.status;
        let ok = (200..300).contains(&status) || status == 409;
        if !ok && outcome.first_error.is_none() {
            let reason = result
                .error
                .as_ref()
                .map(|e| {
                    e.get("reason")
                        .and_then(Value::as_str)
                        .map_or_else(|| e.to_string(), String::from)
                })
                .unwrap_or_default();
            outcome.first_error = Some(format!("{status}: {reason}"));
        }
        if status == 429 || status >= 500 {
            return Some(outcome);
        }
        if !ok {
            outcome.refused += 1;
        }
        outcome.done += 1;
    }
    // Items the answer does not list were not stored.
    Some(outcome)
}

impl Output for ElasticSearch {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let mut body = self.body_size.vec_for(batch.len());
            let mut writer = BulkWriter::default();
            for event in batch.iter() {
                writer.push(&mut body, &self.index, event);
            }
            self.body_size.learn(body.len(), batch.len());
            let answer = self.endpoint.post(body, "application/x-ndjson").await?;
            self.endpoint.judge(&answer, batch.len())?;
            let Some(outcome) = read_bulk_answer(&answer.body, batch.len()) else {
                return Err(OutputError::new(format!(
                    "POST {} answered with no bulk result: {}",
                    self.endpoint.url(),
                    body_excerpt(&answer.body)
                )));
            };
            if outcome.done == batch.len() && outcome.refused == 0 {
                return Ok(());
            }
            let mut message = format!(
                "POST {}: {} of {} documents done, {} refused",
                self.endpoint.url(),
                outcome.done,
                batch.len(),
                outcome.refused
            );
            if outcome.done < batch.len() {
                message.push_str("; the rest are sent again");
            }
            if let Some(first) = outcome.first_error {
                message.push_str(&format!(" (first error {first})"));
            }
            Err(OutputError::new(message).after(outcome.done).rejecting(outcome.refused))
        })
    }
}

#[cfg(test)]
mod tests {
    use duct_core::civil::iso8601_utc;
    use serde_json::{json, Map};

    use super::*;

    fn document(event: &Event) -> Value {
        serde_json::to_value(Document::new(event, &iso8601_utc(event.time))).unwrap()
    }

    fn push_bulk(out: &mut Vec<u8>, index: &str, event: &Event) {
        BulkWriter::default().push(out, &DatePattern::parse(index).unwrap(), event);
    }

    /// The document built as a `serde_json::Value`, the plain way the
    /// writer must agree with byte for byte (the `_id` hashes the bytes).
    fn value_document(event: &Event) -> Value {
        let mut doc = Map::new();
        doc.insert("hostname".into(), json!(event.host));
        doc.insert("service".into(), json!(event.service));
        doc.insert("state".into(), json!(event.state));
        let metric = match event.metric {
            Some(m) if m.as_f64().is_finite() => json!(m.as_f64()),
            Some(Metric::Float(v)) if v.is_nan() => json!("NaN"),
            Some(m) if m.as_f64() > 0.0 => json!("Infinity"),
            Some(_) => json!("-Infinity"),
            None => Value::Null,
        };
        doc.insert("metric".into(), metric);
        doc.insert("tags".into(), json!(event.tags));
        doc.insert("time".into(), json!(event.time));
        let mut attributes: Map<String, Value> = event.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        match event.kind {
            EventKind::Log => {
                doc.insert("type".into(), json!("log"));
                attributes.remove("@timestamp");
                doc.insert("description".into(), Value::Object(attributes));
            }
            EventKind::Metric => {
                doc.insert("type".into(), json!("metric"));
                doc.insert("description".into(), json!(event.description));
                if !attributes.is_empty() {
                    doc.insert("attributes".into(), Value::Object(attributes));
                }
            }
        }
        doc.insert("@timestamp".into(), json!(iso8601_utc(event.time)));
        Value::Object(doc)
    }

    #[test]
    fn an_id_is_two_hashes_in_hex() {
        let (index, doc) = ("duct-2026.12.03", br#"{"a":1}"#.as_slice());
        let mut a = std::collections::hash_map::DefaultHasher::new();
        index.hash(&mut a);
        doc.hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        0x5eed_u32.hash(&mut b);
        doc.hash(&mut b);
        index.hash(&mut b);
        let mut id = Vec::new();
        push_document_id(&mut id, index, doc);
        assert_eq!(
            String::from_utf8(id).unwrap(),
            format!("{:016x}{:016x}", a.finish(), b.finish())
        );
    }

    #[test]
    fn documents_are_written_byte_for_byte_as_a_json_map_writes_them() {
        let mut events = vec![metric_event()];
        let mut e = metric_event();
        e.metric = None;
        e.state = None;
        e.tags = vec!["a".into(), "quote\"d".into()];
        e.attributes = vec![
            ("z".into(), "1".into()),
            ("".into(), "empty key".into()),
            ("a".into(), "2".into()),
            ("z".into(), "3".into()),
        ];
        events.push(e);
        for m in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.1, -1e300] {
            let mut e = metric_event();
            e.metric = Some(m.into());
            events.push(e);
        }
        let mut e = metric_event();
        e.metric = Some(i64::MAX.into());
        e.time = f64::NAN;
        e.host = "ünïcode \u{1}\n".into();
        events.push(e);
        let mut log = Event::new("web1", "nginx");
        log.kind = EventKind::Log;
        log.time = 1_796_278_802.123;
        log.attributes = vec![
            ("@timestamp".into(), "x".into()),
            ("status".into(), "200".into()),
            ("status".into(), "404".into()),
        ];
        events.push(log);
        let mut writer = BulkWriter::default();
        let pattern = DatePattern::parse("duct-%Y.%m.%d").unwrap();
        for event in &events {
            let mut out = Vec::new();
            writer.push(&mut out, &pattern, event);
            let text = String::from_utf8(out).unwrap();
            let (action, doc) = text.trim_end().split_once('\n').unwrap();
            assert_eq!(doc, serde_json::to_string(&value_document(event)).unwrap());
            let index = pattern.format(event.time);
            let mut id = Vec::new();
            push_document_id(&mut id, &index, doc.as_bytes());
            let expected = json!({"create": {"_index": index, "_id": String::from_utf8(id).unwrap()}});
            assert_eq!(action, serde_json::to_string(&expected).unwrap());
        }
    }

    fn metric_event() -> Event {
        let mut e = Event::new("web1", "cpu.user");
        e.metric = Some(3.into());
        e.state = Some("ok".into());
        e.time = 1_796_278_802.5;
        e.description = "user time".into();
        e.attributes = vec![("core".into(), "0".into())];
        e
    }

    #[test]
    fn metric_documents_have_ducts_fields() {
        assert_eq!(
            document(&metric_event()),
            json!({
                "hostname": "web1", "service": "cpu.user", "state": "ok", "metric": 3.0,
                "tags": [], "time": 1_796_278_802.5, "type": "metric",
                "description": "user time", "attributes": {"core": "0"},
                "@timestamp": "2026-12-03T06:20:02.500Z",
            })
        );
    }

    #[test]
    fn log_documents_carry_their_fields_in_description_as_duct_did() {
        let mut e = Event::new("web1", "nginx");
        e.kind = EventKind::Log;
        e.time = 1_796_278_802.0;
        e.attributes = vec![
            ("status".into(), "200".into()),
            ("@timestamp".into(), "2026-12-03T06:20:02Z".into()),
            ("message".into(), "GET / ...".into()),
        ];
        let doc = document(&e);
        assert_eq!(doc["type"], "log");
        assert_eq!(doc["description"], json!({"status": "200", "message": "GET / ..."}));
        assert_eq!(doc["@timestamp"], "2026-12-03T06:20:02Z");
        assert!(doc.get("attributes").is_none());
    }

    #[test]
    fn the_same_event_gets_the_same_id() {
        let mut a = Vec::new();
        push_bulk(&mut a, "duct-2026.12.03", &metric_event());
        let mut b = Vec::new();
        push_bulk(&mut b, "duct-2026.12.03", &metric_event());
        assert_eq!(a, b);
        let mut other = metric_event();
        other.time += 1.0;
        let mut c = Vec::new();
        push_bulk(&mut c, "duct-2026.12.03", &other);
        assert_ne!(a, c);
        let text = String::from_utf8(a).unwrap();
        let action: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(action["create"]["_index"], "duct-2026.12.03");
        assert_eq!(action["create"]["_id"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn bulk_answers_are_read_item_by_item() {
        let all_ok = br#"{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":409}}]}"#;
        assert_eq!(
            read_bulk_answer(all_ok, 2),
            Some(BulkOutcome {
                done: 2,
                refused: 0,
                first_error: None
            })
        );
        let mixed = br#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}},
            {"create":{"status":201}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"status":201}}]}"#;
        assert_eq!(
            read_bulk_answer(mixed, 5),
            Some(BulkOutcome {
                done: 3,
                refused: 1,
                first_error: Some("400: failed to parse".into())
            })
        );
        // Items as Elasticsearch writes them, with fields that are skipped.
        let full = br#"{"took":3,"errors":false,"items":[
            {"create":{"_index":"duct-2026.12.03","_id":"ab","_version":1,"result":"created",
             "_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
            {"create":{"_index":"duct-2026.12.03","_id":"cd","status":409,
             "error":{"type":"version_conflict_engine_exception","reason":"[cd]: version conflict"}}}]}"#;
        assert_eq!(read_bulk_answer(full, 2).map(|o| (o.done, o.refused)), Some((2, 0)));
        assert_eq!(read_bulk_answer(br#"{"items":[{}]}"#, 1), None);
        assert_eq!(read_bulk_answer(br#"{"items":[{"create":{"_id":"x"}}]}"#, 1), None);
        assert_eq!(read_bulk_answer(b"<html>", 1), None);
    }
}
