//! The network checks end to end, against real programs: pings to
//! loopback and to a test host in a network namespace behind `tc netem`
//! (or, on kernels built without netem, a responder in the namespace that
//! answers late), as root and as an unprivileged user; HTTP and TCP checks against nginx
//! (over TLS with a certificate made here by the openssl CLI) and
//! redis-server, each verdict compared with prometheus-blackbox-exporter's;
//! DNS against unbound serving a zone written here; and servers that
//! misbehave. Every server runs on a free loopback port in a temporary
//! directory and is stopped when its test ends.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    description, ductd_output, event, free_port, make_certificates, metric, once, once_with, require_binary, state,
    Certificates, Server, TempDir,
};
use serde_json::Value;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("run a command");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- Ping

#[test]
fn pings_to_loopback_answer_with_no_loss() {
    let dir = TempDir::new("ping-loopback");
    let events = once(
        &dir,
        "outputs: [{output: duct.outputs.logger.Logger}]
sources:
  - {service: v4, source: duct.sources.network.Ping, destination: 127.0.0.1, count: 3}
  - {service: v6, source: duct.sources.network.Ping, destination: '::1', count: 3}
  - {service: named, source: duct.sources.network.Ping, destination: localhost, count: 1}
  - {service: nowhere, source: duct.sources.network.Ping, destination: no-such-host.invalid}
",
    );
    for family in ["v4", "v6", "named"] {
        let loss = event(&events, &format!("{family}.loss"));
        assert_eq!(state(loss), "ok", "{loss}");
        assert_eq!(metric(loss), Some(0.0), "{loss}");
        let latency = metric(event(&events, &format!("{family}.latency"))).unwrap();
        assert!(latency > 0.0 && latency < 50.0, "{family}: {latency} ms");
        match events.get(&format!("{family}.latency_max")) {
            Some(max) => assert!(metric(max).unwrap() >= latency),
            None => assert_eq!(family, "named", "with one request the slowest is the mean: not sent"),
        }
    }
    let nowhere = event(&events, "nowhere.loss");
    assert_eq!(state(nowhere), "critical");
    assert_eq!(metric(nowhere), Some(100.0));
    assert!(
        description(nowhere).starts_with("Unable to resolve no-such-host.invalid"),
        "{nowhere}"
    );
}

/// A test host: a network namespace joined to this one by a veth pair.
/// Its delay and loss come from `tc netem` on this side of the link, or,
/// on kernels built without netem, from a [`DelayedResponder`] inside the
/// namespace. Everything is removed when dropped, whatever happened.
struct TestHost {
    namespace: String,
    link: String,
    /// The host's address, inside the namespace.
    address: String,
    responder: Option<DelayedResponder>,
}

impl TestHost {
    /// `None` (skipped with the reason) without root or `ip`/`tc`.
    fn create() -> Option<TestHost> {
        if !is_root() {
            eprintln!("SKIPPED: a network namespace needs root");
            return None;
        }
        require_binary("ip", "iproute2")?;
        require_binary("tc", "iproute2")?;
        let pid = std::process::id();
        // 198.18.0.0/15 is set aside for benchmark tests (RFC 2544); the
        // pid keeps concurrent runs apart.
        let subnet = pid % 250;
        let host = TestHost {
            namespace: format!("ductd-test-{pid}"),
            link: format!("dt{}h", pid % 1_000_000),
            address: format!("198.18.{subnet}.2"),
            responder: None,
        };
        let peer = format!("dt{}n", pid % 1_000_000);
        let ns = host.namespace.as_str();
        run_ok("ip", &["netns", "add", ns]);
        run_ok(
            "ip",
            &["link", "add", &host.link, "type", "veth", "peer", "name", &peer],
        );
        run_ok("ip", &["link", "set", &peer, "netns", ns]);
        run_ok(
            "ip",
            &["addr", "add", &format!("198.18.{subnet}.1/30"), "dev", &host.link],
        );
        run_ok("ip", &["link", "set", &host.link, "up"]);
        run_ok(
            "ip",
            &["-n", ns, "addr", "add", &format!("{}/30", host.address), "dev", &peer],
        );
        run_ok("ip", &["-n", ns, "link", "set", &peer, "up"]);
        run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
        Some(host)
    }

    /// Sets the netem discipline on the link (`delay 50ms`, `loss 100%`);
    /// false when the kernel has no netem.
    fn netem(&self, args: &[&str]) -> bool {
        let mut all = vec!["qdisc", "replace", "dev", &self.link, "root", "netem"];
        all.extend_from_slice(args);
        let out = Command::new("tc").args(&all).output().expect("run tc");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("qdisc kind is unknown") {
            return false;
        }
        assert!(out.status.success(), "tc {all:?}: {stderr}");
        true
    }

    /// Echo replies come `delay` late.
    fn delay(&mut self, delay: Duration) {
        let ms = format!("{}ms", delay.as_millis());
        if self.netem(&["delay", &ms]) {
            return;
        }
        eprintln!("this kernel has no netem: replies are delayed by a responder in the namespace");
        self.responder = Some(DelayedResponder::start(&self.namespace, delay));
    }

    /// No echo request is answered.
    fn drop_everything(&mut self) {
        match &self.responder {
            Some(r) => r.silence(),
            None => assert!(self.netem(&["loss", "100%"]), "netem vanished"),
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        drop(self.responder.take());
        // Deleting the namespace deletes its end of the pair, and with it
        // this end and its qdisc; the link is deleted too in case the
        // namespace was never made.
        run("ip", &["netns", "del", &self.namespace]);
        run("ip", &["link", "del", &self.link]);
    }
}

/// Answers echo requests inside a namespace after a delay, in place of
/// the kernel (whose own replies are turned off there): a thread that
/// joins the namespace and reads a raw ICMP socket.
struct DelayedResponder {
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DelayedResponder {
    fn start(namespace: &str, delay: Duration) -> DelayedResponder {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        run_ok(
            "ip",
            &[
                "netns",
                "exec",
                namespace,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all",
            ],
        );
        let (silent, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (quiet, done) = (silent.clone(), stop.clone());
        let ns_path = format!("/var/run/netns/{namespace}");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&ns_path).expect("open the namespace");
            // SAFETY: plain system calls on descriptors this thread owns;
            // setns moves only this thread into the namespace.
            let fd = unsafe {
                use std::os::fd::AsRawFd;
                assert_eq!(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET), 0, "setns");
                let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
                assert!(fd >= 0, "raw socket");
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                let tvp = &tv as *const libc::timeval as *const libc::c_void;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    tvp,
                    size_of::<libc::timeval>() as u32,
                );
                fd
            };
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                // SAFETY: buf and from outlive the call; their sizes are given.
                let n = unsafe {
                    libc::recvfrom(
                        fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_in).cast(),
                        &mut len,
                    )
                };
                if n <= 0 || quiet.load(Ordering::Relaxed) {
                    continue;
                }
                let packet = &buf[..n as usize];
                let header = usize::from(packet[0] & 0x0f) * 4;
                let Some(icmp) = packet.get(header..) else { continue };
                if icmp.len() < 8 || icmp[0] != 8 {
                    continue;
                }
                let mut reply = icmp.to_vec();
                reply[0] = 0;
                reply[2..4].copy_from_slice(&[0, 0]);
                let sum = checksum(&reply);
                reply[2..4].copy_from_slice(&sum.to_be_bytes());
                std::thread::sleep(delay);
                // SAFETY: reply and from are valid for the call.
                unsafe {
                    libc::sendto(
                        fd,
                        reply.as_ptr().cast(),
                        reply.len(),
                        0,
                        (&from as *const libc::sockaddr_in).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    );
                }
            }
            // SAFETY: the descriptor is this thread's own.
            unsafe { libc::close(fd) };
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the responder started");
        DelayedResponder {
            silent,
            stop,
            thread: Some(thread),
        }
    }

    fn silence(&self) {
        self.silent.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for DelayedResponder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn a_test_host_behind_netem_shows_its_delay_then_its_loss() {
    let Some(mut host) = TestHost::create() else {
        return;
    };
    let dir = TempDir::new("ping-netem");
    let config = format!(
        "outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: far, source: duct.sources.network.Ping, destination: {}, count: 5, timeout: 1}}
",
        host.address
    );
    host.delay(Duration::from_millis(50));
    let events = once(&dir, &config);
    let loss = event(&events, "far.loss");
    assert_eq!((state(loss), metric(loss)), ("ok", Some(0.0)), "{loss}");
    let latency = metric(event(&events, "far.latency")).unwrap();
    assert!(
        // At least the 50 ms the link adds; the upper bound only rules out
        // a wrong unit, since a loaded shared machine adds tens of ms.
        (49.0..=250.0).contains(&latency),
        "the link adds 50 ms; measured {latency} ms"
    );
    let max = metric(event(&events, "far.latency_max")).unwrap();
    assert!((49.0..=60.0).contains(&max), "slowest {max} ms");

    host.drop_everything();
    let started = std::time::Instant::now();
    let events = once(&dir, &config);
    let loss = event(&events, "far.loss");
    assert_eq!((state(loss), metric(loss)), ("critical", Some(100.0)), "{loss}");
    assert!(!events.contains_key("far.latency"), "no latency without replies");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by count and timeout"
    );
}

/// Sets `net.ipv4.ping_group_range` and puts the old value back when
/// dropped.
struct PingGroupRange(String);

const PING_GROUP_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

impl PingGroupRange {
    fn set(value: &str) -> PingGroupRange {
        let old = std::fs::read_to_string(PING_GROUP_RANGE).expect("read ping_group_range");
        std::fs::write(PING_GROUP_RANGE, value).expect("write ping_group_range");
        PingGroupRange(old.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

impl Drop for PingGroupRange {
    fn drop(&mut self) {
        let _ = std::fs::write(PING_GROUP_RANGE, &self.0);
    }
}

#[test]
fn unprivileged_pings_need_ping_group_range_and_say_so_without_it() {
    if !is_root() {
        eprintln!("SKIPPED: switching users and setting the sysctl need root");
        return;
    }
    let Some(setpriv) = require_binary("setpriv", "util-linux") else {
        return;
    };
    let as_nobody = || {
        let mut cmd = Command::new(&setpriv);
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            common::ductd_bin(),
        ]);
        cmd
    };
    let dir = TempDir::new("ping-unprivileged");
    let config = "outputs: [{output: duct.outputs.logger.Logger}]
sources:
  - {service: v4, source: duct.sources.network.Ping, destination: 127.0.0.1, count: 2}
  - {service: v6, source: duct.sources.network.Ping, destination: '::1', count: 2}
";
    // Both halves in one test: the sysctl is global.
    {
        let _open = PingGroupRange::set("65534 65534");
        let events = once_with(&dir, config, Some(as_nobody()));
        for family in ["v4", "v6"] {
            let loss = event(&events, &format!("{family}.loss"));
            assert_eq!((state(loss), metric(loss)), ("ok", Some(0.0)), "{loss}");
            assert!(metric(event(&events, &format!("{family}.latency"))).is_some());
        }
    }
    {
        let _closed = PingGroupRange::set("1 0");
        let events = once_with(&dir, config, Some(as_nobody()));
        for family in ["v4", "v6"] {
            let loss = event(&events, &format!("{family}.loss"));
            assert_eq!(state(loss), "critical", "{loss}");
            let why = description(loss);
            assert!(why.contains("CAP_NET_RAW"), "{why}");
            assert!(
                why.contains("sysctl -w net.ipv4.ping_group_range=\"65534 65534\""),
                "{why}"
            );
            assert!(why.contains("(it is \"1 0\")"), "{why}");
        }
    }
}

// ---------------------------------------------------------- HTTP and TCP

/// nginx serving the test's pages over http and https.
struct Nginx {
    http: u16,
    https: u16,
    certs: Certificates,
    _server: Server,
}

fn start_nginx() -> Option<Nginx> {
    let nginx = require_binary("nginx", "nginx-light")?;
    let dir = TempDir::new("nginx");
    let certs = make_certificates(dir.path())?;
    let (http, https, other) = (free_port(), free_port(), free_port());
    let d = dir.path().display();
    // The redirects of the redirect tests: a relative Location whose query
    // holds a URL, same-origin pages behind Basic auth (user `user`,
    // password `p@ss:w0rd` or `pw`), and hops to another origin: the
    // server on `other`, which answers 403 to a request carrying
    // credentials or the test's secret header, "clean" otherwise.
    let pages = format!(
        "location = / {{ default_type text/plain; return 200 \"hello from duct test\\n\"; }}
    location = /404 {{ return 404; }}
    location = /500 {{ return 500; }}
    location = /redirect {{ return 302 /; }}
    location = /next {{ absolute_redirect off; return 302 \"/login?next=https://x.example/\"; }}
    location = /login {{ default_type text/plain; return 200 \"login page\\n\"; }}
    location = /private-redirect {{ absolute_redirect off; return 302 /private; }}
    location = /private-absolute {{ return 302 /private; }}
    location = /private {{
      if ($http_authorization !~ \"^Basic (dXNlcjpwQHNzOncwcmQ=|dXNlcjpwdw==)$\") {{ return 401; }}
      default_type text/plain; return 200 \"private page\\n\";
    }}
    location = /elsewhere {{ return 302 http://127.0.0.1:{other}/; }}
    location = /to-https {{ return 302 https://127.0.0.1:{https}/; }}"
    );
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{http};
    {pages}
  }}
  server {{
    listen 127.0.0.1:{https} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    {pages}
  }}
  server {{
    listen 127.0.0.1:{other};
    location / {{
      default_type text/plain;
      if ($http_authorization) {{ return 403; }}
      if ($http_x_token) {{ return 403; }}
      return 200 \"clean\\n\";
    }}
  }}
}}
",
            cert = certs.cert.display(),
            key = certs.key.display(),
        ),
    );
    let mut cmd = Command::new(nginx);
    cmd.args(["-c", conf.to_str().unwrap(), "-p", dir.path().to_str().unwrap()]);
    let server = Server::spawn(cmd, http, dir, "nginx");
    assert!(common::wait_for_port(https, Duration::from_secs(10)), "nginx https");
    assert!(common::wait_for_port(other, Duration::from_secs(10)), "nginx other");
    Some(Nginx {
        http,
        https,
        certs,
        _server: server,
    })
}

fn start_redis() -> Option<Server> {
    let redis = require_binary("redis-server", "redis-server")?;
    let dir = TempDir::new("redis");
    let port = free_port();
    let mut cmd = Command::new(redis);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--dir", dir.path().to_str().unwrap()]);
    Some(Server::spawn(cmd, port, dir, "redis-server"))
}

/// One target checked by ductd and, where it has an equivalent, by the
/// blackbox exporter.
struct Case {
    name: &'static str,
    /// The source block's options after `source:`.
    ductd: String,
    /// (module, target) for the exporter.
    blackbox: Option<(&'static str, String)>,
    /// ok (true) or critical (false).
    up: bool,
    /// Text the critical description must contain.
    reason: &'static str,
}

fn cases(nginx: &Nginx, redis: u16, closed: u16) -> Vec<Case> {
    let (h, s) = (nginx.http, nginx.https);
    let ca = nginx.certs.ca.display();
    let wrong = nginx.certs.wrong_ca.display();
    let case = |name, ductd: String, blackbox: Option<(&'static str, String)>, up, reason| Case {
        name,
        ductd,
        blackbox,
        up,
        reason,
    };
    vec![
        case(
            "ok",
            format!("HTTP, url: 'http://127.0.0.1:{h}/'"),
            Some(("http_2xx", format!("http://127.0.0.1:{h}/"))),
            true,
            "",
        ),
        case(
            "match",
            format!("HTTP, url: 'http://127.0.0.1:{h}/', match: hello from duct"),
            Some(("http_match", format!("http://127.0.0.1:{h}/"))),
            true,
            "",
        ),
        case(
            "nomatch",
            format!("HTTP, url: 'http://127.0.0.1:{h}/', match: goodbye"),
            Some(("http_nomatch", format!("http://127.0.0.1:{h}/"))),
            false,
            "does not contain the `match` text",
        ),
        case(
            "e404",
            format!("HTTP, url: 'http://127.0.0.1:{h}/404'"),
            Some(("http_2xx", format!("http://127.0.0.1:{h}/404"))),
            false,
            "unexpected status 404",
        ),
        case(
            "e500",
            format!("HTTP, url: 'http://127.0.0.1:{h}/500'"),
            Some(("http_2xx", format!("http://127.0.0.1:{h}/500"))),
            false,
            "unexpected status 500",
        ),
        case(
            "redirect",
            format!("HTTP, url: 'http://127.0.0.1:{h}/redirect', match: hello"),
            Some(("http_match", format!("http://127.0.0.1:{h}/redirect"))),
            true,
            "",
        ),
        case(
            "noredirect",
            format!("HTTP, url: 'http://127.0.0.1:{h}/redirect', follow_redirects: false, expect_status: 302"),
            Some(("http_302", format!("http://127.0.0.1:{h}/redirect"))),
            true,
            "",
        ),
        case(
            "tls",
            format!("HTTP, url: 'https://127.0.0.1:{s}/', ca: '{ca}', match: hello"),
            Some(("https_ca", format!("https://127.0.0.1:{s}/"))),
            true,
            "",
        ),
        case(
            "tls_localhost",
            format!("HTTP, url: 'https://localhost:{s}/404', ca: '{ca}', expect_status: 4xx"),
            None,
            true,
            "",
        ),
        case(
            "wrong_ca",
            format!("HTTP, url: 'https://127.0.0.1:{s}/', ca: '{wrong}'"),
            Some(("https_wrong_ca", format!("https://127.0.0.1:{s}/"))),
            false,
            "TLS handshake failed: invalid peer certificate: UnknownIssuer",
        ),
        case(
            "insecure",
            format!("HTTP, url: 'https://127.0.0.1:{s}/', tls_verify: false"),
            Some(("https_insecure", format!("https://127.0.0.1:{s}/"))),
            true,
            "",
        ),
        case(
            "closed",
            format!("HTTP, url: 'http://127.0.0.1:{closed}/'"),
            Some(("http_2xx", format!("http://127.0.0.1:{closed}/"))),
            false,
            "connection refused",
        ),
        case(
            "tcp",
            format!("TCP, host: 127.0.0.1, port: {h}"),
            Some(("tcp", format!("127.0.0.1:{h}"))),
            true,
            "",
        ),
        case(
            "tcp_tls",
            format!("TCP, host: 127.0.0.1, port: {s}, tls: true, ca: '{ca}'"),
            Some(("tcp_tls", format!("127.0.0.1:{s}"))),
            true,
            "",
        ),
        case(
            "tcp_wrong_ca",
            format!("TCP, host: 127.0.0.1, port: {s}, tls: true, ca: '{wrong}'"),
            Some(("tcp_tls_wrong_ca", format!("127.0.0.1:{s}"))),
            false,
            "UnknownIssuer",
        ),
        case(
            "tcp_closed",
            format!("TCP, host: 127.0.0.1, port: {closed}"),
            Some(("tcp", format!("127.0.0.1:{closed}"))),
            false,
            "connection refused",
        ),
        case(
            "redis",
            format!("TCP, host: 127.0.0.1, port: {redis}, send: \"PING\\r\\n\", expect: '^\\+PONG'"),
            Some(("redis_ping", format!("127.0.0.1:{redis}"))),
            true,
            "",
        ),
        case(
            "redis_wrong",
            format!("TCP, host: 127.0.0.1, port: {redis}, send: \"PING\\r\\n\", expect: '^\\+PANG', timeout: 1"),
            Some(("redis_pang", format!("127.0.0.1:{redis}"))),
            false,
            "the reply \"+PONG\\r\\n\" does not match",
        ),
    ]
}

/// A port with nothing behind it.
fn closed_port() -> u16 {
    free_port()
}

/// ductd's events for every case, in one `ductd once`.
fn check_cases(cases: &[Case]) -> HashMap<String, Value> {
    let dir = TempDir::new("http-tcp-cases");
    let mut config = String::from("outputs: [{output: duct.outputs.logger.Logger}]\nsources:\n");
    for c in cases {
        config.push_str(&format!(
            "  - {{service: {}, timeout: 5, source: duct.sources.network.{}}}\n",
            c.name, c.ductd
        ));
    }
    once(&dir, &config)
}

#[test]
fn http_and_tcp_checks_against_nginx_and_redis() {
    let Some(nginx) = start_nginx() else {
        return;
    };
    let Some(redis) = start_redis() else {
        return;
    };
    let cases = cases(&nginx, redis.port, closed_port());
    let events = check_cases(&cases);
    for c in &cases {
        let ev = event(&events, &format!("{}.latency", c.name));
        let expected = if c.up { "ok" } else { "critical" };
        assert_eq!(state(ev), expected, "{}: {ev}", c.name);
        assert!(description(ev).contains(c.reason), "{}: {ev}", c.name);
        assert!(
            metric(ev).is_some_and(|m| m >= 0.0),
            "{}: a latency even when down",
            c.name
        );
    }
    let status = |name: &str| metric(event(&events, &format!("{name}.status")));
    assert_eq!(status("ok"), Some(200.0));
    assert_eq!(status("e404"), Some(404.0));
    assert_eq!(status("e500"), Some(500.0));
    assert_eq!(status("redirect"), Some(200.0), "the redirect was followed");
    assert_eq!(status("noredirect"), Some(302.0));
    assert!(description(event(&events, "redirect.latency")).contains("redirected to http://127.0.0.1:"));
    assert_eq!(state(event(&events, "e404.status")), "critical");

    // Phases add up to no more than the whole request.
    let total = metric(event(&events, "tls.latency")).unwrap();
    let phases: f64 = ["dns", "connect", "tls", "first_byte"]
        .iter()
        .map(|p| metric(event(&events, &format!("tls.latency.{p}"))).unwrap())
        .sum();
    assert!(phases <= total, "{phases} > {total}");
    assert!(!events.contains_key("ok.latency.tls"), "no TLS phase over http");

    // The certificate's remaining days, as openssl wrote them.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let days = (nginx.certs.not_after as f64 - now) / 86_400.0;
    for name in ["tls", "insecure", "tcp_tls"] {
        let expiry = metric(event(&events, &format!("{name}.cert_expiry"))).unwrap();
        assert!(
            (expiry - days).abs() < 0.01,
            "{name}: {expiry} days, openssl says {days}"
        );
    }
}

/// Redirects done right, each case a fault of the first, hand-written
/// client: a relative Location whose query holds `://`; URL credentials
/// (percent-decoded) kept on a same-origin hop, relative or absolute; the
/// `Authorization` header and the user's headers dropped on a hop to
/// another origin and after https→http; `.cert_expiry` only when the hop
/// that answered was https.
#[test]
fn http_redirects_resolve_relative_locations_and_keep_secrets_at_home() {
    let Some(nginx) = start_nginx() else {
        return;
    };
    let (h, s) = (nginx.http, nginx.https);
    let ca = nginx.certs.ca.display();
    let secret = "headers: {Authorization: 'Bearer s3cret', X-Token: s3cret}";
    let creds = "user:p%40ss%3Aw0rd";
    let dir = TempDir::new("http-redirects");
    let mut config = String::from("outputs: [{output: duct.outputs.logger.Logger}]\nsources:\n");
    for (name, options) in [
        (
            "relative_query",
            format!("url: 'http://127.0.0.1:{h}/next', match: login page"),
        ),
        (
            "encoded_creds",
            format!("url: 'http://{creds}@127.0.0.1:{h}/private', match: private page"),
        ),
        (
            "same_origin",
            format!("url: 'http://user:pw@127.0.0.1:{h}/private-redirect', match: private page"),
        ),
        (
            "same_origin_absolute",
            format!("url: 'http://user:pw@127.0.0.1:{h}/private-absolute', match: private page"),
        ),
        (
            "other_origin_headers",
            format!("url: 'http://127.0.0.1:{h}/elsewhere', {secret}, match: clean"),
        ),
        (
            "other_origin_creds",
            format!("url: 'http://{creds}@127.0.0.1:{h}/elsewhere', match: clean"),
        ),
        (
            "downgrade",
            format!("url: 'https://{creds}@127.0.0.1:{s}/elsewhere', ca: '{ca}', {secret}, match: clean"),
        ),
        (
            "upgrade",
            format!("url: 'http://127.0.0.1:{h}/to-https', ca: '{ca}', match: hello"),
        ),
    ] {
        config.push_str(&format!(
            "  - {{service: {name}, timeout: 5, source: duct.sources.network.HTTP, {options}}}\n"
        ));
    }
    let events = once(&dir, &config);
    let mut faults = Vec::new();
    for name in [
        "relative_query",
        "encoded_creds",
        "same_origin",
        "same_origin_absolute",
        "other_origin_headers",
        "other_origin_creds",
        "downgrade",
        "upgrade",
    ] {
        let ev = event(&events, &format!("{name}.latency"));
        if state(ev) != "ok" {
            faults.push(format!("{name}: {}", description(ev)));
        }
        if description(ev).contains("w0rd") || description(ev).contains(":pw@") {
            faults.push(format!("{name}: the password is shown: {}", description(ev)));
        }
    }
    if events.contains_key("downgrade.cert_expiry") {
        faults.push("downgrade: a .cert_expiry, but the answer came over http".into());
    }
    if !events
        .get("upgrade.cert_expiry")
        .and_then(metric)
        .is_some_and(|d| d > 40.0)
    {
        faults.push("upgrade: no .cert_expiry of the https hop that answered".into());
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// Asks the blackbox exporter to probe `target` with `module`; the
/// samples of its answer by name.
fn probe(exporter: u16, module: &str, target: &str) -> HashMap<String, f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", exporter)).expect("connect to the exporter");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!("GET /probe?module={module}&target={target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the probe");
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_blackbox_exporter_agrees_on_every_case() {
    let Some(exporter) = require_binary("prometheus-blackbox-exporter", "prometheus-blackbox-exporter") else {
        return;
    };
    let Some(nginx) = start_nginx() else {
        return;
    };
    let Some(redis) = start_redis() else {
        return;
    };
    let dir = TempDir::new("blackbox");
    let ca = nginx.certs.ca.display();
    let wrong = nginx.certs.wrong_ca.display();
    let config = dir.write(
        "blackbox.yml",
        &format!(
            r#"modules:
  http_2xx: {{prober: http, timeout: 5s, http: {{preferred_ip_protocol: ip4}}}}
  http_302: {{prober: http, timeout: 5s, http: {{preferred_ip_protocol: ip4, follow_redirects: false, valid_status_codes: [302]}}}}
  http_match: {{prober: http, timeout: 5s, http: {{preferred_ip_protocol: ip4, fail_if_body_not_matches_regexp: ["hello"]}}}}
  http_nomatch: {{prober: http, timeout: 5s, http: {{preferred_ip_protocol: ip4, fail_if_body_not_matches_regexp: ["goodbye"]}}}}
  https_ca: {{prober: http, timeout: 5s, http: {{preferred_ip_protocol: ip4, tls_config: {{ca_file: "{ca}"}}}}}}
  https_wrong_ca: {{prober: http, timeout: 5s, http: {{preferred_ip_protocol: ip4, tls_config: {{ca_file: "{wrong}"}}}}}}
  https_insecure: {{prober: http, timeout: 5s, http: {{preferred_ip_protocol: ip4, tls_config: {{insecure_skip_verify: true}}}}}}
  tcp: {{prober: tcp, timeout: 5s, tcp: {{preferred_ip_protocol: ip4}}}}
  tcp_tls: {{prober: tcp, timeout: 5s, tcp: {{preferred_ip_protocol: ip4, tls: true, tls_config: {{ca_file: "{ca}", server_name: "127.0.0.1"}}}}}}
  tcp_tls_wrong_ca: {{prober: tcp, timeout: 5s, tcp: {{preferred_ip_protocol: ip4, tls: true, tls_config: {{ca_file: "{wrong}", server_name: "127.0.0.1"}}}}}}
  redis_ping: {{prober: tcp, timeout: 5s, tcp: {{preferred_ip_protocol: ip4, query_response: [{{send: "PING"}}, {{expect: "^\\+PONG"}}]}}}}
  redis_pang: {{prober: tcp, timeout: 2s, tcp: {{preferred_ip_protocol: ip4, query_response: [{{send: "PING"}}, {{expect: "^\\+PANG"}}]}}}}
"#
        ),
    );
    let port = free_port();
    let mut cmd = Command::new(exporter);
    cmd.args([
        format!("--config.file={}", config.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ]);
    let _exporter = Server::spawn(cmd, port, dir, "prometheus-blackbox-exporter");

    let cases = cases(&nginx, redis.port, closed_port());
    let events = check_cases(&cases);
    let mut compared = 0;
    for c in &cases {
        let Some((module, target)) = &c.blackbox else {
            continue;
        };
        let samples = probe(port, module, target);
        let success = samples.get("probe_success").copied();
        let ours = state(event(&events, &format!("{}.latency", c.name)));
        assert_eq!(
            (ours == "ok", success == Some(1.0)),
            (c.up, c.up),
            "{}: ductd says {ours}, the exporter's probe_success is {success:?}",
            c.name
        );
        if let Some(expiry) = samples.get("probe_ssl_earliest_cert_expiry") {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
            let theirs = (expiry - now) / 86_400.0;
            let ours = metric(event(&events, &format!("{}.cert_expiry", c.name))).expect("ours too");
            assert!(
                (ours - theirs).abs() < 0.01,
                "{}: {ours} days, the exporter {theirs}",
                c.name
            );
        }
        compared += 1;
    }
    assert!(compared >= 15, "compared {compared} cases");
}

// ------------------------------------------------------------------- DNS

fn start_unbound() -> Option<Server> {
    common::start_unbound(
        "unbound",
        r#"  local-data: "duct.test. 300 IN MX 10 mail.duct.test."
  local-data: 'duct.test. 300 IN TXT "v=spf1 -all"'
  local-data: "web.duct.test. 300 IN A 198.18.0.10"
  local-data: "web.duct.test. 300 IN A 198.18.0.11"
  local-data: "web.duct.test. 300 IN AAAA 2001:db8::10"
  local-data: "www.duct.test. 300 IN CNAME web.duct.test."
  local-zone: "18.198.in-addr.arpa." static
  local-data-ptr: "198.18.0.10 300 web.duct.test.""#,
        "  control-enable: no",
    )
}

#[test]
fn dns_checks_against_unbound() {
    let Some(unbound) = start_unbound() else {
        return;
    };
    let server = format!("127.0.0.1:{}", unbound.port);
    let dir = TempDir::new("dns");
    let config = format!(
        "outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: a, source: duct.sources.network.DNS, server: '{server}', query: web.duct.test, expect: 198.18.0.11}}
  - {{service: aaaa, source: duct.sources.network.DNS, server: '{server}', query: web.duct.test, record_type: AAAA}}
  - {{service: mx, source: duct.sources.network.DNS, server: '{server}', query: duct.test, record_type: mx, expect: 10 mail.duct.test.}}
  - {{service: txt, source: duct.sources.network.DNS, server: '{server}', query: duct.test, record_type: TXT, expect: v=spf1 -all}}
  - {{service: cname, source: duct.sources.network.DNS, server: '{server}', query: www.duct.test, record_type: CNAME, expect: web.duct.test}}
  - {{service: ptr, source: duct.sources.network.DNS, server: '{server}', query: 198.18.0.10, record_type: PTR, expect: web.duct.test}}
  - {{service: missing, source: duct.sources.network.DNS, server: '{server}', query: web.duct.test, expect: 198.18.0.99}}
  - {{service: notype, source: duct.sources.network.DNS, server: '{server}', query: web.duct.test, record_type: SRV}}
  - {{service: nx, source: duct.sources.network.DNS, server: '{server}', query: nope.duct.test}}
"
    );
    let events = once(&dir, &config);
    for ok in ["a", "aaaa", "mx", "txt", "cname", "ptr"] {
        let ev = event(&events, &format!("{ok}.latency"));
        assert_eq!(state(ev), "ok", "{ev}");
        assert!(metric(ev).is_some_and(|m| m > 0.0 && m < 1000.0), "{ev}");
    }
    // unbound rotates the order of the records it serves.
    let found = description(event(&events, "a.latency"));
    assert!(
        found.contains("198.18.0.10") && found.contains("198.18.0.11"),
        "{found}"
    );
    let critical = |name: &str, why: &str| {
        let ev = event(&events, &format!("{name}.latency"));
        assert_eq!(state(ev), "critical", "{ev}");
        assert!(description(ev).contains(why), "{name}: {ev}");
    };
    critical("missing", "`198.18.0.99` is not in the answer (198.18.0.1");
    critical("notype", "no SRV record");
    critical("nx", " - NXDOMAIN");

    // The server stopped: nothing answers on its port any more.
    drop(unbound);
    let events = once(
        &dir,
        &format!(
            "outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: gone, source: duct.sources.network.DNS, server: '{server}', query: web.duct.test, timeout: 1}}
"
        ),
    );
    let ev = event(&events, "gone.latency");
    assert_eq!(state(ev), "critical", "{ev}");
    assert!(
        description(ev).contains("refused the query") || description(ev).contains("timed out"),
        "{ev}"
    );
}

// ------------------------------------------------------------- bad input

/// A TCP server on a thread that answers every connection with `answer`
/// (after reading the request) and then holds it open without a word.
fn misbehaving_server(answer: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut s) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                if answer.len() > 1 << 20 {
                    // An endless body: keep writing until the client leaves.
                    while s.write_all(&answer[..1 << 16]).is_ok() {}
                } else {
                    let _ = s.write_all(&answer);
                    std::thread::sleep(Duration::from_secs(10));
                }
            });
        }
    });
    port
}

#[test]
fn misbehaving_servers_are_critical_with_the_reason() {
    let silent = misbehaving_server(Vec::new());
    let garbage = misbehaving_server(b"\x16\x03\x01 this is not http\r\n\r\n".to_vec());
    let endless = misbehaving_server([b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &vec![b'x'; 2 << 20]].concat());
    let dns_garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns_port = dns_garbage.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = dns_garbage.recv_from(&mut buf) {
            let _ = dns_garbage.send_to(b"\x00\x01\x80\x80garbage", peer);
        }
    });
    let dir = TempDir::new("bad-input");
    let events = once(
        &dir,
        &format!(
            "outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: silent, source: duct.sources.network.HTTP, url: 'http://127.0.0.1:{silent}/', timeout: 1}}
  - {{service: banner, source: duct.sources.network.TCP, port: {silent}, host: 127.0.0.1, expect: '^SSH-', timeout: 1}}
  - {{service: garbage, source: duct.sources.network.HTTP, url: 'http://127.0.0.1:{garbage}/', timeout: 5}}
  - {{service: endless, source: duct.sources.network.HTTP, url: 'http://127.0.0.1:{endless}/', max_body_bytes: 100000, timeout: 5}}
  - {{service: dns, source: duct.sources.network.DNS, server: '127.0.0.1:{dns_port}', query: web.duct.test, timeout: 2}}
"
        ),
    );
    let critical = |name: &str, why: &str| {
        let ev = event(&events, &format!("{name}.latency"));
        assert_eq!(state(ev), "critical", "{ev}");
        assert!(description(ev).contains(why), "{name}: {ev}");
    };
    critical("silent", "timed out after 1 s while waiting for the answer");
    critical("banner", "timed out after 1 s while waiting for the answer");
    critical("garbage", "invalid response: not an HTTP response");
    critical("endless", "the body is larger than max_body_bytes (100000 bytes)");
    critical("dns", "invalid DNS response");
}

#[test]
fn bad_options_are_located_errors_of_ductd_check() {
    let dir = TempDir::new("network-check");
    let path = dir.write(
        "duct.yml",
        "sources:
  - {service: a, source: duct.sources.network.HTTP, url: 'ftp://example.com/'}
  - {service: b, source: duct.sources.network.TCP, host: example.com, port: 70000}
  - {service: c, source: duct.sources.network.DNS, query: example.com, record_type: AXFR}
  - {service: d, source: duct.sources.network.TCP, port: 22, expect: '(unclosed'}
  - {service: e, source: duct.sources.network.Ping, count: 0}
  - {service: f, source: duct.sources.network.HTTP, expect_status: 9xx}
  - {service: g, source: duct.sources.network.HTTP, url: 'https://example.com/', ca: /no/such/ca.pem}
",
    );
    let file = path.to_str().unwrap();
    let (code, _, stderr) = ductd_output(&["check", "-c", file]);
    assert_eq!(code, 1, "{stderr}");
    for (line, what) in [
        (
            2,
            "sources[0].url: `ftp://example.com/` is not an http:// or https:// URL",
        ),
        (3, "sources[1].port: 70000 is not a port (1 to 65535)"),
        (4, "sources[2].record_type: unknown record type `AXFR`"),
        (5, "sources[3].expect: bad regex"),
        (6, "sources[4].count: must be between 1 and 1000"),
        (7, "sources[5].expect_status: `9xx` is not a status code"),
        (8, "sources[6].ca: cannot read /no/such/ca.pem"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}:{line}:")) && l.contains(what)),
            "no `{what}` at line {line}:\n{stderr}"
        );
    }
}
