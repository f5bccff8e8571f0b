//! What the runtime reports and how it stops, seen from outside: `/health`
//! naming a stream plugin that keeps exiting, and a shutdown flush that two
//! SIGTERMs delivered together do not cut short.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{free_port, metric, service, Running, TempDir};
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

/// Forwards one connection to `upstream`, holding each answer coming back
/// for `delay`: a destination that acknowledges slowly.
fn slow_acking_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    std::thread::sleep(delay);
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A receiving ductd (Riemann listener to Logger), and a sender whose
/// queued counter events reach it through a proxy that holds every
/// acknowledgement 100 ms: its shutdown flush takes a few seconds.
fn slow_flush(dir: &TempDir) -> (Running, Running) {
    let listen = free_port();
    let receiver_path = dir.write(
        "receiver.yml",
        &format!(
            "outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: riemann
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {listen}
"
        ),
    );
    let receiver = Running::start(&["-c", receiver_path.to_str().unwrap()]);
    assert!(receiver.wait_for_log("Riemann listener ready", Duration::from_secs(10)));
    let proxy = slow_acking_proxy(listen, Duration::from_millis(100));
    let sender_path = dir.write(
        "sender.yml",
        &format!(
            "shutdown_timeout: 30
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: riemann
    server: 127.0.0.1
    port: {proxy}
    interval: 60
    pressure: 1
    events_per_message: 5
sources:
  - service: counter
    source: duct.sources.generator.Function
    interval: 0.02
    function: x
    dx: 1
    route: riemann
"
        ),
    );
    let sender = Running::start(&["-c", sender_path.to_str().unwrap()]);
    assert!(sender.wait_for_log("agent started", Duration::from_secs(10)));
    // About 100 events queued: 20 messages, 2 s of acknowledgements.
    std::thread::sleep(Duration::from_secs(2));
    (receiver, sender)
}

fn counters(receiver: &Running, period: Duration) -> Vec<i64> {
    receiver
        .collect_for(period)
        .iter()
        .filter(|e| service(e) == "counter")
        .filter_map(metric)
        .map(|m| m.round() as i64)
        .collect()
}

fn stop_line_field(stderr: &str, key: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|l| l.contains("agent stopped"))?
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key))?
        .parse()
        .ok()
}

#[test]
fn two_sigterms_delivered_together_do_not_cut_the_flush_short() {
    let dir = TempDir::new("supervision-double-term");
    let (receiver, sender) = slow_flush(&dir);
    // As GNU timeout does: the process, then its group, a moment later
    // (signals sent at the very same instant merge into one).
    sender.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(50));
    sender.signal(libc::SIGTERM);
    assert!(
        sender.wait_for_log("agent stopped", Duration::from_secs(15)),
        "the flush ran to its end:\n{}",
        sender.stderr()
    );
    let stderr = sender.stderr();
    assert!(!stderr.contains("without finishing the flush"), "{stderr}");
    assert_eq!(stop_line_field(&stderr, "undelivered="), Some(0), "{stderr}");
    let sent = stop_line_field(&stderr, "sent=").expect("sent=") as i64;
    assert!(sent >= 50, "a flush worth testing: {sent} events");
    let got = counters(&receiver, Duration::from_secs(2));
    assert_eq!(got, (1..=sent).collect::<Vec<_>>(), "every event, once, in order");
}

#[test]
fn a_signal_repeated_after_a_second_still_forces_the_exit() {
    let dir = TempDir::new("supervision-force");
    let (_receiver, sender) = slow_flush(&dir);
    sender.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(1300));
    let forced = Instant::now();
    sender.signal(libc::SIGTERM);
    assert!(
        sender.wait_for_log("without finishing the flush", Duration::from_secs(5)),
        "{}",
        sender.stderr()
    );
    assert!(forced.elapsed() < Duration::from_secs(3));
}
