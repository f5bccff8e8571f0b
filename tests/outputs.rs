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
