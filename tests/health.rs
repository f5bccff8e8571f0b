//! The health endpoint as a Kubernetes probe or an operator's curl sees it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ductd_output, free_port, Running, TempDir};
use serde_json::Value;

/// One HTTP request; (status code, JSON body or Null).
fn request(port: u16, method: &str, path: &str) -> (u16, Value) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(conn, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
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
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn health_and_readiness_report_sources_and_outputs_in_trouble() {
    let dir = TempDir::new("health");
    let port = free_port();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let path = dir.write(
        "duct.yml",
        &format!(
            "interval: 0.1
shutdown_timeout: 1
health:
  listen: 127.0.0.1:{port}
outputs:
  - output: duct.outputs.logger.Logger
    name: file
    logfile: {}/events.log
    interval: 0.1
sources:
  - service: fine
    source: duct.sources.generator.Function
  - service: broken
    source: duct.sources.generator.Function
    function: log(0 * x)
",
            logs.display()
        ),
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    assert!(
        common::wait_for_port(port, Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    assert!(until(Duration::from_secs(10), || request(port, "GET", "/ready").0 == 200));
    let (_, ready) = request(port, "GET", "/ready");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["sources"], 2);

    let (code, health) = request(port, "GET", "/health");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["unresponsive"], serde_json::json!([]));
    let failing = health["failing_sources"].as_array().unwrap();
    assert_eq!(failing.len(), 1, "{health}");
    assert_eq!(failing[0]["service"], "broken");
    assert!(failing[0]["error"].as_str().unwrap().contains("log"), "{health}");

    // The output's directory disappears: it fails and says so.
    std::fs::remove_dir_all(&logs).unwrap();
    assert!(
        until(Duration::from_secs(10), || {
            let (_, h) = request(port, "GET", "/health");
            h["failing_outputs"].as_array().is_some_and(|a| !a.is_empty())
        }),
        "{}",
        agent.stderr()
    );
    let (code, health) = request(port, "GET", "/health");
    assert_eq!(code, 200, "a destination down is not a reason to restart the agent");
    let out = &health["failing_outputs"][0];
    assert_eq!(out["name"], "file");
    assert!(out["error"].as_str().unwrap().contains("events.log"), "{health}");

    let (code, out, _) = ductd_output(&["health", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "`ductd health` follows the configured address");
    assert!(out.contains("\"status\":\"degraded\""), "{out}");
    assert_eq!(request(port, "GET", "/nope").0, 404);
    assert_eq!(request(port, "POST", "/health").0, 405);
    let (code, _) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let (code, _, err) = ductd_output(&["health", "--address", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1, "nothing listens any more");
    assert!(err.contains("cannot reach the health endpoint"), "{err}");
}

#[test]
fn a_bad_health_address_is_a_configuration_error() {
    let dir = TempDir::new("health-bad");
    let path = dir.write("duct.yml", "health:\n  listen: localhost-ish\n");
    let (code, _, err) = ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(":2:11: health.listen: `localhost-ish` is not an address"),
        "{err}"
    );
}

#[test]
fn a_taken_health_port_stops_start_up_with_a_reason() {
    let dir = TempDir::new("health-taken");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let path = dir.write("duct.yml", &format!("health:\n  listen: 127.0.0.1:{port}\n"));
    let (code, _, err) = ductd_output(&["-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot serve the health endpoint"), "{err}");
}

/// What the kubelet does: a new connection, `GET /health`, an answer within
/// the probe's `timeoutSeconds` (5 in deploy/kubernetes/daemonset.yaml).
fn probe(port: u16) -> Result<u16, String> {
    let timeout = Duration::from_secs(5);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(timeout)).unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kube-probe/1.29\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    conn.read_to_string(&mut response).map_err(|e| format!("read: {e}"))?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {response:?}"))
}

/// True when the peer has closed `conn` (EOF or reset), without waiting.
fn is_closed(conn: &mut TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let closed = match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn a_flood_of_silent_and_slow_clients_does_not_lock_the_probe_out() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = TempDir::new("health-flood");
    let port = free_port();
    let path = dir.write(
        "duct.yml",
        &format!(
            "health:\n  listen: 127.0.0.1:{port}\noutputs:\n  - output: duct.outputs.null.Null\nsources:\n  - service: x\n    source: duct.sources.generator.Function\n    interval: 1\n"
        ),
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    assert!(
        common::wait_for_port(port, Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    assert!(
        until(Duration::from_secs(10), || probe(port) == Ok(200)),
        "{}",
        agent.stderr()
    );

    let stop = Arc::new(AtomicBool::new(false));
    // Every allowed connection (64) and more, opened and left silent; any
    // the server closes is opened again at once.
    let silent_reopened = Arc::new(AtomicUsize::new(0));
    let silent = {
        let (stop, reopened) = (stop.clone(), silent_reopened.clone());
        std::thread::spawn(move || {
            let open = || TcpStream::connect(("127.0.0.1", port)).ok();
            let mut conns: Vec<TcpStream> = (0..80).filter_map(|_| open()).collect();
            while !stop.load(Ordering::Relaxed) {
                for c in conns.iter_mut() {
                    if is_closed(c) {
                        if let Some(fresh) = open() {
                            *c = fresh;
                            reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // A client that sends a request head a byte at a time, forever.
    let slow_cut_off = Arc::new(AtomicUsize::new(0));
    let slow = {
        let (stop, cut_off) = (stop.clone(), slow_cut_off.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let mut head = b"GET /health HTTP/1.1\r\nX-Slow: "
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(b'a'));
                while !stop.load(Ordering::Relaxed) {
                    let byte = head.next().unwrap_or(b'a');
                    if c.write_all(&[byte]).is_err() || is_closed(&mut c) {
                        cut_off.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    // The kubelet probes through the flood, for longer than the header
    // timeout (5 s), so both defences are exercised.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        answers.push(probe(port));
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    silent.join().unwrap();
    slow.join().unwrap();

    let failed: Vec<_> = answers.iter().filter(|a| **a != Ok(200)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} probes failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert!(answers.len() >= 10, "{} probes", answers.len());
    assert!(
        silent_reopened.load(Ordering::Relaxed) > 0,
        "the silent clients held more than the cap: the server must have closed some"
    );
    assert!(
        slow_cut_off.load(Ordering::Relaxed) > 0,
        "the byte-by-byte client was cut off by the header timeout"
    );
    let (code, _) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
}
