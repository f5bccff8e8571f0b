//! What the runtime reports and how it stops, seen from outside: `/health`
//! naming a stream plugin that keeps exiting, and a shutdown flush that two
//! SIGTERMs delivered together do not cut short.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{free_port, Running, TempDir};
use serde_json::Value;

/// One HTTP GET; (status code, JSON body or Null).
fn get(port: u16, path: &str) -> (u16, Value) {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Value::Null);
    };
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
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

fn failing_services(body: &Value) -> Vec<String> {
    body["failing_sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["service"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn health_names_a_stream_plugin_that_keeps_exiting() {
    let dir = TempDir::new("supervision-stream");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (name, body) in [
        ("dies", "echo 1; echo 'cannot open the device' >&2; exit 3"),
        ("steady", "while true; do echo 1; sleep 0.2; done"),
    ] {
        let path = plugins.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = free_port();
    let path = dir.write(
        "duct.yml",
        &format!(
            "base_path: {}
health:
  listen: 127.0.0.1:{port}
outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.1
sources:
  - {{service: dies, source: dies, mode: stream}}
  - {{service: steady, source: steady, mode: stream}}
",
            plugins.display()
        ),
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    let mut last = Value::Null;
    let named = until(Duration::from_secs(15), || {
        let (code, body) = get(port, "/health");
        last = body;
        code == 200 && failing_services(&last) == ["dies"]
    });
    assert!(named, "last answer: {last}\n{}", agent.stderr());
    assert_eq!(last["status"], "degraded");
    let why = last["failing_sources"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("keeps exiting") && why.contains("status 3"), "{why}");
}
