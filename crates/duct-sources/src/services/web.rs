//! What the service sources that read an HTTP API share: one request,
//! built once from the block's `url` (with `user`/`password`, `tls_verify`
//! and `ca` where the source has them) and sent at every tick on the
//! shared client ([`duct_http::client`]) over a kept-alive connection, as
//! a poller of the same server should.
//!
//! An answer counts only with a 2xx status: anything else (a 401 from a
//! stats page behind a password, a 404 from a wrong path, a 500) is a
//! failure naming the status, so that an error page is never parsed as
//! figures. The body is bounded by [`super::MAX_REPLY_BYTES`] and the whole
//! exchange by the source's time budget.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use duct_core::config::Diagnostic;
use duct_core::SourceArgs;
use duct_http::client::{self, Client, Request, Url};

use super::conn::shown;
use super::MAX_REPLY_BYTES;
use crate::network::tls_policy;

/// Why reading an API failed; the description of the critical event
/// (after the URL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WebError {
    /// The exchange failed: refused, timed out, not HTTP, too large.
    #[error("{0}")]
    Http(#[from] client::Error),
    /// The server answered, but not with a 2xx.
    #[error("the server answered {0}")]
    Status(String),
    /// The body is not what this source reads.
    #[error("unexpected answer: {0}")]
    Garbage(String),
    /// The whole tick, over several requests, ran past the budget.
    #[error("timed out after {0} s")]
    Timeout(f64),
}

impl WebError {
    /// A body that does not parse, with the parser's complaint.
    pub fn garbage(detail: impl Into<String>) -> WebError {
        WebError::Garbage(detail.into())
    }
}

/// Where and how a source reads its server's API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// The configured request; its timeout is the source's budget.
    request: Request,
    /// One idle connection kept for the next tick.
    client: Client,
}

/// The TLS and credential options of a block that has them.
#[derive(Debug, Default)]
pub(crate) struct Access {
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls_verify: bool,
    pub ca: Option<PathBuf>,
}

impl Api {
    /// The API at `url` (option `key` of the block), read within `budget`.
    pub fn new(
        args: &SourceArgs<'_>,
        key: &str,
        url: &str,
        access: Access,
        budget: Duration,
    ) -> Result<Api, Diagnostic> {
        let url = url.trim();
        let parsed = match Url::parse(url) {
            Ok(parsed) => parsed,
            Err(client::ParseError::RelativeUrlWithoutBase) => {
                return Err(args.invalid(key, format!("`{url}` is not an http://, https:// or unix: URL")))
            }
            Err(e) => return Err(args.invalid(key, format!("`{url}` is not a URL: {e}"))),
        };
        let https = parsed.scheme() == "https";
        let mut request = Request::from_url(client::Method::GET, parsed).map_err(|e| args.invalid(key, e))?;
        match (access.user, access.password) {
            (Some(user), password) => request = request.basic_auth(user, password.unwrap_or_default()),
            (None, Some(_)) => return Err(args.invalid("password", "needs a `user`")),
            (None, None) => {}
        }
        if https || access.ca.is_some() {
            let policy = tls_policy(args, access.tls_verify, access.ca)?;
            request.tls = Some(policy.client_config().map_err(|e| args.invalid(key, e))?);
        }
        request.timeout = budget;
        request.max_body_bytes = MAX_REPLY_BYTES as u64;
        request.max_redirects = 0;
        Ok(Api {
            request,
            client: Client::keep_alive(),
        })
    }

    /// Sends `User-Agent: agent` instead of ductd's.
    pub fn user_agent(mut self, args: &SourceArgs<'_>, key: &str, agent: &str) -> Result<Api, Diagnostic> {
        let value = client::HeaderValue::from_str(agent).map_err(|_| args.invalid(key, "is not a header value"))?;
        self.request.user_agent = Some(value);
        Ok(self)
    }

    /// The URL read, without credentials: for descriptions and logs.
    pub fn url(&self) -> &Url {
        self.request.url()
    }

    /// The configured URL's body.
    pub async fn get(&self) -> Result<Bytes, WebError> {
        answer(self.client.send(&self.request).await?)
    }

    /// The body of `path` (`/_cluster/stats`, `/containers/json`) under the
    /// configured URL: appended to its path (`http://h:2375/v1.41` +
    /// `/containers/json`), or sent over its Unix socket.
    pub async fn get_path(&self, path: &str) -> Result<Bytes, WebError> {
        let full = match self.request.url().scheme() {
            "unix" => path.to_string(),
            _ => format!("{}{path}", self.request.url().path().trim_end_matches('/')),
        };
        let request = self.request.clone().path(&full);
        answer(self.client.send(&request).await?)
    }

    /// Runs a tick's several requests within the budget as a whole. Each
    /// request keeps its own timeout, which names the phase it stopped in
    /// ("while waiting for the answer"); this timer is the backstop for
    /// the sum, and fires a little after the budget so that a single hung
    /// request is reported by its own timer, not by whichever of two timers
    /// due at the same millisecond the runtime happens to wake first.
    pub async fn within<T>(&self, work: impl std::future::Future<Output = Result<T, WebError>>) -> Result<T, WebError> {
        const BACKSTOP_GRACE: Duration = Duration::from_millis(50);
        tokio::time::timeout(self.request.timeout + BACKSTOP_GRACE, work)
            .await
            .unwrap_or_else(|_| Err(WebError::Timeout(self.request.timeout.as_secs_f64())))
    }
}

/// The body of a 2xx answer; any other status is a failure.
fn answer(response: client::Response) -> Result<Bytes, WebError> {
    if response.status.is_success() {
        return Ok(response.body);
    }
    let status = format!("{} {}", response.status.as_u16(), response.reason)
        .trim_end()
        .to_string();
    let text = String::from_utf8_lossy(&response.body);
    let text = text.trim();
    Err(WebError::Status(if text.is_empty() {
        status
    } else {
        format!("{status}: {}", shown(text))
    }))
}

/// A body as text, or the complaint that it is not.
pub(crate) fn text(body: &[u8]) -> Result<&str, WebError> {
    std::str::from_utf8(body)
        .map_err(|_| WebError::garbage(format!("not text: {}", shown(&String::from_utf8_lossy(body)))))
}

/// A body as JSON, or the complaint that it is not.
pub(crate) fn json(body: &[u8]) -> Result<serde_json::Value, WebError> {
    serde_json::from_slice(body)
        .map_err(|e| WebError::garbage(format!("not JSON ({e}): {}", shown(&String::from_utf8_lossy(body)))))
}
