//! `duct.outputs.prometheus.RemoteWrite` (ductd's; Duct had none):
//! Prometheus remote write 1.0 — a snappy-compressed protobuf
//! `WriteRequest` per batch, POSTed to any compatible receiver
//! (Prometheus with `--web.enable-remote-write-receiver`, Mimir, Thanos
//! Receive, VictoriaMetrics, Cortex).
//!
//! Series are named as on the Prometheus output's page (`prefix` +
//! service, see [`crate::prometheus::metric_name`]), with the labels `host`
//! and every attribute. The state is not a label: a series whose identity
//! changed with its state would break in two each time a check turned
//! critical. Each event is one sample stamped with its own time; the
//! samples of a series are sent in time order, as receivers require.
//!
//! Answers are read as for every HTTP output ([`crate::http_push`]): 5xx
//! and 429 keep the batch for a retry (the protocol asks for that), other
//! 4xx are final (an out-of-order sample, for one, will never be taken).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use duct_core::config::Diagnostic;
use duct_core::{Batch, BoxFuture, Event, Output, OutputArgs, OutputError, OutputSpec};
use duct_http::client::{header, HeaderName, HeaderValue};
use prost::Message;
use serde::Deserialize;

use crate::http_push::{names_with_http, url_with_path, Endpoint, HttpOptions};
use crate::prometheus::{label_name, metric_name};

/// `prometheus.WriteRequest` (remote write 1.0; metadata left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name; `__name__` is the metric name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The receiver's write endpoint, e.g. `http://prometheus:9090/api/v1/write`.
    url: String,
    prefix: String,
    /// Sent as `Authorization: Bearer …`.
    token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "http://localhost:9090/api/v1/write".into(),
            prefix: "duct_".into(),
            token: None,
        }
    }
}

fn options() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    names_with_http::<Options>(&NAMES)
}

pub fn spec() -> OutputSpec {
    let mut spec = OutputSpec::new::<Options>(
        "duct.outputs.prometheus.RemoteWrite",
        "Sends metrics by Prometheus remote write (protobuf, snappy) to Prometheus, Mimir, Thanos, VictoriaMetrics",
        true,
        build,
    );
    spec.options = options;
    spec
}

fn build(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: Options = args.options()?;
    let http: HttpOptions = args.options()?;
    let url = url_with_path(args, &opts.url, "")?;
    let mut endpoint = Endpoint::new(args, "url", url.as_str(), &http)?;
    let headers = &mut endpoint.request_mut().headers;
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    headers.insert(
        HeaderName::from_static("x-prometheus-remote-write-version"),
        HeaderValue::from_static("0.1.0"),
    );
    if let Some(token) = &opts.token {
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| args.invalid("token", "must be text without line breaks"))?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    Ok(Box::new(RemoteWrite {
        endpoint,
        prefix: opts.prefix,
        encoder: snap::raw::Encoder::new(),
    }))
}

struct RemoteWrite {
    endpoint: Endpoint,
    prefix: String,
    encoder: snap::raw::Encoder,
}

/// An event's labels, sorted by name, `__name__` first among equals.
fn labels(prefix: &str, event: &Event) -> Vec<Label> {
    let mut labels = BTreeMap::new();
    labels.insert("__name__".to_string(), metric_name(prefix, &event.service));
    labels.insert("host".to_string(), event.host.clone());
    for (name, value) in &event.attributes {
        if let Some(label) = label_name(name) {
            // Empty values mean "no label" to Prometheus.
            if !value.is_empty() {
                labels.insert(label, value.clone());
            }
        }
    }
    labels.into_iter().map(|(name, value)| Label { name, value }).collect()
}

/// The request for a batch: one series per label set, its samples in time
/// order. Events without a metric have no sample.
pub fn write_request<'a>(prefix: &str, events: impl Iterator<Item = &'a Event>) -> WriteRequest {
    let mut series: BTreeMap<Vec<Label>, Vec<Sample>> = BTreeMap::new();
    for event in events {
        let Some(metric) = event.metric else { continue };
        series.entry(labels(prefix, event)).or_default().push(Sample {
            value: metric.as_f64(),
            timestamp: (event.time * 1000.0).round() as i64,
        });
    }
    WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|s| s.timestamp);
                TimeSeries { labels, samples }
            })
            .collect(),
    }
}

impl Output for RemoteWrite {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            let request = write_request(&self.prefix, batch.iter());
            if request.timeseries.is_empty() {
                return Ok(());
            }
            let body = self
                .encoder
                .compress_vec(&request.encode_to_vec())
                .map_err(|e| OutputError::new(format!("cannot compress a write request: {e}")))?;
            let answer = self.endpoint.post(body, "application/x-protobuf").await?;
            self.endpoint.judge(&answer, batch.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(service: &str, time: f64, value: f64) -> Event {
        let mut e = Event::new("web1", service);
        e.metric = Some(value.into());
        e.time = time;
        e.state = Some("ok".into());
        e.attributes = vec![("mount point".into(), "/var".into()), ("empty".into(), String::new())];
        e
    }

    #[test]
    fn series_are_grouped_labelled_and_in_time_order() {
        let events = [
            event("disk.used", 20.0, 2.0),
            event("disk.used", 10.0, 1.0),
            event("load", 10.5, 0.5),
        ];
        let request = write_request("duct_", events.iter());
        assert_eq!(request.timeseries.len(), 2);
        let disk = &request.timeseries[0];
        let names: Vec<(&str, &str)> = disk
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("__name__", "duct_disk_used"),
                ("host", "web1"),
                ("mount_point", "/var")
            ]
        );
        let stamps: Vec<i64> = disk.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(stamps, [10_000, 20_000]);
        assert_eq!(request.timeseries[1].samples[0].value, 0.5);
    }

    #[test]
    fn the_body_round_trips_through_snappy_and_protobuf() {
        let events = [event("load", 10.0, 1.5)];
        let request = write_request("", events.iter());
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let plain = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(WriteRequest::decode(plain.as_slice()).unwrap(), request);
    }

    #[test]
    fn events_without_a_metric_have_no_sample() {
        let mut e = event("x", 1.0, 1.0);
        e.metric = None;
        assert!(write_request("", [e].iter()).timeseries.is_empty());
    }
}
