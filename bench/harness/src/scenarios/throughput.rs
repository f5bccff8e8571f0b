//! Scenario 1, throughput: the harness's senders flood a `RiemannTCP`
//! listener with pre-encoded 100-event messages over several pipelined
//! connections. The events go through the router (with a warning/critical
//! trigger that fires on part of them) to one output: `RiemannTCP` and on
//! to the harness's acking sink (with the memory queue, with a disk
//! buffer, and with a disk buffer and `end_to_end` acknowledgements: ductd
//! only, Duct has neither), `Null`, or one of the push outputs and on to
//! its receiver — a stand-in that counts ([`crate::stand_ins`]) or, for
//! NATS, the real `nats-server` and a subscriber.
//!
//! After a warm-up the rates are taken over the measured window; then the
//! senders stop, every message is acknowledged, and the receiver must end
//! with exactly as many events as were sent.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::agents::{free_port, Running};
use crate::procfs::{self, Sampler};
use crate::report::{Better, Figure, Target};
use crate::senders::Flood;
use crate::sink::{Sink, SinkCounts};
use crate::stand_ins::{self, Api, NatsReceiver};

use super::Env;

#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: f64,
    pub warmup: f64,
    pub connections: usize,
    /// Unacknowledged messages per connection.
    pub window: usize,
    /// The variants to measure, in order.
    pub variants: Vec<Variant>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 10.0,
            warmup: 3.0,
            connections: 4,
            window: 128,
            variants: vec![
                Variant::Riemann,
                Variant::RiemannDisk,
                Variant::RiemannDiskEndToEnd,
                Variant::Null,
            ],
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
    Graphite,
    /// `duct.outputs.influxdb.InfluxDB`, the 1.x `/write` API.
    InfluxDb,
    InfluxDb3,
    OpenTsdb,
    Bosun,
    Elasticsearch,
    RemoteWrite,
    Nats,
}

impl Variant {
    /// Every output that pushes to a receiver, Riemann first (the reference).
    pub const PUSH: [Variant; 9] = [
        Variant::Riemann,
        Variant::Graphite,
        Variant::InfluxDb,
        Variant::InfluxDb3,
        Variant::OpenTsdb,
        Variant::Bosun,
        Variant::Elasticsearch,
        Variant::RemoteWrite,
        Variant::Nats,
    ];

    pub const NAMES: [&'static str; 12] = [
        "riemann",
        "riemann_disk",
        "riemann_disk_end_to_end",
        "null",
        "graphite",
        "influxdb",
        "influxdb3",
        "opentsdb",
        "bosun",
        "elasticsearch",
        "remote_write",
        "nats",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Riemann => "riemann",
            Variant::RiemannDisk => "riemann_disk",
            Variant::RiemannDiskEndToEnd => "riemann_disk_end_to_end",
            Variant::Null => "null",
            Variant::Graphite => "graphite",
            Variant::InfluxDb => "influxdb",
            Variant::InfluxDb3 => "influxdb3",
            Variant::OpenTsdb => "opentsdb",
            Variant::Bosun => "bosun",
            Variant::Elasticsearch => "elasticsearch",
            Variant::RemoteWrite => "remote_write",
            Variant::Nats => "nats",
        }
    }

    /// `riemann`, `null`, …, or `outputs` for [`Variant::PUSH`].
    pub fn parse_list(text: &str) -> Result<Vec<Variant>, String> {
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim) {
            if name == "outputs" {
                out.extend(Variant::PUSH);
                continue;
            }
            let all = [Variant::Null, Variant::RiemannDisk, Variant::RiemannDiskEndToEnd]
                .into_iter()
                .chain(Variant::PUSH);
            match all.into_iter().find(|v| v.name() == name) {
                Some(v) => out.push(v),
                None => return Err(format!("`{name}` is not one of {}, outputs", Variant::NAMES.join(", "))),
            }
        }
        Ok(out)
    }

    /// Duct 2.2.1 has this output (it has no InfluxDB 1.x/2.x output, no
    /// remote write and no disk buffer).
    fn in_duct(self) -> bool {
        !matches!(
            self,
            Variant::InfluxDb | Variant::RemoteWrite | Variant::RiemannDisk | Variant::RiemannDiskEndToEnd
        )
    }

    fn disk(self) -> bool {
        matches!(self, Variant::RiemannDisk | Variant::RiemannDiskEndToEnd)
    }

    /// The stand-in receiver, for the outputs that have one.
    fn stand_in(self) -> Option<Api> {
        Some(match self {
            Variant::Graphite => Api::Graphite,
            Variant::InfluxDb | Variant::InfluxDb3 => Api::LineProtocol,
            Variant::OpenTsdb | Variant::Bosun => Api::OpenTsdb,
            Variant::Elasticsearch => Api::Elasticsearch,
            Variant::RemoteWrite => Api::RemoteWrite,
            Variant::Riemann | Variant::RiemannDisk | Variant::RiemannDiskEndToEnd | Variant::Null | Variant::Nats => {
                return None
            }
        })
    }

    /// The figure the issue sets for events/s at the receiver.
    fn receiver_target(self) -> Option<f64> {
        match self {
            Variant::Riemann => Some(1_000_000.0),
            Variant::Null | Variant::Nats => None,
            _ => Some(500_000.0),
        }
    }

    /// A request carries one batch (the HTTP outputs).
    fn is_http(self) -> bool {
        !matches!(
            self,
            Variant::Riemann
                | Variant::RiemannDisk
                | Variant::RiemannDiskEndToEnd
                | Variant::Null
                | Variant::Graphite
                | Variant::Nats
        )
    }
}

/// The `outputs:` entry for `variant`, its receiver on `port`. The
/// per-output `maxrate` defaults (100 events/s for Elasticsearch, OpenTSDB
/// and Bosun, 1,000 for InfluxDB3, Duct's) are lifted: the figure is what
/// the output can carry.
fn output_block(variant: Variant, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}");
    match variant {
        Variant::Riemann | Variant::RiemannDisk | Variant::RiemannDiskEndToEnd => {
            format!("duct.outputs.riemann.RiemannTCP\n    server: 127.0.0.1\n    port: {port}\n")
        }
        Variant::Null => "duct.outputs.null.Null\n".into(),
        Variant::Graphite => format!("duct.outputs.graphite.Graphite\n    server: 127.0.0.1\n    port: {port}\n"),
        Variant::InfluxDb => format!("duct.outputs.influxdb.InfluxDB\n    url: {url}\n    database: bench\n"),
        Variant::InfluxDb3 => {
            format!("duct.outputs.influxdb3.InfluxDB3\n    url: {url}\n    database: bench\n    maxrate: 0\n")
        }
        Variant::OpenTsdb => format!("duct.outputs.opentsdb.OpenTSDB\n    url: {url}\n    maxrate: 0\n"),
        Variant::Bosun => format!("duct.outputs.bosun.Bosun\n    url: {url}\n    maxrate: 0\n"),
        Variant::Elasticsearch => {
            format!("duct.outputs.elasticsearch.ElasticSearch\n    url: {url}\n    maxrate: 0\n")
        }
        Variant::RemoteWrite => format!("duct.outputs.prometheus.RemoteWrite\n    url: {url}/api/v1/write\n"),
        Variant::Nats => format!("duct.outputs.nats.Nats\n    servers: [\"nats://127.0.0.1:{port}\"]\n"),
    }
}

/// `buffer` is the disk buffer's directory, for the variants that have one.
fn config(listen: u16, variant: Variant, receiver: u16, buffer: &std::path::Path) -> String {
    let mut output = output_block(variant, receiver);
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
         outputs:\n\
         \x20 - output: {output}"
    )
}

/// Where the events end up, counted.
enum Receiver {
    Nothing,
    Sink(Sink),
    Nats(NatsReceiver),
}

impl Receiver {
    fn start(env: &Env, variant: Variant, tag: &str) -> io::Result<Receiver> {
        if let Some(api) = variant.stand_in() {
            return Ok(Receiver::Sink(stand_ins::start(api)?));
        }
        Ok(match variant {
            Variant::Riemann | Variant::RiemannDisk | Variant::RiemannDiskEndToEnd => {
                Receiver::Sink(Sink::start(None)?)
            }
            Variant::Nats => {
                let binary =
                    env.programs.nats_server.as_ref().ok_or_else(|| {
                        io::Error::other("nats-server is not installed (apt-get install nats-server)")
                    })?;
                Receiver::Nats(NatsReceiver::start(binary, &env.scratch, tag)?)
            }
            _ => Receiver::Nothing,
        })
    }

    fn port(&self) -> u16 {
        match self {
            Receiver::Nothing => 0,
            Receiver::Sink(s) => s.port(),
            Receiver::Nats(n) => n.port,
        }
    }

    fn counts(&self) -> Option<&Arc<SinkCounts>> {
        match self {
            Receiver::Nothing => None,
            Receiver::Sink(s) => Some(s.counts()),
            Receiver::Nats(n) => Some(n.counts()),
        }
    }
}

/// What one agent did in one variant.
#[derive(Debug, Clone, Default)]
struct Outcome {
    sink_rate: Option<f64>,
    ack_rate: f64,
    core_share: f64,
    max_rss_mib: f64,
    max_anon_mib: f64,
    hwm_mib: f64,
    sent: u64,
    acked: u64,
    /// Events the receiver got in all (every variant but Null).
    received: Option<u64>,
    /// Requests (HTTP), connections (Graphite) or messages the receiver got.
    requests: Option<u64>,
    /// What the receiver could not read.
    malformed: u64,
    /// Why the run was cut short, if it was.
    problem: Option<String>,
}

fn measure(env: &Env, agent: &str, variant: Variant, opts: &Options) -> io::Result<Outcome> {
    let tag = format!("throughput-{}", variant.name());
    let receiver = Receiver::start(env, variant, &format!("{agent}-{tag}"))?;
    let counts = receiver.counts();
    let listen = free_port()?;
    let buffer = env.scratch.path(&format!("{agent}-{tag}-buffer"));
    let path = env.scratch.write(
        &format!("{agent}-{tag}.yml"),
        &config(listen, variant, receiver.port(), &buffer),
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
    let (acked0, sink0) = (flood.counts().acked(), counts.map(|c| c.events()));
    std::thread::sleep(Duration::from_secs_f64(opts.seconds));
    let r1 = procfs::read(pid).ok_or_else(|| io::Error::other("the agent vanished"))?;
    let (acked1, sink1) = (flood.counts().acked(), counts.map(|c| c.events()));
    let wall = r1.at.duration_since(r0.at).as_secs_f64();
    let mut outcome = Outcome {
        ack_rate: (acked1 - acked0) as f64 / wall,
        sink_rate: sink0.zip(sink1).map(|(a, b)| (b - a) as f64 / wall),
        core_share: procfs::core_share(&r0, &r1),
        ..Outcome::default()
    };
    let finished = flood.finish();
    outcome.max_rss_mib = sampler.max_rss_mib();
    outcome.max_anon_mib = sampler.max_anon_mib();
    let sent_counts = match finished {
        Ok(c) => c,
        Err(e) => {
            outcome.problem = Some(format!("senders: {e}"));
            return Ok(outcome);
        }
    };
    outcome.sent = sent_counts.sent();
    outcome.acked = sent_counts.acked();
    if let Some(counts) = counts {
        let caught_up = counts.wait_for(outcome.sent, Duration::from_secs(60));
        // Anything late arrives within a flush or two.
        std::thread::sleep(Duration::from_millis(1500));
        outcome.received = Some(counts.events());
        outcome.requests = Some(counts.messages.load(std::sync::atomic::Ordering::Relaxed));
        outcome.malformed = counts.malformed.load(std::sync::atomic::Ordering::Relaxed);
        if !caught_up {
            outcome.problem = Some("the receiver had not got every event 60 s after the senders stopped".into());
        }
    }
    outcome.hwm_mib = procfs::read(pid).map_or(0.0, |r| r.hwm_kib as f64 / 1024.0);
    if let Err(e) = running.check_alive() {
        outcome.problem = Some(e.to_string());
    }
    drop(sampler);
    running.stop(Duration::from_secs(10));
    Ok(outcome)
}

pub fn run(env: &Env, opts: &Options) -> Vec<Figure> {
    let mut figures = Vec::new();
    for &variant in &opts.variants {
        let mut agents = vec!["ductd"];
        if env.programs.duct_python.is_some() && variant.in_duct() {
            agents.push("duct");
        }
        let mut results: Vec<(&str, Outcome)> = Vec::new();
        for agent in &agents {
            eprintln!(
                "throughput ({}): {agent}, {} s after {} s warm-up",
                variant.name(),
                opts.seconds,
                opts.warmup
            );
            match measure(env, agent, variant, opts) {
                Ok(o) => results.push((agent, o)),
                Err(e) => eprintln!("throughput ({}): {agent} failed: {e}", variant.name()),
            }
        }
        figures.extend(figures_of(variant, opts, &results));
    }
    figures
}

fn figures_of(variant: Variant, opts: &Options, results: &[(&str, Outcome)]) -> Vec<Figure> {
    let prefix = format!("listener_to_{}", variant.name());
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
    if variant != Variant::Null {
        let at_receiver = fig("sink_events_per_s", "events/s", Better::Higher, &|o| o.sink_rate);
        out.push(match variant.receiver_target() {
            Some(t) => at_receiver.target(Target::AtLeast(t)),
            None => at_receiver,
        });
    }
    let acked = fig("acked_events_per_s", "events/s", Better::Higher, &|o| Some(o.ack_rate));
    out.push(match variant {
        Variant::Null => acked.target(Target::AtLeast(2_000_000.0)),
        _ => acked,
    });
    out.push(fig("cpu_cores", "cores", Better::Lower, &|o| Some(o.core_share)));
    out.push(fig("max_rss", "MiB", Better::Lower, &|o| Some(o.max_rss_mib)).target(Target::AtMost(64.0)));
    out.push(fig("max_rss_anon", "MiB", Better::Lower, &|o| Some(o.max_anon_mib)));
    out.push(fig("vm_hwm", "MiB", Better::Lower, &|o| Some(o.hwm_mib)));
    if variant.is_http() {
        out.push(fig("events_per_request", "events", Better::Higher, &|o| {
            o.received
                .zip(o.requests)
                .filter(|(_, r)| *r > 0)
                .map(|(e, r)| e as f64 / r as f64)
        }));
    }
    if variant != Variant::Null {
        let mut lost = fig("events_lost", "events", Better::Lower, &|o| {
            o.received.map(|r| o.sent as f64 - r as f64)
        })
        .target(Target::AtMost(0.0));
        for (agent, o) in results {
            lost = lost
                .note(&format!("{agent}_sent"), o.sent)
                .note(&format!("{agent}_acked"), o.acked)
                .note(&format!("{agent}_received"), o.received.unwrap_or(0));
            if o.malformed > 0 {
                lost = lost.note(&format!("{agent}_malformed"), o.malformed);
            }
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

    #[test]
    fn every_variant_is_valid_yaml_naming_its_output() {
        let all = [Variant::Null, Variant::RiemannDisk, Variant::RiemannDiskEndToEnd];
        for v in all.into_iter().chain(Variant::PUSH) {
            let c = config(5555, v, 7000, std::path::Path::new("/tmp/b"));
            assert!(c.ends_with('\n'), "{c}");
            assert!(c.contains("  - output: duct.outputs."), "{c}");
            assert_eq!(Variant::parse_list(v.name()), Ok(vec![v]));
        }
        assert_eq!(Variant::parse_list("outputs").unwrap().len(), 9);
        assert!(Variant::parse_list("kafka").is_err());
    }
}
