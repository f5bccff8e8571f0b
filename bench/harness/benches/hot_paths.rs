//! Criterion micro-benchmarks of the hot paths, timed per event: Riemann
//! decode and encode, trigger evaluation, and the router's work on a
//! batch; and the Prometheus output's page. `cargo bench -p ductd-bench` times them; `cargo test -p
//! ductd-bench --benches` runs each once, untimed (CI's quick mode, which
//! cannot fail on timing).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ductd_bench::hot_paths::{self, Decode, Encode, Route, EVENTS};
use std::hint::black_box;

// ductd's allocator (src/main.rs): allocation is a large share of decoding.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn per_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(EVENTS as u64));

    let decode = Decode::new();
    g.bench_function("riemann_decode", |b| b.iter(|| black_box(decode.run())));

    let mut encode = Encode::new();
    g.bench_function("riemann_encode", |b| b.iter(|| black_box(encode.run())));

    let rules = hot_paths::rules();
    let events = hot_paths::events();
    g.bench_function("trigger_evaluation", |b| {
        b.iter_batched_ref(
            || events.clone(),
            |evs| rules.apply_triggers(black_box(evs)),
            BatchSize::SmallInput,
        )
    });

    let mut route = Route::new();
    g.bench_function("router", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| route.run(black_box(evs)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The Prometheus output's page: a scrape of 100,000 series (10,000
/// services on 10 hosts, two attributes each), and the table update a flush
/// of 100 events does.
fn prometheus(c: &mut Criterion) {
    use duct_core::{Event, Metric};
    use duct_outputs::prometheus::{Format, SeriesTable};
    let now = duct_core::event::now();
    let events: Vec<Event> = (0..100_000)
        .map(|i| {
            let mut e = Event::new(
                format!("host{}.example.org", i % 10),
                format!("service.{}.value", i / 10),
            );
            e.metric = Some(Metric::Float(i as f64 * 0.37));
            e.state = Some("ok".into());
            e.ttl = 3600.0;
            e.attributes = vec![("dc".into(), "ams".into()), ("role".into(), "web".into())];
            e
        })
        .collect();
    let mut table = SeriesTable::new("duct_", 200_000);
    table.update(events.iter(), now);
    assert_eq!(table.len(), 100_000);
    let mut g = c.benchmark_group("prometheus");
    g.sample_size(20);
    g.bench_function("page_100k_series", |b| {
        b.iter(|| black_box(table.render(Format::Text, now)))
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("update_100_events", |b| {
        b.iter(|| table.update(black_box(&events[..100]).iter(), now))
    });
    g.finish();
}

criterion_group!(hot, per_event, prometheus);
criterion_main!(hot);
