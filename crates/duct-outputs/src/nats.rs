//! `duct.outputs.nats.Nats`: each event published as one message on a
//! NATS subject, core NATS or JetStream (`jetstream: true`).
//!
//! The subject is Duct's: `topic` (`{hostname}.{service}`) filled in with
//! the event's fields as Python's `str.format` would (`{hostname}`,
//! `{service}`, `{state}`, `{description}`, `{metric}`, `{ttl}`, `{time}`,
//! `{evtype}`, `{attributes[key]}`, `{tags[0]}`), after `prefix.` when a
//! prefix is set; whitespace becomes `_` (see [`duct_nats::subject`]). An
//! event whose topic names an attribute or tag it lacks is dropped, as
//! Duct drops it, and counted as refused. The payload is the `format`
//! (see [`duct_nats::format`]).
//!
//! Core NATS has no acknowledgement: a batch counts as delivered once the
//! server has read it (a flush, PING/PONG, answers). JetStream answers each
//! message: the batch is published at once, then the answers are awaited
//! in order, and the events from the first that is not stored on stay
//! queued and are sent again. Each message carries a `Nats-Msg-Id` made of
//! its subject and payload, so a message sent again that the stream had
//! stored already is recognised by the server (within the stream's
//! duplicate window, two minutes by default) and stored once.
//!
//! While the client is disconnected (it reconnects by itself) a send fails
//! at once without handing anything to the client, so an outage leaves
//! the events in the output's queue, where `maxsize` and `expire` apply.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use duct_core::config::Diagnostic;
use duct_core::event::Metric;
use duct_core::{Batch, BoxFuture, Event, Output, OutputArgs, OutputError, OutputSpec};
use duct_nats::async_nats::{self, jetstream};
use duct_nats::{Connection, Format};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    servers: Vec<String>,
    prefix: String,
    topic: String,
    format: String,
    jetstream: bool,
    credentials_file: Option<PathBuf>,
    nkey_seed_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    /// Seconds a batch may take to be written (and, with JetStream,
    /// acknowledged).
    write_timeout: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            servers: vec!["nats://localhost:4222".into()],
            prefix: String::new(),
            topic: "{hostname}.{service}".into(),
            format: "senml-json".into(),
            jetstream: false,
            credentials_file: None,
            nkey_seed_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            write_timeout: 10.0,
        }
    }
}

pub fn spec() -> OutputSpec {
    OutputSpec::new::<Options>(
        "duct.outputs.nats.Nats",
        "Publishes each event to a NATS subject (`prefix.` + `topic`, default {hostname}.{service}) as json, SenML JSON or SenML CBOR; JetStream with acknowledgements when `jetstream: true`",
        false,
        build,
    )
}

fn build(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: Options = args.options()?;
    let connection = Connection {
        servers: opts.servers,
        credentials_file: opts.credentials_file,
        nkey_seed_file: opts.nkey_seed_file,
        tls_ca_file: opts.tls_ca_file,
        tls_cert_file: opts.tls_cert_file,
        tls_key_file: opts.tls_key_file,
    };
    connection
        .check()
        .map_err(|e| args.invalid(e.option().unwrap_or("servers"), e))?;
    let format =
        Format::from_name(&opts.format).ok_or_else(|| args.invalid("format", format!("must be {}", Format::NAMES)))?;
    let topic = Template::parse(&opts.topic).map_err(|e| args.invalid("topic", e))?;
    let write_timeout = Duration::try_from_secs_f64(opts.write_timeout)
        .ok()
        .filter(|d| !d.is_zero() && opts.write_timeout <= 86_400.0)
        .ok_or_else(|| args.invalid("write_timeout", "must be a number of seconds above 0 and at most 86400"))?;
    Ok(Box::new(Nats {
        connection,
        prefix: opts.prefix,
        topic,
        format,
        jetstream: opts.jetstream,
        write_timeout,
        client: None,
        payload: Vec::with_capacity(512),
        topic_log: Default::default(),
    }))
}

pub struct Nats {
    connection: Connection,
    prefix: String,
    topic: Template,
    format: Format,
    jetstream: bool,
    write_timeout: Duration,
    client: Option<(async_nats::Client, jetstream::Context)>,
    payload: Vec<u8>,
    topic_log: duct_core::throttle::Throttle,
}

impl Nats {
    async fn client(&mut self) -> Result<(async_nats::Client, jetstream::Context), OutputError> {
        if let Some((client, js)) = &self.client {
            return Ok((client.clone(), js.clone()));
        }
        let client = self
            .connection
            .connect("ductd")
            .await
            .map_err(|e| OutputError::new(e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .ack_timeout(self.write_timeout)
            .timeout(self.write_timeout)
            .build(client.clone());
        self.client = Some((client.clone(), js.clone()));
        Ok((client, js))
    }

    /// The subject of `event`, or why it has none.
    fn subject(&self, event: &Event) -> Result<String, String> {
        let mut topic = String::new();
        if !self.prefix.is_empty() {
            topic.push_str(&self.prefix);
            topic.push('.');
        }
        self.topic.render(event, &mut topic)?;
        Ok(duct_nats::subject(&topic))
    }

    async fn publish(&mut self, batch: &Batch) -> Result<(), OutputError> {
        let (client, js) = self.client().await?;
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(OutputError::new(format!(
                "not connected to NATS ({})",
                self.connection.shown_servers()
            )));
        }
        let mut refused = 0;
        let mut acks = std::collections::VecDeque::new();
        for (i, event) in batch.iter().enumerate() {
            let subject = match self.subject(event) {
                Ok(s) => s,
                Err(why) => {
                    refused += 1;
                    if let Some(held) = self.topic_log.allow(Duration::from_secs(60)) {
                        tracing::warn!(service = %event.service, held_back = held, "event dropped: {why}");
                    }
                    continue;
                }
            };
            self.payload.clear();
            duct_nats::format::encode(self.format, event, &mut self.payload);
            let payload = Bytes::copy_from_slice(&self.payload);
            if self.jetstream {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", message_id(&subject, &payload).as_str());
                let ack = js
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| OutputError::new(format!("JetStream publish failed: {e}")))?;
                acks.push_back((i, ack));
                // Answers awaited as the window fills: the client lends
                // only so many unanswered publishes at once.
                while acks.len() >= ACK_WINDOW {
                    if let Some((i, ack)) = acks.pop_front() {
                        await_ack(batch, i, ack).await?;
                    }
                }
            } else {
                client
                    .publish(subject, payload)
                    .await
                    .map_err(|e| OutputError::new(format!("NATS publish failed: {e}")))?;
            }
        }
        if self.jetstream {
            for (i, ack) in acks {
                await_ack(batch, i, ack).await?;
            }
        } else {
            client
                .flush()
                .await
                .map_err(|e| OutputError::new(format!("NATS flush failed: {e}")))?;
        }
        if refused > 0 {
            return Err(OutputError::new(format!("{refused} events had no topic"))
                .after(batch.len())
                .rejecting(refused));
        }
        Ok(())
    }
}

/// JetStream publishes in flight at most (the client's own limit is 5000).
const ACK_WINDOW: usize = 1000;

/// Waits for the stream's answer to the batch's event `i`.
async fn await_ack(batch: &Batch, i: usize, ack: jetstream::context::PublishAckFuture) -> Result<(), OutputError> {
    if let Err(e) = ack.await {
        return Err(OutputError::new(format!("JetStream did not store the event: {e}")).after(i));
    }
    batch.acknowledge(i + 1);
    Ok(())
}

impl Output for Nats {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            let timeout = self.write_timeout;
            match tokio::time::timeout(timeout, self.publish(batch)).await {
                Ok(result) => result,
                Err(_) => Err(OutputError::new(format!(
                    "NATS did not take the batch within {}s",
                    timeout.as_secs_f64()
                ))
                .after(batch.acknowledged())),
            }
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some((client, _)) = self.client.take() {
                let _ = tokio::time::timeout(self.write_timeout, client.flush()).await;
            }
        })
    }
}

/// A message id that is the same each time the same event is sent.
fn message_id(subject: &str, payload: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subject.hash(&mut h);
    payload.hash(&mut h);
    let a = h.finish();
    payload.len().hash(&mut h);
    format!("{a:016x}{:016x}", h.finish())
}

/// A float as Python's `str` writes it.
fn python_str(v: f64) -> String {
    match v {
        v if v.is_finite() => duct_nats::format::python_repr(v),
        v if v.is_nan() => "nan".into(),
        v if v > 0.0 => "inf".into(),
        _ => "-inf".into(),
    }
}

/// A topic template: Python `str.format` fields over Duct's event.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Hostname,
    Service,
    State,
    Description,
    Metric,
    Ttl,
    Time,
    Evtype,
    Attribute(String),
    Tag(usize),
}

impl Template {
    fn parse(template: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err("a single '}' must be written '}}'".into()),
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => field.push(c),
                            None => return Err("a '{' is not closed".into()),
                        }
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::field(&field)?);
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template(parts))
    }

    fn render(&self, event: &Event, out: &mut String) -> Result<(), String> {
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hostname => out.push_str(&event.host),
                Part::Service => out.push_str(&event.service),
                Part::State => out.push_str(event.state.as_deref().unwrap_or("None")),
                Part::Description => out.push_str(&event.description),
                Part::Metric => match event.metric {
                    Some(Metric::Int(v)) => {
                        let _ = write!(out, "{v}");
                    }
                    Some(Metric::Float(v)) => out.push_str(&python_str(v)),
                    None => out.push_str("None"),
                },
                Part::Ttl => out.push_str(&python_str(event.ttl.to_string().parse().unwrap_or(0.0))),
                Part::Time => out.push_str(&python_str(event.time)),
                Part::Evtype => out.push_str(if event.is_metric() { "metric" } else { "log" }),
                Part::Attribute(key) => {
                    let v = event.attributes.iter().rev().find(|(k, _)| k == key);
                    out.push_str(&v.ok_or_else(|| format!("no attribute {key:?} for the topic"))?.1);
                }
                Part::Tag(i) => {
                    out.push_str(event.tags.get(*i).ok_or_else(|| format!("no tag {i} for the topic"))?);
                }
            }
        }
        Ok(())
    }
}

impl Part {
    fn field(field: &str) -> Result<Part, String> {
        if field.contains([':', '!']) {
            return Err(format!("{{{field}}}: format specs and conversions are not supported"));
        }
        let indexed = |name: &str| {
            field
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('['))
                .and_then(|r| r.strip_suffix(']'))
        };
        Ok(match field {
            "hostname" => Part::Hostname,
            "service" => Part::Service,
            "state" => Part::State,
            "description" => Part::Description,
            "metric" => Part::Metric,
            "ttl" => Part::Ttl,
            "time" => Part::Time,
            "evtype" => Part::Evtype,
            _ => {
                if let Some(key) = indexed("attributes") {
                    Part::Attribute(key.to_string())
                } else if let Some(i) = indexed("tags").and_then(|i| i.parse().ok()) {
                    Part::Tag(i)
                } else {
                    return Err(format!(
                        "{{{field}}} is not an event field (hostname, service, state, description, metric, ttl, time, evtype, attributes[key], tags[n])"
                    ));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        let mut ev = Event::new("web1", "disk /var");
        ev.attributes = vec![("region".into(), "eu".into())];
        ev.tags = vec!["t0".into()];
        ev.metric = Some(Metric::Float(2.5));
        ev
    }

    fn render(template: &str) -> Result<String, String> {
        let mut out = String::new();
        Template::parse(template)?.render(&event(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn topics_are_filled_in_as_python_formats_them() {
        assert_eq!(render("{hostname}.{service}").unwrap(), "web1.disk /var");
        assert_eq!(
            render("metrics.{attributes[region]}.{service}").unwrap(),
            "metrics.eu.disk /var"
        );
        assert_eq!(render("{tags[0]}.{metric}.{{x}}").unwrap(), "t0.2.5.{x}");
        assert_eq!(render("{evtype}.{state}").unwrap(), "metric.None");
    }

    #[test]
    fn a_missing_attribute_is_an_error_for_that_event_and_a_bad_template_for_the_config() {
        assert!(render("{attributes[dc]}").unwrap_err().contains("dc"));
        assert!(render("{tags[3]}").is_err());
        assert!(Template::parse("{nope}").unwrap_err().contains("not an event field"));
        assert!(Template::parse("{service").is_err());
        assert!(Template::parse("a}").is_err());
        assert!(Template::parse("{time:.0f}").is_err());
    }

    #[test]
    fn message_ids_depend_on_subject_and_payload_only() {
        assert_eq!(message_id("a.b", b"x"), message_id("a.b", b"x"));
        assert_ne!(message_id("a.b", b"x"), message_id("a.c", b"x"));
        assert_ne!(message_id("a.b", b"x"), message_id("a.b", b"y"));
    }
}
