//! `duct.sources.network.HTTP`: one HTTP(S) request per tick over a fresh
//! connection, timed phase by phase the way a prober times it.
//!
//! Duct's options (`url`, `method`, `match`, `useragent`, `timeout`) keep
//! their meaning and defaults; ductd adds `headers`, `body`,
//! `expect_status`, `follow_redirects`, `tls_verify`, `ca` and
//! `max_body_bytes`. The request is made by the shared client
//! ([`duct_http::client`]), which opens the connection itself and times
//! each phase, follows redirects (credentials and `headers` only to the
//! configured origin, never after https→http) and bounds the body.
//!
//! Events: `.latency` (ms, the whole check, redirects included), as Duct;
//! `.status`; `.latency.dns`, `.latency.connect`, `.latency.tls` (https),
//! `.latency.first_byte` (from the request written to the first byte of
//! the answer), each summed over redirects; and `.cert_expiry`, days until
//! the leaf certificate of the server that gave the final answer expires
//! (when that hop was https). A timeout, a refused connection, a TLS
//! failure, an unexpected status or a missing `match` makes `.latency`
//! critical, with the reason in its description.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use duct_http::client::{self, Client, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Url};
use serde::Deserialize;

use super::{cert, check_budget, ms, tls_policy, GRACE};

/// Duct's default for `timeout`, in seconds.
const DUCT_TIMEOUT: f64 = 60.0;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// What to request; `http://{hostname}/` by default.
    url: Option<String>,
    method: String,
    /// Text the body must contain.
    #[serde(rename = "match")]
    match_text: Option<String>,
    useragent: String,
    /// Seconds the whole check may take (also the common option).
    timeout: Option<f64>,
    /// Extra request header fields; they override the defaults and go
    /// only to the configured origin.
    headers: BTreeMap<String, String>,
    /// A request body.
    body: Option<String>,
    /// Statuses that count as up: codes, `2xx`-style classes or
    /// `200-299` ranges. Any 2xx or 3xx by default.
    expect_status: Option<StatusOption>,
    follow_redirects: bool,
    /// Verify the server's certificate (against `ca`, else the system's
    /// CA store).
    tls_verify: bool,
    ca: Option<PathBuf>,
    /// The most body read; a longer body fails the check.
    max_body_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: None,
            method: "GET".into(),
            match_text: None,
            useragent: "Duct HTTP checker".into(),
            timeout: None,
            headers: BTreeMap::new(),
            body: None,
            expect_status: None,
            follow_redirects: true,
            tls_verify: true,
            ca: None,
            max_body_bytes: 10 << 20,
        }
    }
}

/// `expect_status` as written: one entry or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusOption {
    One(StatusEntry),
    Many(Vec<StatusEntry>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusEntry {
    Code(i64),
    Text(String),
}

/// Inclusive ranges of accepted status codes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    fn default_set() -> Self {
        StatusSet(vec![(200, 399)])
    }

    fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    fn parse(option: &StatusOption) -> Result<StatusSet, String> {
        let entries: Vec<&StatusEntry> = match option {
            StatusOption::One(e) => vec![e],
            StatusOption::Many(list) => list.iter().collect(),
        };
        if entries.is_empty() {
            return Err("lists no status".into());
        }
        let code = |v: i64| u16::try_from(v).ok().filter(|c| (100..=599).contains(c));
        let mut ranges = Vec::new();
        for e in entries {
            let range = match e {
                StatusEntry::Code(v) => code(*v).map(|c| (c, c)),
                StatusEntry::Text(t) => {
                    let t = t.trim();
                    if let Some(class) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
                        class
                            .parse::<i64>()
                            .ok()
                            .and_then(|c| code(c * 100))
                            .map(|lo| (lo, lo + 99))
                    } else if let Some((lo, hi)) = t.split_once('-') {
                        match (
                            lo.trim().parse().ok().and_then(code),
                            hi.trim().parse().ok().and_then(code),
                        ) {
                            (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
                            _ => None,
                        }
                    } else {
                        t.parse().ok().and_then(code).map(|c| (c, c))
                    }
                }
            };
            let Some(range) = range else {
                let shown = match e {
                    StatusEntry::Code(v) => v.to_string(),
                    StatusEntry::Text(t) => format!("`{t}`"),
                };
                return Err(format!(
                    "{shown} is not a status code (100 to 599), a class like `2xx` or a range like `200-299`"
                ));
            };
            ranges.push(range);
        }
        Ok(StatusSet(ranges))
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.network.HTTP",
        "An HTTP(S) request per tick over a fresh connection: `url` (default http://{hostname}/), `method`, \
         `match` (text the body must contain), `useragent`, `timeout` (whole check, s), `headers`, `body`, \
         `expect_status` (default 2xx or 3xx), `follow_redirects` (true), `tls_verify` (true), `ca`, \
         `max_body_bytes` (10 MiB)",
        &[
            "(service).latency: the whole check, ms (critical on timeout, refusal, TLS failure, unexpected status, missing match)",
            "(service).status: the final response's status code",
            "(service).latency.dns: resolving the host, ms",
            "(service).latency.connect: the TCP connect, ms",
            "(service).latency.tls: the TLS handshake, ms (https)",
            "(service).latency.first_byte: from the request sent to the first byte of the answer, ms",
            "(service).cert_expiry: days until the certificate of the server that answered expires (https)",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let url_text = o
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}/", args.settings.hostname));
    let not_http = || args.invalid("url", format!("`{url_text}` is not an http:// or https:// URL"));
    let url = match Url::parse(&url_text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        Ok(_) | Err(client::ParseError::RelativeUrlWithoutBase) => return Err(not_http()),
        Err(e) => return Err(args.invalid("url", format!("`{url_text}` is not a URL: {e}"))),
    };
    let method = o.method.trim().to_ascii_uppercase();
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
    {
        return Err(args.invalid("method", format!("`{}` is not an HTTP method", o.method)));
    }
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| args.invalid("method", format!("`{}` is not an HTTP method", o.method)))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &o.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| args.invalid("headers", format!("`{name}` is not a header name")))?;
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(args.invalid("headers", format!("the value of `{name}` contains a line break")));
        }
        let header_value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| args.invalid("headers", format!("the value of `{name}` is not a header value")))?;
        headers.append(header_name, header_value);
    }
    if o.useragent.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(args.invalid("useragent", "contains a line break"));
    }
    let useragent = HeaderValue::from_bytes(o.useragent.as_bytes())
        .map_err(|_| args.invalid("useragent", "is not a header value"))?;
    let expect_status = match &o.expect_status {
        Some(option) => StatusSet::parse(option).map_err(|e| args.invalid("expect_status", e))?,
        None => StatusSet::default_set(),
    };
    if o.max_body_bytes == 0 {
        return Err(args.invalid("max_body_bytes", "must be at least 1"));
    }
    let https = url.scheme() == "https";
    let policy = tls_policy(args, o.tls_verify, o.ca)?;
    // Made now so that `ductd check` reports a missing CA store; an http
    // URL that cannot have it gets the error on a redirect to https.
    let tls = match policy.client_config() {
        Ok(config) => Some(config),
        Err(e) if https => return Err(args.invalid("url", e)),
        Err(_) => None,
    };
    let mut request = Request::from_url(method, url).map_err(|e| args.invalid("url", e))?;
    request.headers = headers;
    request.user_agent = Some(useragent);
    request.body = o.body.map(Bytes::from).unwrap_or_default();
    request.timeout = check_budget(args, DUCT_TIMEOUT);
    request.max_body_bytes = o.max_body_bytes;
    let match_text = o.match_text.filter(|m| !m.is_empty());
    // The body is read whole either way; held only to look for `match`.
    request.keep_body = match_text.is_some();
    request.max_redirects = if o.follow_redirects { client::MAX_REDIRECTS } else { 0 };
    request.tls = tls;
    Ok(Box::new(Http {
        request,
        match_text,
        expect_status,
        client: Client::new(),
    }))
}

pub struct Http {
    /// The request, fixed at build; its timeout is the whole check's.
    request: Request,
    /// Text the body must contain.
    match_text: Option<String>,
    expect_status: StatusSet,
    /// A fresh connection per check, as probers do.
    client: Client,
}

impl Http {
    async fn check(&self, ctx: &SourceContext) -> Vec<Event> {
        let started = Instant::now();
        let outcome = self.client.send(&self.request).await;
        self.events(ctx, started.elapsed(), outcome)
    }

    /// The events of one check.
    fn events(&self, ctx: &SourceContext, elapsed: Duration, outcome: Result<Response, client::Error>) -> Vec<Event> {
        let url = self.request.url();
        let answer = match outcome {
            Ok(answer) => answer,
            Err(e) => {
                return vec![ctx.create_event_prefixed("latency", "critical", format!("{url} - {e}"), ms(elapsed))];
            }
        };
        let status = answer.status.as_u16();
        let status_text = format!("{status} {}", answer.reason).trim_end().to_string();
        let status_ok = self.expect_status.contains(status);
        let matched = self
            .match_text
            .as_deref()
            .map(|text| answer.body.windows(text.len()).any(|w| w == text.as_bytes()));
        let problem = if !status_ok {
            Some(format!("unexpected status {status_text}"))
        } else if matched == Some(false) {
            Some("the body does not contain the `match` text".to_string())
        } else {
            None
        };
        let where_ = if answer.url == *url {
            url.to_string()
        } else {
            format!("{url} (redirected to {})", answer.url)
        };
        let (state, description) = match &problem {
            Some(p) => ("critical", format!("{where_} - {p}")),
            None => ("ok", format!("Latency to {where_}")),
        };
        let status_state = if status_ok { "ok" } else { "critical" };
        let timings = &answer.timings;
        let mut evs = vec![
            ctx.create_event_prefixed("latency", state, description, ms(elapsed)),
            ctx.create_event_prefixed("status", status_state, status_text, i64::from(status)),
            ctx.create_event_prefixed("latency.dns", "ok", "Resolving the host", ms(timings.dns)),
            ctx.create_event_prefixed("latency.connect", "ok", "TCP connect", ms(timings.connect)),
            ctx.create_event_prefixed(
                "latency.first_byte",
                "ok",
                "Request sent to first byte",
                ms(timings.first_byte),
            ),
        ];
        if let Some(tls) = timings.tls {
            evs.push(ctx.create_event_prefixed("latency.tls", "ok", "TLS handshake", ms(tls)));
        }
        let leaf = answer.peer_certificates.as_ref().and_then(|chain| chain.first());
        if let Some(not_after) = leaf.and_then(|leaf| cert::not_after(leaf.as_ref()).ok()) {
            let days = cert::days_left(not_after, duct_core::event::now());
            evs.push(ctx.create_event_prefixed(
                "cert_expiry",
                "ok",
                format!(
                    "Certificate of {} expires in {days:.1} days",
                    answer.url.host_str().unwrap_or_default()
                ),
                days,
            ));
        }
        evs
    }
}

impl Source for Http {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.request.timeout + GRACE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::fixture;
    use crate::testing::context;
    use duct_core::Metric;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The check of `url` with the defaults, within `budget`.
    fn http(url: &str, budget: Duration) -> Http {
        let mut request = Request::get(url).unwrap().timeout(budget);
        request.user_agent = Some(HeaderValue::from_static("Duct HTTP checker"));
        request.max_body_bytes = 1 << 20;
        request.keep_body = true;
        Http {
            request,
            match_text: None,
            expect_status: StatusSet::default_set(),
            client: Client::new(),
        }
    }

    /// A server that answers every connection with `answer`, then closes
    /// (or, with `hold`, keeps the connection open and silent).
    async fn serve(answer: Vec<u8>, hold: bool) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut req = vec![0u8; 4096];
                    let _ = s.read(&mut req).await;
                    let _ = s.write_all(&answer).await;
                    if hold {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                });
            }
        });
        port
    }

    async fn run(http: Http) -> Vec<Event> {
        let (ctx, _) = context("web");
        http.check(&ctx).await
    }

    fn by<'a>(evs: &'a [Event], service: &str) -> &'a Event {
        evs.iter()
            .find(|e| e.service == service)
            .unwrap_or_else(|| panic!("no {service} in {evs:?}"))
    }

    #[test]
    fn expect_status_reads_codes_classes_and_ranges() {
        let one = |e| StatusSet::parse(&StatusOption::One(e));
        assert_eq!(one(StatusEntry::Code(204)), Ok(StatusSet(vec![(204, 204)])));
        assert_eq!(one(StatusEntry::Text("4xx".into())), Ok(StatusSet(vec![(400, 499)])));
        assert_eq!(
            one(StatusEntry::Text("200-204".into())),
            Ok(StatusSet(vec![(200, 204)]))
        );
        assert_eq!(one(StatusEntry::Text("301".into())), Ok(StatusSet(vec![(301, 301)])));
        for bad in ["9xx", "204-200", "abc", "1000"] {
            assert!(one(StatusEntry::Text(bad.into())).is_err(), "{bad}");
        }
        assert!(one(StatusEntry::Code(99)).is_err());
        assert!(StatusSet::parse(&StatusOption::Many(vec![])).is_err());
        assert!(StatusSet::default_set().contains(302));
        assert!(!StatusSet::default_set().contains(404));
    }

    #[tokio::test]
    async fn a_captured_nginx_answer_is_ok_and_timed() {
        let port = serve(fixture("nginx-200.http"), false).await;
        let mut p = http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
        p.match_text = Some("hello from duct".into());
        let evs = run(p).await;
        let latency = by(&evs, "web.latency");
        assert_eq!(latency.state.as_deref(), Some("ok"), "{}", latency.description);
        assert_eq!(by(&evs, "web.status").metric, Some(Metric::Int(200)));
        for phase in ["dns", "connect", "first_byte"] {
            let m = by(&evs, &format!("web.latency.{phase}")).metric.unwrap().as_f64();
            assert!(m >= 0.0 && m <= latency.metric.unwrap().as_f64(), "{phase}: {m}");
        }
        assert!(evs.iter().all(|e| e.service != "web.cert_expiry"));
    }

    #[tokio::test]
    async fn a_missing_match_or_a_bad_status_is_critical() {
        let port = serve(fixture("nginx-200.http"), false).await;
        let mut p = http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
        p.match_text = Some("goodbye".into());
        let evs = run(p).await;
        let latency = by(&evs, "web.latency");
        assert_eq!(latency.state.as_deref(), Some("critical"));
        assert!(
            latency.description.ends_with("does not contain the `match` text"),
            "{}",
            latency.description
        );
        assert_eq!(by(&evs, "web.status").state.as_deref(), Some("ok"));

        let port = serve(fixture("nginx-404.http"), false).await;
        let evs = run(http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5))).await;
        assert_eq!(by(&evs, "web.latency").state.as_deref(), Some("critical"));
        assert!(by(&evs, "web.latency")
            .description
            .ends_with("unexpected status 404 Not Found"));
        assert_eq!(by(&evs, "web.status").state.as_deref(), Some("critical"));
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_for_match() {
        let port = serve(fixture("blackbox-metrics-chunked.http"), false).await;
        let mut p = http(&format!("http://127.0.0.1:{port}/metrics"), Duration::from_secs(5));
        p.match_text = Some("blackbox_exporter_build_info".into());
        let evs = run(p).await;
        assert_eq!(by(&evs, "web.latency").state.as_deref(), Some("ok"));
    }

    #[tokio::test]
    async fn garbage_silence_and_endless_bodies_are_critical() {
        let garbage = serve(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), false).await;
        let evs = run(http(&format!("http://127.0.0.1:{garbage}/"), Duration::from_secs(5))).await;
        assert_eq!(evs.len(), 1);
        assert!(
            evs[0].description.contains("invalid response: not an HTTP response"),
            "{}",
            evs[0].description
        );

        let silent = serve(Vec::new(), true).await;
        let evs = run(http(&format!("http://127.0.0.1:{silent}/"), Duration::from_millis(300))).await;
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        assert!(
            evs[0]
                .description
                .ends_with("timed out after 0.3 s while waiting for the answer"),
            "{}",
            evs[0].description
        );

        let mut endless = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        endless.extend(vec![b'x'; 300_000]);
        let port = serve(endless, true).await;
        let mut p = http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
        p.request.max_body_bytes = 100_000;
        let evs = run(p).await;
        assert!(
            evs[0].description.contains("larger than max_body_bytes (100000 bytes)"),
            "{}",
            evs[0].description
        );

        let short = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(), false).await;
        let evs = run(http(&format!("http://127.0.0.1:{short}/"), Duration::from_secs(5))).await;
        assert!(
            evs[0].description.contains("closed after 3 of 10 body bytes"),
            "{}",
            evs[0].description
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_named() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let evs = run(http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5))).await;
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        assert!(
            evs[0]
                .description
                .ends_with(&format!("connection refused by 127.0.0.1:{port}")),
            "{}",
            evs[0].description
        );
    }
}
