//! Scenario 7, network devices: one ductd as a site's central poller.
//! `sources` `duct.sources.snmp.SNMP` blocks (2,000) poll simulated
//! switches every `interval` (60 s), spread evenly over it, while
//! `duct.sources.sflow.sFlow` takes a stream of `datagrams` (10,000) sFlow
//! v5 datagrams a second from the harness.
//!
//! The switches are one `snmpsimd` (Debian `snmpsim`) replaying a recording
//! the harness writes: `interfaces` (8) interfaces with IF-MIB's ifTable and
//! ifXTable (64-bit counters). It listens on `addresses` (50) loopback
//! addresses (127.3.0.0/16, one UDP port), and answers a community per
//! device on each (`dev000`, `dev001`, …): device `i` is address `i mod
//! addresses`, community `i div addresses`, so every (address, community)
//! pair is a device of its own to ductd. The sFlow stream comes from
//! `sflow_agents` (50) sockets bound to 127.4.0.0/16 addresses, each an
//! agent with eight interfaces: flow samples of four sampled headers from
//! a few dozen addresses and ports, and every `COUNTER_SECONDS` a counter
//! sample of every interface (the generator is
//! `duct_sources::sflow::generate`).
//!
//! Three runs of ductd, each to the harness's sink over Riemann TCP:
//! 1. SNMP alone for `intervals` intervals: CPU per poll (after the first
//!    interval, which holds the start-up);
//! 2. sFlow alone for `sflow_seconds`: CPU per datagram;
//! 3. both together for `intervals` intervals: whether every poll was
//!    answered, and on time, the largest VmRSS and RssAnon, datagrams the
//!    kernel dropped at ductd's socket.
//!
//! A poll's counters only prime the rates the first time, so each device's
//! first poll sends nothing; from the second on, every poll sends its
//! rates (or one critical event when the walk failed). From the events'
//! times the sink sees each device's polls: missed polls are the intervals
//! after a device's first visible poll without one, and lateness is read
//! as in the scale scenario (a poll's delay beyond the device's
//! earliest-aligned poll; the time includes the walk, snmpsim's answer
//! included). Beside it, ductd's own tick-lateness histogram.
//!
//! Then the reference: net-snmp on `reference_walks` (200) of the same
//! devices, one after the other: `snmpbulkget` asking the same 19 columns
//! as ductd's walk (the same request), and `snmpbulkwalk` of ifTable and
//! of ifXTable (what a script would run); CPU per device from the
//! children's rusage, a process start included.

use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duct_proto::Message;
use duct_sources::sflow::datagram::InterfaceCounters;
use duct_sources::sflow::generate::{encode, frame};

use crate::agents::{wall_now, Running};
use crate::procfs::{self, Sampler};
use crate::report::{percentile, Better, Figure, Target};
use crate::sink::{event_seconds, Inspect, Sink};

use super::scale::lateness_ms;
use super::Env;

#[derive(Debug, Clone)]
pub struct Options {
    pub sources: usize,
    /// Seconds between two polls of a device.
    pub interval: f64,
    /// How many intervals runs 1 and 3 last.
    pub intervals: u32,
    pub interfaces: u32,
    pub addresses: usize,
    /// sFlow datagrams per second.
    pub datagrams: f64,
    pub sflow_agents: usize,
    pub sflow_seconds: f64,
    pub reference_walks: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sources: 2000,
            interval: 60.0,
            intervals: 3,
            interfaces: 8,
            addresses: 50,
            datagrams: 10_000.0,
            sflow_agents: 50,
            sflow_seconds: 20.0,
            reference_walks: 200,
        }
    }
}

/// How often each sFlow agent sends its interfaces' counters.
const COUNTER_SECONDS: f64 = 10.0;
/// Interfaces of each sFlow agent.
const SFLOW_INTERFACES: u32 = 8;
/// Sampled headers per flow sample.
const FRAMES_PER_DATAGRAM: usize = 4;
/// The agent's own source reports under this service.
const AGENT_SERVICE: &str = "agent";
/// A poll that completes more than this after its due moment is late.
const LATE_MS: f64 = 1000.0;

/// IF-MIB's tables, and the columns ductd's walk asks (ifDescr, Duct's ten
/// ifTable counters, the eight ifXTable HC counters).
const IF_ENTRY: &str = "1.3.6.1.2.1.2.2.1";
const IFX_ENTRY: &str = "1.3.6.1.2.1.31.1.1.1";
const WALKED_IF_COLUMNS: [u32; 11] = [2, 10, 11, 12, 14, 13, 16, 17, 18, 20, 19];
const WALKED_IFX_COLUMNS: [u32; 8] = [6, 7, 8, 9, 10, 11, 12, 13];

fn snmp_address(i: usize) -> String {
    format!("127.3.{}.{}", i / 250, i % 250 + 1)
}

fn sflow_address(i: usize) -> [u8; 4] {
    [127, 4, (i / 250) as u8, (i % 250 + 1) as u8]
}

fn community(c: usize) -> String {
    format!("dev{c:03}")
}

/// Device `i`: its address and community.
fn device(i: usize, addresses: usize) -> (String, String) {
    (snmp_address(i % addresses), community(i / addresses))
}

/// An snmpsim recording of a switch with `interfaces` interfaces: the
/// system group, ifTable (Counter32) and ifXTable (Counter64), in OID order.
fn recording(interfaces: u32) -> String {
    let mut rows: Vec<(Vec<u32>, String)> = Vec::new();
    let mut add = |oid: String, kind: u32, value: String| {
        let arcs = oid.split('.').filter_map(|a| a.parse().ok()).collect();
        rows.push((arcs, format!("{oid}|{kind}|{value}")));
    };
    add("1.3.6.1.2.1.1.1.0".into(), 4, "ductd-bench simulated switch".into());
    add("1.3.6.1.2.1.1.3.0".into(), 67, "123456".into());
    add("1.3.6.1.2.1.2.1.0".into(), 2, interfaces.to_string());
    for i in 1..=interfaces {
        add(format!("{IF_ENTRY}.1.{i}"), 2, i.to_string());
        add(format!("{IF_ENTRY}.2.{i}"), 4, format!("Gi0/{i}"));
        add(format!("{IF_ENTRY}.3.{i}"), 2, "6".into());
        for col in 10..=20 {
            add(format!("{IF_ENTRY}.{col}.{i}"), 65, (1000 * i + col).to_string());
        }
        add(format!("{IFX_ENTRY}.1.{i}"), 4, format!("Gi0/{i}"));
        for col in WALKED_IFX_COLUMNS {
            add(
                format!("{IFX_ENTRY}.{col}.{i}"),
                70,
                (10_000_000_000 + u64::from(1000 * i + col)).to_string(),
            );
        }
    }
    rows.sort();
    rows.into_iter().map(|(_, line)| line + "\n").collect()
}

/// snmpsimd answering every device, and where.
struct Simulator {
    running: Running,
    port: u16,
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn start_simulator(env: &Env, opts: &Options) -> io::Result<Simulator> {
    let snmpsimd = find_program("snmpsimd").ok_or_else(|| io::Error::other("no snmpsimd (Debian: snmpsim)"))?;
    let dir = env.scratch.path("snmpsim");
    let (data, cache) = (dir.join("data"), dir.join("cache"));
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&cache)?;
    std::fs::write(dir.join("switch.snmprec"), recording(opts.interfaces))?;
    let communities = opts.sources.div_ceil(opts.addresses);
    for c in 0..communities {
        let link = data.join(format!("{}.snmprec", community(c)));
        if !link.exists() {
            std::os::unix::fs::symlink("../switch.snmprec", link)?;
        }
    }
    // snmpsimd drops root for `nobody`, which must write its index cache.
    use std::os::unix::fs::PermissionsExt;
    for d in [&dir, &data, &cache] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))?;
    }
    let port = UdpSocket::bind("127.3.0.1:0")?.local_addr()?.port();
    let mut cmd = Command::new(snmpsimd);
    cmd.arg(format!("--data-dir={}", data.display()))
        .arg(format!("--cache-dir={}", cache.display()))
        // One GetBulk of ductd's walk asks 19 columns × 10 rows.
        .arg("--max-varbinds=256")
        .args([
            "--logging-method=null",
            "--process-user=nobody",
            "--process-group=nogroup",
        ]);
    for a in 0..opts.addresses.min(opts.sources) {
        cmd.arg(format!("--agent-udpv4-endpoint={}:{port}", snmp_address(a)));
    }
    let running = Running::spawn("snmpsimd", cmd, env.scratch.path("snmpsimd.log"))?;
    let mut sim = Simulator { running, port };
    // Ready once the last device answers.
    let (addr, comm) = device(opts.sources - 1, opts.addresses);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !snmpget_answers(&addr, port, &comm) {
        sim.running.check_alive()?;
        if Instant::now() > deadline {
            return Err(io::Error::other("snmpsimd does not answer within 180 s"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(sim)
}

fn net_snmp(program: &str) -> Command {
    let mut c = Command::new(program);
    // No MIB files to load: numeric OIDs only, as ductd.
    c.env("MIBS", "").args(["-v2c", "-On", "-Oq", "-r1", "-t5"]);
    c
}

fn snmpget_answers(addr: &str, port: u16, community: &str) -> bool {
    net_snmp("snmpget")
        .args(["-c", community, &format!("{addr}:{port}"), "1.3.6.1.2.1.1.3.0"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

fn config(opts: &Options, sink: u16, snmp: Option<u16>, sflow: Option<u16>) -> String {
    let mut c = format!(
        "interval: {}\nstagger: {:.6}\noutputs:\n  - output: duct.outputs.riemann.RiemannTCP\n    server: 127.0.0.1\n    port: {sink}\nsources:\n  - service: {AGENT_SERVICE}\n    source: duct.sources.Duct\n    interval: 1.0\n    stagger: 0\n",
        opts.interval,
        opts.interval / opts.sources.max(1) as f64,
    );
    if let Some(port) = sflow {
        c.push_str(&format!(
            "  - service: sflow\n    source: duct.sources.sflow.sFlow\n    port: {port}\n    bind: 127.0.0.1\n    dnslookup: false\n"
        ));
    }
    if let Some(port) = snmp {
        for i in 0..opts.sources {
            let (addr, comm) = device(i, opts.addresses);
            c.push_str(&format!(
                "  - service: snmp.{i}\n    source: duct.sources.snmp.SNMP\n    ip: {addr}\n    port: {port}\n    community: {comm}\n"
            ));
        }
    }
    c
}

/// What the sink learnt: each device's visible polls (event times), its
/// failed polls, sFlow events, and the agent's own figures (last seen).
#[derive(Debug, Default)]
struct Seen {
    polls: HashMap<String, Vec<f64>>,
    failed: HashMap<String, u64>,
    snmp_events: u64,
    sflow_events: u64,
    agent: HashMap<String, f64>,
}

fn inspector(seen: Arc<Mutex<Seen>>, interval: f64) -> Inspect {
    Arc::new(move |body, _| {
        let Ok(msg) = duct_proto::Msg::decode(body) else {
            return;
        };
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for ev in msg.events {
            let time = event_seconds(&ev);
            let Some(service) = ev.service else { continue };
            if let Some(figure) = service.strip_prefix("agent.") {
                let v = ev
                    .metric_d
                    .or(ev.metric_f.map(f64::from))
                    .or(ev.metric_sint64.map(|v| v as f64));
                if let Some(v) = v {
                    seen.agent.insert(figure.to_string(), v);
                }
            } else if let Some(rest) = service.strip_prefix("snmp.") {
                seen.snmp_events += 1;
                let id = rest.split('.').next().unwrap_or(rest).to_string();
                if ev.state.as_deref() == Some("critical") {
                    *seen.failed.entry(id.clone()).or_default() += 1;
                }
                // The events of one poll share (nearly) one time.
                let polls = seen.polls.entry(id).or_default();
                if polls.last().is_none_or(|last| time - last > interval / 2.0) {
                    polls.push(time);
                }
            } else if service.starts_with("sflow.") {
                seen.sflow_events += 1;
            }
        }
    })
}

/// The sFlow stream: `datagrams` a second from `agents` sockets, until
/// `stop`; counts what it sent.
struct Stream {
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A few dozen conversations per interface: the flow samples of agent `a`.
fn flow_datagrams(a: usize) -> Vec<Vec<u8>> {
    (0..64u32)
        .map(|k| {
            let input = k % SFLOW_INTERFACES + 1;
            let frames: Vec<Vec<u8>> = (0..FRAMES_PER_DATAGRAM as u32)
                .map(|f| {
                    let n = k * FRAMES_PER_DATAGRAM as u32 + f;
                    frame(
                        [10, a as u8, 0, (n % 32) as u8 + 1],
                        [10, 200, 0, (n * 7 % 32) as u8 + 1],
                        40_000 + (n % 16) as u16,
                        [80, 443, 53, 22, 25, 123, 8080, 9000][(n % 8) as usize],
                        64 + (n * 97 % 1400) as u16,
                    )
                })
                .collect();
            encode(sflow_address(a), k, &[], input, &frames)
        })
        .collect()
}

impl Stream {
    fn start(to: u16, rate: f64, agents: usize) -> io::Result<Stream> {
        let sockets: Vec<UdpSocket> = (0..agents)
            .map(|a| UdpSocket::bind((std::net::Ipv4Addr::from(sflow_address(a)), 0)))
            .collect::<io::Result<_>>()?;
        let flows: Vec<Vec<Vec<u8>>> = (0..agents).map(flow_datagrams).collect();
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sent, stop) = (sent.clone(), stop.clone());
            std::thread::Builder::new().name("sflow-stream".into()).spawn(move || {
                let start = Instant::now();
                let mut n: u64 = 0;
                let mut next_counters = vec![0.0f64; agents];
                let to = ("127.0.0.1", to);
                while !stop.load(Ordering::Relaxed) {
                    let elapsed = start.elapsed().as_secs_f64();
                    let due = (elapsed * rate) as u64;
                    while n < due {
                        let a = (n % agents as u64) as usize;
                        let datagram = if elapsed >= next_counters[a] {
                            next_counters[a] = elapsed + COUNTER_SECONDS;
                            // 10 MB/s in, 1 MB/s out on every interface.
                            let counters: Vec<InterfaceCounters> = (1..=SFLOW_INTERFACES)
                                .map(|i| InterfaceCounters {
                                    if_index: i,
                                    if_speed: 1_000_000_000,
                                    in_octets: (elapsed * 1e7) as u64,
                                    out_octets: (elapsed * 1e6) as u64,
                                    ..Default::default()
                                })
                                .collect();
                            encode(sflow_address(a), n as u32, &counters, 1, &[])
                        } else {
                            flows[a][((n / agents as u64) % 64) as usize].clone()
                        };
                        if sockets[a].send_to(&datagram, to).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        n += 1;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })?
        };
        Ok(Stream {
            sent,
            stop,
            thread: Some(thread),
        })
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Datagrams the kernel dropped at the UDP socket bound to `port` on
/// 127.0.0.1 (the last column of `/proc/net/udp`).
fn udp_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str())).then(|| fields.last()?.parse().ok())?
    })
}

/// What one run of ductd measured.
#[derive(Debug, Default)]
struct Outcome {
    /// CPU (s) and wall time (s) of the measured window.
    cpu_s: f64,
    wall_s: f64,
    datagrams_in_window: u64,
    datagrams_sent: u64,
    udp_drops: Option<u64>,
    max_rss_mib: f64,
    max_anon_mib: f64,
    end_rss_mib: f64,
    end_anon_mib: f64,
    simulator_cpu_s: f64,
    seen: Seen,
}

fn measure(
    env: &Env,
    opts: &Options,
    tag: &str,
    sim: Option<&Simulator>,
    sflow: bool,
    seconds: f64,
    warmup: f64,
) -> io::Result<Outcome> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = Sink::start(Some(inspector(seen.clone(), opts.interval)))?;
    let sflow_port = if sflow {
        Some(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
    } else {
        None
    };
    let text = config(opts, sink.port(), sim.map(|s| s.port), sflow_port);
    let path = env.scratch.write(&format!("network-{tag}.yml"), &text)?;
    let mut running = env.programs.ductd(&path, &env.scratch, &format!("network-{tag}"))?;
    let pid = running.pid();
    let stream = match sflow_port {
        Some(port) => Some(Stream::start(port, opts.datagrams, opts.sflow_agents)?),
        None => None,
    };
    let sampler = Sampler::start(pid, Duration::from_millis(200));
    let warm = running.spawned + Duration::from_secs_f64(warmup);
    let end = running.spawned + Duration::from_secs_f64(seconds);
    while Instant::now() < warm {
        running.check_alive()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let r0 = procfs::read(pid).ok_or_else(|| io::Error::other("ductd vanished"))?;
    let sim0 = sim.and_then(|s| procfs::read(s.running.pid()));
    let sent0 = stream.as_ref().map_or(0, Stream::sent);
    while Instant::now() < end {
        running.check_alive()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let r1 = procfs::read(pid).ok_or_else(|| io::Error::other("ductd vanished"))?;
    let sim1 = sim.and_then(|s| procfs::read(s.running.pid()));
    let sent1 = stream.as_ref().map_or(0, Stream::sent);
    drop(stream);
    let udp_drops = sflow_port.and_then(udp_drops);
    let mut outcome = Outcome {
        cpu_s: r1.cpu_s - r0.cpu_s,
        wall_s: r1.at.duration_since(r0.at).as_secs_f64(),
        datagrams_in_window: sent1 - sent0,
        datagrams_sent: sent1,
        udp_drops,
        max_rss_mib: sampler.max_rss_mib(),
        max_anon_mib: sampler.max_anon_mib(),
        end_rss_mib: r1.rss_kib as f64 / 1024.0,
        end_anon_mib: r1.anon_kib as f64 / 1024.0,
        simulator_cpu_s: match (sim0, sim1) {
            (Some(a), Some(b)) => b.cpu_s - a.cpu_s,
            _ => 0.0,
        },
        ..Outcome::default()
    };
    drop(sampler);
    running.stop(Duration::from_secs(15));
    // What was flushed at the stop has arrived by now.
    std::thread::sleep(Duration::from_millis(500));
    drop(sink);
    outcome.seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(outcome)
}

/// Polls the sink saw, and polls missed: for every device, each interval
/// after its first visible poll up to the run's last full interval
/// without a poll; a device never seen misses every poll after its first.
fn poll_accounting(seen: &Seen, opts: &Options, run_end: f64) -> (u64, u64, usize) {
    let mut visible = 0u64;
    let mut missed = 0u64;
    for i in 0..opts.sources {
        match seen.polls.get(&i.to_string()) {
            Some(times) => {
                visible += times.len() as u64;
                let first = times[0];
                // Polls due after the first, up to one interval (for the
                // walk) before the end.
                let due = ((run_end - first - 1.0) / opts.interval).floor().max(0.0) as u64 + 1;
                missed += due.saturating_sub(times.len() as u64);
            }
            None => missed += u64::from(opts.intervals.saturating_sub(1)),
        }
    }
    (visible, missed, seen.polls.len())
}

/// CPU per device of the net-snmp tools: `snmpbulkget` of ductd's 19
/// columns, and `snmpbulkwalk` of ifTable then ifXTable.
struct Reference {
    devices: usize,
    bulkget_cpu_ms: f64,
    bulkwalk_cpu_ms: f64,
    bulkget_failures: usize,
    bulkwalk_failures: usize,
}

fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn reference(opts: &Options, port: u16) -> Reference {
    let n = opts.reference_walks.min(opts.sources);
    // Spread over the devices, so that every address and many communities
    // are asked.
    let devices: Vec<(String, String)> = (0..n)
        .map(|k| device(k * opts.sources / n.max(1), opts.addresses))
        .collect();
    let columns: Vec<String> = WALKED_IF_COLUMNS
        .iter()
        .map(|c| format!("{IF_ENTRY}.{c}"))
        .chain(WALKED_IFX_COLUMNS.iter().map(|c| format!("{IFX_ENTRY}.{c}")))
        .collect();
    let run = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    let c0 = children_cpu_s();
    let mut bulkget_failures = 0;
    for (addr, comm) in &devices {
        let ok = run(net_snmp("snmpbulkget")
            .args(["-Cr10", "-c", comm, &format!("{addr}:{port}")])
            .args(&columns));
        bulkget_failures += usize::from(!ok);
    }
    let c1 = children_cpu_s();
    let mut bulkwalk_failures = 0;
    for (addr, comm) in &devices {
        for table in ["1.3.6.1.2.1.2.2", "1.3.6.1.2.1.31.1.1"] {
            let ok = run(net_snmp("snmpbulkwalk").args(["-Cr10", "-c", comm, &format!("{addr}:{port}"), table]));
            bulkwalk_failures += usize::from(!ok);
        }
    }
    let c2 = children_cpu_s();
    let per = |s: f64| s / n.max(1) as f64 * 1000.0;
    Reference {
        devices: n,
        bulkget_cpu_ms: per(c1 - c0),
        bulkwalk_cpu_ms: per(c2 - c1),
        bulkget_failures,
        bulkwalk_failures,
    }
}

pub fn run(env: &Env, opts: &Options) -> io::Result<Vec<Figure>> {
    for tool in ["snmpget", "snmpbulkget", "snmpbulkwalk"] {
        if find_program(tool).is_none() {
            return Err(io::Error::other(format!("no {tool} (Debian: snmp)")));
        }
    }
    let sim = start_simulator(env, opts)?;
    let span = opts.interval * f64::from(opts.intervals);
    // Stops a little after the last interval's last poll is due.
    let seconds = span + 5.0;
    eprintln!(
        "network: {} SNMP devices every {} s on snmpsimd (port {}), {} intervals",
        opts.sources, opts.interval, sim.port, opts.intervals
    );
    let snmp = measure(env, opts, "snmp", Some(&sim), false, seconds, opts.interval)?;
    eprintln!(
        "network: sFlow alone, {} datagrams/s from {} agents, {} s",
        opts.datagrams, opts.sflow_agents, opts.sflow_seconds
    );
    let sflow = measure(env, opts, "sflow", None, true, opts.sflow_seconds + 2.0, 2.0)?;
    eprintln!("network: both together, {} intervals", opts.intervals);
    let started = wall_now();
    let both = measure(env, opts, "both", Some(&sim), true, seconds, opts.interval)?;
    let both_end = started + seconds;
    eprintln!("network: net-snmp on {} of the devices", opts.reference_walks);
    let reference = reference(opts, sim.port);
    Ok(figures(opts, &snmp, &sflow, &both, both_end, &reference))
}

fn figures(
    opts: &Options,
    snmp: &Outcome,
    sflow: &Outcome,
    both: &Outcome,
    both_end: f64,
    reference: &Reference,
) -> Vec<Figure> {
    let fig = |name: &str, unit: &'static str, better: Better| {
        Figure::new("network", name.to_string(), unit, better)
            .note("sources", opts.sources as u64)
            .note("interval_s", opts.interval)
            .note("intervals", opts.intervals)
            .note("datagrams_per_s", opts.datagrams)
    };
    let polls_in_window = |o: &Outcome| opts.sources as f64 * o.wall_s / opts.interval;
    let mut out = vec![fig("snmp_cpu_per_poll", "ms", Better::Lower)
        .value("ductd", snmp.cpu_s / polls_in_window(snmp) * 1000.0)
        .value("snmpbulkget", reference.bulkget_cpu_ms)
        .value("snmpbulkwalk", reference.bulkwalk_cpu_ms)
        .note(
            "how",
            "ductd: CPU over the SNMP-only run after its first interval / polls due in it; net-snmp: CPU per device \
                 (process start included), snmpbulkget of ductd's 19 columns, snmpbulkwalk of ifTable and ifXTable",
        )
        .note("reference_devices", reference.devices as u64)
        .note(
            "reference_failures",
            (reference.bulkget_failures + reference.bulkwalk_failures) as u64,
        )];
    out.push(
        fig("snmp_cpu", "cores", Better::Lower)
            .value("ductd", snmp.cpu_s / snmp.wall_s)
            .value("snmpsimd", snmp.simulator_cpu_s / snmp.wall_s),
    );
    out.push(
        fig("snmpsimd_cpu_per_poll", "ms", Better::Lower)
            .value("snmpsimd", snmp.simulator_cpu_s / polls_in_window(snmp) * 1000.0)
            .note("how", "the simulator's own cost, to judge whether it kept up"),
    );
    out.push(
        fig("sflow_cpu_per_datagram", "µs", Better::Lower)
            .value("ductd", sflow.cpu_s / sflow.datagrams_in_window.max(1) as f64 * 1e6)
            .note("datagrams", sflow.datagrams_in_window)
            .note("sent_per_s", sflow.datagrams_in_window as f64 / sflow.wall_s),
    );
    out.push(fig("sflow_cpu", "cores", Better::Lower).value("ductd", sflow.cpu_s / sflow.wall_s));
    for (label, o) in [("sflow_alone", sflow), ("both", both)] {
        out.push(
            fig(&format!("{label}.udp_drops"), "datagrams", Better::Lower)
                .value_opt("ductd", o.udp_drops.map(|d| d as f64))
                .note("sent", o.datagrams_sent)
                .target(Target::AtMost(0.0)),
        );
    }
    let (visible, missed, reporting) = poll_accounting(&both.seen, opts, both_end);
    let failed: u64 = both.seen.failed.values().sum();
    let mut devices = fig("both.devices_reporting", "devices", Better::Higher).value("ductd", reporting as f64);
    devices = devices.target(Target::AtLeast(opts.sources as f64));
    out.push(devices);
    out.push(
        fig("both.polls_seen", "polls", Better::Higher)
            .value("ductd", visible as f64)
            .note(
                "how",
                "polls whose events reached the sink (a device's first poll only primes its rates)",
            ),
    );
    out.push(
        fig("both.polls_missed", "polls", Better::Lower)
            .value("ductd", missed as f64)
            .target(Target::AtMost(0.0)),
    );
    out.push(
        fig("both.polls_failed", "polls", Better::Lower)
            .value("ductd", failed as f64)
            .target(Target::AtMost(0.0)),
    );
    let lateness = lateness_ms(&both.seen.polls, opts.interval);
    let late = lateness.iter().filter(|l| **l > LATE_MS).count();
    out.push(
        fig("both.polls_late", "polls", Better::Lower)
            .value("ductd", late as f64)
            .note("late_ms", LATE_MS)
            .target(Target::AtMost(0.0)),
    );
    for (label, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
        out.push(
            fig(
                &format!("both.poll_lateness_from_event_times_{label}"),
                "ms",
                Better::Lower,
            )
            .value_opt("ductd", percentile(&lateness, p)),
        );
        out.push(
            fig(
                &format!("both.tick_lateness_ductd_histogram_{label}"),
                "ms",
                Better::Lower,
            )
            .value_opt("ductd", both.seen.agent.get(&format!("tick lateness {label}")).copied()),
        );
    }
    for figure in ["ticks skipped", "tick errors"] {
        out.push(
            fig(&format!("both.{}", figure.replace(' ', "_")), "ticks", Better::Lower)
                .value_opt("ductd", both.seen.agent.get(figure).copied())
                .target(Target::AtMost(0.0)),
        );
    }
    out.push(
        fig("both.events", "events", Better::Higher)
            .value("ductd", (both.seen.snmp_events + both.seen.sflow_events) as f64)
            .note("snmp", both.seen.snmp_events)
            .note("sflow", both.seen.sflow_events),
    );
    for (label, o) in [("snmp_alone", snmp), ("sflow_alone", sflow), ("both", both)] {
        out.push(
            fig(&format!("{label}.max_vm_rss"), "MiB", Better::Lower)
                .value("ductd", o.max_rss_mib)
                .target(Target::AtMost(64.0)),
        );
        out.push(fig(&format!("{label}.max_rss_anon"), "MiB", Better::Lower).value("ductd", o.max_anon_mib));
        out.push(
            fig(&format!("{label}.end_vm_rss_and_rss_anon"), "MiB", Better::Lower)
                .value("ductd", o.end_rss_mib)
                .note("rss_anon_mib", o.end_anon_mib),
        );
    }
    out.push(
        fig("both.cpu", "cores", Better::Lower)
            .value("ductd", both.cpu_s / both.wall_s)
            .value("snmpsimd", both.simulator_cpu_s / both.wall_s),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recording_is_in_oid_order_with_both_tables() {
        let r = recording(2);
        let oids: Vec<Vec<u32>> = r
            .lines()
            .map(|l| {
                l.split('|')
                    .next()
                    .unwrap()
                    .split('.')
                    .map(|a| a.parse().unwrap())
                    .collect()
            })
            .collect();
        let mut sorted = oids.clone();
        sorted.sort();
        assert_eq!(oids, sorted);
        assert!(r.contains("1.3.6.1.2.1.2.2.1.2.2|4|Gi0/2\n"));
        assert!(r.contains("1.3.6.1.2.1.31.1.1.1.6.1|70|10000001006\n"));
        assert_eq!(r.lines().filter(|l| l.starts_with("1.3.6.1.2.1.2.2.1.10.")).count(), 2);
    }

    #[test]
    fn devices_are_address_and_community_pairs() {
        assert_eq!(device(0, 50), ("127.3.0.1".to_string(), "dev000".to_string()));
        assert_eq!(device(51, 50), ("127.3.0.2".to_string(), "dev001".to_string()));
        assert_eq!(snmp_address(250), "127.3.1.1");
        let c = config(
            &Options {
                sources: 3,
                ..Options::default()
            },
            1,
            Some(161),
            Some(6343),
        );
        assert_eq!(c.matches("duct.sources.snmp.SNMP").count(), 3);
        assert!(c.contains("stagger: 20.000000"));
        assert!(c.contains("dnslookup: false"));
    }

    #[test]
    fn a_device_that_skips_an_interval_has_missed_a_poll() {
        let opts = Options {
            sources: 3,
            interval: 10.0,
            intervals: 3,
            ..Options::default()
        };
        let mut seen = Seen::default();
        seen.polls.insert("0".into(), vec![100.0, 110.0]);
        seen.polls.insert("1".into(), vec![101.0]);
        let (visible, missed, reporting) = poll_accounting(&seen, &opts, 115.0);
        assert_eq!((visible, reporting), (3, 2));
        // Device 1 missed 111; device 2, never seen, missed both polls
        // after its first.
        assert_eq!(missed, 1 + 2);
    }

    #[test]
    fn flow_datagrams_decode_with_their_frames() {
        let d = duct_sources::sflow::datagram::decode(&flow_datagrams(3)[5]).unwrap();
        assert_eq!(d.agent, std::net::IpAddr::from([127, 4, 0, 4]));
        match &d.samples[..] {
            [duct_sources::sflow::datagram::Sample::Flow { input, packets, .. }] => {
                assert_eq!(*input, 6);
                assert_eq!(packets.len(), FRAMES_PER_DATAGRAM);
            }
            other => panic!("{other:?}"),
        }
    }
}
