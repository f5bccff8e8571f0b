//! Scenario 2, footprint: what an agent costs on every host. ductd runs
//! its embedded default configuration's six host sources at 1 s, sending
//! to the harness's sink over Riemann TCP; Duct 2.2.1 runs the same YAML;
//! collectd runs the matching plugins at `Interval 1` with `write_riemann`
//! to a sink of its own; node_exporter runs the matching collectors and is
//! scraped every second. All of them run side by side for the same window
//! after a warm-up. Figures: VmRSS at the end with its RssAnon and RssFile
//! parts, VmHWM, CPU as a share of one core (utime + stime over wall
//! time), and CPU per emitted value.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::agents::{free_port, scrape_metrics, Running};
use crate::procfs::{self, Reading};
use crate::report::{Better, Figure, Target};
use crate::sink::Sink;

use super::Env;

/// ductd's embedded default configuration: the six host sources.
const DEFAULT_CONFIG: &str = include_str!("../../../../config/default.yml");

#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: f64,
    pub warmup: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 60.0,
            warmup: 5.0,
        }
    }
}

/// The default configuration with its output pointed at the sink.
pub fn host_config(sink: u16) -> String {
    let sources = DEFAULT_CONFIG.split("\noutputs:").next().unwrap_or(DEFAULT_CONFIG);
    format!(
        "{sources}\noutputs:\n  - output: duct.outputs.riemann.RiemannTCP\n    server: 127.0.0.1\n    port: {sink}\n"
    )
}

/// collectd's plugins matching the six host sources, every second, to
/// the sink (`Batch false`: collectd 5.12's batching writer crashes with
/// Debian's libriemann-client, see PEERS.md).
pub fn collectd_config(sink: u16, scratch_dir: &str) -> String {
    format!(
        r#"Hostname "bench-host"
FQDNLookup false
BaseDir "{scratch_dir}"
PIDFile "{scratch_dir}/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
Interval 1
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin interface
LoadPlugin disk
LoadPlugin df
LoadPlugin write_riemann
<Plugin write_riemann>
  <Node "sink">
    Host "127.0.0.1"
    Port "{sink}"
    Protocol TCP
    Batch false
  </Node>
</Plugin>
"#
    )
}

/// Scrapes node_exporter every second, counting the samples it serves.
struct Scraper {
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn scrape(port: u16) -> io::Result<u64> {
    let metrics = scrape_metrics(port)?;
    Ok(metrics.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count() as u64)
}

impl Scraper {
    fn start(port: u16) -> Scraper {
        let samples = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = scrape(port) {
                        samples.fetch_add(n, Ordering::Relaxed);
                    }
                    next += Duration::from_secs(1);
                    std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
                }
            })
        };
        Scraper {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How values are counted for one agent.
enum Counter {
    Sink(Sink),
    Scrape(Scraper),
}

impl Counter {
    fn values(&self) -> u64 {
        match self {
            Counter::Sink(s) => s.events(),
            Counter::Scrape(s) => s.samples(),
        }
    }
}

struct Subject {
    running: Running,
    counter: Counter,
    start: Option<(Reading, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Cost {
    rss_mib: f64,
    rss_anon_mib: f64,
    rss_file_mib: f64,
    hwm_mib: f64,
    core_share: f64,
    values_per_s: f64,
    cpu_us_per_value: f64,
    threads: u64,
}

fn start_all(env: &Env) -> io::Result<Vec<Subject>> {
    let mut subjects = Vec::new();
    let sink = Sink::start(None)?;
    let path = env.scratch.write("footprint.yml", &host_config(sink.port()))?;
    subjects.push(Subject {
        running: env.programs.ductd(&path, &env.scratch, "footprint")?,
        counter: Counter::Sink(sink),
        start: None,
    });
    let sink = Sink::start(None)?;
    let path = env.scratch.write("duct-footprint.yml", &host_config(sink.port()))?;
    if let Some(r) = env.programs.duct(&path, &env.scratch, "footprint") {
        subjects.push(Subject {
            running: r?,
            counter: Counter::Sink(sink),
            start: None,
        });
    }
    let sink = Sink::start(None)?;
    let dir = env.scratch.path("collectd");
    std::fs::create_dir_all(&dir)?;
    let path = env.scratch.write(
        "collectd.conf",
        &collectd_config(sink.port(), &dir.display().to_string()),
    )?;
    if let Some(r) = env.programs.collectd(&path, &env.scratch) {
        subjects.push(Subject {
            running: r?,
            counter: Counter::Sink(sink),
            start: None,
        });
    }
    let port = free_port()?;
    if let Some(r) = env.programs.node_exporter(port, &env.scratch) {
        let mut running = r?;
        running.wait_for_port(port, Duration::from_secs(30))?;
        subjects.push(Subject {
            running,
            counter: Counter::Scrape(Scraper::start(port)),
            start: None,
        });
    }
    Ok(subjects)
}

pub fn run(env: &Env, opts: &Options) -> io::Result<Vec<Figure>> {
    let mut subjects = start_all(env)?;
    let names: Vec<&str> = subjects.iter().map(|s| s.running.name.as_str()).collect();
    eprintln!(
        "footprint: {} side by side, {} s after {} s warm-up",
        names.join(", "),
        opts.seconds,
        opts.warmup
    );
    std::thread::sleep(Duration::from_secs_f64(opts.warmup));
    for s in &mut subjects {
        s.running.check_alive()?;
        s.start = procfs::read(s.running.pid()).map(|r| (r, s.counter.values()));
    }
    std::thread::sleep(Duration::from_secs_f64(opts.seconds));
    let mut costs = Vec::new();
    for s in &mut subjects {
        s.running.check_alive()?;
        let (Some((r0, v0)), Some(r1)) = (s.start, procfs::read(s.running.pid())) else {
            continue;
        };
        let v1 = s.counter.values();
        let wall = r1.at.duration_since(r0.at).as_secs_f64();
        let values = v1.saturating_sub(v0);
        costs.push((
            s.running.name.clone(),
            Cost {
                rss_mib: r1.rss_kib as f64 / 1024.0,
                rss_anon_mib: r1.anon_kib as f64 / 1024.0,
                rss_file_mib: r1.file_kib as f64 / 1024.0,
                hwm_mib: r1.hwm_kib as f64 / 1024.0,
                core_share: procfs::core_share(&r0, &r1),
                values_per_s: values as f64 / wall,
                cpu_us_per_value: if values > 0 {
                    (r1.cpu_s - r0.cpu_s) * 1e6 / values as f64
                } else {
                    f64::NAN
                },
                threads: r1.threads,
            },
        ));
    }
    for s in &mut subjects {
        s.running.stop(Duration::from_secs(10));
    }
    Ok(figures(&costs, opts))
}

fn figures(costs: &[(String, Cost)], opts: &Options) -> Vec<Figure> {
    let collectd = costs.iter().find(|(n, _)| n == "collectd").map(|(_, c)| *c);
    let fig = |name: &str, unit: &'static str, get: &dyn Fn(&Cost) -> f64| {
        let mut f = Figure::new("footprint", name, unit, Better::Lower).note("seconds", opts.seconds);
        for (agent, c) in costs {
            f = f.value(agent, get(c));
        }
        f
    };
    let mut rss = fig("vm_rss", "MiB", &|c| c.rss_mib);
    // Below collectd's, and at most 5 MiB.
    let rss_bound = collectd.map_or(5.0, |c| c.rss_mib.min(5.0));
    rss = rss.target(Target::AtMost(rss_bound));
    let mut cpu_per_value = fig("cpu_per_value", "us", &|c| c.cpu_us_per_value);
    if let Some(c) = collectd {
        cpu_per_value = cpu_per_value.target(Target::AtMost(c.cpu_us_per_value / 2.0));
    }
    // What each agent emits: the divisor of the CPU per value.
    let mut values = fig("values_per_s", "values/s", &|c| c.values_per_s);
    values.better = Better::Higher;
    vec![
        rss,
        fig("rss_anon", "MiB", &|c| c.rss_anon_mib),
        fig("rss_file", "MiB", &|c| c.rss_file_mib),
        fig("vm_hwm", "MiB", &|c| c.hwm_mib),
        fig("cpu_share_of_a_core", "%", &|c| c.core_share * 100.0).target(Target::AtMost(0.1)),
        values,
        cpu_per_value,
        fig("threads", "threads", &|c| c.threads as f64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_config_keeps_the_six_sources_and_points_at_the_sink() {
        let c = host_config(7777);
        assert_eq!(c.matches("source: duct.sources.linux.basic.").count(), 6, "{c}");
        assert!(c.contains("port: 7777"));
        assert!(!c.contains("Logger"));
    }
}
