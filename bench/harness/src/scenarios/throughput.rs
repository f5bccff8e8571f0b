//! Scenario 1, throughput: the harness's senders flood a `RiemannTCP`
//! listener with pre-encoded 100-event messages over several pipelined
//! connections. Two variants: the events go through the router (with a
//! warning/critical trigger that fires on part of them) to a `RiemannTCP`
//! output and on to the harness's acking sink; or to `Null`.
//!
//! After a warm-up the rates are taken over the measured window; then the
//! senders stop, every message is acknowledged, and the sink must end with
//! exactly as many events as were sent.

use std::io;
use std::time::Duration;

use crate::agents::{free_port, Running};
use crate::procfs::{self, Sampler};
use crate::report::{Better, Figure, Target};
use crate::senders::Flood;
use crate::sink::Sink;

use super::Env;

#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: f64,
    pub warmup: f64,
    pub connections: usize,
    /// Unacknowledged messages per connection.
    pub window: usize,
    /// Measure only the Riemann (`false`) or only the Null (`true`)
    /// variant; both when `None`.
    pub null_only: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 10.0,
            warmup: 3.0,
            connections: 4,
            window: 128,
            null_only: None,
        }
    }
}

/// Where the listener's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Riemann,
    Null,
}

fn config(listen: u16, variant: Variant, sink: u16) -> String {
    let output = match variant {
        Variant::Riemann => {
            format!("  - output: duct.outputs.riemann.RiemannTCP\n    server: 127.0.0.1\n    port: {sink}\n")
        }
        Variant::Null => "  - output: duct.outputs.null.Null\n".to_string(),
    };
    format!(
        "interval: 1.0\n\
         sources:\n\
         \x20 - service: bench\n\
         \x20   source: duct.sources.riemann.RiemannTCP\n\
         \x20   port: {listen}\n\
         \x20   bind: 127.0.0.1\n\
         \x20   warning:\n\
         \x20     \"bench\\\\.service\\\\..*\": \"> 90\"\n\
         \x20   critical:\n\
         \x20     \"bench\\\\.service\\\\..*\": \"> 99\"\n\
         outputs:\n{output}"
    )
}

/// What one agent did in one variant.
#[derive(Debug, Clone, Default)]
struct Outcome {
    sink_rate: Option<f64>,
    ack_rate: f64,
    core_share: f64,
    max_rss_mib: f64,
    hwm_mib: f64,
    sent: u64,
    acked: u64,
    /// Events the sink received in all (the Riemann variant).
    received: Option<u64>,
    /// Why the run was cut short, if it was.
    problem: Option<String>,
}

fn measure(env: &Env, agent: &str, variant: Variant, opts: &Options) -> io::Result<Outcome> {
    let sink = match variant {
        Variant::Riemann => Some(Sink::start(None)?),
        Variant::Null => None,
    };
    let listen = free_port()?;
    let tag = format!(
        "throughput-{}",
        if variant == Variant::Null { "null" } else { "riemann" }
    );
    let path = env.scratch.write(
        &format!("{agent}-{tag}.yml"),
        &config(listen, variant, sink.as_ref().map_or(0, Sink::port)),
    )?;
    let mut running: Running = match agent {
        "ductd" => env.programs.ductd(&path, &env.scratch, &tag)?,
        _ => match env.programs.duct(&path, &env.scratch, &tag) {
            Some(r) => r?,
            None => return Err(io::Error::other("Duct is not installed")),
        },
    };
    running.wait_for_port(listen, Duration::from_secs(60))?;
    let pid = running.pid();
    let sampler = Sampler::start(pid, Duration::from_millis(100));
    let flood = Flood::start(listen, opts.connections, opts.window)?;
    std::thread::sleep(Duration::from_secs_f64(opts.warmup));
    running.check_alive()?;
    sampler.reset();
    let r0 = procfs::read(pid).ok_or_else(|| io::Error::other("the agent vanished"))?;
    let (acked0, sink0) = (flood.counts().acked(), sink.as_ref().map(Sink::events));
    std::thread::sleep(Duration::from_secs_f64(opts.seconds));
    let r1 = procfs::read(pid).ok_or_else(|| io::Error::other("the agent vanished"))?;
    let (acked1, sink1) = (flood.counts().acked(), sink.as_ref().map(Sink::events));
    let wall = r1.at.duration_since(r0.at).as_secs_f64();
    let mut outcome = Outcome {
        ack_rate: (acked1 - acked0) as f64 / wall,
        sink_rate: sink0.zip(sink1).map(|(a, b)| (b - a) as f64 / wall),
        core_share: procfs::core_share(&r0, &r1),
        ..Outcome::default()
    };
    let counts = match flood.finish() {
        Ok(c) => c,
        Err(e) => {
            outcome.problem = Some(format!("senders: {e}"));
            return Ok(outcome);
        }
    };
    outcome.sent = counts.sent();
    outcome.acked = counts.acked();
    if let Some(sink) = &sink {
        let caught_up = sink.wait_for(outcome.sent, Duration::from_secs(60));
        // Anything late arrives within a flush or two.
        std::thread::sleep(Duration::from_millis(1500));
        outcome.received = Some(sink.events());
        if !caught_up {
            outcome.problem = Some("the sink had not received every event 60 s after the senders stopped".into());
        }
    }
    outcome.max_rss_mib = sampler.max_rss_mib();
    outcome.hwm_mib = procfs::read(pid).map_or(0.0, |r| r.hwm_kib as f64 / 1024.0);
    drop(sampler);
    running.stop(Duration::from_secs(10));
    Ok(outcome)
}

pub fn run(env: &Env, opts: &Options) -> Vec<Figure> {
    let mut agents = vec!["ductd"];
    if env.programs.duct_python.is_some() {
        agents.push("duct");
    }
    let mut figures = Vec::new();
    let variants = match opts.null_only {
        None => vec![Variant::Riemann, Variant::Null],
        Some(false) => vec![Variant::Riemann],
        Some(true) => vec![Variant::Null],
    };
    for variant in variants {
        let mut results: Vec<(&str, Outcome)> = Vec::new();
        for agent in &agents {
            eprintln!(
                "throughput ({variant:?}): {agent}, {} s after {} s warm-up",
                opts.seconds, opts.warmup
            );
            match measure(env, agent, variant, opts) {
                Ok(o) => results.push((agent, o)),
                Err(e) => eprintln!("throughput ({variant:?}): {agent} failed: {e}"),
            }
        }
        figures.extend(figures_of(variant, opts, &results));
    }
    figures
}

fn figures_of(variant: Variant, opts: &Options, results: &[(&str, Outcome)]) -> Vec<Figure> {
    let prefix = match variant {
        Variant::Riemann => "listener_to_riemann",
        Variant::Null => "listener_to_null",
    };
    let fig = |name: &str, unit: &'static str, better: Better, get: &dyn Fn(&Outcome) -> Option<f64>| {
        let mut f = Figure::new("throughput", format!("{prefix}.{name}"), unit, better)
            .note("seconds", opts.seconds)
            .note("connections", opts.connections as u64)
            .note("window_messages", opts.window as u64);
        for (agent, o) in results {
            f = f.value_opt(agent, get(o));
        }
        f
    };
    let mut out = Vec::new();
    if variant == Variant::Riemann {
        out.push(
            fig("sink_events_per_s", "events/s", Better::Higher, &|o| o.sink_rate).target(Target::AtLeast(1_000_000.0)),
        );
    }
    let acked = fig("acked_events_per_s", "events/s", Better::Higher, &|o| Some(o.ack_rate));
    out.push(match variant {
        Variant::Null => acked.target(Target::AtLeast(2_000_000.0)),
        Variant::Riemann => acked,
    });
    out.push(fig("cpu_cores", "cores", Better::Lower, &|o| Some(o.core_share)));
    out.push(fig("max_rss", "MiB", Better::Lower, &|o| Some(o.max_rss_mib)).target(Target::AtMost(64.0)));
    out.push(fig("vm_hwm", "MiB", Better::Lower, &|o| Some(o.hwm_mib)));
    if variant == Variant::Riemann {
        let mut lost = fig("events_lost", "events", Better::Lower, &|o| {
            o.received.map(|r| o.sent as f64 - r as f64)
        })
        .target(Target::AtMost(0.0));
        for (agent, o) in results {
            lost = lost
                .note(&format!("{agent}_sent"), o.sent)
                .note(&format!("{agent}_acked"), o.acked)
                .note(&format!("{agent}_received"), o.received.unwrap_or(0));
            if let Some(p) = &o.problem {
                lost = lost.note(&format!("{agent}_problem"), p.clone());
            }
        }
        out.push(lost);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_the_same_yaml_for_both_agents() {
        let c = config(5555, Variant::Riemann, 7000);
        assert!(c.contains("port: 5555"));
        assert!(c.contains("port: 7000"));
        assert!(c.contains(r#""bench\\.service\\..*": "> 99""#), "{c}");
        assert!(config(1, Variant::Null, 0).contains("duct.outputs.null.Null"));
    }
}
