//! `duct.sources.network.TCP` (ductd's): connect to `host:port` and report
//! how long it took; optionally do a TLS handshake, send a line and check
//! the first reply against a regex — `PING` → `+PONG` for redis, or just
//! `expect: "^SSH-"` for a banner.
//!
//! Events: `.latency` (the connect, ms), critical when the port is closed,
//! the check times out, the handshake fails or the reply does not match;
//! with `tls`, `.latency.tls` and `.cert_expiry`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use regex::Regex;
use rustls::ClientConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    check_budget, connect, handshake, ms, port_option, resolve, tls_policy, CheckError, Phase, Progress, GRACE,
};

/// Default `timeout` when none is set, in seconds (capped by the interval).
const DEFAULT_TIMEOUT: f64 = 10.0;
/// The most of a reply read while looking for `expect`.
const MAX_REPLY_BYTES: usize = 64 << 10;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// Host to connect to; the source's hostname by default.
    host: Option<String>,
    port: Option<i64>,
    /// Seconds the whole check may take (also the common option).
    timeout: Option<f64>,
    /// Text to send once connected.
    send: Option<String>,
    /// A regex the first reply must match.
    expect: Option<String>,
    /// Do a TLS handshake after connecting.
    tls: bool,
    tls_verify: bool,
    ca: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: None,
            port: None,
            timeout: None,
            send: None,
            expect: None,
            tls: false,
            tls_verify: true,
            ca: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.network.TCP",
        "Connects to `host` (default: hostname) and `port`; optionally `tls` (with `tls_verify`, `ca`), \
         `send` a text and `expect` a regex of the first reply; `timeout` (whole check, s)",
        &[
            "(service).latency: the TCP connect, ms (critical when refused, timed out or not matching)",
            "(service).latency.tls: the TLS handshake, ms (with tls)",
            "(service).cert_expiry: days until the server's certificate expires (with tls)",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let host = o.host.unwrap_or_else(|| args.settings.hostname.clone());
    if host.trim().is_empty() {
        return Err(args.invalid("host", "must name a host or an address"));
    }
    let Some(port) = o.port else {
        return Err(args.invalid("port", "missing required option `port`"));
    };
    let port = port_option(args, "port", port)?;
    let expect = o
        .expect
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| args.invalid("expect", format!("bad regex: {e}")))?;
    let tls = if o.tls {
        let policy = tls_policy(args, o.tls_verify, o.ca)?;
        Some(policy.client_config().map_err(|e| args.invalid("ca", e))?)
    } else {
        None
    };
    let host = host.trim_matches(['[', ']']).to_string();
    Ok(Box::new(Tcp {
        probe: Arc::new(Probe {
            host,
            port,
            send: o.send,
            expect,
            tls,
        }),
        budget: check_budget(args, DEFAULT_TIMEOUT),
    }))
}

/// What one check does.
#[derive(Debug)]
struct Probe {
    host: String,
    port: u16,
    send: Option<String>,
    expect: Option<Regex>,
    tls: Option<Arc<ClientConfig>>,
}

pub struct Tcp {
    probe: Arc<Probe>,
    budget: Duration,
}

impl Source for Tcp {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

impl Tcp {
    async fn check(&self, ctx: &SourceContext) -> Vec<Event> {
        let started = Instant::now();
        let mut progress = Progress::new();
        // Kept outside the deadline: a server that answered, but not what
        // `expect` wants, is reported with what it said, not as a timeout.
        let mut reply = Vec::new();
        let result = match tokio::time::timeout(self.budget, probe(&self.probe, &mut progress, &mut reply)).await {
            Ok(r) => r,
            Err(_) => match (&self.probe.expect, reply.is_empty()) {
                (Some(expect), false) => Err(CheckError::Failed(format!(
                    "the reply {} does not match `{}` (nothing more came within {} s)",
                    shown(&reply),
                    expect.as_str(),
                    self.budget.as_secs_f64()
                ))),
                _ => Err(progress.timeout(self.budget)),
            },
        };
        let target = format!("{}:{}", self.probe.host, self.probe.port);
        match result {
            Ok(()) => {
                let mut evs = vec![ctx.create_event_prefixed(
                    "latency",
                    "ok",
                    format!("Connected to {target}"),
                    ms(progress.connect),
                )];
                if let Some(tls) = progress.tls {
                    evs.push(ctx.create_event_prefixed("latency.tls", "ok", "TLS handshake", ms(tls)));
                }
                if let Some(days) = progress.cert_expiry {
                    evs.push(ctx.create_event_prefixed(
                        "cert_expiry",
                        "ok",
                        format!("Certificate of {target} expires in {days:.1} days"),
                        days,
                    ));
                }
                evs
            }
            Err(e) => {
                // The connect time when it was reached, else the time spent.
                let took = if progress.connect > Duration::ZERO {
                    progress.connect
                } else {
                    started.elapsed()
                };
                vec![ctx.create_event_prefixed("latency", "critical", format!("{target} - {e}"), ms(took))]
            }
        }
    }
}

async fn probe(p: &Probe, progress: &mut Progress, reply: &mut Vec<u8>) -> Result<(), CheckError> {
    progress.enter(Phase::Resolving);
    let addr = resolve(&p.host, p.port).await?;
    progress.dns = progress.enter(Phase::Connecting);
    let tcp = connect(addr).await?;
    match &p.tls {
        None => {
            progress.connect = progress.enter(Phase::Sending);
            converse(tcp, p, progress, reply).await
        }
        Some(config) => {
            progress.connect = progress.enter(Phase::Handshaking);
            let (stream, expiry) = handshake(config.clone(), &p.host, tcp).await?;
            progress.tls = Some(progress.enter(Phase::Sending));
            progress.cert_expiry = expiry;
            converse(stream, p, progress, reply).await
        }
    }
}

/// Sends `send` and reads until the reply (gathered in `reply`) matches
/// `expect`.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    p: &Probe,
    progress: &mut Progress,
    reply: &mut Vec<u8>,
) -> Result<(), CheckError> {
    if let Some(text) = &p.send {
        stream
            .write_all(text.as_bytes())
            .await
            .map_err(|e| CheckError::Failed(format!("sending: {e}")))?;
        stream
            .flush()
            .await
            .map_err(|e| CheckError::Failed(format!("sending: {e}")))?;
    }
    let Some(expect) = &p.expect else {
        return Ok(());
    };
    progress.enter(Phase::Waiting);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(CheckError::Failed(format!("reading the reply: {e}"))),
        };
        reply.extend_from_slice(&chunk[..n.min(MAX_REPLY_BYTES - reply.len().min(MAX_REPLY_BYTES))]);
        if reply_matches(expect, reply) {
            return Ok(());
        }
        if n == 0 || reply.len() >= MAX_REPLY_BYTES {
            return Err(CheckError::Failed(format!(
                "the reply {} does not match `{}`",
                shown(reply),
                expect.as_str()
            )));
        }
    }
}

/// Whether the reply so far matches (as text; bytes that are not UTF-8
/// are replaced).
fn reply_matches(expect: &Regex, reply: &[u8]) -> bool {
    expect.is_match(&String::from_utf8_lossy(reply))
}

/// The start of a reply, quoted for a description.
fn shown(reply: &[u8]) -> String {
    if reply.is_empty() {
        return "(nothing, the connection closed)".into();
    }
    let text = String::from_utf8_lossy(&reply[..reply.len().min(60)]);
    format!("{:?}{}", text, if reply.len() > 60 { "…" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;
    use tokio::net::TcpListener;

    async fn run(probe: Probe, budget: Duration) -> Vec<Event> {
        let (ctx, _) = context("tcp");
        Tcp {
            probe: Arc::new(probe),
            budget,
        }
        .check(&ctx)
        .await
    }

    fn probe(port: u16, send: Option<&str>, expect: Option<&str>) -> Probe {
        Probe {
            host: "127.0.0.1".into(),
            port,
            send: send.map(str::to_string),
            expect: expect.map(|e| Regex::new(e).unwrap()),
            tls: None,
        }
    }

    /// Answers each connection's first read with `reply`, then holds it.
    async fn echo_server(reply: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_matching_reply_is_ok_and_a_wrong_one_critical() {
        let port = echo_server(b"+PONG\r\n").await;
        let evs = run(probe(port, Some("PING\r\n"), Some(r"^\+PONG")), Duration::from_secs(5)).await;
        assert_eq!(evs[0].state.as_deref(), Some("ok"), "{}", evs[0].description);
        assert_eq!(evs[0].service, "tcp.latency");

        // The server answers and holds the connection open: the check
        // says what came back, not that it timed out.
        let evs = run(probe(port, Some("PING\r\n"), Some("^OK")), Duration::from_millis(300)).await;
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        let said = &evs[0].description;
        assert!(said.contains(r#"the reply "+PONG\r\n" does not match `^OK`"#), "{said}");
        assert!(!said.contains("timed out"), "{said}");
    }

    #[tokio::test]
    async fn a_server_that_says_nothing_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let evs = run(probe(port, Some("PING\r\n"), Some("^OK")), Duration::from_millis(300)).await;
        assert!(evs[0].description.contains("timed out"), "{}", evs[0].description);
    }

    #[tokio::test]
    async fn a_closed_port_is_critical() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let evs = run(probe(port, None, None), Duration::from_secs(5)).await;
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        let refused = format!("connection refused by 127.0.0.1:{port}");
        assert!(evs[0].description.ends_with(&refused), "{}", evs[0].description);
    }

    #[test]
    fn replies_are_shown_short() {
        assert_eq!(shown(b""), "(nothing, the connection closed)");
        assert_eq!(shown(b"-ERR x\r\n"), "\"-ERR x\\r\\n\"");
        assert!(shown(&[b'a'; 100]).ends_with('…'));
    }
}
