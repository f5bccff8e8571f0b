//! Log sources end to end: a real nginx, started here on a free loopback
//! port, writes its access logs (`combined`, and a custom format with
//! `$request_time`) into a temporary directory while the test makes
//! requests with a plain `TcpStream`; ductd follows both logs with
//! `duct.sources.nginx.NginxLog` and `NginxLogMetrics`. The logs are
//! rotated by the real logrotate mid-stream (rename with nginx reopening
//! on `USR1`, then `copytruncate`), ductd is killed with SIGKILL and
//! started again (with a rotation while it is down), and at the end every
//! request has been seen exactly once, as a log event and in the sums.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ductd_output, free_port, metric, require_binary, service, Running, Server, TempDir};
use serde_json::Value;

const TIMED: &str =
    r#"$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time "$http_user_agent""#;

/// nginx writing `logs/access.log` (combined) and `logs/timed.log`.
fn start_nginx(nginx: &Path) -> Server {
    let dir = TempDir::new("nginx-logs");
    let port = free_port();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  log_format timed '{TIMED}';
  server {{
    listen 127.0.0.1:{port};
    access_log {d}/logs/access.log combined;
    access_log {d}/logs/timed.log timed;
    location / {{ default_type text/plain; return 200 \"ok\\n\"; }}
  }}
}}
"
        ),
    );
    let mut cmd = Command::new(nginx);
    cmd.args(["-c", conf.to_str().unwrap(), "-p", dir.path().to_str().unwrap()]);
    cmd.args(["-e", &format!("{d}/error.log")]);
    Server::spawn(cmd, port, dir, "nginx")
}

/// One request, answered and logged before this returns.
fn request(port: u16, id: usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /r/{id} HTTP/1.1\r\nHost: test\r\nUser-Agent: duct \"test\" 1.0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// Requests `ids` one after another, 5 ms apart, on a thread of its own.
fn stream(port: u16, ids: std::ops::Range<usize>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for id in ids {
            request(port, id);
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Runs logrotate once, forced, with `options` for both logs.
fn logrotate(bin: &Path, server: &Server, options: &str) {
    let d = server.dir.path();
    let conf = server.dir.write(
        "logrotate.conf",
        &format!(
            "{logs}/access.log {logs}/timed.log {{
  rotate 5
  missingok
  nocompress
  {options}
}}
",
            logs = d.join("logs").display()
        ),
    );
    let out = Command::new(bin)
        .args(["-f", "-s"])
        .arg(d.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("run logrotate");
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What ductd reported: log events by request id, and the metric sums.
#[derive(Default)]
struct Seen {
    by_id: HashMap<usize, usize>,
    total_requests: f64,
    status_200: f64,
    percentiles: usize,
    user_agents: f64,
}

impl Seen {
    fn take(&mut self, ev: &Value) {
        let name = service(ev);
        if ev.get("kind").and_then(Value::as_str) == Some("log") {
            let request = ev["attributes"]["request"].as_str().unwrap_or_default();
            let id = request
                .strip_prefix("GET /r/")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a log event for an unknown request: {ev}"));
            *self.by_id.entry(id).or_default() += 1;
            assert_eq!(name, "nginx");
            assert!(ev["attributes"]["@timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')));
            return;
        }
        match name {
            "web.total_requests" => self.total_requests += metric(ev).unwrap_or(0.0),
            "web.status.200.requests" => self.status_200 += metric(ev).unwrap_or(0.0),
            "web.request_time.p50" | "web.request_time.p99" => self.percentiles += 1,
            "web.user-agent.duct \\x22test\\x22 1,0.requests" => self.user_agents += metric(ev).unwrap_or(0.0),
            _ => {}
        }
    }

    fn lines(&self) -> usize {
        self.by_id.values().sum()
    }

    /// Reads events until `made` requests are in the log events and in
    /// every sum (a window's events may reach the Logger in two flushes).
    fn wait(&mut self, agent: &Running, made: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let short = |v: f64| (v as usize) < made;
        while self.lines() < made || short(self.total_requests) || short(self.status_200) || short(self.user_agents) {
            let left = deadline.saturating_duration_since(Instant::now());
            match agent.next_event(left) {
                Some(ev) => self.take(&ev),
                None => panic!(
                    "after {timeout:?}: {} log events and {} requests summed ({} by status, {} by agent) of {made} made\nstderr:\n{}",
                    self.lines(),
                    self.total_requests,
                    self.status_200,
                    self.user_agents,
                    agent.stderr()
                ),
            }
        }
    }

    /// Every request seen exactly once.
    fn check(&self, made: usize) {
        let repeated: Vec<_> = self.by_id.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "requests seen more than once: {repeated:?}");
        let missing: Vec<_> = (0..made).filter(|id| !self.by_id.contains_key(id)).collect();
        assert!(missing.is_empty(), "requests never seen: {missing:?}");
        assert_eq!(self.lines(), made);
        assert_eq!(self.total_requests as usize, made, "sum of total_requests");
        assert_eq!(self.status_200 as usize, made, "sum of status.200.requests");
        assert_eq!(self.user_agents as usize, made, "sum by user agent");
    }
}

/// Waits until every position saved under `state` is the end of its file
/// (found by inode in `logs`, where rotation may have renamed it): all
/// that was read has been handed on and saved, so a SIGKILL now loses
/// nothing and a restart repeats nothing.
fn wait_for_saved_ends(state: &Path, logs: &Path, timeout: Duration) {
    use std::os::unix::fs::MetadataExt;
    let deadline = Instant::now() + timeout;
    loop {
        let sizes: HashMap<u64, u64> = std::fs::read_dir(logs)
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| (m.ino(), m.len()))
            .collect();
        let saved: Vec<Value> = std::fs::read_dir(state.join("logs"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default();
        let behind: Vec<String> = saved
            .iter()
            .flat_map(|s| s["files"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| {
                let size = *sizes.get(&f["ino"].as_u64()?)?;
                (f["offset"].as_u64() != Some(size)).then(|| format!("{} at {} of {size}", f["path"], f["offset"]))
            })
            .collect();
        if saved.len() == 2 && behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "positions not saved within {timeout:?}: {} state files; behind: {behind:?}",
            saved.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(server: &Server) -> PathBuf {
    let d = server.dir.path().display();
    server.dir.write(
        "duct.yml",
        &format!(
            r#"outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: weblog
    source: duct.sources.nginx.NginxLog
    file: {d}/logs/access.log
    history: true
    max_lines: 0
    interval: 0.2
    state_dir: {d}/state
  - service: web
    source: duct.sources.nginx.NginxLogMetrics
    file: {d}/logs/timed.log
    log_format: '{TIMED}'
    history: true
    max_lines: 0
    resolution: 1
    interval: 0.2
    state_dir: {d}/state
"#
        ),
    )
}

#[test]
fn nginx_logs_are_counted_exactly_across_rotations_and_a_kill() {
    let Some(nginx) = require_binary("nginx", "nginx-light") else {
        return;
    };
    let Some(rotate) = require_binary("logrotate", "logrotate") else {
        return;
    };
    let server = start_nginx(&nginx);
    let port = server.port;
    let config = config(&server);
    let config = config.to_str().unwrap();
    let mut seen = Seen::default();
    // Generous: CI runs hundreds of tests on two cores beside this one.
    let patience = Duration::from_secs(120);

    let agent = Running::start(&["-c", config]);
    for id in 0..20 {
        request(port, id);
    }
    seen.wait(&agent, 20, patience);

    // Rename rotation while requests keep coming: nginx writes the renamed
    // file until USR1 makes it reopen its logs.
    let flow = stream(port, 20..120);
    std::thread::sleep(Duration::from_millis(150));
    let pid = server.child.id();
    logrotate(
        &rotate,
        &server,
        &format!("create\n  sharedscripts\n  postrotate\n    kill -USR1 {pid}\n  endscript"),
    );
    flow.join().unwrap();
    seen.wait(&agent, 120, patience);
    assert!(server.dir.path().join("logs/access.log.1").exists());

    // copytruncate right after a burst, before ductd has read all of it:
    // the rest is read from the copy.
    for id in 120..160 {
        request(port, id);
    }
    logrotate(&rotate, &server, "copytruncate");
    for id in 160..180 {
        request(port, id);
    }
    seen.wait(&agent, 180, patience);

    // Killed once everything read was delivered and its positions saved
    // (what sits in an output's memory queue at SIGKILL is lost, and a kill
    // between handing a tick on and saving repeats it; see
    // docs/log-sources.md); the logs go on growing and are rotated while
    // ductd is down.
    wait_for_saved_ends(
        &server.dir.path().join("state"),
        &server.dir.path().join("logs"),
        patience,
    );
    for ev in agent.collect_for(Duration::from_millis(500)) {
        seen.take(&ev);
    }
    let first_log = agent.stderr();
    assert!(first_log.contains("was replaced by a new file"), "{first_log}");
    assert!(first_log.contains("was truncated"), "{first_log}");
    for line in first_log
        .lines()
        .filter(|l| l.contains("truncated") || l.contains("copy"))
    {
        eprintln!("ductd: {line}");
    }
    agent.signal(libc::SIGKILL);
    drop(agent);
    let flow = stream(port, 180..230);
    flow.join().unwrap();
    logrotate(
        &rotate,
        &server,
        &format!("create\n  sharedscripts\n  postrotate\n    kill -USR1 {pid}\n  endscript"),
    );
    for id in 230..250 {
        request(port, id);
    }

    let agent = Running::start(&["-c", config]);
    let flow = stream(port, 250..300);
    flow.join().unwrap();
    seen.wait(&agent, 300, patience);
    // Nothing more comes: no line read twice.
    for ev in agent.collect_for(Duration::from_secs(3)) {
        seen.take(&ev);
    }
    seen.check(300);
    assert!(seen.percentiles > 0, "request_time percentiles per window");
    let log = agent.stderr();
    assert!(log.contains("while stopped"), "{log}");
}

#[test]
fn a_graceful_restart_or_a_reload_mid_stream_neither_loses_nor_repeats_a_line() {
    let Some(nginx) = require_binary("nginx", "nginx-light") else {
        return;
    };
    let server = start_nginx(&nginx);
    let port = server.port;
    let config = config(&server);
    let config = config.to_str().unwrap();
    let mut seen = Seen::default();

    let mut agent = Running::start(&["-c", config]);
    let flow = stream(port, 0..500);
    // Stopped with SIGTERM twice while nginx keeps writing, and started
    // again at once each time.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        let (code, rest) = agent.terminate(Duration::from_secs(60));
        assert_eq!(code, Some(0));
        for ev in &rest {
            seen.take(ev);
        }
        agent = Running::start(&["-c", config]);
    }
    // A reload that changes both sources' blocks: each is rebuilt and
    // carries on from where the one it replaces stopped.
    std::thread::sleep(Duration::from_millis(500));
    let changed = std::fs::read_to_string(config)
        .unwrap()
        .replace("interval: 0.2", "interval: 0.25");
    std::fs::write(config, changed).unwrap();
    agent.signal(libc::SIGHUP);
    flow.join().unwrap();
    seen.wait(&agent, 500, Duration::from_secs(120));
    for ev in agent.collect_for(Duration::from_secs(3)) {
        seen.take(&ev);
    }
    seen.check(500);
    assert!(
        agent.wait_for_log("sources_started=2 sources_stopped=2", Duration::from_secs(60)),
        "{}",
        agent.stderr()
    );
}

/// Writes `text` at the end of `path`.
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn a_pattern_picks_up_new_files_and_lines_that_do_not_fit_are_counted_not_fatal() {
    let dir = TempDir::new("log-glob");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let good = |n: usize| {
        (0..n)
            .map(|i| {
                format!(
                    "10.0.0.{i} - - [03/Dec/2026:06:20:0{} +0000] \"GET /p/{i} HTTP/1.1\" 200 10 \"-\" \"t\"\n",
                    i % 10
                )
            })
            .collect::<String>()
    };
    append(&logs.join("a.log"), &good(5));
    append(&logs.join("a.log"), "this is not an access log line\n");
    // A rotated, compressed file beside it is never read.
    append(&logs.join("a.log.2.gz"), &good(7));
    let config = dir.write(
        "duct.yml",
        &format!(
            r#"outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: web
    source: duct.sources.nginx.NginxLogMetrics
    file: {logs}/*.log*
    history: true
    resolution: 1
    interval: 0.2
    state_dir: {state}
  - service: weblog
    source: duct.sources.nginx.NginxLog
    file: {logs}/*.log
    history: true
    interval: 0.2
    state_dir: {state}
"#,
            logs = logs.display(),
            state = dir.path().join("state").display()
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    let mut requests = 0.0;
    let mut logged = Vec::new();
    let take = |ev: Value, requests: &mut f64, logged: &mut Vec<Value>| {
        if service(&ev) == "web.total_requests" {
            *requests += metric(&ev).unwrap_or(0.0);
        } else if service(&ev) == "nginx" {
            logged.push(ev);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while (requests < 5.0 || logged.len() < 6) && Instant::now() < deadline {
        if let Some(ev) = agent.next_event(Duration::from_millis(200)) {
            take(ev, &mut requests, &mut logged);
        }
    }
    // A file that appears later is read from its start.
    append(&logs.join("b.log"), &good(3));
    while (requests < 8.0 || logged.len() < 9) && Instant::now() < deadline {
        if let Some(ev) = agent.next_event(Duration::from_millis(200)) {
            take(ev, &mut requests, &mut logged);
        }
    }
    for ev in agent.collect_for(Duration::from_secs(2)) {
        take(ev, &mut requests, &mut logged);
    }
    assert_eq!(
        requests,
        8.0,
        "5 + 3 requests, the bad line and the .gz not counted\n{}",
        agent.stderr()
    );
    assert_eq!(logged.len(), 9, "NginxLog ships the bad line too");
    let bad: Vec<_> = logged
        .iter()
        .filter(|e| e["attributes"]["parse_error"].is_string())
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["attributes"]["message"], "this is not an access log line");
    let log = agent.stderr();
    assert!(log.contains("lines do not match log_format"), "{log}");
    assert!(
        log.contains("this is not an access log line"),
        "a sample of the line: {log}"
    );
}

/// Log event ids (`GET /o/ID`) and the sum of `total_requests` in `events`.
fn once_counts(events: &[Value]) -> (Vec<usize>, f64) {
    let mut ids = Vec::new();
    let mut total = 0.0;
    for ev in events {
        if ev.get("kind").and_then(Value::as_str) == Some("log") {
            let request = ev["attributes"]["request"].as_str().unwrap_or_default();
            let id = request.strip_prefix("GET /o/").and_then(|r| r.split(' ').next());
            ids.push(
                id.and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unknown request: {ev}")),
            );
        } else if service(ev) == "web.total_requests" {
            total += metric(ev).unwrap_or(0.0);
        }
    }
    ids.sort_unstable();
    (ids, total)
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn ductd_once_reads_from_the_agents_positions_and_leaves_them_as_they_were() {
    let dir = TempDir::new("log-once");
    let log = dir.path().join("access.log");
    let state = dir.path().join("state");
    // 2020: every window is long over, so the agent closes them at once.
    let lines = |ids: std::ops::Range<usize>| {
        ids.map(|i| {
            format!(
                "10.0.0.1 - - [01/Dec/2020:06:20:{:02} +0000] \"GET /o/{i} HTTP/1.1\" 200 10 \"-\" \"t\"\n",
                i % 60
            )
        })
        .collect::<String>()
    };
    append(&log, &lines(0..10));
    let config = dir.write(
        "duct.yml",
        &format!(
            r#"outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: weblog
    source: duct.sources.nginx.NginxLog
    file: {log}
    history: true
    interval: 0.2
    state_dir: {state}
  - service: web
    source: duct.sources.nginx.NginxLogMetrics
    file: {log}
    history: true
    resolution: 10
    interval: 0.2
    state_dir: {state}
"#,
            log = log.display(),
            state = state.display()
        ),
    );
    let config = config.to_str().unwrap();
    let once = || {
        let (code, stdout, stderr) = ductd_output(&["once", "-c", config]);
        assert_eq!(code, 0, "ductd once failed:\n{stderr}");
        let events: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        once_counts(&events)
    };

    // Before the agent ever ran: `history` decides, and no state is made.
    assert_eq!(once(), ((0..10).collect(), 10.0), "windows are handed on partial");
    assert!(!state.exists(), "once wrote state: {:?}", snapshot(&state.join("logs")));

    let agent = Running::start(&["-c", config]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while once_counts(&seen) != ((0..10).collect(), 10.0) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = agent
            .next_event(left)
            .unwrap_or_else(|| panic!("the agent read {:?}\n{}", once_counts(&seen), agent.stderr()));
        seen.push(ev);
    }
    let (code, _) = agent.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let saved = snapshot(&state.join("logs"));
    assert_eq!(saved.len(), 2, "one state file per source");

    // Lines the agent has not read yet: `once` shows them, twice if run
    // twice, and moves no position.
    append(&log, &lines(10..15));
    for _ in 0..2 {
        assert_eq!(once(), ((10..15).collect(), 5.0));
        assert_eq!(
            snapshot(&state.join("logs")),
            saved,
            "once changed the agent's positions"
        );
    }

    // The agent resumes where it stopped: the five lines, once each.
    let agent = Running::start(&["-c", config]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while once_counts(&seen) != ((10..15).collect(), 5.0) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = agent
            .next_event(left)
            .unwrap_or_else(|| panic!("the agent read {:?}\n{}", once_counts(&seen), agent.stderr()));
        seen.push(ev);
    }
    seen.extend(agent.collect_for(Duration::from_secs(2)));
    assert_eq!(once_counts(&seen), ((10..15).collect(), 5.0), "nothing read twice");
}
