//! Scenario 3, scale: 10,000 sources in one process. `Function` sources at
//! 1 s (the default stagger), and, when this ductd has
//! `duct.sources.network.TCP`, TCP checks at 10 s against a local listener.
//! Every event goes to the harness's sink, which notes each source's tick
//! times (the events' own timestamps).
//!
//! Figures: time from spawning the process until every source has ticked
//! once; RSS; tick lateness. Lateness is read two ways: ductd's own
//! histogram (time between a tick's due moment and its start, reported by
//! the `duct.sources.Duct` source), and, for every agent alike, estimated
//! from event times: for a source ticking every `I`, tick `k` at `t_k` is
//! late by `(t_k − k·I) − min_j (t_j − j·I)`, its delay beyond its
//! earliest-aligned tick.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duct_proto::Message;

use crate::agents::Running;
use crate::procfs::Sampler;
use crate::report::{percentile, Better, Figure, Target};
use crate::sink::{event_seconds, Inspect, Sink};

use super::Env;

#[derive(Debug, Clone)]
pub struct Options {
    pub sources: usize,
    /// How long each agent runs.
    pub seconds: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sources: 10_000,
            seconds: 20.0,
        }
    }
}

/// The kind of source a scale run is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Function,
    TcpCheck,
}

impl Kind {
    fn interval(self) -> f64 {
        match self {
            Kind::Function => 1.0,
            Kind::TcpCheck => 10.0,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Function => "function_1s",
            Kind::TcpCheck => "tcp_check_10s",
        }
    }
}

/// The agent's own source reports under this service.
const AGENT_SERVICE: &str = "agent";

fn config(kind: Kind, n: usize, sink: u16, target: u16, with_agent_source: bool) -> String {
    let mut c = format!(
        "interval: {}\noutputs:\n  - output: duct.outputs.riemann.RiemannTCP\n    server: 127.0.0.1\n    port: {sink}\nsources:\n",
        kind.interval()
    );
    if with_agent_source {
        c.push_str(&format!(
            "  - service: {AGENT_SERVICE}\n    source: duct.sources.Duct\n    interval: 1.0\n"
        ));
    }
    for i in 0..n {
        match kind {
            Kind::Function => c.push_str(&format!(
                "  - service: fn.{i}\n    source: duct.sources.generator.Function\n    function: sin(x)\n"
            )),
            Kind::TcpCheck => c.push_str(&format!(
                "  - service: tcp.{i}\n    source: duct.sources.network.TCP\n    host: 127.0.0.1\n    port: {target}\n"
            )),
        }
    }
    c
}

/// What the sink learnt: each source's tick times, and the agent's own
/// lateness figures (last value seen).
#[derive(Debug, Default)]
struct Seen {
    ticks: HashMap<String, Vec<f64>>,
    agent: HashMap<String, f64>,
}

fn inspector(seen: Arc<Mutex<Seen>>, prefix: &'static str) -> Inspect {
    Arc::new(move |body, _| {
        let Ok(msg) = duct_proto::Msg::decode(body) else {
            return;
        };
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for ev in msg.events {
            let time = event_seconds(&ev);
            let Some(service) = ev.service else { continue };
            if let Some(figure) = service.strip_prefix("agent.tick lateness ") {
                let v = ev.metric_d.or(ev.metric_f.map(f64::from)).unwrap_or(f64::NAN);
                seen.agent.insert(figure.to_string(), v);
            } else if service.starts_with(prefix) {
                seen.ticks.entry(service).or_default().push(time);
            }
        }
    })
}

/// Lateness estimates (ms) from each source's tick times. Sources that
/// ticked once say nothing, and times in whole seconds (Duct 2.2.1 sends
/// no `time_micros`) are too coarse: both are left out.
pub(crate) fn lateness_ms(ticks: &HashMap<String, Vec<f64>>, interval: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for times in ticks.values() {
        if times.len() < 2 || times.iter().all(|t| t.fract() == 0.0) {
            continue;
        }
        let t0 = times[0];
        let aligned: Vec<f64> = times
            .iter()
            .map(|t| {
                let k = ((t - t0) / interval).round();
                t - k * interval
            })
            .collect();
        let earliest = aligned.iter().copied().fold(f64::INFINITY, f64::min);
        out.extend(aligned.iter().map(|a| (a - earliest) * 1000.0));
    }
    out.sort_by(f64::total_cmp);
    out
}

/// A listener that accepts and closes connections: the TCP checks' target.
struct ClosingListener {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClosingListener {
    fn start() -> io::Result<ClosingListener> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => drop(s),
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Ok(ClosingListener {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ClosingListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Outcome {
    /// Sources that ticked at least once, and when the last of them first
    /// did (seconds after the process was spawned).
    ticked: usize,
    all_ticked_after_s: Option<f64>,
    max_rss_mib: f64,
    estimated: Vec<f64>,
    /// ductd's own histogram: p50, p99, max (ms).
    internal: HashMap<String, f64>,
}

fn measure(env: &Env, agent: &str, kind: Kind, opts: &Options) -> io::Result<Outcome> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let prefix = match kind {
        Kind::Function => "fn.",
        Kind::TcpCheck => "tcp.",
    };
    let sink = Sink::start(Some(inspector(seen.clone(), prefix)))?;
    let target = ClosingListener::start()?;
    let is_ductd = agent == "ductd";
    let text = config(kind, opts.sources, sink.port(), target.port, is_ductd);
    let path = env
        .scratch
        .write(&format!("{agent}-scale-{}.yml", kind.label()), &text)?;
    let tag = format!("scale-{}", kind.label());
    let mut running: Running = if is_ductd {
        env.programs.ductd(&path, &env.scratch, &tag)?
    } else {
        match env.programs.duct(&path, &env.scratch, &tag) {
            Some(r) => r?,
            None => return Err(io::Error::other("Duct is not installed")),
        }
    };
    let sampler = Sampler::start(running.pid(), Duration::from_millis(100));
    let end = running.spawned + Duration::from_secs_f64(opts.seconds);
    while std::time::Instant::now() < end {
        running.check_alive()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let max_rss_mib = sampler.max_rss_mib();
    drop(sampler);
    running.stop(Duration::from_secs(15));
    // What was flushed at the stop has arrived by now.
    std::thread::sleep(Duration::from_millis(500));
    drop(sink);
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let firsts: Vec<f64> = seen
        .ticks
        .values()
        .filter_map(|t| t.iter().copied().reduce(f64::min))
        .collect();
    let ticked = firsts.len();
    let all_ticked_after_s =
        (ticked == opts.sources).then(|| firsts.iter().copied().fold(f64::MIN, f64::max) - running.spawned_at);
    Ok(Outcome {
        ticked,
        all_ticked_after_s,
        max_rss_mib,
        estimated: lateness_ms(&seen.ticks, kind.interval()),
        internal: seen.agent,
    })
}

pub fn run(env: &Env, opts: &Options, tcp_available: bool) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut kinds = vec![Kind::Function];
    if tcp_available {
        kinds.push(Kind::TcpCheck);
    } else {
        eprintln!("scale: this ductd has no duct.sources.network.TCP; measuring Function sources only");
    }
    for kind in kinds {
        let mut agents = vec!["ductd"];
        // Duct 2.2.1 has no TCP check source.
        if env.programs.duct_python.is_some() && kind == Kind::Function {
            agents.push("duct");
        }
        let mut results = Vec::new();
        for agent in agents {
            eprintln!(
                "scale ({}): {agent}, {} sources, {} s",
                kind.label(),
                opts.sources,
                opts.seconds
            );
            match measure(env, agent, kind, opts) {
                Ok(o) => results.push((agent, o)),
                Err(e) => eprintln!("scale ({}): {agent} failed: {e}", kind.label()),
            }
        }
        figures.extend(figures_of(kind, opts, &results));
    }
    figures
}

fn figures_of(kind: Kind, opts: &Options, results: &[(&str, Outcome)]) -> Vec<Figure> {
    let name = |n: &str| format!("{}.{n}", kind.label());
    let fig = |n: &str, unit: &'static str, get: &dyn Fn(&Outcome) -> Option<f64>| {
        let mut f = Figure::new("scale", name(n), unit, Better::Lower)
            .note("sources", opts.sources as u64)
            .note("seconds", opts.seconds);
        for (agent, o) in results {
            f = f.value_opt(agent, get(o));
        }
        f
    };
    let mut all = fig("all_ticked_after", "s", &|o| o.all_ticked_after_s);
    if kind == Kind::Function {
        all = all.target(Target::AtMost(1.0));
    }
    let mut ticked = fig("sources_ticked", "sources", &|o| Some(o.ticked as f64));
    ticked.better = Better::Higher;
    let mut out = vec![
        all,
        ticked,
        fig("max_rss", "MiB", &|o| Some(o.max_rss_mib)).target(Target::AtMost(64.0)),
    ];
    for (label, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
        let mut f = fig(&format!("lateness_from_event_times_{label}"), "ms", &|o| {
            percentile(&o.estimated, p)
        });
        if label == "p99" {
            f = f.target(Target::AtMost(10.0));
        }
        out.push(f);
        let mut f = fig(&format!("lateness_ductd_histogram_{label}"), "ms", &|o| {
            o.internal.get(label).copied()
        });
        if label == "p99" {
            f = f.target(Target::AtMost(10.0));
        }
        out.push(f.note("how", "ductd's own tick-lateness histogram (upper bucket bounds)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_measured_from_the_earliest_aligned_tick() {
        let mut ticks = HashMap::new();
        ticks.insert("a".to_string(), vec![10.005, 11.0, 12.002, 14.0]);
        ticks.insert("once".to_string(), vec![3.5]);
        ticks.insert("whole seconds".to_string(), vec![3.0, 4.0]);
        let l = lateness_ms(&ticks, 1.0);
        let rounded: Vec<i64> = l.iter().map(|v| v.round() as i64).collect();
        assert_eq!(rounded, [0, 0, 2, 5]);
    }

    #[test]
    fn configs_list_every_source() {
        let c = config(Kind::Function, 3, 1, 2, true);
        assert_eq!(c.matches("duct.sources.generator.Function").count(), 3);
        assert!(c.contains("duct.sources.Duct"));
        let c = config(Kind::TcpCheck, 2, 1, 9, false);
        assert_eq!(c.matches("port: 9").count(), 2);
        assert!(c.starts_with("interval: 10"));
    }
}
