//! A router shard under its supervisor: a panic while routing restarts the
//! shard, and the batches waiting in its mailbox are still routed.

mod common;

use common::wait_until;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use duct_core::config::{Block, Globals, Mark, Node};
use duct_core::pipeline::SourceRules;
use duct_core::plan::{Buffer, OutputRecipe, WhenFull};
use duct_core::{
    Batch, BoxFuture, Event, Metric, NoOptions, Output, OutputError, OutputSettings, OutputSpec, OutputStats, Telemetry,
};
use duct_runtime::guard::InjectPanic;
use duct_runtime::output_actor::OutputActor;
use duct_runtime::router::{OutputRoute, Publish, Router, SetOutputs, Sync};

/// Keeps the metric of every event it is sent.
struct Collect(Arc<Mutex<Vec<i64>>>);

impl Output for Collect {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        self.0.lock().unwrap().extend(batch.iter().map(|e| match e.metric {
            Some(Metric::Int(v)) => v,
            _ => -1,
        }));
        Box::pin(std::future::ready(Ok(())))
    }
}

fn never_rebuilt(_: &duct_core::OutputArgs<'_>) -> Result<Box<dyn Output>, duct_core::config::Diagnostic> {
    unreachable!("the output does not panic here")
}

fn output(telemetry: &Arc<Telemetry>) -> (Addr<OutputActor>, Arc<Mutex<Vec<i64>>>) {
    let settings = OutputSettings {
        output: "test.Collect".into(),
        name: Some("collect".into()),
        label: "collect".into(),
        index: 0,
        context: "outputs[0]".into(),
        interval: 0.05,
        maxsize: 250_000,
        maxrate: 0.0,
        expire: false,
        allow_nan: true,
        debug: false,
        batch: 1000,
        pushback: 10_000,
        backoff_max: 0.2,
        when_full: WhenFull::Block,
        metrics_only: false,
        buffer: Buffer::Memory,
    };
    let recipe = Arc::new(OutputRecipe {
        settings: Arc::new(settings),
        spec: OutputSpec::new::<NoOptions>("test.Collect", "collect", false, never_rebuilt),
        block: Block {
            node: Node::null(Mark::new(Arc::from(Path::new("t.yml")), 1, 1)),
            context: "outputs[0]".into(),
        },
        globals: Arc::new(Globals::default()),
    });
    let got = Arc::new(Mutex::new(Vec::new()));
    let actor = OutputActor::new(
        recipe,
        Box::new(Collect(got.clone())),
        OutputStats::new("collect"),
        telemetry.clone(),
    );
    (Supervisor::start(move |_| actor), got)
}

fn publish(range: std::ops::Range<i64>) -> Publish {
    Publish {
        rules: Arc::new(SourceRules::plain("test")),
        events: range
            .map(|i| {
                let mut e = Event::new("h", "s");
                e.metric = Some(Metric::Int(i));
                e
            })
            .collect(),
        receipt: None,
    }
}

#[actix_rt::test]
async fn a_panicking_shard_is_restarted_and_its_mailbox_keeps_flowing() {
    let telemetry = Telemetry::new();
    let (out, got) = output(&telemetry);
    let tel = telemetry.clone();
    let router = Supervisor::start(move |_| Router::new(tel));
    router.do_send(SetOutputs(vec![OutputRoute {
        name: Some("collect".into()),
        disk: false,
        addr: out,
    }]));
    router.do_send(publish(0..3));
    // Queued behind the panic: routed by the restarted shard.
    router.do_send(InjectPanic);
    router.do_send(publish(3..6));
    router.do_send(publish(6..9));
    router.send(Sync).await.expect("the shard answers after its restart");
    assert!(wait_until(Duration::from_secs(5), || got.lock().unwrap().len() == 9).await);
    assert_eq!(*got.lock().unwrap(), (0..9).collect::<Vec<_>>());
    assert_eq!(telemetry.restarts.load(Ordering::Relaxed), 1);
    assert_eq!(telemetry.events_received.load(Ordering::Relaxed), 9);
}
