//! The shared HTTP server: the health endpoint and pull outputs (the
//! Prometheus page) register handlers by path and get a [`ServerHandle`]
//! that stops the server when asked or dropped.
//!
//! It is hyper's HTTP/1.1 connection over a tokio `TcpListener`, with the
//! limits a server exposed to a cluster needs ([`Limits`]):
//!
//! - a request head must arrive within `header_read_timeout` of the moment
//!   the server starts waiting for it. hyper's timer runs while a
//!   keep-alive connection waits for its next request too, so the same
//!   figure is also how long an idle connection is kept open;
//! - a request body must arrive within `body_read_timeout` and may not pass
//!   `max_body_bytes` (413), a head may not pass `max_header_bytes` (431);
//! - a client that stops reading its response is dropped once a write has
//!   waited `write_timeout`;
//! - at most `max_connections` connections are open. A connection beyond
//!   that takes the place of the open connection that has waited longest
//!   for a request (silent, idle keep-alive, or still dribbling a head);
//!   when every open connection is in the middle of a request, the new one
//!   is closed at once. So clients that open every slot and send nothing
//!   cannot lock a health probe out: each new connection evicts the oldest
//!   of them, and a probe sends its request at once.
//!
//! Handlers get the whole request, body read, and return the whole
//! response: the pages served here are small or built in one go.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::rt::{TokioIo, TokioTimer};

pub use hyper::{header, Method, StatusCode};

/// A request as handlers see it: its body read in full.
pub type Request = hyper::Request<Bytes>;
/// A response as handlers give it.
pub type Response = hyper::Response<Bytes>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Answers requests for one path: any `Fn(Request) -> impl Future<Output =
/// Response>` that can be shared between connections.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, request: Request) -> BoxFuture<Response>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, request: Request) -> BoxFuture<Response> {
        Box::pin(self(request))
    }
}

/// Handlers by exact path (the query is not part of it), and what answers
/// every other path (404 by default).
#[derive(Clone, Default)]
pub struct Routes {
    by_path: HashMap<String, Arc<dyn Handler>>,
    fallback: Option<Arc<dyn Handler>>,
}

impl Routes {
    /// No routes: every path answers 404 until some are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `path` (e.g. `/metrics`) with `handler`, whatever the method:
    /// handlers say 405 themselves.
    pub fn route(mut self, path: impl Into<String>, handler: impl Handler) -> Self {
        self.by_path.insert(path.into(), Arc::new(handler));
        self
    }

    /// Answers the paths no route names.
    pub fn fallback(mut self, handler: impl Handler) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    fn find(&self, path: &str) -> Option<Arc<dyn Handler>> {
        self.by_path.get(path).or(self.fallback.as_ref()).cloned()
    }
}

/// The limits of one server; see the module documentation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; past it a new one evicts the connection
    /// that has waited longest for a request, or is closed when all are
    /// busy.
    pub max_connections: usize,
    /// For a request head to arrive; also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// For a request body to arrive once its head has (408 past it).
    pub body_read_timeout: Duration,
    /// A write that makes no progress for this long drops the connection.
    pub write_timeout: Duration,
    /// Largest request head (431 past it).
    pub max_header_bytes: usize,
    /// Largest request body (413 past it).
    pub max_body_bytes: usize,
    /// Keep connections open between requests (scrapers reuse theirs);
    /// off, every response closes its connection.
    pub keep_alive: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 8 << 10,
            max_body_bytes: 64 << 10,
            keep_alive: true,
        }
    }
}

/// A running server. Dropping it stops the server, as [`ServerHandle::stop`].
pub struct ServerHandle {
    local: SocketAddr,
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The address the server listens on (the port the system chose for
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting, closes the listening socket and every open
    /// connection, requests in progress included.
    pub fn stop(&self) {
        self.shared.stop();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("local", &self.local).finish()
    }
}

/// Binds `addr` now (so a taken port or a bad address is the caller's error
/// at once) and serves `routes` on the current tokio runtime until the
/// handle is stopped or dropped. Must be called within a tokio runtime.
pub fn serve(addr: SocketAddr, routes: Routes, limits: Limits) -> io::Result<ServerHandle> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let local = listener.local_addr()?;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer)
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(limits.keep_alive);
    let shared = Arc::new(Shared {
        routes,
        limits,
        http,
        stopping: AtomicBool::new(false),
        stop_accepting: Notify::new(),
        slots: Mutex::new(Vec::new()),
    });
    tokio::spawn(accept_loop(listener, shared.clone()));
    Ok(ServerHandle { local, shared })
}

/// What the accept loop and every connection share.
struct Shared {
    routes: Routes,
    limits: Limits,
    http: http1::Builder,
    stopping: AtomicBool,
    stop_accepting: Notify,
    /// The open connections, to choose one to evict and to close all.
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Shared {
    fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_accepting.notify_one();
        for slot in lock(&self.slots).iter() {
            slot.close.notify_one();
        }
    }

    /// Registers a new connection, evicting the one that has waited longest
    /// for a request when every slot is taken; `None` when every open
    /// connection is busy (the new one is then refused).
    fn admit(&self) -> Option<Arc<Slot>> {
        let mut slots = lock(&self.slots);
        let open = slots.iter().filter(|s| !lock(&s.state).evicted).count();
        if open >= self.limits.max_connections {
            let victim = slots
                .iter()
                .filter_map(|s| {
                    let st = lock(&s.state);
                    (!st.evicted && st.requests == 0).then_some((st.idle_since, s))
                })
                .min_by_key(|(since, _)| *since)
                .map(|(_, s)| s.clone());
            let victim = victim?;
            lock(&victim.state).evicted = true;
            victim.close.notify_one();
        }
        let slot = Arc::new(Slot {
            close: Notify::new(),
            state: Mutex::new(SlotState {
                requests: 0,
                idle_since: Instant::now(),
                evicted: false,
            }),
        });
        slots.push(slot.clone());
        Some(slot)
    }
}

/// One open connection, as the accept loop sees it.
struct Slot {
    /// Wakes the connection's task to close it (eviction or stop).
    close: Notify,
    state: Mutex<SlotState>,
}

struct SlotState {
    /// Requests in progress: from the handler's call until its response
    /// body has been handed to the socket.
    requests: usize,
    /// Since when it has had no request in progress (for choosing the one
    /// to evict: the longest waiting).
    idle_since: Instant,
    /// Chosen for eviction: no longer counted as open.
    evicted: bool,
}

/// A poisoned lock only means a panic elsewhere; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.stop_accepting.notified() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(?local, "HTTP server cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Some(slot) = shared.admit() else {
            tracing::debug!(?local, "every connection is busy with a request: refusing a new one");
            continue;
        };
        tokio::spawn(connection(stream, shared.clone(), slot));
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, slot: Arc<Slot>) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WriteDeadline::new(stream, shared.limits.write_timeout));
    let service = Service {
        shared: shared.clone(),
        slot: slot.clone(),
    };
    let conn = shared.http.serve_connection(io, service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!("HTTP connection ended: {e}");
            }
        }
        _ = slot.close.notified() => {}
    }
    lock(&shared.slots).retain(|s| !Arc::ptr_eq(s, &slot));
}

/// hyper's view of the routes, for one connection.
struct Service {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let busy = Busy::start(self.slot.clone());
        let handler = self.shared.routes.find(request.uri().path());
        let max_body = self.shared.limits.max_body_bytes;
        let body_timeout = self.shared.limits.body_read_timeout;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = match read_body(&parts.headers, body, max_body, body_timeout).await {
                Err(status) => plain(status, status.canonical_reason().unwrap_or("refused")),
                Ok(body) => match handler {
                    Some(h) => h.call(hyper::Request::from_parts(parts, body)).await,
                    None => plain(StatusCode::NOT_FOUND, "not found"),
                },
            };
            Ok(response.map(|body| ResponseBody {
                data: Some(body).filter(|b| !b.is_empty()),
                _busy: busy,
            }))
        })
    }
}

/// Reads the whole body within the limits: 413 past `max`, 408 when it
/// does not arrive in time, 400 when the client breaks it off.
async fn read_body(
    headers: &hyper::HeaderMap,
    body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, StatusCode> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
    }
}

/// A short plain-text response.
pub fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = hyper::Response::new(Bytes::from(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Marks a connection busy while it holds a request; dropped with the
/// response body, once hyper has taken all of it.
struct Busy(Arc<Slot>);

impl Busy {
    fn start(slot: Arc<Slot>) -> Self {
        lock(&slot.state).requests += 1;
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.requests = st.requests.saturating_sub(1);
        st.idle_since = Instant::now();
    }
}

/// A whole response body, carrying the connection's busy mark.
struct ResponseBody {
    data: Option<Bytes>,
    _busy: Busy,
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A TCP stream whose writes give up after `timeout` without progress, so
/// that a client that stops reading cannot hold its connection forever.
struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Armed when a write finds the socket full; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        WriteDeadline {
            stream,
            timeout,
            stalled: None,
        }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let stall = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.progress(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_millis(300),
            max_header_bytes: 8 << 10,
            max_body_bytes: 1024,
            keep_alive: true,
        }
    }

    fn hello() -> Routes {
        Routes::new()
            .route("/hello", |r: Request| async move {
                plain(StatusCode::OK, &format!("hello {} {}", r.method(), r.body().len()))
            })
            .route("/big", |_: Request| async {
                hyper::Response::new(Bytes::from(vec![b'x'; 32 << 20]))
            })
    }

    fn start(routes: Routes, limits: Limits) -> ServerHandle {
        serve("127.0.0.1:0".parse().unwrap(), routes, limits).unwrap()
    }

    async fn connect(server: &ServerHandle) -> TcpStream {
        TcpStream::connect(server.local_addr()).await.unwrap()
    }

    /// Everything the server sends until it closes (bounded in time).
    async fn read_all(conn: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One response on a kept-alive connection (its head and a body of
    /// the given length).
    async fn read_response(conn: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("a response in time")
                .unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return text;
                }
            }
        }
    }

    /// True when the server closed `conn` (EOF or reset) within 10 s.
    async fn closed(conn: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn routes_by_path_with_a_404_for_the_rest() {
        let server = start(hello(), limits());
        let mut c = connect(&server).await;
        c.write_all(b"GET /hello?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut c).await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.ends_with("hello GET 0\n"), "{r}");
        // Same connection: kept alive.
        c.write_all(b"POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap();
        assert!(read_response(&mut c).await.ends_with("hello POST 3\n"));
        c.write_all(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        assert!(read_response(&mut c).await.starts_with("HTTP/1.1 404"));
        c.write_all(b"HEAD /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let head = read_all(&mut c).await;
        assert!(head.contains("content-length: 13"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "a HEAD answer has no body: {head}");
    }

    #[tokio::test]
    async fn a_fallback_answers_other_paths_and_keep_alive_can_be_off() {
        let routes = hello().fallback(|_: Request| async { plain(StatusCode::IM_A_TEAPOT, "tea") });
        let server = start(
            routes,
            Limits {
                keep_alive: false,
                ..limits()
            },
        );
        let mut c = connect(&server).await;
        c.write_all(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        let r = read_all(&mut c).await;
        assert!(r.starts_with("HTTP/1.1 418"), "{r}");
        assert!(r.ends_with("tea\n"), "closed after one response: {r}");
    }

    #[tokio::test]
    async fn silent_slow_and_idle_clients_are_closed() {
        let server = start(hello(), limits());
        let mut silent = connect(&server).await;
        let mut slow = connect(&server).await;
        slow.write_all(b"GET /hel").await.unwrap();
        let mut idle = connect(&server).await;
        idle.write_all(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
        // The slow client keeps sending a byte at a time: the head timeout
        // counts from the start, not from the last byte.
        let dribble = async {
            for b in b"lo HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if slow.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            closed(&mut slow).await
        };
        let (slow_closed, silent_closed, idle_closed) = tokio::join!(dribble, closed(&mut silent), closed(&mut idle));
        assert!(slow_closed && silent_closed && idle_closed);
    }

    #[tokio::test]
    async fn bodies_and_heads_are_bounded() {
        let server = start(hello(), limits());
        let mut c = connect(&server).await;
        c.write_all(b"POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n")
            .await
            .unwrap();
        assert!(read_all(&mut c).await.starts_with("HTTP/1.1 413"));

        let mut c = connect(&server).await;
        c.write_all(b"POST /hello HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..3 {
            c.write_all(b"200\r\n").await.unwrap();
            c.write_all(&[b'a'; 0x200]).await.unwrap();
            c.write_all(b"\r\n").await.unwrap();
        }
        assert!(
            read_all(&mut c).await.starts_with("HTTP/1.1 413"),
            "chunked past the limit"
        );

        let mut c = connect(&server).await;
        c.write_all(b"POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")
            .await
            .unwrap();
        assert!(read_all(&mut c).await.starts_with("HTTP/1.1 408"), "body too slow");

        let mut c = connect(&server).await;
        let huge = format!("GET /hello HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "a".repeat(10 << 10));
        c.write_all(huge.as_bytes()).await.unwrap();
        assert!(read_all(&mut c).await.starts_with("HTTP/1.1 431"));
    }

    #[tokio::test]
    async fn a_full_server_evicts_the_longest_waiting_connection() {
        // Timeouts far longer than the test: only eviction closes anything.
        let patient = Limits {
            header_read_timeout: Duration::from_secs(60),
            ..limits()
        };
        let server = start(hello(), patient);
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(connect(&server).await);
            // Distinct ages.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut probe = connect(&server).await;
        probe
            .write_all(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut probe).await.starts_with("HTTP/1.1 200"));
        assert!(closed(&mut silent[0]).await, "the oldest silent connection made room");
        // The others are still open: a request on the newest is answered.
        silent[3]
            .write_all(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut silent[3]).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_full_server_of_busy_connections_refuses_new_ones() {
        let release = Arc::new(Notify::new());
        let gate = release.clone();
        let routes = Routes::new().route("/wait", move |_: Request| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                plain(StatusCode::OK, "done")
            }
        });
        let server = start(
            routes,
            Limits {
                max_connections: 2,
                ..limits()
            },
        );
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut c = connect(&server).await;
            c.write_all(b"GET /wait HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
            busy.push(c);
        }
        // Give the server time to call both handlers before the third.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = connect(&server).await;
        let _ = extra.write_all(b"GET /wait HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert!(closed(&mut extra).await, "refused while every connection is busy");
        release.notify_waiters();
        for c in &mut busy {
            assert!(
                read_response(c).await.ends_with("done\n"),
                "requests in progress finish"
            );
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped() {
        let server = start(hello(), limits());
        let mut c = connect(&server).await;
        c.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
        assert!(got.len() < 32 << 20, "the server gave up writing: {} bytes", got.len());
    }

    #[tokio::test]
    async fn stopping_closes_the_port_and_every_connection() {
        let server = start(hello(), limits());
        let addr = server.local_addr();
        let mut open = connect(&server).await;
        server.stop();
        assert!(closed(&mut open).await);
        drop(server);
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the listening socket is closed");
    }

    #[tokio::test]
    async fn ipv6_addresses_bind() {
        let Ok(server) = serve("[::1]:0".parse().unwrap(), hello(), limits()) else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let mut c = TcpStream::connect(server.local_addr()).await.unwrap();
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert!(read_all(&mut c).await.starts_with("HTTP/1.1 200"));
    }
}
