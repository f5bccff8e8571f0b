//! Outputs end to end against their real receivers: ductd's events arrive
//! in the receiver's own storage, read back with the receiver's own tools,
//! through a receiver that is absent at start and restarted mid-stream.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, require_binary, wait_for_port, Running, Server, TempDir};

/// A carbon-cache on free loopback ports, storing one-second points under
/// `dir/whisper`.
struct Carbon {
    binary: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
}

impl Carbon {
    fn new(binary: PathBuf, dir: &TempDir) -> Carbon {
        let base = dir.path().display();
        let port = free_port();
        let config = format!(
            "[cache]
STORAGE_DIR = {base}/
LOCAL_DATA_DIR = {base}/whisper/
WHITELISTS_DIR = {base}/lists/
CONF_DIR = {base}/
LOG_DIR = {base}/log/
PID_DIR = {base}/
ENABLE_LOGROTATION = False
ENABLE_TAGS = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 10000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query}
LOG_UPDATES = False
LOG_CREATES = False
WHISPER_AUTOFLUSH = True
",
            pickle = free_port(),
            query = free_port(),
        );
        dir.write("storage-schemas.conf", "[all]\npattern = .*\nretentions = 1s:1h\n");
        Carbon {
            binary,
            dir: dir.path().to_path_buf(),
            config: dir.write("carbon.conf", &config),
            port,
        }
    }

    fn start(&self) -> Server {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(format!("--config={}", self.config.display()))
            .args(["--nodaemon", "start"]);
        // The pid file of a killed instance would stop the next one.
        let _ = std::fs::remove_file(self.dir.join("carbon-cache-a.pid"));
        Server::spawn(cmd, self.port, TempDir::new("carbon-run"), "carbon-cache")
    }

    /// The points stored for `path` (dotted), as (time, value).
    fn points(&self, path: &str) -> Vec<(i64, f64)> {
        let file = self.dir.join("whisper").join(format!("{}.wsp", path.replace('.', "/")));
        if !file.exists() {
            return Vec::new();
        }
        let from = format!("--from={}", unix_now() - 600);
        let out = Command::new("whisper-fetch")
            .arg(from)
            .arg(&file)
            .output()
            .expect("run whisper-fetch");
        parse_whisper_fetch(&String::from_utf8_lossy(&out.stdout))
    }

    /// Waits until `path` has a point at or after `since`.
    fn wait_for_point(&self, path: &str, since: i64, timeout: Duration) -> Option<(i64, f64)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(p) = self.points(path).into_iter().find(|&(t, _)| t >= since) {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// `whisper-fetch` prints `time<TAB>value` per slot, `None` for empty ones.
fn parse_whisper_fetch(text: &str) -> Vec<(i64, f64)> {
    text.lines()
        .filter_map(|l| {
            let (t, v) = l.split_once('\t')?;
            Some((t.trim().parse().ok()?, v.trim().parse().ok()?))
        })
        .collect()
}

fn start_agent(dir: &Path, config: &str) -> Running {
    let path = dir.join("duct.yml");
    std::fs::write(&path, config).expect("write config");
    Running::start(&["-c", path.to_str().expect("utf-8 path")])
}

#[test]
fn graphite_reaches_carbon_absent_at_start_and_after_a_restart() {
    let Some(binary) = require_binary("carbon-cache", "graphite-carbon") else {
        return;
    };
    if require_binary("whisper-fetch", "python3-whisper").is_none() {
        return;
    }
    let data = TempDir::new("carbon");
    let carbon = Carbon::new(binary, &data);
    let dir = TempDir::new("graphite-agent");
    let config = format!(
        "hostname: web1
outputs:
  - output: duct.outputs.graphite.Graphite
    server: 127.0.0.1
    port: {port}
    prefix: ductd test
    interval: 0.2
    backoff_max: 0.5
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.5
",
        port = carbon.port
    );
    // Nothing listens yet: the output retries and keeps what it has.
    let before = unix_now();
    let agent = start_agent(dir.path(), &config);
    std::thread::sleep(Duration::from_secs(2));
    let carbon_started = unix_now();
    let first = carbon.start();
    let path = "ductd_test.web1.answer";
    let point = carbon.wait_for_point(path, before, Duration::from_secs(30));
    assert_eq!(
        point.map(|p| p.1),
        Some(42.0),
        "no point in carbon:\n{}",
        agent.stderr()
    );
    // What was queued while carbon was absent arrived too.
    let earliest = carbon.points(path).first().map_or(i64::MAX, |p| p.0);
    assert!(
        earliest < carbon_started,
        "the first point is at {earliest}, carbon started at {carbon_started}"
    );

    drop(first);
    std::thread::sleep(Duration::from_secs(2));
    let restarted_at = unix_now();
    let _second = carbon.start();
    assert!(wait_for_port(carbon.port, Duration::from_secs(10)));
    let point = carbon.wait_for_point(path, restarted_at + 1, Duration::from_secs(30));
    assert!(point.is_some(), "no point after carbon's restart:\n{}", agent.stderr());
    let log = agent.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

/// An influxd (1.x) on free loopback ports, keeping its data in `dir`.
struct Influx {
    binary: PathBuf,
    config: PathBuf,
    port: u16,
}

impl Influx {
    fn new(binary: PathBuf, dir: &TempDir) -> Influx {
        let base = dir.path().display();
        let port = free_port();
        let config = format!(
            "reporting-disabled = true
bind-address = \"127.0.0.1:{rpc}\"
[meta]
  dir = \"{base}/meta\"
[data]
  dir = \"{base}/data\"
  wal-dir = \"{base}/wal\"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = \"127.0.0.1:{port}\"
  log-enabled = false
",
            rpc = free_port(),
        );
        Influx {
            binary,
            config: dir.write("influxdb.conf", &config),
            port,
        }
    }

    fn start(&self) -> Server {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-config").arg(&self.config);
        Server::spawn(cmd, self.port, TempDir::new("influx-run"), "influxd")
    }

    /// Runs an InfluxQL statement; the JSON answer.
    fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let body = format!("db={db}&q={}", url_encode(q));
        let answer = http_post(self.port, "/query", &body, "application/x-www-form-urlencoded");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }

    /// The number of points of `measurement`.
    fn count(&self, db: &str, measurement: &str) -> u64 {
        let v = self.query(db, &format!("SELECT COUNT(value) FROM \"{measurement}\""));
        v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0)
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTP/1.0 POST; the answer's body.
fn http_post(port: u16, path: &str, body: &str, content_type: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn influxdb_v1_keeps_points_until_the_database_exists_and_across_a_restart() {
    let Some(binary) = require_binary("influxd", "influxdb") else {
        return;
    };
    let data = TempDir::new("influx");
    let influx = Influx::new(binary, &data);
    let mut server = Some(influx.start());
    let dir = TempDir::new("influx-agent");
    // The same events go to the Logger on standard output, which is how
    // the test knows how many were made.
    let config = format!(
        "hostname: web1
outputs:
  - output: duct.outputs.influxdb.InfluxDB
    name: influx
    url: http://127.0.0.1:{port}
    database: duct
    interval: 0.2
    backoff_max: 0.5
  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.1
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.1
    route: [influx, log]
    attributes:
      role: web server
",
        port = influx.port
    );
    let agent = start_agent(dir.path(), &config);
    // The database does not exist yet: InfluxDB answers 404, and the
    // output keeps the points until it does.
    assert!(
        agent.wait_for_log("database not found", Duration::from_secs(20)),
        "{}",
        agent.stderr()
    );
    influx.query("", "CREATE DATABASE duct");
    let deadline = Instant::now() + Duration::from_secs(20);
    while influx.count("duct", "answer") < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(influx.count("duct", "answer") >= 10, "{}", agent.stderr());
    // Restarted mid-stream (killed, not stopped): the output retries.
    drop(server.take());
    std::thread::sleep(Duration::from_secs(1));
    server = Some(influx.start());
    std::thread::sleep(Duration::from_secs(2));
    let (code, made, log) = stop_counting(agent, "answer");
    assert_eq!(code, Some(0), "{log}");
    let stored = influx.count("duct", "answer");
    assert_eq!(stored, made, "events made {made}, points stored {stored}\n{log}");
    // Duct's shape: tags host and attributes, field value.
    let v = influx.query("duct", "SHOW TAG VALUES FROM \"answer\" WITH KEY = \"role\"");
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], "web server", "{v}");
    drop(server);
}

/// Stops the agent: its exit code, how many events of `service` its
/// Logger wrote in all, and its log.
fn stop_counting(agent: Running, service: &str) -> (Option<i32>, u64, String) {
    let mut made = 0;
    while let Some(ev) = agent.next_event(Duration::from_millis(100)) {
        made += u64::from(common::service(&ev) == service);
    }
    let log = agent.stderr();
    let (code, rest) = agent.terminate(Duration::from_secs(20));
    made += rest.iter().filter(|e| common::service(e) == service).count() as u64;
    (code, made, log)
}

/// A request as an HTTP stand-in received it.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: String,
}

impl Received {
    /// The request line, e.g. `POST /api/v3/write_lp?db=duct HTTP/1.1`.
    fn line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A stand-in for a receiver with no Debian package: answers each request
/// with the next of `statuses` (the last one repeated), recording what it
/// got. One request per connection (it answers `Connection: close`).
struct StandIn {
    port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl StandIn {
    fn start(statuses: &'static [(u16, &'static str)]) -> StandIn {
        StandIn::answering(move |n, _| {
            let (status, body) = statuses[n.min(statuses.len() - 1)];
            (status, body.to_string())
        })
    }

    /// A stand-in whose answer to the `n`th request is `answer(n, request)`.
    fn answering(answer: impl Fn(usize, &Received) -> (u16, String) + Send + 'static) -> StandIn {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let request = Received {
                    head,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let (status, answer) = answer(n, &request);
                log.lock().unwrap().push(request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        StandIn { port, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        while self.received().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.received()
    }
}

#[test]
fn influxdb3_and_v2_write_where_and_as_their_apis_say() {
    // InfluxDB 3: 429 first (kept, sent again), then accepted.
    let v3 = StandIn::start(&[(429, "slow down"), (204, "")]);
    // InfluxDB 2: a 400 (refused for good: dropped), then accepted.
    let v2 = StandIn::start(&[(400, "{\"code\":\"invalid\",\"message\":\"bad line\"}"), (204, "")]);
    let dir = TempDir::new("influx3-agent");
    let config = format!(
        "hostname: web1
outputs:
  - output: duct.outputs.influxdb3.InfluxDB3
    name: v3
    url: http://127.0.0.1:{v3}
    database: metrics
    token: s3cret
    precision: second
    interval: 0.2
    backoff_max: 0.3
  - output: duct.outputs.influxdb.InfluxDB
    name: v2
    url: http://127.0.0.1:{v2}/
    bucket: b1
    org: acme
    token: t2
    precision: ms
    interval: 0.2
    backoff_max: 0.3
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.2
",
        v3 = v3.port,
        v2 = v2.port
    );
    let agent = start_agent(dir.path(), &config);
    let got = v3.wait_for(3, Duration::from_secs(20));
    assert!(got.len() >= 3, "{got:?}\n{}", agent.stderr());
    assert_eq!(
        got[0].line(),
        "POST /api/v3/write_lp?db=metrics&precision=second HTTP/1.1"
    );
    assert_eq!(got[0].header("authorization"), Some("Bearer s3cret"));
    assert!(got[0].header("content-type").unwrap_or("").starts_with("text/plain"));
    assert!(
        got[0].body.starts_with("answer,host=web1,state=ok value=42,"),
        "{:?}",
        got[0]
    );
    // The batch refused with 429 came again, first in the next request.
    let first_line = |r: &Received| r.body.lines().next().unwrap_or("").to_string();
    assert_eq!(first_line(&got[1]), first_line(&got[0]), "{got:?}");

    let got = v2.wait_for(3, Duration::from_secs(20));
    assert!(got.len() >= 3, "{got:?}");
    assert_eq!(
        got[0].line(),
        "POST /api/v2/write?bucket=b1&precision=ms&org=acme HTTP/1.1"
    );
    assert_eq!(got[0].header("authorization"), Some("Token t2"));
    // The batch refused with 400 was dropped, not sent again.
    assert_ne!(first_line(&got[1]), first_line(&got[0]), "{got:?}");
    let log = agent.stderr();
    assert!(log.contains("answered 400") && log.contains("bad line"), "{log}");
    assert!(log.contains("answered 429"), "{log}");
}

#[test]
fn opentsdb_and_bosun_put_points_and_count_the_refused_ones() {
    // OpenTSDB: 503 (kept), then a batch with a refused point, then fine.
    let tsdb = StandIn::start(&[
        (503, "busy"),
        (400, "{\"failed\":1,\"success\":1,\"errors\":[{\"error\":\"bad\"}]}"),
        (204, ""),
    ]);
    let bosun = StandIn::start(&[(204, "")]);
    let dir = TempDir::new("opentsdb-agent");
    let config = format!(
        "hostname: web1
outputs:
  - output: duct.outputs.opentsdb.OpenTSDB
    name: tsdb
    url: http://127.0.0.1:{tsdb}
    user: ops
    password: pw
    interval: 0.2
    backoff_max: 0.3
  - output: duct.outputs.bosun.Bosun
    name: bosun
    url: http://127.0.0.1:{bosun}/
    interval: 0.2
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.2
",
        tsdb = tsdb.port,
        bosun = bosun.port
    );
    let agent = start_agent(dir.path(), &config);
    let got = tsdb.wait_for(4, Duration::from_secs(20));
    assert!(got.len() >= 4, "{got:?}\n{}", agent.stderr());
    assert_eq!(got[0].line(), "POST /api/put?details HTTP/1.1");
    // ops:pw
    assert_eq!(got[0].header("authorization"), Some("Basic b3BzOnB3"));
    let points: Vec<serde_json::Value> = serde_json::from_str(&got[0].body).expect("JSON array");
    assert_eq!(points[0]["metric"], "answer");
    assert_eq!(points[0]["tags"]["host"], "web1");
    assert_eq!(points[0]["value"].as_f64(), Some(42.0));
    assert!(points[0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    // The 503'd batch came again.
    assert_eq!(got[1].body.split("},").next(), got[0].body.split("},").next());
    let log = agent.stderr();
    assert!(log.contains("refused 1"), "{log}");

    let got = bosun.wait_for(3, Duration::from_secs(20));
    assert_eq!(got[0].line(), "POST /api/metadata/put HTTP/1.1");
    let meta: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        meta,
        serde_json::json!([{"Metric": "answer", "Name": "rate", "Value": "gauge"}])
    );
    // Metadata once per metric: the rest are points.
    assert!(
        got[1..].iter().all(|r| r.line() == "POST /api/put?details HTTP/1.1"),
        "{got:?}"
    );
}

/// A bulk answer giving `statuses` to the first items of `request` and
/// 201 to the rest.
fn bulk_answer(request: &Received, statuses: &[u16]) -> String {
    let documents = request.body.lines().count() / 2;
    let items: Vec<serde_json::Value> = (0..documents)
        .map(|i| {
            let status = statuses.get(i).copied().unwrap_or(201);
            let mut result = serde_json::json!({"_index": "x", "status": status});
            if status >= 400 {
                result["error"] = serde_json::json!({"type": "t", "reason": format!("refused with {status}")});
            }
            serde_json::json!({"create": result})
        })
        .collect();
    serde_json::json!({"errors": !statuses.is_empty(), "items": items}).to_string()
}

#[test]
fn elasticsearch_bulk_resends_what_is_retryable_and_drops_what_is_refused() {
    let es = StandIn::answering(|n, request| match n {
        // The whole batch: kept.
        0 => (503, "unavailable".into()),
        // Its first document refused for good, the second retryable: the
        // second and everything after it sent again.
        1 => (200, bulk_answer(request, &[400, 429])),
        _ => (200, bulk_answer(request, &[])),
    });
    let dir = TempDir::new("es-agent");
    let config = format!(
        "hostname: web1
outputs:
  - output: duct.outputs.elasticsearch.ElasticSearch
    url: http://127.0.0.1:{port}/
    index: metrics-%Y.%m
    maxrate: 0
    batch: 3
    interval: 1
    backoff_max: 0.3
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.2
",
        port = es.port
    );
    let agent = start_agent(dir.path(), &config);
    let got = es.wait_for(4, Duration::from_secs(20));
    assert!(got.len() >= 4, "{got:?}\n{}", agent.stderr());
    assert_eq!(got[0].line(), "POST /_bulk HTTP/1.1");
    assert_eq!(got[0].header("content-type"), Some("application/x-ndjson"));
    let docs = |r: &Received| -> Vec<serde_json::Value> {
        r.body
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    };
    let first = docs(&got[0]);
    assert_eq!(first.len(), 6, "a batch of 3: {first:?}");
    let index = first[0]["create"]["_index"].as_str().unwrap();
    assert!(
        index.starts_with("metrics-20") && index.len() == "metrics-2026.12".len(),
        "{index}"
    );
    assert_eq!(first[1]["hostname"], "web1");
    assert_eq!(first[1]["service"], "answer");
    assert_eq!(first[1]["metric"].as_f64(), Some(42.0));
    assert!(first[1]["@timestamp"].as_str().unwrap().ends_with('Z'));
    // After the 503 the same batch, with the same ids.
    assert_eq!(got[1].body, got[0].body);
    // After the partial answer: the refused document is gone, the 429'd
    // one leads the next request.
    let third = docs(&got[2]);
    assert_eq!(third[0]["create"]["_id"], first[2]["create"]["_id"], "{third:?}");
    let log = agent.stderr();
    assert!(log.contains("1 refused") && log.contains("refused with 400"), "{log}");
}

#[test]
fn http_outputs_refuse_bad_options_at_check() {
    let dir = TempDir::new("http-outputs-check");
    let path = dir.write(
        "duct.yml",
        "outputs:
  - {output: duct.outputs.influxdb.InfluxDB, url: 'ftp://db:8086'}
  - {output: duct.outputs.influxdb.InfluxDB, version: 3}
  - {output: duct.outputs.influxdb.InfluxDB, version: 2}
  - {output: duct.outputs.elasticsearch.ElasticSearch, url: 'not a url'}
  - {output: duct.outputs.elasticsearch.ElasticSearch, index: 'duct-%B'}
  - {output: duct.outputs.opentsdb.OpenTSDB, timeout: 0}
  - {output: duct.outputs.prometheus.RemoteWrite, url: 'unix:/run/x.sock'}
  - {output: duct.outputs.influxdb3.InfluxDB3, precision: hours}
sources:
  - {service: a, source: duct.sources.generator.Function, function: '1'}
",
    );
    let (code, _, err) = common::ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    for expected in [
        "outputs[0].url: `ftp://db:8086` is not an http:// or https:// URL",
        "outputs[1].version: must be 1 or 2, not 3",
        "outputs[2].bucket: version 2 needs a bucket",
        "outputs[3].url: `not a url` is not a URL",
        "outputs[4].index: `%B` is not supported",
        "outputs[5].timeout: must be a positive number of seconds",
        "outputs[6].url: `unix:/run/x.sock` is not an http:// or https:// URL",
        "outputs[7].precision: `hours` is not one of",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}
