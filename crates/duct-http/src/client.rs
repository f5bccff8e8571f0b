//! The shared HTTP client: what every HTTP source, check and output uses
//! to make a request.
//!
//! A [`Request`] names a method and a URL (`http://`, `https://`, or a
//! Unix socket written as Duct writes it, `unix:/var/run/docker.sock`,
//! with the path to request given by [`Request::path`]), and carries
//! headers, a body, Basic credentials (the `user`/`password` options, or
//! credentials written in the URL, percent-decoded), a timeout for the
//! whole exchange (redirects included), a bound on the body read and the
//! TLS configuration ([`crate::tls`]). [`Client::send`] answers with a
//! [`Response`]: status, headers, the body, the final URL, the certificate
//! chain of the server that gave the final answer, and how long each phase
//! took.
//!
//! hyper runs HTTP/1.1 over streams opened here (see `conn`), so DNS,
//! connect, TLS and the wait for the first byte are each timed. A
//! [`Client::new`] opens a fresh connection per request and asks the
//! server to close it, as a prober does; [`Client::keep_alive`] keeps one
//! idle connection per origin for sources that poll the same server.
//!
//! Redirects are followed up to [`Request::max_redirects`]: the `Location`
//! is resolved against the current URL as RFC 3986 says (the `url`
//! crate), the credentials and the caller's headers go only to the
//! request's own origin and never after a hop from https to http, and a
//! 303, or a 301/302 after a POST, is followed with a GET and no body.

mod conn;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, LOCATION, TRANSFER_ENCODING, USER_AGENT};
use hyper::http::response::Parts;
use percent_encoding::percent_decode_str;
use url::Position;

pub use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
pub use hyper::{Method, StatusCode};
pub use rustls::pki_types::CertificateDer;
pub use url::{ParseError, Url};

use conn::{io, lock, Io, Trace, Watch};

/// Redirects followed by default, as browsers and probers do.
pub const MAX_REDIRECTS: u32 = 10;
/// The largest body read by default.
pub const MAX_BODY_BYTES: u64 = 10 << 20;
/// The largest response head read.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// A request's whole time by default.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a URL cannot be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{text}` is not a URL: {reason}")]
    Parse { text: String, reason: String },
    #[error("`{0}` is not an http://, https:// or unix: URL")]
    Scheme(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("`{0}` names no socket")]
    NoSocket(String),
}

/// Why a request failed, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("cannot make the request: {0}")]
    Request(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("cannot connect to {}: {reason}", path.display())]
    Socket { path: PathBuf, reason: String },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("timed out after {seconds} s while {phase}")]
    Timeout { seconds: f64, phase: &'static str },
    #[error("invalid response: {0}")]
    Invalid(String),
    #[error("the body is larger than max_body_bytes ({0} bytes)")]
    BodyTooLarge(u64),
    #[error("more than {0} redirects")]
    TooManyRedirects(u32),
    #[error("cannot follow the redirect to `{location}`: {reason}")]
    Redirect { location: String, reason: String },
    /// The exchange broke off: a reset, a close in the middle.
    #[error("{0}")]
    Failed(String),
}

/// What a request is doing, for the description of a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Resolving,
    Connecting,
    Handshaking,
    Sending,
    Waiting,
    Reading,
}

impl Phase {
    /// The phase as the end of "timed out after 5 s while …".
    pub fn doing(self) -> &'static str {
        match self {
            Phase::Resolving => "resolving the name",
            Phase::Connecting => "connecting",
            Phase::Handshaking => "in the TLS handshake",
            Phase::Sending => "sending the request",
            Phase::Waiting => "waiting for the answer",
            Phase::Reading => "reading the answer",
        }
    }
}

/// How long each phase of a request took, summed over its redirects. A
/// request on a kept-alive connection spends nothing on DNS, connect or
/// TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings {
    pub dns: Duration,
    pub connect: Duration,
    /// The TLS handshakes; `None` when no hop was https.
    pub tls: Option<Duration>,
    /// From the request sent to the first byte of the answer.
    pub first_byte: Duration,
}

/// Basic credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn header(&self) -> HeaderValue {
        let encoded = base64(format!("{}:{}", self.user, self.password).as_bytes());
        let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
            // Base64 is visible ASCII: an invariant.
            .expect("base64 is a valid header value");
        value.set_sensitive(true);
        value
    }
}

/// One request, as a source or output configures it once and sends it
/// every tick.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Without credentials (they are in `auth`) or fragment.
    url: Url,
    /// The path and query sent over a Unix socket.
    socket_target: Option<String>,
    /// Header fields sent to the request's own origin; they override the
    /// defaults (`Host`, `User-Agent`, `Accept`, `Authorization`).
    pub headers: HeaderMap,
    /// `User-Agent`, sent on every hop.
    pub user_agent: Option<HeaderValue>,
    pub body: Bytes,
    /// Basic credentials, sent to the request's own origin only.
    pub auth: Option<BasicAuth>,
    /// The whole exchange, redirects and body included.
    pub timeout: Duration,
    /// The most body read; a longer body is an error.
    pub max_body_bytes: u64,
    /// Keep the body for the response; without it the body is still read
    /// (and bounded) but not held, for callers that only time a request.
    pub keep_body: bool,
    /// Redirects followed; 0 returns a redirect as the response.
    pub max_redirects: u32,
    /// The TLS configuration for https hops; `None` verifies against the
    /// system's CA store.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect here instead of resolving the URL's host (curl's
    /// `--resolve`): one backend of a name served by many, or a test.
    /// Applies to every hop.
    pub connect_to: Option<SocketAddr>,
}

impl Request {
    /// A request for `url`: `http://`, `https://` or `unix:/path/to.sock`.
    /// Credentials written in the URL become [`Request::auth`].
    pub fn new(method: Method, url: &str) -> Result<Request, UrlError> {
        let parsed = Url::parse(url).map_err(|e| UrlError::Parse {
            text: url.to_string(),
            reason: e.to_string(),
        })?;
        Request::from_url(method, parsed)
    }

    /// A GET for `url`.
    pub fn get(url: &str) -> Result<Request, UrlError> {
        Request::new(Method::GET, url)
    }

    /// A request for a parsed URL.
    pub fn from_url(method: Method, mut url: Url) -> Result<Request, UrlError> {
        match url.scheme() {
            "http" | "https" if url.host_str().is_none_or(str::is_empty) => {
                return Err(UrlError::NoHost(url.to_string()))
            }
            "http" | "https" => {}
            "unix" if url.path().is_empty() || url.path() == "/" => return Err(UrlError::NoSocket(url.to_string())),
            "unix" => {}
            _ => return Err(UrlError::Scheme(url.to_string())),
        }
        let auth = take_credentials(&mut url);
        url.set_fragment(None);
        Ok(Request {
            method,
            url,
            socket_target: None,
            headers: HeaderMap::new(),
            user_agent: Some(HeaderValue::from_static(concat!("ductd/", env!("CARGO_PKG_VERSION")))),
            body: Bytes::new(),
            auth,
            timeout: TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
            keep_body: true,
            max_redirects: MAX_REDIRECTS,
            tls: None,
            connect_to: None,
        })
    }

    /// The URL requested, without its credentials: safe to show.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Requests `path_and_query` (`/containers/json?all=1`) on the URL's
    /// server: it replaces an http(s) URL's path and query, and is what is
    /// sent over a `unix:` socket (`/` when not given).
    pub fn path(mut self, path_and_query: &str) -> Self {
        if self.url.scheme() == "unix" {
            self.socket_target = Some(path_and_query.to_string());
        } else {
            let (path, query) = match path_and_query.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path_and_query, None),
            };
            self.url.set_path(path);
            self.url.set_query(query);
        }
        self
    }

    /// Sends Basic credentials (the `user` and `password` options); they
    /// replace credentials written in the URL.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(BasicAuth {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Adds a header field (sent to the request's own origin only).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the timeout of the whole exchange.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The answer to a request.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    /// The reason phrase the server sent (or the standard one).
    pub reason: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The URL that gave this answer, after redirects, without
    /// credentials.
    pub url: Url,
    /// Redirects followed.
    pub redirects: u32,
    /// The certificate chain (leaf first) of the server that gave this
    /// answer; `None` when that hop was not https.
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    pub timings: Timings,
}

/// Sends `request` on a fresh connection.
pub async fn send(request: &Request) -> Result<Response, Error> {
    Client::new().send(request).await
}

/// Makes requests: a fresh connection each ([`Client::new`]), or one kept
/// open per origin ([`Client::keep_alive`]). Cheap to clone; clones share
/// their idle connections.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pool: Option<Arc<Pool>>,
}

impl Client {
    /// A client that opens a fresh connection per request and asks the
    /// server to close it after the answer.
    pub fn new() -> Client {
        Client { pool: None }
    }

    /// A client that keeps one idle connection per origin for the next
    /// request. A connection the server closed meanwhile is replaced: a
    /// request it could not carry is sent again on a fresh one.
    pub fn keep_alive() -> Client {
        Client {
            pool: Some(Arc::new(Pool::default())),
        }
    }

    /// Sends `request`, following redirects, within its timeout.
    pub async fn send(&self, request: &Request) -> Result<Response, Error> {
        let trace = Mutex::new(Trace::new());
        match tokio::time::timeout(request.timeout, self.follow(request, &trace)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                seconds: request.timeout.as_secs_f64(),
                phase: lock(&trace).phase().doing(),
            }),
        }
    }

    async fn follow(&self, request: &Request, trace: &Mutex<Trace>) -> Result<Response, Error> {
        let home = Origin::of(&request.url);
        let mut hop = Hop {
            url: request.url.clone(),
            method: request.method.clone(),
            body: request.body.clone(),
            trusted: true,
        };
        let mut downgraded = false;
        let mut redirects = 0;
        loop {
            let answer = self.exchange(request, &hop, trace).await?;
            let status = answer.parts.status;
            let location = answer
                .parts
                .headers
                .get(LOCATION)
                .filter(|_| request.max_redirects > 0 && hop.url.scheme() != "unix")
                .filter(|_| matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308));
            let Some(location) = location else {
                return Ok(Response {
                    status,
                    reason: reason(&answer.parts),
                    headers: answer.parts.headers,
                    body: answer.body,
                    url: hop.url,
                    redirects,
                    peer_certificates: answer.peer_certificates,
                    timings: lock(trace).timings.clone(),
                });
            };
            redirects += 1;
            if redirects > request.max_redirects {
                return Err(Error::TooManyRedirects(request.max_redirects));
            }
            let next = redirect_target(&hop.url, location)?;
            downgraded |= hop.url.scheme() == "https" && next.scheme() == "http";
            hop.trusted = !downgraded && Origin::of(&next) == home;
            if (status == StatusCode::SEE_OTHER && hop.method != Method::HEAD)
                || (matches!(status.as_u16(), 301 | 302) && hop.method == Method::POST)
            {
                hop.method = Method::GET;
                hop.body = Bytes::new();
            }
            hop.url = next;
        }
    }

    async fn exchange(&self, request: &Request, hop: &Hop, trace: &Mutex<Trace>) -> Result<Answer, Error> {
        match &self.pool {
            None => fresh(request, hop, trace).await,
            Some(pool) => pool.exchange(request, hop, trace).await,
        }
    }
}

/// One hop of a request: where it goes and what it carries.
struct Hop {
    url: Url,
    method: Method,
    body: Bytes,
    /// Whether the credentials and the caller's headers go with it.
    trusted: bool,
}

impl Hop {
    /// The message hyper writes for this hop.
    fn message(&self, request: &Request, close: bool) -> Result<hyper::Request<Full<Bytes>>, Error> {
        let target = if self.url.scheme() == "unix" {
            request.socket_target.as_deref().unwrap_or("/")
        } else {
            &self.url[Position::BeforePath..Position::AfterQuery]
        };
        let uri = target
            .parse::<hyper::Uri>()
            .map_err(|e| Error::Request(format!("`{target}` is not a request target: {e}")))?;
        let none = HeaderMap::new();
        let own = if self.trusted { &request.headers } else { &none };
        let mut headers = HeaderMap::new();
        if !own.contains_key(HOST) {
            headers.insert(HOST, host_header(&self.url)?);
        }
        if let (Some(agent), false) = (&request.user_agent, own.contains_key(USER_AGENT)) {
            headers.insert(USER_AGENT, agent.clone());
        }
        if !own.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        if let (Some(auth), true, false) = (&request.auth, self.trusted, own.contains_key(AUTHORIZATION)) {
            headers.insert(AUTHORIZATION, auth.header());
        }
        if close && !own.contains_key(CONNECTION) {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // hyper leaves the length out of an empty body; a server may want
        // it on the methods that carry one.
        let wants_length = matches!(self.method, Method::POST | Method::PUT | Method::PATCH);
        if self.body.is_empty() && wants_length && !own.contains_key(CONTENT_LENGTH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        for (name, value) in own {
            headers.append(name.clone(), value.clone());
        }
        let mut message = hyper::Request::new(Full::new(self.body.clone()));
        *message.method_mut() = self.method.clone();
        *message.uri_mut() = uri;
        *message.headers_mut() = headers;
        Ok(message)
    }
}

/// The `Host` header: the host (IDN hosts in their ASCII form) and the
/// port unless it is the scheme's own; `localhost` over a Unix socket.
fn host_header(url: &Url) -> Result<HeaderValue, Error> {
    let host = match (url.host_str(), url.port()) {
        _ if url.scheme() == "unix" => "localhost".to_string(),
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => return Err(Error::Request(format!("`{url}` has no host"))),
    };
    HeaderValue::try_from(host).map_err(|e| Error::Request(e.to_string()))
}

/// Where a redirect's `Location` points, seen from `url`.
fn redirect_target(url: &Url, location: &HeaderValue) -> Result<Url, Error> {
    let text = String::from_utf8_lossy(location.as_bytes()).into_owned();
    let fail = |reason: String| Error::Redirect {
        location: text.clone(),
        reason,
    };
    let mut next = url.join(&text).map_err(|e| fail(e.to_string()))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(fail("only http and https are followed".into()));
    }
    if next.host_str().is_none_or(str::is_empty) {
        return Err(fail("it has no host".into()));
    }
    // Credentials a server writes into a redirect are not sent: only the
    // configured ones are, and only to the configured origin.
    take_credentials(&mut next);
    next.set_fragment(None);
    Ok(next)
}

/// Removes the credentials from `url`; them, percent-decoded.
fn take_credentials(url: &mut Url) -> Option<BasicAuth> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let auth = BasicAuth {
        user: decode(url.username()),
        password: decode(url.password().unwrap_or_default()),
    };
    // Only URLs with a host carry credentials, and these can lose them.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(auth)
}

/// The file a `unix:` URL names.
fn socket_path(url: &Url) -> PathBuf {
    let path = percent_decode_str(url.path()).decode_utf8_lossy().into_owned();
    PathBuf::from(path)
}

/// Where credentials may go: scheme, host and port (RFC 6454), or one
/// socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Origin {
    Net { scheme: String, host: String, port: u16 },
    Socket(PathBuf),
}

impl Origin {
    fn of(url: &Url) -> Origin {
        if url.scheme() == "unix" {
            return Origin::Socket(socket_path(url));
        }
        Origin::Net {
            scheme: url.scheme().to_string(),
            host: url.host_str().unwrap_or_default().to_string(),
            port: url.port_or_known_default().unwrap_or(0),
        }
    }
}

fn reason(parts: &Parts) -> String {
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(phrase) => String::from_utf8_lossy(phrase.as_bytes()).into_owned(),
        None => parts.status.canonical_reason().unwrap_or_default().to_string(),
    }
}

/// One hop's answer.
struct Answer {
    parts: Parts,
    body: Bytes,
    peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
}

/// One hop over a fresh connection, driven here and closed after it.
async fn fresh(request: &Request, hop: &Hop, trace: &Mutex<Trace>) -> Result<Answer, Error> {
    let connected = conn::open(request, &hop.url, trace).await?;
    let message = hop.message(request, true)?;
    let watch = Arc::new(Watch::default());
    let (mut sender, connection) = handshake(io(connected.stream, watch.clone())).await?;
    lock(trace).exchange(watch.clone());
    let work = roundtrip(&mut sender, message, request, &watch);
    tokio::pin!(work, connection);
    let result = tokio::select! {
        biased;
        result = &mut work => result,
        // The connection ended (the server closed it, or broke it): hyper
        // hands the request its error, or the answer it had read.
        _ = &mut connection => work.await,
    };
    lock(trace).exchanged();
    let (parts, body) = result?;
    Ok(Answer {
        parts,
        body,
        peer_certificates: connected.peer_certificates,
    })
}

async fn handshake(io: Io) -> Result<(SendRequest<Full<Bytes>>, http1::Connection<Io, Full<Bytes>>), Error> {
    http1::Builder::new()
        // Some embedded servers match header names case-sensitively.
        .title_case_headers(true)
        // hyper's read buffer holds the response head: bounded well
        // below its 400 KiB default, as the answers of a monitored
        // server are small.
        .max_buf_size(MAX_HEAD_BYTES)
        .handshake(io)
        .await
        .map_err(|e| Error::Failed(describe(&e)))
}

/// Sends `message` and reads the whole answer.
async fn roundtrip(
    sender: &mut SendRequest<Full<Bytes>>,
    message: hyper::Request<Full<Bytes>>,
    request: &Request,
    watch: &Watch,
) -> Result<(Parts, Bytes), Error> {
    let response = sender.send_request(message).await.map_err(|e| head_error(&e, watch))?;
    read(response, request).await
}

/// Reads the body of `response`, bounded by the request's
/// `max_body_bytes`.
async fn read(response: hyper::Response<Incoming>, request: &Request) -> Result<(Parts, Bytes), Error> {
    let max_body_bytes = request.max_body_bytes;
    let (parts, mut body) = response.into_parts();
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n > max_body_bytes) {
        return Err(Error::BodyTooLarge(max_body_bytes));
    }
    let chunked = parts
        .headers
        .get(TRANSFER_ENCODING)
        .is_some_and(|te| te.as_bytes().to_ascii_lowercase().ends_with(b"chunked"));
    let mut data = Vec::with_capacity(length.unwrap_or(0).min(64 << 10) as usize);
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match (length, chunked) {
            (Some(n), _) if ended_early(&e) => {
                Error::Failed(format!("the connection closed after {} of {n} body bytes", data.len()))
            }
            (None, true) if ended_early(&e) => Error::Failed("the connection closed before the last chunk".into()),
            _ => Error::Failed(format!("reading the body: {}", describe(&e))),
        })?;
        if let Ok(chunk) = frame.into_data() {
            total += chunk.len() as u64;
            if total > max_body_bytes {
                return Err(Error::BodyTooLarge(max_body_bytes));
            }
            if request.keep_body {
                data.extend_from_slice(&chunk);
            }
        }
    }
    Ok((parts, Bytes::from(data)))
}

/// A hyper error with its causes, as one line.
fn describe(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether the connection ended before the message did.
fn ended_early(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        source = cause.source();
    }
    false
}

/// The error of a request that got no (valid) response head.
fn head_error(e: &hyper::Error, watch: &Watch) -> Error {
    let seen = watch.state();
    if e.is_parse() || e.is_parse_too_large() {
        let probe = &seen.first_bytes[..seen.first_bytes.len().min(5)];
        if !b"HTTP/".starts_with(probe) {
            let line = seen.first_bytes.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            return Error::Invalid(format!("not an HTTP response: `{}`", line.trim_end()));
        }
        return Error::Invalid(describe(e));
    }
    if e.is_incomplete_message() {
        return Error::Failed(if seen.answered() {
            "the server closed the connection in the middle of the response head".into()
        } else {
            "the server closed the connection without answering".into()
        });
    }
    Error::Failed(describe(e))
}

/// The idle connections of a keep-alive client, one per origin (and TLS
/// configuration: a connection verified one way is not lent to a request
/// that asked for another).
#[derive(Debug, Default)]
struct Pool {
    idle: Mutex<std::collections::HashMap<PoolKey, Pooled>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    origin: Origin,
    /// The TLS configuration's address, standing for its identity.
    tls: usize,
}

/// A connection kept open: its sender, and the task driving it.
#[derive(Debug)]
struct Pooled {
    sender: SendRequest<Full<Bytes>>,
    watch: Arc<Watch>,
    peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// Dropping the connection stops its task, which closes the socket.
    _task: AbortOnDrop,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Pool {
    fn take(&self, key: &PoolKey) -> Option<Pooled> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).remove(key)
    }

    fn put(&self, key: PoolKey, conn: Pooled) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).insert(key, conn);
    }

    async fn exchange(&self, request: &Request, hop: &Hop, trace: &Mutex<Trace>) -> Result<Answer, Error> {
        let key = PoolKey {
            origin: Origin::of(&hop.url),
            tls: request.tls.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize),
        };
        if let Some(mut idle) = self.take(&key) {
            if idle.sender.ready().await.is_ok() {
                match self.send_on(&mut idle, request, hop, trace).await {
                    Ok(answer) => {
                        self.keep(key, idle, &answer);
                        return Ok(answer);
                    }
                    // The server closed the idle connection as the
                    // request went out: sent again on a fresh one.
                    Err(Sent::Not) => tracing::debug!(url = %hop.url, "kept connection closed; reconnecting"),
                    Err(Sent::Unanswered(e)) if is_idempotent(&hop.method) => {
                        tracing::debug!(url = %hop.url, error = %e, "kept connection failed; sending again")
                    }
                    Err(Sent::Unanswered(e) | Sent::Failed(e)) => return Err(e),
                }
            }
        }
        let connected = conn::open(request, &hop.url, trace).await?;
        let watch = Arc::new(Watch::default());
        let (sender, connection) = handshake(io(connected.stream, watch.clone())).await?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut conn = Pooled {
            sender,
            watch,
            peer_certificates: connected.peer_certificates,
            _task: AbortOnDrop(task),
        };
        match self.send_on(&mut conn, request, hop, trace).await {
            Ok(answer) => {
                self.keep(key, conn, &answer);
                Ok(answer)
            }
            Err(Sent::Not) => Err(Error::Failed(
                "the connection closed before the request was sent".into(),
            )),
            Err(Sent::Unanswered(e) | Sent::Failed(e)) => Err(e),
        }
    }

    /// Returns `conn` to the pool unless the server is closing it.
    fn keep(&self, key: PoolKey, conn: Pooled, answer: &Answer) {
        let closing = answer
            .parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closing && answer.parts.version == hyper::Version::HTTP_11 {
            self.put(key, conn);
        }
    }

    async fn send_on(
        &self,
        conn: &mut Pooled,
        request: &Request,
        hop: &Hop,
        trace: &Mutex<Trace>,
    ) -> Result<Answer, Sent> {
        let message = hop.message(request, false).map_err(Sent::Failed)?;
        lock(trace).exchange(conn.watch.clone());
        let result = conn.sender.try_send_request(message).await;
        let result = match result {
            Ok(response) => read(response, request).await.map_err(Sent::Failed),
            Err(e) if e.message().is_some() => Err(Sent::Not),
            Err(e) => {
                let error = head_error(e.error(), &conn.watch);
                Err(if conn.watch.state().answered() {
                    Sent::Failed(error)
                } else {
                    Sent::Unanswered(error)
                })
            }
        };
        lock(trace).exchanged();
        let (parts, body) = result?;
        Ok(Answer {
            parts,
            body,
            peer_certificates: conn.peer_certificates.clone(),
        })
    }
}

/// How a request on a kept connection failed.
enum Sent {
    /// hyper gave the request back unsent.
    Not,
    /// Sent, but no byte of an answer came.
    Unanswered(Error),
    Failed(Error),
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
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
