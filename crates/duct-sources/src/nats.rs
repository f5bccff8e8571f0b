//! `duct.sources.nats.Nats`: a NATS subscriber. Every message on the
//! `topics` (`>`, everything, by default) is one event in Duct's `format`
//! (`senml-json` by default; see [`duct_nats::format`]); with
//! `append_topic` its service becomes `<subject>.<service>`, as in Duct.
//!
//! With `jetstream: true` each topic is read through a durable pull
//! consumer (named `durable`, `ducted` by default; `durable_2`, … for a
//! second topic and on) on the stream that holds the topic, which must
//! exist: the consumer takes up where it left off after a restart, and a
//! message is acknowledged only once its event is in the pipeline. On core
//! NATS a subscriber that falls behind loses messages to the server's
//! slow-consumer rule; that is NATS's own semantics.
//!
//! Events enter the pipeline as the Riemann listener's do (waiting while it
//! is saturated), in slices of what has arrived. A message that is not an
//! event in the format is counted (`messages refused` in the agent's
//! telemetry), logged at most once a minute, acknowledged on JetStream (it
//! would never parse), and passed over. An unreachable server is reported
//! as the source's problem, with one critical event on the source's
//! service naming the cause, and tried again with a growing delay; once
//! connected the client reconnects by itself.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use duct_core::config::Diagnostic;
use duct_core::throttle::Throttle;
use duct_core::{Event, Poll, Schedule, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use duct_nats::async_nats::jetstream;
use duct_nats::format::{self, Defaults};
use duct_nats::{Connection, Format};
use futures_util::stream::{self, LocalBoxStream, StreamExt};
use futures_util::FutureExt;
use serde::Deserialize;

/// Events handed to the pipeline at once, at most.
const SLICE: usize = 1000;
const REPORT_EVERY: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    servers: Vec<String>,
    topics: Vec<String>,
    format: String,
    jetstream: bool,
    durable: String,
    append_topic: bool,
    credentials_file: Option<PathBuf>,
    nkey_seed_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            servers: vec!["nats://localhost:4222".into()],
            topics: vec![">".into()],
            format: "senml-json".into(),
            jetstream: false,
            durable: "ducted".into(),
            append_topic: false,
            credentials_file: None,
            nkey_seed_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.nats.Nats",
        "Subscribes to NATS topics (core or a durable JetStream consumer); each message is one event in json, SenML JSON or SenML CBOR",
        &["(any): the events the messages hold; with append_topic, the service is prefixed `<subject>.`"],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
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
    // senml-cbor-extended (the output's) reads as senml-cbor.
    let format =
        Format::from_name(&opts.format).ok_or_else(|| args.invalid("format", format!("must be {}", Format::NAMES)))?;
    if opts.topics.is_empty()
        || opts
            .topics
            .iter()
            .any(|t| t.trim().is_empty() || t.contains(char::is_whitespace))
    {
        return Err(args.invalid("topics", "needs one or more subjects, without whitespace"));
    }
    if opts.jetstream && opts.durable.trim().is_empty() {
        return Err(args.invalid("durable", "needs a consumer name"));
    }
    Ok(Box::new(NatsSource {
        config: std::sync::Arc::new(Config {
            connection,
            topics: opts.topics,
            format,
            jetstream: opts.jetstream.then_some(opts.durable),
            append_topic: opts.append_topic,
        }),
    }))
}

struct Config {
    connection: Connection,
    topics: Vec<String>,
    format: Format,
    /// The durable consumer's name, with JetStream.
    jetstream: Option<String>,
    append_topic: bool,
}

pub struct NatsSource {
    config: std::sync::Arc<Config>,
}

impl Source for NatsSource {
    fn schedule(&self) -> Schedule {
        Schedule::Listener
    }

    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        ctx.spawn(run(self.config.clone(), ctx.clone()));
        Ok(())
    }

    fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// One message: its subject and payload, and on JetStream the message to
/// acknowledge.
struct Incoming {
    subject: String,
    payload: Bytes,
    ack: Option<jetstream::Message>,
}

type Messages = LocalBoxStream<'static, Result<Incoming, String>>;

/// Connects, subscribes and reads, for as long as the source runs.
async fn run(config: std::sync::Arc<Config>, ctx: SourceContext) {
    let mut delay = Duration::from_secs(1);
    let mut report = Throttle::default();
    let mut refused_log = Throttle::default();
    loop {
        match subscribe(&config, &ctx).await {
            Ok(messages) => {
                ctx.report_working();
                delay = Duration::from_secs(1);
                read(&config, &ctx, messages, &mut refused_log).await;
                tracing::warn!(service = %ctx.service(), "NATS subscriptions ended; subscribing again");
            }
            Err(why) => {
                ctx.report_problem(&why);
                // One critical event per outage (its first failure), on
                // the source's own service, naming the cause.
                if delay == Duration::from_secs(1) {
                    let event = ctx.create_event("critical", why.clone(), None::<f64>);
                    ctx.queue_back(vec![event]);
                }
                if let Some(held) = report.allow(REPORT_EVERY) {
                    tracing::warn!(service = %ctx.service(), held_back = held, retry_in = ?delay, "{why}");
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

async fn subscribe(config: &Config, ctx: &SourceContext) -> Result<Messages, String> {
    let client = config
        .connection
        .connect(&format!("ductd {}", ctx.service()))
        .await
        .map_err(|e| e.to_string())?;
    let mut streams: Vec<Messages> = Vec::new();
    match &config.jetstream {
        None => {
            for topic in &config.topics {
                let sub = client
                    .subscribe(topic.clone())
                    .await
                    .map_err(|e| format!("cannot subscribe to {topic:?}: {e}"))?;
                streams.push(
                    sub.map(|m| {
                        Ok(Incoming {
                            subject: m.subject.to_string(),
                            payload: m.payload,
                            ack: None,
                        })
                    })
                    .boxed_local(),
                );
                tracing::info!(service = %ctx.service(), %topic, "subscribed");
            }
        }
        Some(durable) => {
            let js = jetstream::new(client);
            for (i, topic) in config.topics.iter().enumerate() {
                let name = if i == 0 {
                    durable.clone()
                } else {
                    format!("{durable}_{}", i + 1)
                };
                let stream_name = js
                    .stream_by_subject(topic.clone())
                    .await
                    .map_err(|e| format!("no JetStream stream holds {topic:?}: {e}"))?;
                let stream = js
                    .get_stream(&stream_name)
                    .await
                    .map_err(|e| format!("JetStream stream {stream_name}: {e}"))?;
                let consumer = stream
                    .get_or_create_consumer(
                        &name,
                        jetstream::consumer::pull::Config {
                            durable_name: Some(name.clone()),
                            filter_subject: topic.clone(),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| format!("JetStream consumer {name} on {stream_name}: {e}"))?;
                let messages = consumer
                    .messages()
                    .await
                    .map_err(|e| format!("JetStream consumer {name}: {e}"))?;
                streams.push(
                    messages
                        .map(|m| match m {
                            Ok(m) => Ok(Incoming {
                                subject: m.subject.to_string(),
                                payload: m.payload.clone(),
                                ack: Some(m),
                            }),
                            Err(e) => Err(e.to_string()),
                        })
                        .boxed_local(),
                );
                tracing::info!(service = %ctx.service(), %topic, stream = %stream_name, consumer = %name, "JetStream consumer ready");
            }
        }
    }
    Ok(stream::select_all(streams).boxed_local())
}

/// Hands the messages' events to the pipeline until the subscriptions end.
async fn read(config: &Config, ctx: &SourceContext, mut messages: Messages, refused_log: &mut Throttle) {
    let settings = ctx.settings();
    let defaults = Defaults {
        host: &settings.hostname,
        ttl: settings.ttl,
    };
    loop {
        let Some(first) = messages.next().await else {
            return;
        };
        let mut events = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Ok(m) => {
                    match decode(config, &m, &defaults) {
                        Ok(ev) => events.push(ev),
                        Err(why) => {
                            duct_core::Telemetry::count(&ctx.telemetry().messages_refused, 1);
                            if let Some(held) = refused_log.allow(REPORT_EVERY) {
                                tracing::warn!(
                                    service = %ctx.service(),
                                    subject = %m.subject,
                                    held_back = held,
                                    "a NATS message is not a {} event: {why}",
                                    config.format.name()
                                );
                            }
                        }
                    }
                    acks.extend(m.ack);
                }
                Err(why) => tracing::debug!(service = %ctx.service(), "JetStream: {why}"),
            }
            if events.len() >= SLICE {
                break;
            }
            // What has arrived already goes with this slice.
            next = messages.next().now_or_never().flatten();
        }
        ctx.queue_back_wait(events).await;
        for m in acks {
            if let Err(e) = m.ack().await {
                tracing::debug!(service = %ctx.service(), "JetStream ack failed (the message comes again): {e}");
            }
        }
    }
}

fn decode(config: &Config, m: &Incoming, defaults: &Defaults<'_>) -> Result<Event, format::DecodeError> {
    let mut ev = format::decode(config.format, &m.payload, defaults)?;
    if config.append_topic {
        ev.service = format!("{}.{}", m.subject, ev.service);
    }
    Ok(ev)
}
