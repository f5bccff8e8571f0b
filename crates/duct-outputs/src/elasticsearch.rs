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

use duct_core::civil::{iso8601_utc, DatePattern};
use duct_core::config::Diagnostic;
use duct_core::{Batch, BoxFuture, Event, EventKind, Metric, Output, OutputArgs, OutputError, OutputSpec};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http_push::{body_excerpt, names_with_http, url_with_path, Endpoint, HttpOptions};

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
    }))
}

struct ElasticSearch {
    endpoint: Endpoint,
    index: DatePattern,
}

/// The document for `event`, in Duct's shape.
pub fn document(event: &Event) -> Value {
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
    let attributes: Map<String, Value> = event.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    match event.kind {
        EventKind::Log => {
            doc.insert("type".into(), json!("log"));
            let mut fields = attributes;
            fields.remove("@timestamp");
            doc.insert("description".into(), Value::Object(fields));
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

/// A content-derived `_id`: the same event gets the same id.
fn document_id(index: &str, doc: &[u8]) -> String {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    index.hash(&mut a);
    doc.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    0x5eed_u32.hash(&mut b);
    doc.hash(&mut b);
    index.hash(&mut b);
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

/// Appends the bulk lines (action and document) for `event`.
fn push_bulk(out: &mut Vec<u8>, index: &str, event: &Event) {
    let doc = serde_json::to_vec(&document(event)).expect("JSON values serialize");
    let action = json!({"create": {"_index": index, "_id": document_id(index, &doc)}});
    serde_json::to_writer(&mut *out, &action).expect("JSON values serialize");
    out.push(b'\n');
    out.extend_from_slice(&doc);
    out.push(b'\n');
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

fn read_bulk_answer(body: &[u8], n: usize) -> Option<BulkOutcome> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let items = v.get("items")?.as_array()?;
    let mut outcome = BulkOutcome {
        done: 0,
        refused: 0,
        first_error: None,
    };
    for item in items.iter().take(n) {
        let result = item.as_object()?.values().next()?;
        let status = result.get("status")?.as_u64()?;
        let ok = (200..300).contains(&status) || status == 409;
        if !ok && outcome.first_error.is_none() {
            let reason = result
                .get("error")
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
            let mut body = Vec::with_capacity(batch.len() * 300);
            // A batch's events mostly share their second: format the index
            // name once per second, not once per event.
            let mut named: Option<(i64, String)> = None;
            for event in batch.iter() {
                let second = event.time.floor() as i64;
                if named.as_ref().is_none_or(|(s, _)| *s != second) {
                    named = Some((second, self.index.format(event.time)));
                }
                let (_, index) = named.as_ref().expect("set above");
                push_bulk(&mut body, index, event);
            }
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
    use super::*;

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
        assert_eq!(read_bulk_answer(b"<html>", 1), None);
    }
}
