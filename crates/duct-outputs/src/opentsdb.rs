//! `duct.outputs.opentsdb.OpenTSDB` and `duct.outputs.bosun.Bosun`: data
//! points as JSON to `/api/put` ([`crate::opentsdb_json`]), one request per
//! batch. Bosun takes the same API and, as Duct did, first gets a `rate`
//! metadata entry for each metric it has not been told about, on
//! `/api/metadata/put`.
//!
//! `/api/put?details` makes OpenTSDB say how many points of a batch it
//! stored and which it refused. A refused point is refused for good (a bad
//! name, a missing tag): the batch is done with, and the refused points
//! are counted as dropped.

use std::collections::HashSet;
use std::sync::OnceLock;

use duct_core::config::Diagnostic;
use duct_core::{Batch, BoxFuture, Output, OutputArgs, OutputError, OutputSpec};
use serde::Deserialize;

use crate::http_push::{body_excerpt, is_retryable, names_with_http, url_with_path, Endpoint, HttpOptions};
use crate::opentsdb_json::{metric_name, put_body, rate_metadata_body};

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    url: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "http://localhost:4242".into(),
        }
    }
}

fn options() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    names_with_http::<Options>(&NAMES)
}

pub fn spec() -> OutputSpec {
    let mut spec = OutputSpec::new::<Options>(
        "duct.outputs.opentsdb.OpenTSDB",
        "Sends metrics to OpenTSDB's `/api/put` as JSON, one request per batch",
        true,
        build_opentsdb,
    )
    .with_default_maxrate(100.0);
    spec.options = options;
    spec
}

pub fn bosun_spec() -> OutputSpec {
    let mut spec = OutputSpec::new::<Options>(
        "duct.outputs.bosun.Bosun",
        "Sends metrics to Bosun's `/api/put`, with `rate` metadata for each new metric on `/api/metadata/put`",
        true,
        build_bosun,
    )
    .with_default_maxrate(100.0);
    spec.options = options;
    spec
}

/// The endpoint at `path` under the `url` option.
fn endpoint(args: &OutputArgs<'_>, url: &str, path: &str, query: Option<&str>) -> Result<Endpoint, Diagnostic> {
    let http: HttpOptions = args.options()?;
    let mut url = url_with_path(args, url, path)?;
    url.set_query(query);
    Endpoint::new(args, "url", url.as_str(), &http)
}

fn build(args: &OutputArgs<'_>, bosun: bool) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: Options = args.options()?;
    let put = endpoint(args, &opts.url, "/api/put", Some("details"))?;
    let metadata = if bosun {
        Some(endpoint(args, &opts.url, "/api/metadata/put", None)?)
    } else {
        None
    };
    Ok(Box::new(OpenTsdb {
        put,
        metadata,
        described: HashSet::new(),
    }))
}

fn build_opentsdb(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    build(args, false)
}

fn build_bosun(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    build(args, true)
}

struct OpenTsdb {
    put: Endpoint,
    /// Bosun's metadata endpoint.
    metadata: Option<Endpoint>,
    /// Metrics Bosun has metadata for.
    described: HashSet<String>,
}

/// `/api/put?details`'s answer: how many points failed.
fn failed_points(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("failed")?.as_u64().map(|n| n as usize)
}

impl OpenTsdb {
    /// Bosun: metadata for the batch's new metrics, before their points.
    async fn describe(&mut self, batch: &Batch) -> Result<(), OutputError> {
        let Some(endpoint) = &self.metadata else {
            return Ok(());
        };
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        for event in batch.iter() {
            let name = metric_name(&event.service);
            if !self.described.contains(name.as_ref()) && seen.insert(name.clone()) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        let body = rate_metadata_body(&names);
        let answer = endpoint.post(body, "application/json").await?;
        // Metadata is a courtesy to Bosun's UI: a refusal is logged and not
        // asked again, and never holds the points back.
        if !answer.status.is_success() {
            if is_retryable(answer.status) {
                return endpoint.judge(&answer, 0);
            }
            tracing::warn!(
                url = %endpoint.url(),
                status = answer.status.as_u16(),
                answer = %body_excerpt(&answer.body),
                "Bosun refused metadata; the points are sent anyway"
            );
        }
        self.described.extend(names.into_iter().map(|n| n.into_owned()));
        Ok(())
    }
}

impl Output for OpenTsdb {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            let (body, points) = put_body(batch.iter());
            if points == 0 {
                return Ok(());
            }
            self.describe(batch).await?;
            let answer = self.put.post(body, "application/json").await?;
            if answer.status.as_u16() == 400 {
                // Some points refused: the rest were stored.
                if let Some(failed) = failed_points(&answer.body) {
                    return Err(OutputError::new(format!(
                        "POST {} stored {} of {points} points and refused {failed}: {}",
                        self.put.url(),
                        points - failed.min(points),
                        body_excerpt(&answer.body)
                    ))
                    .after(batch.len())
                    .rejecting(failed.min(batch.len())));
                }
            }
            self.put.judge(&answer, batch.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_say_how_many_points_failed() {
        let body =
            br#"{"errors":[{"datapoint":{"metric":"x"},"error":"Unable to parse value"}],"failed":1,"success":4}"#;
        assert_eq!(failed_points(body), Some(1));
        assert_eq!(failed_points(b"<html>"), None);
    }
}
