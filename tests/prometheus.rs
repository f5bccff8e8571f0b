//! The Prometheus output as Prometheus sees it: `promtool check metrics` on
//! the page, and a real `prometheus` scraping ductd and answering a PromQL
//! query with the value sent. Events come in through the Riemann listener,
//! from `riemann-client`, so their host, value, attributes and TTL are the
//! test's.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, require_binary, wait_for_port, Running, Server, TempDir};
use serde_json::Value;

/// GET `path` on `port` with `accept`; (content type, body).
fn get(port: u16, path: &str, accept: Option<&str>) -> (String, String) {
    try_get(port, path, accept).expect("a 200 answer")
}

/// The page's body, or empty when it cannot be had now (a page being
/// restarted).
fn page_text(port: u16) -> String {
    try_get(port, "/metrics", None)
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn try_get(port: u16, path: &str, accept: Option<&str>) -> Option<(String, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    Some((content_type, body.to_string()))
}

fn until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn send(client: &Path, port: u16, args: &[&str]) {
    let status = Command::new(client)
        .arg("send")
        .args(args)
        .args(["127.0.0.1", &port.to_string()])
        .status()
        .expect("run riemann-client");
    assert!(status.success(), "riemann-client {args:?}");
}

/// A PromQL instant query against `prometheus` on `port`: the result list.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to prometheus");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        conn,
        "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Prometheus may answer chunked: the JSON object is between the braces.
    let json = body.find('{').zip(body.rfind('}')).map_or("", |(a, b)| &body[a..=b]);
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn prometheus_scrapes_what_ductd_received() {
    let Some(client) = require_binary("riemann-client", "riemann-c-client") else {
        return;
    };
    let Some(prometheus) = require_binary("prometheus", "prometheus") else {
        return;
    };
    let Some(promtool) = require_binary("promtool", "prometheus") else {
        return;
    };
    let dir = TempDir::new("prometheus-output");
    let (riemann, page) = (free_port(), free_port());
    let config = dir.write(
        "duct.yml",
        &format!(
            "sources:
  - service: listener
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {riemann}
  # The agent's own figures: names with spaces, dots and `#`.
  - service: ductd
    source: duct.sources.Duct
    interval: 0.5
outputs:
  - output: duct.outputs.prometheus.Prometheus
    bind: 127.0.0.1
    port: {page}
    interval: 0.2
"
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    assert!(wait_for_port(riemann, Duration::from_secs(10)), "{}", agent.stderr());
    assert!(wait_for_port(page, Duration::from_secs(10)), "{}", agent.stderr());

    send(
        &client,
        riemann,
        &[
            "--host=web1",
            "--service=web.latency",
            "--metric-d=12.5",
            "--state=ok",
            "--attribute=dc=ams",
            "--ttl=300",
        ],
    );
    // riemann-client adds an attribute of its own, x-client.
    let line = "duct_web_latency{host=\"web1\",state=\"ok\",dc=\"ams\",x_client=\"riemann-c-client\"} 12.5";
    assert!(
        until(Duration::from_secs(10), || page_text(page).contains(line)),
        "{}\n{}",
        page_text(page),
        agent.stderr()
    );
    let (content_type, text) = get(page, "/metrics", None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        text.contains("# HELP duct_web_latency web.latency\n# TYPE duct_web_latency gauge\n"),
        "{text}"
    );
    assert!(
        until(Duration::from_secs(10), || page_text(page)
            .contains("\nduct_ductd_output_Prometheus_0_sent{host=")),
        "{}",
        page_text(page)
    );
    let (_, text) = get(page, "/metrics", None);

    // promtool reads the page as Prometheus does and lints it.
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A short-lived series appears, and goes when its TTL (2 s) has passed.
    send(
        &client,
        riemann,
        &["--host=web1", "--service=short lived", "--metric-sint64=7", "--ttl=2"],
    );
    let short = "duct_short_lived{host=\"web1\",x_client=\"riemann-c-client\"} 7\n";
    assert!(
        until(Duration::from_secs(10), || page_text(page).contains(short)),
        "{}",
        page_text(page)
    );
    assert!(
        until(Duration::from_secs(10), || try_get(page, "/metrics", None)
            .is_some_and(|(_, body)| !body.contains("short_lived"))),
        "{}",
        page_text(page)
    );

    let (content_type, om) = get(page, "/metrics", Some("application/openmetrics-text; version=1.0.0"));
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(om.contains(line) && om.ends_with("# EOF\n"), "{om}");

    // Names ending as counters, summaries and histograms do: still gauges
    // under Duct's names (promtool's lint objects to those, exit 3, so they
    // come after its check), and the scrape must not fail on them.
    for service in [
        "requests total",
        "jobs.created",
        "build.info",
        "latency_bucket",
        "rows.count",
    ] {
        send(
            &client,
            riemann,
            &[
                "--host=web1",
                &format!("--service={service}"),
                "--metric-d=1",
                "--ttl=300",
            ],
        );
    }

    // A real Prometheus scrapes the page (it asks for OpenMetrics first).
    let web = free_port();
    let prom_dir = TempDir::new("prometheus-server");
    let prom_config = prom_dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ductd\n    static_configs:\n      - targets: ['127.0.0.1:{page}']\n"
        ),
    );
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"));
    let _server = Server::spawn(cmd, web, prom_dir, "prometheus");
    assert!(
        until(Duration::from_secs(30), || query(web, "up{job=\"ductd\"}")
            .first()
            .is_some_and(|r| r["value"][1] == "1")),
        "prometheus scraped ductd without error: {:?}",
        query(web, "up")
    );
    let mut found = Vec::new();
    assert!(
        until(Duration::from_secs(30), || {
            found = query(web, "duct_web_latency");
            !found.is_empty()
        }),
        "{}",
        agent.stderr()
    );
    let series = &found[0];
    assert_eq!(series["value"][1], "12.5", "{series}");
    assert_eq!(series["metric"]["host"], "web1", "{series}");
    assert_eq!(series["metric"]["state"], "ok", "{series}");
    assert_eq!(series["metric"]["dc"], "ams", "{series}");
    for name in [
        "duct_requests_total",
        "duct_jobs_created",
        "duct_build_info",
        "duct_latency_bucket",
        "duct_rows_count",
    ] {
        let found = query(web, name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert_eq!(found[0]["value"][1], "1", "{name}");
    }

    let (code, _) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
}

/// `/ready` on the health endpoint: its status code.
fn ready(port: u16) -> u16 {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = conn.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_taken_port_is_retried_and_a_reload_rebinds_the_page() {
    let dir = TempDir::new("prometheus-reload");
    let (page, health) = (free_port(), free_port());
    let config = |prefix: &str| {
        format!(
            "health:
  listen: 127.0.0.1:{health}
sources:
  - service: wave
    source: duct.sources.generator.Function
    interval: 0.2
outputs:
  - output: duct.outputs.prometheus.Prometheus
    bind: 127.0.0.1
    port: {page}
    prefix: {prefix}
    interval: 0.2
"
        )
    };
    let path = dir.write("duct.yml", &config("first_"));
    // Something else holds the port when ductd starts.
    let holder = std::net::TcpListener::bind(("127.0.0.1", page)).unwrap();
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    assert!(wait_for_port(health, Duration::from_secs(10)), "{}", agent.stderr());
    assert!(
        agent.wait_for_log("cannot listen on 127.0.0.1", Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    assert_eq!(ready(health), 503, "not ready while the page is not served");
    drop(holder);
    assert!(
        until(Duration::from_secs(20), || ready(health) == 200),
        "{}",
        agent.stderr()
    );
    assert!(
        until(Duration::from_secs(10), || page_text(page)
            .contains("\nfirst_wave{host=")),
        "{}",
        agent.stderr()
    );

    // A reload that changes the block: the old page closes, the new one
    // binds the same port.
    dir.write("duct.yml", &config("second_"));
    agent.signal(libc::SIGHUP);
    assert!(
        until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", page)).is_ok() && page_text(page).contains("\nsecond_wave{host=")
        }),
        "{}",
        agent.stderr()
    );
    assert!(!get(page, "/metrics", None).1.contains("first_"));
    let (code, _) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
}

/// A Prometheus receiving remote write, keeping its data in `data`.
fn start_receiver(prometheus: &Path, data: &Path, web: u16) -> Server {
    let dir = TempDir::new("prometheus-receiver-run");
    let config = dir.write("prometheus.yml", "global:\n  scrape_interval: 1m\n");
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .arg("--web.enable-remote-write-receiver");
    Server::spawn(cmd, web, dir, "prometheus")
}

#[test]
fn remote_write_reaches_prometheus_across_its_restart_exactly() {
    let Some(prometheus) = require_binary("prometheus", "prometheus") else {
        return;
    };
    let data = TempDir::new("prometheus-receiver-data");
    let web = free_port();
    let mut server = Some(start_receiver(&prometheus, data.path(), web));
    let dir = TempDir::new("remote-write-agent");
    let config = dir.write(
        "duct.yml",
        &format!(
            "hostname: web1
outputs:
  - output: duct.outputs.prometheus.RemoteWrite
    name: remote
    url: http://127.0.0.1:{web}/api/v1/write
    interval: 0.3
    backoff_max: 0.5
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.1
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.2
    route: [remote, log]
    attributes:
      role: web
"
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    let count = || {
        query(web, "count_over_time(duct_answer[1h])")
            .first()
            .and_then(|r| r["value"][1].as_str().and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(0)
    };
    assert!(until(Duration::from_secs(30), || count() >= 5), "{}", agent.stderr());
    let found = query(web, "duct_answer");
    assert_eq!(found[0]["metric"]["host"], "web1", "{found:?}");
    assert_eq!(found[0]["metric"]["role"], "web", "{found:?}");
    assert_eq!(found[0]["value"][1], "42", "{found:?}");
    // Killed and restarted on the same data: what was queued meanwhile
    // arrives, and nothing twice.
    drop(server.take());
    std::thread::sleep(Duration::from_secs(2));
    server = Some(start_receiver(&prometheus, data.path(), web));
    assert!(wait_for_port(web, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_secs(2));
    let mut made = 0;
    while let Some(ev) = agent.next_event(Duration::from_millis(100)) {
        made += u64::from(common::service(&ev) == "answer");
    }
    let log = agent.stderr();
    let (code, rest) = agent.terminate(Duration::from_secs(30));
    made += rest.iter().filter(|e| common::service(e) == "answer").count() as u64;
    assert_eq!(code, Some(0), "{log}");
    let mut stored = 0;
    until(Duration::from_secs(10), || {
        stored = count();
        stored >= made
    });
    assert_eq!(stored, made, "events made {made}, samples stored {stored}\n{log}");
    drop(server);
}
