//! `duct.sources.riemann.RiemannTCP`: a Riemann server. Clients (the
//! `riemann-client` CLI, collectd's `write_riemann`, another ductd's
//! RiemannTCP output) send framed protobuf `Msg`s; every event of every
//! message enters the pipeline unchanged, and every message is answered
//! `ok: true` once its events are handed to the router.
//!
//! The listener is bound in `start` (so a port already in use is an error
//! the source actor retries), then an accept loop runs on the source's
//! arbiter and hands each connection to the next of the agent's worker
//! threads (so that many clients use every core); there the connection is
//! a [`RiemannConnection`] actor reading frames as a stream and decoding
//! them straight into events ([`duct_proto::decode`]). Limits:
//! `max_connections` open at once (more are closed at accept),
//! `max_frame_bytes` per message (a larger one is answered `ok: false` and
//! the connection closed), `max_events_per_message` and
//! `max_message_memory` per decoded message (a costlier one is answered
//! `ok: false`, none of its events taken, and the connection goes on),
//! `max_connections_per_client` from one address, `idle_timeout` without a
//! message and the shorter `first_message_timeout` before the first (see
//! [`crate::accept`]).
//! A bad frame, a stuck client or a panic in one connection ends that
//! connection only.
//!
//! How a message is judged ([`Admission`]) and handed to the pipeline
//! ([`ingest`]) is shared with `duct.sources.riemann.RiemannUDP` ([`udp`]).

pub mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::accept::{self, AcceptLimits, Accepted, Silence, SilenceClock, Slot, FIRST_MESSAGE_TIMEOUT};
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use duct_core::config::seconds::Zero;
use duct_core::config::Diagnostic;
use duct_core::event::now;
use duct_core::throttle::Throttle;
use duct_core::Event;
use duct_core::{Poll, Schedule, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use duct_proto::codec::put_msg_frame;
use duct_proto::tls::{self, TlsAcceptor, TlsFiles};
use duct_proto::{
    decode_msg, DecodeError, Fallback, FrameCodec, FrameError, Limits, Malformed, Msg, DEFAULT_MAX_FRAME_BYTES,
    OK_FRAME,
};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

/// The most events one message may carry unless configured otherwise: far
/// above what clients batch (hundreds), far below the 8 million empty
/// events that fit in a 16 MiB frame.
pub(crate) const DEFAULT_MAX_EVENTS: usize = 100_000;
/// The memory one message's decoded events may take, unless configured,
/// as a multiple of `max_frame_bytes`: typical events (host, service,
/// state, metric, a tag or two) take 3 to 5 times their encoded size.
const DEFAULT_MEMORY_PER_FRAME_BYTE: usize = 4;
/// A message's events go to the pipeline in slices of this many, each
/// waiting for room, so that one large message is pushed back on like
/// many small ones rather than landing in the output queues at once.
const INGEST_SLICE: usize = 1000;
/// Repeated reports (strings not UTF-8, refused messages) are logged at
/// most this often per listener.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing one answer may take before the client is given up on
/// (it is not reading its answers).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    port: u16,
    /// Address to listen on; every interface by default, as Duct.
    bind: String,
    tls: bool,
    /// The server's certificate chain and key (PEM), required with `tls`.
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// CA certificates (PEM): when given, clients must present a
    /// certificate it signed.
    ca: Option<PathBuf>,
    /// Connections open at once; more are closed as they arrive.
    max_connections: usize,
    /// Connections open at once from one client address; by default a
    /// quarter of `max_connections`.
    max_connections_per_client: Option<usize>,
    /// Largest message accepted, in bytes.
    max_frame_bytes: usize,
    /// Most events in one message.
    max_events_per_message: usize,
    /// Most memory the decoded events of one message may take, in bytes;
    /// by default four times `max_frame_bytes`.
    max_message_memory: Option<usize>,
    /// Seconds without a message before a connection is closed; 0: never.
    idle_timeout: f64,
    /// Seconds from connecting to the first whole message before a
    /// connection is closed; 0: as `idle_timeout`.
    first_message_timeout: f64,
    /// Answer a message only once its events are in every routed output's
    /// disk buffer (or delivered), not once the router has them.
    end_to_end: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 5555,
            bind: "0.0.0.0".into(),
            tls: false,
            cert: None,
            key: None,
            ca: None,
            max_connections: 1024,
            max_connections_per_client: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_events_per_message: DEFAULT_MAX_EVENTS,
            max_message_memory: None,
            idle_timeout: 600.0,
            first_message_timeout: FIRST_MESSAGE_TIMEOUT.as_secs_f64(),
            end_to_end: false,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.riemann.RiemannTCP",
        "A Riemann TCP server (optionally TLS): every event clients send enters the pipeline unchanged",
        &["(any): the events clients send, as they are"],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    if opts.max_connections == 0 {
        return Err(args.invalid("max_connections", "must be at least 1"));
    }
    if opts.max_frame_bytes == 0 || opts.max_frame_bytes > u32::MAX as usize {
        return Err(args.invalid("max_frame_bytes", "must be between 1 and 4294967295"));
    }
    if opts.max_connections_per_client == Some(0) {
        return Err(args.invalid("max_connections_per_client", "must be at least 1"));
    }
    let first_message_timeout = args.duration(
        "first_message_timeout",
        opts.first_message_timeout,
        Zero::Means("as idle_timeout"),
    )?;
    if opts.max_events_per_message == 0 {
        return Err(args.invalid("max_events_per_message", "must be at least 1"));
    }
    if opts.max_message_memory == Some(0) {
        return Err(args.invalid("max_message_memory", "must be at least 1"));
    }
    let idle_timeout = args.duration("idle_timeout", opts.idle_timeout, Zero::Means("never"))?;
    let tls = if opts.tls {
        let files = TlsFiles {
            cert: opts.cert,
            key: opts.key,
            ca: opts.ca,
        };
        let config = tls::server_config(&files).map_err(|e| args.invalid(e.option(), e))?;
        Some(TlsAcceptor::from(config))
    } else {
        None
    };
    Ok(Box::new(RiemannListener {
        config: Arc::new(ListenerConfig {
            bind: opts.bind,
            port: opts.port,
            tls,
            accept: AcceptLimits::new(opts.max_connections, opts.max_connections_per_client),
            max_frame_bytes: opts.max_frame_bytes,
            admission: Admission::new(Limits {
                max_events: opts.max_events_per_message,
                max_memory: opts
                    .max_message_memory
                    .unwrap_or(opts.max_frame_bytes.saturating_mul(DEFAULT_MEMORY_PER_FRAME_BYTE)),
            }),
            silence: Silence {
                idle_timeout: (!idle_timeout.is_zero()).then_some(idle_timeout),
                first_message_timeout: (!first_message_timeout.is_zero()).then_some(first_message_timeout),
            },
            end_to_end: opts.end_to_end,
        }),
    }))
}

/// The listener's settings, shared by its accept loop and connections.
struct ListenerConfig {
    bind: String,
    port: u16,
    tls: Option<TlsAcceptor>,
    accept: AcceptLimits,
    max_frame_bytes: usize,
    admission: Admission,
    silence: Silence,
    /// Answer once the events are kept by every output (see [`ingest_kept`]).
    end_to_end: bool,
}

/// What becomes of one message.
pub(crate) enum Verdict {
    /// Its events, to be ingested, then the message acknowledged.
    Take(Vec<Event>),
    /// Well-formed but refused whole (a query, too costly): answered
    /// `ok: false` with the reason; none of its events are taken.
    Refuse(String),
    /// Not a message: the stream cannot be trusted any more.
    Broken(Malformed),
}

/// How a listener judges messages, shared by its connections (over TCP)
/// or datagrams (over UDP).
pub(crate) struct Admission {
    limits: Limits,
    /// Thins the reports of strings that are not UTF-8 and of refused
    /// messages, which a misbehaving client repeats with every message.
    not_utf8_log: std::sync::Mutex<Throttle>,
    refused_log: std::sync::Mutex<Throttle>,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Self {
        Admission {
            limits,
            not_utf8_log: Default::default(),
            refused_log: Default::default(),
        }
    }

    /// Decodes a message body from `peer` and decides what becomes of it,
    /// counting what the agent's telemetry reports.
    pub(crate) fn judge(&self, body: &[u8], sctx: &SourceContext, peer: SocketAddr) -> Verdict {
        let fallback = Fallback {
            time: now(),
            ttl: sctx.settings().ttl,
        };
        let telemetry = sctx.telemetry();
        let refusal = match decode_msg(body, &fallback, &self.limits) {
            Ok(incoming) => {
                if incoming.repaired > 0 {
                    duct_core::Telemetry::count(&telemetry.strings_not_utf8, incoming.repaired as u64);
                    if let Some(held) = allow(&self.not_utf8_log) {
                        tracing::warn!(
                            service = %sctx.service(),
                            %peer,
                            strings = incoming.repaired,
                            held_back = held,
                            "strings that are not UTF-8 were kept with U+FFFD in place of the bad bytes"
                        );
                    }
                }
                if !incoming.query {
                    return Verdict::Take(incoming.events);
                }
                "queries are not supported".to_string()
            }
            Err(DecodeError::Malformed(e)) => return Verdict::Broken(e),
            Err(e) => e.to_string(),
        };
        duct_core::Telemetry::count(&telemetry.messages_refused, 1);
        if let Some(held) = allow(&self.refused_log) {
            tracing::warn!(service = %sctx.service(), %peer, held_back = held, "refused a message: {refusal}");
        }
        Verdict::Refuse(refusal)
    }
}

fn allow(log: &std::sync::Mutex<Throttle>) -> Option<u64> {
    log.lock().unwrap_or_else(|p| p.into_inner()).allow(REPORT_EVERY)
}

/// Hands a message's events to the pipeline, slice by slice, waiting while
/// it is saturated (that is how a flood pushes back on its sender).
pub(crate) async fn ingest(sctx: &SourceContext, events: Vec<Event>) {
    if events.len() <= INGEST_SLICE {
        return sctx.queue_back_wait(events).await;
    }
    let mut events = events.into_iter();
    loop {
        let slice: Vec<Event> = events.by_ref().take(INGEST_SLICE).collect();
        if slice.is_empty() {
            return;
        }
        sctx.queue_back_wait(slice).await;
    }
}

/// Like [`ingest`], then waits until every output the events are routed to
/// has them in its disk buffer or delivered (`end_to_end`); false if any
/// output had to give some up.
pub(crate) async fn ingest_kept(sctx: &SourceContext, events: Vec<Event>) -> bool {
    let mut claims = Vec::with_capacity(events.len().div_ceil(INGEST_SLICE));
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let slice: Vec<Event> = events.by_ref().take(INGEST_SLICE).collect();
        claims.push(sctx.queue_back_held(slice).await);
    }
    let mut kept = true;
    for claim in claims {
        kept &= claim.await.unwrap_or(false);
    }
    kept
}

/// The answer to a message whose events an output gave up (`end_to_end`).
const NOT_KEPT: &str = "not every output could keep the events (dropped or refused); send them again";

/// The source itself: binds in `start`, then everything happens in the
/// accept loop and the connection actors.
pub struct RiemannListener {
    config: Arc<ListenerConfig>,
}

impl Source for RiemannListener {
    fn schedule(&self) -> Schedule {
        Schedule::Listener
    }

    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let c = &self.config;
        let listener = accept::bind(&c.bind, c.port)?;
        let address = listener.local_addr()?;
        tracing::info!(service = %ctx.service(), %address, tls = c.tls.is_some(), "Riemann listener ready");
        let (config, sctx) = (self.config.clone(), ctx.clone());
        let serve = move |accepted: Accepted| serve(accepted, config.clone(), sctx.clone());
        ctx.spawn(accept::accept_loop(listener, c.accept, ctx.clone(), serve));
        Ok(())
    }

    fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

type Reader = Box<dyn AsyncRead + Unpin>;
type Writer = Box<dyn AsyncWrite + Unpin>;

/// Starts serving a connection on the current (worker) thread: the TLS
/// handshake if any, then the connection's actor.
fn serve(accepted: Accepted, config: Arc<ListenerConfig>, sctx: SourceContext) {
    let Accepted { tcp, peer, slot } = accepted;
    let tcp = match tokio::net::TcpStream::from_std(tcp) {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::debug!(service = %sctx.service(), %peer, "cannot serve the connection: {e}");
            return;
        }
    };
    match &config.tls {
        None => {
            let (r, w) = tcp.into_split();
            RiemannConnection::open(Box::new(r), Box::new(w), peer, &config, &sctx, slot);
        }
        Some(acceptor) => {
            // The handshake runs beside the other connections: a slow
            // client must not hold them up.
            let acceptor = acceptor.clone();
            let sctx2 = sctx.clone();
            sctx.spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let (r, w) = tokio::io::split(stream);
                        RiemannConnection::open(Box::new(r), Box::new(w), peer, &config, &sctx2, slot);
                    }
                    Ok(Err(e)) => {
                        if let Some(held) = slot.log_error() {
                            tracing::warn!(
                                service = %sctx2.service(),
                                %peer,
                                held_back = held,
                                "TLS handshake failed: {e}"
                            );
                        }
                    }
                    Err(_) => tracing::debug!(service = %sctx2.service(), %peer, "TLS handshake timed out"),
                }
            });
        }
    }
}

/// One client connection: frames in as a stream, answers out in order.
struct RiemannConnection {
    sctx: SourceContext,
    peer: SocketAddr,
    /// Where answers go; held by the future writing one while it runs
    /// (no frame is read meanwhile, so answers keep their order).
    writer: Option<Writer>,
    config: Arc<ListenerConfig>,
    /// How long the connection has been silent, for `idle_timeout` and
    /// `first_message_timeout`.
    silence: SilenceClock,
    /// Held for the connection's lifetime: counts it against
    /// `max_connections`.
    slot: Slot,
}

impl RiemannConnection {
    fn open(
        reader: Reader,
        writer: Writer,
        peer: SocketAddr,
        config: &Arc<ListenerConfig>,
        sctx: &SourceContext,
        slot: Slot,
    ) {
        let frames = FramedRead::new(reader, FrameCodec::new(config.max_frame_bytes));
        let connection = RiemannConnection {
            sctx: sctx.clone(),
            peer,
            writer: Some(writer),
            config: config.clone(),
            silence: SilenceClock::new(config.silence),
            slot,
        };
        RiemannConnection::create(move |ctx| {
            ctx.add_stream(frames);
            connection
        });
    }

    /// Hands the message's events to the pipeline (see [`ingest`]), then
    /// answers; a refused message is answered `ok: false` and none of its
    /// events are taken.
    fn accept(&mut self, body: BytesMut, ctx: &mut Context<Self>) {
        let verdict = self.config.admission.judge(&body, &self.sctx, self.peer);
        drop(body);
        let (events, answer) = match verdict {
            Verdict::Take(events) => (events, Bytes::from_static(&OK_FRAME)),
            Verdict::Refuse(why) => (Vec::new(), frame(&Msg::refused(why))),
            Verdict::Broken(e) => return self.refuse(e.into(), ctx),
        };
        let Some(mut writer) = self.writer.take() else {
            ctx.stop();
            return;
        };
        let sctx = self.sctx.clone();
        let end_to_end = self.config.end_to_end;
        let work = async move {
            let mut answer = answer;
            if end_to_end {
                if !ingest_kept(&sctx, events).await {
                    answer = frame(&Msg::refused(NOT_KEPT.to_string()));
                }
            } else {
                ingest(&sctx, events).await;
            }
            let written = tokio::time::timeout(ANSWER_TIMEOUT, write_answer(&mut writer, &answer)).await;
            (writer, written)
        };
        ctx.wait(work.into_actor(self).map(|(writer, written), act, ctx| match written {
            Ok(Ok(())) => {
                // The wait for room counts as activity, however long.
                act.silence.heard();
                act.writer = Some(writer);
            }
            Ok(Err(e)) => {
                tracing::debug!(service = %act.sctx.service(), peer = %act.peer, "cannot answer: {e}");
                ctx.stop();
            }
            Err(_) => {
                let service = act.sctx.service();
                tracing::debug!(%service, peer = %act.peer, "client does not read its answers; closing");
                ctx.stop();
            }
        }));
    }

    /// A frame that cannot be read: say why, if the client can still hear
    /// it, and close.
    fn refuse(&mut self, error: FrameError, ctx: &mut Context<Self>) {
        if let FrameError::Io(e) = &error {
            tracing::debug!(service = %self.sctx.service(), peer = %self.peer, "connection ended: {e}");
            ctx.stop();
            return;
        }
        if let Some(held) = self.slot.log_error() {
            tracing::warn!(
                service = %self.sctx.service(),
                peer = %self.peer,
                held_back = held,
                "closing a connection: {error}"
            );
        }
        let Some(mut writer) = self.writer.take() else {
            ctx.stop();
            return;
        };
        let answer = frame(&Msg::refused(error.to_string()));
        let work = async move {
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, write_answer(&mut writer, &answer)).await;
            let _ = writer.shutdown().await;
        };
        ctx.wait(work.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}

fn frame(msg: &Msg) -> Bytes {
    let mut buf = BytesMut::new();
    put_msg_frame(&mut buf, msg);
    buf.freeze()
}

async fn write_answer(writer: &mut Writer, answer: &[u8]) -> std::io::Result<()> {
    writer.write_all(answer).await?;
    writer.flush().await
}

impl Actor for RiemannConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(service = %self.sctx.service(), peer = %self.peer, "connection opened");
        // The source stopping (reload, shutdown) ends its connections.
        let cancelled = self.sctx.cancellation().cancelled_owned();
        ctx.spawn(cancelled.into_actor(self).map(|_, _, ctx| ctx.stop()));
        if let Some(every) = self.silence.check_every() {
            ctx.run_interval(every, move |act, ctx| {
                if let Some(limit) = act.silence.expired() {
                    tracing::debug!(service = %act.sctx.service(), peer = %act.peer, "closing a silent connection ({limit})");
                    ctx.stop();
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(service = %self.sctx.service(), peer = %self.peer, "connection closed");
    }
}

impl StreamHandler<Result<BytesMut, FrameError>> for RiemannConnection {
    fn handle(&mut self, item: Result<BytesMut, FrameError>, ctx: &mut Self::Context) {
        match item {
            Ok(body) => {
                self.silence.heard();
                self.accept(body, ctx)
            }
            Err(e) => self.refuse(e, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{context, Collect};
    use duct_core::{Event, Metric};
    use duct_proto::Message;
    use std::time::Instant;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    fn listener(port: u16, max_connections: usize, max_frame_bytes: usize, idle: Option<Duration>) -> RiemannListener {
        let silence = Silence {
            idle_timeout: idle,
            first_message_timeout: None,
        };
        listener_with(
            port,
            AcceptLimits::new(max_connections, Some(max_connections)),
            silence,
            max_frame_bytes,
        )
    }

    fn listener_with(port: u16, accept: AcceptLimits, silence: Silence, max_frame_bytes: usize) -> RiemannListener {
        RiemannListener {
            config: Arc::new(ListenerConfig {
                bind: "127.0.0.1".into(),
                port,
                tls: None,
                accept,
                max_frame_bytes,
                admission: Admission::new(Limits {
                    max_events: 1000,
                    max_memory: 4 * max_frame_bytes,
                }),
                silence,
                end_to_end: false,
            }),
        }
    }

    /// Runs `test` inside an actix system with a started listener.
    fn with_listener<F, Fut>(source: RiemannListener, test: F)
    where
        F: FnOnce(u16, SourceContext, Arc<Collect>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let port = source.config.port;
        actix::System::new().block_on(async move {
            let mut source = source;
            let (ctx, sink) = context("riemann");
            source.start(&ctx).unwrap();
            test(port, ctx, sink).await;
        });
    }

    fn sample(i: i64) -> Event {
        let mut ev = Event::new("client-host", format!("svc.{i}"));
        ev.state = Some("warning".into());
        ev.time = 1732500000.5;
        ev.description = "described".into();
        ev.metric = Some(Metric::Int(i));
        ev.ttl = 30.0;
        ev.tags = vec!["t1".into(), "t2".into()];
        ev.attributes = vec![("k".into(), "v".into())];
        ev
    }

    async fn send_events(s: &mut TcpStream, events: &[Event]) {
        let mut buf = BytesMut::new();
        duct_proto::wire::put_events_frame(&mut buf, events).unwrap();
        s.write_all(&buf).await.unwrap();
    }

    /// The next answer, or `None` if the connection closed.
    async fn answer(s: &mut TcpStream) -> Option<Msg> {
        let read = async {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut body).await.ok()?;
            Msg::decode(&body[..]).ok()
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an answer or EOF in time")
    }

    async fn connect(port: u16) -> TcpStream {
        TcpStream::connect(("127.0.0.1", port)).await.unwrap()
    }

    #[test]
    fn events_enter_unchanged_and_every_message_is_acknowledged() {
        with_listener(listener(free_port(), 8, 1 << 20, None), |port, _, sink| async move {
            let mut s = connect(port).await;
            send_events(&mut s, &[sample(1), sample(2)]).await;
            send_events(&mut s, &[sample(3)]).await;
            assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
            assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
            let got = sink.0.lock().unwrap().clone();
            assert_eq!(got, [sample(1), sample(2), sample(3)]);
        });
    }

    #[test]
    fn missing_time_and_ttl_come_from_arrival_and_the_source() {
        with_listener(listener(free_port(), 8, 1 << 20, None), |port, ctx, sink| async move {
            let mut s = connect(port).await;
            let msg = Msg {
                events: vec![duct_proto::Event {
                    service: Some("bare".into()),
                    ..Default::default()
                }],
                ..Msg::default()
            };
            let mut buf = BytesMut::new();
            put_msg_frame(&mut buf, &msg);
            s.write_all(&buf).await.unwrap();
            assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
            let got = sink.0.lock().unwrap()[0].clone();
            assert_eq!(got.service, "bare");
            assert_eq!(got.ttl, ctx.settings().ttl);
            assert!((now() - got.time).abs() < 5.0);
        });
    }

    #[test]
    fn queries_are_refused_and_the_connection_goes_on() {
        with_listener(listener(free_port(), 8, 1 << 20, None), |port, _, sink| async move {
            let mut s = connect(port).await;
            let query = Msg {
                query: Some(duct_proto::Query {
                    string: Some("true".into()),
                }),
                ..Msg::default()
            };
            let mut buf = BytesMut::new();
            put_msg_frame(&mut buf, &query);
            s.write_all(&buf).await.unwrap();
            let refused = answer(&mut s).await.unwrap();
            assert_eq!(refused.ok, Some(false));
            assert_eq!(refused.error.as_deref(), Some("queries are not supported"));
            send_events(&mut s, &[sample(1)]).await;
            assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
            assert_eq!(sink.0.lock().unwrap().len(), 1);
        });
    }

    async fn send_raw(s: &mut TcpStream, body: &[u8]) {
        s.write_all(&(body.len() as u32).to_be_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
    }

    #[test]
    fn a_message_of_too_many_events_is_refused_whole_and_the_connection_goes_on() {
        with_listener(listener(free_port(), 8, 1 << 20, None), |port, ctx, sink| async move {
            let mut s = connect(port).await;
            // 1001 empty events, one above the limit.
            send_raw(&mut s, &[0x32, 0x00].repeat(1001)).await;
            let refused = answer(&mut s).await.unwrap();
            assert_eq!(refused.ok, Some(false));
            assert!(refused.error.unwrap().contains("max_events_per_message"));
            // One event of 100,000 empty attributes: 200 kB, 6 MB decoded.
            let event = [0x4a, 0x00].repeat(100_000);
            let mut body = vec![0x32, 0xc0, 0x9a, 0x0c];
            body.extend_from_slice(&event);
            send_raw(&mut s, &body).await;
            let refused = answer(&mut s).await.unwrap();
            assert_eq!(refused.ok, Some(false));
            assert!(refused.error.unwrap().contains("max_message_memory"));
            assert!(
                sink.0.lock().unwrap().is_empty(),
                "nothing of a refused message is taken"
            );
            send_events(&mut s, &[sample(1)]).await;
            assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
            assert_eq!(sink.0.lock().unwrap().clone(), [sample(1)]);
            let refused = ctx
                .telemetry()
                .messages_refused
                .load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(refused, 2);
        });
    }

    /// Records the size of every batch handed on.
    #[derive(Default)]
    struct Batches(std::sync::Mutex<Vec<usize>>);

    impl duct_core::EventSink for Batches {
        fn publish(&self, events: Vec<Event>) {
            self.0.lock().unwrap().push(events.len());
        }
    }

    #[tokio::test]
    async fn a_large_message_reaches_the_pipeline_in_slices() {
        let batches = Arc::new(Batches::default());
        let ctx = SourceContext::new(
            Arc::new(duct_core::SourceSettings::for_service("riemann", "h")),
            batches.clone(),
            duct_core::Telemetry::new(),
        );
        ingest(&ctx, (0..2500).map(sample).collect()).await;
        ingest(&ctx, (0..10).map(sample).collect()).await;
        assert_eq!(*batches.0.lock().unwrap(), [1000, 1000, 500, 10]);
    }

    #[test]
    fn events_beside_a_query_are_not_taken() {
        with_listener(listener(free_port(), 8, 1 << 20, None), |port, _, sink| async move {
            let mut s = connect(port).await;
            let msg = Msg {
                query: Some(duct_proto::Query {
                    string: Some("true".into()),
                }),
                events: vec![duct_proto::Event::from_event(&sample(1))],
                ..Msg::default()
            };
            let mut buf = BytesMut::new();
            put_msg_frame(&mut buf, &msg);
            s.write_all(&buf).await.unwrap();
            let refused = answer(&mut s).await.unwrap();
            assert_eq!(refused.ok, Some(false));
            send_events(&mut s, &[sample(2)]).await;
            assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
            assert_eq!(
                sink.0.lock().unwrap().clone(),
                [sample(2)],
                "the refused message's event is not taken"
            );
        });
    }

    #[test]
    fn strings_that_are_not_utf8_are_kept_and_counted() {
        with_listener(listener(free_port(), 8, 1 << 20, None), |port, ctx, sink| async move {
            let mut s = connect(port).await;
            // Latin-1 host "Zürich" and service "d\xe9bit".
            let event = [
                &[0x22, 6, b'Z', 0xfc, b'r', b'i', b'c', b'h'][..],
                &[0x1a, 5, b'd', 0xe9, b'b', b'i', b't'],
            ]
            .concat();
            let body = [&[0x32, event.len() as u8][..], &event].concat();
            send_raw(&mut s, &body).await;
            assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
            let got = sink.0.lock().unwrap().clone();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].host, "Z\u{fffd}rich");
            assert_eq!(got[0].service, "d\u{fffd}bit");
            let counted = ctx
                .telemetry()
                .strings_not_utf8
                .load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(counted, 2);
        });
    }

    #[test]
    fn garbage_and_oversized_frames_close_only_their_connection() {
        with_listener(listener(free_port(), 8, 1024, None), |port, _, sink| async move {
            let mut good = connect(port).await;

            let mut garbage = connect(port).await;
            garbage.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
            let refused = answer(&mut garbage).await.unwrap();
            assert_eq!(refused.ok, Some(false));
            assert!(refused.error.unwrap().contains("undecodable"));
            assert_eq!(answer(&mut garbage).await, None, "closed after the refusal");

            let mut huge = connect(port).await;
            huge.write_all(&100_000_000u32.to_be_bytes()).await.unwrap();
            let refused = answer(&mut huge).await.unwrap();
            assert!(refused.error.unwrap().contains("max_frame_bytes"));
            assert_eq!(answer(&mut huge).await, None);

            send_events(&mut good, &[sample(7)]).await;
            assert_eq!(answer(&mut good).await, Some(Msg::accepted()));
            assert_eq!(sink.0.lock().unwrap().clone(), [sample(7)]);
        });
    }

    #[test]
    fn connections_beyond_the_limit_are_closed() {
        with_listener(listener(free_port(), 1, 1 << 20, None), |port, _, _| async move {
            let mut first = connect(port).await;
            send_events(&mut first, &[sample(1)]).await;
            assert!(answer(&mut first).await.is_some());
            let mut second = connect(port).await;
            assert_eq!(answer(&mut second).await, None, "closed at once");
            drop(first);
            // The slot comes back when the first connection's actor ends.
            let mut third = None;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut s = connect(port).await;
                send_events(&mut s, &[sample(2)]).await;
                if answer(&mut s).await.is_some() {
                    third = Some(s);
                    break;
                }
            }
            assert!(third.is_some(), "a new connection is served once the first left");
        });
    }

    #[test]
    fn one_client_cannot_hold_every_connection() {
        let accept = AcceptLimits::new(8, Some(2));
        let silence = Silence {
            idle_timeout: None,
            first_message_timeout: None,
        };
        with_listener(
            listener_with(free_port(), accept, silence, 1 << 20),
            |port, _, _| async move {
                let mut held = Vec::new();
                for _ in 0..2 {
                    let mut s = connect(port).await;
                    send_events(&mut s, &[sample(1)]).await;
                    assert_eq!(answer(&mut s).await, Some(Msg::accepted()));
                    held.push(s);
                }
                let mut third = connect(port).await;
                assert_eq!(
                    answer(&mut third).await,
                    None,
                    "a third from the same address is closed"
                );
                // Another address (127.0.0.2 is loopback too) is still served.
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let mut other = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
                send_events(&mut other, &[sample(2)]).await;
                assert_eq!(answer(&mut other).await, Some(Msg::accepted()));
            },
        );
    }

    #[test]
    fn a_connection_that_never_sends_a_message_is_closed_sooner() {
        let silence = Silence {
            idle_timeout: Some(Duration::from_secs(600)),
            first_message_timeout: Some(Duration::from_millis(200)),
        };
        let accept = AcceptLimits::new(8, None);
        with_listener(
            listener_with(free_port(), accept, silence, 1 << 20),
            |port, _, _| async move {
                let mut talker = connect(port).await;
                send_events(&mut talker, &[sample(1)]).await;
                assert_eq!(answer(&mut talker).await, Some(Msg::accepted()));
                let mut silent = connect(port).await;
                // Half a frame is not a message.
                silent.write_all(&[0, 0, 0, 10, 0x32]).await.unwrap();
                let started = Instant::now();
                assert_eq!(answer(&mut silent).await, None, "closed");
                assert!(started.elapsed() >= Duration::from_millis(150));
                tokio::time::sleep(Duration::from_millis(300)).await;
                send_events(&mut talker, &[sample(2)]).await;
                assert_eq!(
                    answer(&mut talker).await,
                    Some(Msg::accepted()),
                    "idle_timeout applies once heard"
                );
            },
        );
    }

    #[test]
    fn idle_connections_are_closed() {
        let idle = Some(Duration::from_millis(200));
        with_listener(listener(free_port(), 8, 1 << 20, idle), |port, _, _| async move {
            let mut s = connect(port).await;
            let started = Instant::now();
            assert_eq!(answer(&mut s).await, None);
            assert!(started.elapsed() >= Duration::from_millis(200));
        });
    }

    #[test]
    fn stopping_the_source_closes_its_connections_and_port() {
        with_listener(listener(free_port(), 8, 1 << 20, None), |port, ctx, _| async move {
            let mut s = connect(port).await;
            send_events(&mut s, &[sample(1)]).await;
            assert!(answer(&mut s).await.is_some());
            ctx.cancel();
            assert_eq!(answer(&mut s).await, None);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                TcpStream::connect(("127.0.0.1", port)).await.is_err(),
                "no longer listening"
            );
        });
    }

    #[test]
    fn a_port_in_use_is_an_error_from_start() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        actix::System::new().block_on(async move {
            let (ctx, _) = context("riemann");
            let err = listener(port, 8, 1024, None).start(&ctx).unwrap_err();
            assert!(
                err.to_string().contains(&format!("cannot listen on 127.0.0.1:{port}")),
                "{err}"
            );
        });
    }
}
