//! What every output that POSTs batches over HTTP shares: the endpoint and
//! its credentials, read once from the block, one kept-alive connection,
//! and one reading of the answer that tells the output actor what became
//! of the batch.
//!
//! How an answer is read:
//! - 2xx: delivered.
//! - 400, 413, 422 and other 4xx not listed below: the destination refused
//!   the batch for good (sending it again would be refused again), so its
//!   events are counted as dropped, and the answer's body is logged.
//! - 401, 403, 404, 408, 429 and 5xx, and any failure to get an answer:
//!   kept in the queue and sent again after backoff. Credentials, a missing
//!   database or an overloaded server are fixed on the other side, and the
//!   data should still be there when they are. A 429 or 503 with
//!   `Retry-After` (seconds, or an HTTP date) is sent again no sooner than
//!   it asks, up to the output's `backoff_max` (the output actor's wait).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use duct_core::config::seconds::Zero;
use duct_core::config::Diagnostic;
use duct_core::{OutputArgs, OutputError};
use duct_http::client::{header, Client, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Url};
use duct_http::tls::TlsPolicy;
use serde::Deserialize;

/// How big a batch's body gets per event, learned from the last one, so
/// the next body is allocated once at about its final size. Growing a
/// multi-megabyte body by doubling held the old and the new buffer at once
/// and left the allocator with more resident than one body's worth:
/// measured on Elasticsearch at 620,000–720,000 events/s (bulk documents of
/// several hundred bytes), VmRSS 60–70 MiB with a fixed guess of 300 bytes,
/// 44–55 MiB learned. OpenTSDB's points are small and regular and its fixed
/// guess measured as well or better, so it keeps that.
#[derive(Debug)]
pub struct BodySize {
    per_event: usize,
}

impl BodySize {
    /// Starting from a guess of `per_event` bytes.
    pub fn new(per_event: usize) -> Self {
        BodySize { per_event }
    }

    /// An empty body with room for `events` events and an eighth to spare.
    pub fn vec_for(&self, events: usize) -> Vec<u8> {
        Vec::with_capacity(events.saturating_mul(self.per_event + self.per_event / 8))
    }

    /// Learn from a body of `len` bytes that held `events` events.
    pub fn learn(&mut self, len: usize, events: usize) {
        if let Some(per_event) = len.checked_div(events) {
            self.per_event = per_event;
        }
    }
}

/// The options every HTTP push output takes besides its own, flattened
/// into its options struct.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct HttpOptions {
    /// Basic credentials (they replace credentials written in the URL).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Verify the server's certificate (https).
    pub tls_verify: bool,
    /// CA certificates (PEM) to verify with instead of the system's.
    pub ca: Option<PathBuf>,
    /// Seconds one request may take.
    pub timeout: f64,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            user: None,
            password: None,
            tls_verify: true,
            ca: None,
            timeout: 30.0,
        }
    }
}

/// The option names of [`HttpOptions`], for outputs that flatten it.
pub const HTTP_OPTIONS: &[&str] = &["user", "password", "tls_verify", "ca", "timeout"];

/// The option names of `T` followed by [`HTTP_OPTIONS`], made once into
/// `cell`: what an HTTP output's `OutputSpec::options` returns.
pub fn names_with_http<T: serde::de::DeserializeOwned>(
    cell: &'static OnceLock<Vec<&'static str>>,
) -> &'static [&'static str] {
    cell.get_or_init(|| {
        let mut names = duct_core::config::field_names::<T>().to_vec();
        names.extend_from_slice(HTTP_OPTIONS);
        names
    })
}

/// The `url` option as an http(s) URL with `path` (`/api/put`) added to
/// its own path, a final `/` of which is dropped.
pub fn url_with_path(args: &OutputArgs<'_>, text: &str, path: &str) -> Result<Url, Diagnostic> {
    let mut url = Url::parse(text).map_err(|e| args.invalid("url", format!("`{text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(args.invalid("url", format!("`{text}` is not an http:// or https:// URL")));
    }
    let base = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{base}{path}"));
    Ok(url)
}

/// An endpoint batches are POSTed to.
pub struct Endpoint {
    client: Client,
    request: Request,
}

impl Endpoint {
    /// A POST to `url` (the option named `url_key`) with `http`'s
    /// credentials, TLS and timeout.
    pub fn new(args: &OutputArgs<'_>, url_key: &str, url: &str, http: &HttpOptions) -> Result<Endpoint, Diagnostic> {
        let mut request = Request::new(Method::POST, url).map_err(|e| args.invalid(url_key, e))?;
        if let Some(user) = &http.user {
            request = request.basic_auth(user.clone(), http.password.clone().unwrap_or_default());
        }
        let timeout = args.duration("timeout", http.timeout, Zero::Refused)?;
        request = request.timeout(timeout);
        // Answers are small; a flood of them is not worth reading.
        request.max_body_bytes = 1 << 20;
        // A POST is not re-sent to wherever a redirect points.
        request.max_redirects = 0;
        if request.url().scheme() == "https" {
            let policy = TlsPolicy {
                verify: http.tls_verify,
                ca: http.ca.clone(),
            };
            let config = policy.client_config().map_err(|e| args.invalid("ca", e))?;
            request.tls = Some(config);
        }
        Ok(Endpoint {
            client: Client::keep_alive(),
            request,
        })
    }

    /// The request to modify before the first send (path, query, headers).
    pub fn request_mut(&mut self) -> &mut Request {
        &mut self.request
    }

    /// The URL, without credentials, for messages.
    pub fn url(&self) -> String {
        self.request.url().to_string()
    }

    /// POSTs `body` with `content_type`; the answer, or why there is none.
    pub async fn post(&self, body: Vec<u8>, content_type: &'static str) -> Result<Response, OutputError> {
        let mut request = self.request.clone().body(body);
        request
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.client
            .send(&request)
            .await
            .map_err(|e| OutputError::new(format!("POST {}: {e}", self.url())))
    }

    /// What became of a batch of `events` events that got `answer`.
    pub fn judge(&self, answer: &Response, events: usize) -> Result<(), OutputError> {
        let status = answer.status;
        if status.is_success() {
            return Ok(());
        }
        let message = format!(
            "POST {} answered {} {}: {}",
            self.url(),
            status.as_u16(),
            answer.reason,
            body_excerpt(&answer.body)
        );
        if is_retryable(status) {
            Err(OutputError::new(message).waiting(retry_after(status, &answer.headers, SystemTime::now())))
        } else {
            Err(
                OutputError::new(format!("{message}; the batch's {events} events are dropped"))
                    .after(events)
                    .rejecting(events),
            )
        }
    }
}

/// The wait a 429 or 503 answer asks for with `Retry-After`: whole
/// seconds, or an HTTP date (`Fri, 04 Dec 2026 10:00:00 GMT`, or the two
/// obsolete forms) compared with `now`. `None` without one, or with one
/// that cannot be read; a date already past asks for no wait.
pub fn retry_after(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a failed answer is worth sending again later.
pub fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429) || status.is_server_error()
}

/// The start of an answer's body, on one line, for a log message.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        "(no body)".into()
    } else if body.len() > 300 {
        format!("{one_line} …")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_allocated_at_the_size_the_last_one_reached() {
        let mut size = BodySize::new(300);
        assert!(size.vec_for(10).capacity() >= 3_000);
        size.learn(4_500, 10);
        let body = size.vec_for(1_000);
        assert!((450_000..=520_000).contains(&body.capacity()), "{}", body.capacity());
        // An empty batch teaches nothing.
        size.learn(0, 0);
        assert!(size.vec_for(1).capacity() >= 450);
    }

    #[test]
    fn retryable_answers_keep_the_batch() {
        for code in [401, 403, 404, 408, 429, 500, 502, 503] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 413, 422] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_378_400); // 2026-12-04 10:00:00 UTC
        let wait = |status, v| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(v));
            retry_after(StatusCode::from_u16(status).unwrap(), &headers, now)
        };
        assert_eq!(wait(429, "120"), Some(Duration::from_secs(120)));
        assert_eq!(wait(503, " 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            wait(503, "Fri, 04 Dec 2026 10:01:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            wait(429, "Friday, 04-Dec-26 10:00:05 GMT"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(wait(429, "Fri Dec  4 10:00:02 2026"), Some(Duration::from_secs(2)));
        assert_eq!(wait(429, "Thu, 03 Dec 2026 10:00:00 GMT"), Some(Duration::ZERO), "past");
        assert_eq!(wait(429, "soon"), None);
        assert_eq!(wait(429, "-5"), None);
        assert_eq!(wait(500, "10"), None, "only 429 and 503 ask for a wait");
        assert_eq!(retry_after(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), now), None);
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(body_excerpt(b""), "(no body)");
        assert_eq!(body_excerpt(b"{\"error\":\n  \"bad\"}\n"), "{\"error\": \"bad\"}");
        let long = vec![b'x'; 1000];
        assert!(body_excerpt(&long).ends_with(" …"));
        assert!(body_excerpt(&long).len() < 320);
    }
}
