//! Riemann end to end against real peers: the `riemann-client` CLI and
//! collectd's `write_riemann` feeding ductd's listener, one ductd feeding
//! another (over TLS too), and the faults a production agent meets — a
//! receiver absent at start, restarted mid-stream, accepting but never
//! acknowledging, and garbage thrown at the listener.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::read_riemann_answer as read_answer;
use common::{
    free_port, metric, require_binary, riemann_frame, service, state, status_kib, wait_for_port, Running, TempDir,
};
use serde_json::Value;

/// Starts `ductd` with `config` written to `name` in `dir`.
fn start_agent(dir: &TempDir, name: &str, config: &str) -> Running {
    let path = dir.write(name, config);
    Running::start(&["-c", path.to_str().expect("utf-8 path")])
}

/// A receiving agent: a Riemann listener on `port` whose events come out
/// of its Logger on standard output. `extra` is added to the listener.
fn receiver_config(port: u16, extra: &str) -> String {
    format!(
        "outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: riemann
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {port}
{extra}"
    )
}

/// A receiver started and listening.
fn start_receiver(dir: &TempDir, name: &str, port: u16, extra: &str) -> Running {
    let agent = start_agent(dir, name, &receiver_config(port, extra));
    assert!(
        agent.wait_for_log("Riemann listener ready", Duration::from_secs(10)),
        "the listener did not start:\n{}",
        agent.stderr()
    );
    agent
}

/// A sending agent: a counter (1, 2, 3, … one per tick) sent to
/// `127.0.0.1:port` by a RiemannTCP output with `output_extra` options.
fn sender_config(port: u16, tick: f64, output_extra: &str) -> String {
    format!(
        "outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: riemann
    server: 127.0.0.1
    port: {port}
    interval: 0.05
    backoff_max: 0.5
{output_extra}
sources:
  - service: counter
    source: duct.sources.generator.Function
    interval: {tick}
    function: x
    dx: 1
    route: riemann
"
    )
}

fn counter_values(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| service(e) == "counter")
        .filter_map(metric)
        .map(|m| m.round() as i64)
        .collect()
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Riemann frame holding one event (service, host, metric_sint64).
fn raw_frame(service: &str, host: &str, metric: i64) -> Vec<u8> {
    riemann_frame(&[(service, host, metric)])
}

#[test]
fn riemann_client_events_come_out_intact() {
    let Some(client) = require_binary("riemann-client", "riemann-c-client") else {
        return;
    };
    let dir = TempDir::new("riemann-client");
    let port = free_port();
    let receiver = start_receiver(&dir, "receiver.yml", port, "");
    let status = Command::new(&client)
        .args([
            "send",
            "--host",
            "web-1",
            "--service",
            "http latency",
            "--state",
            "warning",
            "--metric-sint64",
            "42",
            "--ttl",
            "30",
            "--description",
            "slow answers",
            "--tag",
            "web",
            "--tag",
            "prod",
            "--attribute",
            "dc=west",
            "127.0.0.1",
            &port.to_string(),
        ])
        .status()
        .expect("run riemann-client");
    assert!(status.success(), "riemann-client waits for ok: true");
    let ev = receiver.wait_for(Duration::from_secs(10), |e| service(e) == "http latency");
    let ev = ev.last().expect("one event");
    assert_eq!(ev["host"], "web-1");
    assert_eq!(state(ev), "warning");
    assert_eq!(ev["metric"], 42, "an integer stays an integer");
    assert_eq!(ev["ttl"], 30.0);
    assert_eq!(ev["description"], "slow answers");
    assert_eq!(ev["tags"], serde_json::json!(["web", "prod"]));
    assert_eq!(ev["attributes"]["dc"], "west");

    let status = Command::new(&client)
        .args(["send", "-S", "double", "-d", "1.25", "127.0.0.1", &port.to_string()])
        .status()
        .expect("run riemann-client");
    assert!(status.success());
    let ev = receiver.wait_for(Duration::from_secs(10), |e| service(e) == "double");
    assert_eq!(metric(ev.last().unwrap()), Some(1.25));

    // Queries: answered ok: false, which the client reports.
    let out = Command::new(&client)
        .args(["query", "true", "127.0.0.1", &port.to_string()])
        .output()
        .expect("run riemann-client");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("queries are not supported"), "{said}");
}

#[test]
fn riemann_client_over_udp_feeds_the_udp_listener() {
    let Some(client) = require_binary("riemann-client", "riemann-c-client") else {
        return;
    };
    let dir = TempDir::new("riemann-udp");
    let port = free_port();
    let config = format!(
        "outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: riemann-udp
    source: duct.sources.riemann.RiemannUDP
    bind: 127.0.0.1
    port: {port}
"
    );
    let receiver = start_agent(&dir, "udp.yml", &config);
    assert!(
        receiver.wait_for_log("Riemann UDP listener ready", Duration::from_secs(10)),
        "{}",
        receiver.stderr()
    );
    let send = |service: &str| {
        Command::new(&client)
            .args([
                "send",
                "-U",
                "--host",
                "udp-1",
                "--service",
                service,
                "--metric-sint64",
                "7",
                "--tag",
                "udp",
                "--attribute",
                "via=udp",
                "127.0.0.1",
                &port.to_string(),
            ])
            .status()
            .expect("run riemann-client")
    };
    // Nothing acknowledges a datagram: send until one is seen.
    let mut seen = Vec::new();
    for _ in 0..10 {
        assert!(send("over udp").success());
        seen = receiver.wait_for(Duration::from_secs(1), |e| service(e) == "over udp");
        if !seen.is_empty() {
            break;
        }
    }
    let ev = seen.last().expect("an event over UDP");
    assert_eq!(ev["host"], "udp-1");
    assert_eq!(ev["metric"], 7);
    assert_eq!(ev["tags"], serde_json::json!(["udp"]));
    assert_eq!(ev["attributes"]["via"], "udp");
    // Garbage does not stop it.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"not protobuf \xff\xff", ("127.0.0.1", port)).unwrap();
    assert!(send("after garbage").success());
    let after = receiver.wait_for(Duration::from_secs(5), |e| service(e) == "after garbage");
    assert!(!after.is_empty(), "{}", receiver.stderr());
}

#[test]
fn collectd_write_riemann_feeds_the_listener() {
    let Some(collectd) = require_binary("collectd", "collectd") else {
        return;
    };
    let dir = TempDir::new("collectd");
    let port = free_port();
    let receiver = start_receiver(&dir, "receiver.yml", port, "");
    let base = dir.path().display();
    // Batch false: with Batch true collectd 5.12's writer thread crashes
    // (collectd issue 4050; see docs/riemann.md).
    let config = format!(
        "Hostname \"collectd-test\"
FQDNLookup false
BaseDir \"{base}\"
PIDFile \"{base}/collectd.pid\"
Interval 1
TypesDB \"/usr/share/collectd/types.db\"
LoadPlugin load
LoadPlugin write_riemann
<Plugin write_riemann>
  <Node \"ductd\">
    Host \"127.0.0.1\"
    Port \"{port}\"
    Protocol TCP
    Batch false
  </Node>
  Tag \"collectd\"
</Plugin>
"
    );
    let conf = dir.write("collectd.conf", &config);
    let _collectd = KillOnDrop(
        Command::new(collectd)
            .args(["-f", "-C", conf.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start collectd"),
    );
    let events = receiver.wait_for(Duration::from_secs(30), |e| {
        e["host"] == "collectd-test" && service(e).contains("load")
    });
    let ev = events.last().unwrap();
    assert!(metric(ev).is_some(), "{ev}");
    assert!(
        ev["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "collectd")),
        "{ev}"
    );
    assert_eq!(ev["attributes"]["plugin"], "load", "{ev}");
    // It keeps coming, every interval.
    let more = receiver.wait_for(Duration::from_secs(10), |e| {
        e["host"] == "collectd-test" && e["time"].as_f64() > ev["time"].as_f64()
    });
    assert!(!more.is_empty());
}

/// collectd's write_riemann with `Batch true` sends strings that are not
/// UTF-8 (its batching reuses freed memory: states and services come out
/// as garbage). Those messages used to be refused whole and the
/// connection closed; now every event arrives, bad bytes replaced.
#[test]
fn collectd_batches_with_bad_strings_are_kept() {
    let Some(collectd) = require_binary("collectd", "collectd") else {
        return;
    };
    let dir = TempDir::new("collectd-batch");
    let port = free_port();
    let receiver = start_receiver(&dir, "receiver.yml", port, "");
    let base = dir.path().display();
    let config = format!(
        "Hostname \"collectd-batch\"
FQDNLookup false
BaseDir \"{base}\"
PIDFile \"{base}/collectd.pid\"
Interval 1
TypesDB \"/usr/share/collectd/types.db\"
LoadPlugin load
LoadPlugin cpu
LoadPlugin memory
LoadPlugin interface
LoadPlugin write_riemann
<Plugin write_riemann>
  <Node \"ductd\">
    Host \"127.0.0.1\"
    Port \"{port}\"
    Protocol TCP
    Batch true
    BatchMaxSize 8192
  </Node>
</Plugin>
"
    );
    let conf = dir.write("collectd.conf", &config);
    let _collectd = KillOnDrop(
        Command::new(collectd)
            .args(["-f", "-C", conf.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start collectd"),
    );
    let events = receiver.collect_for(Duration::from_secs(8));
    let from_collectd: Vec<&Value> = events.iter().filter(|e| e["host"] == "collectd-batch").collect();
    assert!(from_collectd.len() > 50, "{} events", from_collectd.len());
    let stderr = receiver.stderr();
    assert!(!stderr.contains("closing a connection"), "{stderr}");
    assert!(!stderr.contains("a string is not UTF-8"), "{stderr}");
    // Which strings come out garbled varies from run to run; when some
    // do, they are kept with U+FFFD and said so.
    if stderr.contains("strings that are not UTF-8 were kept") {
        assert!(
            from_collectd.iter().any(|e| e.to_string().contains('\u{fffd}')),
            "replaced strings arrive"
        );
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, made with the openssl CLI; returns false if openssl is
/// missing (the test is then skipped).
fn make_certificates(dir: &Path) -> bool {
    let Some(openssl) = require_binary("openssl", "openssl") else {
        return false;
    };
    // `words` split on spaces, then a subject (which may hold spaces).
    let run = |words: &str, subject: Option<&str>| {
        let mut cmd = Command::new(&openssl);
        cmd.current_dir(dir).args(words.split_whitespace());
        if let Some(subject) = subject {
            cmd.args(["-subj", subject]);
        }
        let out = cmd.output().expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {words}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    run(
        &format!("req -x509 {new_key} -keyout ca.key -out ca.pem -days 2"),
        Some("/CN=ductd test CA"),
    );
    let extensions = [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ];
    for (who, ext) in extensions {
        dir_write(dir, &format!("{who}.ext"), &format!("basicConstraints=CA:FALSE\n{ext}"));
        run(
            &format!("req {new_key} -keyout {who}.key -out {who}.csr"),
            Some(&format!("/CN=ductd test {who}")),
        );
        run(
            &format!(
                "x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out {who}.pem -extfile {who}.ext"
            ),
            None,
        );
    }
    true
}

fn dir_write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

#[test]
fn ductd_to_ductd_over_tls_with_client_certificates() {
    let dir = TempDir::new("riemann-tls");
    if !make_certificates(dir.path()) {
        return;
    }
    let d = dir.path().display();
    let port = free_port();
    let receiver = start_receiver(
        &dir,
        "receiver.yml",
        port,
        &format!("    tls: true\n    cert: {d}/server.pem\n    key: {d}/server.key\n    ca: {d}/ca.pem\n"),
    );
    let sender_config = format!(
        "outputs:
  - output: duct.outputs.riemann.RiemannTCP
    server: 127.0.0.1
    port: {port}
    tls: true
    ca: {d}/ca.pem
    cert: {d}/client.pem
    key: {d}/client.key
    interval: 0.05
sources:
  - service: tls-wave
    source: duct.sources.generator.Function
    interval: 0.05
    function: x
    dx: 1
    hostname: sender
    ttl: 12.5
    tags: [a, b]
    attributes: {{k: v, zone: eu}}
"
    );
    let sender = start_agent(&dir, "sender.yml", &sender_config);
    let events = receiver.wait_for(Duration::from_secs(15), |e| service(e) == "tls-wave");
    let ev = events.last().unwrap();
    assert_eq!(ev["host"], "sender");
    assert_eq!(ev["state"], "ok");
    assert_eq!(ev["description"], "Sine wave");
    assert_eq!(ev["ttl"], 12.5);
    assert_eq!(ev["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(ev["attributes"], serde_json::json!({"k": "v", "zone": "eu"}));
    assert_eq!(metric(ev), Some(1.0));
    assert!(sender.stderr().contains("connected to Riemann"), "{}", sender.stderr());

    // A client without TLS gets no answer, and the listener goes on.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain.write_all(&raw_frame("plain", "h", 1)).expect("write");
    let mut buf = [0u8; 64];
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[..n].first() == Some(&0x15),
        "a TLS alert or nothing, not an answer"
    );
    let later = receiver.wait_for(Duration::from_secs(10), |e| metric(e) >= Some(5.0));
    assert!(later.iter().all(|e| service(e) != "plain"));
    let connects = sender.stderr().matches("connected to Riemann").count();
    assert_eq!(connects, 1, "one connection serves every batch:\n{}", sender.stderr());

    // GnuTLS' riemann-client with a client certificate: interoperable.
    if let Some(client) = require_binary("riemann-client", "riemann-c-client") {
        let out = Command::new(client)
            .args([
                "send",
                "--tls",
                "-o",
                &format!("cafile={d}/ca.pem"),
                "-o",
                &format!("certfile={d}/client.pem"),
                "-o",
                &format!("keyfile={d}/client.key"),
                "-S",
                "gnutls-client",
                "-i",
                "7",
                "127.0.0.1",
                &port.to_string(),
            ])
            .output()
            .expect("run riemann-client");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ev = receiver.wait_for(Duration::from_secs(10), |e| service(e) == "gnutls-client");
        assert_eq!(ev.last().unwrap()["metric"], 7);
    }
}

#[test]
fn a_receiver_absent_at_start_gets_everything_once_it_appears() {
    let dir = TempDir::new("riemann-late");
    let port = free_port();
    let sender = start_agent(&dir, "sender.yml", &sender_config(port, 0.05, ""));
    assert!(sender.wait_for_log("delivery failed", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(1500));
    let receiver = start_receiver(&dir, "receiver.yml", port, "");
    let early = receiver.wait_for(Duration::from_secs(20), |e| metric(e) >= Some(60.0));
    let (code, _) = sender.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let (code, rest) = receiver.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let values = counter_values(&[early, rest].concat());
    let expected: Vec<i64> = (1..=values.len() as i64).collect();
    assert_eq!(values, expected, "every event, in order, once");
}

#[test]
fn a_receiver_restarted_mid_stream_loses_nothing() {
    let dir = TempDir::new("riemann-restart");
    let port = free_port();
    let first = start_receiver(&dir, "receiver1.yml", port, "");
    // 4 messages of 5 events in flight at most: the most that can arrive
    // twice is what was in flight when the receiver went away.
    let sender = start_agent(
        &dir,
        "sender.yml",
        &sender_config(port, 0.02, "    pressure: 4\n    events_per_message: 5\n"),
    );
    let mut seen = first.wait_for(Duration::from_secs(20), |e| metric(e) >= Some(40.0));
    let (code, rest) = first.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    seen.extend(rest);
    let stopped_at = counter_values(&seen).into_iter().max().unwrap_or(0);

    std::thread::sleep(Duration::from_millis(1500));
    assert!(sender.stderr().contains("delivery failed"), "{}", sender.stderr());
    let second = start_receiver(&dir, "receiver2.yml", port, "");
    let after = second.wait_for(Duration::from_secs(20), |e| {
        metric(e).is_some_and(|m| m as i64 >= stopped_at + 80)
    });
    seen.extend(after);
    let (code, _) = sender.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let (code, rest) = second.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    seen.extend(rest);

    let mut values = counter_values(&seen);
    let total = values.len();
    values.sort_unstable();
    values.dedup();
    let duplicates = total - values.len();
    let max = *values.last().unwrap();
    let expected: Vec<i64> = (1..=max).collect();
    assert_eq!(values, expected, "no event lost across the restart");
    assert!(
        duplicates <= 4 * 5,
        "{duplicates} duplicates: more than the unacknowledged window"
    );
}

#[test]
fn a_receiver_killed_outright_is_fed_again_once_back() {
    let dir = TempDir::new("riemann-sigkill");
    let port = free_port();
    let first = start_receiver(&dir, "receiver1.yml", port, "");
    let sender = start_agent(
        &dir,
        "sender.yml",
        &sender_config(port, 0.02, "    pressure: 4\n    events_per_message: 5\n"),
    );
    let seen = first.wait_for(Duration::from_secs(20), |e| metric(e) >= Some(20.0));
    first.signal(libc::SIGKILL);
    drop(first);
    let logged_by_first = counter_values(&seen).into_iter().max().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1000));
    let second = start_receiver(&dir, "receiver2.yml", port, "");
    let after = second.wait_for(Duration::from_secs(20), |e| {
        metric(e).is_some_and(|m| m as i64 >= logged_by_first + 60)
    });
    drop(sender);
    // What the killed receiver acknowledged but had not yet written is its
    // own loss; from where the second one took over, nothing is missing.
    let mut values = counter_values(&after);
    values.sort_unstable();
    values.dedup();
    let (min, max) = (values[0], *values.last().unwrap());
    assert_eq!(
        values,
        (min..=max).collect::<Vec<i64>>(),
        "contiguous after the restart"
    );
    assert!(
        min <= logged_by_first + 1 + 50,
        "resumed near where it stopped: {min} vs {logged_by_first}"
    );
}

#[test]
fn a_receiver_that_never_acknowledges_holds_pressure_and_memory() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    // Messages received on each connection before ductd gave up on it.
    let per_connection = Arc::new(Mutex::new(Vec::new()));
    let server = {
        let (stop, connections, per_connection) = (stop.clone(), connections.clone(), per_connection.clone());
        std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        connections.fetch_add(1, Ordering::Relaxed);
                        let per_connection = per_connection.clone();
                        handlers.push(std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                            let mut frames = 0;
                            let mut len = [0u8; 4];
                            while s.read_exact(&mut len).is_ok() {
                                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                                if s.read_exact(&mut body).is_err() {
                                    break;
                                }
                                frames += 1;
                            }
                            per_connection.lock().unwrap().push(frames);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for h in handlers {
                let _ = h.join();
            }
        })
    };

    let dir = TempDir::new("riemann-no-ack");
    let mut config = sender_config(
        port,
        0.001,
        "    pressure: 3\n    events_per_message: 10\n    ack_timeout: 1\n    maxsize: 3000\n    batch: 1000\n",
    );
    for i in 0..3 {
        config.push_str(&format!(
            "  - service: load{i}\n    source: duct.sources.generator.Function\n    interval: 0.001\n    route: riemann\n"
        ));
    }
    config.push_str(
        "  - service: self
    source: duct.sources.Duct
    interval: 0.5
    route: log
",
    );
    config = config.replace(
        "outputs:\n",
        "outputs:\n  - output: duct.outputs.logger.Logger\n    name: log\n    interval: 0.1\n",
    );
    let sender = start_agent(&dir, "sender.yml", &config);
    let pid = sender.pid();
    let started = Instant::now();
    let mut peak_kb = 0;
    let mut events = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        events.extend(sender.collect_for(Duration::from_millis(250)));
        peak_kb = peak_kb.max(common::status_kib(pid, "VmRSS:"));
    }
    let stderr = sender.stderr();
    drop(sender);
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();

    eprintln!("peak VmRSS of the sender: {peak_kb} kB");
    assert!(peak_kb < 64 * 1024, "VmRSS reached {peak_kb} kB");
    assert!(stderr.contains("did not acknowledge"), "{stderr}");
    assert!(
        connections.load(Ordering::Relaxed) >= 2,
        "it reconnects after an ack timeout"
    );
    let counts = per_connection.lock().unwrap().clone();
    assert!(!counts.is_empty());
    assert!(counts.iter().all(|&n| n <= 3), "pressure 3 exceeded: {counts:?}");
    let figure = |name: &str| -> Vec<f64> {
        events
            .iter()
            .filter(|e| service(e) == format!("self.output.riemann.{name}"))
            .filter_map(metric)
            .collect()
    };
    let queued = figure("queued");
    assert!(
        queued.iter().any(|&q| q > 1000.0),
        "the queue shows in the agent's figures: {queued:?}"
    );
    // maxsize, plus one batch in flight.
    assert!(queued.iter().all(|&q| q <= 4000.0), "{queued:?}");
    assert!(
        figure("dropped").iter().any(|&d| d > 0.0),
        "the full queue drops the oldest"
    );
    assert!(figure("healthy").last() == Some(&0.0));
}

#[test]
fn garbage_and_a_huge_length_prefix_do_not_hurt_the_listener() {
    let dir = TempDir::new("riemann-garbage");
    let port = free_port();
    let receiver = start_receiver(&dir, "receiver.yml", port, "    max_frame_bytes: 1048576\n");
    let mut good = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    good.write_all(&raw_frame("before", "h", 1)).unwrap();
    assert_eq!(read_answer(&mut good), Some(true));

    let attacks: [&[u8]; 3] = [
        // An HTTP client on the wrong port: "GET " reads as a 1.2 GB length.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // A 100 MB length prefix.
        &100_000_000u32.to_be_bytes(),
        // A small frame of bytes that are not protobuf.
        &[0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ];
    for attack in attacks {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(attack).unwrap();
        assert_eq!(read_answer(&mut s), Some(false), "refused: {attack:?}");
        assert_eq!(read_answer(&mut s), None, "then closed");
    }
    // A 100 MB prefix with data streaming behind it: refused before it is
    // buffered.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut flood = 100_000_000u32.to_be_bytes().to_vec();
    flood.extend(vec![0u8; 1 << 20]);
    let _ = s.write_all(&flood);
    assert_eq!(read_answer(&mut s), Some(false));

    // The other connection and new ones are served as before.
    good.write_all(&raw_frame("after", "h", 2)).unwrap();
    assert_eq!(read_answer(&mut good), Some(true));
    let mut fresh = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    fresh.write_all(&raw_frame("fresh", "h", 3)).unwrap();
    assert_eq!(read_answer(&mut fresh), Some(true));
    let events = receiver.wait_for(Duration::from_secs(10), |e| service(e) == "fresh");
    let names: Vec<&str> = events.iter().map(service).collect();
    assert_eq!(names, ["before", "after", "fresh"]);
    assert!(receiver.stderr().contains("max_frame_bytes"), "{}", receiver.stderr());
    let (code, _) = receiver.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "still running, and stops cleanly");
}

/// Eight million empty events (`0x32 0x00`) fit in one 16 MiB frame and
/// once took 2.8 GB to decode. Now the frame is refused `ok: false`, the
/// connection stays usable, other clients are served, and memory stays low.
#[test]
fn a_frame_of_millions_of_empty_events_is_refused_cheaply() {
    let dir = TempDir::new("riemann-bomb");
    let port = free_port();
    let receiver = start_receiver(&dir, "receiver.yml", port, "");
    let body = [0x32u8, 0x00].repeat(8_000_000);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    drop(body);
    let mut bomb = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let other = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(&raw_frame("meanwhile", "h", 1)).unwrap();
        read_answer(&mut s)
    });
    bomb.write_all(&frame).unwrap();
    assert_eq!(read_answer(&mut bomb), Some(false), "refused");
    assert_eq!(other.join().unwrap(), Some(true), "another client is served");
    bomb.write_all(&raw_frame("after", "h", 2)).unwrap();
    assert_eq!(read_answer(&mut bomb), Some(true), "the connection goes on");
    let events = receiver.wait_for(Duration::from_secs(10), |e| service(e) == "after");
    assert!(events
        .iter()
        .all(|e| service(e) == "meanwhile" || service(e) == "after"));
    // Loose: the frame itself is 16 MB; decoding it used to take 2.8 GB.
    let peak_mib = status_kib(receiver.pid(), "VmHWM:") / 1024;
    assert!(peak_mib < 200, "peak RSS {peak_mib} MiB");
    assert!(
        receiver.stderr().contains("max_events_per_message"),
        "{}",
        receiver.stderr()
    );
}

#[test]
fn legacy_server_and_port_keys_send_over_tcp() {
    let dir = TempDir::new("riemann-legacy");
    let port = free_port();
    let receiver = start_receiver(&dir, "receiver.yml", port, "");
    let _sender = start_agent(
        &dir,
        "sender.yml",
        &format!(
            "server: 127.0.0.1
port: {port}
interval: 0.1
sources:
  - service: legacy
    source: duct.sources.generator.Function
"
        ),
    );
    let events = receiver.wait_for(Duration::from_secs(15), |e| service(e) == "legacy");
    assert!(metric(events.last().unwrap()).is_some());
}

#[test]
fn legacy_proto_udp_sends_datagrams() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let port = socket.local_addr().unwrap().port();
    let dir = TempDir::new("riemann-udp");
    let _sender = start_agent(
        &dir,
        "sender.yml",
        &format!(
            "server: 127.0.0.1
port: {port}
proto: udp
interval: 0.1
sources:
  - service: over-udp
    source: duct.sources.generator.Function
"
        ),
    );
    let mut buf = [0u8; 65536];
    let n = socket.recv(&mut buf).expect("a datagram");
    let datagram = &buf[..n];
    // A bare Msg (no length prefix): its first field is an event (6, LEN).
    assert_eq!(datagram[0], 0x32, "{datagram:?}");
    assert!(datagram.windows(8).any(|w| w == b"over-udp"), "{datagram:?}");
}

#[test]
fn listener_port_in_use_is_retried_until_free() {
    let blocker = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = blocker.local_addr().unwrap().port();
    let dir = TempDir::new("riemann-busy-port");
    let receiver = start_agent(&dir, "receiver.yml", &receiver_config(port, ""));
    assert!(receiver.wait_for_log("cannot listen on 127.0.0.1", Duration::from_secs(10)));
    drop(blocker);
    assert!(
        receiver.wait_for_log("Riemann listener ready", Duration::from_secs(15)),
        "{}",
        receiver.stderr()
    );
    assert!(wait_for_port(port, Duration::from_secs(5)));
}

#[test]
fn failover_moves_to_the_next_server_of_the_list() {
    let dir = TempDir::new("riemann-failover");
    let port = free_port();
    // The receiver listens on 127.0.0.1 only: 127.0.0.2, first in the
    // list, refuses.
    let receiver = start_receiver(&dir, "receiver.yml", port, "");
    let sender = start_agent(
        &dir,
        "sender.yml",
        &sender_config(port, 0.05, "    failover: true\n")
            .replace("server: 127.0.0.1", "server: [127.0.0.2, 127.0.0.1]"),
    );
    let events = receiver.wait_for(Duration::from_secs(15), |e| metric(e) >= Some(10.0));
    assert_eq!(counter_values(&events), (1..=10).collect::<Vec<i64>>());
    let log = sender.stderr();
    assert!(log.contains(&format!("cannot connect to 127.0.0.2:{port}")), "{log}");
    assert!(log.contains(&format!("next attempt: 127.0.0.1:{port}")), "{log}");
}

/// A destination that accepts connections and reads everything, but never
/// answers; it stops when the flag is set.
fn hung_destination() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                        let mut sink = [0u8; 4096];
                        while !flag.load(Ordering::Relaxed) {
                            match s.read(&mut sink) {
                                Ok(0) => break,
                                Ok(_) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => break,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, stop)
}

/// Relays a Riemann client's events, one per message, through ductd's
/// listener to a destination that never acknowledges, for `period`.
/// Returns the messages acknowledged to the client, the longest it waited
/// for one answer, and the agent's `dropped` figures for the output.
fn relay_to_a_hung_destination(when_full: &str, period: Duration) -> (usize, Duration, Vec<f64>, String) {
    let (hung, stop) = hung_destination();
    let listen = free_port();
    let dir = TempDir::new("riemann-when-full");
    let config = format!(
        "shutdown_timeout: 1
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: relay
    server: 127.0.0.1
    port: {hung}
    interval: 0.05
    ack_timeout: 0.5
    backoff_max: 0.5
    batch: 100
    pushback: 200
    maxsize: 1000
{when_full}
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.1
sources:
  - service: riemann
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {listen}
    route: relay
  - service: self
    source: duct.sources.Duct
    interval: 0.25
    route: log
"
    );
    let agent = start_agent(&dir, "relay.yml", &config);
    assert!(
        agent.wait_for_log("Riemann listener ready", Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", listen)).expect("connect to the listener");
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let started = Instant::now();
        let (mut acked, mut longest) = (0, Duration::ZERO);
        'send: while started.elapsed() < period {
            s.write_all(&raw_frame("relayed", "client", (acked % 50) as i64))
                .expect("write");
            let asked = Instant::now();
            let mut len = [0u8; 4];
            // Waits for the answer, as Riemann clients do, until the period ends.
            loop {
                match s.read_exact(&mut len) {
                    Ok(()) => break,
                    Err(_) if started.elapsed() < period => continue,
                    Err(_) => {
                        longest = longest.max(asked.elapsed());
                        break 'send;
                    }
                }
            }
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.read_exact(&mut body).expect("answer body");
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            assert_eq!(body.get(..2), Some(&[0x10, 1][..]), "ok: true");
            acked += 1;
            longest = longest.max(asked.elapsed());
        }
        (acked, longest)
    });
    let (acked, longest) = client.join().expect("client");
    let events = agent.collect_for(Duration::from_millis(600));
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_for_log("agent stopped", Duration::from_secs(10)));
    let stderr = agent.stderr();
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    let dropped: Vec<f64> = events
        .iter()
        .filter(|e| service(e) == "self.output.relay.dropped")
        .filter_map(metric)
        .collect();
    (acked, longest, dropped, stderr)
}

#[test]
fn when_full_block_pushes_back_on_clients_for_as_long_as_the_destination_hangs() {
    let (acked, longest, dropped, stderr) = relay_to_a_hung_destination("    when_full: block", Duration::from_secs(6));
    eprintln!("block: {acked} messages acknowledged, longest wait {longest:?}, dropped {dropped:?}");
    assert!(stderr.contains("did not acknowledge"), "{stderr}");
    assert!(acked >= 150, "the client got about as far as pushback (200): {acked}");
    assert!(acked <= 1000, "no more than the queue holds was taken: {acked}");
    assert!(
        longest >= Duration::from_secs(3),
        "the client is held back well past ack_timeout: {longest:?}"
    );
    assert!(!dropped.is_empty(), "the agent's figures were read");
    assert!(dropped.iter().all(|&d| d == 0.0), "nothing dropped: {dropped:?}");
}

#[test]
fn when_full_drop_oldest_keeps_answering_and_drops_as_duct_did() {
    let (acked, _, dropped, stderr) = relay_to_a_hung_destination("    when_full: drop_oldest", Duration::from_secs(6));
    eprintln!("drop_oldest: {acked} messages acknowledged, dropped {dropped:?}");
    assert!(acked > 1000, "the client was answered past maxsize: {acked}");
    assert!(dropped.iter().any(|&d| d > 0.0), "the full queue drops: {dropped:?}");
    // The drop warnings are thinned, but together they say every drop, and
    // the shutdown line gives the total.
    let field = |line: &str, key: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("dropped events:")).collect();
    let logged: u64 = lines.iter().filter_map(|l| field(l, "dropped=")).sum();
    let total = stderr
        .lines()
        .find(|l| l.contains("agent stopped"))
        .and_then(|l| field(l, "dropped="))
        .expect("the shutdown line says what was dropped");
    eprintln!("{}", lines.join("\n"));
    assert!(lines.len() < 10, "thinned: {} lines", lines.len());
    assert_eq!(logged, total, "{stderr}");
    // Everything the client was answered for is queued (maxsize), in
    // flight (a batch) or dropped.
    let total = total as usize;
    assert!(
        total + 1000 <= acked && acked <= total + 1000 + 200,
        "{acked} acked, {total} dropped"
    );
}

#[test]
fn when_full_defaults_to_block() {
    let (acked, longest, dropped, _) = relay_to_a_hung_destination("", Duration::from_secs(5));
    assert!(acked <= 1000, "{acked}");
    assert!(longest >= Duration::from_secs(2), "{longest:?}");
    assert!(dropped.iter().all(|&d| d == 0.0), "{dropped:?}");
}
