//! The output actor: one per configured output. It owns the output's queue
//! and everything about delivery that is not the transport itself (the
//! output options of docs/configuration.md):
//!
//! - events are queued as they arrive, filtered for what the output accepts;
//! - every `interval` the queue is flushed in batches of `batch`, at most
//!   `maxrate × interval` events per flush;
//! - past `maxsize` the oldest events are dropped and counted; with
//!   `expire`, events older than their TTL are dropped while waiting;
//! - past `pushback` listener sources wait (see
//!   [`duct_core::telemetry::Backlog`]): with `when_full: block` for as
//!   long as it takes, with `drop_oldest` only while deliveries succeed;
//!   the queue's size is published after every change for them;
//! - a failed send puts what was not delivered back at the front of the
//!   queue and delivery pauses for an exponential backoff, then resumes by
//!   itself; a destination that said how long to wait (`Retry-After`) is
//!   left alone at least that long, up to `backoff_max`;
//! - at shutdown the queue is drained until it is empty or a deadline;
//!   the drained actor then idles until the agent lets go of it.
//!
//! - with `buffer: {type: disk}` the queue is backed by a
//!   [`DiskBuffer`]: every chunk is written there before it is queued,
//!   the queue in memory holds at most `maxsize` events (the rest stay on
//!   disk and are read back in order as it empties), and a segment file is
//!   deleted once all its events are delivered. If the buffer cannot be
//!   written, the queue carries on in memory and the output reports
//!   `healthy` 0 with why.
//!
//! The actor runs under [`actix::Supervisor`]. A panic, in the transport
//! or in the actor's own code, stops it; the supervisor restarts it with
//! its queue and its mailbox, and [`Supervised::restarting`] puts back the
//! batch that was in flight and drops the transport, whose state the panic
//! left unknown. A fresh transport is then built from the configuration;
//! while that fails (an output that depends on something outside, such as
//! a certificate file), it is retried with backoff, the output reports
//! `healthy` 0 and not started, and `/ready` fails.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use duct_core::plan::{Buffer, OutputRecipe, WhenFull};
use duct_core::{Batch, Event, EventQueue, Output, OutputError, OutputSettings, OutputStats, Receipt, Telemetry};
use tokio::sync::oneshot;

use crate::disk_buffer::{Appended, BufferError, DiskBuffer};
use crate::guard::{backoff, contain, CatchUnwind, InjectPanic, Throttle};

/// Events for the queue (the same chunk is shared by every output it is
/// routed to), with the claim of the listener waiting for them to be kept
/// (`end_to_end`).
pub struct Enqueue {
    pub events: Arc<[Event]>,
    /// `events` as a disk-buffer record, for an output with a disk buffer
    /// (encoded by the router, off this output's thread).
    pub record: Option<Bytes>,
    pub receipt: Option<Receipt>,
}

impl Enqueue {
    pub fn new(events: Arc<[Event]>) -> Self {
        Enqueue {
            events,
            record: None,
            receipt: None,
        }
    }
}

impl Message for Enqueue {
    type Result = ();
}

/// Deliver what is queued, then stop. The answer is the number of events
/// left undelivered when the deadline came.
pub struct Drain {
    pub deadline: Instant,
    pub done: oneshot::Sender<usize>,
}

impl Message for Drain {
    type Result = ();
}

/// Answered at once: the health endpoint's proof that the actor runs.
pub struct Ping;

impl Message for Ping {
    type Result = ();
}

/// How a send or start attempt ended: the transport back with its result,
/// or the message of a panic (the transport is then lost).
type Attempt = Result<(Box<dyn Output>, Result<(), OutputError>), String>;

/// The first retry waits this long; later ones double up to `backoff_max`.
const RETRY_BASE: Duration = Duration::from_millis(500);
/// No retry comes sooner than this, even near a shutdown deadline: a
/// destination that fails at once must not turn the actor into a busy loop
/// that starves its thread (and the timer that ends the drain).
const MIN_RETRY: Duration = Duration::from_millis(50);

/// Drop warnings are written at most this often (with the true counts).
const DROPS_LOG_EVERY: Duration = Duration::from_secs(10);

/// Chunks waiting in an output's mailbox at most (each is one source's
/// batch, usually one listener message of up to a few hundred events).
const MAILBOX_CAPACITY: usize = 64;

pub struct OutputActor {
    recipe: Arc<OutputRecipe>,
    settings: Arc<OutputSettings>,
    /// `None` while a send (or start) is in flight (see `busy`), or when
    /// the transport was lost to a panic and is still to be rebuilt.
    transport: Option<Box<dyn Output>>,
    /// A send or start is in flight and holds the transport: there is never
    /// more than one, so batches arrive in queue order.
    busy: bool,
    /// The batch being sent, kept to be put back if the send panics.
    in_flight: Option<Batch>,
    /// The transport's `start` has not succeeded yet.
    needs_start: bool,
    queue: EventQueue,
    stats: Arc<OutputStats>,
    /// The agent's figures, where restarts are counted.
    telemetry: Arc<Telemetry>,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    /// Restarts since the last delivery: the second and later ones wait a
    /// backoff, so that a transport that panics at once cannot turn the
    /// supervisor into a busy loop.
    crash_streak: u32,
    retry_at: Option<Instant>,
    /// Events this flush period may still send (`maxrate`).
    quota: usize,
    drain: Option<(Instant, oneshot::Sender<usize>)>,
    /// Events dropped since the last log line about it, by reason.
    drops_unreported: Vec<(&'static str, u64)>,
    /// The flush timer and the drain's deadline, cancelled once drained
    /// (a timer keeps an actor alive).
    flush_timer: Option<SpawnHandle>,
    drain_timer: Option<SpawnHandle>,
    /// Drained at shutdown or retired by a reload: takes nothing more.
    retired: bool,
    drops_log: Throttle,
    /// Where the queue is kept, when the output has a disk buffer.
    disk: Disk,
    /// A read of the disk buffer is running on the blocking pool.
    reading: bool,
    /// Chunks written to disk and held by nothing else, freed together on
    /// the blocking pool (freeing their events was a seventh of this
    /// thread's time while the queue had spilled).
    written: Vec<Arc<[Event]>>,
    written_events: usize,
}

/// The state of an output's disk buffer.
enum Disk {
    /// `buffer: memory`.
    None,
    /// Not open yet: another actor holds it (a reload's old output), or
    /// first start; tried again every flush.
    Closed,
    /// Written before queueing.
    Open(DiskBuffer),
    /// Writing failed: the queue is in memory; what the buffer held was
    /// read into it and its segments are still deleted as delivered.
    Failed(DiskBuffer),
    /// Opening failed for good: the queue is in memory.
    Unusable,
}

impl OutputActor {
    pub fn new(
        recipe: Arc<OutputRecipe>,
        transport: Box<dyn Output>,
        stats: Arc<OutputStats>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let settings = recipe.settings.clone();
        stats.backlog.set_limit(settings.pushback);
        stats.backlog.set_blocking(settings.when_full == WhenFull::Block);
        let disk = match settings.buffer {
            Buffer::Memory => Disk::None,
            Buffer::Disk(_) => Disk::Closed,
        };
        OutputActor {
            disk,
            reading: false,
            written: Vec::new(),
            written_events: 0,
            quota: quota_per_flush(&settings),
            recipe,
            settings,
            transport: Some(transport),
            busy: false,
            in_flight: None,
            needs_start: true,
            queue: EventQueue::new(),
            stats,
            telemetry,
            failures: 0,
            crash_streak: 0,
            retry_at: None,
            drain: None,
            drops_unreported: Vec::new(),
            flush_timer: None,
            drain_timer: None,
            retired: false,
            drops_log: Throttle::default(),
        }
    }

    fn label(&self) -> &str {
        &self.settings.label
    }

    fn accepts(&self, ev: &Event) -> bool {
        (!self.settings.metrics_only || ev.is_metric()) && (self.settings.allow_nan || ev.metric.is_some())
    }

    /// Events not delivered yet: the queue, and the part of the batch in
    /// flight that the destination has not acknowledged.
    fn undelivered(&self) -> usize {
        let on_disk = match &self.disk {
            Disk::Open(d) => d.unread() as usize,
            _ => 0,
        };
        self.queue.len() + self.in_flight.as_ref().map_or(0, Batch::unacknowledged) + on_disk
    }

    /// Opens the disk buffer if it is not yet: its leftovers from the last
    /// run are then read back as the queue has room.
    fn open_disk(&mut self) {
        if !matches!(self.disk, Disk::Closed) {
            return;
        }
        let Buffer::Disk(settings) = &self.settings.buffer else {
            return;
        };
        match DiskBuffer::open(settings) {
            Ok((buffer, recovered)) => {
                if recovered.events > 0 {
                    tracing::info!(
                        output = %self.label(),
                        events = recovered.events,
                        segments = recovered.segments,
                        dir = %buffer.dir().display(),
                        "undelivered events found in the disk buffer; delivering them first"
                    );
                }
                self.stats.set_buffer_problem(None);
                self.disk = Disk::Open(buffer);
            }
            Err(BufferError::Busy(dir)) => {
                let why = format!("waiting for the disk buffer {} (held by another output)", dir.display());
                self.stats.set_buffer_problem(Some(why));
            }
            Err(e) => {
                let why = format!("{e}; queueing in memory");
                tracing::error!(output = %self.label(), "{why}");
                self.stats.set_buffer_problem(Some(why));
                self.disk = Disk::Unusable;
            }
        }
    }

    /// Writing to the disk buffer failed: the queue goes on in memory with
    /// everything the buffer held.
    fn disk_failed(&mut self, e: &std::io::Error) {
        let Disk::Open(mut buffer) = std::mem::replace(&mut self.disk, Disk::Unusable) else {
            return;
        };
        let why = format!(
            "cannot write the disk buffer {}: {e}; queueing in memory",
            buffer.dir().display()
        );
        tracing::error!(output = %self.label(), "{why}");
        self.stats.set_buffer_problem(Some(why));
        let unread = buffer.unread();
        match buffer.read_back(usize::MAX) {
            Ok(back) => {
                self.count_corrupted(back.corrupted);
                for (at, events) in back.chunks {
                    self.queue.push_held(events.into(), Some(at), None);
                }
                self.disk = Disk::Failed(buffer);
            }
            Err(e) => {
                tracing::error!(output = %self.label(), "cannot read the disk buffer either: {e}");
                self.count_drops(unread as usize, "the disk buffer could not be read back");
            }
        }
        self.enforce_maxsize();
    }

    fn count_corrupted(&mut self, records: u64) {
        if records > 0 {
            self.stats.buffer_corrupted.fetch_add(records, Ordering::Relaxed);
            tracing::warn!(output = %self.label(), records, "skipped torn or corrupted records in the disk buffer");
        }
    }

    /// Refills the queue from the disk buffer while it holds less than
    /// two batches (the one to send next and the one after): one block of
    /// records at a time, read and decoded on the blocking pool while the
    /// actor sends, so that the destination is not kept waiting for the
    /// decoding. Reading no further ahead keeps memory to a few batches.
    fn read_back(&mut self, ctx: &mut Context<Self>) {
        let Disk::Open(buffer) = &mut self.disk else {
            return;
        };
        let ahead = self.settings.batch.saturating_mul(2);
        if self.reading || !buffer.spilled() || self.queue.len() >= ahead {
            return;
        }
        let job = match buffer.next_read(ahead - self.queue.len()) {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => return self.read_back_failed(&e),
        };
        self.reading = true;
        let read = tokio::task::spawn_blocking(move || job.run());
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| {
            act.reading = false;
            if act.retired {
                return;
            }
            let Disk::Open(buffer) = &mut act.disk else {
                // Failed meanwhile: its records were read into memory then.
                return;
            };
            match result {
                Ok(Ok(done)) => {
                    let back = buffer.finish_read(done);
                    for (at, events) in back.chunks {
                        act.queue.push_held(events.into(), Some(at), None);
                    }
                    act.count_corrupted(back.corrupted);
                }
                Ok(Err(e)) => act.read_back_failed(&e),
                Err(e) => act.read_back_failed(&std::io::Error::other(e)),
            }
            act.contained(ctx, Self::pump);
        }));
    }

    fn read_back_failed(&mut self, e: &std::io::Error) {
        let Disk::Open(buffer) = &mut self.disk else {
            return;
        };
        let unread = buffer.unread();
        tracing::error!(output = %self.label(), "cannot read the disk buffer: {e}");
        self.stats
            .set_buffer_problem(Some(format!("cannot read the disk buffer: {e}; queueing in memory")));
        self.count_drops(unread as usize, "the disk buffer could not be read back");
        self.disk = Disk::Unusable;
    }

    /// Deletes the disk segments everything in which is delivered.
    fn release_delivered(&mut self) {
        let oldest = self.oldest_stored();
        if let Disk::Open(b) | Disk::Failed(b) = &mut self.disk {
            b.delivered_before(oldest);
        }
    }

    fn release_delivered_in(&self, buffer: &mut DiskBuffer) {
        buffer.delivered_before(self.oldest_stored());
    }

    /// The disk position of the oldest event in memory not delivered yet.
    fn oldest_stored(&self) -> Option<duct_core::StoredAt> {
        self.in_flight
            .as_ref()
            .and_then(Batch::first_stored_unacknowledged)
            .or_else(|| self.queue.first_stored())
    }

    /// Appends a chunk to the disk buffer; false if it must be queued in
    /// memory instead.
    fn store(&mut self, chunk: &Arc<[Event]>, record: Option<&[u8]>) -> bool {
        let Disk::Open(buffer) = &mut self.disk else {
            return false;
        };
        let room = self.queue.len() + chunk.len() <= self.settings.maxsize.max(self.settings.batch);
        match buffer.append(chunk, record, room) {
            Ok(Appended {
                at,
                spilled,
                dropped_before,
                dropped_unread,
            }) => {
                if let Some(segment) = dropped_before {
                    let n = self.queue.drop_stored_before(segment) as u64 + dropped_unread;
                    self.count_drops(n as usize, "the disk buffer is full (max_bytes), oldest dropped first");
                }
                if !spilled {
                    self.queue.push_held(chunk.clone(), at, None);
                }
                true
            }
            Err(e) => {
                self.disk_failed(&e);
                false
            }
        }
    }

    fn publish_queue_size(&self) {
        self.stats.set_queued(self.undelivered());
    }

    fn count_drops(&mut self, n: usize, why: &'static str) {
        if n == 0 {
            return;
        }
        self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
        match self.drops_unreported.iter_mut().find(|(w, _)| *w == why) {
            Some((_, count)) => *count += n as u64,
            None => self.drops_unreported.push((why, n as u64)),
        }
        self.report_drops(false);
    }

    /// Writes the drops not written yet, at most once per [`DROPS_LOG_EVERY`]
    /// (or now, with `now`), each line with the true count since the last.
    fn report_drops(&mut self, now: bool) {
        if self.drops_unreported.is_empty() {
            return;
        }
        if !now && self.drops_log.allow(DROPS_LOG_EVERY).is_none() {
            return;
        }
        let total = self.stats.dropped.load(Ordering::Relaxed);
        for (why, dropped) in self.drops_unreported.drain(..) {
            tracing::warn!(
                output = %self.settings.label,
                dropped,
                total_dropped = total,
                "dropped events: {why}"
            );
        }
    }

    fn enforce_maxsize(&mut self) {
        if matches!(self.disk, Disk::Open(_)) {
            // Past maxsize, events stay on disk instead.
            return;
        }
        let max = self.settings.maxsize;
        if max > 0 && self.queue.len() > max {
            let n = self.queue.drop_oldest(self.queue.len() - max);
            self.count_drops(n, "the queue is full (maxsize), oldest dropped first");
        }
    }

    /// Sends the next batch if nothing is in flight and delivery is allowed
    /// now; called on every flush tick, after every completed send and when
    /// enough events are queued to fill a batch.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        if self
            .drain
            .as_ref()
            .is_some_and(|(deadline, _)| Instant::now() >= *deadline)
        {
            self.finish_drain(ctx);
            return;
        }
        // Read ahead while a batch is in flight, too.
        self.read_back(ctx);
        if self.busy {
            // What the destination acknowledged meanwhile leaves `.queued`.
            self.publish_queue_size();
            return;
        }
        if self.settings.expire {
            let n = self.queue.expire(duct_core::event::now());
            self.count_drops(n, "they outlived their TTL while waiting (expire)");
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                self.publish_queue_size();
                return;
            }
            self.retry_at = None;
        }
        if self.transport.is_none() && !self.rebuild_transport() {
            self.publish_queue_size();
            return;
        }
        if self.needs_start {
            self.start_transport(ctx);
            return;
        }
        let draining = self.drain.is_some();
        if self.queue.is_empty() || (self.quota == 0 && !draining) {
            self.publish_queue_size();
            if draining && self.queue.is_empty() {
                self.finish_drain(ctx);
            }
            return;
        }
        let limit = if draining {
            self.settings.batch
        } else {
            self.settings.batch.min(self.quota)
        };
        let batch = self.queue.take(limit);
        self.quota = self.quota.saturating_sub(batch.len());
        self.in_flight = Some(batch.clone());
        self.publish_queue_size();
        if self.settings.debug {
            tracing::info!(output = %self.label(), events = batch.len(), "sending batch");
        }
        let Some(mut transport) = self.transport.take() else {
            return;
        };
        self.busy = true;
        let send = async move {
            let result = transport.send(&batch).await;
            (transport, result)
        };
        ctx.spawn(
            CatchUnwind(Box::pin(send))
                .into_actor(self)
                .map(|outcome, act, ctx| act.contained(ctx, |act, ctx| act.sent(outcome, ctx))),
        );
    }

    /// Runs a step of the actor; a panic in it stops the actor for its
    /// supervisor to restart.
    fn contained(&mut self, ctx: &mut Context<Self>, step: impl FnOnce(&mut Self, &mut Context<Self>)) {
        if let Err(panic) = contain(|| step(self, ctx)) {
            self.crashed(ctx, &panic);
        }
    }

    /// Stops the actor after a panic; [`Supervised::restarting`] does the rest.
    fn crashed(&mut self, ctx: &mut Context<Self>, panic: &str) {
        tracing::error!(output = %self.label(), "the output panicked and is restarted: {panic}");
        self.stats.failed(&format!("the output panicked: {panic}"));
        ctx.stop();
    }

    fn sent(&mut self, outcome: Attempt, ctx: &mut Context<Self>) {
        self.busy = false;
        let batch = self.in_flight.take().unwrap_or_default();
        match outcome {
            Ok((transport, Ok(()))) => {
                self.transport = Some(transport);
                self.stats.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.delivered_again();
            }
            Ok((transport, Err(e))) => {
                self.transport = Some(transport);
                let done = e.delivered.min(batch.len());
                let rejected = e.rejected.min(done);
                self.stats.sent.fetch_add((done - rejected) as u64, Ordering::Relaxed);
                self.count_drops(rejected, "the destination refused them");
                if rejected > 0 {
                    batch.fail_receipts();
                }
                self.queue.push_front(batch.skip(done));
                self.failed_waiting(&e.message, e.retry_after);
            }
            Err(panic) => {
                self.queue.push_front(batch);
                self.crashed(ctx, &panic);
                return;
            }
        }
        self.enforce_maxsize();
        self.release_delivered();
        self.publish_queue_size();
        self.pump(ctx);
    }

    fn delivered_again(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                output = %self.label(),
                failed_attempts = self.failures,
                queued = self.queue.len(),
                "delivering again"
            );
        }
        self.failures = 0;
        self.crash_streak = 0;
        self.stats.delivered();
    }

    fn failed(&mut self, why: &str) {
        self.failed_waiting(why, None);
    }

    /// A failure after which the destination asked for `asked` of quiet.
    fn failed_waiting(&mut self, why: &str, asked: Option<Duration>) {
        self.failures += 1;
        self.stats.failed(why);
        let cap = Duration::from_secs_f64(self.settings.backoff_max);
        let mut wait = backoff(self.failures, RETRY_BASE, cap);
        if let Some(asked) = asked {
            // Not sooner than asked, but a destination cannot hold the
            // queue longer than the configuration allows.
            wait = wait.max(asked.min(cap));
        }
        if let Some((deadline, _)) = &self.drain {
            // Shutting down: one more try before the deadline is worth more
            // than a long wait — but never a retry loop with no wait at all.
            wait = wait
                .min(deadline.saturating_duration_since(Instant::now()) / 2)
                .max(MIN_RETRY);
        }
        self.retry_at = Some(Instant::now() + wait);
        tracing::warn!(
            output = %self.label(),
            attempt = self.failures,
            queued = self.queue.len(),
            retry_in_s = format!("{:.1}", wait.as_secs_f64()),
            "delivery failed: {why}"
        );
    }

    /// Builds a fresh transport from the configuration, after a panic took
    /// the last one; false (and a retry with backoff) if that fails.
    fn rebuild_transport(&mut self) -> bool {
        match self.recipe.build() {
            Ok(t) => {
                self.transport = Some(t);
                self.needs_start = true;
                tracing::info!(output = %self.label(), "output rebuilt");
                true
            }
            // The configuration was valid when planned; building it again
            // fails only if the output depends on something outside.
            Err(d) => {
                self.failed(&format!("cannot rebuild the output: {d}"));
                false
            }
        }
    }

    fn start_transport(&mut self, ctx: &mut Context<Self>) {
        let Some(mut transport) = self.transport.take() else {
            return;
        };
        self.busy = true;
        let start = async move {
            let result = transport.start().await;
            (transport, result)
        };
        ctx.spawn(
            CatchUnwind(Box::pin(start))
                .into_actor(self)
                .map(|outcome, act, ctx| act.contained(ctx, |act, ctx| act.started_transport(outcome, ctx))),
        );
    }

    fn started_transport(&mut self, outcome: Attempt, ctx: &mut Context<Self>) {
        self.busy = false;
        match outcome {
            Ok((transport, Ok(()))) => {
                self.transport = Some(transport);
                self.needs_start = false;
                self.stats.started.store(true, Ordering::Relaxed);
            }
            Ok((transport, Err(e))) => {
                self.transport = Some(transport);
                self.failed(&format!("cannot start: {e}"));
            }
            Err(panic) => {
                self.crashed(ctx, &format!("while starting: {panic}"));
                return;
            }
        }
        // Delivery waits for the next flush tick, as it would have
        // without the start; a drain cannot wait.
        if self.drain.is_some() {
            self.pump(ctx);
        }
    }

    /// Ends a drain: reports what is left, closes the transport and
    /// retires. The actor is not stopped (its supervisor would restart it):
    /// it takes nothing more and ends once no one holds its address.
    fn finish_drain(&mut self, ctx: &mut Context<Self>) {
        let Some((_, done)) = self.drain.take() else {
            return;
        };
        self.retired = true;
        for timer in [self.flush_timer.take(), self.drain_timer.take()].into_iter().flatten() {
            ctx.cancel_future(timer);
        }
        self.report_drops(true);
        let mut left = self.undelivered();
        if let Disk::Open(mut buffer) = std::mem::replace(&mut self.disk, Disk::Unusable) {
            // Kept on disk for the next start (or a reload's new output,
            // which opens the buffer once this one lets go of it).
            self.release_delivered_in(&mut buffer);
            buffer.sync_now();
            if left > 0 {
                tracing::info!(output = %self.label(), events = left, "undelivered events kept in the disk buffer");
            }
            left = 0;
        }
        if left > 0 {
            tracing::warn!(output = %self.label(), events = left, "events not delivered before the shutdown deadline");
        }
        let dropped = self.stats.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(output = %self.label(), total_dropped = dropped, "events dropped since the start");
        }
        match self.transport.take() {
            Some(mut transport) => {
                let close = async move {
                    let _ = tokio::time::timeout(Duration::from_secs(2), transport.close()).await;
                };
                ctx.spawn(close.into_actor(self).map(move |_, _, _| {
                    let _ = done.send(left);
                }));
            }
            None => {
                let _ = done.send(left);
            }
        }
    }
}

fn quota_per_flush(settings: &OutputSettings) -> usize {
    if settings.maxrate > 0.0 {
        ((settings.maxrate * settings.interval).round() as usize).max(1)
    } else {
        usize::MAX
    }
}

impl Actor for OutputActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Router shards wait when this mailbox is full, so that a flood
        // cannot pile chunks up here faster than this thread takes them.
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.open_disk();
        if let Buffer::Disk(disk) = &self.settings.buffer {
            ctx.run_interval(Duration::from_secs_f64(disk.sync_interval), |act, _| {
                if let Disk::Open(b) | Disk::Failed(b) = &mut act.disk {
                    b.sync_in_background();
                }
            });
        }
        let timer = ctx.run_interval(Duration::from_secs_f64(self.settings.interval), |act, ctx| {
            act.contained(ctx, |act, ctx| {
                act.open_disk();
                act.quota = quota_per_flush(&act.settings);
                act.report_drops(false);
                act.pump(ctx);
            });
        });
        self.flush_timer = Some(timer);
        // Restarted during a drain: its deadline still holds.
        if let Some((deadline, _)) = &self.drain {
            let wait = deadline.saturating_duration_since(Instant::now());
            self.drain_timer = Some(ctx.run_later(wait, |act, ctx| act.finish_drain(ctx)));
        }
        self.contained(ctx, Self::pump);
    }
}

impl Supervised for OutputActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        Telemetry::count(&self.telemetry.restarts, 1);
        Telemetry::count(&self.stats.restarts, 1);
        // The send or start in flight was cancelled with the old context,
        // and the transport with it; one the panic left here is in an
        // unknown state. What was being sent goes back to the front.
        self.busy = false;
        if let Some(batch) = self.in_flight.take() {
            self.queue.push_front(batch);
        }
        self.transport = None;
        self.needs_start = true;
        self.stats.started.store(false, Ordering::Relaxed);
        self.crash_streak += 1;
        self.retry_at = (self.crash_streak > 1).then(|| {
            let cap = Duration::from_secs_f64(self.settings.backoff_max);
            Instant::now() + backoff(self.crash_streak - 1, RETRY_BASE, cap)
        });
        self.quota = quota_per_flush(&self.settings);
        tracing::info!(output = %self.label(), queued = self.queue.len(), "output restarted");
    }
}

impl Handler<Enqueue> for OutputActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Self::Context) {
        if self.retired {
            return;
        }
        self.contained(ctx, |act, ctx| act.enqueue(msg, ctx));
    }
}

impl Handler<InjectPanic> for OutputActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) {
        self.contained(ctx, |_, _| panic!("injected panic"));
    }
}

impl OutputActor {
    /// Frees `chunk` with others off this thread, a batch's worth at a time.
    fn free_later(&mut self, chunk: Arc<[Event]>) {
        self.written_events += chunk.len();
        self.written.push(chunk);
        if self.written_events >= self.settings.batch {
            self.written_events = 0;
            let chunks = std::mem::take(&mut self.written);
            drop(tokio::task::spawn_blocking(move || drop(chunks)));
        }
    }

    fn enqueue(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        let Enqueue {
            events: chunk,
            mut record,
            receipt,
        } = msg;
        let chunk = if chunk.iter().all(|e| self.accepts(e)) {
            chunk
        } else {
            // The record is of the whole chunk: this output writes its own.
            record = None;
            chunk
                .iter()
                .filter(|e| self.accepts(e))
                .cloned()
                .collect::<Vec<_>>()
                .into()
        };
        // Written to disk, the events are kept: the listener's receipt is
        // let go of. In memory, it is held until they are delivered.
        if !self.store(&chunk, record.as_deref()) {
            self.queue.push_held(chunk, None, receipt);
            self.enforce_maxsize();
        } else if Arc::strong_count(&chunk) == 1 {
            self.free_later(chunk);
        }
        if self.queue.len() >= self.settings.batch && self.quota > 0 {
            self.pump(ctx);
        } else {
            // Spilled to disk and the queue short: start reading back.
            self.read_back(ctx);
        }
        self.publish_queue_size();
    }
}

impl Handler<Ping> for OutputActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<Drain> for OutputActor {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) {
        if self.retired {
            let _ = msg.done.send(0);
            return;
        }
        self.drain = Some((msg.deadline, msg.done));
        if matches!(self.disk, Disk::Open(_)) {
            // What is queued is on disk already: nothing to wait for.
            self.finish_drain(ctx);
            return;
        }
        // Shutting down: a retry that was waiting is tried at once.
        self.retry_at = None;
        let wait = msg.deadline.saturating_duration_since(Instant::now());
        self.drain_timer = Some(ctx.run_later(wait, |act, ctx| act.finish_drain(ctx)));
        self.contained(ctx, Self::pump);
    }
}
