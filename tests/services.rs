//! The service sources end to end, each against its real server started
//! here on a free loopback port in a temporary directory: redis-server,
//! memcached, munin-node, upsd with the dummy-ups driver, unbound with
//! remote control, and a Postfix spool tree. Values are compared with what
//! the server's own tools say (`redis-cli`, `memcached`'s `stats`,
//! `munin-run`, `upsc`, `unbound-control`), and servers that are down,
//! hang or answer garbage must give a critical event naming the cause.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::sshd::{SshKeys, Sshd};
use common::{
    answering_server, closed_port, description, ductd_output, event, free_port, metric, once, require_binary, service,
    state, Running, Server, TempDir,
};
use serde_json::Value;

/// Asserts that `name` is critical, has no metric unless `metric_ok`, and
/// that its description contains `reason`.
fn critical(events: &HashMap<String, Value>, name: &str, reason: &str) {
    let ev = event(events, name);
    assert_eq!(state(ev), "critical", "{ev}");
    assert!(description(ev).contains(reason), "{name}: {ev}");
}

/// Runs a command and returns its standard output, or panics with its
/// standard error.
fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("run a command");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ----------------------------------------------------------------- Redis

fn start_redis(password: &str) -> Option<Server> {
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
    .args(["--requirepass", password])
    .args(["--dir", dir.path().to_str().expect("utf-8 path")]);
    Some(Server::spawn(cmd, port, dir, "redis-server"))
}

/// `redis-cli` against the test server.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut all = vec!["-p", &port, "-a", "sekret", "--no-auth-warning"];
    all.extend_from_slice(args);
    output("redis-cli", &all)
}

#[test]
fn redis_queue_lengths_agree_with_redis_cli_and_faults_are_critical() {
    let Some(redis) = start_redis("sekret") else {
        return;
    };
    if require_binary("redis-cli", "redis-tools").is_none() {
        return;
    }
    let p = redis.port;
    redis_cli(p, &["rpush", "celery", "a", "b", "c"]);
    redis_cli(p, &["-n", "3", "rpush", "jobs", "1", "2", "3", "4", "5", "6", "7"]);
    redis_cli(p, &["-n", "3", "set", "text", "not a list"]);
    let silent = answering_server(b"");
    let garbage = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let closed = closed_port();
    let dir = TempDir::new("redis-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: default, source: duct.sources.redis.Queues, port: {p}, password: sekret, clipath: /usr/bin/redis-cli}}
  - {{service: jobs, source: duct.sources.redis.Queues, port: {p}, password: sekret, db: 3, queue: jobs}}
  - {{service: acl, source: duct.sources.redis.Queues, port: {p}, username: default, password: sekret, queue: none}}
  - {{service: nopass, source: duct.sources.redis.Queues, port: {p}}}
  - {{service: badpass, source: duct.sources.redis.Queues, port: {p}, password: wrong}}
  - {{service: text, source: duct.sources.redis.Queues, port: {p}, password: sekret, db: 3, queue: text}}
  - {{service: baddb, source: duct.sources.redis.Queues, port: {p}, password: sekret, db: 99}}
  - {{service: down, source: duct.sources.redis.Queues, port: {closed}}}
  - {{service: hung, source: duct.sources.redis.Queues, port: {silent}, timeout: 0.5}}
  - {{service: garbage, source: duct.sources.redis.Queues, port: {garbage}}}
"
        ),
    );
    let llen = |db: &str, q: &str| redis_cli(p, &["-n", db, "llen", q]).trim().parse::<f64>().unwrap();
    for (name, db, queue) in [("default", "0", "celery"), ("jobs", "3", "jobs"), ("acl", "0", "none")] {
        let ev = event(&events, name);
        assert_eq!(state(ev), "ok", "{ev}");
        assert_eq!(metric(ev), Some(llen(db, queue)), "{ev}");
        let rate = event(&events, &format!("{name}.rate"));
        assert_eq!(metric(rate), Some(0.0), "nothing moved between the ticks: {rate}");
    }
    assert_eq!(metric(event(&events, "jobs")), Some(7.0));
    critical(&events, "nopass", "NOAUTH Authentication required. to LLEN");
    critical(&events, "badpass", "WRONGPASS");
    critical(&events, "text", "WRONGTYPE");
    critical(&events, "baddb", "ERR DB index is out of range to SELECT");
    critical(&events, "down", &format!("127.0.0.1:{closed} - connection refused"));
    critical(&events, "hung", "timed out after 0.5 s waiting for the reply to LLEN");
    critical(
        &events,
        "garbage",
        "unexpected reply to the reply to LLEN: \"HTTP/1.1 400 Bad Request\" is not RESP",
    );
    for name in ["nopass", "down", "hung", "garbage"] {
        assert_eq!(metric(event(&events, name)), None, "Duct sent no metric on failure");
        assert!(!events.contains_key(&format!("{name}.rate")));
    }
}

#[test]
fn redis_queue_lengths_over_ssh_agree_with_redis_cli_and_faults_are_critical() {
    let Some(redis) = start_redis("sekret") else {
        return;
    };
    if require_binary("redis-cli", "redis-tools").is_none() {
        return;
    }
    let Some(keys) = SshKeys::make("ssh-keys-redis") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-redis", None);
    let p = redis.port;
    redis_cli(p, &["rpush", "celery", "a", "b", "c"]);
    redis_cli(p, &["-n", "3", "rpush", "my jobs", "1", "2", "3", "4", "5", "6", "7"]);
    redis_cli(p, &["-n", "3", "set", "text", "not a list"]);
    let closed = closed_port();
    let dir = TempDir::new("redis-ssh");
    let src = "duct.sources.redis.Queues";
    let events = once(
        &dir,
        &format!(
            "interval: 1
{globals}outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: default, source: {src}, port: {p}, password: sekret, clipath: /usr/bin/redis-cli, {ssh}}}
  - {{service: jobs, source: {src}, port: {p}, password: sekret, db: 3, queue: 'my jobs', {ssh}}}
  - {{service: nopass, source: {src}, port: {p}, {ssh}}}
  - {{service: badpass, source: {src}, port: {p}, password: wrong, {ssh}}}
  - {{service: text, source: {src}, port: {p}, password: sekret, db: 3, queue: text, {ssh}}}
  - {{service: baddb, source: {src}, port: {p}, password: sekret, db: 99, {ssh}}}
  - {{service: down, source: {src}, port: {closed}, {ssh}}}
  - {{service: nocli, source: {src}, port: {p}, clipath: /nonexistent/redis-cli, {ssh}}}
",
            globals = sshd.globals(&keys, &dir),
            ssh = sshd.source_options(),
        ),
    );
    let llen = |db: &str, q: &str| redis_cli(p, &["-n", db, "llen", q]).trim().parse::<f64>().unwrap();
    for (name, db, queue) in [("default", "0", "celery"), ("jobs", "3", "my jobs")] {
        let ev = event(&events, name);
        assert_eq!(state(ev), "ok", "{ev}");
        assert_eq!(metric(ev), Some(llen(db, queue)), "{ev}");
        assert_eq!(metric(event(&events, &format!("{name}.rate"))), Some(0.0));
    }
    assert_eq!(metric(event(&events, "jobs")), Some(7.0));
    critical(&events, "nopass", "NOAUTH Authentication required. to LLEN");
    critical(&events, "badpass", "WRONGPASS");
    critical(&events, "text", "WRONGTYPE");
    critical(&events, "baddb", "ERR DB index is out of range to SELECT");
    critical(&events, "down", "Connection refused");
    critical(&events, "nocli", "/nonexistent/redis-cli: ");
    critical(&events, "nocli", "(exit status 127)");
    assert_eq!(sshd.logins(), 1, "{}", sshd.log_text());
}

#[test]
fn a_growing_redis_queue_has_a_positive_rate_in_the_agent() {
    let Some(redis) = start_redis("sekret") else {
        return;
    };
    if require_binary("redis-cli", "redis-tools").is_none() {
        return;
    }
    let p = redis.port;
    let dir = TempDir::new("redis-agent");
    let config = dir.write(
        "duct.yml",
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: q, source: duct.sources.redis.Queues, port: {p}, password: sekret}}
"
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    agent.wait_for(Duration::from_secs(10), |ev| service(ev) == "q");
    // Ten items a tick: the rate must come out positive, and the length
    // must follow.
    let pusher = std::thread::spawn(move || {
        for _ in 0..6 {
            redis_cli(
                p,
                &["rpush", "celery", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    agent.wait_for(Duration::from_secs(15), |ev| {
        service(ev) == "q.rate" && metric(ev).is_some_and(|r| r > 1.0)
    });
    pusher.join().unwrap();
    agent.wait_for(Duration::from_secs(10), |ev| {
        service(ev) == "q" && metric(ev) == Some(60.0)
    });
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

// ------------------------------------------------------------- memcached

fn start_memcached() -> Option<Server> {
    let memcached = require_binary("memcached", "memcached")?;
    let dir = TempDir::new("memcached");
    let port = free_port();
    let mut cmd = Command::new(memcached);
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "16"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    Some(Server::spawn(cmd, port, dir, "memcached"))
}

/// Sends `request` to memcached and reads until `end` closes the reply.
fn memcached_talk(port: u16, request: &str, end: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(end) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "memcached closed the connection: {reply}");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    reply
}

#[test]
fn memcached_stats_agree_with_the_server_and_faults_are_critical() {
    let Some(mc) = start_memcached() else {
        return;
    };
    let p = mc.port;
    memcached_talk(
        p,
        "set a 0 0 5\r\nhello\r\nset b 0 0 3\r\nbye\r\n",
        "STORED\r\nSTORED\r\n",
    );
    memcached_talk(p, "get a\r\nget nope\r\n", "END\r\nEND\r\n");
    let silent = answering_server(b"");
    let garbage = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let closed = closed_port();
    let dir = TempDir::new("memcached-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: mc, source: duct.sources.database.memcache.Memcache, port: {p}}}
  - {{service: down, source: duct.sources.database.memcache.Memcache, port: {closed}}}
  - {{service: hung, source: duct.sources.database.memcache.Memcache, port: {silent}, timeout: 0.5}}
  - {{service: garbage, source: duct.sources.database.memcache.Memcache, port: {garbage}}}
"
        ),
    );
    let state_ev = event(&events, "mc.state");
    assert_eq!((state(state_ev), metric(state_ev)), ("ok", Some(1.0)));
    let stats = memcached_talk(p, "stats\r\n", "END\r\n");
    let stat = |name: &str| -> f64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
            .parse()
            .unwrap()
    };
    for gauge in ["curr_items", "bytes", "hash_bytes"] {
        assert_eq!(
            metric(event(&events, &format!("mc.{}", gauge.replace('_', ".")))),
            Some(stat(gauge)),
            "{gauge}"
        );
    }
    let connections = metric(event(&events, "mc.curr.connections")).unwrap();
    assert!(connections >= 1.0, "ductd's own connection counts: {connections}");
    for counter in [
        "get.hits",
        "get.misses",
        "cmd.set",
        "cmd.get",
        "total.items",
        "evictions",
        "cas.badval",
    ] {
        let ev = event(&events, &format!("mc.{counter}"));
        assert_eq!(metric(ev), Some(0.0), "nothing changed between the ticks: {ev}");
    }
    let read = metric(event(&events, "mc.bytes.read")).unwrap();
    assert!(read > 0.0, "the second tick's own `stats` request was read: {read}");
    assert_eq!(events.keys().filter(|k| k.starts_with("mc.")).count(), 1 + 22 + 4);
    critical(
        &events,
        "down.state",
        &format!("127.0.0.1:{closed} - connection refused"),
    );
    critical(
        &events,
        "hung.state",
        "timed out after 0.5 s waiting for the reply to `stats`",
    );
    critical(
        &events,
        "garbage.state",
        "\"HTTP/1.1 400 Bad Request\" is not a STAT line",
    );
    for name in ["down", "hung", "garbage"] {
        assert_eq!(metric(event(&events, &format!("{name}.state"))), Some(0.0));
        assert_eq!(events.keys().filter(|k| k.starts_with(&format!("{name}."))).count(), 1);
    }
}

// ------------------------------------------------------------ munin-node

/// A munin-node serving the plugins the test writes in its temporary
/// directory. Debian's munin-node 2.0 reads its plugins from
/// /etc/munin/plugins with no option to change it, so the test runs a copy
/// of the script with the plugin and plugin-configuration directories set
/// to its own (the script is otherwise unchanged).
fn start_munin_node(plugins: &[(&str, &str)]) -> Option<Server> {
    let node = require_binary("munin-node", "munin-node")?;
    let dir = TempDir::new("munin");
    let d = dir.path().display().to_string();
    for (name, script) in plugins {
        let path = dir.write(&format!("plugins/{name}"), script);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    // As root, munin-node runs plugins as `nobody`, who may not write the
    // test's state files.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    dir.write("plugin-conf.d/test", if root { "[*]\nuser root\n" } else { "" });
    let script = std::fs::read_to_string(&node).expect("read munin-node");
    let script = script
        .replace("my $servicedir;", &format!("my $servicedir = \"{d}/plugins\";"))
        .replace(
            "my $sconfdir = \"$Munin::Common::Defaults::MUNIN_CONFDIR/plugin-conf.d\";",
            &format!("my $sconfdir = \"{d}/plugin-conf.d\";"),
        );
    assert!(
        script.contains(&format!("{d}/plugins")),
        "munin-node's servicedir line changed"
    );
    let copy = dir.write("munin-node", &script);
    let port = free_port();
    let user = if root { "user root\ngroup root\n" } else { "" };
    let conf = dir.write(
        "munin-node.conf",
        &format!(
            "log_level 4\nlog_file {d}/munin-node.log\npid_file {d}/munin-node.pid\nbackground 0\nsetsid 0\n{user}\
             allow ^127\\.0\\.0\\.1$\nhost 127.0.0.1\nport {port}\n"
        ),
    );
    let mut cmd = Command::new("perl");
    cmd.arg("-T").arg(&copy).arg("--config").arg(&conf);
    Some(Server::spawn(cmd, port, dir, "munin-node"))
}

/// A COUNTER that grows by 100 at every fetch, a DERIVE that the plugin
/// stamps itself (50 more every 10 s of its own clock, starting at
/// `BASE`, so its rate is exactly 5), and a gauge; in the `network`
/// category.
const COUNTING_PLUGIN: &str = r#"#!/bin/sh
state="$(dirname "$0")/../counting.state"
if [ "$1" = config ]; then
  echo "graph_title Counting"
  echo "graph_category network"
  echo "hits.label hits"
  echo "hits.type COUNTER"
  echo "hits.info Hits counted"
  echo "stamped.label stamped"
  echo "stamped.type DERIVE"
  echo "stamped.min 0"
  echo "level.label level"
  echo "unknown.label unknown"
  exit 0
fi
n=$(cat "$state" 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > "$state"
echo "hits.value $((n * 100))"
echo "stamped.value $((BASE + n * 10)):$((n * 50))"
echo "level.value 42.5"
echo "unknown.value U"
"#;

/// A gauge with no category.
const PLAIN_PLUGIN: &str = "#!/bin/sh
[ \"$1\" = config ] && { echo 'graph_title Plain'; echo 'temp.label t'; exit 0; }
echo 'temp.value 21.5'
";

#[test]
fn munin_node_fields_agree_with_munin_run_and_counters_are_rates() {
    // The plugin's clock starts an hour ago: the router forgets counters
    // whose samples are a day older than the newest.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let counting = COUNTING_PLUGIN.replace("BASE", &base.to_string());
    let Some(node) = start_munin_node(&[("counting", &counting), ("plain", PLAIN_PLUGIN)]) else {
        return;
    };
    let p = node.port;
    let silent = answering_server(b"");
    let garbage = answering_server(b"SSH-2.0-OpenSSH_9.2p1\r\n");
    let closed = closed_port();
    let dir = TempDir::new("munin-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: munin, source: duct.sources.munin.MuninNode, host: 127.0.0.1, port: {p}}}
  - {{service: down, source: duct.sources.munin.MuninNode, port: {closed}}}
  - {{service: hung, source: duct.sources.munin.MuninNode, port: {silent}, timeout: 0.5}}
  - {{service: garbage, source: duct.sources.munin.MuninNode, port: {garbage}, timeout: 5}}
"
        ),
    );
    let mut names: Vec<&str> = events
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("munin."))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "munin.network.counting.hits",
            "munin.network.counting.level",
            "munin.network.counting.stamped",
            "munin.system.plain.temp"
        ]
    );
    // The gauges agree with what munin-run prints for the same plugins.
    let plugins = node.dir.path().join("plugins");
    let run = |plugin: &str| output("munin-run", &["--servicedir", plugins.to_str().unwrap(), plugin]);
    let value = |text: &str, field: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}.value ")))
            .unwrap_or_else(|| panic!("no {field} in {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        metric(event(&events, "munin.system.plain.temp")),
        Some(value(&run("plain"), "temp"))
    );
    assert_eq!(
        metric(event(&events, "munin.network.counting.level")),
        Some(value(&run("counting"), "level"))
    );
    let stamped = event(&events, "munin.network.counting.stamped");
    assert_eq!(
        metric(stamped),
        Some(5.0),
        "50 per 10 s of the plugin's clock: {stamped}"
    );
    assert_eq!(
        description(event(&events, "munin.network.counting.hits")),
        "Hits counted"
    );
    let hits = metric(event(&events, "munin.network.counting.hits")).unwrap();
    assert!(
        hits > 10.0 && hits < 1000.0,
        "100 per tick, ticks about a second apart: {hits}"
    );
    critical(&events, "down", &format!("localhost:{closed} - connection refused"));
    critical(&events, "hung", "timed out after 0.5 s waiting for the banner");
    critical(&events, "garbage", "\"SSH-2.0-OpenSSH_9.2p1\" is not munin-node's");
    for name in ["down", "hung", "garbage"] {
        assert_eq!(metric(event(&events, name)), None);
    }
}

// ------------------------------------------------------------------- NUT

/// A process killed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The replayed UPS's figures, on mains power.
const UPS_ON_MAINS: &str = "battery.charge: 87
battery.charge.low: 10
battery.runtime: 1820
battery.voltage: 13.4
device.mfr: Duct Test
input.voltage: 231.5
input.frequency: 50.0
output.voltage: 230.1
output.frequency: 50.0
ups.load: 23
ups.temperature: 31.2
ups.realpower: 180
ups.power: 210
ups.status: OL CHRG
";

/// upsd serving one UPS, `dummy`, whose figures the dummy-ups driver
/// replays from a .dev file in the temporary directory (re-read when it
/// changes). Returns upsd and the driver.
fn start_upsd() -> Option<(Server, Killed)> {
    // Debian's /usr/sbin/upsd is a wrapper that does nothing unless
    // /etc/nut/nut.conf enables it: run the daemon itself.
    let nut_lib = ["/lib/nut", "/usr/lib/nut"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|d| d.join("upsd").is_file() && d.join("dummy-ups").is_file());
    let Some(nut_lib) = nut_lib else {
        require_binary("upsd", "nut-server")?;
        require_binary("dummy-ups", "nut-server")?;
        return None;
    };
    let (upsd, driver) = (nut_lib.join("upsd"), nut_lib.join("dummy-ups"));
    require_binary("upsc", "nut-client")?;
    let dir = TempDir::new("nut");
    let d = dir.path().display().to_string();
    let port = free_port();
    dir.write("ups.dev", UPS_ON_MAINS);
    dir.write(
        "ups.conf",
        &format!("[dummy]\n  driver = dummy-ups\n  port = {d}/ups.dev\n  desc = \"replayed\"\n"),
    );
    dir.write("upsd.conf", &format!("LISTEN 127.0.0.1 {port}\n"));
    dir.write("upsd.users", "");
    dir.write("nut.conf", "MODE=netserver\n");
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let env = [
        ("NUT_CONFPATH", d.clone()),
        ("NUT_STATEPATH", format!("{d}/state")),
        ("NUT_ALTPIDPATH", format!("{d}/state")),
    ];
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut drv = Command::new(driver);
    drv.args(["-a", "dummy", "-F"]).envs(env.clone());
    let mut srv = Command::new(upsd);
    srv.arg("-F").envs(env);
    if root {
        drv.args(["-u", "root"]);
        srv.args(["-u", "root"]);
    }
    let drv = drv
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start dummy-ups");
    let drv = Killed(drv);
    // upsd connects to the driver's socket at start-up.
    let socket = dir.path().join("state/dummy-ups-dummy");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let server = Server::spawn(srv, port, dir, "upsd");
    // upsd serves the UPS once the driver has handed it the figures.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !upsc_answers(port) {
        assert!(
            std::time::Instant::now() < deadline,
            "upsd never had the replayed figures"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((server, drv))
}

/// Whether upsc shows the replayed figures yet.
fn upsc_answers(port: u16) -> bool {
    Command::new("upsc")
        .arg(format!("dummy@127.0.0.1:{port}"))
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("battery.charge:"))
}

/// `upsc dummy@127.0.0.1:port`, as name → value.
fn upsc(port: u16) -> HashMap<String, String> {
    output("upsc", &[&format!("dummy@127.0.0.1:{port}")])
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_ups_replayed_by_dummy_ups_agrees_with_upsc_and_its_status_sets_the_state() {
    let Some((upsd, driver)) = start_upsd() else {
        return;
    };
    let p = upsd.port;
    let silent = answering_server(b"");
    let garbage = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let closed = closed_port();
    let dir = TempDir::new("nut-once");
    let config = format!(
        "outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: ups, source: duct.sources.power.nut.UPS, ups: dummy, host: 127.0.0.1, port: {p}}}
  - {{service: nosuch, source: duct.sources.power.nut.UPS, ups: nosuch, host: 127.0.0.1, port: {p}}}
  - {{service: down, source: duct.sources.power.nut.UPS, port: {closed}}}
  - {{service: hung, source: duct.sources.power.nut.UPS, port: {silent}, timeout: 0.5}}
  - {{service: garbage, source: duct.sources.power.nut.UPS, port: {garbage}}}
"
    );
    let events = once(&dir, &config);
    let upsc_vars = upsc(p);
    let status = event(&events, "ups.ups.status");
    assert_eq!(state(status), "ok", "{status}");
    assert_eq!(metric(status), None);
    assert_eq!(description(status), format!("UPS status: {}", upsc_vars["ups.status"]));
    let figures = [
        "battery.charge",
        "battery.charge.low",
        "battery.runtime",
        "battery.voltage",
        "input.voltage",
        "input.frequency",
        "output.voltage",
        "output.frequency",
        "ups.load",
        "ups.temperature",
        "ups.realpower",
        "ups.power",
    ];
    for figure in figures {
        let ev = event(&events, &format!("ups.{figure}"));
        assert_eq!(metric(ev), Some(upsc_vars[figure].parse().unwrap()), "{figure}: {ev}");
        assert_eq!(state(ev), "ok");
    }
    assert_eq!(
        events.keys().filter(|k| k.starts_with("ups.")).count(),
        1 + figures.len()
    );
    critical(&events, "nosuch", "the server answered ERR UNKNOWN-UPS");
    critical(&events, "down", &format!("ups@localhost:{closed} - connection refused"));
    critical(
        &events,
        "hung",
        "timed out after 0.5 s waiting for the reply to `LIST VAR ups`",
    );
    critical(
        &events,
        "garbage",
        "\"HTTP/1.1 400 Bad Request\" is not the start of a list",
    );

    // On battery, low: every figure is critical. The driver re-reads its
    // file when it changes; upsc shows when upsd has it.
    let low = UPS_ON_MAINS
        .replace("ups.status: OL CHRG", "ups.status: OB LB")
        .replace("battery.charge: 87", "battery.charge: 8");
    std::thread::sleep(Duration::from_millis(1100));
    upsd.dir.write("ups.dev", &low);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while upsc(p)["ups.status"] != "OB LB" {
        assert!(
            std::time::Instant::now() < deadline,
            "dummy-ups did not pick up the new status"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = once(&dir, &config);
    let status = event(&events, "ups.ups.status");
    assert_eq!((state(status), description(status)), ("critical", "UPS status: OB LB"));
    let charge = event(&events, "ups.battery.charge");
    assert_eq!((state(charge), metric(charge)), ("critical", Some(8.0)));

    // Without its driver, upsd says so.
    drop(driver);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = once(&dir, &config);
        let ev = event(&events, "ups");
        if state(ev) == "critical" {
            assert!(
                description(ev).contains("DRIVER-NOT-CONNECTED") || description(ev).contains("DATA-STALE"),
                "{ev}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upsd kept serving a UPS without its driver: {ev}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

// --------------------------------------------------------------- unbound

/// unbound answering for a local zone on a free port, with remote control
/// on a Unix socket in its temporary directory (no certificates).
fn start_unbound() -> Option<Server> {
    require_binary("unbound-control", "unbound")?;
    common::start_unbound(
        "unbound-stats",
        r#"  extended-statistics: yes
  local-data: "web.duct.test. 300 IN A 198.18.0.10""#,
        "  control-enable: yes\n  control-interface: {dir}/control.sock\n  control-use-cert: no",
    )
}

/// Sends an A query for `name` to 127.0.0.1:port and waits for the answer.
fn dns_query(port: u16, name: &str) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&q, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 512];
    socket.recv_from(&mut buf).expect("unbound answers");
}

/// A statistic of `unbound-control stats_noreset`.
fn unbound_stat(conf: &str, key: &str) -> f64 {
    output("unbound-control", &["-c", conf, "stats_noreset"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}"))
        .parse()
        .unwrap()
}

#[test]
fn unbound_statistics_agree_with_unbound_control_and_faults_are_critical() {
    let Some(unbound) = start_unbound() else {
        return;
    };
    for name in ["web.duct.test", "web.duct.test", "web.duct.test", "nope.duct.test"] {
        dns_query(unbound.port, name);
    }
    let conf = unbound.dir.path().join("unbound.conf");
    let conf = conf.to_str().unwrap();
    let dir = TempDir::new("unbound-once");
    let hang = dir.write("hang", "#!/bin/sh\nsleep 30\n");
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let events = once(
        &dir,
        &format!(
            "outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: dns, source: duct.sources.unbound.Stats, config: {conf}, reset: false}}
  - {{service: missing, source: duct.sources.unbound.Stats, executable: /nonexistent/unbound-control}}
  - {{service: badconf, source: duct.sources.unbound.Stats, config: /nonexistent.conf}}
  - {{service: hung, source: duct.sources.unbound.Stats, executable: {}, timeout: 0.5}}
  - {{service: garbage, source: duct.sources.unbound.Stats, executable: /bin/echo}}
",
            hang.display()
        ),
    );
    let dns: Vec<&String> = events.keys().filter(|k| k.starts_with("dns.")).collect();
    assert!(dns.len() > 100, "extended statistics: {}", dns.len());
    for key in [
        "total.num.queries",
        "num.answer.rcode.NXDOMAIN",
        "num.answer.rcode.NOERROR",
        "num.query.type.A",
    ] {
        let ev = event(&events, &format!("dns.{key}"));
        assert_eq!(metric(ev), Some(unbound_stat(conf, key)), "{key}: {ev}");
        assert_eq!(description(ev), key);
    }
    assert_eq!(metric(event(&events, "dns.total.num.queries")), Some(4.0));
    assert_eq!(metric(event(&events, "dns.num.answer.rcode.NXDOMAIN")), Some(1.0));
    critical(
        &events,
        "missing",
        "/nonexistent/unbound-control - running it: cannot run",
    );
    critical(&events, "badconf", "error: Could not open /nonexistent.conf");
    critical(&events, "hung", "took longer than 0.5 s");
    critical(&events, "garbage", "no key=value statistics in \"stats\"");

    // Over SSH, unbound-control runs on the host sshd serves (this one
    // here) and gives the same figures; missing there, the remote shell's
    // complaint is the cause.
    if let Some(keys) = SshKeys::make("ssh-keys-unbound") {
        let sshd = Sshd::start(&keys, "sshd-unbound", None);
        let events = once(
            &dir,
            &format!(
                "{globals}outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: remote, source: duct.sources.unbound.Stats, config: {conf}, reset: false, {ssh}}}
  - {{service: gone, source: duct.sources.unbound.Stats, executable: /nonexistent/unbound-control, {ssh}}}
",
                globals = sshd.globals(&keys, &dir),
                ssh = sshd.source_options(),
            ),
        );
        for key in ["total.num.queries", "num.answer.rcode.NXDOMAIN", "num.query.type.A"] {
            let ev = event(&events, &format!("remote.{key}"));
            assert_eq!(metric(ev), Some(unbound_stat(conf, key)), "{key}: {ev}");
        }
        // The remote shell's words: bash's "No such file or directory",
        // dash's "not found".
        critical(&events, "gone", "/nonexistent/unbound-control: ");
        critical(&events, "gone", " (exit status 127)");
        assert_eq!(sshd.logins(), 1, "one connection for both:\n{}", sshd.log_text());
    }

    // Duct's default, `stats`, hands the counters over and resets them.
    let events = once(
        &dir,
        &format!(
            "outputs: [{{output: duct.outputs.logger.Logger}}]
sources: [{{service: dns, source: duct.sources.unbound.Stats, config: {conf}}}]
"
        ),
    );
    assert_eq!(metric(event(&events, "dns.total.num.queries")), Some(4.0));
    assert_eq!(unbound_stat(conf, "total.num.queries"), 0.0, "reset by ductd's `stats`");

    // Stopped (its directory, with the configuration, stays).
    let mut unbound = unbound;
    unbound.child.kill().unwrap();
    unbound.child.wait().unwrap();
    let events = once(
        &dir,
        &format!(
            "outputs: [{{output: duct.outputs.logger.Logger}}]
sources: [{{service: dns, source: duct.sources.unbound.Stats, config: {conf}}}]
"
        ),
    );
    critical(&events, "dns", "error: connect: ");
    assert_eq!(events.len(), 1);
}

// --------------------------------------------------------------- Postfix

/// A spool laid out as Postfix 3.7 lays it out (queue files named by
/// queue ID, `deferred` and `defer` hashed one level deep), with `counts`
/// messages in each of Duct's queues.
fn postfix_spool(dir: &TempDir, counts: &[(&str, usize)]) -> std::path::PathBuf {
    let spool = dir.path().join("spool");
    for d in [
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "maildrop", "pid", "private",
        "public", "saved", "trace",
    ] {
        std::fs::create_dir_all(spool.join(d)).unwrap();
    }
    for (queue, n) in counts {
        for i in 0..*n {
            let id = format!("4Ymn{i:04}Qz9sK{}", &queue[..1]);
            let rel = if *queue == "deferred" {
                format!("{queue}/{}/{id}", &id[..1])
            } else {
                format!("{queue}/{id}")
            };
            dir.write(&format!("spool/{rel}"), "queue file");
        }
    }
    dir.write("spool/pid/master.pid", "1234");
    spool
}

/// `find DIR -type f | wc -l`, what Duct meant to run.
fn find_count(dir: &std::path::Path) -> f64 {
    let out = output("sh", &["-c", &format!("find '{}' -type f | wc -l", dir.display())]);
    out.trim().parse().unwrap()
}

/// `name`'s count of every queue but `corrupt` is what `find` counts in
/// `spool`, with a zero rate (nothing moved between the ticks).
fn counts_agree_with_find(events: &HashMap<String, Value>, name: &str, spool: &std::path::Path) {
    for queue in ["active", "deferred", "maildrop", "incoming", "hold", "bounce"] {
        let ev = event(events, &format!("{name}.{queue}.value"));
        assert_eq!(metric(ev), Some(find_count(&spool.join(queue))), "{queue}: {ev}");
        assert_eq!(metric(event(events, &format!("{name}.{queue}.rate"))), Some(0.0));
    }
}

#[test]
fn postfix_queues_agree_with_find_and_a_missing_spool_is_critical() {
    let dir = TempDir::new("postfix");
    let spool = postfix_spool(
        &dir,
        &[
            ("active", 3),
            ("deferred", 12),
            ("incoming", 1),
            ("hold", 2),
            ("maildrop", 5),
        ],
    );
    std::fs::remove_dir(spool.join("corrupt")).unwrap();
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: mail, source: duct.sources.postfix.Postfix, spool: {}}}
  - {{service: nospool, source: duct.sources.postfix.Postfix, spool: /nonexistent/postfix}}
",
            spool.display()
        ),
    );
    counts_agree_with_find(&events, "mail", &spool);
    assert_eq!(metric(event(&events, "mail.deferred.value")), Some(12.0));
    critical(&events, "mail.corrupt.value", "corrupt: No such file or directory");
    assert!(!events.contains_key("mail.corrupt.rate"));
    critical(
        &events,
        "nospool",
        "cannot read /nonexistent/postfix: No such file or directory",
    );
    assert_eq!(events.keys().filter(|k| k.starts_with("nospool")).count(), 1);
}

#[test]
fn postfix_queues_over_ssh_agree_with_find_and_faults_are_critical() {
    let Some(keys) = SshKeys::make("ssh-keys-postfix") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-postfix", None);
    let dir = TempDir::new("postfix-ssh");
    let spool = postfix_spool(&dir, &[("active", 2), ("deferred", 9), ("maildrop", 1)]);
    std::fs::remove_dir(spool.join("corrupt")).unwrap();
    let events = once(
        &dir,
        &format!(
            "interval: 1
{globals}outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: mail, source: duct.sources.postfix.Postfix, spool: {spool}, {ssh}}}
  - {{service: nospool, source: duct.sources.postfix.Postfix, spool: /nonexistent/postfix, {ssh}}}
",
            spool = spool.display(),
            globals = sshd.globals(&keys, &dir),
            ssh = sshd.source_options(),
        ),
    );
    counts_agree_with_find(&events, "mail", &spool);
    assert_eq!(metric(event(&events, "mail.deferred.value")), Some(9.0));
    // find's own words about the missing queue.
    critical(&events, "mail.corrupt.value", "corrupt");
    critical(&events, "mail.corrupt.value", "No such file or directory");
    assert!(!events.contains_key("mail.corrupt.rate"));
    // The remote shell's `cd` says it in its own words.
    critical(&events, "nospool", "cannot read /nonexistent/postfix: sh: ");
    assert_eq!(events.keys().filter(|k| k.starts_with("nospool")).count(), 1);
    assert_eq!(sshd.logins(), 1, "{}", sshd.log_text());
}

#[test]
fn a_filling_postfix_queue_has_a_positive_rate_in_the_agent() {
    let dir = TempDir::new("postfix-agent");
    let spool = postfix_spool(&dir, &[]);
    let config = dir.write(
        "duct.yml",
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources: [{{service: mail, source: duct.sources.postfix.Postfix, spool: {}}}]
",
            spool.display()
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    agent.wait_for(Duration::from_secs(10), |ev| service(ev) == "mail.deferred.value");
    for i in 0..40 {
        dir.write(&format!("spool/deferred/{}/{i}ABCDEF", i % 3), "queue file");
    }
    agent.wait_for(Duration::from_secs(10), |ev| {
        service(ev) == "mail.deferred.rate" && metric(ev).is_some_and(|r| r > 0.0)
    });
    agent.wait_for(Duration::from_secs(10), |ev| {
        service(ev) == "mail.deferred.value" && metric(ev) == Some(40.0)
    });
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

/// A real Postfix with its configuration and spool in a temporary
/// directory, relaying everything to a closed loopback port so that mail
/// stays deferred; aborted when dropped. Needs root (Postfix's master
/// runs as root and drops to `postfix`).
struct Postfix {
    dir: TempDir,
}

impl Postfix {
    fn start() -> Option<Postfix> {
        require_binary("postfix", "postfix")?;
        if !common::require_root("a real Postfix needs root") {
            return None;
        }
        let dir = TempDir::new("postfix-real");
        let d = dir.path().display().to_string();
        let master = std::fs::read_to_string("/etc/postfix/master.cf").expect("Debian's master.cf");
        dir.write("conf/master.cf", &master);
        let refused = closed_port();
        dir.write(
            "conf/main.cf",
            &format!(
                "compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = duct.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
master_service_disable = inet
relayhost = [127.0.0.1]:{refused}
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
"
            ),
        );
        std::fs::create_dir_all(dir.path().join("spool")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        output("chown", &["postfix", &format!("{d}/data")]);
        let postfix = Postfix { dir };
        output("postfix", &["-c", &postfix.conf(), "start"]);
        Some(postfix)
    }

    fn conf(&self) -> String {
        format!("{}/conf", self.dir.path().display())
    }

    fn spool(&self) -> std::path::PathBuf {
        self.dir.path().join("spool")
    }

    fn send(&self, to: &str) {
        let mut child = Command::new("sendmail")
            .args(["-C", &self.conf(), "-f", "ductd@duct.test", to])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run sendmail");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: test\n\nhello\n")
            .unwrap();
        assert!(child.wait().unwrap().success(), "sendmail to {to}");
    }

    /// The queue of every message, by `postqueue -j`.
    fn queues(&self) -> Vec<(String, String)> {
        output("postqueue", &["-c", &self.conf(), "-j"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["queue_name"].as_str().unwrap().to_string(),
                    v["queue_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").args(["-c", &self.conf(), "abort"]).output();
    }
}

#[test]
fn a_real_postfix_queue_agrees_with_postqueue() {
    let Some(postfix) = Postfix::start() else {
        return;
    };
    for to in ["a@example.invalid", "b@example.invalid", "c@example.invalid"] {
        postfix.send(to);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while postfix.queues().iter().filter(|(q, _)| q == "deferred").count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "mail not deferred: {:?}",
            postfix.queues()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let held = postfix.queues()[0].1.clone();
    output("postsuper", &["-c", &postfix.conf(), "-h", &held]);
    let queues = postfix.queues();
    let dir = TempDir::new("postfix-real-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources: [{{service: mail, source: duct.sources.postfix.Postfix, spool: {}}}]
",
            postfix.spool().display()
        ),
    );
    for queue in [
        "active", "deferred", "maildrop", "incoming", "corrupt", "hold", "bounce",
    ] {
        let listed = queues.iter().filter(|(q, _)| q == queue).count() as f64;
        let ev = event(&events, &format!("mail.{queue}.value"));
        assert_eq!(metric(ev), Some(listed), "{queue}: {ev}; postqueue: {queues:?}");
    }
    assert_eq!(metric(event(&events, "mail.deferred.value")), Some(2.0));
    assert_eq!(metric(event(&events, "mail.hold.value")), Some(1.0));
}

// ------------------------------------------------------------ PostgreSQL

/// A program of Debian's PostgreSQL (in /usr/lib/postgresql/N/bin, the
/// newest N), else on the PATH.
fn postgres_program(name: &str) -> Option<std::path::PathBuf> {
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.is_file());
    versions.sort();
    versions.pop().or_else(|| require_binary(name, "postgresql"))
}

/// A command run as the `postgres` user when the test is root (the
/// server refuses to run as root); setpriv execs, so killing the child
/// kills the server itself.
fn as_postgres(program: &std::path::Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "postgres", "--regid", "postgres", "--init-groups"])
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A cluster made by initdb in a temporary directory (password `sekret`
/// for `postgres`, SCRAM), serving TLS with a certificate for 127.0.0.1
/// signed by the test's CA, and its Unix socket in the same directory.
fn start_postgres() -> Option<(Server, common::Certificates)> {
    let initdb = postgres_program("initdb")?;
    let postgres = postgres_program("postgres")?;
    let dir = TempDir::new("postgresql");
    let d = dir.path().display().to_string();
    let certs = common::make_certificates(dir.path())?;
    dir.write("pw", "sekret\n");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        output("chown", &["-R", "postgres:postgres", &d]);
    }
    let out = as_postgres(&initdb)
        .args(["-D", &format!("{d}/data"), "-U", "postgres", "--auth=scram-sha-256"])
        .arg(format!("--pwfile={d}/pw"))
        .output()
        .expect("run initdb");
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let mut cmd = as_postgres(&postgres);
    cmd.args([
        "-D",
        &format!("{d}/data"),
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-k",
        &d,
    ])
    .args(["-c", "ssl=on", "-c", &format!("ssl_cert_file={}", certs.cert.display())])
    .args(["-c", &format!("ssl_key_file={}", certs.key.display())]);
    let server = Server::spawn(cmd, port, dir, "postgres");
    Some((server, certs))
}

/// psql against the test cluster; its output without headers.
fn psql(port: u16, db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-XAtc",
            sql,
        ])
        .env("PGPASSWORD", "sekret")
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn postgresql_statistics_agree_with_psql_over_tcp_tls_and_the_socket() {
    let Some((pg, certs)) = start_postgres() else {
        return;
    };
    if require_binary("psql", "postgresql-client").is_none() {
        return;
    }
    let p = pg.port;
    psql(p, "postgres", "CREATE DATABASE app");
    psql(
        p,
        "app",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)",
    );
    // A session held open in `app`, for its backend count.
    let mut held = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p.to_string(),
            "-U",
            "postgres",
            "-d",
            "app",
            "-Xc",
            "SELECT pg_sleep(60)",
        ])
        .env("PGPASSWORD", "sekret")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run psql");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while psql(
        p,
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app'",
    ) != "1"
    {
        assert!(std::time::Instant::now() < deadline, "the held session did not show");
        std::thread::sleep(Duration::from_millis(100));
    }
    let silent = answering_server(b"");
    let garbage = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let closed = closed_port();
    let (ca, wrong) = (certs.ca.display(), certs.wrong_ca.display());
    let socket_dir = pg.dir.path().display();
    let pgsrc = "source: duct.sources.database.postgresql.PostgreSQL";
    let dir = TempDir::new("postgresql-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: plain, {pgsrc}, timeout: 5, port: {p}, password: sekret, sslmode: disable}}
  - {{service: prefer, {pgsrc}, timeout: 5, port: {p}, password: sekret}}
  - {{service: verified, {pgsrc}, timeout: 5, port: {p}, password: sekret, sslmode: verify-full, ca: {ca}}}
  - {{service: socket, {pgsrc}, timeout: 5, host: {socket_dir}, port: {p}, password: sekret}}
  - {{service: wrongca, {pgsrc}, timeout: 5, port: {p}, password: sekret, sslmode: verify-full, ca: {wrong}}}
  - {{service: badpass, {pgsrc}, timeout: 5, port: {p}, password: wrong}}
  - {{service: nodb, {pgsrc}, timeout: 5, port: {p}, password: sekret, database: nosuch}}
  - {{service: down, {pgsrc}, timeout: 5, port: {closed}}}
  - {{service: hung, {pgsrc}, port: {silent}, timeout: 0.5}}
  - {{service: garbage, {pgsrc}, timeout: 5, port: {garbage}, sslmode: disable}}
"
        ),
    );
    let backends = |db: &str| -> f64 {
        psql(
            p,
            "postgres",
            &format!("SELECT numbackends FROM pg_stat_database WHERE datname = '{db}'"),
        )
        .parse()
        .unwrap()
    };
    for s in ["plain", "prefer", "verified", "socket"] {
        let ev = event(&events, &format!("{s}.state"));
        assert_eq!((state(ev), metric(ev)), ("ok", Some(1.0)), "{ev}");
        assert_eq!(
            metric(event(&events, &format!("{s}.app.threads"))),
            Some(backends("app")),
            "{s}"
        );
        for name in [
            "commits",
            "rollbacks",
            "disk.read",
            "disk.cache",
            "returned",
            "selects",
            "inserts",
            "updates",
            "deletes",
        ] {
            for db in ["postgres", "app"] {
                let ev = event(&events, &format!("{s}.{db}.{name}"));
                assert!(metric(ev).is_some_and(|r| r >= 0.0), "{ev}");
            }
        }
        assert!(
            !events.keys().any(|k| k.starts_with(&format!("{s}.template"))),
            "templates are left out"
        );
    }
    assert_eq!(
        metric(event(&events, "plain.app.threads")),
        Some(1.0),
        "the held session"
    );
    critical(&events, "wrongca.state", "error performing TLS handshake");
    critical(
        &events,
        "badpass.state",
        "FATAL: password authentication failed for user \"postgres\"",
    );
    critical(&events, "nodb.state", "FATAL: database \"nosuch\" does not exist");
    critical(
        &events,
        "down.state",
        &format!("127.0.0.1:{closed} - connection refused"),
    );
    critical(&events, "hung.state", "timed out after 0.5 s");
    critical(&events, "garbage.state", &format!("127.0.0.1:{garbage} - "));
    for s in ["wrongca", "badpass", "nodb", "down", "hung", "garbage"] {
        assert_eq!(metric(event(&events, &format!("{s}.state"))), Some(0.0));
        assert_eq!(events.keys().filter(|k| k.starts_with(&format!("{s}."))).count(), 1);
    }
    let _ = held.kill();
    let _ = held.wait();

    // Inserts in `app` while the agent runs show as a rate.
    let config = dir.write(
        "agent.yml",
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources: [{{service: pg, {pgsrc}, port: {p}, password: sekret}}]
"
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    agent.wait_for(Duration::from_secs(10), |ev| service(ev) == "pg.state");
    let writer = std::thread::spawn(move || {
        for _ in 0..8 {
            psql(p, "app", "INSERT INTO t SELECT generate_series(1, 500)");
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    agent.wait_for(Duration::from_secs(20), |ev| {
        service(ev) == "pg.app.inserts" && metric(ev).is_some_and(|r| r > 10.0)
    });
    writer.join().unwrap();
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[test]
fn redis_over_tls_is_verified_against_the_ca() {
    let Some(redis) = require_binary("redis-server", "redis-server") else {
        return;
    };
    let dir = TempDir::new("redis-tls");
    let Some(certs) = common::make_certificates(dir.path()) else {
        return;
    };
    let port = free_port();
    let mut cmd = Command::new(redis);
    cmd.args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .arg("--tls-cert-file")
    .arg(&certs.cert)
    .arg("--tls-key-file")
    .arg(&certs.key)
    .arg("--tls-ca-cert-file")
    .arg(&certs.ca)
    .args(["--tls-auth-clients", "no", "--dir", dir.path().to_str().unwrap()]);
    let _server = Server::spawn(cmd, port, TempDir::new("redis-tls-data"), "redis-server with TLS");
    let (ca, wrong) = (certs.ca.display(), certs.wrong_ca.display());
    let once_dir = TempDir::new("redis-tls-once");
    let events = once(
        &once_dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: verified, source: duct.sources.redis.Queues, port: {port}, tls: true, ca: {ca}, timeout: 5}}
  - {{service: unverified, source: duct.sources.redis.Queues, port: {port}, tls: true, tls_verify: false, timeout: 5}}
  - {{service: wrongca, source: duct.sources.redis.Queues, port: {port}, tls: true, ca: {wrong}, timeout: 5}}
  - {{service: plain, source: duct.sources.redis.Queues, port: {port}, timeout: 2}}
"
        ),
    );
    for name in ["verified", "unverified"] {
        let ev = event(&events, name);
        assert_eq!((state(ev), metric(ev)), ("ok", Some(0.0)), "{ev}");
    }
    critical(&events, "wrongca", "TLS handshake failed");
    // Plain RESP to a TLS port: redis drops the connection.
    critical(&events, "plain", &format!("127.0.0.1:{port} - "));
}

// ------------------------------------------------------------ configuration

#[test]
fn duct_configurations_of_the_service_sources_check_strictly() {
    let dir = TempDir::new("services-check");
    // Duct 2.2.1's options and defaults, as old configurations have them
    // (numbers as strings too: Duct converted them), and Tensor's names.
    let path = dir.write(
        "duct.yml",
        "outputs: [{output: duct.outputs.null.Null}]
sources:
  - {service: q, source: duct.sources.redis.Queues, queue: jobs, db: '2', clipath: /usr/bin/redis-cli}
  - {service: m, source: duct.sources.database.memcache.Memcache, host: 127.0.0.1, port: 11211}
  - {service: pg, source: duct.sources.database.postgresql.PostgreSQL, host: 127.0.0.1, port: 5432, user: postgres, password: ''}
  - {service: munin, source: duct.sources.munin.MuninNode, host: localhost, port: '4949'}
  - {service: dns, source: duct.sources.unbound.Stats, executable: /usr/sbin/unbound-control}
  - {service: mail, source: duct.sources.postfix.Postfix, spool: /var/spool/postfix}
  - {service: ups, source: duct.sources.power.nut.UPS, ups: ups, host: localhost, port: 3493, timeout: 10}
  - {service: t, source: tensor.sources.redis.Queues}
",
    );
    let (code, stdout, stderr) = ductd_output(&["check", "--strict", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let bad = dir.write(
        "bad.yml",
        "outputs: [{output: duct.outputs.null.Null}]
sources:
  - {service: x, source: duct.sources.redis.Queues, port: 99999}
  - {service: y, source: duct.sources.database.postgresql.PostgreSQL, sslmode: bogus}
  - {service: z, source: duct.sources.power.nut.UPS, ups: 'a b'}
",
    );
    let (code, stdout, stderr) = ductd_output(&["check", "-c", bad.to_str().unwrap()]);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{all}");
    assert!(
        all.contains("bad.yml:3:59: sources[0].port: 99999 is not a port"),
        "{all}"
    );
    assert!(all.contains("sources[1].sslmode: `bogus` is not one of"), "{all}");
    assert!(all.contains("sources[2].ups: must be a UPS name"), "{all}");
    let (_, list, _) = ductd_output(&["list"]);
    for name in [
        "duct.sources.redis.Queues",
        "duct.sources.database.memcache.Memcache",
        "duct.sources.database.postgresql.PostgreSQL",
        "duct.sources.munin.MuninNode",
        "duct.sources.power.nut.UPS",
        "duct.sources.unbound.Stats",
        "duct.sources.postfix.Postfix",
    ] {
        assert!(list.contains(name), "ductd list lacks {name}");
    }
}

// ------------------------------------------------------------------ faults

#[test]
fn a_server_that_is_down_is_critical_every_tick_logged_once_and_picked_up_when_it_starts() {
    let Some(memcached) = require_binary("memcached", "memcached") else {
        return;
    };
    let port = free_port();
    let dir = TempDir::new("services-fault");
    let config = dir.write(
        "duct.yml",
        &format!(
            "interval: 0.5
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: mc, source: duct.sources.database.memcache.Memcache, port: {port}}}
  - {{service: load, source: duct.sources.linux.basic.LoadAverage}}
"
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    let down = std::cell::Cell::new(0);
    let seen = agent.wait_for(Duration::from_secs(20), |ev| {
        if service(ev) == "mc.state" && state(ev) == "critical" {
            down.set(down.get() + 1);
        }
        down.get() >= 4
    });
    assert!(
        seen.iter().any(|ev| service(ev) == "load"),
        "the other source carries on"
    );
    let refused = format!("127.0.0.1:{port} - connection refused");
    assert_eq!(
        agent.stderr().matches(&refused).count(),
        1,
        "logged once:\n{}",
        agent.stderr()
    );
    let mut cmd = Command::new(memcached);
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let _server = Server::spawn(cmd, port, TempDir::new("memcached-late"), "memcached");
    agent.wait_for(Duration::from_secs(10), |ev| {
        service(ev) == "mc.state" && state(ev) == "ok"
    });
    assert!(
        agent.wait_for_log("the server answers again", Duration::from_secs(5)),
        "{}",
        agent.stderr()
    );
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}
