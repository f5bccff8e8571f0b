//! The running agent end to end: routes, triggers, includes and
//! blueprints, shutdown flushing, and reload.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{metric, service, state, Running, TempDir};
use serde_json::Value;

fn read_events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn services(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(|e| service(e).to_string()).collect()
}

#[test]
fn routes_send_each_source_where_it_is_told() {
    let dir = TempDir::new("routes");
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    let config = format!(
        "interval: 0.1
outputs:
  - output: duct.outputs.logger.Logger
    name: a
    logfile: {}
    interval: 0.1
  - output: duct.outputs.logger.Logger
    name: b
    logfile: {}
    interval: 0.1
sources:
  - service: only-a
    source: duct.sources.generator.Function
    route: a
  - service: both
    source: duct.sources.generator.Function
    route: [a, b]
  - service: everywhere
    source: duct.sources.generator.Function
    route: \"*\"
",
        a.display(),
        b.display()
    );
    let path = dir.write("duct.yml", &config);
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1200));
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let in_a = services(&read_events(&a));
    let in_b = services(&read_events(&b));
    assert_eq!(in_a, ["both", "everywhere", "only-a"].map(String::from).into());
    assert_eq!(in_b, ["both", "everywhere"].map(String::from).into());
}

#[test]
fn default_route_applies_to_sources_without_route() {
    let dir = TempDir::new("default-route");
    let a = dir.path().join("a.log");
    let config = format!(
        "interval: 0.1
default_route: a
outputs:
  - output: duct.outputs.logger.Logger
    name: a
    logfile: {}
  - output: duct.outputs.logger.Logger
    name: stdout
sources:
  - service: routed-by-default
    source: duct.sources.generator.Function
",
        a.display()
    );
    let path = dir.write("duct.yml", &config);
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    let stdout_events = agent.collect_for(Duration::from_millis(1200));
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(stdout_events.is_empty(), "stdout got {stdout_events:?}");
    assert!(!read_events(&a).is_empty());
}

#[test]
fn triggers_set_warning_and_critical_states() {
    let dir = TempDir::new("triggers");
    let path = dir.write(
        "duct.yml",
        "interval: 0.05
outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.1
sources:
  - service: wave
    source: duct.sources.generator.Function
    function: x
    dx: 0.1
    warning:
      wave: \"> 0.3\"
    critical:
      wave: \"> 0.5 and service < 0.75\"
",
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    let events = agent.wait_for(Duration::from_secs(10), |e| metric(e).unwrap_or(0.0) > 0.95);
    assert!(events.len() >= 9, "{events:?}");
    for ev in &events {
        let m = metric(ev).unwrap();
        let expected = if m > 0.5 && m < 0.75 {
            "critical"
        } else if m > 0.3 {
            "warning"
        } else {
            "ok"
        };
        assert_eq!(state(ev), expected, "metric {m}");
    }
}

#[test]
fn sigterm_flushes_everything_queued() {
    let dir = TempDir::new("flush");
    let log = dir.path().join("events.log");
    // The output would only flush after 60 s: everything it holds at
    // SIGTERM must come out in the final flush, with no gap.
    let config = format!(
        "interval: 0.02
outputs:
  - output: duct.outputs.logger.Logger
    logfile: {}
    interval: 60
sources:
  - service: counter
    source: duct.sources.generator.Function
    function: x
    dx: 1
",
        log.display()
    );
    let path = dir.write("duct.yml", &config);
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    assert!(agent.wait_for_log("agent started", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(800));
    assert!(read_events(&log).is_empty(), "nothing is flushed before the interval");
    let (code, _) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let values: Vec<f64> = read_events(&log).iter().filter_map(metric).collect();
    assert!(values.len() >= 10, "only {} events", values.len());
    let expected: Vec<f64> = (1..=values.len()).map(|i| i as f64).collect();
    assert_eq!(values, expected, "every tick's event, in order, none lost");
}

#[test]
fn includes_and_blueprints_expand_into_running_sources() {
    let dir = TempDir::new("blueprints");
    dir.write(
        "conf.d/extra.yml",
        "sources:\n  - service: included\n    source: duct.sources.generator.Function\n",
    );
    let path = dir.write(
        "duct.yml",
        "interval: 0.1
include_path: conf.d
outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.1
toolbox:
  waves:
    defaults: {source: duct.sources.generator.Function}
    sources:
      - service: sine
        function: sin(x)
      - service: cosine
        function: cos(x)
blueprint:
  - toolbox: waves
    sets:
      hostname: [web-1, web-2]
",
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    let want: BTreeSet<(String, String)> = [
        ("web-1", "sine"),
        ("web-1", "cosine"),
        ("web-2", "sine"),
        ("web-2", "cosine"),
    ]
    .iter()
    .map(|(h, s)| (h.to_string(), s.to_string()))
    .collect();
    let events = agent.collect_for(Duration::from_millis(1500));
    let seen: BTreeSet<(String, String)> = events
        .iter()
        .map(|e| (e["host"].as_str().unwrap_or("").to_string(), service(e).to_string()))
        .collect();
    for pair in &want {
        assert!(seen.contains(pair), "missing {pair:?} in {seen:?}");
    }
    assert!(events.iter().any(|e| service(e) == "included"));
}

#[test]
fn sighup_reloads_changed_sources_and_keeps_the_rest() {
    let dir = TempDir::new("reload");
    let first = "interval: 0.1
outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.1
sources:
  - service: steady
    source: duct.sources.generator.Function
    function: x
    dx: 1
  - service: old
    source: duct.sources.generator.Function
";
    let path = dir.write("duct.yml", first);
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    agent.wait_for(Duration::from_secs(10), |e| service(e) == "old");
    // Sources on different workers reach the output through different
    // router shards, in no set order: make sure steady's first tick is out.
    agent.wait_for(Duration::from_secs(10), |e| {
        service(e) == "steady" && metric(e).is_some_and(|m| m >= 2.0)
    });

    let second = first.replace("service: old", "service: new");
    std::fs::write(&path, second).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        agent.wait_for_log("configuration reloaded", Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    let log = agent.stderr();
    assert!(log.contains("sources_kept=1"), "{log}");
    assert!(log.contains("sources_started=1"), "{log}");
    assert!(log.contains("sources_stopped=1"), "{log}");
    let after = agent.wait_for(Duration::from_secs(10), |e| service(e) == "new");
    // The unchanged source kept its state: its counter did not restart at 1.
    let steady: Vec<f64> = after
        .iter()
        .filter(|e| service(e) == "steady")
        .filter_map(metric)
        .collect();
    assert!(steady.iter().all(|&m| m > 1.0), "{steady:?}");

    // A broken file is refused and the running configuration goes on.
    std::fs::write(&path, "sources: [\n").unwrap();
    agent.signal(libc::SIGHUP);
    assert!(agent.wait_for_log("reload refused", Duration::from_secs(10)));
    let later = agent.collect_for(Duration::from_millis(500));
    assert!(later.iter().any(|e| service(e) == "new"), "{later:?}");
    assert!(!later.iter().any(|e| service(e) == "old"));
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[test]
fn a_failing_source_is_logged_and_the_others_go_on() {
    let dir = TempDir::new("failing");
    let path = dir.write(
        "duct.yml",
        "interval: 0.1
outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.1
sources:
  - service: broken
    source: duct.sources.generator.Function
    function: log(0 * x)
  - service: fine
    source: duct.sources.generator.Function
",
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    let events = agent.collect_for(Duration::from_millis(1000));
    assert!(events.iter().any(|e| service(e) == "fine"));
    assert!(!events.iter().any(|e| service(e) == "broken"));
    assert!(agent.wait_for_log("tick failed", Duration::from_secs(5)));
    let log = agent.stderr();
    assert!(log.contains("broken"), "the error names the service: {log}");
}

#[test]
fn start_up_code_is_handed_back_once_running() {
    let dir = TempDir::new("pageout");
    let path = dir.write(
        "duct.yml",
        "interval: 0.5\noutputs:\n  - output: duct.outputs.null.Null\nsources:\n  - {service: w, source: duct.sources.generator.Function}\n",
    );
    // A copy of the binary of its own: pages mapped by other ductd
    // processes (the other tests) are shared, and the kernel leaves shared
    // pages where they are.
    let exe = dir.path().join("ductd");
    std::fs::copy(common::ductd_bin(), &exe).unwrap();
    std::fs::File::open(&exe).unwrap().sync_all().unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["-c", path.to_str().unwrap()]);
    let agent = Running::start_with(cmd);
    assert!(agent.wait_for_log("agent started", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(7000));
    let (rss, peak) = (
        common::status_kib(agent.pid(), "VmRSS:"),
        common::status_kib(agent.pid(), "VmHWM:"),
    );
    assert!(
        rss + 1024 < peak,
        "resident {rss} KiB, peak {peak} KiB: the code pages stayed"
    );
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "the agent runs on after paging its code out");
}
