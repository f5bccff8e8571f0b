//! The optional health endpoint (`health: {listen: "127.0.0.1:9091"}`):
//! `/health` for liveness, `/ready` for readiness, JSON bodies naming any
//! source or output in trouble.
//!
//! It is a few dozen lines of HTTP/1.1 over a TCP listener rather than a
//! web framework: two GET routes, answered and closed, do not need one.
//!
//! - `/health` answers 200 while the router, every output actor and every
//!   worker thread reply within two seconds — `"status": "ok"`, or
//!   `"degraded"` when sources fail or outputs cannot deliver (a restart
//!   would not fix a destination that is down, so liveness holds) — and 503
//!   `"unresponsive"` with the names of what did not reply.
//! - `/ready` answers 200 once the configuration is loaded and every
//!   output has started, 503 before that and while stopping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duct_core::Telemetry;
use duct_runtime::Probe;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the actors get to answer a health check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that sends no complete request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST_BYTES: usize = 8 << 10;
const MAX_CONNECTIONS: usize = 64;

/// What the endpoint reports from; shared with the supervisor, which
/// updates it as the agent starts, reloads and stops.
pub struct HealthState {
    started: Instant,
    telemetry: Arc<Telemetry>,
    probe: Mutex<Option<Probe>>,
    stopping: AtomicBool,
}

impl HealthState {
    pub fn new(telemetry: Arc<Telemetry>) -> Arc<Self> {
        Arc::new(HealthState {
            started: Instant::now(),
            telemetry,
            probe: Mutex::new(None),
            stopping: AtomicBool::new(false),
        })
    }

    /// The agent is running with these actors.
    pub fn running(&self, probe: Probe) {
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(probe);
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn probe(&self) -> Option<Probe> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `/health`: status code and body.
    async fn health(&self) -> (u16, serde_json::Value) {
        let unresponsive = match self.probe() {
            Some(p) => p.unresponsive(PROBE_TIMEOUT).await,
            None => Vec::new(),
        };
        let t = &self.telemetry;
        let failing_sources: Vec<_> = t
            .failing_sources()
            .into_iter()
            .map(|(service, error, since)| json!({"service": service, "error": error, "since": since}))
            .collect();
        let outputs = t.outputs();
        let failing_outputs: Vec<_> = outputs
            .iter()
            .filter(|o| !o.healthy.load(Ordering::Relaxed))
            .map(|o| {
                json!({
                    "name": o.name,
                    "error": o.last_error(),
                    "queued": o.queued.load(Ordering::Relaxed),
                    "dropped": o.dropped.load(Ordering::Relaxed),
                })
            })
            .collect();
        let (code, status) = if !unresponsive.is_empty() {
            (503, "unresponsive")
        } else if failing_sources.is_empty() && failing_outputs.is_empty() {
            (200, "ok")
        } else {
            (200, "degraded")
        };
        let body = json!({
            "status": status,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "sources": t.sources.load(Ordering::Relaxed),
            "outputs": outputs.len(),
            "unresponsive": unresponsive,
            "failing_sources": failing_sources,
            "failing_outputs": failing_outputs,
        });
        (code, body)
    }

    /// `/ready`: status code and body.
    fn ready(&self) -> (u16, serde_json::Value) {
        if self.stopping.load(Ordering::Relaxed) {
            return (503, json!({"ready": false, "reason": "stopping"}));
        }
        if self.probe().is_none() {
            return (503, json!({"ready": false, "reason": "starting"}));
        }
        let waiting: Vec<String> = self
            .telemetry
            .outputs()
            .iter()
            .filter(|o| !o.started.load(Ordering::Relaxed))
            .map(|o| o.name.clone())
            .collect();
        if !waiting.is_empty() {
            return (
                503,
                json!({"ready": false, "reason": "outputs not started", "outputs": waiting}),
            );
        }
        (
            200,
            json!({"ready": true, "sources": self.telemetry.sources.load(Ordering::Relaxed)}),
        )
    }
}

/// Binds `listen` now (a bad address or a taken port stops start-up with a
/// clear error) and serves until the process ends.
pub fn serve(listen: SocketAddr, state: Arc<HealthState>) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let local = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    actix_rt::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                continue;
            }
            active.fetch_add(1, Ordering::Relaxed);
            let state = state.clone();
            let active = active.clone();
            actix_rt::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT + PROBE_TIMEOUT, answer(stream, &state)).await;
                active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    tracing::info!(%local, "health endpoint listening");
    Ok(local)
}

async fn answer(mut stream: tokio::net::TcpStream, state: &HealthState) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let (method, path) = parse_request_line(&request);
    let (code, body) = match (method, path) {
        ("GET" | "HEAD", "/health" | "/healthz") => state.health().await,
        ("GET" | "HEAD", "/ready" | "/readyz") => state.ready(),
        ("GET" | "HEAD", _) => (404, json!({"error": "not found: try /health or /ready"})),
        _ => (405, json!({"error": "only GET and HEAD are served"})),
    };
    let body = body.to_string();
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads until the end of the request head, within a size and time limit;
/// `None` when the client sent nothing usable.
async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(false);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if buf.len() > MAX_REQUEST_BYTES {
                return Ok(false);
            }
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(true)) => Ok(Some(String::from_utf8_lossy(&buf).into_owned())),
        Ok(Ok(false)) | Err(_) => Ok(None),
        Ok(Err(e)) => Err(e),
    }
}

/// `ductd health`: asks the endpoint of a running agent and prints its
/// answer; exit 0 on 200, 1 otherwise (or when no endpoint is configured).
pub fn check(config: Option<&std::path::Path>, address: Option<String>) -> std::process::ExitCode {
    use std::io::{Read, Write};
    use std::process::ExitCode;
    let address = match address {
        Some(a) => a,
        None => {
            let loaded = match config {
                Some(p) => duct_core::config::Config::load(p, &duct_core::config::process_env),
                None => {
                    duct_core::config::Config::load_embedded(crate::DEFAULT_CONFIG, &duct_core::config::process_env)
                }
            };
            match loaded.map(|c| c.globals.health) {
                Ok(Some(h)) => h.listen,
                Ok(None) => {
                    eprintln!("no health endpoint is configured (health: {{listen: ADDR}}); give --address");
                    return ExitCode::FAILURE;
                }
                Err(d) => {
                    eprintln!("{d}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let ask = || -> std::io::Result<String> {
        let addr: SocketAddr = address
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{address}: {e}")))?;
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        Ok(response)
    };
    match ask() {
        Ok(response) => {
            let ok = response.starts_with("HTTP/1.1 200");
            println!("{}", response.split("\r\n\r\n").nth(1).unwrap_or_default());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cannot reach the health endpoint at {address}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /health?x HTTP/1.1` → (`GET`, `/health`).
fn parse_request_line(request: &str) -> (&str, &str) {
    let line = request.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(['?', '#']).next().unwrap_or_default();
    (method, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_split_into_method_and_path() {
        assert_eq!(
            parse_request_line("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("GET", "/health")
        );
        assert_eq!(
            parse_request_line("HEAD /ready?verbose=1 HTTP/1.0\r\n\r\n"),
            ("HEAD", "/ready")
        );
        assert_eq!(parse_request_line(""), ("", ""));
    }

    #[test]
    fn readiness_waits_for_the_agent_and_its_outputs() {
        let telemetry = Telemetry::new();
        let state = HealthState::new(telemetry.clone());
        assert_eq!(state.ready().0, 503);
        assert_eq!(state.ready().1["reason"], "starting");
        state.stopping();
        assert_eq!(state.ready().1["reason"], "stopping");
    }
}
