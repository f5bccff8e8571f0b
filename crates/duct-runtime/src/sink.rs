//! How sources reach the pipeline: the worker pool that spreads listener
//! connections over every core, the sink that hands a source's events to
//! the router shard of the thread it runs on, and the backpressure that
//! makes listeners wait while an output they feed is saturated.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use duct_core::pipeline::{Route, SourceRules};
use duct_core::{BoxFuture, Event, EventSink, OutputStats, Receipt, Workers};

use crate::router::{self, Publish, Router};

/// The agent's worker arbiters, handed jobs in turn.
pub struct WorkerPool {
    workers: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl WorkerPool {
    pub fn new(workers: Vec<ArbiterHandle>) -> Self {
        WorkerPool {
            workers,
            next: AtomicUsize::new(0),
        }
    }
}

impl Workers for WorkerPool {
    fn run_on_next(&self, job: Box<dyn FnOnce() + Send>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        // An arbiter that has stopped (shutdown) drops the job, and with
        // it the connection it carried.
        self.workers[i].spawn_fn(job);
    }
}

/// The outputs as listeners see them for backpressure: name and counters,
/// replaced on reload.
#[derive(Default)]
pub struct OutputGates(RwLock<Vec<(Option<String>, Arc<OutputStats>)>>);

/// The longest a listener waits for a saturated output before it takes
/// input again (the output's queue then absorbs it, up to `maxsize`).
const MOST_WAIT: Duration = Duration::from_secs(1);

impl OutputGates {
    pub fn set(&self, outputs: Vec<(Option<String>, Arc<OutputStats>)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = outputs;
    }

    /// The first output of `route` that is saturated now, if any.
    fn congested(&self, route: &Route) -> Option<Arc<OutputStats>> {
        let outputs = self.0.read().unwrap_or_else(|p| p.into_inner());
        outputs
            .iter()
            .filter(|(name, _)| match route {
                Route::All => true,
                Route::Named(names) => name.as_ref().is_some_and(|n| names.contains(n)),
            })
            .find(|(_, stats)| stats.congested())
            .map(|(_, stats)| stats.clone())
    }

    /// Waits while an output of `route` is saturated: as long as it takes
    /// for an output with `when_full: block`, at most [`MOST_WAIT`] for one
    /// with `drop_oldest`.
    async fn room(&self, route: &Route) {
        let deadline = tokio::time::Instant::now() + MOST_WAIT;
        while let Some(stats) = self.congested(route) {
            if stats.backlog.blocks() {
                // Looked at again each period: a reload may retire it.
                stats.room(MOST_WAIT).await;
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            stats.room(left).await;
        }
    }
}

/// Delivers a source's events to the router, tagged with its rules: to the
/// router shard of the calling thread (a listener's connections run on
/// every worker), else to the shard of the source's own worker.
pub struct RouterSink {
    pub home: Addr<Router>,
    pub rules: Arc<SourceRules>,
    pub gates: Arc<OutputGates>,
}

impl RouterSink {
    fn router(&self) -> Addr<Router> {
        router::local().unwrap_or_else(|| self.home.clone())
    }
}

impl EventSink for RouterSink {
    fn publish(&self, events: Vec<Event>) {
        self.router().do_send(Publish {
            rules: self.rules.clone(),
            events,
            receipt: None,
        });
    }

    fn publish_wait(&self, events: Vec<Event>) -> BoxFuture<'static, ()> {
        self.publish_held(events, None)
    }

    fn publish_held(&self, events: Vec<Event>, receipt: Option<Receipt>) -> BoxFuture<'static, ()> {
        let claim = receipt.clone();
        let request = self.router().send(Publish {
            rules: self.rules.clone(),
            events,
            receipt,
        });
        let (gates, rules) = (self.gates.clone(), self.rules.clone());
        Box::pin(async move {
            let routed = request.await.is_ok();
            if let Some(r) = claim {
                if !routed {
                    // The router stopped (shutdown): the events went nowhere.
                    r.fail();
                }
            }
            if routed {
                gates.room(&rules.route).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_wait_only_for_the_outputs_they_feed() {
        let busy = OutputStats::new("busy");
        busy.backlog.set_limit(10);
        busy.set_queued(10);
        let idle = OutputStats::new("idle");
        idle.backlog.set_limit(10);
        let gates = Arc::new(OutputGates::default());
        gates.set(vec![(Some("busy".into()), busy.clone()), (Some("idle".into()), idle)]);
        assert!(gates.congested(&Route::All).is_some());
        assert!(gates.congested(&Route::Named(vec!["idle".into()])).is_none());

        let waiter = {
            let gates = gates.clone();
            tokio::spawn(async move { gates.room(&Route::All).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while the output is saturated");
        busy.set_queued(0);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woken once drained")
            .unwrap();
    }

    #[tokio::test]
    async fn a_blocking_output_holds_listeners_back_while_it_fails() {
        let down = OutputStats::new("down");
        down.backlog.set_limit(10);
        down.backlog.set_blocking(true);
        down.set_queued(10);
        down.failed("connection refused");
        let gates = Arc::new(OutputGates::default());
        gates.set(vec![(None, down.clone())]);
        let waiter = {
            let gates = gates.clone();
            tokio::spawn(async move { gates.room(&Route::All).await })
        };
        tokio::time::sleep(MOST_WAIT * 3).await;
        assert!(!waiter.is_finished(), "still waiting past MOST_WAIT");
        down.set_queued(0);
        tokio::time::timeout(Duration::from_secs(3), waiter)
            .await
            .expect("woken once drained")
            .unwrap();
    }

    #[tokio::test]
    async fn a_stuck_output_holds_listeners_back_for_a_bounded_time() {
        let stuck = OutputStats::new("stuck");
        stuck.backlog.set_limit(1);
        stuck.set_queued(5);
        let gates = OutputGates::default();
        gates.set(vec![(None, stuck)]);
        let started = tokio::time::Instant::now();
        gates.room(&Route::All).await;
        let waited = started.elapsed();
        assert!(waited >= MOST_WAIT && waited < MOST_WAIT * 3, "{waited:?}");
    }
}
