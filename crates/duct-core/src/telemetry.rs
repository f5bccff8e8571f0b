//! The agent's own figures: what the `duct.sources.Duct` source reports and
//! the health endpoint reads.
//!
//! These are plain atomic counters written by the actors that own the
//! numbers (the router counts events, each output its queue) and only read
//! elsewhere; no actor state is shared.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counters for the whole agent.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Events that entered the router.
    pub events_received: AtomicU64,
    /// Sources running now.
    pub sources: AtomicUsize,
    /// Ticks skipped because the previous one was still running.
    pub ticks_skipped: AtomicU64,
    /// Ticks that failed, timed out or panicked.
    pub tick_errors: AtomicU64,
    outputs: Mutex<Vec<Arc<OutputStats>>>,
    sources_status: Mutex<Vec<Arc<SourceStatus>>>,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        Arc::new(Telemetry::default())
    }

    /// Registers an output's counters (replacing one of the same name).
    pub fn register_output(&self, stats: Arc<OutputStats>) {
        let mut outputs = lock(&self.outputs);
        outputs.retain(|o| o.name != stats.name);
        outputs.push(stats);
    }

    pub fn unregister_output(&self, name: &str) {
        lock(&self.outputs).retain(|o| o.name != name);
    }

    /// The registered outputs' counters, in registration order.
    pub fn outputs(&self) -> Vec<Arc<OutputStats>> {
        lock(&self.outputs).clone()
    }

    /// Registers a running source's status (the source actor keeps it up
    /// to date and unregisters it when it stops).
    pub fn register_source(&self, status: Arc<SourceStatus>) {
        lock(&self.sources_status).push(status);
    }

    pub fn unregister_source(&self, status: &Arc<SourceStatus>) {
        lock(&self.sources_status).retain(|s| !Arc::ptr_eq(s, status));
    }

    /// Sources whose last tick failed, with why.
    pub fn failing_sources(&self) -> Vec<(String, String, f64)> {
        lock(&self.sources_status)
            .iter()
            .filter_map(|s| {
                lock(&s.problem)
                    .as_ref()
                    .map(|(at, why)| (s.service.clone(), why.clone(), *at))
            })
            .collect()
    }

    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a source is working, for the health endpoint.
#[derive(Debug)]
pub struct SourceStatus {
    pub service: String,
    /// When (seconds since the epoch) and why the last tick failed; `None`
    /// once a tick succeeds.
    problem: Mutex<Option<(f64, String)>>,
}

impl SourceStatus {
    pub fn new(service: impl Into<String>) -> Arc<Self> {
        Arc::new(SourceStatus {
            service: service.into(),
            problem: Mutex::new(None),
        })
    }

    /// Records a failure; the first time of a run of failures is kept.
    pub fn failing(&self, why: &str) {
        let mut p = lock(&self.problem);
        let since = p.as_ref().map_or_else(crate::event::now, |(at, _)| *at);
        *p = Some((since, why.to_string()));
    }

    pub fn working(&self) {
        *lock(&self.problem) = None;
    }
}

/// One output's queue and delivery counters.
#[derive(Debug)]
pub struct OutputStats {
    pub name: String,
    /// Events waiting in the queue now.
    pub queued: AtomicU64,
    /// Events dropped because the queue was full or they expired.
    pub dropped: AtomicU64,
    /// Events delivered.
    pub sent: AtomicU64,
    /// Failed delivery attempts.
    pub send_failures: AtomicU64,
    /// Whether the last delivery attempt succeeded.
    pub healthy: AtomicBool,
    /// Why the last attempt failed, while it is failing.
    last_error: Mutex<Option<String>>,
    /// The transport started (an output that serves, such as Prometheus,
    /// has bound its port).
    pub started: AtomicBool,
}

impl OutputStats {
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(OutputStats {
            name: name.into(),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            started: AtomicBool::new(false),
        })
    }

    pub fn delivered(&self) {
        self.healthy.store(true, Ordering::Relaxed);
        *lock(&self.last_error) = None;
    }

    pub fn failed(&self, why: &str) {
        self.send_failures.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
        *lock(&self.last_error) = Some(why.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}
