//! `duct.sources.snmp.SNMP` end to end against net-snmp's snmpd, started
//! here on a free loopback port with a configuration written in a
//! temporary directory (v2c community `ductpub`). What ductd reads is
//! compared with what net-snmp's `snmpwalk` reads of the same OIDs just
//! before and just after; an agent that does not answer and a wrong
//! community give a critical event naming the cause, and the other
//! sources carry on.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ductd_output, free_port, metric, require_binary, service, state, Running, Server, TempDir};
use serde_json::Value;

const COMMUNITY: &str = "ductpub";
const V3_USER: &str = "ductv3";
const V3_AUTH: &str = "ductauthpass";
const V3_PRIV: &str = "ductprivpass";

/// snmpd on 127.0.0.1:PORT (UDP, and TCP so that readiness can be seen),
/// answering once `snmpget` gets an answer.
fn start_snmpd() -> Option<Server> {
    let snmpd = require_binary("snmpd", "snmpd")?;
    require_binary("snmpwalk", "snmp")?;
    let dir = TempDir::new("snmpd");
    let conf = dir.write(
        "snmpd.conf",
        &format!(
            "rocommunity {COMMUNITY} 127.0.0.1\ncreateUser {V3_USER} SHA {V3_AUTH} AES {V3_PRIV}\nrouser {V3_USER} priv\n"
        ),
    );
    let port = free_port();
    let mut cmd = Command::new(snmpd);
    cmd.env("MIBS", "")
        .env("SNMP_PERSISTENT_DIR", dir.path())
        .args(["-f", "-Lo", "-C", "-c"])
        .arg(&conf)
        .arg(format!("udp:127.0.0.1:{port},tcp:127.0.0.1:{port}"));
    let server = Server::spawn(cmd, port, dir, "snmpd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while walk(port, "1.3.6.1.2.1.1.3").is_empty() {
        assert!(Instant::now() < deadline, "snmpd on {port} does not answer snmpwalk");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(server)
}

/// `snmpwalk -v2c` of `oid`: the value of each row by its last arc (the
/// ifIndex), strings unquoted.
fn walk(port: u16, oid: &str) -> BTreeMap<u32, String> {
    let out = Command::new("snmpwalk")
        .env("MIBS", "")
        .args(["-On", "-Oq", "-r1", "-t1", "-v2c", "-c", COMMUNITY])
        .arg(format!("127.0.0.1:{port}"))
        .arg(oid)
        .output()
        .expect("run snmpwalk");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            let index = name.rsplit('.').next()?.parse().ok()?;
            Some((index, value.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// What snmpwalk reads for each (ifDescr, Duct key) over v2c: the HC
/// counters where there are any, as ductd is to prefer them.
fn reference(port: u16) -> HashMap<(String, String), u64> {
    let descr = walk(port, "1.3.6.1.2.1.2.2.1.2");
    let column = |oid: &str| -> BTreeMap<u32, u64> {
        walk(port, oid)
            .into_iter()
            .filter_map(|(i, v)| Some((i, v.parse().ok()?)))
            .collect()
    };
    let keys: [(&str, &[&str]); 10] = [
        ("ifInOctets", &["1.3.6.1.2.1.31.1.1.1.6"]),
        ("ifInUcastPkts", &["1.3.6.1.2.1.31.1.1.1.7"]),
        ("ifInNUcastPkts", &["1.3.6.1.2.1.31.1.1.1.8", "1.3.6.1.2.1.31.1.1.1.9"]),
        ("ifInErrors", &["1.3.6.1.2.1.2.2.1.14"]),
        ("ifInDiscards", &["1.3.6.1.2.1.2.2.1.13"]),
        ("ifOutOctets", &["1.3.6.1.2.1.31.1.1.1.10"]),
        ("ifOutUcastPkts", &["1.3.6.1.2.1.31.1.1.1.11"]),
        (
            "ifOutNUcastPkts",
            &["1.3.6.1.2.1.31.1.1.1.12", "1.3.6.1.2.1.31.1.1.1.13"],
        ),
        ("ifOutErrors", &["1.3.6.1.2.1.2.2.1.20"]),
        ("ifOutDiscards", &["1.3.6.1.2.1.2.2.1.19"]),
    ];
    let mut out = HashMap::new();
    for (key, oids) in keys {
        let columns: Vec<BTreeMap<u32, u64>> = oids.iter().map(|o| column(o)).collect();
        for (index, name) in &descr {
            let parts: Option<Vec<u64>> = columns.iter().map(|c| c.get(index).copied()).collect();
            if let Some(parts) = parts {
                out.insert((name.clone(), key.to_string()), parts.iter().sum());
            }
        }
    }
    out
}

/// Runs `ductd once` on `config`; the events by service.
fn once(dir: &TempDir, config: &str) -> HashMap<String, Value> {
    let path = dir.write("duct.yml", config);
    let (code, stdout, stderr) = ductd_output(&["once", "-c", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "ductd once failed:\n{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (service(&v).to_string(), v))
        .collect()
}

fn description(ev: &Value) -> &str {
    ev["description"].as_str().unwrap_or("")
}

/// The raw counter in a description (`SNMP interface lo ifInOctets=123`).
fn raw(ev: &Value) -> u64 {
    let d = description(ev);
    d.rsplit('=')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {d:?}"))
}

#[test]
fn interface_counters_agree_with_snmpwalk_and_faults_are_critical() {
    let Some(snmpd) = start_snmpd() else {
        return;
    };
    let port = snmpd.port;
    // Nothing answers there: a UDP port nobody has.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let before = reference(port);
    assert!(!before.is_empty(), "snmpwalk read no interface counters");
    let dir = TempDir::new("snmp-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: sw, source: duct.sources.snmp.SNMP, timeout: 5, ip: 127.0.0.1, port: {port}, community: {COMMUNITY}}}
  - {{service: old, source: duct.sources.snmp.SNMP, timeout: 5, ip: 127.0.0.1, port: {port}, community: {COMMUNITY}, version: 1}}
  - {{service: wrong, source: duct.sources.snmp.SNMP, ip: 127.0.0.1, port: {port}, community: nope, request_timeout: 0.3, retries: 1}}
  - {{service: down, source: duct.sources.snmp.SNMP, ip: 127.0.0.1, port: {silent_port}, request_timeout: 0.3, retries: 0}}
  - {{service: v3, source: duct.sources.snmp.SNMP, timeout: 5, port: {port}, version: 3, username: {V3_USER}, auth_password: {V3_AUTH}, priv_password: {V3_PRIV}}}
  - {{service: v3auth, source: duct.sources.snmp.SNMP, timeout: 5, port: {port}, version: 3, username: {V3_USER}, auth_password: not-the-password, priv_password: {V3_PRIV}}}
  - {{service: v3user, source: duct.sources.snmp.SNMP, timeout: 5, port: {port}, version: 3, username: nobody, auth_password: {V3_AUTH}, priv_password: {V3_PRIV}}}
"
        ),
    );
    let after = reference(port);

    // v2c: every counter snmpwalk has for an interface present in both
    // walks, its raw value between the two walks', and a rate.
    let mut checked = 0;
    for ((iface, key), low) in &before {
        let Some(high) = after.get(&(iface.clone(), key.clone())) else {
            continue;
        };
        let name = format!("sw.{iface}.{key}");
        let ev = events.get(&name).unwrap_or_else(|| {
            let mut names: Vec<&String> = events.keys().collect();
            names.sort();
            panic!("no event {name}; got {names:?}")
        });
        assert_eq!(state(ev), "ok", "{ev}");
        let value = raw(ev);
        assert!(
            *low <= value && value <= *high,
            "{name}: snmpwalk {low}..{high}, ductd {value}"
        );
        let rate = metric(ev).unwrap_or_else(|| panic!("{name} has no rate: {ev}"));
        assert!(rate >= 0.0, "{ev}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} counters compared");
    // (snmpd caches its interface figures for a few seconds, so the two
    // ticks of `once`, a second apart, mostly see the same values: rates
    // of 0, which is right.)
    // Only interfaces snmpwalk knows, only Duct's keys.
    for name in events.keys().filter(|n| n.starts_with("sw.")) {
        let (iface, key) = name["sw.".len()..].rsplit_once('.').expect("iface.key");
        let pair = (iface.to_string(), key.to_string());
        assert!(before.contains_key(&pair) || after.contains_key(&pair), "{name}");
    }

    // v1: the same names, from the 32-bit ifTable counters.
    let lo = &events["old.lo.ifInOctets"];
    assert_eq!(state(lo), "ok", "{lo}");
    let v1_in = walk(port, "1.3.6.1.2.1.2.2.1.10");
    let lo_index = walk(port, "1.3.6.1.2.1.2.2.1.2")
        .into_iter()
        .find(|(_, n)| n == "lo")
        .map(|(i, _)| i)
        .expect("lo");
    let now: u64 = v1_in[&lo_index].parse().expect("a number");
    assert!(raw(lo) <= now && raw(lo) >= before[&("lo".into(), "ifInOctets".into())] % (1 << 32));
    assert!(
        events.contains_key("old.eth0.ifOutErrors") || !before.contains_key(&("eth0".into(), "ifOutErrors".into()))
    );

    // SNMPv3 authPriv (SHA/AES): the same counters, HC preferred.
    let lo_pair = ("lo".to_string(), "ifInOctets".to_string());
    let v3 = &events["v3.lo.ifInOctets"];
    assert_eq!(state(v3), "ok", "{v3}");
    assert!(before[&lo_pair] <= raw(v3) && raw(v3) <= after[&lo_pair], "{v3}");
    assert_eq!(state(&events["v3auth"]), "critical");
    assert!(
        description(&events["v3auth"]).contains("usmStatsWrongDigests"),
        "{}",
        events["v3auth"]
    );
    assert!(
        description(&events["v3user"]).contains("usmStatsUnknownUserNames"),
        "{}",
        events["v3user"]
    );

    // Faults: critical, no metric, the cause named.
    let wrong = &events["wrong"];
    assert_eq!(state(wrong), "critical", "{wrong}");
    assert!(wrong.get("metric").is_none_or(Value::is_null), "{wrong}");
    assert!(
        description(wrong).contains(&format!("no answer from 127.0.0.1:{port} after 2 tries")),
        "{wrong}"
    );
    assert!(description(wrong).contains("credentials"), "{wrong}");
    let down = &events["down"];
    assert_eq!(state(down), "critical", "{down}");
    assert!(
        description(down).contains(&format!("no answer from 127.0.0.1:{silent_port} after 1 tries")),
        "{down}"
    );
    assert!(!events.keys().any(|n| n.starts_with("wrong.") || n.starts_with("down.")));

    // A running agent: the failing sources fail at every tick, the good
    // one keeps giving rates, and the agent stops cleanly.
    let path = dir.write(
        "daemon.yml",
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: wrong, source: duct.sources.snmp.SNMP, port: {port}, community: nope, request_timeout: 0.2, retries: 0}}
  - {{service: sw, source: duct.sources.snmp.SNMP, port: {port}, community: {COMMUNITY}}}
"
        ),
    );
    let agent = Running::start(&["-c", path.to_str().expect("utf-8 path")]);
    let seen = |n: usize, what: &str, pred: &dyn Fn(&Value) -> bool| {
        for _ in 0..n {
            agent.wait_for(Duration::from_secs(15), |e| pred(e));
        }
        eprintln!("{what}: seen {n} times");
    };
    seen(3, "wrong critical", &|e| {
        service(e) == "wrong" && state(e) == "critical"
    });
    seen(2, "sw rate", &|e| {
        service(e) == "sw.lo.ifInOctets" && metric(e).is_some()
    });
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    drop(silent);
}

/// snmpsimd replaying `tests/data/snmp/NAME.snmprec` (community NAME) on
/// a free loopback UDP port.
struct Simulator {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_snmpsim(name: &str) -> Option<Simulator> {
    let snmpsimd = require_binary("snmpsimd", "snmpsim")?;
    require_binary("snmpget", "snmp")?;
    let dir = TempDir::new("snmpsim");
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::create_dir_all(&cache).expect("cache dir");
    // snmpsimd drops root for `nobody`, which must write its cache.
    use std::os::unix::fs::PermissionsExt;
    for d in [dir.path(), data.as_path(), cache.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let recording = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/snmp/{name}.snmprec"));
    std::fs::copy(&recording, data.join(format!("{name}.snmprec"))).expect("copy the recording");
    let port = free_port();
    let child = Command::new(snmpsimd)
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
        .args([
            "--logging-method=null",
            "--process-user=nobody",
            "--process-group=nogroup",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start snmpsimd");
    let sim = Simulator { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    while snmpget(port, name, "1.3.6.1.2.1.1.3.0").is_none() {
        assert!(Instant::now() < deadline, "snmpsimd on {port} does not answer");
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(sim)
}

/// `snmpget -v2c` of one OID: its value, or `None` without an answer.
fn snmpget(port: u16, community: &str, oid: &str) -> Option<String> {
    let out = Command::new("snmpget")
        .env("MIBS", "")
        .args(["-On", "-Oqv", "-r0", "-t1", "-v2c", "-c", community])
        .arg(format!("127.0.0.1:{port}"))
        .arg(oid)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[test]
fn cisco837_adsl_figures_agree_with_snmpget_on_a_replayed_recording() {
    let Some(sim) = start_snmpsim("cisco837") else {
        return;
    };
    let port = sim.port;
    let get = |oid: &str| -> f64 {
        snmpget(port, "cisco837", oid)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("snmpget {oid}"))
    };
    let dir = TempDir::new("cisco837-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: adsl-gw, source: duct.sources.snmp.SNMPCisco837, port: {port}, community: cisco837}}
"
        ),
    );
    let figure = |name: &str| -> f64 {
        let ev = events
            .get(&format!("adsl-gw.{name}"))
            .unwrap_or_else(|| panic!("no adsl-gw.{name}: {:?}", events.keys().collect::<Vec<_>>()));
        assert_eq!(state(ev), "ok", "{ev}");
        metric(ev).unwrap_or_else(|| panic!("no metric: {ev}"))
    };
    assert_eq!(figure("adsl.rxrate"), get("1.3.6.1.2.1.10.94.1.1.4.1.2.2"));
    assert_eq!(figure("adsl.txrate"), get("1.3.6.1.2.1.10.94.1.1.5.1.2.2"));
    assert_eq!(figure("adsl.margin"), get("1.3.6.1.2.1.10.94.1.1.3.1.4.2") / 10.0);
    assert_eq!(figure("adsl.attn"), get("1.3.6.1.2.1.10.94.1.1.3.1.5.2") / 10.0);
    assert_eq!(figure("adsl.outpwr"), get("1.3.6.1.2.1.10.94.1.1.3.1.7.2") / 10.0);
    // The interface table too, under the recording's ifDescr; a replayed
    // counter does not move: a rate of 0, and the raw value snmpget reads.
    let atm = &events["adsl-gw.ATM0.ifInOctets"];
    assert_eq!(metric(atm), Some(0.0), "{atm}");
    assert_eq!(raw(atm) as f64, get("1.3.6.1.2.1.2.2.1.10.2"));
    assert!(events.contains_key("adsl-gw.Dialer1.ifOutErrors"));
    assert!(events.contains_key("adsl-gw.Ethernet0.ifInNUcastPkts"));

    // The plain SNMP source against an agent without ADSL: no adsl.*,
    // and SNMPCisco837 there is critical, naming what is missing.
    let Some(snmpd) = start_snmpd() else {
        return;
    };
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: noadsl, source: duct.sources.snmp.SNMPCisco837, port: {}, community: {COMMUNITY}}}
",
            snmpd.port
        ),
    );
    let ev = &events["noadsl"];
    assert_eq!(state(ev), "critical", "{ev}");
    assert!(description(ev).contains("has no adslAtucChanCurrTxRate"), "{ev}");
}

#[test]
fn raritan_px_sensors_agree_with_snmpget_on_a_replayed_recording() {
    let Some(sim) = start_snmpsim("raritan-px") else {
        return;
    };
    let port = sim.port;
    let dir = TempDir::new("raritan-once");
    let events = once(
        &dir,
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: pdu, source: duct.sources.power.raritan_px.RaritanPX, port: {port}, community: raritan-px, mib_path: /nonexistent}}
"
        ),
    );
    let sensors = [
        ("voltage", 4),
        ("current", 1),
        ("power", 5),
        ("apparent_power", 6),
        ("pf", 7),
        ("energy", 8),
    ];
    let mut checked = 0;
    for (label, table) in [("outlet", "4"), ("inlet", "2")] {
        for n in 1..=3 {
            for (metric_name, sensor) in sensors {
                let oid = format!("1.3.6.1.4.1.13742.6.5.{table}.3.1.4.1.{n}.{sensor}");
                let name = format!("pdu.{label}.{n}.{metric_name}");
                match snmpget(port, "raritan-px", &oid).and_then(|v| v.parse::<f64>().ok()) {
                    Some(want) => {
                        let ev = events.get(&name).unwrap_or_else(|| panic!("no {name}"));
                        assert_eq!(state(ev), "ok", "{ev}");
                        assert_eq!(metric(ev), Some(want), "{name}: {ev}");
                        checked += 1;
                    }
                    None => assert!(!events.contains_key(&name), "{name} without {oid}"),
                }
            }
        }
    }
    assert_eq!(checked, 3 * 6 + 6);
    // onOff (sensor type 14) is not one of Duct's figures.
    assert!(!events.keys().any(|n| n.contains("onOff") || n.ends_with(".14")));
    assert!(description(&events["pdu.outlet.3.current"]).starts_with("Raritan PX outlet-3 current=47"));
}
