//! The output actor against a scripted transport: the faults a real
//! destination produces only by chance (a failure mid-batch, a panic, a
//! destination that never comes back) are produced here on purpose.

mod common;

use common::wait_until;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use duct_core::config::{Block, Globals, Mark, Node};
use duct_core::plan::{Buffer, DiskBufferSettings, OutputRecipe, WhenFull};
use duct_core::{
    Batch, BoxFuture, Event, Metric, NoOptions, Output, OutputError, OutputSettings, OutputSpec, OutputStats, Telemetry,
};
use duct_runtime::guard::InjectPanic;
use duct_runtime::output_actor::{Drain, Enqueue, OutputActor};
use tokio::sync::oneshot;

/// What the scripted transport does with each `send`.
#[derive(Clone, Copy, Debug)]
enum Script {
    Ok,
    /// Fail after delivering this many events of the batch.
    Fail(usize),
    /// Deliver this many, then have the next this-many refused for good.
    Refuse(usize, usize),
    /// Have this many acknowledged, then never answer.
    Hang(usize),
    Panic,
}

#[derive(Default)]
struct Shared {
    /// Scripted answers, used in order; `Ok` once exhausted (or `always`).
    script: Vec<Script>,
    always: Option<Script>,
    delivered: Vec<i64>,
    batch_sizes: Vec<usize>,
}

struct Scripted(Arc<Mutex<Shared>>);

/// While set, every transport's `start` panics.
static START_PANICS: AtomicBool = AtomicBool::new(false);
static STARTS: AtomicUsize = AtomicUsize::new(0);

impl Output for Scripted {
    fn start(&mut self) -> BoxFuture<'_, Result<(), OutputError>> {
        STARTS.fetch_add(1, Ordering::SeqCst);
        if START_PANICS.load(Ordering::SeqCst) {
            panic!("scripted panic at start");
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        let mut s = self.0.lock().unwrap();
        let step = if s.script.is_empty() {
            s.always.unwrap_or(Script::Ok)
        } else {
            s.script.remove(0)
        };
        let metrics: Vec<i64> = batch
            .iter()
            .map(|e| match e.metric {
                Some(Metric::Int(v)) => v,
                _ => -1,
            })
            .collect();
        let result = match step {
            Script::Ok => {
                s.batch_sizes.push(metrics.len());
                s.delivered.extend(&metrics);
                Ok(())
            }
            Script::Fail(n) => {
                let n = n.min(metrics.len());
                s.delivered.extend(&metrics[..n]);
                Err(OutputError::new("scripted failure").after(n))
            }
            Script::Refuse(ok, refused) => {
                let ok = ok.min(metrics.len());
                s.delivered.extend(&metrics[..ok]);
                let done = (ok + refused).min(metrics.len());
                Err(OutputError::new("scripted refusal").after(done).rejecting(done - ok))
            }
            Script::Hang(n) => {
                s.delivered.extend(&metrics[..n.min(metrics.len())]);
                batch.acknowledge(n);
                return Box::pin(std::future::pending());
            }
            Script::Panic => {
                drop(s);
                panic!("scripted panic");
            }
        };
        Box::pin(std::future::ready(result))
    }
}

/// Transports rebuilt after a panic share this state (one test at a time
/// uses it: they take `REBUILD_TESTS`).
static REBUILT: Mutex<Option<Arc<Mutex<Shared>>>> = Mutex::new(None);
static REBUILDS: AtomicUsize = AtomicUsize::new(0);
/// While set, building the transport fails (a file it needs is missing).
static BUILD_FAILS: AtomicBool = AtomicBool::new(false);
static REBUILD_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rebuild(args: &duct_core::OutputArgs<'_>) -> Result<Box<dyn Output>, duct_core::config::Diagnostic> {
    REBUILDS.fetch_add(1, Ordering::SeqCst);
    if BUILD_FAILS.load(Ordering::SeqCst) {
        return Err(args.invalid("cert", "the certificate file is missing"));
    }
    let shared = REBUILT.lock().unwrap().clone().unwrap_or_default();
    Ok(Box::new(Scripted(shared)))
}

fn settings(f: impl FnOnce(&mut OutputSettings)) -> OutputSettings {
    let mut s = OutputSettings {
        output: "test.Scripted".into(),
        name: Some("scripted".into()),
        label: "scripted".into(),
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
    f(&mut s);
    s
}

fn start(settings: OutputSettings, shared: Arc<Mutex<Shared>>) -> (Addr<OutputActor>, Arc<OutputStats>) {
    let (addr, stats, _) = start_with_telemetry(settings, shared);
    (addr, stats)
}

fn start_with_telemetry(
    settings: OutputSettings,
    shared: Arc<Mutex<Shared>>,
) -> (Addr<OutputActor>, Arc<OutputStats>, Arc<Telemetry>) {
    let recipe = Arc::new(OutputRecipe {
        settings: Arc::new(settings),
        spec: OutputSpec::new::<NoOptions>("test.Scripted", "scripted", false, rebuild),
        block: Block {
            node: Node::null(Mark::new(Arc::from(Path::new("t.yml")), 1, 1)),
            context: "outputs[0]".into(),
        },
        globals: Arc::new(Globals::default()),
    });
    let stats = OutputStats::new("scripted");
    let telemetry = Telemetry::new();
    let actor = OutputActor::new(recipe, Box::new(Scripted(shared)), stats.clone(), telemetry.clone());
    let addr = Supervisor::start(move |_| actor);
    (addr, stats, telemetry)
}

fn events(range: std::ops::Range<i64>) -> Arc<[Event]> {
    range
        .map(|i| {
            let mut e = Event::new("h", "s");
            e.metric = Some(Metric::Int(i));
            e
        })
        .collect::<Vec<_>>()
        .into()
}

async fn drain(addr: &Addr<OutputActor>, within: Duration) -> usize {
    let (done, rx) = oneshot::channel();
    addr.do_send(Drain {
        deadline: Instant::now() + within,
        done,
    });
    rx.await.unwrap()
}

#[actix_rt::test]
async fn delivers_in_order_in_batches() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (addr, stats) = start(settings(|s| s.batch = 3), shared.clone());
    addr.do_send(Enqueue::new(events(0..5)));
    addr.do_send(Enqueue::new(events(5..10)));
    assert!(wait_until(Duration::from_secs(5), || shared.lock().unwrap().delivered.len() == 10).await);
    let s = shared.lock().unwrap();
    assert_eq!(s.delivered, (0..10).collect::<Vec<_>>());
    assert!(s.batch_sizes.iter().all(|&n| n <= 3), "{:?}", s.batch_sizes);
    assert_eq!(stats.sent.load(Ordering::Relaxed), 10);
}

#[actix_rt::test]
async fn failures_requeue_what_was_not_delivered_and_delivery_resumes() {
    let shared = Arc::new(Mutex::new(Shared {
        script: vec![Script::Fail(0), Script::Fail(2), Script::Ok],
        ..Default::default()
    }));
    let (addr, stats) = start(settings(|s| s.batch = 5), shared.clone());
    addr.do_send(Enqueue::new(events(0..12)));
    assert!(wait_until(Duration::from_secs(10), || shared.lock().unwrap().delivered.len() >= 12).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        shared.lock().unwrap().delivered,
        (0..12).collect::<Vec<_>>(),
        "no event lost, none twice, order kept"
    );
    assert_eq!(stats.send_failures.load(Ordering::Relaxed), 2);
    assert_eq!(stats.sent.load(Ordering::Relaxed), 12);
    assert!(stats.healthy.load(Ordering::Relaxed));
}

#[actix_rt::test]
async fn events_refused_for_good_are_dropped_not_resent_nor_counted_as_sent() {
    let shared = Arc::new(Mutex::new(Shared {
        script: vec![Script::Refuse(2, 3)],
        ..Default::default()
    }));
    let (addr, stats) = start(settings(|s| s.batch = 10), shared.clone());
    addr.do_send(Enqueue::new(events(0..10)));
    assert!(wait_until(Duration::from_secs(10), || shared.lock().unwrap().delivered.len() >= 7).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.lock().unwrap().delivered, vec![0, 1, 5, 6, 7, 8, 9]);
    assert_eq!(stats.sent.load(Ordering::Relaxed), 7);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
}

#[actix_rt::test]
async fn maxsize_drops_the_oldest_while_the_destination_is_down() {
    let shared = Arc::new(Mutex::new(Shared {
        always: Some(Script::Fail(0)),
        ..Default::default()
    }));
    let (addr, stats) = start(settings(|s| s.maxsize = 5), shared.clone());
    addr.do_send(Enqueue::new(events(0..3)));
    addr.do_send(Enqueue::new(events(3..8)));
    assert!(wait_until(Duration::from_secs(5), || stats.dropped.load(Ordering::Relaxed) == 3).await);
    shared.lock().unwrap().always = None;
    assert!(wait_until(Duration::from_secs(5), || shared.lock().unwrap().delivered.len() == 5).await);
    assert_eq!(shared.lock().unwrap().delivered, vec![3, 4, 5, 6, 7]);
}

#[actix_rt::test]
async fn maxrate_limits_each_flush() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    // 20 events/s with a 0.1 s flush: 2 events per flush.
    let (addr, _) = start(
        settings(|s| {
            s.maxrate = 20.0;
            s.interval = 0.1;
        }),
        shared.clone(),
    );
    addr.do_send(Enqueue::new(events(0..100)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = shared.lock().unwrap();
    assert!(
        s.delivered.len() <= 14 && !s.delivered.is_empty(),
        "{} delivered",
        s.delivered.len()
    );
    assert!(s.batch_sizes.iter().all(|&n| n <= 2), "{:?}", s.batch_sizes);
}

#[actix_rt::test]
async fn expire_drops_events_that_outlive_their_ttl() {
    let shared = Arc::new(Mutex::new(Shared {
        always: Some(Script::Fail(0)),
        ..Default::default()
    }));
    let (addr, stats) = start(settings(|s| s.expire = true), shared.clone());
    let stale: Vec<Event> = events(0..4)
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.ttl = 0.1;
            e
        })
        .collect();
    addr.do_send(Enqueue::new(stale.into()));
    assert!(wait_until(Duration::from_secs(5), || stats.dropped.load(Ordering::Relaxed) == 4).await);
    assert_eq!(stats.queued.load(Ordering::Relaxed), 0);
}

#[actix_rt::test]
async fn log_events_skip_metric_only_outputs_and_nan_is_optional() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (addr, _) = start(
        settings(|s| {
            s.metrics_only = true;
            s.allow_nan = false;
        }),
        shared.clone(),
    );
    let mut log = Event::new("h", "log");
    log.kind = duct_core::EventKind::Log;
    log.metric = Some(Metric::Int(100));
    let no_metric = Event::new("h", "none");
    let mut good = Event::new("h", "good");
    good.metric = Some(Metric::Int(7));
    addr.do_send(Enqueue::new(vec![log, no_metric, good].into()));
    assert!(wait_until(Duration::from_secs(5), || !shared.lock().unwrap().delivered.is_empty()).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shared.lock().unwrap().delivered, vec![7]);
}

#[actix_rt::test]
async fn drain_delivers_everything_before_stopping() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    // A 60 s flush interval: only the drain can deliver.
    let (addr, _) = start(settings(|s| s.interval = 60.0), shared.clone());
    addr.do_send(Enqueue::new(events(0..50)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(shared.lock().unwrap().delivered.is_empty());
    assert_eq!(drain(&addr, Duration::from_secs(5)).await, 0);
    assert_eq!(shared.lock().unwrap().delivered.len(), 50);
}

#[actix_rt::test]
async fn drain_gives_up_at_its_deadline_and_counts_what_is_left() {
    let shared = Arc::new(Mutex::new(Shared {
        always: Some(Script::Fail(0)),
        ..Default::default()
    }));
    let (addr, _) = start(settings(|s| s.interval = 60.0), shared.clone());
    addr.do_send(Enqueue::new(events(0..7)));
    let started = Instant::now();
    assert_eq!(drain(&addr, Duration::from_millis(500)).await, 7);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[actix_rt::test]
async fn a_destination_failing_at_once_does_not_spin_past_the_deadline() {
    let shared = Arc::new(Mutex::new(Shared {
        always: Some(Script::Fail(0)),
        ..Default::default()
    }));
    let (addr, stats) = start(settings(|s| s.interval = 0.05), shared.clone());
    addr.do_send(Enqueue::new(events(0..3)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(drain(&addr, Duration::from_millis(800)).await, 3);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // Retries near the deadline are spaced, not a busy loop.
    let attempts = stats.send_failures.load(Ordering::Relaxed);
    assert!(attempts < 40, "{attempts} attempts in under a second");
}

#[actix_rt::test]
async fn a_panicking_transport_is_rebuilt_and_nothing_is_lost() {
    let _one = REBUILD_TESTS.lock().await;
    let fresh = Arc::new(Mutex::new(Shared::default()));
    *REBUILT.lock().unwrap() = Some(fresh.clone());
    let shared = Arc::new(Mutex::new(Shared {
        script: vec![Script::Panic],
        ..Default::default()
    }));
    let before = REBUILDS.load(Ordering::SeqCst);
    let (addr, stats) = start(settings(|_| {}), shared);
    addr.do_send(Enqueue::new(events(0..4)));
    assert!(wait_until(Duration::from_secs(5), || fresh.lock().unwrap().delivered.len() == 4).await);
    assert_eq!(fresh.lock().unwrap().delivered, vec![0, 1, 2, 3]);
    assert_eq!(REBUILDS.load(Ordering::SeqCst), before + 1);
    assert_eq!(stats.send_failures.load(Ordering::Relaxed), 1);
    assert_eq!(stats.restarts.load(Ordering::Relaxed), 1, "the actor was restarted");
}

#[actix_rt::test]
async fn a_panicking_actor_is_restarted_with_its_queue_and_mailbox() {
    let _one = REBUILD_TESTS.lock().await;
    let fresh = Arc::new(Mutex::new(Shared::default()));
    *REBUILT.lock().unwrap() = Some(fresh.clone());
    // Down at first, so that events are queued when the actor panics.
    let shared = Arc::new(Mutex::new(Shared {
        always: Some(Script::Fail(0)),
        ..Default::default()
    }));
    let (addr, stats, telemetry) = start_with_telemetry(settings(|_| {}), shared);
    addr.do_send(Enqueue::new(events(0..3)));
    assert!(
        wait_until(Duration::from_secs(5), || stats.send_failures.load(Ordering::Relaxed)
            >= 1)
        .await
    );
    addr.do_send(InjectPanic);
    addr.do_send(Enqueue::new(events(3..6)));
    assert!(wait_until(Duration::from_secs(5), || fresh.lock().unwrap().delivered.len() == 6).await);
    assert_eq!(fresh.lock().unwrap().delivered, (0..6).collect::<Vec<_>>());
    assert_eq!(stats.restarts.load(Ordering::Relaxed), 1);
    assert_eq!(telemetry.restarts.load(Ordering::Relaxed), 1);
    assert!(stats.started.load(Ordering::Relaxed));
    // Still answering after the restart.
    addr.send(duct_runtime::output_actor::Ping).await.unwrap();
}

#[actix_rt::test]
async fn an_output_that_cannot_be_rebuilt_retries_reports_unhealthy_and_not_started() {
    let _one = REBUILD_TESTS.lock().await;
    let fresh = Arc::new(Mutex::new(Shared::default()));
    *REBUILT.lock().unwrap() = Some(fresh.clone());
    BUILD_FAILS.store(true, Ordering::SeqCst);
    let shared = Arc::new(Mutex::new(Shared {
        script: vec![Script::Panic],
        ..Default::default()
    }));
    let before = REBUILDS.load(Ordering::SeqCst);
    let (addr, stats) = start(settings(|s| s.backoff_max = 0.1), shared);
    addr.do_send(Enqueue::new(events(0..4)));
    // Rebuilt again and again (with backoff), each time in vain.
    let rebuilt = wait_until(Duration::from_secs(10), || {
        REBUILDS.load(Ordering::SeqCst) >= before + 3
    })
    .await;
    let (healthy, started) = (
        stats.healthy.load(Ordering::Relaxed),
        stats.started.load(Ordering::Relaxed),
    );
    BUILD_FAILS.store(false, Ordering::SeqCst);
    assert!(rebuilt, "the rebuild is retried");
    assert!(!healthy, "reported unhealthy while it cannot be rebuilt");
    assert!(!started, "not ready while it cannot be rebuilt");
    assert!(stats.last_error().unwrap().contains("certificate file is missing"));
    assert!(wait_until(Duration::from_secs(5), || fresh.lock().unwrap().delivered.len() == 4).await);
    assert_eq!(fresh.lock().unwrap().delivered, vec![0, 1, 2, 3]);
    assert!(stats.healthy.load(Ordering::Relaxed));
    assert!(stats.started.load(Ordering::Relaxed));
}

#[actix_rt::test]
async fn what_the_destination_acknowledged_of_a_batch_in_flight_is_not_counted_undelivered() {
    let shared = Arc::new(Mutex::new(Shared {
        script: vec![Script::Hang(6)],
        ..Default::default()
    }));
    let (addr, stats) = start(settings(|s| s.batch = 10), shared.clone());
    addr.do_send(Enqueue::new(events(0..10)));
    assert!(wait_until(Duration::from_secs(5), || shared.lock().unwrap().delivered.len() == 6).await);
    assert!(
        wait_until(Duration::from_secs(5), || stats.queued.load(Ordering::Relaxed) == 4).await,
        "queued: {}",
        stats.queued.load(Ordering::Relaxed)
    );
    addr.do_send(Enqueue::new(events(10..12)));
    assert_eq!(
        drain(&addr, Duration::from_millis(300)).await,
        6,
        "4 in flight, 2 queued"
    );
}

#[actix_rt::test]
async fn a_drained_output_is_not_restarted_and_ends_once_let_go() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (addr, stats) = start(settings(|_| {}), shared.clone());
    addr.do_send(Enqueue::new(events(0..5)));
    // A long deadline: the drain ends when the queue is empty, not then.
    assert_eq!(drain(&addr, Duration::from_secs(30)).await, 0);
    // Retired: what still arrives is not taken, and nothing restarts it.
    addr.do_send(Enqueue::new(events(5..8)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.lock().unwrap().delivered, vec![0, 1, 2, 3, 4]);
    assert_eq!(stats.restarts.load(Ordering::Relaxed), 0);
    drop(addr);
    assert!(
        wait_until(Duration::from_secs(2), || Arc::strong_count(&stats) == 1).await,
        "the actor ended once no one held its address"
    );
}

#[actix_rt::test]
async fn a_transport_that_panics_at_every_start_is_restarted_with_backoff() {
    let _one = REBUILD_TESTS.lock().await;
    let fresh = Arc::new(Mutex::new(Shared::default()));
    *REBUILT.lock().unwrap() = Some(fresh.clone());
    START_PANICS.store(true, Ordering::SeqCst);
    let before = STARTS.load(Ordering::SeqCst);
    let (addr, stats) = start(
        settings(|s| s.backoff_max = 0.4),
        Arc::new(Mutex::new(Shared::default())),
    );
    addr.do_send(Enqueue::new(events(0..3)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Still answering: the actor is not spinning in restarts.
    tokio::time::timeout(Duration::from_secs(1), addr.send(duct_runtime::output_actor::Ping))
        .await
        .expect("answers within a second")
        .unwrap();
    let starts = STARTS.load(Ordering::SeqCst) - before;
    let restarts = stats.restarts.load(Ordering::Relaxed);
    START_PANICS.store(false, Ordering::SeqCst);
    assert!((2..=15).contains(&starts), "{starts} starts in 1.5 s");
    assert!(restarts >= 2, "{restarts}");
    assert!(!stats.started.load(Ordering::Relaxed));
    assert!(wait_until(Duration::from_secs(5), || fresh.lock().unwrap().delivered.len() == 3).await);
}

fn disk_settings(dir: &Path, f: impl FnOnce(&mut OutputSettings)) -> OutputSettings {
    settings(|s| {
        s.buffer = Buffer::Disk(DiskBufferSettings {
            path: dir.to_path_buf(),
            max_bytes: 64 << 20,
            sync_interval: 0.05,
        });
        s.pushback = 0;
        f(s);
    })
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ductd-output-actor-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
        .count()
}

#[actix_rt::test]
async fn a_disk_buffer_keeps_what_a_stopped_output_held_for_the_next_one() {
    let dir = temp_dir("kept");
    let down = Arc::new(Mutex::new(Shared {
        always: Some(Script::Fail(0)),
        ..Default::default()
    }));
    // A small queue in memory: most of what is held waits on disk.
    let (addr, stats) = start(disk_settings(&dir, |s| s.maxsize = 100), down.clone());
    for i in 0..10 {
        addr.do_send(Enqueue::new(events(i * 100..i * 100 + 100)));
    }
    assert!(wait_until(Duration::from_secs(10), || stats.queued.load(Ordering::Relaxed) == 1000).await);
    assert!(
        wait_until(Duration::from_secs(10), || stats.send_failures.load(Ordering::Relaxed)
            > 0)
        .await
    );
    // Stopping does not wait for a destination that is down: what is
    // queued is on disk already.
    assert_eq!(drain(&addr, Duration::from_secs(30)).await, 0);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (_addr, stats) = start(disk_settings(&dir, |_| {}), shared.clone());
    assert!(
        wait_until(Duration::from_secs(10), || shared.lock().unwrap().delivered.len()
            >= 1000)
        .await
    );
    let mut got = shared.lock().unwrap().delivered.clone();
    assert_eq!(got.len(), 1000, "each once: nothing was delivered before");
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(
        wait_until(Duration::from_secs(10), || segments(&dir) == 1).await,
        "delivered segments deleted"
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn an_unwritable_disk_buffer_falls_back_to_memory_and_reports_unhealthy() {
    let dir = temp_dir("unwritable");
    // A file where the directory should be.
    std::fs::write(&dir, b"not a directory").unwrap();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (addr, stats) = start(disk_settings(&dir, |_| {}), shared.clone());
    addr.do_send(Enqueue::new(events(0..10)));
    assert!(wait_until(Duration::from_secs(10), || shared.lock().unwrap().delivered.len() == 10).await);
    assert!(!stats.is_healthy(), "delivering, but not keeping the queue on disk");
    assert!(stats.healthy.load(Ordering::Relaxed));
    let why = stats.last_error().unwrap();
    assert!(
        why.contains("disk buffer") && why.contains("queueing in memory"),
        "{why}"
    );
    let _ = std::fs::remove_file(&dir);
}

#[actix_rt::test]
async fn a_listeners_receipt_is_let_go_once_on_disk_or_once_delivered() {
    let dir = temp_dir("receipt");
    let down = Arc::new(Mutex::new(Shared {
        always: Some(Script::Fail(0)),
        ..Default::default()
    }));
    let (disk, _) = start(disk_settings(&dir, |_| {}), down.clone());
    let (receipt, kept) = duct_core::Receipt::new();
    disk.do_send(Enqueue {
        events: events(0..3),
        record: None,
        receipt: Some(receipt),
    });
    let kept = tokio::time::timeout(Duration::from_secs(10), kept).await;
    assert_eq!(kept.expect("in time").ok(), Some(true), "on disk though undelivered");

    let (memory, _) = start(settings(|_| {}), down.clone());
    let (receipt, mut kept) = duct_core::Receipt::new();
    memory.do_send(Enqueue {
        events: events(0..3),
        record: None,
        receipt: Some(receipt),
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(kept.try_recv().is_err(), "held while undelivered");
    down.lock().unwrap().always = Some(Script::Ok);
    let kept = tokio::time::timeout(Duration::from_secs(10), kept).await;
    assert_eq!(kept.expect("in time").ok(), Some(true));

    // Dropped from a full queue: the listener hears it was given up.
    down.lock().unwrap().always = Some(Script::Fail(0));
    let (small, _) = start(settings(|s| s.maxsize = 2), down.clone());
    let (receipt, kept) = duct_core::Receipt::new();
    small.do_send(Enqueue {
        events: events(0..3),
        record: None,
        receipt: Some(receipt),
    });
    small.do_send(Enqueue::new(events(3..6)));
    let kept = tokio::time::timeout(Duration::from_secs(10), kept).await;
    assert_eq!(kept.expect("in time").ok(), Some(false));
    let _ = std::fs::remove_dir_all(&dir);
}
