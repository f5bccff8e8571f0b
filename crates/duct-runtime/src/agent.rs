//! The running agent: starts the actors a plan asks for, swaps them on
//! reload, and shuts them down in order (SPEC §3 step 6).
//!
//! Threads: source actors (and the connections of listener sources) are
//! spread over one worker arbiter per core; the router has an arbiter of its
//! own; output actors run on the system arbiter, next to the signal
//! handling that calls into this module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use duct_core::pipeline::SourceRules;
use duct_core::plan::{PlannedOutput, PlannedSource};
use duct_core::{BoxFuture, Event, EventSink, OutputStats, Plan, SourceContext, Telemetry};
use tokio::sync::oneshot;

use crate::output_actor::{Drain, OutputActor, Ping};
use crate::router::{OutputRoute, Publish, Router, SetOutputs, Sync};
use crate::source_actor::{SourceActor, StopSource};

/// Delivers a source's events to the router, tagged with its rules.
struct RouterSink {
    router: Recipient<Publish>,
    rules: Arc<SourceRules>,
}

impl EventSink for RouterSink {
    fn publish(&self, events: Vec<Event>) {
        self.router.do_send(Publish {
            rules: self.rules.clone(),
            events,
        });
    }

    fn publish_wait(&self, events: Vec<Event>) -> BoxFuture<'static, ()> {
        let request = self.router.send(Publish {
            rules: self.rules.clone(),
            events,
        });
        Box::pin(async move {
            let _ = request.await;
        })
    }
}

struct RunningSource {
    identity: String,
    addr: Addr<SourceActor>,
}

struct RunningOutput {
    identity: String,
    name: Option<String>,
    label: String,
    addr: Addr<OutputActor>,
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
    router: Addr<Router>,
    outputs: Vec<(String, Addr<OutputActor>)>,
    workers: Vec<actix_rt::ArbiterHandle>,
}

impl Probe {
    /// The actors and threads that did not answer within `within`: empty
    /// when the agent is alive.
    pub async fn unresponsive(&self, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let router = self.router.send(Sync);
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
        if !matches!(tokio::time::timeout_at(deadline, router).await, Ok(Ok(()))) {
            silent.push("router".to_string());
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

/// The actors of a running configuration.
pub struct Agent {
    router: Addr<Router>,
    router_arbiter: Arbiter,
    workers: Vec<Arbiter>,
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
        let workers: Vec<Arbiter> = (0..cores).map(|_| Arbiter::new()).collect();
        let router_arbiter = Arbiter::new();
        let tel = telemetry.clone();
        let router = Router::start_in_arbiter(&router_arbiter.handle(), move |_| Router::new(tel));
        let mut agent = Agent {
            router,
            router_arbiter,
            workers,
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
            if let Some(running) = agent.start_source(s) {
                agent.sources.push(running);
            }
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
            router: self.router.clone(),
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
        let addr = OutputActor::new(recipe, transport, stats).start();
        tracing::debug!(output = %settings.label, kind = %settings.output, "output started");
        RunningOutput {
            identity: planned.identity,
            name: settings.name.clone(),
            label: settings.label.clone(),
            addr,
        }
    }

    fn start_source(&mut self, mut planned: PlannedSource) -> Option<RunningSource> {
        let settings = planned.settings().clone();
        let source = match planned.instance.take() {
            Some(s) => s,
            None => match planned.recipe.build() {
                Ok(s) => s,
                Err(d) => {
                    tracing::error!(service = %settings.service, "cannot build the source: {d}");
                    return None;
                }
            },
        };
        let sink: Arc<dyn EventSink> = Arc::new(RouterSink {
            router: self.router.clone().recipient(),
            rules: planned.rules.clone(),
        });
        let ctx = SourceContext::new(settings.clone(), sink, self.telemetry.clone());
        let worker = &self.workers[self.next_worker % self.workers.len()];
        self.next_worker += 1;
        let recipe = planned.recipe.clone();
        let stagger = self.stagger;
        let addr = SourceActor::start_in_arbiter(&worker.handle(), move |_| {
            SourceActor::new(recipe, source, ctx, stagger)
        });
        Some(RunningSource {
            identity: planned.identity,
            addr,
        })
    }

    fn publish_routes(&self) {
        let routes = self
            .outputs
            .iter()
            .map(|o| OutputRoute {
                name: o.name.clone(),
                addr: o.addr.clone(),
            })
            .collect();
        self.router.do_send(SetOutputs(routes));
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
        let mut old_sources = std::mem::take(&mut self.sources);
        let mut to_start = Vec::new();
        for p in sources {
            match old_sources.iter().position(|s| s.identity == p.identity) {
                Some(i) => {
                    self.sources.push(old_sources.swap_remove(i));
                    summary.sources_kept += 1;
                }
                None => to_start.push(p),
            }
        }
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
            if let Some(running) = self.start_source(p) {
                self.sources.push(running);
                summary.sources_started += 1;
            }
        }
        summary
    }

    /// Stops the sources, lets the router pass on what it holds, then
    /// drains every output until its queue is empty or `shutdown_timeout`
    /// passes. Returns the number of events left undelivered.
    pub async fn shutdown(self) -> usize {
        let started = Instant::now();
        stop_sources(self.sources).await;
        let _ = self.router.send(Sync).await;
        let deadline = Instant::now() + self.shutdown_timeout;
        let waits: Vec<_> = self.outputs.iter().map(|o| drain(&o.addr, deadline)).collect();
        let mut undelivered = 0;
        for rx in waits {
            undelivered += rx.await.unwrap_or(0);
        }
        self.router_arbiter.stop();
        for w in &self.workers {
            w.stop();
        }
        tracing::info!(
            undelivered,
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
