//! NATS end to end against a real `nats-server` (Debian package
//! nats-server), plain and JetStream: the output's every format read by a
//! subscriber the test speaks the protocol with itself, JetStream delivery
//! across a server restart counted exactly, and the source fed by the
//! test's own PUBs, garbage included.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ductd, free_port, make_certificates, metric, require_binary, service, Running, Server, TempDir};
use serde_json::Value;

/// A nats-server on a free loopback port; JetStream keeping its data in
/// `store` when given.
fn start_nats(binary: &Path, port: u16, store: Option<&Path>) -> Server {
    let mut cmd = Command::new(binary);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(dir) = store {
        cmd.arg("-js").arg("-sd").arg(dir);
    }
    Server::spawn(cmd, port, TempDir::new("nats-run"), "nats-server")
}

/// A nats-server on a free loopback port, configured by `conf` (written in
/// `dir`).
fn start_nats_conf(binary: &Path, port: u16, dir: &TempDir, conf: &str) -> Server {
    let conf = dir.write(&format!("nats-{port}.conf"), conf);
    let mut cmd = Command::new(binary);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"]).arg(&conf);
    Server::spawn(cmd, port, TempDir::new("nats-conf-run"), "nats-server")
}

/// The first event of `wanted`'s service, among `events` or those that
/// come within 20 s.
fn first_of(agent: &Running, events: &[Value], wanted: &str) -> Value {
    if let Some(e) = events.iter().find(|e| service(e) == wanted) {
        return e.clone();
    }
    let more = agent.wait_for(Duration::from_secs(20), |e| service(e) == wanted);
    more.into_iter()
        .find(|e| service(e) == wanted)
        .unwrap_or_else(|| panic!("no {wanted} event: {}", agent.stderr()))
}

/// Asserts that `wanted` is a critical event saying `why`.
fn assert_refused(agent: &Running, events: &[Value], wanted: &str, why: &str) {
    let e = first_of(agent, events, wanted);
    assert_eq!(e["state"], "critical", "{e}");
    let description = e["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("cannot connect to NATS") && description.contains(why),
        "{wanted}: {e}"
    );
}

/// One message as the server delivered it.
#[derive(Debug)]
struct Msg {
    subject: String,
    payload: Vec<u8>,
}

/// The few lines of the NATS client protocol a test needs: CONNECT, SUB,
/// PUB, and reading MSG/HMSG (answering PINGs).
struct RawNats {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    sids: u32,
}

impl RawNats {
    fn connect(port: u16) -> RawNats {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats-server");
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut nats = RawNats {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            sids: 0,
        };
        let info = nats.line().expect("INFO");
        assert!(info.starts_with("INFO "), "{info}");
        nats.send(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\nPING\r\n",
        );
        loop {
            match nats.line().as_deref() {
                Some("PONG") => return nats,
                Some(l) if l.starts_with("-ERR") => panic!("{l}"),
                Some(_) => {}
                None => panic!("no PONG"),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to nats-server");
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end().to_string()),
            Err(_) => None,
        }
    }

    fn sub(&mut self, subject: &str) {
        self.sids += 1;
        let cmd = format!("SUB {subject} {}\r\nPING\r\n", self.sids);
        self.send(cmd.as_bytes());
    }

    fn publish(&mut self, subject: &str, reply: Option<&str>, payload: &[u8]) {
        let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
        let mut cmd = format!("PUB {subject}{reply} {}\r\n", payload.len()).into_bytes();
        cmd.extend_from_slice(payload);
        cmd.extend_from_slice(b"\r\n");
        self.send(&cmd);
    }

    /// The next message within `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(line) = self.line() else { continue };
            let words: Vec<&str> = line.split(' ').collect();
            let (subject, header_len, total) = match words[0] {
                "PING" => {
                    self.send(b"PONG\r\n");
                    continue;
                }
                "MSG" => (words[1], 0, words[words.len() - 1].parse::<usize>().unwrap()),
                "HMSG" => (
                    words[1],
                    words[words.len() - 2].parse::<usize>().unwrap(),
                    words[words.len() - 1].parse::<usize>().unwrap(),
                ),
                w if w.starts_with("-ERR") => panic!("{line}"),
                _ => continue,
            };
            let subject = subject.to_string();
            let mut body = vec![0u8; total + 2];
            self.reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            self.reader.read_exact(&mut body).expect("message body");
            self.reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            body.truncate(total);
            return Some(Msg {
                subject,
                payload: body.split_off(header_len),
            });
        }
        None
    }

    /// A request and its JSON answer (the JetStream API).
    fn request(&mut self, subject: &str, payload: &str) -> Value {
        self.sids += 1;
        let inbox = format!("_INBOX.test{}", self.sids);
        self.sub(&inbox);
        self.publish(subject, Some(&inbox), payload.as_bytes());
        loop {
            let m = self.next(Duration::from_secs(10)).expect("an answer");
            if m.subject == inbox {
                return serde_json::from_slice(&m.payload).expect("JSON answer");
            }
        }
    }
}

fn start_agent(dir: &TempDir, config: &str) -> Running {
    let path: PathBuf = dir.write("duct.yml", config);
    Running::start(&["-c", path.to_str().expect("utf-8 path")])
}

/// The counter's value in a SenML CBOR pack's first record, read by hand:
/// `[{"bn": "web1/", "bt": <f64>, "n": "counter", "v": <uint>}, …]`.
fn cbor_counter(payload: &[u8]) -> Option<i64> {
    let bn = b"\x62bn\x65web1/\x62bt\xfb";
    let at = payload.windows(bn.len()).position(|w| w == bn)?;
    let rest = &payload[at + bn.len() + 8..];
    let rest = rest.strip_prefix(b"\x61n\x67counter\x61v")?;
    match rest {
        [n, ..] if *n < 24 => Some(i64::from(*n)),
        [0x18, n, ..] => Some(i64::from(*n)),
        [0x19, a, b, ..] => Some(i64::from(u16::from_be_bytes([*a, *b]))),
        _ => None,
    }
}

/// What each format's payload says the counter is.
fn counter_in(format: &str, payload: &[u8]) -> Option<i64> {
    match format {
        "json" => {
            let v: Value = serde_json::from_slice(payload).ok()?;
            assert_eq!(v["hostname"], "web1");
            assert_eq!(v["type"], "metric");
            Some(v["metric"].as_f64()? as i64)
        }
        "senml-json" => {
            let v: Value = serde_json::from_slice(payload).ok()?;
            assert_eq!(v[0]["bn"], "web1/");
            assert_eq!(v[0]["n"], "counter");
            assert!(v.as_array()?.iter().any(|r| r["n"] == "counter/ttl"), "{v}");
            Some(v[0]["v"].as_f64()? as i64)
        }
        "senml-cbor" => {
            assert_eq!(payload[0], 0x81, "one record");
            cbor_counter(payload)
        }
        "senml-cbor-extended" => {
            assert!(payload[0] > 0x81 && payload[0] < 0x98, "more than one record");
            assert!(payload.windows(11).any(|w| w == b"counter/ttl"));
            cbor_counter(payload)
        }
        _ => None,
    }
}

const FORMATS: [&str; 4] = ["json", "senml-json", "senml-cbor", "senml-cbor-extended"];

#[test]
fn every_format_reaches_a_subscriber() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let port = free_port();
    let _server = start_nats(&binary, port, None);
    let mut sub = RawNats::connect(port);
    sub.sub("fmt.>");
    let mut outputs = String::new();
    for f in FORMATS {
        outputs.push_str(&format!(
            "  - output: duct.outputs.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    prefix: fmt.{f}
    format: {f}
    interval: 0.1
"
        ));
    }
    let dir = TempDir::new("nats-formats");
    let agent = start_agent(
        &dir,
        &format!(
            "hostname: web1
outputs:
{outputs}sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
    interval: 0.1
"
        ),
    );
    let mut seen: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 4 || seen.values().any(|v| v.len() < 10) {
        assert!(Instant::now() < deadline, "{seen:?}\n{}", agent.stderr());
        let Some(m) = sub.next(Duration::from_secs(1)) else {
            continue;
        };
        let format = FORMATS
            .iter()
            .find(|f| m.subject == format!("fmt.{f}.web1.counter"))
            .unwrap_or_else(|| panic!("unexpected subject {}", m.subject));
        let n = counter_in(format, &m.payload).unwrap_or_else(|| panic!("{format}: {:?}", m.payload));
        seen.entry(format).or_default().push(n);
    }
    for (format, values) in &seen {
        // In order, none missed, from the first: every event, each once.
        let first = values[0];
        let want: Vec<i64> = (first..first + values.len() as i64).collect();
        assert_eq!(values, &want, "{format}");
        assert!(first <= 2, "{format} starts at {first}");
    }
}

/// JetStream's answer to a stream info request: messages stored.
fn stream_messages(nats: &mut RawNats, stream: &str) -> u64 {
    let info = nats.request(&format!("$JS.API.STREAM.INFO.{stream}"), "");
    info["state"]["messages"].as_u64().unwrap_or_else(|| panic!("{info}"))
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn jetstream_keeps_every_event_across_a_server_restart() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let port = free_port();
    let store = TempDir::new("nats-js");
    let server = start_nats(&binary, port, Some(store.path()));
    let mut nats = RawNats::connect(port);
    let created = nats.request(
        "$JS.API.STREAM.CREATE.DUCT",
        r#"{"name":"DUCT","subjects":["ductd.>"],"storage":"file"}"#,
    );
    assert!(created.get("error").is_none(), "{created}");
    let dir = TempDir::new("nats-js-agent");
    let agent = start_agent(
        &dir,
        &format!(
            "hostname: web1
outputs:
  - output: duct.outputs.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    prefix: ductd
    format: json
    jetstream: true
    interval: 0.1
    backoff_max: 0.5
    write_timeout: 2
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
    interval: 0.05
"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_messages(&mut nats, "DUCT") < 20 {
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(nats);
    drop(server);
    std::thread::sleep(Duration::from_secs(2));
    let _server = start_nats(&binary, port, Some(store.path()));
    let mut nats = RawNats::connect(port);
    let before = stream_messages(&mut nats, "DUCT");
    let deadline = Instant::now() + Duration::from_secs(40);
    while stream_messages(&mut nats, "DUCT") < before + 60 {
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.stderr();
    assert!(log.contains("delivery failed"), "the server was away: {log}");
    let (code, _) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let stored = stream_messages(&mut nats, "DUCT");
    let mut values = Vec::new();
    for seq in 1..=stored {
        let got = nats.request("$JS.API.STREAM.MSG.GET.DUCT", &format!("{{\"seq\":{seq}}}"));
        let message = &got["message"];
        assert_eq!(message["subject"], "ductd.web1.counter", "{got}");
        let event: Value = serde_json::from_slice(&base64_decode(message["data"].as_str().unwrap())).unwrap();
        values.push(event["metric"].as_f64().unwrap() as i64);
    }
    values.sort_unstable();
    // Every event the counter made while the server was away is there,
    // and none twice.
    let want: Vec<i64> = (1..=stored as i64).collect();
    assert_eq!(values, want, "stored {stored}");
}

#[test]
fn the_source_takes_published_events_and_passes_over_garbage() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let port = free_port();
    let _server = start_nats(&binary, port, None);
    let dir = TempDir::new("nats-source");
    let agent = start_agent(
        &dir,
        &format!(
            "outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: nats
    source: duct.sources.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    topics: [\"in.>\"]
    format: senml-json
    append_topic: true
"
        ),
    );
    assert!(
        agent.wait_for_log("subscribed", Duration::from_secs(20)),
        "{}",
        agent.stderr()
    );
    let mut publisher = RawNats::connect(port);
    publisher.publish("in.a", None, b"not json at all");
    publisher.publish("in.a", None, br#"[{"bn": "sensor1/", "bt": 1700000000.5, "n": "temp", "v": 21.5}, {"n": "temp/state", "vs": "warning"}, {"n": "temp/tags", "vs": "x,y"}]"#);
    publisher.publish("in.b", None, br#"{"not": "a pack"}"#);
    publisher.publish("in.b", None, br#"[{"bn": "sensor2/", "n": "hum", "v": 40}]"#);
    let events = agent.wait_for(Duration::from_secs(20), |e| service(e) == "in.b.hum");
    let temp = events
        .iter()
        .find(|e| service(e) == "in.a.temp")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(temp["host"], "sensor1");
    assert_eq!(temp["state"], "warning");
    assert_eq!(temp["time"], 1700000000.5);
    assert_eq!(metric(temp), Some(21.5));
    assert_eq!(temp["tags"], serde_json::json!(["x", "y"]));
    let hum = events.last().unwrap();
    assert_eq!((hum["host"].as_str(), metric(hum)), (Some("sensor2"), Some(40.0)));
    assert!(
        agent.stderr().contains("is not a senml-json event"),
        "{}",
        agent.stderr()
    );
    // Garbage did not stop it: more events still come through.
    for i in 0..50 {
        publisher.publish(
            "in.c",
            None,
            format!(r#"[{{"bn": "h/", "n": "n", "v": {i}}}]"#).as_bytes(),
        );
    }
    let more = agent.wait_for(Duration::from_secs(20), |e| metric(e) == Some(49.0));
    let counted = more.iter().filter(|e| service(e) == "in.c.n").count();
    assert_eq!(counted, 50, "every message an event");
}

#[test]
fn a_durable_jetstream_consumer_takes_up_where_it_left_off() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let port = free_port();
    let store = TempDir::new("nats-js-source");
    let _server = start_nats(&binary, port, Some(store.path()));
    let mut nats = RawNats::connect(port);
    let created = nats.request(
        "$JS.API.STREAM.CREATE.IN",
        r#"{"name":"IN","subjects":["js.>"],"storage":"file"}"#,
    );
    assert!(created.get("error").is_none(), "{created}");
    let publish = |nats: &mut RawNats, from: i64, to: i64| {
        for i in from..to {
            nats.publish(
                "js.x",
                None,
                format!(r#"{{"hostname": "h", "service": "s", "metric": {i}}}"#).as_bytes(),
            );
        }
        nats.publish("js.x", None, b"\xff garbage");
        // Stored before the agent looks.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stream_messages(nats, "IN") < (to + (to / 20)) as u64 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    publish(&mut nats, 0, 20);
    let dir = TempDir::new("nats-js-source-agent");
    let config = format!(
        "outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: nats
    source: duct.sources.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    topics: [\"js.>\"]
    format: json
    jetstream: true
    durable: ductd-test
"
    );
    let agent = start_agent(&dir, &config);
    let events = agent.wait_for(Duration::from_secs(20), |e| metric(e) == Some(19.0));
    let values: Vec<i64> = events.iter().filter_map(metric).map(|m| m as i64).collect();
    assert_eq!(values, (0..20).collect::<Vec<_>>(), "each message once, in order");
    // Acknowledged once in the pipeline: the agent stopped, the next
    // agent gets only what came meanwhile.
    let (code, rest) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(rest.is_empty(), "{rest:?}");
    publish(&mut nats, 20, 40);
    let agent = start_agent(&dir, &config);
    let events = agent.wait_for(Duration::from_secs(20), |e| metric(e) == Some(39.0));
    let values: Vec<i64> = events.iter().filter_map(metric).map(|m| m as i64).collect();
    assert_eq!(values, (20..40).collect::<Vec<_>>(), "nothing again, nothing missed");
    let more = agent.collect_for(Duration::from_millis(500));
    assert!(more.is_empty(), "{more:?}");
}

#[test]
fn output_and_source_over_tls_checked_against_the_ca() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let certs_dir = TempDir::new("nats-tls-certs");
    let Some(certs) = make_certificates(certs_dir.path()) else {
        return;
    };
    let port = free_port();
    let mut cmd = Command::new(&binary);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .arg("--tlscert")
        .arg(&certs.cert)
        .arg("--tlskey")
        .arg(&certs.key);
    let _server = Server::spawn(cmd, port, TempDir::new("nats-tls-run"), "nats-server");
    let dir = TempDir::new("nats-tls-agent");
    let (ca, wrong) = (certs.ca.display(), certs.wrong_ca.display());
    let agent = start_agent(
        &dir,
        &format!(
            "hostname: web1
outputs:
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.05
  - output: duct.outputs.nats.Nats
    name: nats
    servers: [\"tls://127.0.0.1:{port}\"]
    tls_ca_file: {ca}
    prefix: tls
    format: senml-cbor-extended
    interval: 0.1
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
    interval: 0.1
    route: nats
  - service: in
    source: duct.sources.nats.Nats
    servers: [\"tls://127.0.0.1:{port}\"]
    tls_ca_file: {ca}
    topics: [\"tls.>\"]
    format: senml-cbor
    route: log
  - service: untrusted
    source: duct.sources.nats.Nats
    servers: [\"tls://127.0.0.1:{port}\"]
    tls_ca_file: {wrong}
    route: log
"
        ),
    );
    let events = agent.wait_for(Duration::from_secs(30), |e| {
        service(e) == "counter" && metric(e) >= Some(5.0)
    });
    let last = events.last().unwrap();
    assert_eq!(last["host"], "web1");
    assert!(
        agent.wait_for_log("cannot connect to NATS", Duration::from_secs(10)),
        "the wrong CA is refused: {}",
        agent.stderr()
    );
}

#[test]
fn nkey_seed_file_authenticates_and_no_key_is_refused() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let dir = TempDir::new("nats-nkey");
    let user = nkeys::KeyPair::new_user();
    let seed = dir.write("user.nk", &format!("{}\n", user.seed().unwrap()));
    let port = free_port();
    let _server = start_nats_conf(
        &binary,
        port,
        &dir,
        &format!("authorization {{ users = [ {{ nkey: {} }} ] }}\n", user.public_key()),
    );
    let seed = seed.display();
    let agent = start_agent(
        &dir,
        &format!(
            "hostname: web1
outputs:
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.05
  - output: duct.outputs.nats.Nats
    name: nats
    servers: [\"nats://127.0.0.1:{port}\"]
    nkey_seed_file: {seed}
    prefix: nk
    format: json
    interval: 0.1
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
    interval: 0.1
    route: nats
  - service: in
    source: duct.sources.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    nkey_seed_file: {seed}
    topics: [\"nk.>\"]
    format: json
    route: log
  - service: anonymous
    source: duct.sources.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    route: log
"
        ),
    );
    let events = agent.wait_for(Duration::from_secs(30), |e| {
        service(e) == "counter" && metric(e) >= Some(5.0)
    });
    assert!(
        agent.wait_for_log("cannot connect to NATS", Duration::from_secs(10)),
        "without the key the server refuses: {}",
        agent.stderr()
    );
    assert_refused(&agent, &events, "anonymous", "authorization violation");
}

/// A NATS JWT (version 2) saying `nats` of `subject`, issued and signed
/// by `issuer`: what `nsc` writes (nsc is not in Debian).
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{name}{iat}"),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("sign a JWT");
    format!("{signed}.{}", b64.encode(signature))
}

/// A user of `account` in a `.creds` file as nsc writes it: the user's JWT
/// and nkey seed.
fn creds_file(dir: &TempDir, name: &str, account: &nkeys::KeyPair) -> PathBuf {
    let user = nkeys::KeyPair::new_user();
    let limits = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2,
    });
    let token = jwt(account, &user.public_key(), name, limits);
    let seed = user.seed().expect("a user seed");
    dir.write(
        &format!("{name}.creds"),
        &format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
}

#[test]
fn credentials_files_authenticate_in_operator_mode_and_a_stranger_is_refused() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let dir = TempDir::new("nats-creds");
    // An operator, the one account it knows (preloaded in the server's
    // memory resolver), and an account it does not know.
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let stranger = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "ductd-test",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_nats = serde_json::json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        },
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    });
    let account_jwt = jwt(&operator, &account.public_key(), "DUCT", account_nats);
    let operator_file = dir.write("operator.jwt", &operator_jwt);
    let port = free_port();
    let _server = start_nats_conf(
        &binary,
        port,
        &dir,
        &format!(
            "operator: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {account_jwt}\n}}\n",
            operator_file.display(),
            account.public_key()
        ),
    );
    let creds = creds_file(&dir, "ductd", &account);
    let strange = creds_file(&dir, "stranger", &stranger);
    let (creds, strange) = (creds.display(), strange.display());
    let agent = start_agent(
        &dir,
        &format!(
            "hostname: web1
outputs:
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.05
  - output: duct.outputs.nats.Nats
    name: nats
    servers: [\"nats://127.0.0.1:{port}\"]
    credentials_file: {creds}
    prefix: cr
    format: json
    interval: 0.1
  - output: duct.outputs.nats.Nats
    name: refused
    servers: [\"nats://127.0.0.1:{port}\"]
    credentials_file: {strange}
    interval: 0.1
    backoff_max: 1
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
    interval: 0.1
    route: [nats, refused]
  - service: in
    source: duct.sources.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    credentials_file: {creds}
    topics: [\"cr.>\"]
    format: json
    route: log
  - service: stranger
    source: duct.sources.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    credentials_file: {strange}
    route: log
  - service: self
    source: duct.sources.Duct
    interval: 0.5
    route: log
"
        ),
    );
    // Published with one user's credentials, read back with them.
    let events = agent.wait_for(Duration::from_secs(30), |e| {
        service(e) == "counter" && metric(e) >= Some(5.0)
    });
    assert_eq!(events.last().unwrap()["host"], "web1");
    assert_refused(&agent, &events, "stranger", "authorization violation");
    // The output that is refused is unhealthy, says why, and the agent
    // goes on delivering to the other.
    let unhealthy = agent.wait_for(Duration::from_secs(30), |e| {
        service(e) == "self.output.refused.healthy" && metric(e) == Some(0.0)
    });
    assert_eq!(unhealthy.last().unwrap()["state"], "critical");
    let log = agent.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("delivery failed") && l.contains("authorization violation")),
        "{log}"
    );
    let later = agent.wait_for(Duration::from_secs(20), |e| {
        service(e) == "counter" && metric(e) >= Some(15.0)
    });
    assert!(!later.is_empty());
}

#[test]
fn user_password_and_token_in_the_server_urls_authenticate() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let dir = TempDir::new("nats-userpass");
    // A password that needs percent-encoding in a URL.
    let (users, tokens) = (free_port(), free_port());
    let _users = start_nats_conf(
        &binary,
        users,
        &dir,
        "authorization { users = [ { user: ductd, password: \"p@ss:w/rd\" } ] }\n",
    );
    let _tokens = start_nats_conf(&binary, tokens, &dir, "authorization { token: \"t0ken-s3cret\" }\n");
    let good = format!("nats://ductd:p%40ss%3Aw%2Frd@127.0.0.1:{users}");
    let token = format!("nats://t0ken-s3cret@127.0.0.1:{tokens}");
    let agent = start_agent(
        &dir,
        &format!(
            "hostname: web1
outputs:
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.05
  - output: duct.outputs.nats.Nats
    name: users
    servers: [\"{good}\"]
    prefix: up
    format: json
    interval: 0.1
  - output: duct.outputs.nats.Nats
    name: tokens
    servers: [\"{token}\"]
    prefix: tk
    format: json
    interval: 0.1
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
    interval: 0.1
    route: [users, tokens]
  - service: up
    source: duct.sources.nats.Nats
    servers: [\"{good}\"]
    topics: [\"up.>\"]
    format: json
    append_topic: true
    route: log
  - service: tk
    source: duct.sources.nats.Nats
    servers: [\"{token}\"]
    topics: [\"tk.>\"]
    format: json
    append_topic: true
    route: log
  - service: wrong-password
    source: duct.sources.nats.Nats
    servers: [\"nats://ductd:guess@127.0.0.1:{users}\"]
    route: log
  - service: wrong-token
    source: duct.sources.nats.Nats
    servers: [\"nats://guess@127.0.0.1:{tokens}\"]
    route: log
"
        ),
    );
    let mut events = Vec::new();
    for wanted in ["up.web1.counter.counter", "tk.web1.counter.counter"] {
        if !events.iter().any(|e| service(e) == wanted) {
            events.extend(agent.wait_for(Duration::from_secs(30), |e| service(e) == wanted));
        }
    }
    assert_refused(&agent, &events, "wrong-password", "authorization violation");
    assert_refused(&agent, &events, "wrong-token", "authorization violation");
    // The secrets stay out of the logs and the events.
    let log = agent.stderr();
    for secret in ["p@ss", "p%40ss", "t0ken", "guess"] {
        assert!(!log.contains(secret), "{secret} in the log: {log}");
        assert!(
            !events.iter().any(|e| e.to_string().contains(secret)),
            "{secret} in an event"
        );
    }
    assert!(log.contains(&format!("nats://ductd:***@127.0.0.1:{users}")), "{log}");
}

#[test]
fn client_certificates_for_a_server_that_verifies_them() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let dir = TempDir::new("nats-mtls");
    let Some(certs) = make_certificates(dir.path()) else {
        return;
    };
    let port = free_port();
    let _server = start_nats_conf(
        &binary,
        port,
        &dir,
        &format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
            certs.cert.display(),
            certs.key.display(),
            certs.ca.display()
        ),
    );
    let (ca, cert, key) = (
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display(),
    );
    let agent = start_agent(
        &dir,
        &format!(
            "hostname: web1
outputs:
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.05
  - output: duct.outputs.nats.Nats
    name: nats
    servers: [\"tls://127.0.0.1:{port}\"]
    tls_ca_file: {ca}
    tls_cert_file: {cert}
    tls_key_file: {key}
    prefix: mtls
    format: senml-json
    interval: 0.1
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
    interval: 0.1
    route: nats
  - service: in
    source: duct.sources.nats.Nats
    servers: [\"tls://127.0.0.1:{port}\"]
    tls_ca_file: {ca}
    tls_cert_file: {cert}
    tls_key_file: {key}
    topics: [\"mtls.>\"]
    format: senml-json
    route: log
  - service: no-certificate
    source: duct.sources.nats.Nats
    servers: [\"tls://127.0.0.1:{port}\"]
    tls_ca_file: {ca}
    route: log
"
        ),
    );
    let events = agent.wait_for(Duration::from_secs(30), |e| {
        service(e) == "counter" && metric(e) >= Some(5.0)
    });
    assert_eq!(events.last().unwrap()["host"], "web1");
    assert_refused(&agent, &events, "no-certificate", "Certificate");
}

#[test]
fn a_jetstream_batch_larger_than_the_clients_ack_window_is_stored_whole() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let port = free_port();
    let store = TempDir::new("nats-js-bulk");
    let _server = start_nats(&binary, port, Some(store.path()));
    let mut nats = RawNats::connect(port);
    let created = nats.request(
        "$JS.API.STREAM.CREATE.BULK",
        r#"{"name":"BULK","subjects":["bulk.>"],"storage":"file"}"#,
    );
    assert!(created.get("error").is_none(), "{created}");
    let riemann = free_port();
    let dir = TempDir::new("nats-js-bulk-agent");
    let agent = start_agent(
        &dir,
        &format!(
            "outputs:
  - output: duct.outputs.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    prefix: bulk
    format: senml-cbor
    jetstream: true
    interval: 0.5
sources:
  - service: riemann
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {riemann}
"
        ),
    );
    assert!(agent.wait_for_log("Riemann listener ready", Duration::from_secs(10)));
    let mut client = TcpStream::connect(("127.0.0.1", riemann)).unwrap();
    // More than the client's 5000 unanswered publishes, in one batch.
    let bulk: Vec<(&str, &str, i64)> = (0..7000).map(|i| ("bulk", "h", i)).collect();
    client.write_all(&common::riemann_frame(&bulk)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_messages(&mut nats, "BULK") < 7000 {
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stream_messages(&mut nats, "BULK"), 7000);
    assert!(!agent.stderr().contains("delivery failed"), "{}", agent.stderr());
}

#[test]
fn the_source_subscribes_again_after_a_server_restart() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let port = free_port();
    let server = start_nats(&binary, port, None);
    let dir = TempDir::new("nats-source-restart");
    let agent = start_agent(
        &dir,
        &format!(
            "outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: nats
    source: duct.sources.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    topics: [\"r.>\"]
    format: json
"
        ),
    );
    assert!(
        agent.wait_for_log("subscribed", Duration::from_secs(20)),
        "{}",
        agent.stderr()
    );
    let mut publisher = RawNats::connect(port);
    publisher.publish("r.x", None, br#"{"service": "before", "metric": 1}"#);
    agent.wait_for(Duration::from_secs(20), |e| service(e) == "before");
    drop(publisher);
    drop(server);
    std::thread::sleep(Duration::from_secs(1));
    let _server = start_nats(&binary, port, None);
    // The client reconnects by itself and renews the subscription; until
    // it has, what is published goes to no one (core NATS), so keep
    // publishing until one arrives.
    let mut publisher = RawNats::connect(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        publisher.publish("r.x", None, br#"{"service": "after", "metric": 2}"#);
        if let Some(e) = agent.next_event(Duration::from_millis(300)) {
            if service(&e) == "after" {
                break;
            }
        }
    }
}

#[test]
fn the_clients_own_connection_lines_are_left_out_unless_asked_for() {
    let Some(binary) = require_binary("nats-server", "nats-server") else {
        return;
    };
    let port = free_port();
    let _server = start_nats(&binary, port, None);
    let dir = TempDir::new("nats-logging");
    let config = dir.write(
        "duct.yml",
        &format!(
            "outputs:
  - output: duct.outputs.nats.Nats
    servers: [\"nats://127.0.0.1:{port}\"]
    interval: 0.1
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    interval: 0.1
"
        ),
    );
    let config = config.to_str().expect("utf-8 path");
    // async-nats logs "connected successfully" and "event: connected" at
    // info on every connection; ductd says "NATS connected" itself.
    let quiet = Running::start(&["-c", config]);
    assert!(
        quiet.wait_for_log("NATS connected", Duration::from_secs(20)),
        "{}",
        quiet.stderr()
    );
    let mut raised = ductd(&["-c", config]);
    raised.env("DUCTD_LOG", "async_nats=info");
    let raised = Running::start_with(raised);
    assert!(
        raised.wait_for_log("connected successfully", Duration::from_secs(20)),
        "DUCTD_LOG brings them back: {}",
        raised.stderr()
    );
    assert!(raised.stderr().contains("event: connected"), "{}", raised.stderr());
    let log = quiet.stderr();
    assert!(
        !log.contains("connected successfully") && !log.contains("event: connected"),
        "{log}"
    );
    assert!(log.contains("agent started"), "ductd's own info lines stay: {log}");
}
