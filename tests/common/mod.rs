//! Helpers for end-to-end tests: run the built `ductd`, read the events it
//! writes, start real servers on free loopback ports in temporary
//! directories, and skip (or, under `DUCT_REQUIRE_SERVICES=1`, fail) when a
//! server's binary is missing.

#![allow(dead_code)]

pub mod charon;
pub mod sshd;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `ductd` binary built for this test run (`ductd-examples` in the
/// examples crate, which shares these helpers).
pub fn ductd_bin() -> &'static str {
    option_env!("CARGO_BIN_EXE_ductd-examples")
        .or(option_env!("CARGO_BIN_EXE_ductd"))
        .expect("tests run by cargo know their binary")
}

/// A `ductd` command with the given arguments.
pub fn ductd(args: &[&str]) -> Command {
    let mut cmd = Command::new(ductd_bin());
    cmd.args(args);
    cmd
}

/// Runs `ductd` to completion: (exit code, stdout, stderr).
pub fn ductd_output(args: &[&str]) -> (i32, String, String) {
    let out = ductd(args).output().expect("run ductd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ductd-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` inside the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port nobody listens on right now, on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether tests must fail instead of skipping when a server is missing.
pub fn services_required() -> bool {
    std::env::var("DUCT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether this test runs as root; when not: `false` after printing why
/// the test is skipped (`why` needs root), or a panic under
/// `DUCT_REQUIRE_SERVICES=1`.
pub fn require_root(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(!services_required(), "{why}, and DUCT_REQUIRE_SERVICES=1");
    eprintln!("SKIPPED: {why}");
    false
}

/// The path of `name` (searched in PATH and the sbin and lib directories
/// Debian puts servers in, strongSwan's among them). When it is missing:
/// `None` after printing why the test is skipped, or a panic under
/// `DUCT_REQUIRE_SERVICES=1`.
pub fn require_binary(name: &str, package: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/sbin",
        "/sbin",
        "/usr/local/sbin",
        "/usr/lib/postgresql",
        "/usr/lib/ipsec",
    ] {
        dirs.push(PathBuf::from(extra));
    }
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Some(found);
    }
    let msg = format!("`{name}` not found (Debian package {package})");
    if services_required() {
        panic!("{msg}, and DUCT_REQUIRE_SERVICES=1");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A running `ductd` whose standard output (events, one JSON object per
/// line) and standard error (logs) are collected as they come.
pub struct Running {
    child: Child,
    events: Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    stdout_other: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `ductd` with `args` (e.g. `["-c", path]`).
    pub fn start(args: &[&str]) -> Running {
        Self::start_with(ductd(args))
    }

    pub fn start_with(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ductd");
        let (tx, events) = channel();
        let stdout = child.stdout.take().expect("stdout");
        let stdout_other = Arc::new(Mutex::new(Vec::new()));
        let other = stdout_other.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => other.lock().unwrap().push(line),
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running {
            child,
            events,
            stderr,
            stdout_other,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next event, if one comes within `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Events until `pred` accepts one (returned last) or `timeout` passes
    /// (then panics with the log).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(v) => {
                    let done = pred(&v);
                    seen.push(v);
                    if done {
                        return seen;
                    }
                }
                None => panic!(
                    "no matching event within {timeout:?}; saw {} events; last: {:?}\nstderr:\n{}",
                    seen.len(),
                    seen.last(),
                    self.stderr()
                ),
            }
        }
    }

    /// Every event that arrives during `period`.
    pub fn collect_for(&self, period: Duration) -> Vec<Value> {
        let deadline = Instant::now() + period;
        let mut seen = Vec::new();
        while let Some(v) = self.next_event(deadline.saturating_duration_since(Instant::now())) {
            seen.push(v);
        }
        seen
    }

    /// Everything written to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until standard error contains `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Sends SIGTERM and waits for the exit code; the remaining events are
    /// returned.
    pub fn terminate(mut self, timeout: Duration) -> (Option<i32>, Vec<Value>) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = Vec::new();
        while let Some(v) = self.next_event(Duration::from_millis(300)) {
            rest.push(v);
        }
        (code, rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server process started by a test, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Its working directory (config, data, logs).
    pub dir: TempDir,
}

impl Server {
    /// Starts `cmd` (already configured to listen on `port`) and waits for
    /// the port to accept connections: up to 90 s, since a broker such as
    /// RabbitMQ takes over 30 s to start on a loaded two-core machine.
    pub fn spawn(mut cmd: Command, port: u16, dir: TempDir, what: &str) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let server = Server { child, port, dir };
        assert!(
            wait_for_port(port, Duration::from_secs(90)),
            "{what} did not listen on port {port}"
        );
        server
    }
}

impl Server {
    /// Stops the server as its service manager would (SIGTERM), waiting
    /// up to `grace` for it to exit before killing it.
    pub fn stop(mut self, grace: Duration) {
        // SAFETY: kill(2) on our own child's pid, not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric of an event, as a float.
pub fn metric(ev: &Value) -> Option<f64> {
    ev.get("metric").and_then(Value::as_f64)
}

pub fn service(ev: &Value) -> &str {
    ev.get("service").and_then(Value::as_str).unwrap_or("")
}

pub fn state(ev: &Value) -> &str {
    ev.get("state").and_then(Value::as_str).unwrap_or("")
}

/// A figure of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`), 0 if absent.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP server on a thread that answers every connection with `answer`
/// (after reading the request, or 300 ms without one, for protocols where
/// the server speaks first; nothing when empty) and then holds it open
/// without a word: a hung or confused peer for fault tests.
pub fn answering_server(answer: &'static [u8]) -> u16 {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = s.write_all(answer);
                std::thread::sleep(Duration::from_secs(15));
            });
        }
    });
    port
}

/// A loopback port that refuses connections (nothing listens on it).
pub fn closed_port() -> u16 {
    free_port()
}

/// Certificates made by the openssl CLI: a CA, a server certificate it
/// signed (for 127.0.0.1 and localhost), a client certificate it signed
/// (for servers that verify their clients), and an unrelated CA.
pub struct Certificates {
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The server certificate's notAfter, seconds since the epoch.
    pub not_after: i64,
}

/// Makes them in `dir` (`None`, after saying why, without openssl).
pub fn make_certificates(dir: &Path) -> Option<Certificates> {
    let openssl = require_binary("openssl", "openssl")?;
    let path = |name: &str| dir.join(name);
    let ssl = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for (name, cn) in [("ca", "ductd test CA"), ("wrong-ca", "another CA")] {
        let mut args = vec!["req", "-x509", "-days", "30", "-subj"];
        let subject = format!("/CN={cn}");
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        args.extend([subject.as_str(), "-keyout", &key, "-out", &pem]);
        args.extend(ec);
        ssl(&args);
    }
    // A key and a certificate signed by the CA: `name`.key, `name`.pem,
    // with the extensions `ext` (one line of an openssl extfile).
    let signed = |name: &str, cn: &str, ext: &str| {
        let subject = format!("/CN={cn}");
        let (key, csr, pem, cnf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.cnf"),
        );
        let mut args = vec!["req", "-new", "-subj", subject.as_str(), "-keyout", &key, "-out", &csr];
        args.extend(ec);
        ssl(&args);
        std::fs::write(path(&cnf), format!("{ext}\n")).unwrap();
        ssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "45",
            "-extfile",
            &cnf,
            "-out",
            &pem,
        ]);
    };
    signed("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    signed("client", "ductd test client", "extendedKeyUsage=clientAuth");
    let end = ssl(&["x509", "-in", "server.pem", "-noout", "-enddate"]);
    let date = end.trim().trim_start_matches("notAfter=");
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()
        .expect("run date");
    let not_after = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a time");
    Some(Certificates {
        ca: path("ca.pem"),
        wrong_ca: path("wrong-ca.pem"),
        cert: path("server.pem"),
        key: path("server.key"),
        client_cert: path("client.pem"),
        client_key: path("client.key"),
        not_after,
    })
}

/// Runs `ductd once` on `config` (written in `dir`); the events by service.
pub fn once(dir: &TempDir, config: &str) -> HashMap<String, Value> {
    once_with(dir, config, None)
}

/// Like [`once`], run by `runner` (e.g. setpriv) when given.
pub fn once_with(dir: &TempDir, config: &str, runner: Option<Command>) -> HashMap<String, Value> {
    let path = dir.write("duct.yml", config);
    let path = path.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = match runner {
        None => ductd_output(&["once", "-c", path]),
        Some(mut cmd) => {
            let out = cmd.args(["once", "-c", path]).output().expect("run ductd");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    assert_eq!(code, 0, "ductd once failed:\n{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (service(&v).to_string(), v))
        .collect()
}

/// The event for `name`, or a panic listing what there was.
pub fn event<'a>(events: &'a HashMap<String, Value>, name: &str) -> &'a Value {
    events.get(name).unwrap_or_else(|| {
        let mut names: Vec<&String> = events.keys().collect();
        names.sort();
        panic!("no event {name}; got {names:?}")
    })
}

pub fn description(ev: &Value) -> &str {
    ev["description"].as_str().unwrap_or("")
}

/// unbound on a free loopback port in a temporary directory (`tag`),
/// answering from a static `duct.test.` zone: `zone` holds its
/// `local-data` lines (and any other `server:` lines), `remote_control`
/// the `remote-control:` section (`{dir}` in it becomes the directory).
pub fn start_unbound(tag: &str, zone: &str, remote_control: &str) -> Option<Server> {
    let unbound = require_binary("unbound", "unbound")?;
    let dir = TempDir::new(tag);
    let port = free_port();
    let d = dir.path().display().to_string();
    let conf = dir.write(
        "unbound.conf",
        &format!(
            r#"server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: "{d}/unbound.pid"
  use-syslog: no
  logfile: ""
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "duct.test." static
{zone}
remote-control:
{remote}
"#,
            remote = remote_control.replace("{dir}", &d),
        ),
    );
    let mut cmd = Command::new(unbound);
    cmd.args(["-d", "-c", conf.to_str().expect("utf-8 path")]);
    // unbound answers on UDP and TCP; the TCP port says it is up.
    Some(Server::spawn(cmd, port, dir, "unbound"))
}

/// An event for [`riemann_message`].
pub struct RawEvent<'a> {
    pub service: &'a str,
    pub host: &'a str,
    /// Seconds since the epoch.
    pub time: i64,
    pub metric: i64,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends one event (time if any, service, host, `metric_sint64`) to a
/// message body.
fn put_event(msg: &mut Vec<u8>, time: Option<i64>, service: &str, host: &str, metric: i64) {
    let mut ev = Vec::new();
    if let Some(time) = time {
        put_varint(&mut ev, 1 << 3);
        put_varint(&mut ev, time as u64);
    }
    put_bytes(&mut ev, 3, service.as_bytes());
    put_bytes(&mut ev, 4, host.as_bytes());
    put_varint(&mut ev, 13 << 3);
    put_varint(&mut ev, ((metric << 1) ^ (metric >> 63)) as u64);
    put_bytes(msg, 6, &ev);
}

fn length_prefixed(msg: Vec<u8>) -> Vec<u8> {
    let mut frame = (msg.len() as u32).to_be_bytes().to_vec();
    frame.extend(msg);
    frame
}

/// A Riemann frame of events (service, host, `metric_sint64`), encoded by
/// hand: tests must not trust ductd's own encoder.
pub fn riemann_frame(events: &[(&str, &str, i64)]) -> Vec<u8> {
    let mut msg = Vec::new();
    for (service, host, metric) in events {
        put_event(&mut msg, None, service, host, *metric);
    }
    length_prefixed(msg)
}

/// A length-prefixed Riemann message of `events`, encoded by hand (the
/// tests must not trust ductd's own encoder): time, service, host and an
/// integer metric each.
pub fn riemann_message(events: &[RawEvent<'_>]) -> Vec<u8> {
    let mut msg = Vec::new();
    for e in events {
        put_event(&mut msg, Some(e.time), e.service, e.host, e.metric);
    }
    length_prefixed(msg)
}

/// Reads one Riemann answer frame: `Some(true)` for `ok: true`,
/// `Some(false)` for `ok: false`, `None` if the connection closed first or
/// no answer came within 10 s.
pub fn read_riemann_answer(s: &mut std::net::TcpStream) -> Option<bool> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    // `ok` is field 2, a varint: 0x10 then 0 or 1.
    match body.get(..2) {
        Some([0x10, v]) => Some(*v == 1),
        _ => panic!("not an answer: {body:?}"),
    }
}

/// Sends a message to a Riemann TCP listener and waits for its answer;
/// true for `ok: true`.
pub fn riemann_send(port: u16, message: &[u8]) -> bool {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    if s.write_all(message).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    // `ok` is field 2, a varint, first in the answer.
    s.read_exact(&mut body).is_ok() && body.starts_with(&[0x10, 1])
}
