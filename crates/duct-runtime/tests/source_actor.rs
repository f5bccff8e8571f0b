//! The source actor against sources that misbehave on purpose: too slow
//! for their interval, past their timeout, panicking, silent.

mod common;

use common::wait_until;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use duct_core::config::{Block, Globals, Mark, Node};
use duct_core::plan::SourceRecipe;
use duct_core::{
    Event, EventSink, NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSettings, SourceSpec, Telemetry,
};
use duct_runtime::guard::InjectPanic;
use duct_runtime::source_actor::{SourceActor, StopSource};

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn publish(&self, events: Vec<Event>) {
        self.0.lock().unwrap().extend(events);
    }
}

/// How a test source behaves; each test has its own statics (tests may
/// share a process).
struct Behaviour {
    builds: AtomicUsize,
    calls: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Behaviour {
    const fn new() -> Self {
        Behaviour {
            builds: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        }
    }
}

/// `get` calls `act(call number)` to decide what to do.
struct Scripted {
    behaviour: &'static Behaviour,
    act: fn(usize) -> Action,
}

#[derive(Clone, Copy)]
enum Action {
    Emit,
    Sleep(Duration),
    Nothing,
    Panic,
}

impl Source for Scripted {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        let b = self.behaviour;
        let n = b.calls.fetch_add(1, Ordering::SeqCst);
        let action = (self.act)(n);
        Box::pin(async move {
            let now = b.running.fetch_add(1, Ordering::SeqCst) + 1;
            b.max_running.fetch_max(now, Ordering::SeqCst);
            let result = match action {
                Action::Emit => Ok(vec![ctx.create_event("ok", "tick", n as i64)]),
                Action::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(vec![ctx.create_event("ok", "slow tick", n as i64)])
                }
                Action::Nothing => Ok(vec![]),
                Action::Panic => {
                    b.running.fetch_sub(1, Ordering::SeqCst);
                    panic!("scripted panic");
                }
            };
            b.running.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }
}

struct Fixture {
    addr: Addr<SourceActor>,
    sink: Arc<Collect>,
    telemetry: Arc<Telemetry>,
}

fn start(
    behaviour: &'static Behaviour,
    act: fn(usize) -> Action,
    build: duct_core::registry::SourceBuild,
    settings: impl FnOnce(&mut SourceSettings),
) -> Fixture {
    let mut s = SourceSettings::for_service("scripted", "h");
    s.interval = 0.05;
    s.timeout = 0.05;
    s.start_delay = Some(0.0);
    settings(&mut s);
    let settings = Arc::new(s);
    let recipe = Arc::new(SourceRecipe {
        settings: settings.clone(),
        spec: SourceSpec::new::<NoOptions>("test.Scripted", "scripted", &[], build),
        block: Block {
            node: Node::null(Mark::new(Arc::from(Path::new("t.yml")), 1, 1)),
            context: "sources[0]".into(),
        },
        globals: Arc::new(Globals::default()),
    });
    let sink = Arc::new(Collect::default());
    let telemetry = Telemetry::new();
    let ctx = SourceContext::new(settings, sink.clone(), telemetry.clone());
    behaviour.builds.fetch_add(1, Ordering::SeqCst);
    let source = Box::new(Scripted { behaviour, act });
    let addr = SourceActor::new(recipe, source, ctx, 0.0).start();
    Fixture { addr, sink, telemetry }
}

static SLOW: Behaviour = Behaviour::new();

fn slow_build(_: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    unreachable!("never rebuilt")
}

#[actix_rt::test]
async fn slow_ticks_are_never_overlapped_and_skips_are_counted() {
    let f = start(
        &SLOW,
        |_| Action::Sleep(Duration::from_millis(120)),
        slow_build,
        |s| s.timeout = 5.0,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(SLOW.max_running.load(Ordering::SeqCst), 1);
    assert!(f.telemetry.ticks_skipped.load(Ordering::Relaxed) >= 3);
    assert!(!f.sink.0.lock().unwrap().is_empty());
    f.addr.send(StopSource).await.unwrap();
}

static TIMEOUT: Behaviour = Behaviour::new();

#[actix_rt::test]
async fn a_tick_past_its_timeout_is_abandoned_and_the_next_runs() {
    let f = start(
        &TIMEOUT,
        |n| {
            if n == 0 {
                Action::Sleep(Duration::from_secs(30))
            } else {
                Action::Emit
            }
        },
        slow_build,
        |s| s.timeout = 0.1,
    );
    assert!(wait_until(Duration::from_secs(5), || !f.sink.0.lock().unwrap().is_empty()).await);
    assert_eq!(f.telemetry.tick_errors.load(Ordering::Relaxed), 1);
    f.addr.send(StopSource).await.unwrap();
}

static PANICS: Behaviour = Behaviour::new();

fn panics_build(_: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    PANICS.builds.fetch_add(1, Ordering::SeqCst);
    Ok(Box::new(Scripted {
        behaviour: &PANICS,
        act: |_| Action::Emit,
    }))
}

#[actix_rt::test]
async fn a_panic_is_contained_and_the_source_recreated() {
    let f = start(&PANICS, |_| Action::Panic, panics_build, |_| {});
    assert!(wait_until(Duration::from_secs(5), || !f.sink.0.lock().unwrap().is_empty()).await);
    assert_eq!(
        PANICS.builds.load(Ordering::SeqCst),
        2,
        "built once more after the panic"
    );
    assert!(f.telemetry.tick_errors.load(Ordering::Relaxed) >= 1);
    f.addr.send(StopSource).await.unwrap();
}

static SILENT: Behaviour = Behaviour::new();

fn silent_build(_: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    SILENT.builds.fetch_add(1, Ordering::SeqCst);
    Ok(Box::new(Scripted {
        behaviour: &SILENT,
        act: |_| Action::Nothing,
    }))
}

#[actix_rt::test]
async fn the_watchdog_recreates_a_silent_source() {
    let f = start(&SILENT, |_| Action::Nothing, silent_build, |s| s.watchdog = true);
    // Ten intervals of 50 ms without events.
    assert!(wait_until(Duration::from_secs(5), || SILENT.builds.load(Ordering::SeqCst) >= 2).await);
    f.addr.send(StopSource).await.unwrap();
}

static QUIET: Behaviour = Behaviour::new();

#[actix_rt::test]
async fn without_watchdog_a_silent_source_is_left_alone() {
    let f = start(&QUIET, |_| Action::Nothing, slow_build, |_| {});
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(QUIET.builds.load(Ordering::SeqCst), 1);
    assert!(QUIET.calls.load(Ordering::SeqCst) >= 10);
    f.addr.send(StopSource).await.unwrap();
}

static GRID: Behaviour = Behaviour::new();

#[actix_rt::test]
async fn ticks_follow_the_interval_after_the_start_delay() {
    let started = Instant::now();
    let f = start(
        &GRID,
        |_| Action::Emit,
        slow_build,
        |s| {
            s.start_delay = Some(0.3);
            s.interval = 0.1;
        },
    );
    assert!(wait_until(Duration::from_secs(5), || !f.sink.0.lock().unwrap().is_empty()).await);
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(280), "first tick after {first:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = f.sink.0.lock().unwrap().len();
    assert!((5..=13).contains(&n), "{n} ticks in ~1 s at 0.1 s");
    f.addr.send(StopSource).await.unwrap();
}

static HUGE: Behaviour = Behaviour::new();

#[actix_rt::test]
async fn an_interval_no_clock_can_hold_is_reported_not_a_dead_actor() {
    let f = start(&HUGE, |_| Action::Emit, slow_build, |s| s.interval = 1e20);
    assert!(
        wait_until(Duration::from_secs(5), || !f.telemetry.failing_sources().is_empty()).await,
        "the source shows as failing"
    );
    let (service, why, _) = f.telemetry.failing_sources().remove(0);
    assert_eq!(service, "scripted");
    assert!(why.contains("out of range"), "{why}");
    f.addr.send(StopSource).await.expect("the actor still runs");
}

static UNBUILT: Behaviour = Behaviour::new();

fn unbuilt_build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    // The first attempt (at start) and the next fail; the third works.
    if UNBUILT.builds.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err(args.invalid("path", "no such file"));
    }
    Ok(Box::new(Scripted {
        behaviour: &UNBUILT,
        act: |_| Action::Emit,
    }))
}

#[actix_rt::test]
async fn a_source_that_cannot_be_built_is_reported_and_built_again() {
    let mut s = SourceSettings::for_service("unbuilt", "h");
    s.interval = 0.05;
    s.start_delay = Some(0.0);
    let settings = Arc::new(s);
    let recipe = Arc::new(SourceRecipe {
        settings: settings.clone(),
        spec: SourceSpec::new::<NoOptions>("test.Scripted", "scripted", &[], unbuilt_build),
        block: Block {
            node: Node::null(Mark::new(Arc::from(Path::new("t.yml")), 1, 1)),
            context: "sources[0]".into(),
        },
        globals: Arc::new(Globals::default()),
    });
    let sink = Arc::new(Collect::default());
    let telemetry = Telemetry::new();
    let ctx = SourceContext::new(settings, sink.clone(), telemetry.clone());
    let why = recipe.build().err().expect("the first build fails").to_string();
    let addr = SourceActor::unbuilt(recipe, ctx, 0.0, &why).start();
    assert!(wait_until(Duration::from_secs(2), || !telemetry.failing_sources().is_empty()).await);
    assert!(telemetry.failing_sources()[0].1.contains("no such file"));
    // Retried at 1 s, then about 2 s later.
    assert!(wait_until(Duration::from_secs(8), || !sink.0.lock().unwrap().is_empty()).await);
    assert_eq!(UNBUILT.builds.load(Ordering::SeqCst), 3);
    assert!(
        wait_until(Duration::from_secs(2), || telemetry.failing_sources().is_empty()).await,
        "working once built"
    );
    addr.send(StopSource).await.unwrap();
}

static KILLED: Behaviour = Behaviour::new();

fn killed_build(_: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    KILLED.builds.fetch_add(1, Ordering::SeqCst);
    Ok(Box::new(Scripted {
        behaviour: &KILLED,
        act: |_| Action::Emit,
    }))
}

#[actix_rt::test]
async fn a_panic_in_the_actor_itself_recreates_the_source_and_ticks_go_on() {
    let f = start(&KILLED, |_| Action::Emit, killed_build, |_| {});
    assert!(wait_until(Duration::from_secs(5), || !f.sink.0.lock().unwrap().is_empty()).await);
    f.addr.do_send(InjectPanic);
    assert!(
        wait_until(Duration::from_secs(5), || !f.telemetry.failing_sources().is_empty()).await,
        "reported while it waits to be recreated"
    );
    assert!(wait_until(Duration::from_secs(5), || KILLED.builds.load(Ordering::SeqCst) == 2).await);
    let before = f.sink.0.lock().unwrap().len();
    assert!(wait_until(Duration::from_secs(5), || f.sink.0.lock().unwrap().len() > before + 3).await);
    assert!(f.telemetry.failing_sources().is_empty());
    // One grid, not two: about 20 ticks a second at 50 ms.
    let n = f.sink.0.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let per_second = f.sink.0.lock().unwrap().len() - n;
    assert!(per_second <= 30, "{per_second} ticks in a second at 50 ms");
    f.addr.send(StopSource).await.unwrap();
}
