//! Accepting TCP connections for listener sources, once for all of them:
//! bind in `start` (a port in use is an error of the start, retried with
//! backoff), then accept until the source stops, refusing clients beyond
//! `max_connections`, or beyond `max_connections_per_client` from one
//! address, with a thinned log line, and hand each connection to the next
//! worker thread so that many clients use every core.
//!
//! How long a connection may stay silent is decided here too
//! ([`SilenceClock`]): `idle_timeout` between whole messages, and the
//! shorter `first_message_timeout` before the first, so that a client
//! cannot hold many connections open for free by never sending anything.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How many connections a listener accepts, options of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Open at once, from all clients.
    pub max_connections: usize,
    /// Open at once from one client address: one client must not lock the
    /// others out by holding every connection.
    pub max_connections_per_client: usize,
}

impl AcceptLimits {
    /// `max_connections`, and `per_client` or by default a quarter of it.
    pub fn new(max_connections: usize, per_client: Option<usize>) -> Self {
        AcceptLimits {
            max_connections,
            max_connections_per_client: per_client.unwrap_or((max_connections / 4).max(1)),
        }
    }
}

/// What a listener's connections share, across the worker threads.
#[derive(Default)]
struct Shared {
    /// Connections open now (each holds a [`Slot`]).
    open: AtomicUsize,
    /// Connections open now per client address; an address leaves the map
    /// with its last connection.
    per_client: Mutex<HashMap<IpAddr, usize>>,
    refused_log: Mutex<Throttle>,
    errors_log: Mutex<Throttle>,
}

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Listener,
    Client,
}

fn allow(log: &Mutex<Throttle>) -> Option<u64> {
    log.lock().unwrap_or_else(|p| p.into_inner()).allow(LOG_EVERY)
}

/// One of `max_connections` (and of its client's
/// `max_connections_per_client`); given back when the connection ends (drop
/// it with the connection).
pub struct Slot {
    shared: Arc<Shared>,
    client: IpAddr,
}

impl Slot {
    fn take(shared: &Arc<Shared>, limits: &AcceptLimits, client: IpAddr) -> Result<Slot, Full> {
        let mut per_client = shared.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_client.get(&client).copied().unwrap_or(0);
        if mine >= limits.max_connections_per_client {
            return Err(Full::Client);
        }
        shared
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limits.max_connections).then_some(open + 1)
            })
            .map_err(|_| Full::Listener)?;
        per_client.insert(client, mine + 1);
        Ok(Slot {
            shared: shared.clone(),
            client,
        })
    }

    /// Whether a connection problem may be logged now, and how many were
    /// held back: a client hammering the port must not flood the log.
    pub fn log_error(&self) -> Option<u64> {
        allow(&self.shared.errors_log)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_client = self.shared.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                per_client.remove(&self.client);
            }
        }
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a connection may stay silent, options of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    /// Between whole messages; `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// From the connection's start to its first whole message; `None`: as
    /// `idle_timeout`.
    pub first_message_timeout: Option<Duration>,
}

/// The default `first_message_timeout`: a client connects to send, and
/// does within moments; one that sends nothing for this long is holding a
/// connection, not using it.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection's silence, measured against [`Silence`].
#[derive(Debug, Clone)]
pub struct SilenceClock {
    rules: Silence,
    /// When the connection opened, or its last whole message arrived.
    since: Instant,
    /// Whether a whole message has arrived yet.
    heard: bool,
}

impl SilenceClock {
    /// Starts counting now (when the connection opens).
    pub fn new(rules: Silence) -> Self {
        SilenceClock {
            rules,
            since: Instant::now(),
            heard: false,
        }
    }

    /// A whole message arrived.
    pub fn heard(&mut self) {
        self.since = Instant::now();
        self.heard = true;
    }

    /// The silence allowed now.
    fn allowed(&self) -> Option<Duration> {
        match (self.heard, self.rules.first_message_timeout) {
            (false, Some(first)) => Some(self.rules.idle_timeout.map_or(first, |idle| idle.min(first))),
            _ => self.rules.idle_timeout,
        }
    }

    /// Why the connection should be closed now, if it should.
    pub fn expired(&self) -> Option<&'static str> {
        let allowed = self.allowed()?;
        if self.since.elapsed() < allowed {
            return None;
        }
        Some(if self.heard {
            "idle_timeout"
        } else {
            "first_message_timeout"
        })
    }

    /// How often to ask [`expired`](Self::expired): a quarter of the
    /// shortest allowed silence, at least every 50 ms; `None` when
    /// silence is allowed forever.
    pub fn check_every(&self) -> Option<Duration> {
        let shortest = match (self.rules.idle_timeout, self.rules.first_message_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((shortest / 4).max(Duration::from_millis(50)))
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
pub async fn accept_loop<F>(listener: tokio::net::TcpListener, limits: AcceptLimits, sctx: SourceContext, serve: F)
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
        let slot = match Slot::take(&shared, &limits, peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                if let Some(held) = allow(&shared.refused_log) {
                    let why = match full {
                        Full::Listener => "too many connections open (max_connections)",
                        Full::Client => "too many connections open from this client (max_connections_per_client)",
                    };
                    tracing::warn!(
                        service = %sctx.service(),
                        %peer,
                        max_connections = limits.max_connections,
                        max_connections_per_client = limits.max_connections_per_client,
                        refused_since_last_report = held + 1,
                        "connection refused: {why}"
                    );
                }
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_cannot_take_every_slot() {
        let shared = Arc::new(Shared::default());
        let limits = AcceptLimits::new(4, Some(2));
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = Slot::take(&shared, &limits, a).unwrap();
        let _second = Slot::take(&shared, &limits, a).unwrap();
        assert_eq!(Slot::take(&shared, &limits, a).err(), Some(Full::Client));
        let _b1 = Slot::take(&shared, &limits, b).unwrap();
        let _b2 = Slot::take(&shared, &limits, b).unwrap();
        assert_eq!(
            Slot::take(&shared, &limits, "10.0.0.3".parse().unwrap()).err(),
            Some(Full::Listener)
        );
        drop(first);
        let _again = Slot::take(&shared, &limits, a).expect("a slot given back is free again");
        assert_eq!(shared.open.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn addresses_leave_with_their_last_connection() {
        let shared = Arc::new(Shared::default());
        let limits = AcceptLimits::new(8, None);
        assert_eq!(limits.max_connections_per_client, 2, "a quarter by default");
        let slot = Slot::take(&shared, &limits, "::1".parse().unwrap()).unwrap();
        drop(slot);
        assert!(shared.per_client.lock().unwrap().is_empty());
        assert_eq!(shared.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn silence_before_the_first_message_is_shorter() {
        let clock = SilenceClock::new(Silence {
            idle_timeout: Some(Duration::from_secs(600)),
            first_message_timeout: Some(Duration::ZERO),
        });
        assert_eq!(clock.expired(), Some("first_message_timeout"));
        let mut heard = clock.clone();
        heard.heard();
        assert_eq!(heard.expired(), None, "a client that sent a message gets idle_timeout");
        assert_eq!(clock.check_every(), Some(Duration::from_millis(50)));

        let forever = SilenceClock::new(Silence {
            idle_timeout: None,
            first_message_timeout: None,
        });
        assert_eq!((forever.expired(), forever.check_every()), (None, None));
        let idle_shorter = SilenceClock::new(Silence {
            idle_timeout: Some(Duration::ZERO),
            first_message_timeout: Some(Duration::from_secs(30)),
        });
        assert_eq!(idle_shorter.expired(), Some("first_message_timeout"));
    }
}
