//! ductd as it runs in a locked-down container or under systemd's
//! DynamicUser: an unprivileged user, a read-only configuration, the host's
//! /proc and /sys given through HOST_PROC and HOST_SYS.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{require_binary, TempDir};
use serde_json::Value;

const NOBODY: &str = "65534";

/// `setpriv` running `ductd` as uid/gid 65534 with no supplementary
/// groups, or `None` (skipped with the reason) when this test cannot switch
/// users.
fn as_nobody() -> Option<Command> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: switching to an unprivileged user needs root");
        return None;
    }
    let setpriv = require_binary("setpriv", "util-linux")?;
    let mut cmd = Command::new(setpriv);
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
        common::ductd_bin(),
    ]);
    Some(cmd)
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/duct-sources/tests/fixtures/linux")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_only(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn an_unprivileged_agent_reads_the_host_through_host_proc_and_host_sys() {
    let Some(mut ductd) = as_nobody() else {
        return;
    };
    let dir = TempDir::new("unprivileged");
    read_only(dir.path(), 0o755);
    dir.write("host/proc/loadavg", &fixture("loadavg"));
    dir.write("host/proc/meminfo", &fixture("meminfo"));
    for pid in ["1", "42", "4242"] {
        dir.write(&format!("host/proc/{pid}/comm"), "init\n");
    }
    dir.write("host/sys/class/hwmon/hwmon0/name", "coretemp\n");
    dir.write("host/sys/class/hwmon/hwmon0/temp1_input", "51000\n");
    let config = dir.write(
        "etc/duct.yml",
        "hostname: node-7
outputs:
  - output: duct.outputs.logger.Logger
sources:
  - {service: load, source: duct.sources.linux.basic.LoadAverage}
  - {service: memory, source: duct.sources.linux.basic.Memory}
  - {service: procs, source: duct.sources.linux.process.ProcessCount}
  - {service: hw, source: duct.sources.linux.sensors.Sensors}
",
    );
    read_only(&config, 0o444);
    read_only(&dir.path().join("etc"), 0o555);

    let out = ductd
        .args(["once", "-c", config.to_str().unwrap()])
        .env("HOST_PROC", dir.path().join("host/proc"))
        .env("HOST_SYS", dir.path().join("host/sys"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let metric = |service: &str| {
        events
            .iter()
            .find(|e| e["service"] == service)
            .and_then(|e| e["metric"].as_f64())
            .unwrap_or_else(|| panic!("no {service} in {events:?}"))
    };
    let load: f64 = fixture("loadavg").split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(metric("load"), load);
    assert!(metric("memory") > 0.0 && metric("memory") < 1.0);
    assert_eq!(metric("procs"), 3.0, "the fake host's processes, not this machine's");
    assert_eq!(metric("hw.coretemp.temp1"), 51.0);
    assert!(events.iter().all(|e| e["host"] == "node-7"));

    read_only(&dir.path().join("etc"), 0o755);
}

#[test]
fn the_unprivileged_user_really_is_unprivileged() {
    let Some(mut ductd) = as_nobody() else {
        return;
    };
    let dir = TempDir::new("unprivileged-secret");
    let secret = dir.write("secret.yml", "sources: []\n");
    read_only(&secret, 0o600);
    let out = ductd.args(["check", "-c", secret.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
