//! Network checks under Duct's names (`duct.sources.network.*`): Ping,
//! HTTP, and ductd's TCP and DNS checks.
//!
//! Each check is one file holding its source (options, events); the wire
//! formats they read are pure parsers in files of their own — DNS messages
//! ([`dns_message`]), a certificate's expiry ([`cert`]) — unit-tested on
//! captured real input in `tests/fixtures/network/`. HTTP is spoken by the
//! shared client ([`duct_http::client`]). The I/O around the other checks
//! is thin and shared here: resolving a name, connecting, the TLS
//! handshake, and the per-phase timings every check reports.
//!
//! Timeouts: in Duct, a check's `timeout` was its own wait (the whole HTTP
//! request; per packet for Ping), and a check that ran out reported a
//! critical event. ductd keeps that meaning for these sources: the check
//! bounds its own work by `timeout` and reports running out as an event,
//! and the runtime's tick deadline (the common `timeout` of other sources)
//! becomes the check's worst case plus [`GRACE`] through
//! [`duct_core::Source::tick_timeout`]. When `timeout` is not set, a check
//! gives up at [`INTERVAL_SHARE`] of its interval (and never later than
//! Duct's default for it), so that a dead target still reports before the
//! next tick is due.

pub mod cert;
mod dns;
pub mod dns_message;
mod http;
mod icmp;
mod ping;
mod tcp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::{Registry, SourceArgs};
use duct_proto::tls as proto_tls;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Adds the network checks to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(ping::spec());
    registry.add_source(http::spec());
    registry.add_source(tcp::spec());
    registry.add_source(dns::spec());
}

/// Room the runtime leaves a check beyond its own worst case, so that the
/// check's report of a timeout is never cut off by the tick deadline.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// Without an explicit `timeout`, a check gives up at this share of its
/// interval, so a dead target reports before the next tick is due.
pub(crate) const INTERVAL_SHARE: f64 = 0.9;

/// A check's own time budget: `timeout` when the block sets it, else
/// `duct_default` capped at [`INTERVAL_SHARE`] of the interval.
pub(crate) fn check_budget(args: &SourceArgs<'_>, duct_default: f64) -> Duration {
    let s = args.settings;
    let seconds = if args.block.node.get("timeout").is_some() {
        s.timeout
    } else {
        duct_default.min(s.interval * INTERVAL_SHARE)
    };
    Duration::from_secs_f64(seconds.max(0.001))
}

/// Milliseconds, as the checks report durations.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Why a check failed, in words an operator can act on; the description
/// of the critical event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("timed out after {seconds} s while {phase}")]
    Timeout { seconds: f64, phase: &'static str },
    #[error("{0}")]
    Failed(String),
}

/// What a check is doing, for the description of a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Resolving,
    Connecting,
    Handshaking,
    Sending,
    Waiting,
}

impl Phase {
    pub fn doing(self) -> &'static str {
        match self {
            Phase::Resolving => "resolving the name",
            Phase::Connecting => "connecting",
            Phase::Handshaking => "in the TLS handshake",
            Phase::Sending => "sending the request",
            Phase::Waiting => "waiting for the answer",
        }
    }
}

/// Where a check is and how long each phase took; owned outside the
/// check's future so that a timeout can still say what was going on.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub phase: Phase,
    /// Phase durations.
    pub dns: Duration,
    pub connect: Duration,
    pub tls: Option<Duration>,
    /// Days until the leaf certificate expires, once a handshake is done.
    pub cert_expiry: Option<f64>,
    /// When the current phase started.
    mark: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            phase: Phase::Resolving,
            dns: Duration::ZERO,
            connect: Duration::ZERO,
            tls: None,
            cert_expiry: None,
            mark: Instant::now(),
        }
    }

    /// Enters `phase`; returns how long the previous one took.
    pub fn enter(&mut self, phase: Phase) -> Duration {
        let now = Instant::now();
        let took = now.duration_since(self.mark);
        self.mark = now;
        self.phase = phase;
        took
    }

    /// The timeout error for a check that ran out now.
    pub fn timeout(&self, budget: Duration) -> CheckError {
        CheckError::Timeout {
            seconds: budget.as_secs_f64(),
            phase: self.phase.doing(),
        }
    }
}

/// Resolves `host` (a name or an address literal) to the first address
/// the system resolver gives. Literals are parsed without a lookup.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<SocketAddr, CheckError> {
    let fail = |reason: String| CheckError::Resolve {
        host: host.to_string(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    addrs.next().ok_or_else(|| fail("no address".into()))
}

/// Connects to `addr`, naming a refusal as such.
pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, CheckError> {
    let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => CheckError::Refused(addr),
        _ => CheckError::Connect {
            addr,
            reason: e.to_string(),
        },
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// How a check verifies the servers it talks TLS to: `tls_verify` and
/// `ca`; the HTTP client's, so that every check verifies alike.
pub(crate) use duct_http::tls::TlsPolicy;

/// Reads `tls_verify` / `ca` into a policy whose configuration loads, so
/// that `ductd check` reports an unreadable `ca` file.
pub(crate) fn tls_policy(args: &SourceArgs<'_>, verify: bool, ca: Option<PathBuf>) -> Result<TlsPolicy, Diagnostic> {
    let policy = TlsPolicy { verify, ca };
    if policy.ca.is_some() {
        policy.client_config().map_err(|e| args.invalid("ca", e))?;
    }
    Ok(policy)
}

/// Does the TLS handshake over `tcp` with `host` as the server name, and
/// reads the days left on the leaf certificate.
pub(crate) async fn handshake(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> Result<(TlsStream<TcpStream>, Option<f64>), CheckError> {
    let name = proto_tls::server_name(host).map_err(|e| CheckError::Tls(e.to_string()))?;
    let stream = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| CheckError::Tls(e.to_string()))?;
    let expiry = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| cert::not_after(leaf.as_ref()).ok())
        .map(|not_after| cert::days_left(not_after, duct_core::event::now()));
    Ok((stream, expiry))
}

/// A TCP port option: 1 to 65535.
pub(crate) fn port_option(args: &SourceArgs<'_>, key: &str, value: i64) -> Result<u16, Diagnostic> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| args.invalid(key, format!("{value} is not a port (1 to 65535)")))
}

/// The path of a fixture in `tests/fixtures/network`.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/network")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
