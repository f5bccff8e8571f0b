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
        let from = format!("--from={}", unix_now() - 1200);
        let out = Command::new("whisper-fetch")
            .arg(from)
            .arg(&file)
            .output()
            .expect("run whisper-fetch");
        parse_whisper_fetch(&String::from_utf8_lossy(&out.stdout))
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

/// Sends events `range` of service `answer` from host `web1` to a Riemann
/// listener, event `i` stamped `t0 + i` with metric `i`.
fn send_numbered(port: u16, t0: i64, range: std::ops::Range<i64>) {
    for chunk in range.collect::<Vec<_>>().chunks(10) {
        let events: Vec<common::RawEvent<'_>> = chunk
            .iter()
            .map(|&i| common::RawEvent {
                service: "answer",
                host: "web1",
                time: t0 + i,
                metric: i,
            })
            .collect();
        assert!(
            common::riemann_send(port, &common::riemann_message(&events)),
            "the listener refused"
        );
    }
}

/// Carbon keeps one value per path and second, so the test stamps each
/// event with a second of its own (through a Riemann listener, which keeps
/// the sender's time) and reads back exactly one point per event: event `i`
/// at `t0 + i` with value `i`. A line sent twice would fill the same slot
/// with the same value, so a resent batch cannot make the count pass.
///
/// Plaintext carbon never acknowledges: lines written at the very instant
/// it goes away are lost by TCP itself, whatever the sender does. What the
/// output can promise — and what this checks — is that nothing queued is
/// lost: carbon is stopped (SIGTERM, its cache flushed) while the
/// connection is idle, the events sent meanwhile wait in the queue, and
/// all of them arrive once it is back.
#[test]
fn graphite_reaches_carbon_absent_at_start_and_after_a_restart_exactly() {
    let Some(binary) = require_binary("carbon-cache", "graphite-carbon") else {
        return;
    };
    if require_binary("whisper-fetch", "python3-whisper").is_none() {
        return;
    }
    let data = TempDir::new("carbon");
    let carbon = Carbon::new(binary, &data);
    let dir = TempDir::new("graphite-agent");
    let listen = free_port();
    let config = format!(
        "outputs:
  - output: duct.outputs.graphite.Graphite
    server: 127.0.0.1
    port: {port}
    prefix: ductd test
    interval: 0.2
    backoff_max: 0.5
sources:
  - service: listener
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {listen}
",
        port = carbon.port
    );
    let agent = start_agent(dir.path(), &config);
    assert!(wait_for_port(listen, Duration::from_secs(30)), "{}", agent.stderr());
    let path = "ductd_test.web1.answer";
    let t0 = unix_now() - 300;
    let expected = |n: i64| (0..n).map(|i| (t0 + i, i as f64)).collect::<Vec<_>>();
    let stored = |n: i64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let points = carbon.points(path);
            if points.len() as i64 >= n || Instant::now() > deadline {
                return points;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // Nothing listens yet: the output retries and keeps what it has.
    send_numbered(listen, t0, 0..40);
    assert!(
        agent.wait_for_log("cannot connect", Duration::from_secs(20)),
        "{}",
        agent.stderr()
    );
    let first = carbon.start();
    assert_eq!(stored(40), expected(40), "{}", agent.stderr());

    // Stopped mid-stream, events sent while it is away, then back.
    first.stop(Duration::from_secs(30));
    send_numbered(listen, t0, 40..100);
    std::thread::sleep(Duration::from_secs(1));
    let _second = carbon.start();
    send_numbered(listen, t0, 100..120);
    assert_eq!(stored(120), expected(120), "{}", agent.stderr());
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
    /// When the stand-in had read it.
    at: Instant,
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

/// How a stand-in answers the `n`th request: `(status, header lines each
/// ending `\r\n`, body)`.
type Answer = std::sync::Arc<dyn Fn(usize, &Received) -> (u16, String, String) + Send + Sync>;

/// A stand-in for a receiver with no Debian package: answers each request
/// with the next of `statuses` (the last one repeated), recording what it
/// got. One request per connection (it answers `Connection: close`). It can
/// be stopped (its port then refuses connections) and started again on the
/// same port.
struct StandIn {
    port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    answer: Answer,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    fn start(statuses: &'static [(u16, &'static str)]) -> StandIn {
        StandIn::answering(move |n, _| {
            let (status, body) = statuses[n.min(statuses.len() - 1)];
            (status, body.to_string())
        })
    }

    /// A stand-in whose answer to the `n`th request is `answer(n, request)`.
    fn answering(answer: impl Fn(usize, &Received) -> (u16, String) + Send + Sync + 'static) -> StandIn {
        StandIn::answering_with_headers(move |n, r| {
            let (status, body) = answer(n, r);
            (status, String::new(), body)
        })
    }

    /// Same, with header lines added to the answer: `(status, headers, body)`.
    fn answering_with_headers(
        answer: impl Fn(usize, &Received) -> (u16, String, String) + Send + Sync + 'static,
    ) -> StandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut stand_in = StandIn {
            port: listener.local_addr().unwrap().port(),
            received: Default::default(),
            answer: std::sync::Arc::new(answer),
            stop: Default::default(),
            thread: None,
        };
        stand_in.serve(listener);
        stand_in
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        listener.set_nonblocking(true).expect("non-blocking listener");
        let (log, answer, stop) = (self.received.clone(), self.answer.clone(), self.stop.clone());
        stop.store(false, Ordering::Relaxed);
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
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
                    at: Instant::now(),
                };
                let mut log = log.lock().unwrap();
                let (status, headers, answer) = answer(log.len(), &request);
                log.push(request);
                drop(log);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        }));
    }

    /// Stops listening: connections to the port are refused until
    /// [`StandIn::start_again`].
    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn start_again(&mut self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("bind the same port again");
        self.serve(listener);
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

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
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

/// `t` (seconds since the epoch) as an HTTP date, `Fri, 04 Dec 2026 10:00:00 GMT`.
fn http_date(t: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = duct_core::civil::civil_from_seconds(t);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[t.div_euclid(86_400).rem_euclid(7) as usize],
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[test]
fn retry_after_is_honoured_in_seconds_and_as_a_date_up_to_backoff_max() {
    // 429 asking for 2 s, then 503 asking until a date at least 2 s away,
    // then accepted.
    let waits = StandIn::answering_with_headers(|n, _| match n {
        0 => (429, "Retry-After: 2\r\n".into(), "slow down".into()),
        1 => {
            let at = unix_now() + 3;
            (503, format!("Retry-After: {}\r\n", http_date(at)), "busy".into())
        }
        _ => (204, String::new(), String::new()),
    });
    // Asks for an hour; backoff_max (1 s) caps the wait.
    let capped = StandIn::answering_with_headers(|n, _| match n {
        0 => (429, "Retry-After: 3600\r\n".into(), "come back in an hour".into()),
        _ => (204, String::new(), String::new()),
    });
    let dir = TempDir::new("retry-after-agent");
    let config = format!(
        "hostname: web1
outputs:
  - output: duct.outputs.influxdb3.InfluxDB3
    name: waits
    url: http://127.0.0.1:{waits}
    interval: 0.1
    backoff_max: 10
  - output: duct.outputs.influxdb3.InfluxDB3
    name: capped
    url: http://127.0.0.1:{capped}
    interval: 0.1
    backoff_max: 1
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.1
",
        waits = waits.port,
        capped = capped.port
    );
    let agent = start_agent(dir.path(), &config);
    let got = waits.wait_for(3, Duration::from_secs(30));
    assert!(got.len() >= 3, "{got:?}\n{}", agent.stderr());
    // Lower bounds only: a loaded machine can make a wait longer, never shorter.
    let first_wait = got[1].at - got[0].at;
    assert!(
        first_wait >= Duration::from_millis(1900),
        "retried after {first_wait:?}, asked 2 s"
    );
    let second_wait = got[2].at - got[1].at;
    assert!(
        second_wait >= Duration::from_millis(1900),
        "retried after {second_wait:?}, asked ≥ 2 s"
    );
    // The refused batch came again, first in the next request.
    let first_line = |r: &Received| r.body.lines().next().unwrap_or("").to_string();
    assert_eq!(first_line(&got[1]), first_line(&got[0]));
    assert_eq!(first_line(&got[2]), first_line(&got[0]));
    let got = capped.wait_for(2, Duration::from_secs(30));
    assert!(
        got.len() >= 2,
        "an hour's Retry-After was not capped by backoff_max:\n{}",
        agent.stderr()
    );
    let log = agent.stderr();
    assert!(log.contains("answered 429") && log.contains("answered 503"), "{log}");
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

/// Events a request to a stand-in carried, read as its API says.
fn events_in(request: &Received) -> u64 {
    let path = request.line().split(' ').nth(1).unwrap_or("");
    if path.starts_with("/api/v3/write_lp") {
        request.body.lines().filter(|l| !l.is_empty()).count() as u64
    } else if path.starts_with("/api/put") {
        let points: Vec<serde_json::Value> = serde_json::from_str(&request.body).expect("a JSON array");
        points.len() as u64
    } else if path.starts_with("/_bulk") {
        (request.body.lines().count() / 2) as u64
    } else {
        // Bosun's metadata.
        0
    }
}

#[test]
fn http_outputs_deliver_every_event_across_a_receiver_restart_exactly() {
    let bulk = |_: usize, r: &Received| (200, bulk_answer(r, &[]));
    let mut receivers = [
        ("duct.outputs.influxdb3.InfluxDB3", StandIn::start(&[(204, "")])),
        ("duct.outputs.opentsdb.OpenTSDB", StandIn::start(&[(200, "{}")])),
        ("duct.outputs.bosun.Bosun", StandIn::start(&[(204, "")])),
        ("duct.outputs.elasticsearch.ElasticSearch", StandIn::answering(bulk)),
    ];
    let mut config = String::from("hostname: web1\noutputs:\n");
    let mut names = Vec::new();
    for (i, (output, stand_in)) in receivers.iter().enumerate() {
        config.push_str(&format!(
            "  - output: {output}\n    name: out{i}\n    url: http://127.0.0.1:{}\n    interval: 0.2\n    backoff_max: 0.5\n",
            stand_in.port
        ));
        names.push(format!("out{i}"));
    }
    config.push_str(&format!(
        "  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.1
sources:
  - service: answer
    source: duct.sources.generator.Function
    function: \"42\"
    interval: 0.1
    route: [{}, log]
",
        names.join(", ")
    ));
    let dir = TempDir::new("http-restart-agent");
    let agent = start_agent(dir.path(), &config);
    for (output, stand_in) in &receivers {
        let got = stand_in.wait_for(2, Duration::from_secs(20));
        assert!(got.len() >= 2, "{output}: {got:?}\n{}", agent.stderr());
    }
    // All four go away mid-stream, and come back on the same ports.
    for (_, stand_in) in &mut receivers {
        stand_in.stop();
    }
    assert!(
        agent.wait_for_log("delivery failed", Duration::from_secs(20)),
        "{}",
        agent.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    for (_, stand_in) in &mut receivers {
        stand_in.start_again();
    }
    std::thread::sleep(Duration::from_secs(2));
    let (code, made, log) = stop_counting(agent, "answer");
    assert_eq!(code, Some(0), "{log}");
    assert!(made >= 20, "{made} events made\n{log}");
    for (output, stand_in) in &receivers {
        let got: u64 = stand_in.received().iter().map(events_in).sum();
        assert_eq!(got, made, "{output}: events made {made}, received {got}\n{log}");
    }
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
