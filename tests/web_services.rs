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
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sshd::{SshKeys, Sshd};
use common::{
    answering_server, closed_port, description, event, free_port, metric, once, require_binary, service, state,
    Running, Server, TempDir,
};
use serde_json::Value;

fn time(ev: &Value) -> f64 {
    ev["time"].as_f64().expect("events have a time")
}

/// Asserts that `name` is critical, without a metric, and that its
/// description contains `reason`.
fn critical(events: &HashMap<String, Value>, name: &str, reason: &str) {
    critical_with(events, name, None, reason);
}

/// Asserts that `name` is critical with `value` as its metric, and that
/// its description contains `reason`.
fn critical_with(events: &HashMap<String, Value>, name: &str, value: Option<f64>, reason: &str) {
    let ev = event(events, name);
    assert_eq!(state(ev), "critical", "{ev}");
    assert_eq!(metric(ev), value, "{ev}");
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
    let status = head.lines().next().unwrap_or("").to_string();
    // HAProxy's stats page is chunked even to HTTP/1.0.
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (status, body.to_string());
    }
    let mut rest = body;
    let mut whole = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        whole.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (status, whole)
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
    check_faults_on(events, ports, "", None, garbage);
}

/// [`check_faults`] for a source that reports failures on
/// `(service)(suffix)` with `value` as the metric.
fn check_faults_on(events: &HashMap<String, Value>, ports: [u16; 4], suffix: &str, value: Option<f64>, garbage: &str) {
    let [closed, _, _, _] = ports;
    let refused = format!("connection refused by 127.0.0.1:{closed}");
    critical_with(events, &format!("down{suffix}"), value, &refused);
    let hung = "timed out after 0.5 s while waiting for the answer";
    critical_with(events, &format!("hung{suffix}"), value, hung);
    critical_with(events, &format!("nothttp{suffix}"), value, "invalid response");
    critical_with(events, &format!("wrong{suffix}"), value, garbage);
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

// ---------------------------------------------------------------- Apache

/// apache2 in the foreground with mod_status on `/server-status`; stopped
/// with SIGTERM (its workers go with it) when dropped.
struct Apache {
    server: Server,
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the test's own child.
        unsafe {
            libc::kill(self.server.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_apache() -> Option<Apache> {
    let apache = require_binary("apache2", "apache2")?;
    let dir = TempDir::new("apache");
    let port = free_port();
    let d = dir.path().display();
    let modules = "/usr/lib/apache2/modules";
    dir.write("htdocs/index.html", "hello\n");
    // As root, httpd must switch to a user for its workers: Debian's
    // www-data. As anyone else it stays who it is and ignores `User`.
    let conf = dir.write(
        "httpd.conf",
        &format!(
            "ServerRoot \"{d}\"
ServerName test.local
PidFile {d}/httpd.pid
Listen 127.0.0.1:{port}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule status_module {modules}/mod_status.so
ErrorLog {d}/error.log
DocumentRoot {d}/htdocs
User www-data
Group www-data
<Location \"/server-status\">
  SetHandler server-status
</Location>
"
        ),
    );
    let mut cmd = Command::new(apache);
    cmd.args(["-f", conf.to_str().unwrap(), "-DFOREGROUND"]);
    Some(Apache {
        server: Server::spawn(cmd, port, dir, "apache2"),
    })
}

/// A key of Apache's `?auto` page, as the server prints it now.
fn apache_status(port: u16, key: &str) -> String {
    let (status, body) = http_get(port, "/server-status?auto", None);
    assert!(status.contains("200"), "{status}");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .to_string()
}

#[test]
fn apache_mod_status_under_ducts_names_and_faults_are_critical() {
    let Some(apache) = start_apache() else {
        return;
    };
    let p = apache.server.port;
    for _ in 0..7 {
        let (status, body) = http_get(p, "/index.html", None);
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, "hello\n");
    }
    let (faults, ports) = fault_blocks("duct.sources.apache.Apache", "url", "/server-status?auto");
    let dir = TempDir::new("apache-once");
    // The good source alone first: the faulty ones ask the same Apache,
    // and a request of theirs finished first would be counted too.
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: apache, source: duct.sources.apache.Apache, url: 'http://127.0.0.1:{p}/server-status?auto'}}
"
        ),
    );
    // The seven requests, not yet ductd's own; Apache counts that one
    // when it is over.
    assert_eq!(metric(event(&events, "apache.accesses")), Some(7.0));
    let bad = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: html, source: duct.sources.apache.Apache, stats_url: 'http://127.0.0.1:{p}/server-status'}}
  - {{service: missing, source: duct.sources.apache.Apache, url: 'http://127.0.0.1:{p}/nope?auto'}}
{faults}"
        ),
    );
    let counted: f64 = apache_status(p, "Total Accesses").parse().unwrap();
    assert!(counted >= 9.0, "{counted}");
    for name in [
        "conns.active",
        "conns.writing",
        "conns.closing",
        "conns.keep_alive",
        "accesses",
        "uptime",
        "cpu_load",
        "total_kbytes",
        "request_rate",
        "bytes_rate",
        "bytes_req",
        "workers.busy",
        "workers.idle",
    ] {
        let ev = event(&events, &format!("apache.{name}"));
        assert_eq!(state(ev), "ok", "{ev}");
        assert!(metric(ev).is_some(), "{ev}");
    }
    assert!(
        metric(event(&events, "apache.workers.busy")) >= Some(1.0),
        "serving ductd"
    );
    assert!(metric(event(&events, "apache.workers.idle")) > Some(0.0));
    assert!(metric(event(&events, "apache.bytes_req")) > Some(0.0));
    critical(&bad, "html", "not mod_status `?auto` output");
    critical(&bad, "missing", "the server answered 404 Not Found");
    check_faults(&bad, ports, "not mod_status `?auto` output");
}

// --------------------------------------------------------------- HAProxy

/// HAProxy with a frontend `web` on its port sending `/down` to backend
/// `down` (one server, nothing listening) and the rest to backend `app`
/// (servers s1 and s2, HAProxy's own `origin` listeners answering 200),
/// and the stats page on `stats_port` behind `admin:s3cret`.
struct HAProxy {
    server: Server,
    stats_port: u16,
}

fn start_haproxy() -> Option<HAProxy> {
    let haproxy = require_binary("haproxy", "haproxy")?;
    let dir = TempDir::new("haproxy");
    let [web, s1, s2, stats] = [free_port(), free_port(), free_port(), free_port()];
    let dead = closed_port();
    let conf = dir.write(
        "haproxy.cfg",
        &format!(
            "defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend web
  bind 127.0.0.1:{web}
  use_backend down if {{ path_beg /down }}
  default_backend app
backend app
  server s1 127.0.0.1:{s1} check inter 200ms
  server s2 127.0.0.1:{s2} check inter 200ms
backend down
  server dead 127.0.0.1:{dead} check inter 200ms
listen origin
  bind 127.0.0.1:{s1}
  http-request return status 200 content-type text/plain string ok
listen origin2
  bind 127.0.0.1:{s2}
  http-request return status 200 content-type text/plain string ok
listen stats
  bind 127.0.0.1:{stats}
  stats enable
  stats uri /haproxy
  stats auth admin:s3cret
"
        ),
    );
    let mut cmd = Command::new(haproxy);
    cmd.args(["-f", conf.to_str().unwrap(), "-db"]);
    let server = Server::spawn(cmd, web, dir, "haproxy");
    assert!(common::wait_for_port(stats, Duration::from_secs(10)));
    let hap = HAProxy {
        server,
        stats_port: stats,
    };
    // The health checks must have found the dead server down.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !haproxy_csv(hap.stats_port).contains(",dead,") || !haproxy_csv(hap.stats_port).contains("DOWN") {
        assert!(std::time::Instant::now() < deadline, "the dead server is never DOWN");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(hap)
}

/// The stats CSV as HAProxy prints it now.
fn haproxy_csv(port: u16) -> String {
    // admin:s3cret
    let (status, body) = http_get(port, "/haproxy;csv", Some("YWRtaW46czNjcmV0"));
    assert!(status.contains("200"), "{status}");
    body
}

/// A column of one row of HAProxy's CSV.
fn haproxy_figure(csv: &str, proxy: &str, server: &str, column: &str) -> String {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().trim_start_matches("# ").split(',').collect();
    let at = header.iter().position(|c| *c == column).unwrap();
    let row = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r[0] == proxy && r[1] == server)
        .unwrap_or_else(|| panic!("no {proxy}/{server} in {csv}"));
    row[at].to_string()
}

#[test]
fn haproxy_stats_per_frontend_backend_and_server_and_faults_are_critical() {
    let Some(hap) = start_haproxy() else {
        return;
    };
    let stats = hap.stats_port;
    let (faults, ports) = fault_blocks("duct.sources.haproxy.HAProxy", "url", "/haproxy;csv");
    let dir = TempDir::new("haproxy-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: hap, source: duct.sources.haproxy.HAProxy, url: 'http://127.0.0.1:{stats}/haproxy;csv', user: admin, password: s3cret}}
  - {{service: badpass, source: duct.sources.haproxy.HAProxy, url: 'http://127.0.0.1:{stats}/haproxy;csv', user: admin}}
  - {{service: html, source: duct.sources.haproxy.HAProxy, url: 'http://127.0.0.1:{stats}/haproxy', user: admin, password: s3cret}}
{faults}"
        ),
    );
    let ev = event(&events, "hap.state");
    assert_eq!((state(ev), metric(ev)), ("ok", Some(1.0)), "{ev}");
    let csv = haproxy_csv(stats);
    for (name, proxy) in [("hap.backends.app.active", "app"), ("hap.backends.down.active", "down")] {
        let act: f64 = haproxy_figure(&csv, proxy, "BACKEND", "act").parse().unwrap();
        assert_eq!(metric(event(&events, name)), Some(act), "{name}");
    }
    assert_eq!(metric(event(&events, "hap.backends.app.active")), Some(2.0));
    assert_eq!(metric(event(&events, "hap.backends.down.active")), Some(0.0));
    for prefix in [
        "frontends.web",
        "backends.app",
        "backends.down",
        "nodes.app.s1",
        "nodes.app.s2",
        "nodes.down.dead",
    ] {
        for stat in [
            "sessions",
            "session_rate",
            "bytes_in",
            "bytes_out",
            "code_2xx",
            "code_5xx",
        ] {
            let ev = event(&events, &format!("hap.{prefix}.{stat}"));
            assert_eq!(state(ev), "ok", "{ev}");
        }
    }
    assert!(events.contains_key("hap.nodes.down.dead.checks_failed"));
    assert!(
        !events.contains_key("hap.frontends.web.errors_con"),
        "HAProxy leaves it empty for a frontend"
    );
    critical_with(
        &events,
        "badpass.state",
        Some(0.0),
        "the server answered 401 Unauthorized",
    );
    critical_with(&events, "html.state", Some(0.0), "not HAProxy's CSV statistics");
    check_faults_on(&events, ports, ".state", Some(0.0), "not HAProxy's CSV statistics");
}

#[test]
fn haproxy_response_codes_in_the_agent_count_every_request() {
    let Some(hap) = start_haproxy() else {
        return;
    };
    let (web, stats) = (hap.server.port, hap.stats_port);
    let dir = TempDir::new("haproxy-agent");
    let config = dir.write(
        "duct.yml",
        &format!(
            "interval: 2
outputs: [{{output: duct.outputs.logger.Logger, interval: 0.05}}]
sources:
  - {{service: hap, source: duct.sources.haproxy.HAProxy, url: 'http://127.0.0.1:{stats}/haproxy;csv', user: admin, password: s3cret}}
"
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    let first = agent.wait_for(Duration::from_secs(10), |ev| service(ev) == "hap.state");
    let t1 = time(first.last().unwrap());
    let before = haproxy_csv(stats);
    for _ in 0..12 {
        assert!(http_get(web, "/", None).0.contains("200"));
    }
    for _ in 0..3 {
        assert!(http_get(web, "/down", None).0.contains("503"));
    }
    let after = haproxy_csv(stats);
    let seen = agent.wait_for(Duration::from_secs(10), |ev| {
        service(ev) == "hap.backends.stats.code_5xx"
    });
    let t2 = time(seen.iter().find(|ev| service(ev) == "hap.state").unwrap());
    let counted = |name: &str| {
        let ev = seen
            .iter()
            .find(|ev| service(ev) == name)
            .unwrap_or_else(|| panic!("no {name}"));
        (metric(ev).unwrap() * (t2 - t1)).round()
    };
    let grew = |proxy: &str, server: &str, column: &str| {
        let n = |csv: &str| haproxy_figure(csv, proxy, server, column).parse::<f64>().unwrap();
        n(&after) - n(&before)
    };
    assert_eq!(counted("hap.frontends.web.code_2xx"), 12.0);
    assert_eq!(
        counted("hap.frontends.web.code_2xx"),
        grew("web", "FRONTEND", "hrsp_2xx")
    );
    assert_eq!(counted("hap.frontends.web.code_5xx"), 3.0);
    assert_eq!(counted("hap.backends.app.code_2xx"), 12.0);
    // Round robin: six each.
    assert_eq!(counted("hap.nodes.app.s1.code_2xx"), grew("app", "s1", "hrsp_2xx"));
    assert_eq!(counted("hap.nodes.app.s2.code_2xx"), 6.0);
    assert_eq!(counted("hap.frontends.web.session_rate"), 15.0);
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

// ------------------------------------------------------------ stand-ins

/// A fixture of the sources' parsers (`crates/duct-sources/tests/fixtures`).
fn fixture(dir: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/duct-sources/tests/fixtures")
        .join(dir)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a stand-in answers to a request target: status and JSON body.
type Routes = Vec<(String, u16, String)>;

/// An HTTP server on a thread standing in for a product that cannot run
/// here: it answers each request target listed with its status and body
/// (404 for others), one request per connection, and keeps every request's
/// head for the test to look at.
struct StandIn {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    fn tcp(routes: Routes) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a stand-in");
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let log = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                serve(stream, &routes, &log);
            }
        });
        StandIn { port, heads }
    }

    /// The stand-in on a Unix socket at `path` (`port` is 0).
    fn unix(path: &Path, routes: Routes) -> StandIn {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind a Unix stand-in");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let log = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                serve(stream, &routes, &log);
            }
        });
        StandIn { port: 0, heads }
    }

    /// The heads of the requests so far.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Answers one request on `stream` from `routes`.
fn serve(mut stream: impl Read + Write, routes: &Routes, log: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    // A target listed several times gets its answers in turn, the last
    // one again after that.
    let mut log = log.lock().unwrap();
    let asked_before = log
        .iter()
        .filter(|h| h.split_whitespace().nth(1) == Some(target.as_str()))
        .count();
    log.push(head);
    drop(log);
    let answers: Vec<(u16, &str)> = routes
        .iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, s, b)| (*s, b.as_str()))
        .collect();
    let (status, body) = answers
        .get(asked_before.min(answers.len().saturating_sub(1)))
        .copied()
        .unwrap_or((404, r#"{"message":"page not found"}"#));
    let _ = write!(
        stream,
        "HTTP/1.1 {status} Stand-in\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

// --------------------------------------------------------- Elasticsearch

#[test]
fn elasticsearch_cluster_and_node_figures_from_a_stand_in_and_faults_are_critical() {
    let es = |dir: &str| fixture("elasticsearch", dir);
    let routes = |cluster: String| -> Routes {
        vec![
            ("/_cluster/stats".into(), 200, cluster),
            ("/_nodes/stats/indices".into(), 200, es("nodes_stats_indices-7.17.json")),
        ]
    };
    let green = StandIn::tcp(routes(es("cluster_stats-7.17.json")));
    let partial = StandIn::tcp(routes(es("cluster_stats-partial-7.17.json")));
    let red = StandIn::tcp(routes(es("cluster_stats-7.17.json").replace("\"green\"", "\"red\"")));
    let full = es("cluster_stats-7.17.json");
    let truncated = StandIn::tcp(routes(full[..full.len() / 2].to_string()));
    let denied = StandIn::tcp(vec![("/_cluster/stats".into(), 401, es("unauthorized-7.17.json"))]);
    let (faults, ports) = fault_blocks("duct.sources.database.elasticsearch.ElasticSearch", "url", "");
    let dir = TempDir::new("es-once");
    let src = "duct.sources.database.elasticsearch.ElasticSearch";
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: es, source: {src}, url: 'http://127.0.0.1:{}', user: elastic, password: s3cret}}
  - {{service: partial, source: {src}, url: 'http://127.0.0.1:{}/'}}
  - {{service: red, source: {src}, url: 'http://127.0.0.1:{}'}}
  - {{service: truncated, source: {src}, url: 'http://127.0.0.1:{}'}}
  - {{service: denied, source: {src}, url: 'http://127.0.0.1:{}'}}
{faults}",
            green.port, partial.port, red.port, truncated.port, denied.port
        ),
    );
    let figures = [
        ("es.cluster.status", 2.0),
        ("es.cluster.nodes", 3.0),
        ("es.indices", 12.0),
        ("es.shards.total", 48.0),
        ("es.shards.primary", 24.0),
        ("es.documents.total", 1843920.0),
        ("es.documents.size", 2147483648.0),
        // The stand-in's counters do not move between the ticks.
        ("es.documents.rate", 0.0),
        ("es.nodes.10.0.0.11.search", 0.0),
        ("es.nodes.10.0.0.13.get", 0.0),
    ];
    for (name, value) in figures {
        let ev = event(&events, name);
        assert_eq!((state(ev), metric(ev)), ("ok", Some(value)), "{ev}");
    }
    // Basic credentials, Duct's two requests per tick, twice.
    let heads = green.heads();
    assert_eq!(heads.len(), 4, "{heads:?}");
    assert!(
        heads
            .iter()
            .all(|h| h.contains("Authorization: Basic ZWxhc3RpYzpzM2NyZXQ=")),
        "{heads:?}"
    );
    let ev = event(&events, "partial.cluster.nodes");
    assert_eq!((state(ev), metric(ev)), ("warning", Some(2.0)), "{ev}");
    assert!(
        description(ev).contains("1 of 3 did not answer: node_not_connected_exception"),
        "{ev}"
    );
    let ev = event(&events, "partial.cluster.status");
    assert_eq!((state(ev), metric(ev)), ("warning", Some(1.0)), "yellow: {ev}");
    let ev = event(&events, "red.cluster.status");
    assert_eq!((state(ev), metric(ev)), ("critical", Some(0.0)), "{ev}");
    critical(&events, "truncated", "unexpected answer: not JSON (EOF while parsing");
    critical(&events, "denied", "the server answered 401 Stand-in: \"{\\\"error\\\"");
    check_faults(&events, ports, "unexpected answer: not JSON");
}

// ------------------------------------------------------------------ Riak

#[test]
fn riak_rates_from_a_stand_in_and_faults_are_critical() {
    let riak = StandIn::tcp(vec![("/stats".into(), 200, fixture("riak", "stats-2.2.json"))]);
    let (faults, ports) = fault_blocks("duct.sources.riak.RiakStats", "url", "/stats");
    let dir = TempDir::new("riak-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: riak, source: duct.sources.riak.RiakStats, url: 'http://127.0.0.1:{p}/stats'}}
  - {{service: wrongpath, source: duct.sources.riak.RiakStats, url: 'http://127.0.0.1:{p}/ping'}}
{faults}",
            p = riak.port
        ),
    );
    let ev = event(&events, "riak.gets_per_second");
    assert_eq!((state(ev), metric(ev)), ("ok", Some(5430.0 / 60.0)), "{ev}");
    let ev = event(&events, "riak.puts_per_second");
    assert_eq!((state(ev), metric(ev)), ("ok", Some(1266.0 / 60.0)), "{ev}");
    assert!(
        riak.heads()[0].contains("User-Agent: Duct Riak stats checker"),
        "{:?}",
        riak.heads()
    );
    critical(&events, "wrongpath", "the server answered 404 Stand-in");
    check_faults(&events, ports, "unexpected answer: not JSON");
}

// ---------------------------------------------------------------- Docker

#[test]
fn docker_container_stats_over_a_unix_socket_and_faults_are_critical() {
    let d = |name: &str| fixture("docker", name);
    let web = "8dfafdbc3a40b9e1f2c5b8e4a6c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5";
    let worker = "9cd87474be90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182930";
    let stats = |id: &str| format!("/containers/{id}/stats?stream=false&one-shot=true");
    let routes: Routes = vec![
        ("/containers/json".into(), 200, d("containers-1.43.json")),
        (stats(web), 200, d("stats-web-1.json")),
        (stats(web), 200, d("stats-web-2.json")),
        (stats(worker), 200, d("stats-worker-1.json")),
        (stats(worker), 200, d("stats-worker-2.json")),
        (format!("/containers/{web}/json"), 200, d("inspect-web.json")),
        (format!("/containers/{worker}/json"), 200, d("inspect-worker.json")),
    ];
    let dir = TempDir::new("docker");
    let sock = dir.path().join("docker.sock");
    let daemon = StandIn::unix(&sock, routes.clone());
    // The same daemon, but `web` is gone by the time its stats are asked.
    let gone = dir.path().join("gone.sock");
    let _gone = StandIn::unix(
        &gone,
        routes
            .into_iter()
            .filter(|(t, _, _)| !t.contains(&format!("{web}/stats")))
            .collect(),
    );
    let html = dir.path().join("html.sock");
    let _html = StandIn::unix(&html, vec![("/containers/json".into(), 200, "<html></html>".into())]);
    let missing = dir.path().join("missing.sock");
    let src = "duct.sources.docker.ContainerStats";
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: docker, source: {src}, url: 'unix:{}'}}
  - {{service: gone, source: {src}, url: 'unix:{}'}}
  - {{service: html, source: {src}, url: 'unix:{}'}}
  - {{service: down, source: {src}, url: 'unix:{}'}}
",
            sock.display(),
            gone.display(),
            html.display(),
            missing.display()
        ),
    );
    // The second samples, and the CPU share between the two.
    for (name, value) in [
        ("docker.web.mem_limit", 2147483648.0),
        ("docker.web.mem_used", 53477376.0),
        ("docker.web.cpu", 5.0),
        ("docker.data/worker.mem_used", 211812352.0),
        ("docker.data/worker.cpu", 25.0),
        ("docker.data/worker.io_read", 0.0),
    ] {
        let ev = event(&events, name);
        assert_eq!((state(ev), metric(ev)), ("ok", Some(value)), "{ev}");
    }
    for op in ["read", "write", "sync", "async", "total"] {
        let ev = event(&events, &format!("docker.web.io_{op}"));
        assert!(metric(ev).is_some_and(|r| r >= 0.0), "{ev}");
    }
    assert!(metric(event(&events, "docker.web.io_write")) > Some(0.0));
    assert!(
        !events.contains_key("docker.data/worker.io_sync"),
        "cgroup v2 lists read and write only"
    );
    assert!(
        !events.contains_key("docker.mesos-3f1c2a9e-worker.mem_used"),
        "named by MARATHON_APP_ID"
    );
    let heads = daemon.heads();
    assert!(
        heads[0].starts_with("GET /containers/json HTTP/1.1\r\nHost: localhost\r\n"),
        "{heads:?}"
    );
    critical(&events, "gone.web", "container web - the server answered 404 Stand-in");
    assert_eq!(
        metric(event(&events, "gone.data/worker.cpu")),
        Some(25.0),
        "the others are still read"
    );
    critical(&events, "html", "unexpected answer: not JSON");
    critical(&events, "down", &format!("cannot connect to {}", missing.display()));
}

// ----------------------------------------------------------------- uWSGI

/// A uWSGI emperor with two vassals (`alpha.ini`, `beta.ini`, each a
/// master and one worker on a socket of its own) and its stats server on
/// the returned port; stopped with SIGINT, which takes the vassals down.
struct Emperor {
    server: Server,
}

impl Drop for Emperor {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the test's own child.
        unsafe {
            libc::kill(self.server.child.id() as i32, libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_emperor() -> Option<Emperor> {
    let uwsgi = require_binary("uwsgi-core", "uwsgi-core")?;
    let dir = TempDir::new("uwsgi");
    for name in ["alpha", "beta"] {
        dir.write(
            &format!("vassals/{name}.ini"),
            &format!(
                "[uwsgi]\nsocket = 127.0.0.1:{}\nmaster = true\nprocesses = 1\n",
                free_port()
            ),
        );
    }
    let port = free_port();
    let mut cmd = Command::new(uwsgi);
    cmd.arg("--emperor")
        .arg(dir.path().join("vassals"))
        .args(["--emperor-stats", &format!("127.0.0.1:{port}")]);
    let emperor = Emperor {
        server: Server::spawn(cmd, port, dir, "the uWSGI emperor"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while emperor_stats(port)["vassals"]
        .as_array()
        .map_or(0, |v| v.iter().filter(|v| v["accepting"] == 1).count())
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "the vassals never accept");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(emperor)
}

/// The emperor's stats, as it writes them.
fn emperor_stats(port: u16) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the emperor");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the stats");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn uwsgi_emperor_vassals_agree_with_its_stats_and_faults_are_critical() {
    let Some(emperor) = start_emperor() else {
        return;
    };
    let p = emperor.server.port;
    let closed = closed_port();
    let silent = answering_server(b"");
    let garbage = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let dir = TempDir::new("uwsgi-once");
    let src = "duct.sources.python.uwsgi.Emperor";
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: uwsgi, source: {src}, host: 127.0.0.1, port: {p}}}
  - {{service: down, source: {src}, host: 127.0.0.1, port: {closed}}}
  - {{service: hung, source: {src}, host: 127.0.0.1, port: {silent}, timeout: 0.5}}
  - {{service: garbage, source: {src}, host: 127.0.0.1, port: {garbage}}}
"
        ),
    );
    let stats = emperor_stats(p);
    let vassals = stats["vassals"].as_array().unwrap();
    assert_eq!(vassals.len(), 2);
    for v in vassals {
        let id = v["id"].as_str().unwrap();
        for key in ["accepting", "respawns"] {
            let ev = event(&events, &format!("uwsgi.{id}.{key}"));
            assert_eq!(metric(ev), v[key].as_f64(), "{ev} vs the emperor's {v}");
        }
    }
    assert_eq!(metric(event(&events, "uwsgi.total.active")), Some(2.0));
    assert_eq!(metric(event(&events, "uwsgi.total.accepting")), Some(2.0));
    assert_eq!(metric(event(&events, "uwsgi.total.respawns")), Some(0.0));
    critical(&events, "down", &format!("127.0.0.1:{closed} - connection refused"));
    critical(&events, "hung", "timed out after 0.5 s waiting for the emperor's stats");
    critical(&events, "garbage", "not JSON");
}

// -------------------------------------------------------------- RabbitMQ

/// A RabbitMQ broker of its own (node name, AMQP, distribution, epmd and
/// management ports all free ones, data and logs in a temporary
/// directory), with `rabbitmqctl` wrapped in a script that reaches it.
/// Stopped with `rabbitmqctl stop` (and its epmd killed) when dropped.
struct Rabbit {
    server: Server,
    api: u16,
    ctl: std::path::PathBuf,
    epmd: u16,
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        let _ = Command::new(&self.ctl).arg("stop").output();
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd.to_string(), "-kill"])
            .output();
        let _ = self.server.child.kill();
    }
}

fn start_rabbit() -> Option<Rabbit> {
    let server_bin = require_binary("rabbitmq-server", "rabbitmq-server")?;
    let ctl_bin = require_binary("rabbitmqctl", "rabbitmq-server")?;
    let dir = TempDir::new("rabbitmq");
    let d = dir.path().display().to_string();
    let [amqp, dist, epmd, api] = [free_port(), free_port(), free_port(), free_port()];
    let node = format!("ductd-test-{amqp}@localhost");
    for sub in ["mnesia", "log"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    dir.write("enabled_plugins", "[rabbitmq_management].\n");
    dir.write(
        "rabbitmq.conf",
        &format!("management.tcp.port = {api}\nmanagement.tcp.ip = 127.0.0.1\ncollect_statistics_interval = 500\n"),
    );
    let env = [
        ("HOME", d.clone()),
        ("RABBITMQ_NODENAME", node.clone()),
        ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
        ("RABBITMQ_NODE_PORT", amqp.to_string()),
        ("RABBITMQ_DIST_PORT", dist.to_string()),
        ("ERL_EPMD_PORT", epmd.to_string()),
        ("RABBITMQ_MNESIA_BASE", format!("{d}/mnesia")),
        ("RABBITMQ_LOG_BASE", format!("{d}/log")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", format!("{d}/enabled_plugins")),
        ("RABBITMQ_CONFIG_FILE", format!("{d}/rabbitmq")),
        ("RABBITMQ_FEATURE_FLAGS_FILE", format!("{d}/mnesia/feature_flags")),
    ];
    // As root, Debian's scripts run the broker as `rabbitmq`, which must
    // be able to write here.
    let _ = Command::new("chmod").args(["-R", "0777", &d]).output();
    let exports: String = env.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
    let ctl = dir.write(
        "rabbitmqctl",
        &format!("#!/bin/sh\n{exports}exec {} -n '{node}' \"$@\"\n", ctl_bin.display()),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(server_bin);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    // The management listener starts last: the broker is up when it
    // accepts.
    let server = Server::spawn(cmd, api, dir, "rabbitmq-server");
    Some(Rabbit { server, api, ctl, epmd })
}

/// A request with a JSON body to the management API as guest: (status
/// line, body).
fn rabbit_api(port: u16, method: &str, path: &str, body: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the management API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

#[test]
fn rabbitmq_queues_by_rabbitmqctl_and_the_api_agree_with_the_broker() {
    let Some(rabbit) = start_rabbit() else {
        return;
    };
    let api = rabbit.api;
    for q in ["jobs", "mail"] {
        let (status, body) = rabbit_api(api, "PUT", &format!("/api/queues/%2F/{q}"), r#"{"durable":false}"#);
        assert!(status.contains("201") || status.contains("204"), "{status} {body}");
    }
    for _ in 0..7 {
        let publish = r#"{"properties":{},"routing_key":"jobs","payload":"x","payload_encoding":"string"}"#;
        let (_, body) = rabbit_api(api, "POST", "/api/exchanges/%2F/amq.default/publish", publish);
        assert_eq!(body, r#"{"routed":true}"#);
    }
    // The broker's own count, by its own tool.
    let listed = Command::new(&rabbit.ctl)
        .args(["list_queues", "-p", "/", "name", "messages_ready"])
        .output()
        .expect("run rabbitmqctl");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.lines().any(|l| l == "jobs\t7"), "{listed}");
    // The management statistics lag behind by a collection interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !rabbit_api(api, "GET", "/api/queues/%2F/jobs", "")
        .1
        .contains("\"messages_ready\":7")
    {
        assert!(std::time::Instant::now() < deadline, "the API never shows the messages");
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed = closed_port();
    let dir = TempDir::new("rabbitmq-once");
    let src = "duct.sources.rabbitmq.Queues";
    // `remote` runs the same rabbitmqctl over SSH, as Duct's use_ssh did
    // (left out where OpenSSH is not installed).
    let ssh = SshKeys::make("ssh-keys-rabbitmq").map(|keys| {
        let sshd = Sshd::start(&keys, "sshd-rabbitmq", None);
        (keys, sshd)
    });
    let (globals, remote) = match &ssh {
        Some((keys, sshd)) => (
            sshd.globals(keys, &dir),
            format!(
                "  - {{service: remote, source: {src}, rabbitmqctl: '{}', {}}}\n",
                rabbit.ctl.display(),
                sshd.source_options()
            ),
        ),
        None => (String::new(), String::new()),
    };
    let events = once(
        &dir,
        &format!(
            "interval: 1
{globals}outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: ctl, source: {src}, rabbitmqctl: '{ctl}', timeout: 30}}
{remote}
  - {{service: api, source: {src}, url: 'http://127.0.0.1:{api}'}}
  - {{service: badpass, source: {src}, url: 'http://127.0.0.1:{api}', password: wrong}}
  - {{service: novhost, source: {src}, url: 'http://127.0.0.1:{api}', vhost: nosuch}}
  - {{service: down, source: {src}, url: 'http://127.0.0.1:{closed}'}}
  - {{service: noctl, source: {src}, rabbitmqctl: /nonexistent/rabbitmqctl}}
",
            ctl = rabbit.ctl.display(),
        ),
    );
    let names: &[&str] = if ssh.is_some() {
        &["ctl", "remote", "api"]
    } else {
        &["ctl", "api"]
    };
    for &name in names {
        let figures = [
            ("jobs.ready", 7.0),
            ("jobs.unack", 0.0),
            ("mail.ready", 0.0),
            ("jobs.ready_rate", 0.0),
            ("total.ready", 7.0),
            ("total.unack", 0.0),
            ("total.ready_rate", 0.0),
        ];
        for (figure, value) in figures {
            let ev = event(&events, &format!("{name}.{figure}"));
            assert_eq!((state(ev), metric(ev)), ("ok", Some(value)), "{ev}");
        }
    }
    critical(&events, "badpass", "the server answered 401 Unauthorized");
    critical(&events, "novhost", "the server answered 404 Not Found");
    critical(&events, "down", &format!("connection refused by 127.0.0.1:{closed}"));
    critical(&events, "noctl", "/nonexistent/rabbitmqctl");
    if let Some((_, sshd)) = &ssh {
        assert_eq!(sshd.logins(), 1, "`remote` logged in:\n{}", sshd.log_text());
    }
}
