//! The source actor: one per configured source, on one of the worker
//! arbiters. It owns the source's state and its timer (the `interval`,
//! `start_delay` and `timeout` options of docs/configuration.md):
//!
//! - each poll is a [`Tick`] message the actor sends itself with
//!   `notify_later`: the first after `start_delay` or the stagger offset,
//!   then one every `interval`, on a fixed grid (no drift); how late each
//!   tick is handled is recorded in the agent's telemetry;
//! - a tick still running when the next is due is not overlapped: the next
//!   is skipped and counted;
//! - a tick past `timeout` is abandoned; an error is logged with the
//!   service name; a panic is caught, and the source is rebuilt from its
//!   configuration after a backoff;
//! - with `watchdog: true`, a source that produced nothing for 10 intervals
//!   is rebuilt, as Duct did;
//! - listener sources start their own tasks and have no timer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use duct_core::plan::SourceRecipe;
use duct_core::telemetry::SourceStatus;
use duct_core::{Event, Schedule, Source, SourceContext, SourceError, Telemetry};

use crate::guard::{backoff, CatchUnwind, InjectPanic, Throttle};

/// A restart after a panic waits at least this long, doubling up to a minute.
const RESTART_BASE: Duration = Duration::from_secs(1);
const RESTART_CAP: Duration = Duration::from_secs(60);
/// Repeated tick failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Time for the next poll, or for a restart that was waiting; the actor
/// sends it to itself, one at a time, on its grid.
pub struct Tick;

impl Message for Tick {
    type Result = ();
}

/// Stops the source; answered once its tasks are cancelled.
pub struct StopSource;

impl Message for StopSource {
    type Result = ();
}

type TickOutcome = Result<
    (
        Box<dyn Source>,
        Result<Result<Vec<Event>, SourceError>, tokio::time::error::Elapsed>,
    ),
    String,
>;

pub struct SourceActor {
    recipe: Arc<SourceRecipe>,
    /// `None` while a tick is running (it holds the source), or while the
    /// source waits to be rebuilt.
    source: Option<Box<dyn Source>>,
    ctx: SourceContext,
    stagger: f64,
    /// When the next tick is due; ticks stay on this grid.
    next_tick: Option<Instant>,
    /// A tick is running.
    busy: bool,
    /// The deadline of the running (or last) tick, for the log.
    tick_timeout: Duration,
    /// Consecutive panics or failed starts, for the restart backoff.
    crashes: u32,
    /// The source was lost (panic) or failed to start; rebuild it then.
    restart_at: Option<Instant>,
    /// A listener (its tasks run by themselves; the timer only brings it
    /// back after a failure), or a source not built yet, which waits the
    /// same way.
    listener: bool,
    /// The one pending [`Tick`]: arming another cancels it, so that there
    /// is never more than one timer.
    timer: Option<SpawnHandle>,
    errors_log: Throttle,
    skips_log: Throttle,
}

impl SourceActor {
    pub fn new(recipe: Arc<SourceRecipe>, source: Box<dyn Source>, ctx: SourceContext, stagger: f64) -> Self {
        let listener = source.schedule() == Schedule::Listener;
        SourceActor {
            recipe,
            source: Some(source),
            ctx,
            stagger,
            next_tick: None,
            busy: false,
            tick_timeout: Duration::ZERO,
            crashes: 0,
            restart_at: None,
            listener,
            timer: None,
            errors_log: Throttle::default(),
            skips_log: Throttle::default(),
        }
    }

    /// A source whose build failed (`why`): it is reported failing and
    /// built again with backoff until that succeeds, then runs as usual.
    pub fn unbuilt(recipe: Arc<SourceRecipe>, ctx: SourceContext, stagger: f64, why: &str) -> Self {
        ctx.report_problem(&format!("cannot build the source: {why}"));
        let mut actor = SourceActor {
            recipe,
            source: None,
            ctx,
            stagger,
            next_tick: None,
            busy: false,
            tick_timeout: Duration::ZERO,
            crashes: 1,
            restart_at: None,
            listener: true,
            timer: None,
            errors_log: Throttle::default(),
            skips_log: Throttle::default(),
        };
        actor.restart_at = Some(Instant::now() + backoff(1, RESTART_BASE, RESTART_CAP));
        actor
    }

    fn service(&self) -> &str {
        &self.recipe.settings.service
    }

    fn status(&self) -> &Arc<SourceStatus> {
        self.ctx.status()
    }

    fn telemetry(&self) -> &Telemetry {
        self.ctx.telemetry()
    }

    /// Sends the actor its next [`Tick`] after `wait`, replacing any pending.
    fn arm(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        if let Some(pending) = self.timer.take() {
            ctx.cancel_future(pending);
        }
        self.timer = Some(ctx.notify_later(Tick, wait));
    }

    /// Arms the timer for the next tick on the grid, skipping grid points
    /// already in the past.
    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        match self.next_on_grid() {
            Some(next) => {
                self.next_tick = Some(next);
                self.arm(ctx, next.saturating_duration_since(Instant::now()));
            }
            None => {
                // Planning checks the range; this is the last line of defence
                // against a value that no clock can hold.
                let s = &self.recipe.settings;
                let message = format!(
                    "cannot schedule the source: interval {} s or start delay {} s is out of range; it does not run",
                    s.interval,
                    s.first_tick_delay(self.stagger)
                );
                tracing::error!(service = %self.service(), "{message}");
                self.status().failing(&message);
                self.next_tick = None;
            }
        }
    }

    /// The next grid point not in the past; `None` if the interval or the
    /// first delay is not a duration the clock can hold.
    fn next_on_grid(&self) -> Option<Instant> {
        let s = &self.recipe.settings;
        let interval = Duration::try_from_secs_f64(s.interval).ok().filter(|d| !d.is_zero())?;
        let now = Instant::now();
        let next = match self.next_tick {
            Some(t) => t.checked_add(interval)?,
            None => now.checked_add(Duration::try_from_secs_f64(s.first_tick_delay(self.stagger)).ok()?)?,
        };
        if next >= now {
            return Some(next);
        }
        // Behind: the first grid point from now on.
        let behind = now.duration_since(next).as_secs_f64();
        let into = behind % interval.as_secs_f64();
        if into == 0.0 {
            Some(now)
        } else {
            now.checked_add(Duration::try_from_secs_f64(interval.as_secs_f64() - into).ok()?)
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if let Some(due) = self.next_tick {
            let late = Instant::now().saturating_duration_since(due);
            self.telemetry().tick_lateness.record(late);
        }
        self.schedule_next(ctx);
        if let Some(at) = self.restart_at {
            if Instant::now() < at {
                return;
            }
            self.restart_at = None;
            if !self.rebuild(ctx) {
                return;
            }
        }
        if self.busy {
            Telemetry::count(&self.telemetry().ticks_skipped, 1);
            if let Some(held) = self.skips_log.allow(LOG_EVERY) {
                tracing::warn!(
                    service = %self.service(),
                    skipped_since_last_report = held + 1,
                    "tick skipped: the previous one is still running"
                );
            }
            return;
        }
        if self.recipe.settings.watchdog && self.source.is_some() {
            let silent = duct_core::event::now() - self.ctx.last_event_time();
            if silent > 10.0 * self.recipe.settings.interval {
                tracing::warn!(service = %self.service(), silent_s = silent as u64, "watchdog: no events for 10 intervals, recreating the source");
                if !self.rebuild(ctx) {
                    return;
                }
            }
        }
        let Some(mut source) = self.source.take() else {
            return;
        };
        self.busy = true;
        let sctx = self.ctx.clone();
        // An out-of-range timeout means none (tokio's timer takes the far future).
        let configured = Duration::try_from_secs_f64(self.recipe.settings.timeout).unwrap_or(Duration::MAX);
        let timeout = source.tick_timeout(configured);
        self.tick_timeout = timeout;
        let run = async move {
            let result = tokio::time::timeout(timeout, source.get(&sctx)).await;
            (source, result)
        };
        ctx.spawn(
            CatchUnwind(Box::pin(run))
                .into_actor(self)
                .map(|outcome, act, ctx| act.contained(ctx, |act, _| act.finish_tick(outcome))),
        );
    }

    /// Runs a step of the actor; a panic in it (a bug, or a value no clock
    /// can hold) loses the source, which is rebuilt after a backoff, rather
    /// than the actor, which would leave the source silently dead.
    fn contained(&mut self, ctx: &mut Context<Self>, step: impl FnOnce(&mut Self, &mut Context<Self>)) {
        if let Err(panic) = crate::guard::contain(|| step(self, ctx)) {
            self.busy = false;
            self.crashed(&format!("the source actor panicked: {panic}"));
            if let Some(at) = self.restart_at {
                self.arm(ctx, at.saturating_duration_since(Instant::now()));
            }
        }
    }

    fn finish_tick(&mut self, outcome: TickOutcome) {
        self.busy = false;
        match outcome {
            Ok((source, Ok(Ok(events)))) => {
                self.source = Some(source);
                self.crashes = 0;
                self.errors_log.reset();
                self.status().working();
                if !events.is_empty() {
                    if self.recipe.settings.debug {
                        tracing::info!(service = %self.service(), events = events.len(), "tick");
                    }
                    self.ctx.queue_back(events);
                }
            }
            Ok((source, Ok(Err(e)))) => {
                self.source = Some(source);
                self.tick_failed(&format!("tick failed: {e}"));
            }
            Ok((source, Err(_))) => {
                self.source = Some(source);
                let t = self.tick_timeout.as_secs_f64();
                self.tick_failed(&format!("tick abandoned after its {t} s timeout"));
            }
            Err(panic) => {
                self.crashed(&format!("panicked: {panic}"));
            }
        }
    }

    fn tick_failed(&mut self, message: &str) {
        Telemetry::count(&self.telemetry().tick_errors, 1);
        self.status().failing(message);
        if let Some(held) = self.errors_log.allow(LOG_EVERY) {
            tracing::error!(service = %self.service(), failures_held_back = held, "{message}");
        }
    }

    /// The source is gone or unusable: rebuild it after a backoff.
    fn crashed(&mut self, message: &str) {
        Telemetry::count(&self.telemetry().tick_errors, 1);
        self.status().failing(message);
        self.crashes += 1;
        let wait = backoff(self.crashes, RESTART_BASE, RESTART_CAP);
        self.source = None;
        self.restart_at = Some(Instant::now() + wait);
        tracing::error!(
            service = %self.service(),
            restart_in_s = format!("{:.1}", wait.as_secs_f64()),
            "{message}; the source will be recreated"
        );
    }

    /// Replaces the source with a fresh one from its configuration and
    /// starts it; false if that failed (another attempt is scheduled).
    fn rebuild(&mut self, ctx: &mut Context<Self>) -> bool {
        match self.recipe.build() {
            Ok(source) => {
                // A source built for the first time may turn out to poll.
                let waited_unbuilt = self.listener;
                self.listener = source.schedule() == Schedule::Listener;
                self.source = Some(source);
                self.ctx = self.ctx.renewed();
                let started = self.start_source(ctx);
                if waited_unbuilt && !self.listener && (started || self.restart_at.is_some()) {
                    self.schedule_next(ctx);
                }
                started
            }
            Err(d) => {
                self.crashed(&format!("cannot recreate the source: {d}"));
                if self.listener {
                    self.retry_listener(ctx);
                }
                false
            }
        }
    }

    /// Calls the source's `start`; a listener that fails to bind is retried.
    fn start_source(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(source) = self.source.as_mut() else {
            return false;
        };
        let sctx = self.ctx.clone();
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.start(&sctx)));
        match started {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.crashed(&format!("cannot start: {e}"));
                if self.listener {
                    self.retry_listener(ctx);
                }
                false
            }
            Err(payload) => {
                self.crashed(&format!(
                    "panicked while starting: {}",
                    crate::guard::panic_message(payload.as_ref())
                ));
                if self.listener {
                    self.retry_listener(ctx);
                }
                false
            }
        }
    }

    /// Listeners have no timer to bring them back: arm one for the restart.
    fn retry_listener(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.restart_at else {
            return;
        };
        self.arm(ctx, at.saturating_duration_since(Instant::now()));
    }

    /// A listener's only tick: the restart it was waiting for.
    fn restart_listener(&mut self, ctx: &mut Context<Self>) {
        if self.restart_at.take().is_some() {
            self.rebuild(ctx);
        }
    }
}

impl Actor for SourceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.telemetry().sources.fetch_add(1, Ordering::Relaxed);
        self.telemetry().register_source(self.status().clone());
        if self.source.is_none() {
            // Not built yet (see `unbuilt`): wait for the first attempt.
            self.retry_listener(ctx);
            return;
        }
        self.contained(ctx, |act, ctx| {
            let started = act.start_source(ctx);
            if !act.listener && (started || act.restart_at.is_some()) {
                act.schedule_next(ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.ctx.cancel();
        self.telemetry().sources.fetch_sub(1, Ordering::Relaxed);
        let status = self.status().clone();
        self.telemetry().unregister_source(&status);
    }
}

impl Handler<Tick> for SourceActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        self.timer = None;
        self.contained(ctx, |act, ctx| {
            if act.listener {
                act.restart_listener(ctx);
            } else {
                act.tick(ctx);
            }
        });
    }
}

impl Handler<InjectPanic> for SourceActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) {
        self.contained(ctx, |_, _| panic!("injected panic"));
    }
}

impl Handler<StopSource> for SourceActor {
    type Result = ();

    fn handle(&mut self, _: StopSource, ctx: &mut Self::Context) {
        self.ctx.cancel();
        ctx.stop();
    }
}
