//! Criterion micro-benchmarks of the hot paths, timed per event: Riemann
//! decode and encode, trigger evaluation, and the router's work on a
//! batch. `cargo bench -p ductd-bench` times them; `cargo test -p
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

criterion_group!(hot, per_event);
criterion_main!(hot);
