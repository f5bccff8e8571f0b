//! InfluxDB outputs: `duct.outputs.influxdb3.InfluxDB3` (Duct's, the v3
//! `/api/v3/write_lp` API) and `duct.outputs.influxdb.InfluxDB` (ductd's,
//! for the 1.x `/write` and 2.x `/api/v2/write` APIs most installations
//! run). Both send a batch as one request of line protocol
//! ([`crate::line_protocol`]); the answer is read as every HTTP output
//! reads it ([`crate::http_push`]).

use std::sync::OnceLock;

use duct_core::config::Diagnostic;
use duct_core::{Batch, BoxFuture, Output, OutputArgs, OutputError, OutputSpec};
use duct_http::client::{header, HeaderValue};
use serde::Deserialize;

use crate::http_push::{names_with_http, url_with_path, Endpoint, HttpOptions};
use crate::line_protocol::{write_point, Precision};

#[derive(Debug, Deserialize)]
#[serde(default)]
struct V3Options {
    url: String,
    database: String,
    token: Option<String>,
    precision: String,
}

impl Default for V3Options {
    fn default() -> Self {
        V3Options {
            url: "http://localhost:8086".into(),
            database: "duct".into(),
            token: None,
            precision: "nanosecond".into(),
        }
    }
}

fn v3_options() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    names_with_http::<V3Options>(&NAMES)
}

pub fn v3_spec() -> OutputSpec {
    let mut spec = OutputSpec::new::<V3Options>(
        "duct.outputs.influxdb3.InfluxDB3",
        "Writes metrics to InfluxDB 3 as line protocol (`/api/v3/write_lp`), one request per batch",
        true,
        build_v3,
    )
    .with_default_maxrate(1000.0);
    spec.options = v3_options;
    spec
}

fn precision(args: &OutputArgs<'_>, name: &str) -> Result<Precision, Diagnostic> {
    Precision::parse(name).ok_or_else(|| {
        args.invalid(
            "precision",
            format!("`{name}` is not one of nanosecond, microsecond, millisecond, second"),
        )
    })
}

fn bearer(args: &OutputArgs<'_>, scheme: &str, token: &str) -> Result<HeaderValue, Diagnostic> {
    let mut value = HeaderValue::try_from(format!("{scheme} {token}"))
        .map_err(|_| args.invalid("token", "must be text without line breaks"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn build_v3(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: V3Options = args.options()?;
    let http: HttpOptions = args.options()?;
    let precision = precision(args, &opts.precision)?;
    if opts.database.is_empty() {
        return Err(args.invalid("database", "needs a database name"));
    }
    let mut url = url_with_path(args, &opts.url, "/api/v3/write_lp")?;
    url.query_pairs_mut()
        .append_pair("db", &opts.database)
        .append_pair("precision", precision.v3_name());
    let mut endpoint = Endpoint::new(args, "url", url.as_str(), &http)?;
    let request = endpoint.request_mut();
    if let Some(token) = &opts.token {
        request
            .headers
            .insert(header::AUTHORIZATION, bearer(args, "Bearer", token)?);
    }
    Ok(Box::new(InfluxDb {
        endpoint,
        precision,
        body: String::new(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    url: String,
    /// 1 (`/write`) or 2 (`/api/v2/write`); by default 2 when `bucket` is
    /// set, otherwise 1.
    version: Option<u8>,
    /// 1.x: the database, and optionally its retention policy.
    database: String,
    retention_policy: Option<String>,
    /// 2.x: the bucket and organisation.
    bucket: Option<String>,
    org: Option<String>,
    /// 2.x token (`Authorization: Token …`); 1.x uses `user`/`password`.
    token: Option<String>,
    precision: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "http://localhost:8086".into(),
            version: None,
            database: "duct".into(),
            retention_policy: None,
            bucket: None,
            org: None,
            token: None,
            precision: "nanosecond".into(),
        }
    }
}

fn options() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    names_with_http::<Options>(&NAMES)
}

pub fn spec() -> OutputSpec {
    let mut spec = OutputSpec::new::<Options>(
        "duct.outputs.influxdb.InfluxDB",
        "Writes metrics to InfluxDB 1.x (`/write`) or 2.x (`/api/v2/write`) as line protocol, one request per batch",
        true,
        build,
    );
    spec.options = options;
    spec
}

fn build(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: Options = args.options()?;
    let http: HttpOptions = args.options()?;
    let precision = precision(args, &opts.precision)?;
    let version = opts.version.unwrap_or(if opts.bucket.is_some() { 2 } else { 1 });
    let path = match version {
        1 => "/write",
        2 => "/api/v2/write",
        other => return Err(args.invalid("version", format!("must be 1 or 2, not {other}"))),
    };
    let mut url = url_with_path(args, &opts.url, path)?;
    match version {
        1 => {
            if opts.database.is_empty() {
                return Err(args.invalid("database", "needs a database name"));
            }
            let mut query = url.query_pairs_mut();
            query
                .append_pair("db", &opts.database)
                .append_pair("precision", precision.v1_name());
            if let Some(rp) = &opts.retention_policy {
                query.append_pair("rp", rp);
            }
        }
        _ => {
            let Some(bucket) = opts.bucket.as_deref().filter(|b| !b.is_empty()) else {
                return Err(args.invalid("bucket", "version 2 needs a bucket"));
            };
            let mut query = url.query_pairs_mut();
            query
                .append_pair("bucket", bucket)
                .append_pair("precision", precision.v2_name());
            if let Some(org) = &opts.org {
                query.append_pair("org", org);
            }
        }
    }
    let mut endpoint = Endpoint::new(args, "url", url.as_str(), &http)?;
    let request = endpoint.request_mut();
    if let Some(token) = &opts.token {
        request
            .headers
            .insert(header::AUTHORIZATION, bearer(args, "Token", token)?);
    }
    Ok(Box::new(InfluxDb {
        endpoint,
        precision,
        body: String::new(),
    }))
}

/// Either output's transport: the endpoint is all that differs.
struct InfluxDb {
    endpoint: Endpoint,
    precision: Precision,
    /// The batch's lines, reused from one send to the next.
    body: String,
}

impl Output for InfluxDb {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            self.body.clear();
            let mut points = 0;
            for event in batch.iter() {
                points += usize::from(write_point(&mut self.body, event, self.precision));
            }
            if points == 0 {
                return Ok(());
            }
            let body = std::mem::take(&mut self.body).into_bytes();
            let answer = self.endpoint.post(body, "text/plain; charset=utf-8").await?;
            self.endpoint.judge(&answer, batch.len())
        })
    }
}
