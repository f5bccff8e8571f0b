//! One connection of the client: the stream ductd opens itself (TCP, TLS
//! over TCP, or a Unix socket), timed phase by phase, and a wrapper that
//! notes when the request went out and when the answer's first byte came
//! back while hyper runs HTTP/1.1 over it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use url::{Host, Url};

use super::{Error, Phase, Request, Timings};
use crate::rt::TokioIo;
use crate::tls::TlsPolicy;

/// Where a request is and what its phases took, kept outside the request's
/// future so that a timeout can still say what was going on.
#[derive(Debug)]
pub(super) struct Trace {
    phase: Phase,
    /// When the current phase started.
    mark: Instant,
    pub timings: Timings,
    /// The exchange under way, once a connection is up.
    pub watch: Option<Arc<Watch>>,
}

impl Trace {
    pub fn new() -> Self {
        Trace {
            phase: Phase::Resolving,
            mark: Instant::now(),
            timings: Timings::default(),
            watch: None,
        }
    }

    /// Enters `phase`; returns how long the previous one took.
    fn enter(&mut self, phase: Phase) -> Duration {
        let now = Instant::now();
        let took = now.duration_since(self.mark);
        self.mark = now;
        self.phase = phase;
        took
    }

    /// What the request is doing now.
    pub fn phase(&self) -> Phase {
        match (&self.watch, self.phase) {
            (Some(watch), Phase::Sending) => watch.state().phase(),
            (_, phase) => phase,
        }
    }

    /// Starts the exchange of one request on `watch`'s connection.
    pub fn exchange(&mut self, watch: Arc<Watch>) {
        watch.reset();
        self.enter(Phase::Sending);
        self.watch = Some(watch);
    }

    /// Ends the exchange: its wait for the first byte joins the timings.
    pub fn exchanged(&mut self) {
        if let Some(watch) = self.watch.take() {
            self.timings.first_byte += watch.state().first_byte();
        }
    }
}

/// Locks `trace`; a panic while holding it leaves timings only.
pub(super) fn lock(trace: &Mutex<Trace>) -> MutexGuard<'_, Trace> {
    trace.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the adapter saw of one exchange on its connection.
#[derive(Debug, Default)]
pub(super) struct Watch(Mutex<Seen>);

#[derive(Debug, Default)]
pub(super) struct Seen {
    /// When the exchange started on this connection.
    started: Option<Instant>,
    /// The last flush of the request before the answer began.
    sent: Option<Instant>,
    /// When the first byte of the answer arrived.
    answered: Option<Instant>,
    /// The answer's first bytes, to tell a peer that is not speaking HTTP.
    pub first_bytes: Vec<u8>,
}

/// Bytes of the answer kept for an error message.
const FIRST_BYTES: usize = 80;

impl Watch {
    pub fn state(&self) -> MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reset(&self) {
        let mut seen = self.state();
        seen.started = Some(Instant::now());
        seen.sent = None;
        seen.answered = None;
        seen.first_bytes.clear();
    }

    fn wrote(&self) {
        let mut seen = self.state();
        if seen.answered.is_none() {
            seen.sent = Some(Instant::now());
        }
    }

    fn read(&self, data: &[u8]) {
        let mut seen = self.state();
        if seen.answered.is_none() && !data.is_empty() {
            seen.answered = Some(Instant::now());
        }
        let room = FIRST_BYTES.saturating_sub(seen.first_bytes.len());
        seen.first_bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl Seen {
    fn phase(&self) -> Phase {
        match (self.sent, self.answered) {
            (_, Some(_)) => Phase::Reading,
            (Some(_), None) => Phase::Waiting,
            (None, None) => Phase::Sending,
        }
    }

    /// From the request sent to the first byte of the answer.
    fn first_byte(&self) -> Duration {
        match (self.sent.or(self.started), self.answered) {
            (Some(sent), Some(answered)) => answered.saturating_duration_since(sent),
            _ => Duration::ZERO,
        }
    }

    /// Whether any byte of the answer arrived.
    pub fn answered(&self) -> bool {
        self.answered.is_some()
    }
}

/// The streams the client speaks HTTP over.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

/// A connected stream and what the TLS handshake showed of the server.
pub(super) struct Connected {
    pub stream: Stream,
    /// The server's certificate chain, leaf first (https).
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
}

/// Opens a connection to `url`'s server (or socket), timing each phase.
pub(super) async fn open(request: &Request, url: &Url, trace: &Mutex<Trace>) -> Result<Connected, Error> {
    if url.scheme() == "unix" {
        let path = super::socket_path(url);
        lock(trace).enter(Phase::Connecting);
        let stream = UnixStream::connect(&path).await.map_err(|e| Error::Socket {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let took = lock(trace).enter(Phase::Sending);
        lock(trace).timings.connect += took;
        return Ok(Connected {
            stream: Stream::Unix(stream),
            peer_certificates: None,
        });
    }
    let host = url
        .host()
        .ok_or_else(|| Error::Request(format!("`{url}` has no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    lock(trace).enter(Phase::Resolving);
    let addr = match request.connect_to {
        Some(addr) => addr,
        None => resolve(&host, port).await?,
    };
    let took = lock(trace).enter(Phase::Connecting);
    lock(trace).timings.dns += took;
    let tcp = connect(addr).await?;
    if url.scheme() != "https" {
        let took = lock(trace).enter(Phase::Sending);
        lock(trace).timings.connect += took;
        return Ok(Connected {
            stream: Stream::Tcp(tcp),
            peer_certificates: None,
        });
    }
    let took = lock(trace).enter(Phase::Handshaking);
    lock(trace).timings.connect += took;
    let config = match &request.tls {
        Some(config) => config.clone(),
        None => TlsPolicy::default()
            .client_config()
            .map_err(|e| Error::Tls(e.to_string()))?,
    };
    let name = match host {
        Host::Domain(name) => {
            ServerName::try_from(name.to_string()).map_err(|e| Error::Tls(format!("`{name}`: {e}")))?
        }
        Host::Ipv4(ip) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
        Host::Ipv6(ip) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
    };
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Tls(e.to_string()))?;
    let peer_certificates = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect());
    let mut t = lock(trace);
    let took = t.enter(Phase::Sending);
    t.timings.tls = Some(t.timings.tls.unwrap_or_default() + took);
    Ok(Connected {
        stream: Stream::Tls(Box::new(tls)),
        peer_certificates,
    })
}

/// The first address the system resolver gives; literals without a lookup.
async fn resolve(host: &Host<&str>, port: u16) -> Result<SocketAddr, Error> {
    let name = match host {
        Host::Ipv4(ip) => return Ok(SocketAddr::new((*ip).into(), port)),
        Host::Ipv6(ip) => return Ok(SocketAddr::new((*ip).into(), port)),
        Host::Domain(name) => *name,
    };
    let fail = |reason: String| Error::Resolve {
        host: name.to_string(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host((name, port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    addrs.next().ok_or_else(|| fail("no address".into()))
}

/// Connects to `addr`, naming a refusal as such.
async fn connect(addr: SocketAddr) -> Result<TcpStream, Error> {
    let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::Refused(addr),
        _ => Error::Connect {
            addr,
            reason: e.to_string(),
        },
    })?;
    // Requests are small and written whole: no reason to wait for an ACK.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A stream that tells its [`Watch`] when the request went out and when
/// the answer came in; hyper drives it through [`crate::rt::TokioIo`].
pub(super) struct Watched {
    stream: Stream,
    watch: Arc<Watch>,
}

/// What hyper reads and writes a client connection through.
pub(super) type Io = TokioIo<Watched>;

/// `stream`, watched by `watch`, as hyper's I/O.
pub(super) fn io(stream: Stream, watch: Arc<Watch>) -> Io {
    TokioIo::new(Watched { stream, watch })
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        };
        match result {
            Poll::Ready(Ok(())) => {
                this.watch.read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            // A TLS server that closes without close_notify ends the
            // stream all the same; a body it cut short is still caught by
            // its framing (Content-Length, chunks).
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        };
        if let Poll::Ready(Ok(())) = result {
            this.watch.wrote();
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
