//! Accepting TCP connections for listener sources, once for all of them:
//! bind in `start` (a port in use is an error of the start, retried with
//! backoff), then accept until the source stops, refusing clients beyond
//! `max_connections` with a thinned log line, and hand each connection to
//! the next worker thread so that many clients use every core.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duct_core::throttle::Throttle;
use duct_core::{SourceContext, SourceError};

/// Repeated connection problems are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Binds `bind:port` now, for a listener source's `start`.
pub fn bind(bind: &str, port: u16) -> Result<tokio::net::TcpListener, SourceError> {
    let std_listener =
        std::net::TcpListener::bind((bind, port)).map_err(|e| format!("cannot listen on {bind}:{port}: {e}"))?;
    std_listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std_listener)?)
}

/// What a listener's connections share, across the worker threads.
#[derive(Default)]
struct Shared {
    /// Connections open now (each holds a [`Slot`]).
    open: AtomicUsize,
    refused_log: Mutex<Throttle>,
    errors_log: Mutex<Throttle>,
}

fn allow(log: &Mutex<Throttle>) -> Option<u64> {
    log.lock().unwrap_or_else(|p| p.into_inner()).allow(LOG_EVERY)
}

/// One of `max_connections`; given back when the connection ends (drop it
/// with the connection).
pub struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>, max: usize) -> Option<Slot> {
        shared
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot(shared.clone()))
    }

    /// Whether a connection problem may be logged now, and how many were
    /// held back: a client hammering the port must not flood the log.
    pub fn log_error(&self) -> Option<u64> {
        allow(&self.0.errors_log)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection accepted within the limit, ready to serve.
pub struct Accepted {
    /// Out of the accepting thread's reactor: serve it with
    /// `tokio::net::TcpStream::from_std` on the thread it lands on.
    pub tcp: std::net::TcpStream,
    pub peer: SocketAddr,
    pub slot: Slot,
}

/// Accepts connections until the source stops (run it with
/// [`SourceContext::spawn`]); `serve` runs on the next worker thread for
/// each one.
pub async fn accept_loop<F>(listener: tokio::net::TcpListener, max_connections: usize, sctx: SourceContext, serve: F)
where
    F: Fn(Accepted) + Clone + Send + 'static,
{
    let shared = Arc::new(Shared::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, usually: wait rather than spin.
                if let Some(held) = allow(&shared.errors_log) {
                    tracing::warn!(service = %sctx.service(), held_back = held, "accepting a connection failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&shared, max_connections) else {
            if let Some(held) = allow(&shared.refused_log) {
                tracing::warn!(
                    service = %sctx.service(),
                    %peer,
                    max_connections,
                    refused_since_last_report = held + 1,
                    "connection refused: too many connections open (max_connections)"
                );
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // The socket leaves this thread's reactor for the worker's.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(service = %sctx.service(), %peer, "cannot hand the connection over: {e}");
                continue;
            }
        };
        let serve = serve.clone();
        sctx.spawn_on_worker(move || serve(Accepted { tcp, peer, slot }));
    }
}
