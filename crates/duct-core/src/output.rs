//! The `Output` trait, and the queue and batches the output actor keeps.
//!
//! An output implements only its transport: `send` one batch and say whether
//! it arrived. Queueing, flush intervals, rate limits, dropping and retry
//! with backoff live once, in the runtime's output actor, built on the
//! [`EventQueue`] here.
//!
//! Events travel as shared chunks (`Arc<[Event]>`): the router hands the
//! same chunk to every output it routes to, and a batch is a list of slices
//! of chunks, so no event is copied between a source and a transport.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::event::Event;
use crate::source::BoxFuture;

/// A destination for events.
pub trait Output: Send + 'static {
    /// Called once on the thread that runs the output, before any `send`
    /// (outputs that serve, such as Prometheus, bind here).
    fn start(&mut self) -> BoxFuture<'_, Result<(), OutputError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Delivers one batch. On failure, say how many events at the front of
    /// the batch did arrive: the rest go back to the queue to be sent again.
    /// A transport that delivers a batch in parts (messages acknowledged
    /// one by one) calls [`Batch::acknowledge`] as they are, so that the
    /// queue's figures and the shutdown's count leave them out meanwhile.
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>>;

    /// Called at shutdown after the final flush.
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputError {
    pub message: String,
    /// Events at the front of the batch that are done with: delivered, or
    /// refused for good (see `rejected`). They are not sent again.
    pub delivered: usize,
    /// Of those, how many the destination refused for good (sending them
    /// again would be refused again): counted as dropped, not sent.
    pub rejected: usize,
    /// How long the destination asked to be left alone (HTTP's
    /// `Retry-After`): the output actor sends again no sooner, and no later
    /// than its `backoff_max` allows.
    pub retry_after: Option<Duration>,
}

impl OutputError {
    pub fn new(message: impl Into<String>) -> Self {
        OutputError {
            message: message.into(),
            delivered: 0,
            rejected: 0,
            retry_after: None,
        }
    }

    pub fn after(mut self, delivered: usize) -> Self {
        self.delivered = delivered;
        self
    }

    /// Says that `n` of the events done with were refused, not delivered.
    pub fn rejecting(mut self, n: usize) -> Self {
        self.rejected = n;
        self
    }

    /// Says how long the destination asked the next attempt to wait.
    pub fn waiting(mut self, asked: Option<Duration>) -> Self {
        self.retry_after = asked;
        self
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OutputError {}

impl From<std::io::Error> for OutputError {
    fn from(e: std::io::Error) -> Self {
        OutputError::new(e.to_string())
    }
}

/// Where a chunk's record starts in an output's disk buffer: segment
/// number, then byte offset. Records are written and read in this order,
/// so the first chunk of a queue that has one marks where everything
/// before is done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoredAt {
    pub segment: u64,
    pub offset: u64,
}

/// A listener's claim on a message's events (`end_to_end`): every output
/// the events are routed to holds a clone until it has written them to its
/// disk buffer or delivered them. Once every clone is gone, the listener
/// hears whether all of them did (true) or any had to give them up.
#[derive(Debug, Clone)]
pub struct Receipt(Arc<ReceiptInner>);

#[derive(Debug)]
struct ReceiptInner {
    failed: AtomicBool,
    done: Mutex<Option<oneshot::Sender<bool>>>,
}

impl Receipt {
    /// A receipt, and where the listener hears the outcome.
    pub fn new() -> (Receipt, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        let inner = ReceiptInner {
            failed: AtomicBool::new(false),
            done: Mutex::new(Some(tx)),
        };
        (Receipt(Arc::new(inner)), rx)
    }

    /// The events were given up (dropped, expired, refused, an output gone):
    /// the listener must not say they were received.
    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Relaxed);
    }
}

impl Drop for ReceiptInner {
    fn drop(&mut self) {
        let done = self.done.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = done {
            let _ = tx.send(!self.failed.load(Ordering::Relaxed));
        }
    }
}

/// A slice of a shared chunk of events.
#[derive(Debug, Clone)]
struct Chunk {
    events: Arc<[Event]>,
    start: usize,
    end: usize,
    /// Where its record is in the disk buffer; `None` in memory only.
    at: Option<StoredAt>,
    /// Held until the events are delivered (`end_to_end`, memory only).
    receipt: Option<Receipt>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn events(&self) -> &[Event] {
        &self.events[self.start..self.end]
    }
}

/// Events taken from a queue to be sent together.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    chunks: Vec<Chunk>,
    len: usize,
    /// Events at the front that the destination has acknowledged so far
    /// while the send runs; shared with the clone the output actor keeps,
    /// so that its figures (`.queued`, the shutdown's `undelivered`) leave
    /// them out before the send returns.
    acknowledged: Arc<AtomicUsize>,
}

impl Batch {
    /// A batch of events not taken from a queue (tests, `ductd once`).
    pub fn from_events(events: Vec<Event>) -> Self {
        let len = events.len();
        Batch {
            chunks: vec![Chunk {
                events: events.into(),
                start: 0,
                end: len,
                at: None,
                receipt: None,
            }],
            len,
            acknowledged: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// A transport that delivers a batch in parts says how many events at
    /// the front are done with so far (it may only grow).
    pub fn acknowledge(&self, events: usize) {
        self.acknowledged.fetch_max(events.min(self.len), Ordering::Relaxed);
    }

    /// Events at the front acknowledged so far (see [`Batch::acknowledge`]).
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Events of the batch not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.len - self.acknowledged().min(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Event> + '_ {
        self.chunks.iter().flat_map(|c| c.events().iter())
    }

    /// The disk position of the first record not wholly acknowledged yet
    /// (`None`: no chunk of that part is on disk).
    pub fn first_stored_unacknowledged(&self) -> Option<StoredAt> {
        let mut skip = self.acknowledged();
        for c in &self.chunks {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            skip = 0;
            if c.at.is_some() {
                return c.at;
            }
        }
        None
    }

    /// The listeners waiting on these events hear they were given up.
    pub fn fail_receipts(&self) {
        for r in self.chunks.iter().filter_map(|c| c.receipt.as_ref()) {
            r.fail();
        }
    }

    /// The batch without its first `n` events (acknowledged by no one yet).
    pub fn skip(mut self, mut n: usize) -> Batch {
        self.acknowledged = Arc::default();
        n = n.min(self.len);
        self.len -= n;
        let mut drop = 0;
        for c in &mut self.chunks {
            if n == 0 {
                break;
            }
            let k = n.min(c.len());
            c.start += k;
            n -= k;
            if c.len() == 0 {
                drop += 1;
            }
        }
        self.chunks.drain(..drop);
        self
    }
}

/// An output's queue: FIFO, bounded by its owner (see [`EventQueue::drop_oldest`]).
#[derive(Debug, Default)]
pub struct EventQueue {
    chunks: VecDeque<Chunk>,
    len: usize,
}

impl EventQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a chunk of events.
    pub fn push(&mut self, events: Arc<[Event]>) {
        self.push_held(events, None, None);
    }

    /// Appends a chunk of events stored `at` a disk position, or held for
    /// a listener's `receipt` until delivered.
    pub fn push_held(&mut self, events: Arc<[Event]>, at: Option<StoredAt>, receipt: Option<Receipt>) {
        let end = events.len();
        if end == 0 {
            return;
        }
        self.len += end;
        self.chunks.push_back(Chunk {
            events,
            start: 0,
            end,
            at,
            receipt,
        });
    }

    /// The disk position of the oldest chunk that has one.
    pub fn first_stored(&self) -> Option<StoredAt> {
        self.chunks.iter().find_map(|c| c.at)
    }

    /// Puts an unsent batch back at the front, in its order.
    pub fn push_front(&mut self, batch: Batch) {
        self.len += batch.len;
        for chunk in batch.chunks.into_iter().rev() {
            if chunk.len() > 0 {
                self.chunks.push_front(chunk);
            }
        }
    }

    /// Removes up to `max` events from the front.
    pub fn take(&mut self, max: usize) -> Batch {
        let mut batch = Batch::default();
        while batch.len < max {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let want = max - batch.len;
            if front.len() <= want {
                let chunk = self.chunks.pop_front().expect("front exists");
                batch.len += chunk.len();
                batch.chunks.push(chunk);
            } else {
                let part = Chunk {
                    events: front.events.clone(),
                    start: front.start,
                    end: front.start + want,
                    at: front.at,
                    receipt: front.receipt.clone(),
                };
                front.start += want;
                batch.len += want;
                batch.chunks.push(part);
            }
        }
        self.len -= batch.len;
        batch
    }

    /// Drops the `n` oldest events; returns how many were dropped.
    pub fn drop_oldest(&mut self, n: usize) -> usize {
        let dropped = self.take(n);
        dropped.fail_receipts();
        dropped.len()
    }

    /// Drops the chunks stored in disk segments before `segment` (their
    /// files were removed to make room); returns how many events.
    pub fn drop_stored_before(&mut self, segment: u64) -> usize {
        let mut dropped = 0;
        self.chunks.retain(|c| {
            let gone = c.at.is_some_and(|at| at.segment < segment);
            if gone {
                dropped += c.len();
            }
            !gone
        });
        self.len -= dropped;
        dropped
    }

    /// Drops events whose TTL has passed at `now`; returns how many.
    pub fn expire(&mut self, now: f64) -> usize {
        let expired = |e: &Event| now - e.time > f64::from(e.ttl);
        let mut dropped = 0;
        for chunk in &mut self.chunks {
            let n = chunk.events().iter().filter(|e| expired(e)).count();
            if n == 0 {
                continue;
            }
            dropped += n;
            if let Some(r) = &chunk.receipt {
                r.fail();
            }
            let kept: Vec<Event> = chunk.events().iter().filter(|e| !expired(e)).cloned().collect();
            let end = kept.len();
            *chunk = Chunk {
                events: kept.into(),
                start: 0,
                end,
                at: chunk.at,
                receipt: chunk.receipt.take(),
            };
        }
        self.chunks.retain(|c| c.len() > 0);
        self.len -= dropped;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(services: &[&str]) -> Arc<[Event]> {
        services.iter().map(|s| Event::new("h", *s)).collect::<Vec<_>>().into()
    }

    fn names(batch: &Batch) -> Vec<String> {
        batch.iter().map(|e| e.service.clone()).collect()
    }

    #[test]
    fn acknowledgements_are_seen_by_clones_and_forgotten_by_skip() {
        let mut q = EventQueue::new();
        q.push(chunk(&["a", "b", "c", "d"]));
        let batch = q.take(4);
        let kept = batch.clone();
        batch.acknowledge(3);
        batch.acknowledge(1);
        assert_eq!((kept.acknowledged(), kept.unacknowledged()), (3, 1), "only grows");
        batch.acknowledge(9);
        assert_eq!(kept.unacknowledged(), 0, "never more than the batch");
        let rest = kept.skip(2);
        assert_eq!((rest.acknowledged(), rest.unacknowledged()), (0, 2));
    }

    #[test]
    fn take_spans_and_splits_chunks_in_order() {
        let mut q = EventQueue::new();
        q.push(chunk(&["a", "b", "c"]));
        q.push(chunk(&["d", "e"]));
        assert_eq!(q.len(), 5);
        let b = q.take(4);
        assert_eq!(names(&b), ["a", "b", "c", "d"]);
        assert_eq!(q.len(), 1);
        assert_eq!(names(&q.take(10)), ["e"]);
        assert!(q.is_empty());
        assert!(q.take(3).is_empty());
    }

    #[test]
    fn unsent_events_go_back_to_the_front() {
        let mut q = EventQueue::new();
        q.push(chunk(&["a", "b", "c"]));
        q.push(chunk(&["d"]));
        let b = q.take(3);
        q.push(chunk(&["e"]));
        // The transport delivered one event, then failed.
        q.push_front(b.skip(1));
        assert_eq!(q.len(), 4);
        assert_eq!(names(&q.take(10)), ["b", "c", "d", "e"]);
    }

    #[test]
    fn drop_oldest_counts() {
        let mut q = EventQueue::new();
        q.push(chunk(&["a", "b", "c"]));
        assert_eq!(q.drop_oldest(2), 2);
        assert_eq!(names(&q.take(5)), ["c"]);
        assert_eq!(q.drop_oldest(2), 0);
    }

    #[test]
    fn expire_drops_only_stale_events() {
        let mut old = Event::new("h", "old");
        old.time = 100.0;
        old.ttl = 10.0;
        let mut fresh = Event::new("h", "fresh");
        fresh.time = 105.0;
        fresh.ttl = 10.0;
        let mut q = EventQueue::new();
        q.push(vec![old.clone(), fresh.clone(), old].into());
        q.push(vec![fresh].into());
        assert_eq!(q.expire(111.0), 2);
        assert_eq!(q.len(), 2);
        assert_eq!(names(&q.take(5)), ["fresh", "fresh"]);
    }

    #[test]
    fn skip_past_the_end_is_empty() {
        let b = Batch::from_events(vec![Event::new("h", "a")]);
        assert!(b.skip(5).is_empty());
    }
}
