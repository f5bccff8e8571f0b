//! The router actor: every event passes through it once. It turns counters
//! into rates, applies the source's triggers and hands each output the
//! batch its routes select (the `critical`, `warning`, `route` and counter
//! rules of docs/configuration.md).
//!
//! The work per event is plain function calls from `duct_core::pipeline`;
//! the router's own job is to own the aggregation cache and the table of
//! outputs, which a reload replaces.
//!
//! The router is sharded: one per worker arbiter, each registered as its
//! thread's [`local`] router, so that a listener connection hands its
//! events over without crossing threads. A source's events always reach
//! the shard of its worker, so each counter's samples meet in one cache.
//!
//! Shards run under [`actix::Supervisor`]: a panic while routing drops the
//! batch at hand and stops the shard, which its supervisor restarts at once
//! with a fresh aggregation cache (the panic may have left it half
//! updated), the same table of outputs and the same mailbox, so that the
//! messages waiting in it are routed by the restarted shard.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::Request;
use actix::prelude::*;
use actix::WeakAddr;
use bytes::{Bytes, BytesMut};
use duct_core::pipeline::{Aggregator, Route, SourceRules};
use duct_core::{Event, Receipt, Telemetry};

use crate::disk_buffer::encode_record;
use crate::guard::{contain, InjectPanic, Throttle};
use crate::output_actor::{Enqueue, OutputActor};

/// A batch of events from one source.
pub struct Publish {
    pub rules: Arc<SourceRules>,
    pub events: Vec<Event>,
    /// The listener waits for the events to be kept (`end_to_end`).
    pub receipt: Option<Receipt>,
}

impl Message for Publish {
    type Result = ();
}

/// An output the router can deliver to.
#[derive(Clone)]
pub struct OutputRoute {
    pub name: Option<String>,
    /// It has a disk buffer: it is handed the chunk's record encoded too.
    pub disk: bool,
    pub addr: Addr<OutputActor>,
}

/// Replaces the table of outputs (start-up and reload).
pub struct SetOutputs(pub Vec<OutputRoute>);

impl Message for SetOutputs {
    type Result = ();
}

/// Answered once every message sent before it has been routed.
pub struct Sync;

impl Message for Sync {
    type Result = ();
}

thread_local! {
    /// The router shard running on this thread, if any (weak: the agent
    /// owns the shards).
    static LOCAL: RefCell<Option<WeakAddr<Router>>> = const { RefCell::new(None) };
}

/// The router shard of the calling thread (worker arbiters have one).
pub fn local() -> Option<Addr<Router>> {
    LOCAL.with(|l| l.borrow().as_ref().and_then(WeakAddr::upgrade))
}

pub struct Router {
    outputs: Vec<OutputRoute>,
    /// Last sample of every counter, for rates.
    aggregator: Aggregator,
    telemetry: Arc<Telemetry>,
    /// Quiets the log when a bug makes routing panic for every batch (the
    /// shard then restarts for every batch).
    panics: Throttle,
}

impl Router {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Router {
            outputs: Vec::new(),
            aggregator: Aggregator::new(),
            telemetry,
            panics: Throttle::default(),
        }
    }

    /// A panic in a handler: log it and stop, for the supervisor to restart
    /// the shard.
    fn crashed(&mut self, ctx: &mut Context<Self>, service: &str, panic: &str) {
        if let Some(held) = self.panics.allow(Duration::from_secs(10)) {
            tracing::error!(
                service = %service,
                restarts_held_back = held,
                "router panicked on a batch, which was dropped; restarting the shard: {panic}"
            );
        }
        ctx.stop();
    }

    /// One batch's way through: rates, triggers, then a shared chunk to
    /// every output the source routes to. Returns the deliveries that
    /// found an output's mailbox full, for the caller to wait on. Public
    /// for the micro-benchmarks.
    pub fn route(
        &mut self,
        rules: &SourceRules,
        mut events: Vec<Event>,
        receipt: Option<Receipt>,
    ) -> Vec<Request<OutputActor, Enqueue>> {
        let mut blocked = Vec::new();
        self.aggregator.apply(&mut events);
        rules.apply_triggers(&mut events);
        if events.is_empty() {
            return blocked;
        }
        if rules.debug {
            for ev in &events {
                tracing::info!(service = %rules.service, event = %ev.to_json(), "event");
            }
        }
        let chunk: Arc<[Event]> = events.into();
        // Encoded once for every disk-buffered output, here rather than on
        // each output's thread, which is the one that delivers.
        let mut record: Option<Bytes> = None;
        for out in &self.outputs {
            let wanted = match &rules.route {
                Route::All => true,
                Route::Named(names) => out.name.as_ref().is_some_and(|n| names.contains(n)),
            };
            if wanted {
                let record = out.disk.then(|| {
                    record
                        .get_or_insert_with(|| {
                            let mut buf = BytesMut::new();
                            encode_record(&mut buf, &chunk);
                            buf.freeze()
                        })
                        .clone()
                });
                let msg = Enqueue {
                    events: chunk.clone(),
                    record,
                    receipt: receipt.clone(),
                };
                match out.addr.try_send(msg) {
                    Ok(()) => {}
                    Err(SendError::Full(msg)) => blocked.push(out.addr.send(msg)),
                    // The output stopped (a reload retired it).
                    Err(SendError::Closed(msg)) => {
                        if let Some(r) = msg.receipt {
                            r.fail();
                        }
                    }
                }
            }
        }
        blocked
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Listener connections wait on this mailbox when it is full: that is
        // how a flood of input pushes back on its senders.
        ctx.set_mailbox_capacity(64);
        let me = ctx.address().downgrade();
        LOCAL.with(|l| *l.borrow_mut() = Some(me));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        LOCAL.with(|l| l.borrow_mut().take());
    }
}

impl Supervised for Router {
    fn restarting(&mut self, _: &mut Self::Context) {
        // Rates start over: better a missing rate than a wrong one.
        self.aggregator = Aggregator::new();
        Telemetry::count(&self.telemetry.restarts, 1);
        tracing::info!("router shard restarted");
    }
}

impl Handler<Publish> for Router {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) {
        Telemetry::count(&self.telemetry.events_received, msg.events.len() as u64);
        let Publish { rules, events, receipt } = msg;
        let claim = receipt.clone();
        // A bug here must not stop every event of the agent: contain it to
        // the batch at hand.
        match contain(|| self.route(&rules, events, receipt)) {
            Ok(blocked) if blocked.is_empty() => {}
            Ok(blocked) => {
                // An output's thread is behind: take nothing more until its
                // mailbox has room. Listeners then wait on this mailbox, so
                // memory stays bounded by the mailboxes' capacities.
                let delivered = async move {
                    for request in blocked {
                        let _ = request.await;
                    }
                };
                ctx.wait(delivered.into_actor(self));
            }
            Err(panic) => {
                if let Some(r) = claim {
                    r.fail();
                }
                self.crashed(ctx, &rules.service, &panic)
            }
        }
    }
}

impl Handler<InjectPanic> for Router {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) {
        if let Err(panic) = contain(|| panic!("injected panic")) {
            self.crashed(ctx, "-", &panic);
        }
    }
}

impl Handler<SetOutputs> for Router {
    type Result = ();

    fn handle(&mut self, msg: SetOutputs, _: &mut Self::Context) {
        self.outputs = msg.0;
    }
}

impl Handler<Sync> for Router {
    type Result = ();

    fn handle(&mut self, _: Sync, _: &mut Self::Context) {}
}
