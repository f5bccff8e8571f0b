//! The Linux host sources end to end: `ductd once` against a fake
//! `/proc` and `/sys` tree (exact values, through `HOST_PROC`, `HOST_SYS`
//! and `HOST_ROOT`), and against this machine with
//! `prometheus-node-exporter` reading the same kernel as a peer.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{metric, service, state, Server, TempDir};
use serde_json::Value;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../crates/duct-sources/tests/fixtures/linux/", $name))
    };
}

/// Events by service; a service seen twice keeps the last.
fn by_service(stdout: &str) -> HashMap<String, Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .map(|v| (service(&v).to_string(), v))
        .collect()
}

fn value(events: &HashMap<String, Value>, name: &str) -> f64 {
    let ev = events.get(name).unwrap_or_else(|| {
        let mut names: Vec<&String> = events.keys().collect();
        names.sort();
        panic!("no event {name}; got {names:?}")
    });
    metric(ev).unwrap_or_else(|| panic!("{name} has no metric: {ev}"))
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

/// The paths of the files `pid` has open.
fn open_files(pid: u32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn statvfs(path: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string and a zeroed struct statvfs fills in.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0, "statvfs {}", path.display());
        st
    }
}

#[test]
fn once_reads_a_fake_host_tree_exactly() {
    let dir = TempDir::new("host-tree");
    dir.write("proc/loadavg", fixture!("loadavg"));
    dir.write("proc/meminfo", fixture!("meminfo-2.6.18"));
    dir.write("proc/stat", fixture!("stat"));
    dir.write("proc/diskstats", fixture!("diskstats-wrap-before"));
    // With HOST_PROC set, Network tries the host init's view first
    // (1/net/dev) and falls back to this one; DiskFree with HOST_ROOT
    // reads the init's mount table.
    dir.write("proc/net/dev", fixture!("net-dev-wrap-before"));
    dir.write("proc/1/mounts", "/dev/fakeroot / ext4 rw 0 0\nproc /proc proc rw 0 0\n");
    for pid in ["1", "2", "300"] {
        dir.write(&format!("proc/{pid}/comm"), "x\n");
    }
    let hwmon = "sys/class/hwmon/hwmon0";
    dir.write(&format!("{hwmon}/name"), "coretemp\n");
    dir.write(&format!("{hwmon}/temp1_input"), "46500\n");
    dir.write(&format!("{hwmon}/temp1_label"), "Package id 0\n");
    dir.write(&format!("{hwmon}/fan1_input"), "1234\n");
    std::fs::create_dir_all(dir.path().join("root")).unwrap();
    let config = dir.write(
        "duct.yml",
        "interval: 3.0
outputs:
  - output: duct.outputs.logger.Logger
sources:
  - {service: load, source: duct.sources.linux.basic.LoadAverage}
  - {service: mem, source: duct.sources.linux.basic.Memory}
  - {service: cpu, source: duct.sources.linux.basic.CPU}
  - {service: io, source: duct.sources.linux.basic.DiskIO}
  - {service: net, source: duct.sources.linux.basic.Network}
  - {service: df, source: duct.sources.linux.basic.DiskFree}
  - {service: hw, source: duct.sources.linux.sensors.Sensors}
  - {service: procs, source: duct.sources.linux.process.ProcessCount}
",
    );
    let child = Command::new(common::ductd_bin())
        .args(["once", "--rate-wait", "3", "-c", config.to_str().unwrap()])
        .env("HOST_PROC", dir.path().join("proc"))
        .env("HOST_SYS", dir.path().join("sys"))
        .env("HOST_ROOT", dir.path().join("root"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ductd once");
    // The sources keep their files open between ticks: once they all are,
    // the first tick is done and the files can move on for the second.
    let watched = ["proc/stat", "proc/diskstats", "proc/net/dev"].map(|f| dir.path().join(f));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = open_files(child.id());
        if watched.iter().all(|w| open.contains(w)) {
            break;
        }
        assert!(Instant::now() < deadline, "ductd never opened {watched:?}: {open:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A file is open a moment before it is read: let the first tick's
    // reads finish before the content changes (the second tick is 3 s off).
    std::thread::sleep(Duration::from_millis(300));
    let first_tick_done = Instant::now();
    dir.write("proc/stat", fixture!("stat-later"));
    dir.write("proc/diskstats", fixture!("diskstats-wrap-after"));
    dir.write("proc/net/dev", fixture!("net-dev-wrap-after"));
    let out = child.wait_with_output().expect("ductd once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        first_tick_done.elapsed() > Duration::from_secs(1),
        "ductd ended too soon after its first tick for the files to have changed in between"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = by_service(&String::from_utf8_lossy(&out.stdout));

    assert_eq!(value(&events, "load"), 0.37);
    // meminfo of 2.6.18: no MemAvailable, so MemFree + Buffers + Cached.
    assert_eq!(
        value(&events, "mem"),
        (2074084.0 - (103960.0 + 166316.0 + 1235448.0)) / 2074084.0
    );
    assert_eq!(events["mem"]["description"], "Memory 568360/2074084");
    // stat → stat-later: 150 user + 50 system of 500 ticks; core1 100 of 300.
    assert_eq!(value(&events, "cpu"), 0.4);
    assert_eq!(value(&events, "cpu.user"), 0.3);
    assert_eq!(value(&events, "cpu.core1"), 1.0 / 3.0);
    assert_eq!(value(&events, "cpu.core0.idle"), 0.5);
    // Latencies over the second tick, across a 32-bit wrap of the ms counters.
    assert_eq!(value(&events, "io./dev/sdc.read_latency"), 10.0);
    assert_eq!(value(&events, "io./dev/sdc.write_latency"), 5.1);
    // Rates over ~3 s: 100 reads of 8 sectors each; bytes per read exact.
    let reads = value(&events, "io./dev/sdc.reads");
    assert!((100.0 / 4.0..=100.0 / 2.5).contains(&reads), "{reads}");
    let per_read = value(&events, "io./dev/sdc.read_bytes") / reads;
    assert!(close(per_read, 8.0 * 512.0, 0.01), "{per_read}");
    // Receive bytes cross 2^64: 616 + 1000 in the same window as 10 packets.
    let rx = value(&events, "net.eth0.rx_bytes");
    let rx_packets = value(&events, "net.eth0.rx_packets");
    assert!(close(rx / rx_packets, 161.6, 0.01), "{rx} / {rx_packets}");
    assert!(close(value(&events, "net.eth0.tx_bytes") / rx_packets, 200.0, 0.01));
    assert_eq!(value(&events, "net.eth0.tx_errors"), 0.0, "zero rates are emitted");
    // Sensors and processes.
    assert_eq!(value(&events, "hw.coretemp.package_id_0"), 46.5);
    assert_eq!(value(&events, "hw.coretemp.fan1"), 1234.0);
    assert_eq!(value(&events, "procs"), 3.0);
    // DiskFree measured HOST_ROOT/ for the fake root device.
    let st = statvfs(&dir.path().join("root"));
    let kb = |blocks: u64| blocks as f64 * st.f_frsize as f64 / 1024.0;
    let free = value(&events, "df./dev/fakeroot.free");
    let used = value(&events, "df./dev/fakeroot.bytes");
    let slack = kb(st.f_blocks) * 0.01;
    assert!(close(free, kb(st.f_bavail), slack), "{free} vs {}", kb(st.f_bavail));
    assert!(close(used, kb(st.f_blocks - st.f_bfree), slack), "{used}");
    assert!(
        !events.keys().any(|k| k.starts_with("df.proc")),
        "pseudo filesystems are skipped"
    );
    for ev in events.values() {
        assert_eq!(state(ev), "ok", "{ev}");
    }
}

/// A plain HTTP/1.0 GET of `/metrics`; the body's samples by name and
/// labels (`name{a="b"}`).
fn scrape(port: u16) -> HashMap<String, f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the exporter");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the exposition");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sums the samples whose series name is `name` and whose labels contain
/// every one of `labels`.
fn sum(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Busy fraction from `node_cpu_seconds_total` between two scrapes.
fn busy_between(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> f64 {
    let delta = |mode: &str| {
        let label = format!("mode=\"{mode}\"");
        sum(b, "node_cpu_seconds_total", &[&label]) - sum(a, "node_cpu_seconds_total", &[&label])
    };
    let modes = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    let total: f64 = modes.iter().map(|m| delta(m)).sum();
    1.0 - (delta("idle") + delta("iowait")) / total
}

/// Pushes bytes through a loopback TCP connection until dropped, so that
/// `lo` has traffic to measure.
struct LoopbackTraffic {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LoopbackTraffic {
    fn start() -> LoopbackTraffic {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sink = std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 65536];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        let flag = stop.clone();
        let source = std::thread::spawn(move || {
            let mut conn = TcpStream::connect(addr).unwrap();
            let chunk = [7u8; 32 * 1024];
            while !flag.load(Ordering::Relaxed) {
                if conn.write_all(&chunk).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        LoopbackTraffic {
            stop,
            threads: vec![source, sink],
        }
    }
}

impl Drop for LoopbackTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn once_agrees_with_node_exporter_on_this_machine() {
    let Some(exporter) = common::require_binary("prometheus-node-exporter", "prometheus-node-exporter") else {
        return;
    };
    let port = common::free_port();
    let mut cmd = Command::new(exporter);
    cmd.args([
        &format!("--web.listen-address=127.0.0.1:{port}"),
        "--collector.disable-defaults",
        "--collector.cpu",
        "--collector.meminfo",
        "--collector.loadavg",
        "--collector.filesystem",
        "--collector.netdev",
        // Its default leaves `lo` out; nothing is left out here.
        "--collector.netdev.device-exclude=^$",
    ]);
    let _server = Server::spawn(cmd, port, TempDir::new("node-exporter"), "prometheus-node-exporter");
    let dir = TempDir::new("host-vs-exporter");
    let config = dir.write(
        "duct.yml",
        "interval: 1.0
outputs:
  - output: duct.outputs.logger.Logger
sources:
  - {service: load, source: duct.sources.linux.basic.LoadAverage}
  - {service: mem, source: duct.sources.linux.basic.Memory}
  - {service: cpu, source: duct.sources.linux.basic.CPU, per_core: false}
  - {service: net, source: duct.sources.linux.basic.Network, interfaces: [lo]}
  - {service: df, source: duct.sources.linux.basic.DiskFree}
",
    );
    let _traffic = LoopbackTraffic::start();
    std::thread::sleep(Duration::from_millis(200));

    // CPU use moves with whatever else runs here; the two windows differ
    // by ductd's start and exit. A real disagreement shows in every try.
    let mut cpu_gaps = Vec::new();
    for _attempt in 0..3 {
        let before = scrape(port);
        let started = Instant::now();
        let out = common::ductd(&["once", "-c", config.to_str().unwrap()])
            .output()
            .expect("run ductd once");
        let window = started.elapsed().as_secs_f64();
        let after = scrape(port);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let events = by_service(&String::from_utf8_lossy(&out.stdout));

        // Memory: the same formula over the same file.
        let used =
            |s: &HashMap<String, f64>| 1.0 - s["node_memory_MemAvailable_bytes"] / s["node_memory_MemTotal_bytes"];
        let mem = value(&events, "mem");
        assert!(
            close(mem, used(&before), 0.01) || close(mem, used(&after), 0.01),
            "memory {mem} vs {} / {}",
            used(&before),
            used(&after)
        );

        // Load: equal to a reading on either side, or close if it moved.
        let load = value(&events, "load");
        let (la, lb) = (before["node_load1"], after["node_load1"]);
        assert!(
            close(load, la, 0.1) || close(load, lb, 0.1),
            "load {load} vs {la} / {lb}"
        );

        // Filesystems: each device ductd reports, as the exporter sees it.
        let mut compared = 0;
        for (name, ev) in &events {
            let Some(device) = name.strip_prefix("df.").and_then(|n| n.strip_suffix(".free")) else {
                continue;
            };
            let label = format!("device=\"{device}\"");
            let Some(key) = after
                .keys()
                .find(|k| k.starts_with("node_filesystem_avail_bytes{") && k.contains(&label))
            else {
                continue;
            };
            let series = key.trim_start_matches("node_filesystem_avail_bytes");
            let avail_kb = after[key] / 1024.0;
            let size = after[&format!("node_filesystem_size_bytes{series}")];
            let used_kb = (size - after[&format!("node_filesystem_free_bytes{series}")]) / 1024.0;
            let free = metric(ev).unwrap();
            let ductd_used = value(&events, &format!("df.{device}.bytes"));
            assert!(
                close(free, avail_kb, avail_kb * 0.01),
                "{device} free {free} kB vs {avail_kb}"
            );
            assert!(
                close(ductd_used, used_kb, (size / 1024.0) * 0.01),
                "{device} used {ductd_used} kB vs {used_kb}"
            );
            compared += 1;
        }
        assert!(compared > 0, "no filesystem in common: {:?}", events.keys());

        // Network: what ductd counted in its ~1 s between ticks is part of
        // what the exporter counted around the whole run, and with steady
        // traffic not far from its average.
        let rx = value(&events, "net.lo.rx_bytes");
        let series = "node_network_receive_bytes_total{device=\"lo\"}";
        let delta = after[series] - before[series];
        assert!(rx > 0.0, "loopback traffic was running");
        assert!(
            rx * 1.0 <= delta * 1.02,
            "rate {rx} B/s over ≥1 s exceeds the counter's {delta} B"
        );
        assert!(
            rx >= 0.25 * delta / window,
            "rate {rx} far below the average {}",
            delta / window
        );

        // CPU over the same second.
        let cpu = value(&events, "cpu");
        let theirs = busy_between(&before, &after);
        eprintln!(
            "ductd vs node_exporter: memory {mem:.4} / {:.4}, load {load} / {la}, cpu {cpu:.3} / {theirs:.3}, \
             lo {rx:.0} B/s / {delta} B in {window:.2} s",
            used(&after)
        );
        cpu_gaps.push((cpu - theirs).abs());
        if (cpu - theirs).abs() <= 0.05 {
            return;
        }
        eprintln!("cpu busy {cpu} vs node_exporter {theirs}; trying again");
    }
    panic!("CPU busy fraction off by more than 5 points in every try: {cpu_gaps:?}");
}
