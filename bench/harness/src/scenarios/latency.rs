//! Scenario 4, latency: one client sends 1,000 single-event messages a
//! second to ductd's `RiemannTCP` listener, each event stamped with the
//! moment it is written; the events go through the router to a
//! `RiemannTCP` output that flushes every `flush_interval`, and the sink
//! takes each event's latency when it reads it. Both ends are the
//! harness's, on one clock.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duct_proto::Message;

use crate::agents::free_port;
use crate::report::{percentile, Better, Figure, Target};
use crate::senders::{Clock, Paced};
use crate::sink::Sink;

use super::Env;

#[derive(Debug, Clone)]
pub struct Options {
    pub rate: f64,
    pub seconds: f64,
    pub warmup: f64,
    /// The output's `interval` (seconds between flushes).
    pub flush_interval: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate: 1000.0,
            seconds: 10.0,
            warmup: 2.0,
            flush_interval: 0.1,
        }
    }
}

fn config(listen: u16, sink: u16, flush: f64) -> String {
    format!(
        "sources:\n  - service: latency\n    source: duct.sources.riemann.RiemannTCP\n    port: {listen}\n    bind: 127.0.0.1\n\
         outputs:\n  - output: duct.outputs.riemann.RiemannTCP\n    server: 127.0.0.1\n    port: {sink}\n    interval: {flush}\n"
    )
}

pub fn run(env: &Env, opts: &Options) -> io::Result<Vec<Figure>> {
    let clock = Clock::new();
    let samples: Arc<Mutex<Vec<f64>>> = Arc::default();
    let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let inspect = {
        let (samples, recording) = (samples.clone(), recording.clone());
        Arc::new(move |body: &[u8], at: std::time::Instant| {
            if !recording.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let Ok(msg) = duct_proto::Msg::decode(body) else { return };
            let now = clock.stamp(at);
            let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
            for ev in msg.events {
                if let Some(sent) = ev.metric_sint64 {
                    s.push((now - sent) as f64 / 1e6);
                }
            }
        })
    };
    let sink = Sink::start(Some(inspect))?;
    let listen = free_port()?;
    let path = env
        .scratch
        .write("latency.yml", &config(listen, sink.port(), opts.flush_interval))?;
    let mut running = env.programs.ductd(&path, &env.scratch, "latency")?;
    running.wait_for_port(listen, Duration::from_secs(30))?;
    eprintln!(
        "latency: {} events/s for {} s after {} s warm-up, flush interval {} s",
        opts.rate, opts.seconds, opts.warmup, opts.flush_interval
    );
    let paced = Paced::start(listen, opts.rate, clock)?;
    std::thread::sleep(Duration::from_secs_f64(opts.warmup));
    recording.store(true, std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(opts.seconds));
    let counts = paced.finish()?;
    sink.wait_for(counts.sent(), Duration::from_secs(10));
    running.check_alive()?;
    running.stop(Duration::from_secs(10));
    let mut s = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    s.sort_by(f64::total_cmp);
    let target = opts.flush_interval * 1000.0 + 2.0;
    let fig = |name: &str, p: f64| {
        Figure::new("latency", name, "ms", Better::Lower)
            .value_opt("ductd", percentile(&s, p))
            .note("rate", opts.rate)
            .note("flush_interval_s", opts.flush_interval)
            .note("samples", s.len() as u64)
    };
    Ok(vec![
        fig("write_to_sink_p50", 50.0),
        fig("write_to_sink_p99", 99.0).target(Target::AtMost(target)),
        fig("write_to_sink_max", 100.0),
    ])
}
