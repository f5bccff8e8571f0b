//! `duct.sources.network.HTTP`: one HTTP(S) request per tick over a fresh
//! connection, timed phase by phase the way a prober times it.
//!
//! Duct's options (`url`, `method`, `match`, `useragent`, `timeout`) keep
//! their meaning and defaults; ductd adds `headers`, `body`,
//! `expect_status`, `follow_redirects`, `tls_verify`, `ca` and
//! `max_body_bytes`. The client is a small HTTP/1.1 one written here over
//! a tokio `TcpStream` and tokio-rustls: a request with `Connection:
//! close`, then the response head and a body delimited by Content-Length,
//! chunks or the close (parsed by [`super::response`]), bounded by
//! `max_body_bytes`. Writing it here rather than using hyper or reqwest
//! keeps the tree lean and gives the exact moment each phase ends.
//!
//! Events: `.latency` (ms, the whole check, redirects included), as Duct;
//! `.status`; `.latency.dns`, `.latency.connect`, `.latency.tls` (https),
//! `.latency.first_byte` (from the request written to the first byte of
//! the answer), each summed over redirects; and for https `.cert_expiry`,
//! days until the last server's leaf certificate expires. A timeout, a
//! refused connection, a TLS failure, an unexpected status or a missing
//! `match` makes `.latency` critical, with the reason in its description.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use rustls::ClientConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::response::{parse_head, ChunkedDecoder, Framing, ResponseHead};
use super::url::{Scheme, Url};
use super::{check_budget, connect, handshake, ms, resolve, tls_policy, CheckError, Phase, Progress, TlsPolicy, GRACE};

/// Duct's default for `timeout`, in seconds.
const DUCT_TIMEOUT: f64 = 60.0;
/// Redirects followed before the check gives up.
const MAX_REDIRECTS: usize = 10;
/// The largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 << 10;

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
    /// Extra request header fields; they override the defaults.
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
            "(service).cert_expiry: days until the server's certificate expires (https)",
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
    let url = Url::parse(&url_text).map_err(|e| args.invalid("url", e))?;
    let method = o.method.trim().to_ascii_uppercase();
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
    {
        return Err(args.invalid("method", format!("`{}` is not an HTTP method", o.method)));
    }
    for (name, value) in &o.headers {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(args.invalid("headers", format!("`{name}` is not a header name")));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(args.invalid("headers", format!("the value of `{name}` contains a line break")));
        }
    }
    if o.useragent.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(args.invalid("useragent", "contains a line break"));
    }
    let expect_status = match &o.expect_status {
        Some(option) => StatusSet::parse(option).map_err(|e| args.invalid("expect_status", e))?,
        None => StatusSet::default_set(),
    };
    if o.max_body_bytes == 0 {
        return Err(args.invalid("max_body_bytes", "must be at least 1"));
    }
    let policy = tls_policy(args, o.tls_verify, o.ca)?;
    // Made now so that `ductd check` reports a missing CA store; an http
    // URL gets it on its first redirect to https.
    let tls = if url.scheme == Scheme::Https {
        Some(policy.client_config().map_err(|e| args.invalid("url", e))?)
    } else {
        None
    };
    Ok(Box::new(Http {
        request: Arc::new(RequestPlan {
            url,
            method,
            match_text: o.match_text.filter(|m| !m.is_empty()),
            useragent: o.useragent,
            headers: o.headers.into_iter().collect(),
            body: o.body,
            expect_status,
            follow_redirects: o.follow_redirects,
            policy,
            tls,
            max_body_bytes: o.max_body_bytes,
        }),
        budget: check_budget(args, DUCT_TIMEOUT),
    }))
}

/// Everything a check sends and expects, fixed at build.
#[derive(Debug)]
struct RequestPlan {
    url: Url,
    method: String,
    match_text: Option<String>,
    useragent: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    expect_status: StatusSet,
    follow_redirects: bool,
    policy: TlsPolicy,
    /// The TLS configuration of an https `url`, made at build.
    tls: Option<Arc<ClientConfig>>,
    max_body_bytes: u64,
}

pub struct Http {
    request: Arc<RequestPlan>,
    /// The whole check's time, redirects included.
    budget: Duration,
}

/// What the last response of a check said.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    reason: String,
    /// The final URL, after redirects.
    url: Url,
    /// Whether the body held `match` (`None` without `match`).
    matched: Option<bool>,
}

impl Http {
    async fn check(&self, ctx: &SourceContext) -> Vec<Event> {
        let started = Instant::now();
        let mut progress = Progress::new();
        let outcome = match tokio::time::timeout(self.budget, fetch(&self.request, &mut progress)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(progress.timeout(self.budget)),
        };
        events(ctx, &self.request, started.elapsed(), &progress, outcome)
    }
}

impl Source for Http {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

/// The events of one check.
fn events(
    ctx: &SourceContext,
    plan: &RequestPlan,
    elapsed: Duration,
    progress: &Progress,
    outcome: Result<Answer, CheckError>,
) -> Vec<Event> {
    let url = &plan.url;
    let answer = match outcome {
        Ok(answer) => answer,
        Err(e) => {
            return vec![ctx.create_event_prefixed("latency", "critical", format!("{url} - {e}"), ms(elapsed))];
        }
    };
    let status_ok = plan.expect_status.contains(answer.status);
    let problem = if !status_ok {
        Some(format!("unexpected status {} {}", answer.status, answer.reason))
    } else if answer.matched == Some(false) {
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
        Some(p) => ("critical", format!("{where_} - {}", p.trim_end())),
        None => ("ok", format!("Latency to {where_}")),
    };
    let status_state = if status_ok { "ok" } else { "critical" };
    let mut evs = vec![
        ctx.create_event_prefixed("latency", state, description, ms(elapsed)),
        ctx.create_event_prefixed(
            "status",
            status_state,
            format!("{} {}", answer.status, answer.reason).trim_end().to_string(),
            i64::from(answer.status),
        ),
        ctx.create_event_prefixed("latency.dns", "ok", "Resolving the host", ms(progress.dns)),
        ctx.create_event_prefixed("latency.connect", "ok", "TCP connect", ms(progress.connect)),
        ctx.create_event_prefixed(
            "latency.first_byte",
            "ok",
            "Request sent to first byte",
            ms(progress.first_byte),
        ),
    ];
    if let Some(tls) = progress.tls {
        evs.push(ctx.create_event_prefixed("latency.tls", "ok", "TLS handshake", ms(tls)));
    }
    if let Some(days) = progress.cert_expiry {
        evs.push(ctx.create_event_prefixed(
            "cert_expiry",
            "ok",
            format!("Certificate of {} expires in {days:.1} days", answer.url.host),
            days,
        ));
    }
    evs
}

/// Requests the plan's URL, following redirects when asked.
async fn fetch(plan: &RequestPlan, progress: &mut Progress) -> Result<Answer, CheckError> {
    let mut url = plan.url.clone();
    let mut method = plan.method.clone();
    let mut body = plan.body.as_deref();
    let mut hops = 0;
    loop {
        let response = request(plan, &url, &method, body, progress).await?;
        let location = response.location.filter(|_| plan.follow_redirects);
        match location {
            Some(location) if matches!(response.status, 301 | 302 | 303 | 307 | 308) => {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(CheckError::Failed(format!("more than {MAX_REDIRECTS} redirects")));
                }
                url = url
                    .join(&location)
                    .map_err(|e| CheckError::Failed(format!("cannot follow the redirect: {e}")))?;
                // As browsers do: a 303, or a 301/302 after a POST, is
                // followed with a GET and no body.
                if response.status == 303 || (matches!(response.status, 301 | 302) && method == "POST") {
                    method = "GET".into();
                    body = None;
                }
            }
            _ => {
                return Ok(Answer {
                    status: response.status,
                    reason: response.reason,
                    url,
                    matched: response.matched,
                })
            }
        }
    }
}

/// One response, read.
struct Response {
    status: u16,
    reason: String,
    location: Option<String>,
    matched: Option<bool>,
}

/// One request over a fresh connection.
async fn request(
    plan: &RequestPlan,
    url: &Url,
    method: &str,
    body: Option<&str>,
    progress: &mut Progress,
) -> Result<Response, CheckError> {
    progress.enter(Phase::Resolving);
    let addr = resolve(&url.host, url.port).await?;
    let took = progress.enter(Phase::Connecting);
    progress.dns += took;
    let tcp = connect(addr).await?;
    let head = request_head(plan, url, method, body);
    match url.scheme {
        Scheme::Http => {
            let took = progress.enter(Phase::Sending);
            progress.connect += took;
            exchange(tcp, plan, method, &head, body, progress).await
        }
        Scheme::Https => {
            let took = progress.enter(Phase::Handshaking);
            progress.connect += took;
            let config = match &plan.tls {
                Some(c) => c.clone(),
                None => plan
                    .policy
                    .client_config()
                    .map_err(|e| CheckError::Tls(e.to_string()))?,
            };
            let (stream, expiry) = handshake(config, &url.host, tcp).await?;
            let took = progress.enter(Phase::Sending);
            progress.tls = Some(progress.tls.unwrap_or_default() + took);
            progress.cert_expiry = expiry;
            exchange(stream, plan, method, &head, body, progress).await
        }
    }
}

/// The request line and header fields.
fn request_head(plan: &RequestPlan, url: &Url, method: &str, body: Option<&str>) -> String {
    let has = |name: &str| plan.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {} HTTP/1.1\r\n", url.target);
    if !has("host") {
        head.push_str(&format!("Host: {}\r\n", url.host_header()));
    }
    if !has("user-agent") {
        head.push_str(&format!("User-Agent: {}\r\n", plan.useragent));
    }
    if !has("accept") {
        head.push_str("Accept: */*\r\n");
    }
    if let (Some(userinfo), false) = (&url.userinfo, has("authorization")) {
        head.push_str(&format!("Authorization: Basic {}\r\n", base64(userinfo.as_bytes())));
    }
    match body {
        Some(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        None if matches!(method, "POST" | "PUT" | "PATCH") => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    head.push_str("Connection: close\r\n");
    for (name, value) in &plan.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends the request and reads the response on `stream`.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    plan: &RequestPlan,
    method: &str,
    head: &str,
    body: Option<&str>,
    progress: &mut Progress,
) -> Result<Response, CheckError> {
    let io = |what: &'static str| move |e: std::io::Error| CheckError::Failed(format!("{what}: {e}"));
    let mut out = head.as_bytes().to_vec();
    out.extend_from_slice(body.unwrap_or_default().as_bytes());
    stream.write_all(&out).await.map_err(io("sending the request"))?;
    stream.flush().await.map_err(io("sending the request"))?;
    progress.enter(Phase::Waiting);

    let mut buf = Vec::with_capacity(8 << 10);
    let mut first = true;
    let (response_head, mut used) = loop {
        let n = read_some(&mut stream, &mut buf)
            .await
            .map_err(io("reading the response"))?;
        if first && n > 0 {
            first = false;
            let took = progress.enter(Phase::Reading);
            progress.first_byte += took;
        }
        match parse_head(&buf, MAX_HEAD_BYTES).map_err(|e| CheckError::Failed(format!("invalid response: {e}")))? {
            // Interim answers (103 Early Hints) are skipped.
            Some((h, used)) if (100..200).contains(&h.status) && h.status != 101 => {
                buf.drain(..used);
                continue;
            }
            Some(found) => break found,
            None if n == 0 => {
                return Err(CheckError::Failed(if buf.is_empty() {
                    "the server closed the connection without answering".into()
                } else {
                    "the server closed the connection in the middle of the response head".into()
                }))
            }
            None => {}
        }
    };
    let framing = response_head
        .framing(method)
        .map_err(|e| CheckError::Failed(format!("invalid response: {e}")))?;
    let mut body = BodyReader::new(plan, framing);
    loop {
        let done = body.feed(&buf[used..])?;
        buf.clear();
        used = 0;
        if done {
            break;
        }
        let n = read_some(&mut stream, &mut buf).await;
        match n {
            Ok(0) => {
                body.end()?;
                break;
            }
            Ok(_) => {}
            // A TLS server that closes without close_notify ends a body
            // that runs until the close all the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                body.end()?;
                break;
            }
            Err(e) => return Err(io("reading the body")(e)),
        }
    }
    Ok(answer(response_head, body))
}

fn answer(head: ResponseHead, body: BodyReader<'_>) -> Response {
    Response {
        location: head.header("location").map(str::to_string),
        status: head.status,
        reason: head.reason,
        matched: body.matched(),
    }
}

/// Appends what one read returns to `buf`; the count, 0 at the end.
async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 << 10];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Consumes a response body, keeping it only as far as `match` needs.
struct BodyReader<'a> {
    plan: &'a RequestPlan,
    framing: Framing,
    chunked: ChunkedDecoder,
    /// Raw bytes of a chunked body not decoded yet.
    pending: Vec<u8>,
    /// Body bytes so far (after the transfer coding).
    length: u64,
    /// The body, kept when there is a `match` to look for.
    kept: Vec<u8>,
}

impl<'a> BodyReader<'a> {
    fn new(plan: &'a RequestPlan, framing: Framing) -> Self {
        BodyReader {
            plan,
            framing,
            chunked: ChunkedDecoder::default(),
            pending: Vec::new(),
            length: 0,
            kept: Vec::new(),
        }
    }

    /// Takes `input`; true once the body is complete.
    fn feed(&mut self, input: &[u8]) -> Result<bool, CheckError> {
        match self.framing {
            Framing::Empty => Ok(true),
            Framing::Length(total) => {
                let take = input
                    .len()
                    .min(usize::try_from(total - self.length).unwrap_or(usize::MAX));
                self.data(&input[..take])?;
                Ok(self.length == total)
            }
            Framing::UntilClose => {
                self.data(input)?;
                Ok(false)
            }
            Framing::Chunked => {
                self.pending.extend_from_slice(input);
                let mut found = Vec::new();
                let used = self
                    .chunked
                    .decode(&self.pending, |d| found.push(d.to_vec()))
                    .map_err(|e| CheckError::Failed(format!("invalid chunked body: {e}")))?;
                self.pending.drain(..used);
                for d in found {
                    self.data(&d)?;
                }
                if self.pending.len() > 64 << 10 {
                    return Err(CheckError::Failed("invalid chunked body: no progress".into()));
                }
                Ok(self.chunked.is_done())
            }
        }
    }

    fn data(&mut self, data: &[u8]) -> Result<(), CheckError> {
        self.length += data.len() as u64;
        if self.length > self.plan.max_body_bytes {
            return Err(CheckError::Failed(format!(
                "the body is larger than max_body_bytes ({} bytes)",
                self.plan.max_body_bytes
            )));
        }
        if self.plan.match_text.is_some() {
            self.kept.extend_from_slice(data);
        }
        Ok(())
    }

    /// The connection closed: fine only where the close ends the body.
    fn end(&self) -> Result<(), CheckError> {
        match self.framing {
            Framing::UntilClose | Framing::Empty => Ok(()),
            Framing::Length(total) => Err(CheckError::Failed(format!(
                "the connection closed after {} of {total} body bytes",
                self.length
            ))),
            Framing::Chunked => Err(CheckError::Failed("the connection closed before the last chunk".into())),
        }
    }

    fn matched(&self) -> Option<bool> {
        let text = self.plan.match_text.as_deref()?.as_bytes();
        Some(self.kept.windows(text.len()).any(|w| w == text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::fixture;
    use crate::testing::context;
    use duct_core::Metric;
    use tokio::net::TcpListener;

    fn plan(url: &str) -> RequestPlan {
        RequestPlan {
            url: Url::parse(url).unwrap(),
            method: "GET".into(),
            match_text: None,
            useragent: "Duct HTTP checker".into(),
            headers: Vec::new(),
            body: None,
            expect_status: StatusSet::default_set(),
            follow_redirects: true,
            policy: TlsPolicy::default(),
            tls: None,
            max_body_bytes: 1 << 20,
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

    async fn run(plan: RequestPlan, budget: Duration) -> Vec<Event> {
        let (ctx, _) = context("web");
        let http = Http {
            request: Arc::new(plan),
            budget,
        };
        http.check(&ctx).await
    }

    fn by<'a>(evs: &'a [Event], service: &str) -> &'a Event {
        evs.iter()
            .find(|e| e.service == service)
            .unwrap_or_else(|| panic!("no {service} in {evs:?}"))
    }

    #[test]
    fn the_request_carries_duct_defaults_and_overrides() {
        let mut p = plan("http://admin:pw@127.0.0.1:8080/x?y=1");
        p.headers = vec![("Host".into(), "vhost.example".into()), ("X-Probe".into(), "1".into())];
        let head = request_head(&p, &p.url, "POST", Some("abc"));
        assert_eq!(
            head,
            "POST /x?y=1 HTTP/1.1\r\nUser-Agent: Duct HTTP checker\r\nAccept: */*\r\n\
             Authorization: Basic YWRtaW46cHc=\r\nContent-Length: 3\r\nConnection: close\r\n\
             Host: vhost.example\r\nX-Probe: 1\r\n\r\n"
        );
        let p = plan("http://[::1]/");
        assert!(request_head(&p, &p.url, "GET", None).starts_with("GET / HTTP/1.1\r\nHost: [::1]\r\n"));
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
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
        let mut p = plan(&format!("http://127.0.0.1:{port}/"));
        p.match_text = Some("hello from duct".into());
        let evs = run(p, Duration::from_secs(5)).await;
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
        let mut p = plan(&format!("http://127.0.0.1:{port}/"));
        p.match_text = Some("goodbye".into());
        let evs = run(p, Duration::from_secs(5)).await;
        let latency = by(&evs, "web.latency");
        assert_eq!(latency.state.as_deref(), Some("critical"));
        assert!(
            latency.description.ends_with("does not contain the `match` text"),
            "{}",
            latency.description
        );
        assert_eq!(by(&evs, "web.status").state.as_deref(), Some("ok"));

        let port = serve(fixture("nginx-404.http"), false).await;
        let evs = run(plan(&format!("http://127.0.0.1:{port}/")), Duration::from_secs(5)).await;
        assert_eq!(by(&evs, "web.latency").state.as_deref(), Some("critical"));
        assert!(by(&evs, "web.latency")
            .description
            .ends_with("unexpected status 404 Not Found"));
        assert_eq!(by(&evs, "web.status").state.as_deref(), Some("critical"));
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_for_match() {
        let port = serve(fixture("blackbox-metrics-chunked.http"), false).await;
        let mut p = plan(&format!("http://127.0.0.1:{port}/metrics"));
        p.match_text = Some("blackbox_exporter_build_info".into());
        let evs = run(p, Duration::from_secs(5)).await;
        assert_eq!(by(&evs, "web.latency").state.as_deref(), Some("ok"));
    }

    #[tokio::test]
    async fn garbage_silence_and_endless_bodies_are_critical() {
        let garbage = serve(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), false).await;
        let evs = run(plan(&format!("http://127.0.0.1:{garbage}/")), Duration::from_secs(5)).await;
        assert_eq!(evs.len(), 1);
        assert!(
            evs[0].description.contains("invalid response: not an HTTP response"),
            "{}",
            evs[0].description
        );

        let silent = serve(Vec::new(), true).await;
        let evs = run(plan(&format!("http://127.0.0.1:{silent}/")), Duration::from_millis(300)).await;
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
        let mut p = plan(&format!("http://127.0.0.1:{port}/"));
        p.max_body_bytes = 100_000;
        let evs = run(p, Duration::from_secs(5)).await;
        assert!(
            evs[0].description.contains("larger than max_body_bytes (100000 bytes)"),
            "{}",
            evs[0].description
        );

        let short = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(), false).await;
        let evs = run(plan(&format!("http://127.0.0.1:{short}/")), Duration::from_secs(5)).await;
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
        let evs = run(plan(&format!("http://127.0.0.1:{port}/")), Duration::from_secs(5)).await;
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
