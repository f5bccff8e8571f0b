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
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        Arc::new(Telemetry::default())
    }

    /// Registers an output's counters (replacing one of the same name).
    pub fn register_output(&self, stats: Arc<OutputStats>) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        outputs.retain(|o| o.name != stats.name);
        outputs.push(stats);
    }

    pub fn unregister_output(&self, name: &str) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        outputs.retain(|o| o.name != name);
    }

    /// The registered outputs' counters, in registration order.
    pub fn outputs(&self) -> Vec<Arc<OutputStats>> {
        self.outputs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
        })
    }
}
