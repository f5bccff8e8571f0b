//! `ductd once`: run every polling source once and collect its events,
//! without actors. Sources whose metrics are rates tick twice, the second
//! tick an interval later (capped, so that `once` stays quick); the events
//! pass the same aggregation and triggers as in the agent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duct_core::pipeline::Aggregator;
use duct_core::{Event, EventSink, Plan, Schedule, SourceContext, Telemetry};

use crate::guard::CatchUnwind;

/// What one source produced.
#[derive(Debug)]
pub struct OnceResult {
    pub service: String,
    pub source: String,
    pub outcome: OnceOutcome,
}

#[derive(Debug)]
pub enum OnceOutcome {
    Events(Vec<Event>),
    /// Listener and stream sources have nothing to poll.
    Skipped(&'static str),
    Failed(String),
}

/// Collects what a source pushes with `queue_back` during its ticks.
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn publish(&self, events: Vec<Event>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(events);
    }
}

/// Runs every source of `plan` concurrently; results come back in
/// configuration order. `max_rate_wait` caps the pause between the two
/// ticks of rate sources.
pub async fn run_once(plan: Plan, max_rate_wait: Duration) -> Vec<OnceResult> {
    let telemetry = Telemetry::new();
    let mut tasks = Vec::new();
    for mut planned in plan.sources {
        let settings = planned.settings().clone();
        let rules = planned.rules.clone();
        let Some(mut source) = planned.instance.take() else {
            continue;
        };
        let telemetry = telemetry.clone();
        let task = tokio::task::spawn_local(async move {
            let service = settings.service.clone();
            let name = settings.source.clone();
            let result = |outcome| OnceResult {
                service: service.clone(),
                source: name.clone(),
                outcome,
            };
            if source.schedule() == Schedule::Listener {
                return result(OnceOutcome::Skipped("it listens or streams: nothing to poll"));
            }
            let sink = Arc::new(Collect::default());
            let ctx = SourceContext::new(settings.clone(), sink.clone(), telemetry).one_off();
            let timeout = source.tick_timeout(Duration::from_secs_f64(settings.timeout));
            let mut aggregator = Aggregator::new();
            let mut ticks = 0;
            let events = loop {
                ticks += 1;
                let tick = CatchUnwind(Box::pin(tokio::time::timeout(timeout, source.get(&ctx)))).await;
                let mut events = match tick {
                    Ok(Ok(Ok(events))) => events,
                    Ok(Ok(Err(e))) => return result(OnceOutcome::Failed(e.to_string())),
                    Ok(Err(_)) => {
                        return result(OnceOutcome::Failed(format!(
                            "no answer within the {} s timeout",
                            timeout.as_secs_f64()
                        )))
                    }
                    Err(panic) => return result(OnceOutcome::Failed(format!("panicked: {panic}"))),
                };
                events.append(&mut sink.0.lock().unwrap_or_else(|p| p.into_inner()));
                let rates = source.needs_two_ticks() || events.iter().any(|e| e.aggregation.is_some());
                aggregator.apply(&mut events);
                if ticks == 2 || !rates {
                    break events;
                }
                let wait = Duration::from_secs_f64(settings.interval).min(max_rate_wait);
                tokio::time::sleep(wait).await;
            };
            ctx.cancel();
            let mut events = events;
            rules.apply_triggers(&mut events);
            result(OnceOutcome::Events(events))
        });
        tasks.push(task);
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r),
            Err(e) => out.push(OnceResult {
                service: String::new(),
                source: String::new(),
                outcome: OnceOutcome::Failed(format!("task failed: {e}")),
            }),
        }
    }
    out
}
