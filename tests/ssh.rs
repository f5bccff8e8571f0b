//! Remote checks (`use_ssh: true`) against OpenSSH's real `sshd` on
//! loopback ports: the host sources read this machine through SSH and give
//! what they give locally; host keys are verified against known_hosts
//! (plain and hashed entries, refusals as critical events, accept-new);
//! key (ed25519, ECDSA, RSA), encrypted-key, password and ssh-agent logins;
//! a port that accepts and never answers; a daemon killed and restarted
//! under a running agent; and twenty daemons, six sources each, one
//! connection per daemon.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::sshd::{generate_key, SshKeys, Sshd};
use common::{description, ductd, ductd_output, metric, service, state, Running, TempDir};
use serde_json::Value;

/// A remote source block for `sshd` (root, the given extra options).
fn remote(service: &str, source: &str, sshd: &Sshd, extra: &str) -> String {
    format!(
        "  - {{service: {service}, source: {source}, use_ssh: true, ssh_host: 127.0.0.1, ssh_port: {port}, timeout: 60{extra}}}\n",
        port = sshd.port
    )
}

/// `ductd once` on `config`: (events by service, stderr).
fn once(dir: &TempDir, config: &str) -> (HashMap<String, Value>, String) {
    let (code, events, stderr) = once_any(dir, config);
    assert_eq!(code, 0, "ductd once failed:\n{stderr}");
    (events, stderr)
}

/// `ductd once` on `config`, failing or not: (exit code, events, stderr).
fn once_any(dir: &TempDir, config: &str) -> (i32, HashMap<String, Value>, String) {
    once_env(dir, config, &[])
}

/// [`once_any`] with `env` set for ductd.
fn once_env(dir: &TempDir, config: &str, env: &[(&str, &Path)]) -> (i32, HashMap<String, Value>, String) {
    let path = dir.write("duct.yml", config);
    let mut cmd = ductd(&["once", "-c", path.to_str().unwrap()]);
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run ductd");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (service(&v).to_string(), v))
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), events, stderr)
}

fn get<'a>(events: &'a HashMap<String, Value>, name: &str, stderr: &str) -> &'a Value {
    events.get(name).unwrap_or_else(|| {
        let mut names: Vec<&String> = events.keys().collect();
        names.sort();
        panic!("no event {name}; got {names:?}\nstderr:\n{stderr}")
    })
}

/// Global SSH options: root with the user's plain key, `known_hosts`.
fn globals(keys: &SshKeys, known_hosts: &Path) -> String {
    format!(
        "interval: 1\nssh_username: root\nssh_keyfile: {}\nssh_knownhosts_file: {}\n",
        keys.user_key.display(),
        known_hosts.display()
    )
}

const SIX: &[(&str, &str)] = &[
    ("load", "duct.sources.linux.basic.LoadAverage"),
    ("mem", "duct.sources.linux.basic.Memory"),
    ("cpu", "duct.sources.linux.basic.CPU"),
    ("net", "duct.sources.linux.basic.Network"),
    ("disk", "duct.sources.linux.basic.DiskIO"),
    ("procs", "duct.sources.linux.process.ProcessCount"),
];

/// The services under `prefix.`, without it.
fn names_under(events: &HashMap<String, Value>, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = events
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .map(String::from)
        .collect();
    names.sort();
    names
}

#[test]
fn host_sources_over_ssh_read_what_they_read_locally() {
    let Some(keys) = SshKeys::make("ssh-keys-same") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-same", None);
    let dir = TempDir::new("ssh-same");
    let kh = dir.write("known_hosts", &sshd.known_hosts_line(&keys.host_public));
    let mut config = globals(&keys, &kh) + "sources:\n";
    for (name, source) in SIX {
        config.push_str(&remote(&format!("r.{name}"), source, &sshd, ""));
        config.push_str(&format!("  - {{service: l.{name}, source: {source}}}\n"));
    }
    let (events, stderr) = once(&dir, &config);
    for (name, _) in SIX {
        let r = names_under(&events, &format!("r.{name}"));
        let l = names_under(&events, &format!("l.{name}"));
        assert!(!r.is_empty(), "no r.{name} events\n{stderr}");
        assert_eq!(r, l, "{name}: the same metrics over SSH as here");
    }
    for ev in events.values() {
        assert_eq!(state(ev), "ok", "{ev}");
    }
    let value = |n: &str| metric(get(&events, n, &stderr)).unwrap();
    assert!((value("r.mem") - value("l.mem")).abs() < 0.05, "memory");
    assert!((value("r.load") - value("l.load")).abs() < 2.0, "load");
    assert!((value("r.procs") - value("l.procs")).abs() < 60.0, "processes");
    let busy = value("r.cpu");
    assert!((0.0..=1.0).contains(&busy), "cpu {busy}");
    assert_eq!(sshd.logins(), 1, "six sources, one connection:\n{}", sshd.log_text());
}

#[test]
fn disk_free_over_ssh_measures_the_same_filesystems() {
    let Some(keys) = SshKeys::make("ssh-keys-df") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-df", None);
    let dir = TempDir::new("ssh-df");
    let kh = dir.write("known_hosts", &sshd.known_hosts_line(&keys.host_public));
    let source = "duct.sources.linux.basic.DiskFree";
    let config = globals(&keys, &kh)
        + "sources:\n"
        + &remote("r", source, &sshd, "")
        + &format!("  - {{service: l, source: {source}}}\n");
    let (events, stderr) = once(&dir, &config);
    let r = names_under(&events, "r.");
    let l = names_under(&events, "l.");
    assert!(!r.is_empty(), "no remote filesystems\n{stderr}");
    assert_eq!(r, l, "the same filesystems and figures over SSH as here");
    for name in &l {
        let (lv, rv) = (
            metric(get(&events, &format!("l.{name}"), &stderr)).unwrap(),
            metric(get(&events, &format!("r.{name}"), &stderr)).unwrap(),
        );
        // The same statvfs figures, a few writes apart.
        let close = if name.ends_with(".used") {
            1.0
        } else {
            1e-3 * lv.max(1024.0 * 1024.0)
        };
        assert!((lv - rv).abs() <= close, "{name}: here {lv}, over SSH {rv}");
    }
    assert_eq!(sshd.logins(), 1, "{}", sshd.log_text());
}

#[test]
fn process_stats_over_ssh_see_the_same_processes() {
    let Some(keys) = SshKeys::make("ssh-keys-ps") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-ps", None);
    let dir = TempDir::new("ssh-ps");
    let kh = dir.write("known_hosts", &sshd.known_hosts_line(&keys.host_public));
    // A process of a name no other test uses, older than the second
    // ProcessStats wants.
    let probe = dir.path().join("ductd-probe");
    std::fs::copy("/bin/sleep", &probe).unwrap();
    let mut child = std::process::Command::new(&probe).arg("600").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let source = "duct.sources.linux.process.ProcessStats";
    let config = globals(&keys, &kh)
        + "sources:\n"
        + &remote("r", source, &sshd, "")
        + &format!("  - {{service: l, source: {source}}}\n");
    let (events, stderr) = once(&dir, &config);
    child.kill().ok();
    child.wait().ok();

    // Duct's name: the command's first word and its comm, each stripped
    // to word characters.
    let word = |t: &str| -> String { t.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect() };
    let key = format!("{}.ductdprobe", word(probe.to_str().unwrap()));
    let value = |n: &str| metric(get(&events, n, &stderr)).unwrap();
    for side in ["l", "r"] {
        assert!(value(&format!("{side}.user.root.mem")) > 0.0, "{side}: root's memory");
        assert!(
            value(&format!("{side}.proc.{key}.age")) >= 1.0,
            "{side}: the probe's age"
        );
        assert!(value(&format!("{side}.proc.{key}.cpu")) < 5.0, "{side}: sleep is idle");
    }
    // The same process, read both ways a moment apart.
    assert_eq!(value(&format!("l.proc.{key}.mem")), value(&format!("r.proc.{key}.mem")));
    assert!((value(&format!("l.proc.{key}.age")) - value(&format!("r.proc.{key}.age"))).abs() <= 2.0);
    // What lasts (this test, sshd, the probe) is there both ways; what
    // other tests start and stop meanwhile may not be.
    let (l, r) = (names_under(&events, "l.proc."), names_under(&events, "r.proc."));
    let common = l.iter().filter(|n| r.contains(n)).count();
    assert!(common * 2 > l.len(), "most names agree: here {l:?}, over SSH {r:?}");
    for ev in events.values() {
        assert_eq!(state(ev), "ok", "{ev}");
    }
    assert_eq!(sshd.logins(), 1, "{}", sshd.log_text());
}

#[test]
fn unknown_and_changed_host_keys_are_refused_as_critical_events() {
    let Some(keys) = SshKeys::make("ssh-keys-refuse") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-refuse", None);
    let dir = TempDir::new("ssh-refuse");
    // Another key for this host and port: a man in the middle, for all
    // the file can tell.
    let wrong = dir.write("wrong", &sshd.known_hosts_line(&keys.other_public));
    let config = globals(&keys, &wrong) + "sources:\n" + &remote("load", SIX[0].1, &sshd, "");
    let (events, stderr) = once(&dir, &config);
    let ev = get(&events, "load", &stderr);
    assert_eq!(state(ev), "critical", "{ev}");
    assert!(description(ev).contains("HOST KEY CHANGED"), "{ev}");
    assert!(description(ev).contains(&format!("[127.0.0.1]:{}", sshd.port)), "{ev}");
    assert!(metric(ev).is_none());
    assert!(stderr.contains("host key refused"), "logged:\n{stderr}");

    let unknown = dir.write("empty", "");
    let config = globals(&keys, &unknown) + "sources:\n" + &remote("load", SIX[0].1, &sshd, "");
    let (events, stderr) = once(&dir, &config);
    let ev = get(&events, "load", &stderr);
    assert_eq!(state(ev), "critical", "{ev}");
    assert!(description(ev).contains("is not in"), "{ev}");
    assert_eq!(
        std::fs::read_to_string(&unknown).unwrap(),
        "",
        "nothing recorded without accept-new"
    );
    assert_eq!(sshd.logins(), 0, "nothing was sent to an untrusted host");
}

#[test]
fn hashed_entries_are_trusted_and_accept_new_records_first_keys() {
    let Some(keys) = SshKeys::make("ssh-keys-hash") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-hash", None);
    let dir = TempDir::new("ssh-hash");
    let kh = dir.write("known_hosts", &sshd.known_hosts_line(&keys.host_public));
    let hashed = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .expect("ssh-keygen -H");
    assert!(hashed.status.success());
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "{text}");
    let config = globals(&keys, &kh) + "sources:\n" + &remote("load", SIX[0].1, &sshd, "");
    let (events, stderr) = once(&dir, &config);
    assert_eq!(state(get(&events, "load", &stderr)), "ok");

    // accept-new: a missing file is created with the key, hashed; the
    // next run trusts it without the option.
    let fresh = dir.path().join("new/known_hosts");
    let config = globals(&keys, &fresh) + "ssh_accept_new: true\nsources:\n" + &remote("load", SIX[0].1, &sshd, "");
    let (events, stderr) = once(&dir, &config);
    assert_eq!(state(get(&events, "load", &stderr)), "ok", "{stderr}");
    let recorded = std::fs::read_to_string(&fresh).expect("recorded");
    assert!(recorded.starts_with("|1|"), "{recorded}");
    assert!(recorded.contains(&keys.host_public), "{recorded}");
    let config = globals(&keys, &fresh) + "sources:\n" + &remote("load", SIX[0].1, &sshd, "");
    let (events, stderr) = once(&dir, &config);
    assert_eq!(state(get(&events, "load", &stderr)), "ok");
    assert_eq!(std::fs::read_to_string(&fresh).unwrap(), recorded, "recorded once");
}

#[test]
fn password_encrypted_key_and_inline_key_logins() {
    let Some(keys) = SshKeys::make("ssh-keys-login") else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-login", Some("s3cret-pw"));
    let dir = TempDir::new("ssh-login");
    let kh = dir.write("known_hosts", &sshd.known_hosts_line(&keys.host_public));
    let inline = std::fs::read_to_string(&keys.user_key).unwrap();
    let encrypted = keys.user_key_encrypted.display();
    let config = format!(
        "ssh_username: root\nssh_knownhosts_file: {kh}\nsources:\n{}{}{}",
        remote("pw", SIX[0].1, &sshd, ", ssh_password: s3cret-pw"),
        remote(
            "enc",
            SIX[0].1,
            &sshd,
            &format!(", ssh_keyfile: {encrypted}, ssh_keypass: '{}'", SshKeys::PASSPHRASE)
        ),
        remote(
            "inline",
            SIX[0].1,
            &sshd,
            &format!(", ssh_key: {}", serde_json::to_string(&inline).unwrap())
        ),
        kh = kh.display(),
    );
    let (events, stderr) = once(&dir, &config);
    for name in ["pw", "enc", "inline"] {
        let ev = get(&events, name, &stderr);
        assert_eq!(state(ev), "ok", "{name}: {ev}\n{stderr}");
    }
    assert_eq!(sshd.logins(), 3, "{}", sshd.log_text());

    // Wrong credentials fail the tick with the cause, and log in nowhere.
    let config = format!(
        "ssh_username: root\nssh_knownhosts_file: {kh}\nsources:\n{}{}",
        remote("badpw", SIX[0].1, &sshd, ", ssh_password: wrong"),
        remote(
            "badpass",
            SIX[0].1,
            &sshd,
            &format!(", ssh_keyfile: {encrypted}, ssh_keypass: wrong")
        ),
        kh = kh.display(),
    );
    let (code, events, stderr) = once_any(&dir, &config);
    assert_ne!(code, 0, "{stderr}");
    assert!(events.is_empty(), "{events:?}");
    assert!(
        stderr.contains("login refused: the server refused the password"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot decode the private key"), "{stderr}");
    assert_eq!(sshd.logins(), 3, "{}", sshd.log_text());
}

/// An `ssh-agent` in the foreground on a socket of its own, killed when
/// dropped.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Agent {
    fn start(binary: &Path, dir: &TempDir) -> Agent {
        let socket = dir.path().join("agent.sock");
        let child = std::process::Command::new(binary)
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { child, socket }
    }

    /// `ssh-add` with `args`, against this agent.
    fn add(&self, ssh_add: &Path, args: &[&std::ffi::OsStr]) {
        let out = std::process::Command::new(ssh_add)
            .args(args)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .expect("run ssh-add");
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ecdsa_key_and_agent_logins() {
    let Some(keys) = SshKeys::make("ssh-keys-agent") else {
        return;
    };
    let tools = ["ssh-keygen", "ssh-agent", "ssh-add"].map(|t| common::require_binary(t, "openssh-client"));
    let [Some(keygen), Some(agent_bin), Some(ssh_add)] = tools else {
        return;
    };
    let sshd = Sshd::start(&keys, "sshd-agent", None);
    let dir = TempDir::new("ssh-agent");
    let ecdsa = generate_key(&keygen, dir.path(), "user_ecdsa", "ecdsa", "");
    // The agent's key is RSA: signing through an agent must ask it for
    // rsa-sha2, as sshd refuses the SHA-1 `ssh-rsa` signature.
    let agent_key = generate_key(&keygen, dir.path(), "agent_rsa", "rsa", "");
    sshd.authorize(&[&ecdsa, &agent_key]);
    let agent = Agent::start(&agent_bin, &dir);
    agent.add(&ssh_add, &[agent_key.as_os_str()]);
    let kh = dir.write("known_hosts", &sshd.known_hosts_line(&keys.host_public));
    // No key or password on "agent": the agent's key is all it has.
    let config = format!(
        "ssh_username: root\nssh_knownhosts_file: {kh}\nsources:\n{}{}",
        remote("ecdsa", SIX[0].1, &sshd, &format!(", ssh_keyfile: {}", ecdsa.display())),
        remote("agent", SIX[0].1, &sshd, ""),
        kh = kh.display(),
    );
    let run = || {
        let (_, events, stderr) = once_env(&dir, &config, &[("SSH_AUTH_SOCK", &agent.socket)]);
        (events, stderr)
    };
    let (events, stderr) = run();
    for name in ["ecdsa", "agent"] {
        let ev = get(&events, name, &stderr);
        assert_eq!(state(ev), "ok", "{name}: {ev}\n{stderr}");
    }
    // Each login by the key meant for it, as sshd logged them.
    let log = sshd.log_text();
    let accepted = |kind: &str| {
        log.lines()
            .filter(|l| l.starts_with("Accepted publickey for root") && l.contains(&format!("ssh2: {kind} ")))
            .count()
    };
    assert_eq!((accepted("ECDSA"), accepted("RSA")), (1, 1), "{log}");

    // The agent emptied: the agent-only source is refused, saying what
    // it tried; the key-file one is unaffected.
    agent.add(&ssh_add, &["-D".as_ref()]);
    let (events, stderr) = run();
    assert_eq!(state(get(&events, "ecdsa", &stderr)), "ok", "{stderr}");
    assert!(!events.contains_key("agent"), "{events:?}");
    assert!(stderr.contains("the server refused the agent's keys"), "{stderr}");
}

#[test]
fn sources_recover_when_sshd_is_killed_and_restarted() {
    let Some(keys) = SshKeys::make("ssh-keys-restart") else {
        return;
    };
    let mut sshd = Sshd::start(&keys, "sshd-restart", None);
    let dir = TempDir::new("ssh-restart");
    let kh = dir.write("known_hosts", &sshd.known_hosts_line(&keys.host_public));
    let config = globals(&keys, &kh)
        + "outputs:\n  - output: duct.outputs.logger.Logger\nsources:\n"
        + &remote("load", SIX[0].1, &sshd, "")
        + &remote("mem", SIX[1].1, &sshd, "");
    let path = dir.write("duct.yml", &config);
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    let ok = |name: &'static str| move |v: &Value| service(v) == name && state(v) == "ok";
    agent.wait_for(Duration::from_secs(60), ok("load"));
    sshd.kill();
    // The sources notice: their reads fail while the host is down.
    assert!(
        agent.wait_for_log("cannot connect", Duration::from_secs(60)),
        "{}",
        agent.stderr()
    );
    sshd.restart();
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for name in ["load", "mem"] {
        agent.wait_for(Duration::from_secs(90), |v| {
            service(v) == name && state(v) == "ok" && v["time"].as_f64().unwrap_or(0.0) > restarted
        });
    }
    assert_eq!(
        sshd.logins(),
        2,
        "one connection before, one after:\n{}",
        sshd.log_text()
    );
    let (code, _) = agent.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
}

#[test]
fn a_port_that_accepts_and_never_answers_fails_the_connection_not_the_whole_timeout() {
    let Some(keys) = SshKeys::make("ssh-keys-silent") else {
        return;
    };
    // Accepts every connection and holds it without a word, as a hung
    // sshd or a black hole behind a balancer does.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let dir = TempDir::new("ssh-silent");
    let kh = dir.write("known_hosts", "");
    let config = globals(&keys, &kh)
        + &format!(
            "sources:\n  - {{service: load, source: {}, use_ssh: true, ssh_host: 127.0.0.1, ssh_port: {port}, timeout: 50}}\n",
            SIX[0].1
        );
    let (code, events, stderr) = once_any(&dir, &config);
    assert_ne!(code, 0, "{stderr}");
    assert!(events.is_empty(), "{events:?}");
    assert!(
        stderr.contains("cannot connect: the SSH handshake and login did not finish within 10.0 s"),
        "the attempt is bounded by the connect timeout, not the tick's 50 s:\n{stderr}"
    );
}

#[test]
fn twenty_hosts_of_six_sources_share_one_connection_each() {
    let Some(keys) = SshKeys::make("ssh-keys-twenty") else {
        return;
    };
    let daemons: Vec<Sshd> = (0..20)
        .map(|i| Sshd::start(&keys, &format!("sshd-twenty-{i}"), None))
        .collect();
    let dir = TempDir::new("ssh-twenty");
    let kh_text: String = daemons.iter().map(|d| d.known_hosts_line(&keys.host_public)).collect();
    let kh = dir.write("known_hosts", &kh_text);
    let mut config = globals(&keys, &kh) + "sources:\n";
    for (i, d) in daemons.iter().enumerate() {
        for (name, source) in SIX {
            config.push_str(&remote(&format!("h{i}.{name}"), source, d, ""));
        }
    }
    let started = Instant::now();
    let (code, events, stderr) = once_any(&dir, &config);
    assert_eq!(code, 0, "{stderr}\nhost 0:\n{}", daemons[0].log_text());
    eprintln!("20 hosts x 6 sources over SSH: ductd once took {:?}", started.elapsed());
    for (i, d) in daemons.iter().enumerate() {
        for (name, _) in SIX {
            assert!(
                !names_under(&events, &format!("h{i}.{name}")).is_empty(),
                "no h{i}.{name}\n{stderr}"
            );
        }
        assert_eq!(
            d.logins(),
            1,
            "host {i}: one connection for six sources:\n{}",
            d.log_text()
        );
    }
}

#[test]
fn duct_configurations_with_use_ssh_pass_check() {
    let dir = TempDir::new("ssh-check");
    let path = dir.write(
        "duct.yml",
        "ssh_username: monitor\nssh_keyfile: /etc/duct/id_ed25519\nssh_port: 2222\n\
         toolbox:\n  remote_host:\n    sources:\n\
         \x20     - {service: load, source: duct.sources.linux.basic.LoadAverage, use_ssh: True}\n\
         \x20     - {service: cpu, source: duct.sources.linux.basic.CPU, use_ssh: True}\n\
         \x20     - {service: smart, source: duct.sources.linux.sensors.SMART, use_ssh: True}\n\
         \x20     - {service: ps, source: duct.sources.linux.process.ProcessStats, use_ssh: True}\n\
         blueprint:\n  - toolbox: remote_host\n    sets:\n      ssh_host: [web1, web2, db1]\n\
         sources:\n  - {service: one, source: duct.sources.linux.basic.Memory, use_ssh: True, ssh_host: web9, ssh_password: pw}\n\
         \x20 - {service: dns, source: duct.sources.unbound.Stats, use_ssh: True, ssh_host: ns1}\n\
         \x20 - {service: mq, source: duct.sources.rabbitmq.Queues, vhost: /, use_ssh: True, ssh_host: mq1}\n\
         \x20 - {service: celery, source: duct.sources.redis.Queues, queue: celery, clipath: /usr/bin/redis-cli, use_ssh: True, ssh_host: mq1}\n\
         \x20 - {service: mail, source: duct.sources.postfix.Postfix, use_ssh: True, ssh_host: mx1}\n\
         \x20 - {service: vpn, source: duct.sources.linux.ipsec.StrongSwan, use_ssh: True, ssh_host: gw1}\n",
    );
    let (code, stdout, stderr) = ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let bad = dir.write(
        "bad.yml",
        "sources:\n  - {service: web, source: duct.sources.network.HTTP, url: 'http://x/', use_ssh: true, ssh_host: h}\n\
         \x20 - {service: nohost, source: duct.sources.linux.basic.Memory, use_ssh: true}\n\
         \x20 - {service: mq, source: duct.sources.rabbitmq.Queues, url: 'http://mq1:15672', use_ssh: true, ssh_host: mq1}\n\
         \x20 - {service: rtls, source: duct.sources.redis.Queues, tls: true, use_ssh: true, ssh_host: mq1}\n",
    );
    let (code, stdout, stderr) = ductd_output(&["check", "-c", bad.to_str().unwrap()]);
    let text = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("`duct.sources.network.HTTP` cannot run over SSH"),
        "{text}"
    );
    assert!(text.contains("LoadAverage"), "the message lists what can: {text}");
    assert!(text.contains("needs `ssh_host`"), "{text}");
    assert!(
        text.contains("runs rabbitmqctl on ssh_host, while the management API is read from this machine"),
        "{text}"
    );
    assert!(
        text.contains("redis-cli on ssh_host would need its own certificates"),
        "{text}"
    );
}
