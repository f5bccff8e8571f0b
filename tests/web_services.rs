//! The service sources that read an HTTP API, end to end: each against its
//! real server started here on a free loopback port in a temporary
//! directory (nginx, apache2, haproxy), or, for the products Debian does
//! not package or that cannot run here (Elasticsearch, Riak, the Docker
//! daemon), against a stand-in replaying answers captured from the
//! product's documented API. Figures are compared with what the server
//! itself reports, and servers that are down, hang, refuse or answer
//! garbage must give a critical event naming the cause.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{
    answering_server, closed_port, ductd_output, free_port, metric, require_binary, service, state, Running, Server,
    TempDir,
};
use serde_json::Value;

/// Runs `ductd once` on `config` (written in `dir`); the events by service.
fn once(dir: &TempDir, config: &str) -> HashMap<String, Value> {
    let path = dir.write("duct.yml", config);
    let (code, stdout, stderr) = ductd_output(&["once", "-c", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "ductd once failed:\n{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (service(&v).to_string(), v))
        .collect()
}

/// The event for `name`, or a panic listing what there was.
fn event<'a>(events: &'a HashMap<String, Value>, name: &str) -> &'a Value {
    events.get(name).unwrap_or_else(|| {
        let mut names: Vec<&String> = events.keys().collect();
        names.sort();
        panic!("no event {name}; got {names:?}")
    })
}

fn description(ev: &Value) -> &str {
    ev["description"].as_str().unwrap_or("")
}

fn time(ev: &Value) -> f64 {
    ev["time"].as_f64().expect("events have a time")
}

/// Asserts that `name` is critical, without a metric, and that its
/// description contains `reason`.
fn critical(events: &HashMap<String, Value>, name: &str, reason: &str) {
    let ev = event(events, name);
    assert_eq!(state(ev), "critical", "{ev}");
    assert_eq!(metric(ev), None, "{ev}");
    assert!(description(ev).contains(reason), "{name}: want {reason:?} in {ev}");
}

/// A GET of `path` on `127.0.0.1:port` over a fresh connection: (status
/// line, body).
fn http_get(port: u16, path: &str, auth: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// The critical cases every HTTP source must report the same way: a
/// closed port, a server that never answers, an answer that is not HTTP,
/// and a 200 whose body is not the page. `source` is the block's `source:`
/// and `key` its URL option; the path is appended to each URL.
fn fault_blocks(source: &str, key: &str, path: &str) -> (String, [u16; 4]) {
    let closed = closed_port();
    let silent = answering_server(b"");
    let not_http = answering_server(b"SSH-2.0-OpenSSH_9.2\r\n");
    let wrong = answering_server(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n<html></html>");
    let blocks = format!(
        "  - {{service: down, source: {source}, {key}: 'http://127.0.0.1:{closed}{path}'}}
  - {{service: hung, source: {source}, {key}: 'http://127.0.0.1:{silent}{path}', timeout: 0.5}}
  - {{service: nothttp, source: {source}, {key}: 'http://127.0.0.1:{not_http}{path}'}}
  - {{service: wrong, source: {source}, {key}: 'http://127.0.0.1:{wrong}{path}'}}
"
    );
    (blocks, [closed, silent, not_http, wrong])
}

/// Checks the events of [`fault_blocks`]; `garbage` is what the source
/// says of an HTML page.
fn check_faults(events: &HashMap<String, Value>, ports: [u16; 4], garbage: &str) {
    let [closed, _, _, _] = ports;
    critical(events, "down", &format!("connection refused by 127.0.0.1:{closed}"));
    critical(events, "hung", "timed out after 0.5 s while waiting for the answer");
    critical(events, "nothttp", "invalid response");
    critical(events, "wrong", garbage);
}

// ----------------------------------------------------------------- nginx

/// nginx with `stub_status` on `/nginx_status` and a plain page on `/`.
fn start_nginx() -> Option<Server> {
    let nginx = require_binary("nginx", "nginx-light")?;
    let dir = TempDir::new("nginx-status");
    let port = free_port();
    let d = dir.path().display();
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
  access_log off;
  server {{
    listen 127.0.0.1:{port};
    location = /nginx_status {{ stub_status; }}
    location = / {{ default_type text/plain; return 200 \"ok\\n\"; }}
  }}
}}
"
        ),
    );
    let mut cmd = Command::new(nginx);
    cmd.args(["-c", conf.to_str().unwrap(), "-p", dir.path().to_str().unwrap()]);
    cmd.args(["-e", &format!("{d}/error.log")]);
    Some(Server::spawn(cmd, port, dir, "nginx"))
}

/// A stub_status figure as nginx prints it.
fn stub_status(port: u16) -> HashMap<&'static str, u64> {
    let (status, body) = http_get(port, "/nginx_status", None);
    assert!(status.contains("200"), "{status}");
    let n: Vec<u64> = body.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let names = [
        "active", "accepts", "handled", "requests", "reading", "writing", "waiting",
    ];
    assert_eq!(n.len(), names.len(), "{body}");
    names.into_iter().zip(n).collect()
}

#[test]
fn nginx_stub_status_under_ducts_names_and_faults_are_critical() {
    let Some(nginx) = start_nginx() else {
        return;
    };
    let p = nginx.port;
    let (faults, ports) = fault_blocks("duct.sources.nginx.Nginx", "url", "/nginx_status");
    let dir = TempDir::new("nginx-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: nginx, source: duct.sources.nginx.Nginx, url: 'http://127.0.0.1:{p}/nginx_status'}}
  - {{service: old, source: duct.sources.nginx.Nginx, stats_url: 'http://127.0.0.1:{p}/nginx_status'}}
  - {{service: missing, source: duct.sources.nginx.Nginx, url: 'http://127.0.0.1:{p}/nope/'}}
  - {{service: page, source: duct.sources.nginx.Nginx, url: 'http://127.0.0.1:{p}/'}}
{faults}"
        ),
    );
    for name in ["nginx", "old"] {
        for gauge in ["active", "reading", "writing", "waiting"] {
            let ev = event(&events, &format!("{name}.{gauge}"));
            assert_eq!(state(ev), "ok", "{ev}");
            assert_eq!(description(ev), format!("Nginx {gauge}"));
        }
        // ductd's own request is the one being written, on a connection
        // it keeps between ticks.
        assert!(metric(event(&events, &format!("{name}.writing"))) >= Some(1.0));
        for counter in ["accepts", "handled"] {
            let ev = event(&events, &format!("{name}.{counter}"));
            assert!(metric(ev).is_some_and(|r| r >= 0.0), "{ev}");
        }
        let ev = event(&events, &format!("{name}.requests"));
        assert!(metric(ev).is_some_and(|r| r > 0.0), "a request between the ticks: {ev}");
        assert!(!events.contains_key(name), "no failure event when it works");
    }
    // Kept alive: the two ticks of one source share a connection, so
    // there are fewer accepts than requests.
    let now = stub_status(p);
    assert!(now["accepts"] < now["requests"], "{now:?}");
    critical(&events, "missing", "the server answered 404 Not Found");
    critical(&events, "page", "unexpected answer: not a stub_status page: \"ok\"");
    check_faults(&events, ports, "not a stub_status page: \"<html></html>\"");
}

#[test]
fn nginx_request_rate_in_the_agent_counts_every_request() {
    let Some(nginx) = start_nginx() else {
        return;
    };
    let p = nginx.port;
    let dir = TempDir::new("nginx-agent");
    let config = dir.write(
        "duct.yml",
        &format!(
            "interval: 2
outputs: [{{output: duct.outputs.logger.Logger, interval: 0.05}}]
sources:
  - {{service: nginx, source: duct.sources.nginx.Nginx, url: 'http://127.0.0.1:{p}/nginx_status'}}
"
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    let first = agent.wait_for(Duration::from_secs(10), |ev| service(ev) == "nginx.active");
    let t1 = time(first.last().unwrap());
    // 25 requests between two ticks, then the next tick's rate times the
    // time between the ticks must be those plus that tick's own request.
    for _ in 0..25 {
        assert!(http_get(p, "/", None).0.contains("200"));
    }
    let seen = agent.wait_for(Duration::from_secs(10), |ev| service(ev) == "nginx.requests");
    let requests = seen.last().unwrap();
    let t2 = time(requests);
    let counted = metric(requests).unwrap() * (t2 - t1);
    assert_eq!(counted.round(), 26.0, "{requests}, {t1} → {t2}");
    let accepted = seen.iter().find(|ev| service(ev) == "nginx.accepts").unwrap();
    assert_eq!(
        (metric(accepted).unwrap() * (t2 - t1)).round(),
        25.0,
        "the agent's connection is kept: {accepted}"
    );
    // nginx's own count agrees: 25 + 2 polls + this one.
    assert_eq!(stub_status(p)["requests"], 28);
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}
