//! Exec plugins, from a plugin directory, as a user writes them: JSON lines,
//! a number, Nagios output, streams — and every way a plugin can misbehave.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{ductd_output, metric, service, state, Running, TempDir};
use serde_json::Value;

/// Writes an executable script into `dir/name`.
fn plugin(dir: &Path, name: &str, body: &str, mode: u32) {
    let path = dir.join(name);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A configuration with `base_path` set to `dir/plugins` and the sources given.
fn config(dir: &TempDir, sources: &str) -> String {
    let text = format!(
        "base_path: {}\noutputs:\n  - output: duct.outputs.logger.Logger\n    interval: 0.1\nsources:\n{sources}",
        dir.path().join("plugins").display()
    );
    dir.write("duct.yml", &text).to_str().unwrap().to_string()
}

fn once(path: &str) -> (i32, Vec<Value>, String) {
    let (code, out, err) = ductd_output(&["once", "-c", path]);
    let events = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (code, events, err)
}

#[test]
fn json_lines_fill_missing_fields_from_the_config() {
    let dir = TempDir::new("exec-json");
    plugin(
        &dir.path().join("plugins"),
        "hello",
        r#"echo '{"metric": 3}'; echo '{"prefix": "rx", "metric": 1.5, "state": "warning", "attributes": {"dc": "ams"}}'"#,
        0o755,
    );
    let path = config(
        &dir,
        "  - service: greet\n    source: hello.HelloWorld\n    hostname: box-1\n    tags: [a]\n    ttl: 30\n    attributes: {rack: \"7\"}\n",
    );
    let (code, events, err) = once(&path);
    assert_eq!(code, 0, "{err}");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["service"], "greet");
    assert_eq!(events[0]["host"], "box-1");
    assert_eq!(events[0]["metric"], 3);
    assert_eq!(events[0]["state"], "ok");
    assert_eq!(events[0]["ttl"], 30.0);
    assert_eq!(events[0]["tags"], serde_json::json!(["a"]));
    assert_eq!(events[1]["service"], "greet.rx");
    assert_eq!(events[1]["state"], "warning");
    assert_eq!(events[1]["attributes"], serde_json::json!({"rack": "7", "dc": "ams"}));
}

#[test]
fn a_number_nagios_output_args_env_and_the_path_option() {
    let dir = TempDir::new("exec-forms");
    let plugins = dir.path().join("plugins");
    plugin(&plugins, "number", "echo 42", 0o755);
    plugin(
        &plugins,
        "check_disk",
        "echo \"DISK WARNING - $1 at $LEVEL% | used=$LEVEL%;80;90;0;100 'free space'=3GB\"; exit 1",
        0o755,
    );
    let own = dir.path().join("own");
    plugin(&own, "number", "echo 7", 0o755);
    let path = config(
        &dir,
        &format!(
            "  - {{service: n, source: number.Plugin}}\n  - service: disk\n    source: check_disk\n    args: [/srv]\n    env: {{LEVEL: \"85\"}}\n  - {{service: mine, source: number.Plugin, path: {}}}\n",
            own.display()
        ),
    );
    let (code, events, err) = once(&path);
    assert_eq!(code, 0, "{err}");
    let by = |s: &str| {
        events
            .iter()
            .find(|e| service(e) == s)
            .unwrap_or_else(|| panic!("no {s} in {events:?}"))
    };
    assert_eq!(by("n")["metric"], 42);
    assert_eq!(by("mine")["metric"], 7, "the source's path comes before base_path");
    let disk = by("disk");
    assert_eq!(state(disk), "warning");
    assert_eq!(disk["description"], "DISK WARNING - /srv at 85%");
    assert_eq!(by("disk.used")["metric"], 85.0);
    assert_eq!(by("disk.free space")["metric"], 3.0);
}

#[test]
fn exit_codes_map_to_states() {
    let dir = TempDir::new("exec-codes");
    let plugins = dir.path().join("plugins");
    for (name, code) in [("c0", 0), ("c1", 1), ("c2", 2), ("c3", 3), ("c9", 9)] {
        plugin(
            &plugins,
            name,
            &format!("echo \"CHECK - status {code}\"; exit {code}"),
            0o755,
        );
    }
    let sources: String = ["c0", "c1", "c2", "c3", "c9"]
        .iter()
        .map(|n| format!("  - {{service: {n}, source: {n}}}\n"))
        .collect();
    let (code, events, err) = once(&config(&dir, &sources));
    assert_eq!(code, 0, "{err}");
    let states: Vec<&str> = events.iter().map(state).collect();
    assert_eq!(states, ["ok", "warning", "critical", "unknown", "unknown"]);
}

#[test]
fn missing_and_non_executable_plugins_are_refused_clearly() {
    let dir = TempDir::new("exec-refuse");
    let plugins = dir.path().join("plugins");
    plugin(&plugins, "noexec", "echo 1", 0o644);
    std::fs::create_dir_all(plugins.join("adir")).unwrap();
    let path = config(
        &dir,
        "  - {service: a, source: nothere.Plugin}\n  - {service: b, source: noexec}\n  - {service: c, source: adir}\n",
    );
    let (code, _, err) = ductd_output(&["check", "-c", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sources[0].source: unknown source `nothere.Plugin`; no plugin found either (looked for"),
        "{err}"
    );
    assert!(err.contains(&format!("{}/nothere", plugins.display())), "{err}");
    assert!(err.contains("noexec is not an executable regular file"), "{err}");
    assert!(err.contains("adir is not an executable regular file"), "{err}");
}

#[test]
fn a_world_writable_plugin_is_a_warning() {
    let dir = TempDir::new("exec-ww");
    plugin(&dir.path().join("plugins"), "open", "echo 1", 0o777);
    let path = config(&dir, "  - {service: a, source: open}\n");
    let (code, _, err) = ductd_output(&["check", "-c", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is world-writable"), "{err}");
    let (code, _, _) = ductd_output(&["check", "--strict", "-c", &path]);
    assert_eq!(code, 1);
}

/// A plugin that leaves a background child holding its stdout used to fail
/// every tick as "took longer … and was killed", its `7` lost.
#[test]
fn a_plugin_that_leaves_a_child_behind_reports_and_its_child_is_killed() {
    let dir = TempDir::new("exec-background");
    let secs = format!("330.{}", std::process::id());
    plugin(
        &dir.path().join("plugins"),
        "bg",
        &format!("sleep {secs} &\necho 7"),
        0o755,
    );
    let path = config(&dir, "  - service: bg\n    source: bg\n    timeout: 10\n");
    let started = std::time::Instant::now();
    let (code, events, err) = once(&path);
    assert_eq!(code, 0, "{err}");
    assert_eq!(events.len(), 1, "{events:?} {err}");
    assert_eq!(metric(&events[0]), Some(7.0));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the tick ended when the plugin exited"
    );
    std::thread::sleep(Duration::from_millis(200));
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {secs}")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the background child was killed with the group");

    // One that escapes the group with setsid is reported.
    let secs = format!("340.{}", std::process::id());
    plugin(
        &dir.path().join("plugins"),
        "escape",
        &format!("setsid sleep {secs} &\necho 8"),
        0o755,
    );
    let path = config(&dir, "  - service: escape\n    source: escape\n    timeout: 10\n");
    let (code, events, err) = once(&path);
    let escaped = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {secs}")])
        .output()
        .unwrap();
    for pid in String::from_utf8_lossy(&escaped.stdout).split_whitespace() {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
    assert_eq!(code, 0, "{err}");
    assert_eq!(metric(&events[0]), Some(8.0));
    assert!(err.contains("outside its process group"), "{err}");
}

/// A stream plugin that exits while a child it started holds its stdout
/// used to be read forever, never noticed dead, never restarted.
#[test]
fn a_stream_plugin_that_exits_is_restarted_though_its_child_holds_stdout() {
    let dir = TempDir::new("exec-stream-bg");
    let secs = format!("350.{}", std::process::id());
    plugin(
        &dir.path().join("plugins"),
        "leaves",
        &format!("sleep {secs} &\necho 1\nexit 2"),
        0o755,
    );
    let path = config(&dir, "  - {service: leaves, source: leaves, mode: stream}\n");
    let agent = Running::start(&["-c", &path]);
    // Restarted after 1 s, then 2 s: two lives within 2.5 s.
    let events = agent.collect_for(Duration::from_millis(2500));
    let lives = events.iter().filter(|e| service(e) == "leaves").count();
    assert!(lives >= 2, "{lives} lives: {}", agent.stderr());
    assert!(
        agent.stderr().contains("stream plugin ended: exited with status 2"),
        "{}",
        agent.stderr()
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {secs}")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the children were killed with each life's group"
    );
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[test]
fn garbage_output_fails_the_tick_with_a_reason() {
    let dir = TempDir::new("exec-garbage");
    plugin(
        &dir.path().join("plugins"),
        "junk",
        "head -c 64 /dev/urandom; printf '\\000\\001'",
        0o755,
    );
    let (code, events, err) = once(&config(&dir, "  - {service: j, source: junk}\n"));
    assert_eq!(code, 3, "{err}");
    assert!(events.is_empty());
    assert!(err.contains("j (junk): failed: the output is not text"), "{err}");
}

#[test]
fn misbehaving_plugins_leave_the_agent_running_and_bounded() {
    let dir = TempDir::new("exec-misbehave");
    let plugins = dir.path().join("plugins");
    // 20 MB per tick, one long line.
    plugin(&plugins, "flood", "head -c 20000000 /dev/zero | tr '\\0' 'x'", 0o755);
    plugin(&plugins, "hang", "sleep 600", 0o755);
    plugin(&plugins, "fail", "echo 'oops' >&2; exit 2", 0o755);
    plugin(&plugins, "ok", "echo 1", 0o755);
    let path = config(
        &dir,
        "  - {service: flood, source: flood, interval: 0.5}\n  - {service: hang, source: hang, interval: 0.5}\n  - {service: fail, source: fail, interval: 0.5}\n  - {service: fine, source: ok, interval: 0.2}\n",
    );
    let agent = Running::start(&["-c", &path]);
    let mut fine = 0;
    let mut failed_state = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        if let Some(ev) = agent.next_event(Duration::from_millis(200)) {
            match service(&ev) {
                "fine" => fine += 1,
                "fail" => failed_state = Some(state(&ev).to_string()),
                _ => {}
            }
        }
    }
    assert!(fine >= 5, "the healthy plugin kept reporting: {fine}");
    assert_eq!(failed_state.as_deref(), Some("critical"), "exit 2 is critical");
    let log = agent.stderr();
    assert!(log.contains("output cut at max_output_bytes"), "{log}");
    assert!(log.contains("took longer than") && log.contains("was killed"), "{log}");
    let rss = common::status_kib(agent.pid(), "VmRSS:");
    assert!(rss < 150_000, "RSS {rss} KiB after 20 MB floods");
    let (code, _) = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let hung = std::process::Command::new("pgrep").args(["-f", "sleep 600"]).output();
    if let Ok(out) = hung {
        assert!(out.stdout.is_empty(), "a timed-out plugin was left running");
    }
}

#[test]
fn stream_plugins_emit_every_line_and_are_restarted_with_backoff() {
    let dir = TempDir::new("exec-stream");
    let plugins = dir.path().join("plugins");
    plugin(
        &plugins,
        "ticker",
        "i=0; while true; do i=$((i+1)); echo $i; echo '{\"prefix\": \"json\", \"metric\": 0.5}'; echo 'not an event'; sleep 0.1; done",
        0o755,
    );
    plugin(&plugins, "dies", "echo 1; echo 'dying' >&2; exit 3", 0o755);
    let path = config(
        &dir,
        "  - {service: tick, source: ticker, mode: stream}\n  - {service: dies, source: dies, mode: stream}\n",
    );
    let agent = Running::start(&["-c", &path]);
    let events = agent.wait_for(Duration::from_secs(10), |e| {
        service(e) == "tick" && metric(e) == Some(5.0)
    });
    let ticks: Vec<f64> = events
        .iter()
        .filter(|e| service(e) == "tick")
        .filter_map(metric)
        .collect();
    assert_eq!(ticks, [1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(events.iter().any(|e| service(e) == "tick.json"));
    std::thread::sleep(Duration::from_millis(3500));
    let log = agent.stderr();
    assert!(
        log.contains("stream plugin ended: exited with status 3; stderr: dying"),
        "{log}"
    );
    assert!(log.contains("neither JSON nor a number"), "{log}");
    // Restarts wait 1 s, 2 s, 4 s: in ~4.5 s the dying plugin ran at most 3 times.
    let rest = agent.collect_for(Duration::from_millis(200));
    let dies = events.iter().chain(&rest).filter(|e| service(e) == "dies").count();
    assert!((1..=3).contains(&dies), "{dies} runs");
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}
