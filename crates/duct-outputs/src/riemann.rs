//! `duct.outputs.riemann.RiemannTCP` and `RiemannUDP`: events to a Riemann
//! server (or another ductd's listener), as protobuf `Msg`s (docs/riemann.md).
//!
//! TCP: each batch the output actor hands over is cut into messages of
//! `events_per_message` events, up to `pressure` of them are written ahead
//! of their acknowledgements, and `send` returns once every message is
//! acknowledged. When the connection drops or an acknowledgement does not
//! come within `ack_timeout`, `send` reports how many events were
//! acknowledged (the prefix of the batch), the connection is dropped, and
//! the actor puts the rest back in the queue and retries with backoff; the
//! next `send` connects again (to the next server, with `failover`). So
//! delivery is at least once: a message the server took but whose
//! acknowledgement was lost is sent again.
//!
//! UDP: fire and forget, one `Msg` per datagram, a batch split so that no
//! datagram exceeds `max_datagram_bytes`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use duct_core::config::seconds::Zero;
use duct_core::config::Diagnostic;
use duct_core::throttle::Throttle;
use duct_core::{Batch, BoxFuture, Output, OutputArgs, OutputError, OutputSpec};
use duct_proto::tls::{self, TlsConnector, TlsFiles};
use duct_proto::wire::{event_field_len, put_event_field, put_events_frame};
use duct_proto::{FrameError, MsgCodec};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::codec::Decoder;

/// The largest answer a server may send: answers are a few bytes.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// `server: host` or `server: [host1, host2]` (with `failover: true`).
#[derive(Debug, Clone, PartialEq)]
struct Servers(Vec<String>);

impl Default for Servers {
    fn default() -> Self {
        Servers(vec!["localhost".into()])
    }
}

impl<'de> Deserialize<'de> for Servers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ServersVisitor;
        impl<'de> Visitor<'de> for ServersVisitor {
            type Value = Servers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a host name or a list of host names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Servers, E> {
                Ok(Servers(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Servers, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Servers(out))
            }
        }
        d.deserialize_any(ServersVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct TcpOptions {
    /// Host name or address; a list with `failover: true`.
    server: Servers,
    port: u16,
    /// Move to the next server of the list after every failure.
    failover: bool,
    tls: bool,
    /// Client certificate and key (PEM), for servers that ask for one.
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// CA certificates (PEM) to verify the server; default: the system's.
    ca: Option<PathBuf>,
    /// Most messages awaiting acknowledgement; zero or less: no limit.
    pressure: i64,
    /// Events per `Msg`.
    events_per_message: usize,
    /// Seconds to wait for each acknowledgement (and for each write).
    ack_timeout: f64,
    /// Seconds to wait for a connection (TLS handshake included).
    connect_timeout: f64,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            server: Servers::default(),
            port: 5555,
            failover: false,
            tls: false,
            cert: None,
            key: None,
            ca: None,
            pressure: 16,
            events_per_message: 100,
            ack_timeout: 10.0,
            connect_timeout: 5.0,
        }
    }
}

pub fn tcp_spec() -> OutputSpec {
    OutputSpec::new::<TcpOptions>(
        "duct.outputs.riemann.RiemannTCP",
        "Sends metric events to Riemann over TCP (optionally TLS), waiting for every acknowledgement; `server` may be a list with `failover: true`",
        true,
        build_tcp,
    )
}

fn seconds(args: &OutputArgs<'_>, key: &str, value: f64) -> Result<Duration, Diagnostic> {
    args.duration(key, value, Zero::Refused)
}

fn build_tcp(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: TcpOptions = args.options()?;
    let servers = opts.server.0;
    if servers.is_empty() || servers.iter().any(|s| s.trim().is_empty()) {
        return Err(args.invalid("server", "needs a host name or address"));
    }
    if servers.len() > 1 && !opts.failover {
        return Err(args.invalid(
            "server",
            "a list of servers needs `failover: true` (they are tried in turn)",
        ));
    }
    if opts.port == 0 {
        return Err(args.invalid("port", "must be between 1 and 65535"));
    }
    if opts.events_per_message == 0 {
        return Err(args.invalid("events_per_message", "must be at least 1"));
    }
    let ack_timeout = seconds(args, "ack_timeout", opts.ack_timeout)?;
    let connect_timeout = seconds(args, "connect_timeout", opts.connect_timeout)?;
    let tls = if opts.tls {
        for s in &servers {
            tls::server_name(s).map_err(|e| args.invalid("server", e))?;
        }
        let files = TlsFiles {
            cert: opts.cert,
            key: opts.key,
            ca: opts.ca,
        };
        let config = tls::client_config(&files).map_err(|e| args.invalid(e.option(), e))?;
        Some(TlsConnector::from(config))
    } else {
        None
    };
    Ok(Box::new(RiemannTcp {
        servers,
        current: 0,
        port: opts.port,
        tls,
        connect_timeout,
        conn: None,
        pipeline: Pipeline {
            pressure: usize::try_from(opts.pressure)
                .ok()
                .filter(|&p| p > 0)
                .unwrap_or(usize::MAX),
            events_per_message: opts.events_per_message,
            ack_timeout,
            wbuf: BytesMut::with_capacity(64 << 10),
            in_flight: VecDeque::new(),
        },
    }))
}

/// A plain or TLS byte stream to the server.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a delivery stopped; becomes the actor's `OutputError` message.
#[derive(Debug, thiserror::Error)]
enum TcpError {
    #[error("cannot connect to {peer}: {source}")]
    Connect { peer: String, source: io::Error },
    #[error("no connection to {peer} within {seconds} s")]
    ConnectTimeout { peer: String, seconds: f64 },
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake { peer: String, source: io::Error },
    #[error("{peer} closed the connection")]
    Closed { peer: String },
    #[error("writing to {peer}: {source}")]
    Write { peer: String, source: io::Error },
    #[error("reading from {peer}: {source}")]
    Read { peer: String, source: FrameError },
    #[error("{peer} did not {what} within {seconds} s")]
    Timeout {
        peer: String,
        what: &'static str,
        seconds: f64,
    },
    #[error("{peer} refused a message of {events} events ({reason}); those events are dropped")]
    Refused {
        peer: String,
        events: usize,
        reason: String,
    },
    #[error("cannot encode a message: {0}")]
    Encode(#[from] duct_proto::wire::MessageTooLarge),
}

/// An open connection and what has been read from it.
struct Connection {
    stream: Box<dyn Stream>,
    /// `host:port`, for messages.
    peer: String,
    /// Bytes read but not yet decoded.
    rbuf: BytesMut,
    codec: MsgCodec,
}

impl Connection {
    /// The next answer from the server.
    async fn read_answer(&mut self) -> Result<duct_proto::Msg, TcpError> {
        loop {
            if let Some(msg) = self.codec.decode(&mut self.rbuf).map_err(|source| TcpError::Read {
                peer: self.peer.clone(),
                source,
            })? {
                return Ok(msg);
            }
            let n = self.stream.read_buf(&mut self.rbuf).await.map_err(|e| TcpError::Read {
                peer: self.peer.clone(),
                source: e.into(),
            })?;
            if n == 0 {
                return Err(TcpError::Closed {
                    peer: self.peer.clone(),
                });
            }
        }
    }

    /// Whether the server closed the connection (or sent something
    /// unasked) while it was idle: then it is not worth sending on. Polls
    /// the socket once, without waiting.
    async fn is_stale(&mut self) -> bool {
        let mut probe = [0u8; 1];
        // A zero timeout polls the read once before giving up on it.
        match tokio::time::timeout(Duration::ZERO, self.stream.read(&mut probe)).await {
            Err(_) => false,
            Ok(Ok(_) | Err(_)) => true,
        }
    }
}

/// The TCP output's transport.
pub struct RiemannTcp {
    /// Hosts in failover order; `current` is the one in use.
    servers: Vec<String>,
    current: usize,
    port: u16,
    /// `Some` when `tls: true`.
    tls: Option<TlsConnector>,
    connect_timeout: Duration,
    /// `None` until connected, and after any failure.
    conn: Option<Connection>,
    pipeline: Pipeline,
}

/// How batches are cut into messages and kept in flight, with the buffers
/// reused from one send to the next.
struct Pipeline {
    /// Most messages written ahead of their acknowledgements.
    pressure: usize,
    events_per_message: usize,
    ack_timeout: Duration,
    /// Outgoing frames.
    wbuf: BytesMut,
    /// Events in each unacknowledged message, oldest first.
    in_flight: VecDeque<usize>,
}

impl RiemannTcp {
    fn peer(&self) -> String {
        format!("{}:{}", self.servers[self.current], self.port)
    }

    async fn connect(&self) -> Result<Connection, TcpError> {
        let host = &self.servers[self.current];
        let peer = self.peer();
        let seconds = self.connect_timeout.as_secs_f64();
        let timed_out = || TcpError::ConnectTimeout {
            peer: peer.clone(),
            seconds,
        };
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect((host.as_str(), self.port)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| TcpError::Connect {
                peer: peer.clone(),
                source,
            })?;
        // Messages wait for their acknowledgement: do not let Nagle hold
        // the last one back.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            Some(connector) => {
                let name = tls::server_name(host).map_err(|e| TcpError::Handshake {
                    peer: peer.clone(),
                    source: io::Error::other(e),
                })?;
                let tls = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|source| TcpError::Handshake {
                        peer: peer.clone(),
                        source,
                    })?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        tracing::info!(server = %peer, tls = self.tls.is_some(), "connected to Riemann");
        Ok(Connection {
            stream,
            peer,
            rbuf: BytesMut::with_capacity(256),
            codec: MsgCodec::new(MAX_ANSWER_BYTES),
        })
    }
}

impl Pipeline {
    /// Sends `batch` on the open connection; on failure, how many events at
    /// the front of the batch were acknowledged (or refused for good).
    async fn exchange(&mut self, conn: &mut Connection, batch: &Batch) -> Result<(), (usize, TcpError)> {
        let seconds = self.ack_timeout.as_secs_f64();
        let mut events = batch.iter();
        let mut unsent = batch.len();
        let mut acked = 0;
        self.in_flight.clear();
        loop {
            self.wbuf.clear();
            while self.in_flight.len() < self.pressure && unsent > 0 {
                let n = self.events_per_message.min(unsent);
                put_events_frame(&mut self.wbuf, events.by_ref().take(n)).map_err(|e| (acked, e.into()))?;
                self.in_flight.push_back(n);
                unsent -= n;
            }
            if !self.wbuf.is_empty() {
                let write = async {
                    conn.stream.write_all(&self.wbuf).await?;
                    conn.stream.flush().await
                };
                match tokio::time::timeout(self.ack_timeout, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(source)) => {
                        let peer = conn.peer.clone();
                        return Err((acked, TcpError::Write { peer, source }));
                    }
                    Err(_) => {
                        let peer = conn.peer.clone();
                        let what = "take our messages";
                        return Err((acked, TcpError::Timeout { peer, what, seconds }));
                    }
                }
            }
            let Some(&n) = self.in_flight.front() else {
                return Ok(());
            };
            let answer = match tokio::time::timeout(self.ack_timeout, conn.read_answer()).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err((acked, e)),
                Err(_) => {
                    let peer = conn.peer.clone();
                    let what = "acknowledge a message";
                    return Err((acked, TcpError::Timeout { peer, what, seconds }));
                }
            };
            self.in_flight.pop_front();
            if answer.ok != Some(true) {
                // The server's final word on this message: sending it again
                // would only be refused again and hold up everything after.
                let reason = answer.error.unwrap_or_else(|| "no reason given".into());
                let peer = conn.peer.clone();
                return Err((
                    acked + n,
                    TcpError::Refused {
                        peer,
                        events: n,
                        reason,
                    },
                ));
            }
            acked += n;
            batch.acknowledge(acked);
        }
    }
}

impl Output for RiemannTcp {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            if let Some(conn) = self.conn.as_mut() {
                if conn.is_stale().await {
                    tracing::debug!(server = %conn.peer, "connection closed while idle; reconnecting");
                    self.conn = None;
                }
            }
            let conn = match self.conn.take() {
                Some(conn) => Ok(conn),
                None => self.connect().await,
            };
            let result = match conn {
                Ok(conn) => {
                    let conn = self.conn.insert(conn);
                    self.pipeline.exchange(conn, batch).await
                }
                Err(e) => Err((0, e)),
            };
            let (delivered, error) = match result {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            let rejected = match &error {
                TcpError::Refused { events, .. } => *events,
                _ => 0,
            };
            self.conn = None;
            let mut message = error.to_string();
            if self.servers.len() > 1 {
                self.current = (self.current + 1) % self.servers.len();
                message.push_str(&format!("; next attempt: {}", self.peer()));
            }
            Err(OutputError::new(message).after(delivered).rejecting(rejected))
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut conn) = self.conn.take() {
                let _ = conn.stream.shutdown().await;
            }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct UdpOptions {
    server: String,
    port: u16,
    /// Largest datagram sent; batches are split to stay under it.
    max_datagram_bytes: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            server: "127.0.0.1".into(),
            port: 5555,
            max_datagram_bytes: 16 << 10,
        }
    }
}

/// The most a UDP datagram can carry over IPv4.
const UDP_PAYLOAD_MAX: usize = 65_507;

pub fn udp_spec() -> OutputSpec {
    OutputSpec::new::<UdpOptions>(
        "duct.outputs.riemann.RiemannUDP",
        "Sends metric events to Riemann over UDP, fire and forget, one message per datagram of at most `max_datagram_bytes`",
        true,
        build_udp,
    )
}

fn build_udp(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: UdpOptions = args.options()?;
    if opts.server.trim().is_empty() {
        return Err(args.invalid("server", "needs a host name or address"));
    }
    if opts.port == 0 {
        return Err(args.invalid("port", "must be between 1 and 65535"));
    }
    if !(64..=UDP_PAYLOAD_MAX).contains(&opts.max_datagram_bytes) {
        return Err(args.invalid(
            "max_datagram_bytes",
            format!("must be between 64 and {UDP_PAYLOAD_MAX}"),
        ));
    }
    Ok(Box::new(RiemannUdp::new(
        opts.server,
        opts.port,
        opts.max_datagram_bytes,
    )))
}

/// The UDP output's transport.
pub struct RiemannUdp {
    server: String,
    port: u16,
    max_datagram_bytes: usize,
    /// Connected to the server; `None` until started and after a send error
    /// (the name is resolved again on the next attempt).
    socket: Option<UdpSocket>,
    /// The datagram being filled, reused.
    buf: BytesMut,
    /// Events too large for any datagram are dropped and reported, at most
    /// once a minute.
    oversized_log: Throttle,
}

impl RiemannUdp {
    fn new(server: String, port: u16, max_datagram_bytes: usize) -> Self {
        RiemannUdp {
            server,
            port,
            max_datagram_bytes,
            socket: None,
            buf: BytesMut::with_capacity(max_datagram_bytes),
            oversized_log: Throttle::default(),
        }
    }

    async fn open(&self) -> io::Result<UdpSocket> {
        let addr = tokio::net::lookup_host((self.server.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))?;
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        Ok(socket)
    }

    fn report_oversized(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(held) = self.oversized_log.allow(Duration::from_secs(60)) {
            tracing::warn!(
                server = %self.server,
                dropped = n,
                reports_held_back = held,
                max_datagram_bytes = self.max_datagram_bytes,
                "events larger than a datagram were dropped"
            );
        }
    }

    /// Sends the batch; on failure, how many events at its front were sent
    /// (or dropped as too large).
    async fn send_datagrams(&mut self, batch: &Batch) -> Result<(), (usize, io::Error)> {
        let Some(socket) = self.socket.as_ref() else {
            return Err((0, io::Error::new(io::ErrorKind::NotConnected, "no socket")));
        };
        let max = self.max_datagram_bytes;
        // Events at the front of the batch that are done with, and events
        // after them that the datagram being filled accounts for.
        let mut done = 0;
        let mut pending = 0;
        let mut oversized = 0;
        self.buf.clear();
        for ev in batch.iter() {
            let len = event_field_len(ev);
            if len > max {
                oversized += 1;
                pending += 1;
                continue;
            }
            if self.buf.len() + len > max {
                if let Err(e) = socket.send(&self.buf).await {
                    self.report_oversized(oversized);
                    return Err((done, e));
                }
                done += pending;
                pending = 0;
                self.buf.clear();
            }
            put_event_field(&mut self.buf, ev);
            pending += 1;
        }
        if !self.buf.is_empty() {
            if let Err(e) = socket.send(&self.buf).await {
                self.report_oversized(oversized);
                return Err((done, e));
            }
        }
        self.report_oversized(oversized);
        Ok(())
    }
}

impl Output for RiemannUdp {
    fn start(&mut self) -> BoxFuture<'_, Result<(), OutputError>> {
        Box::pin(async move {
            let socket = self
                .open()
                .await
                .map_err(|e| OutputError::new(format!("cannot reach {}:{} over UDP: {e}", self.server, self.port)))?;
            tracing::info!(server = %self.server, port = self.port, "Riemann UDP output ready");
            self.socket = Some(socket);
            Ok(())
        })
    }

    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            if self.socket.is_none() {
                let socket = self.open().await.map_err(|e| {
                    OutputError::new(format!("cannot reach {}:{} over UDP: {e}", self.server, self.port))
                })?;
                self.socket = Some(socket);
            }
            self.send_datagrams(batch).await.map_err(|(done, e)| {
                self.socket = None;
                OutputError::new(format!("sending to {}:{} over UDP: {e}", self.server, self.port)).after(done)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duct_core::{Event, Metric};
    use duct_proto::Message;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Instant;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut ev = Event::new("h", format!("svc{i}"));
                ev.metric = Some(Metric::Int(i as i64));
                ev
            })
            .collect()
    }

    fn tcp_output(ports: &[u16], pressure: usize, events_per_message: usize) -> RiemannTcp {
        RiemannTcp {
            servers: ports.iter().map(|_| "127.0.0.1".to_string()).collect(),
            current: 0,
            port: ports[0],
            tls: None,
            connect_timeout: Duration::from_secs(2),
            conn: None,
            pipeline: Pipeline {
                pressure,
                events_per_message,
                ack_timeout: Duration::from_millis(500),
                wbuf: BytesMut::new(),
                in_flight: VecDeque::new(),
            },
        }
    }

    fn read_frame(s: &mut std::net::TcpStream) -> Option<duct_proto::Msg> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).ok()?;
        duct_proto::Msg::decode(&body[..]).ok()
    }

    /// A one-connection server: answers each message as `answer` says
    /// (`None`: no answer), reports event counts per message.
    fn server(answer: impl Fn(usize) -> Option<Vec<u8>> + Send + 'static) -> (u16, mpsc::Receiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut i = 0;
            while let Some(msg) = read_frame(&mut s) {
                let _ = tx.send(msg.events.len());
                // `None`: keep reading, answer nothing.
                if let Some(bytes) = answer(i) {
                    if s.write_all(&bytes).is_err() {
                        return;
                    }
                }
                i += 1;
            }
        });
        (port, rx)
    }

    fn answer_frame(msg: &duct_proto::Msg) -> Vec<u8> {
        let mut buf = BytesMut::new();
        duct_proto::codec::put_msg_frame(&mut buf, msg);
        buf.to_vec()
    }

    #[tokio::test]
    async fn tcp_sends_in_messages_and_waits_for_every_ack() {
        let (port, seen) = server(|_| Some(duct_proto::OK_FRAME.to_vec()));
        let mut out = tcp_output(&[port], 2, 3);
        out.send(&Batch::from_events(events(10))).await.unwrap();
        let sizes: Vec<usize> = seen.try_iter().collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        // The same connection serves the next batch.
        out.send(&Batch::from_events(events(2))).await.unwrap();
        assert_eq!(seen.recv_timeout(Duration::from_secs(2)).unwrap(), 2);
    }

    #[tokio::test]
    async fn tcp_reports_the_acknowledged_prefix_when_acks_stop() {
        let (port, seen) = server(|i| (i < 2).then(|| duct_proto::OK_FRAME.to_vec()));
        let mut out = tcp_output(&[port], 3, 4);
        let started = Instant::now();
        let err = out.send(&Batch::from_events(events(20))).await.unwrap_err();
        assert_eq!(err.delivered, 8, "{err}");
        assert!(err.message.contains("did not acknowledge"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(out.conn.is_none(), "the connection is dropped");
        // Pressure: never more than 3 messages beyond the acknowledged ones.
        std::thread::sleep(Duration::from_millis(100));
        let written: Vec<usize> = seen.try_iter().collect();
        assert_eq!(written.len(), 5, "2 acknowledged + 3 in flight: {written:?}");
    }

    #[tokio::test]
    async fn tcp_reports_a_closed_connection() {
        // Acks the first message, then hangs up.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            read_frame(&mut s);
            s.write_all(&duct_proto::OK_FRAME).unwrap();
        });
        let mut out = tcp_output(&[port], 1, 5);
        let err = out.send(&Batch::from_events(events(12))).await.unwrap_err();
        assert_eq!(err.delivered, 5, "{err}");
    }

    #[tokio::test]
    async fn tcp_drops_a_refused_message_and_says_so() {
        let (port, _seen) = server(|i| {
            Some(if i == 1 {
                answer_frame(&duct_proto::Msg::refused("no thanks"))
            } else {
                duct_proto::OK_FRAME.to_vec()
            })
        });
        let mut out = tcp_output(&[port], 4, 2);
        let err = out.send(&Batch::from_events(events(6))).await.unwrap_err();
        assert_eq!(err.delivered, 4, "the refused message counts as done: {err}");
        assert_eq!(err.rejected, 2, "and as refused, not delivered");
        assert!(err.message.contains("no thanks"), "{err}");
    }

    #[tokio::test]
    async fn tcp_fails_over_to_the_next_server() {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (live, seen) = server(|_| Some(duct_proto::OK_FRAME.to_vec()));
        let mut out = tcp_output(&[dead, live], 4, 10);
        // Both "servers" are 127.0.0.1; the port tells them apart here.
        out.servers = vec!["127.0.0.1".into(), "localhost".into()];
        out.port = dead;
        let err = out.send(&Batch::from_events(events(3))).await.unwrap_err();
        assert_eq!(err.delivered, 0);
        assert!(err.message.contains("next attempt: localhost"), "{err}");
        assert_eq!(out.current, 1);
        out.port = live;
        out.send(&Batch::from_events(events(3))).await.unwrap();
        assert_eq!(seen.recv_timeout(Duration::from_secs(2)).unwrap(), 3);
    }

    #[tokio::test]
    async fn tcp_connect_refused_is_an_error_not_a_hang() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut out = tcp_output(&[port], 4, 10);
        let err = out.send(&Batch::from_events(events(1))).await.unwrap_err();
        assert!(err.message.contains("cannot connect"), "{err}");
    }

    fn udp_pair(max: usize) -> (std::net::UdpSocket, RiemannUdp) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = rx.local_addr().unwrap().port();
        (rx, RiemannUdp::new("127.0.0.1".into(), port, max))
    }

    fn datagrams(rx: &std::net::UdpSocket) -> Vec<duct_proto::Msg> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        rx.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        while let Ok(n) = rx.recv(&mut buf) {
            out.push(duct_proto::Msg::decode(&buf[..n]).expect("a bare Msg per datagram"));
        }
        out
    }

    #[tokio::test]
    async fn udp_sends_one_msg_per_datagram_within_the_size_limit() {
        let (rx, mut out) = udp_pair(1024);
        out.start().await.unwrap();
        let sent = events(100);
        out.send(&Batch::from_events(sent.clone())).await.unwrap();
        let got = datagrams(&rx);
        assert!(got.len() > 1, "split into several datagrams");
        assert!(got.iter().all(|m| m.encoded_len() <= 1024), "each under the limit");
        let fallback = duct_proto::Fallback { time: 0.0, ttl: 0.0 };
        let services: Vec<String> = got
            .into_iter()
            .flat_map(|m| m.events)
            .map(|e| e.into_event(&fallback).service)
            .collect();
        let expected: Vec<String> = sent.iter().map(|e| e.service.clone()).collect();
        assert_eq!(services, expected);
    }

    #[tokio::test]
    async fn udp_drops_an_event_too_large_for_any_datagram_and_sends_the_rest() {
        let (rx, mut out) = udp_pair(512);
        out.start().await.unwrap();
        let mut batch = events(3);
        batch[1].description = "x".repeat(2000);
        out.send(&Batch::from_events(batch)).await.unwrap();
        let got: Vec<duct_proto::Event> = datagrams(&rx).into_iter().flat_map(|m| m.events).collect();
        let services: Vec<&str> = got.iter().filter_map(|e| e.service.as_deref()).collect();
        assert_eq!(services, ["svc0", "svc2"]);
        assert_eq!(out.oversized_log.allow(Duration::from_secs(60)), None, "reported");
    }
}
