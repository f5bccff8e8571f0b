//! Scenario 1, throughput: the harness's senders flood a `RiemannTCP`
//! listener with pre-encoded 100-event messages over several pipelined
//! connections. The events go through the router (with a warning/critical
//! trigger that fires on part of them) to a `RiemannTCP` output and on to
//! the harness's acking sink: with the memory queue, with a disk buffer,
//! and with a disk buffer and `end_to_end` acknowledgements (ductd only:
//! Duct has neither); or to `Null`.
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
    /// Measure this variant only; all of them when `None`.
    pub only: Option<Variant>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 10.0,
            warmup: 3.0,
            connections: 4,
            window: 128,
            only: None,
        }
    }
}

/// Where the listener's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Riemann,
    /// RiemannTCP with `buffer: {type: disk}`.
    RiemannDisk,
    /// The same, and the listener acknowledges only what is on disk.
    RiemannDiskEndToEnd,
    Null,
}

impl Variant {
    /// As `--only` names it.
    pub fn parse(name: &str) -> Option<Variant> {
        match name {
            "riemann" => Some(Variant::Riemann),
            "disk" => Some(Variant::RiemannDisk),
            "disk-e2e" => Some(Variant::RiemannDiskEndToEnd),
            "null" => Some(Variant::Null),
            _ => None,
        }
    }

    const ALL: [Variant; 4] = [
        Variant::Riemann,
        Variant::RiemannDisk,
        Variant::RiemannDiskEndToEnd,
        Variant::Null,
    ];

    fn has_sink(self) -> bool {
        self != Variant::Null
    }

    fn disk(self) -> bool {
        matches!(self, Variant::RiemannDisk | Variant::RiemannDiskEndToEnd)
    }

    fn tag(self) -> &'static str {
        match self {
            Variant::Riemann => "riemann",
            Variant::RiemannDisk => "riemann_disk",
            Variant::RiemannDiskEndToEnd => "riemann_disk_end_to_end",
            Variant::Null => "null",
        }
    }
}

/// `buffer` is the disk buffer's directory, for the variants that have one.
fn config(listen: u16, variant: Variant, sink: u16, buffer: &std::path::Path) -> String {
    let mut output = match variant {
        Variant::Null => "  - output: duct.outputs.null.Null\n".to_string(),
        _ => format!("  - output: duct.outputs.riemann.RiemannTCP\n    server: 127.0.0.1\n    port: {sink}\n"),
    };
    if variant.disk() {
        output.push_str(&format!(
            "    buffer: {{type: disk, path: \"{}\", max_bytes: 1073741824}}\n",
            buffer.display()
        ));
    }
    let end_to_end = if variant == Variant::RiemannDiskEndToEnd {
        "\x20   end_to_end: true\n"
    } else {
        ""
    };
    format!(
        "interval: 1.0\n\
         sources:\n\
         \x20 - service: bench\n\
         \x20   source: duct.sources.riemann.RiemannTCP\n\
         \x20   port: {listen}\n\
         \x20   bind: 127.0.0.1\n\
         {end_to_end}\
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
    let sink = if variant.has_sink() {
        Some(Sink::start(None)?)
    } else {
        None
    };
    let listen = free_port()?;
    let tag = format!("throughput-{}", variant.tag());
    let buffer = env.scratch.path(&format!("{agent}-{tag}-buffer"));
    let path = env.scratch.write(
        &format!("{agent}-{tag}.yml"),
        &config(listen, variant, sink.as_ref().map_or(0, Sink::port), &buffer),
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
    let variants = match opts.only {
        None => Variant::ALL.to_vec(),
        Some(v) => vec![v],
    };
    for variant in variants {
        let mut results: Vec<(&str, Outcome)> = Vec::new();
        // Duct has no disk buffer.
        for agent in agents.iter().filter(|a| !variant.disk() || **a == "ductd") {
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
    let prefix = format!("listener_to_{}", variant.tag());
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
    if variant.has_sink() {
        let at_sink = fig("sink_events_per_s", "events/s", Better::Higher, &|o| o.sink_rate);
        out.push(match variant {
            Variant::Riemann => at_sink.target(Target::AtLeast(1_000_000.0)),
            _ => at_sink.target(Target::AtLeast(500_000.0)),
        });
    }
    let acked = fig("acked_events_per_s", "events/s", Better::Higher, &|o| Some(o.ack_rate));
    out.push(match variant {
        Variant::Null => acked.target(Target::AtLeast(2_000_000.0)),
        _ => acked,
    });
    out.push(fig("cpu_cores", "cores", Better::Lower, &|o| Some(o.core_share)));
    out.push(fig("max_rss", "MiB", Better::Lower, &|o| Some(o.max_rss_mib)).target(Target::AtMost(64.0)));
    out.push(fig("vm_hwm", "MiB", Better::Lower, &|o| Some(o.hwm_mib)));
    if variant.has_sink() {
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
        let dir = std::path::Path::new("/tmp/b");
        let c = config(5555, Variant::Riemann, 7000, dir);
        assert!(c.contains("port: 5555"));
        assert!(c.contains("port: 7000"));
        assert!(c.contains(r#""bench\\.service\\..*": "> 99""#), "{c}");
        assert!(!c.contains("buffer") && !c.contains("end_to_end"), "{c}");
        assert!(config(1, Variant::Null, 0, dir).contains("duct.outputs.null.Null"));
        let disk = config(1, Variant::RiemannDiskEndToEnd, 2, dir);
        assert!(disk.contains("buffer: {type: disk, path: \"/tmp/b\""), "{disk}");
        assert!(disk.contains("    end_to_end: true\n    warning:"), "{disk}");
    }
}
