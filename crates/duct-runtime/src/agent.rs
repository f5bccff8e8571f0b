//! The running agent: starts the actors a plan asks for, swaps them on
//! reload, and shuts them down in order (docs/operations.md, "Signals").
//!
//! Threads: one worker arbiter per core carries source actors (spread in
//! turn), the connections of listener sources (handed out in turn through
//! [`WorkerPool`]) and a router shard, so that events go from a connection
//! to routing without crossing threads; output actors run on the system
//! arbiter, next to the signal handling that calls into this module.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use duct_core::plan::{Identity, PlannedOutput, PlannedSource};
use duct_core::{EventSink, OutputStats, Plan, Schedule, SourceContext, Telemetry};
use tokio::sync::oneshot;

use crate::output_actor::{Drain, OutputActor, Ping};
use crate::router::{OutputRoute, Router, SetOutputs, Sync};
use crate::sink::{OutputGates, RouterSink, WorkerPool};
use crate::source_actor::{SourceActor, StopSource};

struct RunningSource {
    identity: Identity,
    addr: Addr<SourceActor>,
}

struct RunningOutput {
    identity: Identity,
    name: Option<String>,
    /// It has a disk buffer.
    disk: bool,
    label: String,
    addr: Addr<OutputActor>,
    stats: Arc<OutputStats>,
}

/// What changed in a reload, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    pub sources_kept: usize,
    pub sources_started: usize,
    pub sources_stopped: usize,
    pub outputs_kept: usize,
    pub outputs_started: usize,
    pub outputs_stopped: usize,
}

/// What the health endpoint needs to check that the actors still run;
/// cheap to clone, refreshed after each reload.
#[derive(Clone)]
pub struct Probe {
    routers: Vec<Addr<Router>>,
    outputs: Vec<(String, Addr<OutputActor>)>,
    workers: Vec<actix_rt::ArbiterHandle>,
}

impl Probe {
    /// The actors and threads that did not answer within `within`: empty
    /// when the agent is alive.
    pub async fn unresponsive(&self, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let routers: Vec<_> = self.routers.iter().map(|r| r.send(Sync)).collect();
        let outputs: Vec<_> = self.outputs.iter().map(|(n, a)| (n, a.send(Ping))).collect();
        let workers: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                let (tx, rx) = oneshot::channel();
                w.spawn(async move {
                    let _ = tx.send(());
                });
                rx
            })
            .collect();
        let mut silent = Vec::new();
        for (i, reply) in routers.into_iter().enumerate() {
            if !matches!(tokio::time::timeout_at(deadline, reply).await, Ok(Ok(()))) {
                silent.push(format!("router {i}"));
            }
        }
        for (name, reply) in outputs {
            if !matches!(tokio::time::timeout_at(deadline, reply).await, Ok(Ok(()))) {
                silent.push(format!("output {name}"));
            }
        }
        for (i, reply) in workers.into_iter().enumerate() {
            if !matches!(tokio::time::timeout_at(deadline, reply).await, Ok(Ok(()))) {
                silent.push(format!("worker thread {i}"));
            }
        }
        silent
    }
}

/// Up to this many polling sources (and no listener) run on one worker
/// thread with the outputs; the thread count is chosen at start and kept
/// across reloads.
const COMPACT_MAX_SOURCES: usize = 64;

/// The actors of a running configuration.
pub struct Agent {
    /// One router shard per worker, in the workers' order.
    routers: Vec<Addr<Router>>,
    /// Outputs run on the (single) worker rather than the main thread.
    outputs_on_worker: bool,
    workers: Vec<Arbiter>,
    /// The workers as sources see them (for their connections).
    pool: Arc<WorkerPool>,
    /// The outputs' backlogs, for listeners' backpressure.
    gates: Arc<OutputGates>,
    /// Round-robin position for the next source.
    next_worker: usize,
    sources: Vec<RunningSource>,
    outputs: Vec<RunningOutput>,
    telemetry: Arc<Telemetry>,
    stagger: f64,
    shutdown_timeout: Duration,
}

impl Agent {
    /// Starts everything in `plan`. Must be called inside an actix system.
    pub fn start(plan: Plan, telemetry: Arc<Telemetry>) -> Agent {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let listens = plan
            .sources
            .iter()
            .any(|s| s.instance.as_ref().is_some_and(|i| i.schedule() == Schedule::Listener));
        // A host agent of a handful of polling sources does its work in
        // microseconds a second: one worker carrying sources, router and
        // outputs together wakes less and crosses no threads. Listeners and
        // large pollers get a worker per core.
        let compact = !listens && plan.sources.len() <= COMPACT_MAX_SOURCES;
        let count = if compact { 1 } else { cores };
        let workers: Vec<Arbiter> = (0..count).map(|_| Arbiter::new()).collect();
        let routers = workers
            .iter()
            .map(|w| {
                let tel = telemetry.clone();
                Supervisor::start_in_arbiter(&w.handle(), move |_| Router::new(tel))
            })
            .collect();
        let pool = Arc::new(WorkerPool::new(workers.iter().map(Arbiter::handle).collect()));
        let mut agent = Agent {
            routers,
            outputs_on_worker: compact,
            workers,
            pool,
            gates: Arc::default(),
            next_worker: 0,
            sources: Vec::new(),
            outputs: Vec::new(),
            telemetry,
            stagger: plan.globals.stagger,
            shutdown_timeout: Duration::from_secs_f64(plan.globals.shutdown_timeout),
        };
        let Plan { sources, outputs, .. } = plan;
        for o in outputs {
            let running = agent.start_output(o);
            agent.outputs.push(running);
        }
        agent.publish_routes();
        for s in sources {
            let running = agent.start_source(s);
            agent.sources.push(running);
        }
        tracing::info!(
            sources = agent.sources.len(),
            outputs = agent.outputs.len(),
            workers = agent.workers.len(),
            "agent started"
        );
        agent
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// A handle to check the actors from elsewhere (the health endpoint).
    pub fn probe(&self) -> Probe {
        Probe {
            routers: self.routers.clone(),
            outputs: self.outputs.iter().map(|o| (o.label.clone(), o.addr.clone())).collect(),
            workers: self.workers.iter().map(Arbiter::handle).collect(),
        }
    }

    fn start_output(&mut self, mut planned: PlannedOutput) -> RunningOutput {
        let settings = planned.settings().clone();
        let transport = match planned.instance.take() {
            Some(t) => t,
            None => match planned.recipe.build() {
                Ok(t) => t,
                Err(d) => unreachable_build(&d),
            },
        };
        let stats = OutputStats::new(settings.label.clone());
        self.telemetry.register_output(stats.clone());
        let recipe = planned.recipe.clone();
        let actor = OutputActor::new(recipe, transport, stats.clone(), self.telemetry.clone());
        let addr = if self.outputs_on_worker {
            Supervisor::start_in_arbiter(&self.workers[0].handle(), move |_| actor)
        } else {
            Supervisor::start(move |_| actor)
        };
        tracing::debug!(output = %settings.label, kind = %settings.output, "output started");
        RunningOutput {
            identity: planned.identity,
            name: settings.name.clone(),
            disk: matches!(settings.buffer, duct_core::plan::Buffer::Disk(_)),
            label: settings.label.clone(),
            addr,
            stats,
        }
    }

    fn start_source(&mut self, mut planned: PlannedSource) -> RunningSource {
        let settings = planned.settings().clone();
        // A source that cannot be built now still gets its actor: it shows
        // as failing in /health and is built again with backoff.
        let source = match planned.instance.take() {
            Some(s) => Ok(s),
            None => planned.recipe.build().map_err(|d| {
                tracing::error!(service = %settings.service, "cannot build the source: {d}; retrying");
                d.to_string()
            }),
        };
        let i = self.next_worker % self.workers.len();
        self.next_worker += 1;
        let sink: Arc<dyn EventSink> = Arc::new(RouterSink {
            home: self.routers[i].clone(),
            rules: planned.rules.clone(),
            gates: self.gates.clone(),
        });
        let ctx = SourceContext::new(settings.clone(), sink, self.telemetry.clone()).with_workers(self.pool.clone());
        let worker = &self.workers[i];
        let recipe = planned.recipe.clone();
        let stagger = self.stagger;
        let addr = SourceActor::start_in_arbiter(&worker.handle(), move |_| match source {
            Ok(source) => SourceActor::new(recipe, source, ctx, stagger),
            Err(why) => SourceActor::unbuilt(recipe, ctx, stagger, &why),
        });
        RunningSource {
            identity: planned.identity,
            addr,
        }
    }

    fn publish_routes(&self) {
        let routes: Vec<OutputRoute> = self
            .outputs
            .iter()
            .map(|o| OutputRoute {
                name: o.name.clone(),
                disk: o.disk,
                addr: o.addr.clone(),
            })
            .collect();
        for r in &self.routers {
            r.do_send(SetOutputs(routes.clone()));
        }
        self.gates
            .set(self.outputs.iter().map(|o| (o.name.clone(), o.stats.clone())).collect());
    }

    /// Applies a new plan: blocks that did not change keep running (and
    /// keep their queues and state); changed and removed ones are stopped,
    /// new ones started.
    pub async fn reload(&mut self, plan: Plan) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        self.stagger = plan.globals.stagger;
        self.shutdown_timeout = Duration::from_secs_f64(plan.globals.shutdown_timeout);
        let Plan { sources, outputs, .. } = plan;

        // Sources first: a changed listener must free its port before its
        // replacement binds it.
        // Running sources by identity (identical blocks may repeat), so that
        // matching thousands of sources stays linear.
        let mut old_sources: HashMap<Identity, Vec<RunningSource>> = HashMap::new();
        for s in std::mem::take(&mut self.sources) {
            old_sources.entry(s.identity).or_default().push(s);
        }
        let mut to_start = Vec::new();
        for p in sources {
            match old_sources.get_mut(&p.identity).and_then(Vec::pop) {
                Some(running) => {
                    self.sources.push(running);
                    summary.sources_kept += 1;
                }
                None => to_start.push(p),
            }
        }
        let old_sources: Vec<RunningSource> = old_sources.into_values().flatten().collect();
        summary.sources_stopped = old_sources.len();
        stop_sources(old_sources).await;

        let mut old_outputs = std::mem::take(&mut self.outputs);
        for p in outputs {
            match old_outputs.iter().position(|o| o.identity == p.identity) {
                Some(i) => {
                    self.outputs.push(old_outputs.swap_remove(i));
                    summary.outputs_kept += 1;
                }
                None => {
                    let running = self.start_output(p);
                    self.outputs.push(running);
                    summary.outputs_started += 1;
                }
            }
        }
        self.publish_routes();
        summary.outputs_stopped = old_outputs.len();
        // Retired outputs deliver what they hold in the background.
        let deadline = Instant::now() + self.shutdown_timeout;
        for o in old_outputs {
            let telemetry = self.telemetry.clone();
            let rx = drain(&o.addr, deadline);
            actix_rt::spawn(async move {
                let _ = rx.await;
                telemetry.unregister_output(&o.label);
            });
        }

        for p in to_start {
            let running = self.start_source(p);
            self.sources.push(running);
            summary.sources_started += 1;
        }
        summary
    }

    /// Stops the sources, lets the router pass on what it holds, then
    /// drains every output until its queue is empty or `shutdown_timeout`
    /// passes. Returns the number of events left undelivered (events the
    /// destination acknowledged are delivered, even in a batch whose send
    /// was still running); the log line also gives what was dropped since
    /// the agent started.
    pub async fn shutdown(self) -> usize {
        let started = Instant::now();
        stop_sources(self.sources).await;
        for r in &self.routers {
            let _ = r.send(Sync).await;
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        let waits: Vec<_> = self.outputs.iter().map(|o| drain(&o.addr, deadline)).collect();
        let mut undelivered = 0;
        for rx in waits {
            undelivered += rx.await.unwrap_or(0);
        }
        for w in &self.workers {
            w.stop();
        }
        let dropped: u64 = self
            .outputs
            .iter()
            .map(|o| o.stats.dropped.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let sent: u64 = self
            .outputs
            .iter()
            .map(|o| o.stats.sent.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        tracing::info!(
            undelivered,
            dropped,
            sent,
            took_ms = started.elapsed().as_millis() as u64,
            "agent stopped"
        );
        undelivered
    }
}

fn drain(addr: &Addr<OutputActor>, deadline: Instant) -> oneshot::Receiver<usize> {
    let (done, rx) = oneshot::channel();
    addr.do_send(Drain { deadline, done });
    rx
}

async fn stop_sources(sources: Vec<RunningSource>) {
    let requests: Vec<_> = sources.iter().map(|s| s.addr.send(StopSource)).collect();
    for r in requests {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
}

/// A planned output always carries its instance; building one again can
/// only fail if the plan was tampered with.
fn unreachable_build(d: &duct_core::config::Diagnostic) -> ! {
    panic!("an output that passed planning failed to build: {d}")
}
