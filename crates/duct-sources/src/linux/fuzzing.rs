//! Fuzz entry points for the host parsers (see [`crate::fuzzing`]).

use std::hint::black_box;
use std::time::Duration;

use super::host::Host;
use super::HostPaths;
use super::{cpu, diskfree, diskio, ipsec, load, memory, network, process, sensors, smart};
use crate::fuzzing::{choose, text, two_parts};

/// A file of `/proc`, the first byte choosing which: `stat`, `meminfo`,
/// `loadavg`, `diskstats`, `net/dev`, `PID/stat`, `PID/status`, `uptime`,
/// `/etc/passwd`, `mounts`, and ProcessStats' remote snapshot (summed as
/// the source sums it).
pub fn proc_file(data: &[u8]) {
    let Some((which, rest)) = choose(data) else {
        return;
    };
    let text = text(rest);
    match which % 11 {
        0 => {
            let mut times = Vec::new();
            if cpu::parse_stat(&text, &mut times).is_ok() {
                // Each line against the next, as two readings a tick apart.
                for pair in times.windows(2) {
                    black_box(cpu::shares(&pair[0].ticks, &pair[1].ticks));
                }
            }
        }
        1 => {
            if let Ok(m) = memory::parse_meminfo(&text) {
                black_box((m.used_kb(), m.used_fraction()));
            }
        }
        2 => {
            black_box(load::parse_loadavg(&text).ok());
        }
        3 => {
            let mut previous = None;
            for line in text.lines() {
                if let Ok(Some(d)) = diskio::parse_diskstats_line(line) {
                    // Each line as the reading after the one before.
                    if let Some(ms) = d.read_ms {
                        black_box(diskio::latency_ms(previous, (d.reads, ms)));
                        previous = Some((d.reads, ms));
                    }
                }
            }
        }
        4 => {
            for line in text.lines() {
                black_box(network::parse_net_dev_line(line).ok());
            }
        }
        5 => {
            black_box(process::parse_pid_stat(&text).ok());
        }
        6 => {
            black_box(process::parse_status_euid(&text));
        }
        7 => {
            black_box(process::parse_uptime(&text).ok());
        }
        8 => {
            black_box(process::parse_passwd(&text));
        }
        9 => {
            let mounts: Vec<_> = diskfree::parse_mounts(&text).collect();
            black_box(mounts);
        }
        _ => {
            if let Ok(snapshot) = process::parse_snapshot(&text) {
                let host = Host::from(&HostPaths::from_vars(|_| None));
                let mut stats = process::RemoteProcessStats::new(host, Duration::from_secs(1));
                black_box(stats.tally(&snapshot));
            }
        }
    }
}

/// What a host command prints, the first byte choosing which: `sensors
/// -u`, `smartctl --scan`, `smartctl -A`, `ipsec statusall`, and
/// `swanctl --list-conns` and `--list-sas` (the two split at a NUL).
pub fn command_output(data: &[u8]) {
    let Some((which, rest)) = choose(data) else {
        return;
    };
    match which % 5 {
        0 => {
            black_box(sensors::parse_sensors_u(&text(rest)));
        }
        1 => {
            for disk in smart::parse_scan(&text(rest)) {
                black_box(disk.name());
            }
        }
        2 => {
            black_box(smart::parse_attributes(&text(rest)));
        }
        3 => {
            black_box(ipsec::parse_statusall(&text(rest)));
        }
        _ => {
            let (conns, sas) = two_parts(rest);
            black_box(ipsec::parse_swanctl(&text(conns), &text(sas)));
        }
    }
}
