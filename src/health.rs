//! The optional health endpoint (`health: {listen: "127.0.0.1:9091"}`):
//! `/health` for liveness, `/ready` for readiness, JSON bodies naming any
//! source or output in trouble.
//!
//! It runs on the shared HTTP server (`duct_http::server`), whose limits
//! keep a flood of silent or slow clients from locking a probe out.
//!
//! - `/health` answers 200 while the router, every output actor and every
//!   worker thread reply within two seconds — `"status": "ok"`, or
//!   `"degraded"` when sources fail or outputs cannot deliver (a restart
//!   would not fix a destination that is down, so liveness holds) — and 503
//!   `"unresponsive"` with the names of what did not reply.
//! - `/ready` answers 200 once the configuration is loaded and every
//!   output has started, 503 before that and while stopping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duct_core::Telemetry;
use duct_http::client;
use duct_http::server::{header, Limits, Method, Request, Response, Routes, ServerHandle, StatusCode};
use duct_runtime::Probe;
use serde_json::json;

/// How long the actors get to answer a health check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that sends no complete request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections at most; past it a new one evicts the oldest silent
/// one (see `duct_http::server`).
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
            .filter(|o| !o.is_healthy())
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
/// clear error) and serves until the handle is dropped.
pub fn serve(listen: SocketAddr, state: Arc<HealthState>) -> std::io::Result<ServerHandle> {
    let mut routes = Routes::new().fallback(|r: Request| async move {
        match *r.method() {
            Method::GET | Method::HEAD => json_response(404, json!({"error": "not found: try /health or /ready"})),
            _ => only_get(),
        }
    });
    for (path, page) in [
        ("/health", Page::Health),
        ("/healthz", Page::Health),
        ("/ready", Page::Ready),
        ("/readyz", Page::Ready),
    ] {
        let state = state.clone();
        routes = routes.route(path, move |r: Request| answer(r, page, state.clone()));
    }
    let server = duct_http::server::serve(listen, routes, limits())?;
    tracing::info!(local = %server.local_addr(), "health endpoint listening");
    Ok(server)
}

/// Limits of the endpoint's server: one short request per probe, answered
/// and closed (docs/operations.md, "Health endpoint").
fn limits() -> Limits {
    Limits {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: REQUEST_TIMEOUT,
        body_read_timeout: REQUEST_TIMEOUT,
        write_timeout: REQUEST_TIMEOUT,
        max_header_bytes: 8 << 10,
        max_body_bytes: 1 << 10,
        keep_alive: false,
    }
}

#[derive(Debug, Clone, Copy)]
enum Page {
    Health,
    Ready,
}

async fn answer(request: Request, page: Page, state: Arc<HealthState>) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return only_get();
    }
    let (code, body) = match page {
        Page::Health => state.health().await,
        Page::Ready => state.ready(),
    };
    json_response(code, body)
}

fn only_get() -> Response {
    json_response(405, json!({"error": "only GET and HEAD are served"}))
}

fn json_response(code: u16, body: serde_json::Value) -> Response {
    let mut response = Response::new(body.to_string().into());
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// `ductd health`: asks the endpoint of a running agent and prints its
/// answer; exit 0 on 200, 1 otherwise (or when no endpoint is configured).
pub fn check(config: Option<&std::path::Path>, address: Option<String>) -> std::process::ExitCode {
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
    let addr: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cannot reach the health endpoint at {address}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ask = async {
        let request = client::Request::get(&format!("http://{addr}/health"))
            .map_err(|e| e.to_string())?
            .timeout(Duration::from_secs(5));
        client::send(&request).await.map_err(|e| e.to_string())
    };
    match actix_rt::System::new().block_on(ask) {
        Ok(response) => {
            println!("{}", String::from_utf8_lossy(&response.body));
            if response.status == StatusCode::OK {
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

#[cfg(test)]
mod tests {
    use super::*;

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
