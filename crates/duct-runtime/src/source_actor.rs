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

use crate::guard::{backoff, CatchUnwind, Throttle};

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
    listener: bool,
    errors_log: Throttle,
    skips_log: Throttle,
    /// What the health endpoint reports about this source.
    status: Arc<SourceStatus>,
}

impl SourceActor {
    pub fn new(recipe: Arc<SourceRecipe>, source: Box<dyn Source>, ctx: SourceContext, stagger: f64) -> Self {
        let listener = source.schedule() == Schedule::Listener;
        let recipe_service = recipe.settings.service.clone();
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
            errors_log: Throttle::default(),
            skips_log: Throttle::default(),
            status: SourceStatus::new(recipe_service),
        }
    }

    fn service(&self) -> &str {
        &self.recipe.settings.service
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.recipe.settings.interval)
    }

    fn telemetry(&self) -> &Telemetry {
        self.ctx.telemetry()
    }

    /// Arms the timer for the next tick on the grid, skipping grid points
    /// already in the past.
    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let interval = self.interval();
        let mut next = match self.next_tick {
            Some(t) => t + interval,
            None => now + Duration::from_secs_f64(self.recipe.settings.first_tick_delay(self.stagger)),
        };
        if next < now {
            let behind = now.duration_since(next).as_secs_f64();
            let missed = (behind / interval.as_secs_f64()).ceil();
            next += interval.mul_f64(missed);
        }
        self.next_tick = Some(next);
        ctx.notify_later(Tick, next.saturating_duration_since(now));
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
        if self.recipe.settings.watchdog {
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
        let timeout = source.tick_timeout(Duration::from_secs_f64(self.recipe.settings.timeout));
        self.tick_timeout = timeout;
        let run = async move {
            let result = tokio::time::timeout(timeout, source.get(&sctx)).await;
            (source, result)
        };
        ctx.spawn(
            CatchUnwind(Box::pin(run))
                .into_actor(self)
                .map(|outcome, act, _| act.finish_tick(outcome)),
        );
    }

    fn finish_tick(&mut self, outcome: TickOutcome) {
        self.busy = false;
        match outcome {
            Ok((source, Ok(Ok(events)))) => {
                self.source = Some(source);
                self.crashes = 0;
                self.errors_log.reset();
                self.status.working();
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
        self.status.failing(message);
        if let Some(held) = self.errors_log.allow(LOG_EVERY) {
            tracing::error!(service = %self.service(), failures_held_back = held, "{message}");
        }
    }

    /// The source is gone or unusable: rebuild it after a backoff.
    fn crashed(&mut self, message: &str) {
        Telemetry::count(&self.telemetry().tick_errors, 1);
        self.status.failing(message);
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
                self.source = Some(source);
                self.ctx = self.ctx.renewed();
                self.start_source(ctx)
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
        ctx.notify_later(Tick, at.saturating_duration_since(Instant::now()));
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
        self.telemetry().register_source(self.status.clone());
        let started = self.start_source(ctx);
        if !self.listener && (started || self.restart_at.is_some()) {
            self.schedule_next(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.ctx.cancel();
        self.telemetry().sources.fetch_sub(1, Ordering::Relaxed);
        self.telemetry().unregister_source(&self.status);
    }
}

impl Handler<Tick> for SourceActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        if self.listener {
            self.restart_listener(ctx);
        } else {
            self.tick(ctx);
        }
    }
}

impl Handler<StopSource> for SourceActor {
    type Result = ();

    fn handle(&mut self, _: StopSource, ctx: &mut Self::Context) {
        self.ctx.cancel();
        ctx.stop();
    }
}
