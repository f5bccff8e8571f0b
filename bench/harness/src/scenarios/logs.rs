//! Scenario 6, access logs (issue 18): ductd's `NginxLogMetrics` beside
//! Duct 2.2.1's `NginxLogMetrics` and mtail with an equivalent program, on
//! the same files.
//!
//! - **bulk**: a pre-written access log (1 GiB by default, realistic
//!   `combined` lines from [`AccessLog`], written into the scratch directory
//!   and deleted afterwards) read from its start (`history: true`). Lines
//!   parsed and aggregated per second of CPU and of wall time, taken between
//!   the agent's first saved position and its last (so that start-up, a
//!   second of Python imports for Duct, is left out). mtail reads the file
//!   with `--one_shot` and its whole run counts. Duct is given a time
//!   budget: at about 60,000 lines/s it would need minutes for the file.
//! - **live**: a log written at 10,000 lines/s (100 lines every 10 ms,
//!   stamped now) followed by the three at once; CPU per line written over
//!   the measured window.
//!
//! Every agent's memory is reported as VmRSS and RssAnon together.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access_log::AccessLog;
use crate::agents::{free_port, scrape_metrics, wall_now, Running};
use crate::procfs::{self, Reading};
use crate::report::{Better, Figure, Target};

use super::Env;

/// The bulk log's lines are 1,000 a second from this moment (2020-12-01).
const BULK_EPOCH: i64 = 1_606_780_800;

/// Where Duct's log follower keeps its positions (not configurable).
const DUCT_POSITIONS: &str = "/var/lib/duct";

/// mtail's equivalent of NginxLogMetrics: requests and bytes in total and
/// by status, client, user agent and path (without windows: mtail's
/// counters only grow).
const MTAIL_PROGRAM: &str = r#"counter total_requests
counter total_rbytes
counter status_requests by status
counter status_rbytes by status
counter client_requests by client
counter client_rbytes by client
counter user_agent_requests by agent
counter user_agent_rbytes by agent
counter request_requests by path
counter request_rbytes by path

/^(?P<client>\S+) - .+ \[(?P<time>[^\]]{26})\] "(?P<method>[A-Z]+) (?P<path>[^ ?"]+)[^"]*" (?P<status>\d{3}) (?P<bytes>\d+) "[^"]*" "(?P<agent>[^"]*)"$/ {
  total_requests++
  total_rbytes += $bytes
  status_requests[$status]++
  status_rbytes[$status] += $bytes
  client_requests[$client]++
  client_rbytes[$client] += $bytes
  user_agent_requests[$agent]++
  user_agent_rbytes[$agent] += $bytes
  request_requests[$path]++
  request_rbytes[$path] += $bytes
}
"#;

#[derive(Debug, Clone)]
pub struct Options {
    /// Size of the bulk log in GiB.
    pub gib: f64,
    /// Longest time Duct is given on the bulk log.
    pub duct_seconds: f64,
    /// Lines per second written to the live log.
    pub rate: f64,
    pub seconds: f64,
    pub warmup: f64,
    /// `bulk` or `live` only.
    pub only: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gib: 1.0,
            duct_seconds: 60.0,
            rate: 10_000.0,
            seconds: 30.0,
            warmup: 5.0,
            only: None,
        }
    }
}

pub fn run(env: &Env, opts: &Options) -> io::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if opts.only.as_deref() != Some("live") {
        figures.extend(bulk(env, opts)?);
    }
    if opts.only.as_deref() != Some("bulk") {
        figures.extend(live(env, opts)?);
    }
    Ok(figures)
}

fn ductd_config(log: &Path, state: &Path, history: bool, max_lines: usize, interval: f64) -> String {
    format!(
        "sources:\n\
         \x20 - service: nginx\n\
         \x20   source: duct.sources.nginx.NginxLogMetrics\n\
         \x20   file: {}\n\
         \x20   history: {history}\n\
         \x20   max_lines: {max_lines}\n\
         \x20   resolution: 10\n\
         \x20   interval: {interval}\n\
         \x20   timeout: 60\n\
         \x20   state_dir: {}\n\
         outputs:\n\
         \x20 - output: duct.outputs.null.Null\n",
        log.display(),
        state.display()
    )
}

fn duct_config(log: &Path, history: bool, max_lines: usize, interval: f64) -> String {
    format!(
        "sources:\n\
         \x20 - service: nginx\n\
         \x20   source: duct.sources.nginx.NginxLogMetrics\n\
         \x20   file: {}\n\
         \x20   history: {}\n\
         \x20   max_lines: {max_lines}\n\
         \x20   resolution: 10\n\
         \x20   interval: {interval}\n\
         outputs:\n\
         \x20 - output: duct.outputs.null.Null\n",
        log.display(),
        if history { "true" } else { "false" }
    )
}

/// Where the agent has read `log` to, from what it saved.
trait Position {
    fn offset(&self) -> Option<u64>;
}

/// ductd's state file: the largest saved offset.
struct DuctdState(PathBuf);

impl Position for DuctdState {
    fn offset(&self) -> Option<u64> {
        let dir = std::fs::read_dir(self.0.join("logs")).ok()?;
        dir.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .flat_map(|v| {
                v["files"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|f| f["offset"].as_u64()).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .max()
    }
}

/// Duct's `LogFollower` file: `SIZE:INODE`.
struct DuctFollower(PathBuf);

impl DuctFollower {
    fn of(log: &Path) -> DuctFollower {
        let name = log.display().to_string();
        let name = name.trim_start_matches('/').replace('/', "-");
        DuctFollower(Path::new(DUCT_POSITIONS).join(format!("{name}.lf")))
    }
}

impl Position for DuctFollower {
    fn offset(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.0).ok()?;
        text.split(':').next()?.trim().parse().ok()
    }
}

impl Drop for DuctFollower {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Newlines in the first `len` bytes of `path`.
fn lines_before(path: &Path, len: u64) -> io::Result<u64> {
    let mut f = File::open(path)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// Writes the bulk log; returns its line count.
fn write_bulk(path: &Path, bytes: u64) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut log = AccessLog::new(18);
    let mut buf = Vec::with_capacity(1 << 16);
    let (mut written, mut lines) = (0u64, 0u64);
    while written < bytes {
        buf.clear();
        for _ in 0..1000 {
            log.line(BULK_EPOCH + (lines / 1000) as i64, &mut buf);
            lines += 1;
        }
        out.write_all(&buf)?;
        written += buf.len() as u64;
    }
    out.flush()?;
    Ok(lines)
}

/// What one agent did on the bulk log.
struct BulkRun {
    lines: u64,
    cpu_s: f64,
    wall_s: f64,
    end: Reading,
    complete: bool,
}

/// Follows `agent`'s saved position from its first save until it reaches
/// `size` or `budget` passes; the rates are over that span.
fn follow_bulk(
    agent: &mut Running,
    pos: &dyn Position,
    log: &Path,
    size: u64,
    budget: Duration,
) -> io::Result<BulkRun> {
    let deadline = Instant::now() + budget;
    let first = loop {
        agent.check_alive()?;
        if let (Some(off), Some(r)) = (pos.offset(), procfs::read(agent.pid())) {
            break (off, r);
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{} saved no position in {budget:?}",
                agent.name
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A file read whole before the first save (a small one) is measured
    // from the start of the process instead.
    let first = if first.0 >= size {
        let at_spawn = Reading {
            cpu_s: 0.0,
            at: agent.spawned,
            ..first.1
        };
        (0, at_spawn)
    } else {
        first
    };
    let mut last = first;
    loop {
        agent.check_alive()?;
        if let (Some(off), Some(r)) = (pos.offset(), procfs::read(agent.pid())) {
            if off != last.0 {
                last = (off, r);
            }
        }
        if last.0 >= size || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let lines = lines_before(log, last.0)? - lines_before(log, first.0)?;
    Ok(BulkRun {
        lines,
        cpu_s: last.1.cpu_s - first.1.cpu_s,
        wall_s: last.1.at.duration_since(first.1.at).as_secs_f64(),
        end: last.1,
        complete: last.0 >= size,
    })
}

/// mtail's command line, its HTTP listener on loopback.
fn mtail_command(bin: &Path, progs: &Path, log: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--progs").arg(progs).arg("--logs").arg(log);
    cmd.args(["--address", "127.0.0.1", "--port", &port.to_string()]);
    cmd
}

/// The value of the unlabelled series `name` in a Prometheus page.
fn prometheus_value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split(['{', ' ']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs mtail once over the whole file; (run, lines it counted).
fn mtail_bulk(bin: &Path, progs: &Path, log: &Path, scratch: &crate::agents::Scratch) -> io::Result<(BulkRun, u64)> {
    let mut cmd = mtail_command(bin, progs, log, free_port()?);
    cmd.args(["--one_shot", "--one_shot_format", "prometheus"]);
    let out_path = scratch.path("mtail-bulk.prom");
    cmd.stdout(File::create(&out_path)?)
        .stderr(File::create(scratch.path("mtail-bulk.log"))?)
        .stdin(Stdio::null());
    let started = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    // Sampled while it runs: its memory is gone once it exits.
    let peak = Arc::new(AtomicU64::new(0));
    let anon = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, anon, stop) = (peak.clone(), anon.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = procfs::read(pid as u32) {
                    if r.rss_kib > peak.load(Ordering::Relaxed) {
                        peak.store(r.rss_kib, Ordering::Relaxed);
                        anon.store(r.anon_kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut status = 0;
    // SAFETY: waits for our own child and fills the rusage given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut u);
        u
    };
    let wall_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_s = secs(usage.ru_utime) + secs(usage.ru_stime);
    let page = std::fs::read_to_string(&out_path)?;
    let counted = prometheus_value(&page, "total_requests").unwrap_or(0.0) as u64;
    let rss = peak.load(Ordering::Relaxed);
    let end = Reading {
        rss_kib: rss,
        hwm_kib: usage.ru_maxrss as u64,
        anon_kib: anon.load(Ordering::Relaxed),
        file_kib: 0,
        cpu_s,
        threads: 0,
        at: Instant::now(),
    };
    Ok((
        BulkRun {
            lines: counted,
            cpu_s,
            wall_s,
            end,
            complete: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        },
        counted,
    ))
}

/// Duct's log follower writes under /var/lib/duct; made if missing, and
/// removed again at the end if this run made it.
struct DuctPositionsDir(bool);

impl DuctPositionsDir {
    fn ensure() -> DuctPositionsDir {
        let made = !Path::new(DUCT_POSITIONS).exists() && std::fs::create_dir_all(DUCT_POSITIONS).is_ok();
        DuctPositionsDir(made)
    }
}

impl Drop for DuctPositionsDir {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_dir(DUCT_POSITIONS);
        }
    }
}

/// Removes the bulk log whatever happens (it is large).
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bulk(env: &Env, opts: &Options) -> io::Result<Vec<Figure>> {
    let log = env.scratch.path("bulk-access.log");
    let _remove = Remove(log.clone());
    let target = (opts.gib * f64::from(1u32 << 30)) as u64;
    eprintln!("logs: writing a {:.2} GiB access log", opts.gib);
    let t = Instant::now();
    let lines = write_bulk(&log, target)?;
    let size = std::fs::metadata(&log)?.len();
    eprintln!(
        "logs: {lines} lines, {size} bytes ({} per line) in {:.1} s",
        size / lines.max(1),
        t.elapsed().as_secs_f64()
    );
    // Read once so that every agent finds it in the page cache.
    lines_before(&log, size)?;
    let mut runs: Vec<(String, BulkRun)> = Vec::new();

    let state = env.scratch.path("ductd-bulk-state");
    let config = env
        .scratch
        .write("ductd-bulk.yml", &ductd_config(&log, &state, true, 100_000, 0.05))?;
    let mut agent = env.programs.ductd(&config, &env.scratch, "bulk")?;
    eprintln!("logs: ductd reading the file");
    let run = follow_bulk(&mut agent, &DuctdState(state), &log, size, Duration::from_secs(600))?;
    let unparsed = agent.log_tail(50).contains("do not match log_format");
    agent.stop(Duration::from_secs(10));
    if unparsed {
        return Err(io::Error::other("ductd found lines that do not match combined"));
    }
    runs.push(("ductd".into(), run));

    if env.programs.duct_python.is_some() {
        let _dir = DuctPositionsDir::ensure();
        let positions = DuctFollower::of(&log);
        let _ = std::fs::remove_file(&positions.0);
        let config = env
            .scratch
            .write("duct-bulk.yml", &duct_config(&log, true, 100_000, 0.05))?;
        if let Some(agent) = env.programs.duct(&config, &env.scratch, "bulk") {
            let mut agent = agent?;
            eprintln!("logs: Duct reading the file (at most {} s)", opts.duct_seconds);
            let budget = Duration::from_secs_f64(opts.duct_seconds);
            let run = follow_bulk(&mut agent, &positions, &log, size, budget)?;
            agent.stop(Duration::from_secs(10));
            runs.push(("duct".into(), run));
        }
    }

    if let Some(bin) = &env.programs.mtail {
        let progs = env.scratch.path("mtail-progs");
        std::fs::create_dir_all(&progs)?;
        std::fs::write(progs.join("nginx.mtail"), MTAIL_PROGRAM)?;
        eprintln!("logs: mtail reading the file (--one_shot)");
        let (run, counted) = mtail_bulk(bin, &progs, &log, &env.scratch)?;
        if counted != lines {
            eprintln!("logs: mtail counted {counted} of {lines} lines");
        }
        runs.push(("mtail".into(), run));
    }

    let fig = |name: &str, unit: &'static str, better: Better, get: &dyn Fn(&BulkRun) -> f64| {
        let mut f = Figure::new("logs", name, unit, better)
            .note("lines_in_file", lines)
            .note("bytes", size);
        for (agent, r) in &runs {
            f = f.value(agent, get(r));
        }
        f
    };
    let per_core = |r: &BulkRun| r.lines as f64 / r.cpu_s.max(1e-9);
    let best_peer = runs
        .iter()
        .filter(|(a, _)| a != "ductd")
        .map(|(_, r)| per_core(r))
        .fold(0.0, f64::max);
    let mut notes = fig("bulk_lines_measured", "lines", Better::Higher, &|r| r.lines as f64);
    for (agent, r) in &runs {
        notes = notes.note(&format!("{agent}_read_to_end"), r.complete);
    }
    Ok(vec![
        fig("bulk_lines_per_cpu_second", "lines/s", Better::Higher, &per_core)
            .target(Target::AtLeast(1_000_000f64.max(best_peer))),
        fig("bulk_lines_per_second", "lines/s", Better::Higher, &|r| {
            r.lines as f64 / r.wall_s.max(1e-9)
        }),
        notes,
        fig("bulk_vm_rss", "MiB", Better::Lower, &|r| r.end.rss_kib as f64 / 1024.0),
        fig("bulk_rss_anon", "MiB", Better::Lower, &|r| {
            r.end.anon_kib as f64 / 1024.0
        }),
        fig("bulk_vm_hwm", "MiB", Better::Lower, &|r| r.end.hwm_kib as f64 / 1024.0),
    ])
}

/// Appends lines stamped now at `rate` a second, 100 per write.
struct Writer {
    lines: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Writer {
    fn start(path: &Path, rate: f64) -> io::Result<Writer> {
        let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
        let lines = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lines, stop) = (lines.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut log = AccessLog::new(10_000);
                let mut buf = Vec::with_capacity(64 << 10);
                let per_write = 100u64;
                let every = Duration::from_secs_f64(per_write as f64 / rate);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    buf.clear();
                    let t = wall_now() as i64;
                    for _ in 0..per_write {
                        log.line(t, &mut buf);
                    }
                    file.write_all(&buf)?;
                    lines.fetch_add(per_write, Ordering::Relaxed);
                    next += every;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                Ok(())
            })
        };
        Ok(Writer {
            lines,
            stop,
            thread: Some(thread),
        })
    }

    fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the log writer panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes a process has read (`rchar` of `/proc/PID/io`).
fn bytes_read(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

fn live(env: &Env, opts: &Options) -> io::Result<Vec<Figure>> {
    let log = env.scratch.path("live-access.log");
    File::create(&log)?;
    let mut agents: Vec<Running> = Vec::new();
    let state = env.scratch.path("ductd-live-state");
    let config = env
        .scratch
        .write("ductd-live.yml", &ductd_config(&log, &state, false, 0, 1.0))?;
    agents.push(env.programs.ductd(&config, &env.scratch, "live")?);
    let _dir = DuctPositionsDir::ensure();
    let duct_positions = DuctFollower::of(&log);
    let _ = std::fs::remove_file(&duct_positions.0);
    let config = env
        .scratch
        .write("duct-live.yml", &duct_config(&log, false, 100_000, 1.0))?;
    if let Some(agent) = env.programs.duct(&config, &env.scratch, "live") {
        agents.push(agent?);
    }
    let mut mtail_port = None;
    if let Some(bin) = &env.programs.mtail {
        let progs = env.scratch.path("mtail-progs");
        std::fs::create_dir_all(&progs)?;
        std::fs::write(progs.join("nginx.mtail"), MTAIL_PROGRAM)?;
        let port = free_port()?;
        let cmd = mtail_command(bin, &progs, &log, port);
        let mut agent = Running::spawn("mtail", cmd, env.scratch.path("mtail-live.log"))?;
        agent.wait_for_port(port, Duration::from_secs(30))?;
        mtail_port = Some(port);
        agents.push(agent);
    }
    // Duct's imports take a second or two; its follower must have seen the
    // (empty) file before lines come, or it starts at their end.
    std::thread::sleep(Duration::from_secs(3));
    for a in &mut agents {
        a.check_alive()?;
    }
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    eprintln!(
        "logs: {} following a log written at {} lines/s, {} s after {} s warm-up",
        names.join(", "),
        opts.rate,
        opts.seconds,
        opts.warmup
    );
    let writer = Writer::start(&log, opts.rate)?;
    std::thread::sleep(Duration::from_secs_f64(opts.warmup));
    let start: Vec<Option<Reading>> = agents.iter().map(|a| procfs::read(a.pid())).collect();
    let w0 = writer.lines();
    std::thread::sleep(Duration::from_secs_f64(opts.seconds));
    let end: Vec<Option<Reading>> = agents.iter().map(|a| procfs::read(a.pid())).collect();
    let w1 = writer.lines();
    writer.finish()?;
    let written = std::fs::metadata(&log)?.len();
    // Let each catch up, then see how far it got.
    std::thread::sleep(Duration::from_secs(3));
    let mut caught_up = Vec::new();
    for a in &mut agents {
        a.check_alive()?;
        let behind = match a.name.as_str() {
            "ductd" => bytes_read(a.pid()).map(|r| written.saturating_sub(r) as f64),
            "duct" => duct_positions.offset().map(|o| written.saturating_sub(o) as f64),
            _ => mtail_port
                .and_then(|p| scrape_metrics(p).ok())
                .and_then(|page| prometheus_value(&page, "total_requests"))
                .map(|n| (w1 as f64 - n).max(0.0) * (written as f64 / w1.max(1) as f64)),
        };
        caught_up.push((a.name.clone(), behind));
    }
    for a in &mut agents {
        a.stop(Duration::from_secs(10));
    }
    let lines = (w1 - w0) as f64;
    let fig = |name: &str, unit: &'static str, get: &dyn Fn(&Reading, &Reading) -> f64| {
        let mut f = Figure::new("logs", name, unit, Better::Lower)
            .note("lines_per_s", opts.rate)
            .note("seconds", opts.seconds);
        for ((a, r0), r1) in agents.iter().zip(&start).zip(&end) {
            if let (Some(r0), Some(r1)) = (r0, r1) {
                f = f.value(&a.name, get(r0, r1));
            }
        }
        f
    };
    let mut behind = Figure::new("logs", "live_bytes_behind_after_3s", "bytes", Better::Lower);
    for (a, b) in &caught_up {
        behind = behind.value_opt(a, *b);
    }
    Ok(vec![
        fig("live_cpu_per_line", "us", &|r0, r1| {
            (r1.cpu_s - r0.cpu_s) * 1e6 / lines.max(1.0)
        }),
        fig("live_cpu_share_of_a_core", "%", &|r0, r1| {
            procfs::core_share(r0, r1) * 100.0
        }),
        fig("live_vm_rss", "MiB", &|_, r1| r1.rss_kib as f64 / 1024.0),
        fig("live_rss_anon", "MiB", &|_, r1| r1.anon_kib as f64 / 1024.0),
        behind,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_values_by_name() {
        let page = "# HELP x\ntotal_requests{prog=\"nginx.mtail\"} 12\ntotal_rbytes{prog=\"nginx.mtail\"} 5\n";
        assert_eq!(prometheus_value(page, "total_requests"), Some(12.0));
        assert_eq!(prometheus_value(page, "total_rbytes"), Some(5.0));
        assert_eq!(prometheus_value(page, "total"), None);
    }

    #[test]
    fn configs_name_the_file_and_the_null_output() {
        let c = ductd_config(Path::new("/l/a.log"), Path::new("/s"), true, 7, 0.5);
        assert!(c.contains("file: /l/a.log") && c.contains("max_lines: 7") && c.contains("state_dir: /s"));
        assert!(c.contains("duct.outputs.null.Null"));
        assert_eq!(
            DuctFollower::of(Path::new("/tmp/x/a.log")).0,
            Path::new("/var/lib/duct/tmp-x-a.log.lf")
        );
    }
}
