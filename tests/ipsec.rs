//! `duct.sources.linux.ipsec.StrongSwan` against a real strongSwan charon
//! (tests/common/charon.rs): two established IKE SAs and one stuck
//! connecting, read with `swanctl` here and over SSH, and with `ipsec
//! statusall` under strongSwan's starter here and over SSH (there with no
//! `tool`, so the remote host is asked); then the daemon killed under the
//! running agent, when every tunnel it knew must be reported down.
//! Skipped without strongSwan, sshd or root unless DUCT_REQUIRE_SERVICES=1.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::charon::{Charon, Launch};
use common::sshd::{Host, SshKeys, Sshd};
use common::{description, ductd, ductd_bin, metric, service, state, Running, TempDir};
use serde_json::Value;

/// The connections of the test daemon and whether each is up.
const TUNNELS: [(&str, bool); 3] = [("east", true), ("west", true), ("dead", false)];

/// Long enough for a tick on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// A configuration for the agent: a tick a second, events on stdout.
fn agent_config(dir: &TempDir, globals: &str, sources: &str) -> String {
    let path = dir.write(
        "duct.yml",
        &format!("interval: 1\n{globals}outputs: [{{output: duct.outputs.logger.Logger}}]\nsources:\n{sources}"),
    );
    path.to_str().expect("utf-8 path").to_string()
}

/// The agent's events until the last of every tunnel under each of
/// `prefixes` says what [`TUNNELS`] has, or that it is down when
/// `all_down`; those last events.
fn until_reported(agent: &Running, prefixes: &[&str], all_down: bool) -> HashMap<String, Value> {
    let wanted: Vec<(String, bool)> = prefixes
        .iter()
        .flat_map(|p| {
            TUNNELS
                .iter()
                .map(move |(t, up)| (format!("{p}.{t}"), *up && !all_down))
        })
        .collect();
    let mut last: HashMap<String, Value> = HashMap::new();
    let matches = |last: &HashMap<String, Value>| {
        wanted
            .iter()
            .all(|(name, up)| last.get(name).is_some_and(|ev| (state(ev) == "ok") == *up))
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !matches(&last) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(ev) = agent.next_event(left) else {
            panic!(
                "not every tunnel reported as expected; last events: {last:#?}\nstderr:\n{}",
                agent.stderr()
            );
        };
        last.insert(service(&ev).to_string(), ev);
    }
    last
}

/// Each tunnel of `prefix` as the daemon has it: east and west up (1,
/// ok), dead down (0, critical), with the source's descriptions.
fn assert_tunnels(events: &HashMap<String, Value>, prefix: &str) {
    for (tunnel, up) in TUNNELS {
        let ev = &events[&format!("{prefix}.{tunnel}")];
        let (want_state, want_metric, word) = if up {
            ("ok", 1.0, "up")
        } else {
            ("critical", 0.0, "down")
        };
        assert_eq!(state(ev), want_state, "{ev}");
        assert_eq!(metric(ev), Some(want_metric), "{ev}");
        assert_eq!(description(ev), format!("IPSec tunnel {tunnel} {word}"), "{ev}");
    }
}

/// After the daemon died, every tunnel under `prefixes` (the established
/// ones included) is reported down.
fn assert_all_down_after_kill(agent: &Running, charon: &mut Charon, prefixes: &[&str]) {
    charon.kill();
    let events = until_reported(agent, prefixes, true);
    for ev in events.values() {
        assert_eq!(state(ev), "critical", "{ev}");
        assert_eq!(metric(ev), Some(0.0), "{ev}");
    }
}

#[test]
fn swanctl_reports_established_tunnels_up_and_all_down_once_charon_dies() {
    let Some(mut charon) = Charon::start("charon-swanctl", Launch::Charon) else {
        return;
    };
    let dir = TempDir::new("ipsec-swanctl");
    let config = agent_config(
        &dir,
        "",
        "  - {service: vpn, source: duct.sources.linux.ipsec.StrongSwan, tool: swanctl}\n",
    );
    // swanctl finds the daemon's socket in its strongswan.conf, as on a
    // host whose /etc/strongswan.conf moved it.
    let mut cmd = ductd(&["-c", &config]);
    cmd.env("STRONGSWAN_CONF", &charon.conf);
    let agent = Running::start_with(cmd);
    let events = until_reported(&agent, &["vpn"], false);
    assert_tunnels(&events, "vpn");
    assert_all_down_after_kill(&agent, &mut charon, &["vpn"]);
}

#[test]
fn over_ssh_swanctl_runs_on_the_remote_host_and_reports_what_it_reports_here() {
    let Some(mut charon) = Charon::start("charon-ssh", Launch::Charon) else {
        return;
    };
    let Some(keys) = SshKeys::make("ssh-keys-ipsec") else {
        return;
    };
    let conf = charon.conf.to_str().expect("utf-8 path").to_string();
    // The remote host's strongswan.conf is this daemon's.
    let sshd = Sshd::start_as(
        &keys,
        "sshd-ipsec",
        Host {
            env: &[("STRONGSWAN_CONF", &conf)],
            ..Host::default()
        },
    );
    let dir = TempDir::new("ipsec-ssh");
    // No `sudo` option: the remote login user (root) decides it, and
    // sudo is not installed here, so a wrong guess gives no events.
    let config = agent_config(
        &dir,
        &sshd.globals(&keys, &dir),
        &format!(
            "  - {{service: here, source: duct.sources.linux.ipsec.StrongSwan, tool: swanctl}}\n\
             \x20 - {{service: there, source: duct.sources.linux.ipsec.StrongSwan, tool: swanctl, {}}}\n",
            sshd.source_options()
        ),
    );
    let mut cmd = ductd(&["-c", &config]);
    cmd.env("STRONGSWAN_CONF", &charon.conf);
    let agent = Running::start_with(cmd);
    let events = until_reported(&agent, &["here", "there"], false);
    assert_tunnels(&events, "here");
    assert_tunnels(&events, "there");
    assert_all_down_after_kill(&agent, &mut charon, &["here", "there"]);
    assert_eq!(sshd.logins(), 1, "one connection for every tick:\n{}", sshd.log_text());
}

#[test]
fn ipsec_statusall_under_starter_reports_the_same_and_all_down_once_charon_dies() {
    let Some(mut charon) = Charon::start("charon-starter", Launch::Starter) else {
        return;
    };
    let dir = TempDir::new("ipsec-statusall");
    let config = agent_config(
        &dir,
        "",
        "  - {service: vpn, source: duct.sources.linux.ipsec.StrongSwan, tool: ipsec}\n",
    );
    // `ipsec` reads charon's and starter's pid files in /run, which is
    // the daemon's own in its namespace.
    let mut cmd: Command = charon.in_namespace(std::path::Path::new(ductd_bin()));
    cmd.args(["-c", &config]);
    let agent = Running::start_with(cmd);
    let events = until_reported(&agent, &["vpn"], false);
    assert_tunnels(&events, "vpn");
    assert_all_down_after_kill(&agent, &mut charon, &["vpn"]);
}

#[test]
fn over_ssh_without_a_tool_the_remote_host_is_asked_and_ipsec_statusall_read_there() {
    let Some(mut charon) = Charon::start("charon-ssh-starter", Launch::Starter) else {
        return;
    };
    let Some(keys) = SshKeys::make("ssh-keys-ipsec-starter") else {
        return;
    };
    let conf = charon.conf.to_str().expect("utf-8 path").to_string();
    // The remote host runs starter and charon: its sessions see their pid
    // files in /run, and both tools are installed there.
    let sshd = Sshd::start_as(
        &keys,
        "sshd-ipsec-starter",
        Host {
            env: &[("STRONGSWAN_CONF", &conf)],
            run: Some(charon.run_dir()),
            ..Host::default()
        },
    );
    let dir = TempDir::new("ipsec-ssh-starter");
    // Neither `tool` nor `sudo`: the probe finds both tools, `ipsec`
    // first as Duct preferred it, and a root login.
    let config = agent_config(
        &dir,
        &sshd.globals(&keys, &dir),
        &format!(
            "  - {{service: there, source: duct.sources.linux.ipsec.StrongSwan, {}}}\n",
            sshd.source_options()
        ),
    );
    let agent = Running::start_with(ductd(&["-c", &config]));
    let events = until_reported(&agent, &["there"], false);
    assert_tunnels(&events, "there");
    let stderr = agent.stderr();
    assert!(
        stderr.contains("`ipsec statusall`") && stderr.contains("without sudo"),
        "the tool chosen is said once:\n{stderr}"
    );
    assert_all_down_after_kill(&agent, &mut charon, &["there"]);
    assert_eq!(sshd.logins(), 1, "one connection for every tick:\n{}", sshd.log_text());
}
