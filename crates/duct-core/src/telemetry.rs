//! The agent's own figures: what the `duct.sources.Duct` source reports and
//! the health endpoint reads.
//!
//! These are plain atomic counters written by the actors that own the
//! numbers (the router counts events, each output its queue) and only read
//! elsewhere; no actor state is shared.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

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
    /// How late ticks start after the moment they were due.
    pub tick_lateness: Histogram,
    /// Router shards and outputs restarted by their supervisor after a
    /// panic or an unexpected stop.
    pub restarts: AtomicU64,
    /// Strings listeners received that were not UTF-8 and kept with U+FFFD
    /// in place of the bad bytes.
    pub strings_not_utf8: AtomicU64,
    /// Listener messages refused (too costly, a query; over UDP also a
    /// datagram that does not decode): answered `ok: false` over TCP,
    /// dropped over UDP; none of their events entered the pipeline.
    pub messages_refused: AtomicU64,
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

/// Durations in log-linear buckets (8 per power of two of microseconds,
/// so a quantile is read to within 12.5 %), recorded from any thread with
/// one atomic add; for tick lateness.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    count: AtomicU64,
    max_us: AtomicU64,
}

/// Sub-buckets per power of two.
const HISTOGRAM_SUB: u32 = 8;
/// Enough for 2^40 µs (12 days) and more.
const HISTOGRAM_BUCKETS: usize = 41 * HISTOGRAM_SUB as usize;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < u64::from(HISTOGRAM_SUB) {
            return us as usize;
        }
        let power = 63 - us.leading_zeros();
        let sub = (us >> (power - 3)) & u64::from(HISTOGRAM_SUB - 1);
        ((power - 2) * HISTOGRAM_SUB + sub as u32) as usize
    }

    /// The largest value (µs) that falls in `bucket`.
    fn upper_bound(bucket: usize) -> u64 {
        let b = bucket as u32;
        if b < HISTOGRAM_SUB {
            return u64::from(b);
        }
        let power = b / HISTOGRAM_SUB + 2;
        let sub = u64::from(b % HISTOGRAM_SUB);
        ((u64::from(HISTOGRAM_SUB) + sub + 1) << (power - 3)) - 1
    }

    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = Self::bucket(us).min(HISTOGRAM_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The `q` quantile (0..=1), as the upper bound of its bucket (never
    /// above the largest value seen); `None` before any value.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let bound = Self::upper_bound(i).min(self.max_us.load(Ordering::Relaxed));
                return Some(Duration::from_micros(bound));
            }
        }
        self.max()
    }

    /// The largest value recorded.
    pub fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.max_us.load(Ordering::Relaxed)))
    }
}

/// An output's backlog as listener sources see it: while the output holds
/// more than its `pushback` limit, listeners wait before taking more input,
/// so that a flood slows its senders down instead of filling the queue up
/// to `maxsize` (where the oldest events would be dropped). With
/// `when_full: block` they wait however long the destination is down; with
/// `drop_oldest` a failing output does not push back: its queue absorbs,
/// and drops, as Duct's did.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Queued events above which listeners wait; 0: never.
    limit: AtomicUsize,
    /// `when_full: block`: push back while failing too, with no time limit.
    blocks: AtomicBool,
    /// Woken when the queue falls to half the limit.
    drained: Notify,
}

impl Backlog {
    pub fn set_limit(&self, events: usize) {
        self.limit.store(events, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_blocking(&self, blocks: bool) {
        self.blocks.store(blocks, Ordering::Relaxed);
    }

    /// Listeners wait for this output as long as it is full.
    pub fn blocks(&self) -> bool {
        self.blocks.load(Ordering::Relaxed)
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
    /// Times the output actor was restarted after a panic.
    pub restarts: AtomicU64,
    /// Whether the last delivery attempt succeeded.
    pub healthy: AtomicBool,
    /// Why the last attempt failed, while it is failing.
    last_error: Mutex<Option<String>>,
    /// The transport started (an output that serves, such as Prometheus,
    /// has bound its port).
    pub started: AtomicBool,
    pub backlog: Backlog,
    /// Torn or corrupted records the disk buffer skipped.
    pub buffer_corrupted: AtomicU64,
    /// Why the disk buffer is not used (the queue fell back to memory).
    buffer_problem: Mutex<Option<String>>,
}

impl OutputStats {
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(OutputStats {
            name: name.into(),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            started: AtomicBool::new(false),
            backlog: Backlog::default(),
            buffer_corrupted: AtomicU64::new(0),
            buffer_problem: Mutex::new(None),
        })
    }

    /// Records the queue's size (the output actor calls this whenever it
    /// changes), waking listeners once it has drained to half the
    /// `pushback` limit.
    pub fn set_queued(&self, events: usize) {
        self.queued.store(events as u64, Ordering::Relaxed);
        let limit = self.backlog.limit();
        if limit > 0 && events <= limit / 2 {
            self.backlog.drained.notify_waiters();
        }
    }

    /// Whether listener sources should wait before sending this output more.
    pub fn congested(&self) -> bool {
        let limit = self.backlog.limit();
        limit > 0
            && self.queued.load(Ordering::Relaxed) >= limit as u64
            && (self.backlog.blocks() || self.healthy.load(Ordering::Relaxed))
    }

    /// Waits until the output is no longer congested, or `within` passes.
    pub async fn room(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let drained = self.backlog.drained.notified();
            tokio::pin!(drained);
            // Registered before the check: a wake-up in between is not lost.
            drained.as_mut().enable();
            if !self.congested() {
                return;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return;
            }
        }
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

    /// Why the output is unhealthy: its disk buffer failing, else its
    /// last delivery.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.buffer_problem)
            .clone()
            .or_else(|| lock(&self.last_error).clone())
    }

    /// Delivering, and keeping its queue where configured.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && lock(&self.buffer_problem).is_none()
    }

    /// The disk buffer cannot be used (`Some(why)`), or can again.
    pub fn set_buffer_problem(&self, why: Option<String>) {
        *lock(&self.buffer_problem) = why;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for us in [0u64, 1, 7, 8, 9, 15, 16, 17, 100, 1000, 9999, 10_000, 123_456_789] {
            let b = Histogram::bucket(us);
            assert!(Histogram::upper_bound(b) >= us, "{us}");
            assert!(b == 0 || Histogram::upper_bound(b - 1) < us, "{us}");
            // Within 12.5 %.
            assert!(Histogram::upper_bound(b) as f64 <= us as f64 * 1.125 + 1.0, "{us}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((50.0..=56.25).contains(&p50), "{p50}");
        assert!((99.0..=100.0).contains(&p99), "{p99}");
        assert_eq!(h.max(), Some(Duration::from_millis(100)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_millis(100)));
    }

    #[tokio::test]
    async fn a_congested_output_wakes_its_waiters_once_drained() {
        let stats = OutputStats::new("o");
        stats.backlog.set_limit(100);
        stats.set_queued(150);
        assert!(stats.congested());
        let waiter = {
            let stats = stats.clone();
            tokio::spawn(async move { stats.room(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        stats.set_queued(80);
        assert!(!waiter.is_finished(), "not yet below half the limit");
        stats.set_queued(40);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        // A failing output does not push back (drop_oldest)...
        stats.set_queued(500);
        stats.failed("down");
        assert!(!stats.congested());
        // ...unless it blocks.
        stats.backlog.set_blocking(true);
        assert!(stats.congested());
    }
}
