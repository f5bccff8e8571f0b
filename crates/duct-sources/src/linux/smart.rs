//! `duct.sources.linux.sensors.SMART`: the raw values of every disk's SMART
//! attributes, from smartmontools' `smartctl -A` (ATA attribute tables and,
//! beyond Duct, NVMe health logs). Disks come from `smartctl --scan` unless
//! listed in `devices`. smartctl needs root.

use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::plan::StringList;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use serde::Deserialize;

use super::command::{first_line, Tool};
use super::host::Host;

/// Disks are hot-plugged now and then: the scan is repeated this often.
const RESCAN_EVERY: Duration = Duration::from_secs(3600);

/// smartctl's exit status is a bit mask; these two bits mean it could not
/// read the device at all. The others report the disk's own troubles
/// (failing, errors logged), when the attributes matter most.
const EXIT_COMMAND_LINE: i32 = 1;
const EXIT_OPEN_FAILED: i32 = 2;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// Disks to read (`/dev/sda`); those of `smartctl --scan` when absent.
    devices: Option<StringList>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.linux.sensors.SMART",
        "SMART attributes of every disk (`smartctl -A`, Debian package smartmontools; needs root); option devices (list, default from `smartctl --scan`)",
        &[
            "(service).(disk).(attribute): raw value; ATA names with spaces for underscores (`Temperature Celsius`), NVMe health log names as printed (`Available Spare`)",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    let listed: Vec<Disk> = opts
        .devices
        .map(|l| l.0)
        .unwrap_or_default()
        .into_iter()
        .map(|device| Disk { device, kind: None })
        .collect();
    Ok(Box::new(Smart {
        tool: Tool::new("smartctl", "smartmontools").on(&Host::of(args)),
        scan: listed.is_empty(),
        disks: listed,
        scanned: None,
    }))
}

/// One disk as `smartctl` addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disk {
    pub device: String,
    /// `-d` type for disks behind a RAID controller (`megaraid,0`), which
    /// cannot be reached otherwise. Plain types are left to smartctl's own
    /// detection (a scan says `scsi` for SATA disks, whose attributes only
    /// the detected `sat` type shows).
    pub kind: Option<String>,
}

impl Disk {
    /// The name in metrics: the device, with the RAID slot when there is one.
    pub fn name(&self) -> String {
        match &self.kind {
            Some(kind) => format!("{}:{kind}", self.device),
            None => self.device.clone(),
        }
    }
}

/// The disks of `smartctl --scan` (`/dev/sda -d scsi # /dev/sda, SCSI device`).
pub(crate) fn parse_scan(text: &str) -> Vec<Disk> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_ascii_whitespace();
            let device = words.next().filter(|d| d.starts_with("/dev"))?;
            let kind = match (words.next(), words.next()) {
                (Some("-d"), Some(kind)) if kind.contains(',') => Some(kind.to_string()),
                _ => None,
            };
            Some(Disk {
                device: device.to_string(),
                kind,
            })
        })
        .collect()
}

/// The raw values of `smartctl -A` output: the ATA attribute table (after
/// its `ID#` header; names with spaces for underscores, as Duct named them)
/// or the NVMe health log (`Key:   value` lines after `SMART/Health
/// Information`). Values that are not numbers are left out.
pub(crate) fn parse_attributes(text: &str) -> Vec<(String, i64)> {
    enum Section {
        Preamble,
        AtaTable,
        NvmeLog,
    }
    let mut section = Section::Preamble;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        match section {
            _ if line.is_empty() => section = Section::Preamble,
            Section::Preamble if line.starts_with("ID#") => section = Section::AtaTable,
            Section::Preamble if line.starts_with("SMART/Health Information") => section = Section::NvmeLog,
            Section::Preamble => {}
            Section::AtaTable => {
                // ID NAME FLAG VALUE WORST THRESH TYPE UPDATED WHEN_FAILED RAW
                let mut f = line.split_ascii_whitespace();
                let (Some(name), Some(raw)) = (f.nth(1), f.nth(7)) else {
                    continue;
                };
                if let Some(v) = raw_number(raw) {
                    out.push((name.replace('_', " "), v));
                }
            }
            Section::NvmeLog => {
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let first = value.split_ascii_whitespace().next().unwrap_or_default();
                if let Some(v) = raw_number(first) {
                    out.push((key.split_ascii_whitespace().collect::<Vec<_>>().join(" "), v));
                }
            }
        }
    }
    out
}

/// A raw value: `34`, `1,234`, `100%`, `0x00`, or the hours of
/// `28512h+11m+45.123s`.
fn raw_number(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    let digits: String = text.chars().filter(|c| *c != ',').collect();
    let digits = digits.strip_suffix('%').unwrap_or(&digits);
    if let Ok(v) = digits.parse() {
        return Some(v);
    }
    let (hours, _) = digits.split_once("h+")?;
    hours.parse().ok()
}

pub(crate) struct Smart {
    tool: Tool,
    /// Whether the disks come from `smartctl --scan` (no `devices`).
    scan: bool,
    disks: Vec<Disk>,
    scanned: Option<Instant>,
}

impl Smart {
    async fn rescan(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let Some(out) = self.tool.run(ctx, &["--scan"]).await? else {
            return Ok(());
        };
        self.disks = parse_scan(&out.stdout);
        // Found nothing: look again next tick rather than in an hour.
        self.scanned = (!self.disks.is_empty()).then(Instant::now);
        if self.disks.is_empty() {
            let why = first_line(&out.stderr);
            self.tool
                .warn(ctx, format_args!("`smartctl --scan` found no disks {why}"));
        }
        Ok(())
    }

    async fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, SourceError> {
        if self.scan && self.scanned.is_none_or(|at| at.elapsed() >= RESCAN_EVERY) {
            self.rescan(ctx).await?;
        }
        let mut events = Vec::new();
        let mut all_read = true;
        for disk in &self.disks {
            let mut args = vec!["-A"];
            if let Some(kind) = &disk.kind {
                args.extend(["-d", kind.as_str()]);
            }
            args.push(disk.device.as_str());
            let Some(out) = self.tool.run(ctx, &args).await? else {
                return Ok(events);
            };
            let code = out.code.unwrap_or(EXIT_COMMAND_LINE);
            if code & (EXIT_COMMAND_LINE | EXIT_OPEN_FAILED) != 0 {
                all_read = false;
                // smartctl explains itself on the last line of its output.
                let why = out
                    .stdout
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("");
                self.tool.warn(
                    ctx,
                    format_args!("`smartctl -A {}` failed (exit {code}): {why}", disk.device),
                );
                continue;
            }
            let name = disk.name();
            for (attribute, value) in parse_attributes(&out.stdout) {
                events.push(ctx.create_event_prefixed(
                    &format!("{name}.{attribute}"),
                    "ok",
                    format!("Attribute {name}:{attribute} - {value}"),
                    value,
                ));
            }
        }
        if all_read && !self.disks.is_empty() {
            self.tool.worked(ctx);
        }
        Ok(events)
    }
}

impl Source for Smart {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(self.tick(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::Scratch;
    use crate::testing::context;
    use duct_core::Metric;

    const SCAN: &str = include_str!("../../tests/fixtures/linux/smartctl-scan");
    const ATA: &str = include_str!("../../tests/fixtures/linux/smartctl-a-ata");
    const NVME: &str = include_str!("../../tests/fixtures/linux/smartctl-a-nvme");

    #[test]
    fn scan_lists_devices_and_keeps_raid_slots() {
        let disks = parse_scan(SCAN);
        let names: Vec<String> = disks.iter().map(Disk::name).collect();
        assert_eq!(
            names,
            [
                "/dev/sda",
                "/dev/sdb",
                "/dev/nvme0",
                "/dev/bus/0:megaraid,0",
                "/dev/bus/0:megaraid,1"
            ]
        );
        assert_eq!(disks[3].kind.as_deref(), Some("megaraid,0"));
        assert!(parse_scan("# nothing\n").is_empty());
    }

    #[test]
    fn reads_the_ata_attribute_table() {
        let attrs = parse_attributes(ATA);
        let get = |n: &str| attrs.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(attrs.len(), 18);
        assert_eq!(get("Raw Read Error Rate"), Some(129345384));
        assert_eq!(get("Reallocated Sector Ct"), Some(8));
        assert_eq!(get("Command Timeout"), Some(0), "first word of a multi-word raw value");
        assert_eq!(get("Temperature Celsius"), Some(34));
        assert_eq!(get("Airflow Temperature Cel"), Some(34));
        assert_eq!(get("Head Flying Hours"), Some(28512));
        assert_eq!(get("Total LBAs Read"), Some(98127492741));
    }

    #[test]
    fn reads_the_nvme_health_log() {
        let attrs = parse_attributes(NVME);
        let get = |n: &str| attrs.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(attrs.len(), 19);
        assert_eq!(get("Critical Warning"), Some(0));
        assert_eq!(get("Temperature"), Some(36));
        assert_eq!(get("Available Spare"), Some(100));
        assert_eq!(get("Data Units Read"), Some(12345678));
        assert_eq!(get("Power On Hours"), Some(7890));
        assert_eq!(get("Warning Comp. Temperature Time"), Some(0));
        assert_eq!(get("Temperature Sensor 2"), Some(41));
    }

    #[test]
    fn raw_values() {
        assert_eq!(raw_number("1,234"), Some(1234));
        assert_eq!(raw_number("0x0a"), Some(10));
        assert_eq!(raw_number("99%"), Some(99));
        assert_eq!(raw_number("12h+00m+01.000s"), Some(12));
        assert_eq!(raw_number("-"), None);
    }

    /// A fake `smartctl` answering `--scan` and `-A` from fixtures, with
    /// the given exit codes for `-A /dev/sda` and `-A /dev/sdb`.
    fn fake_smartctl(dir: &Scratch, sda_exit: i32, sdb_exit: i32) -> String {
        dir.write(
            "scan",
            "/dev/sda -d scsi # /dev/sda, SCSI device\n/dev/sdb -d scsi # /dev/sdb\n",
        );
        dir.write("ata", ATA);
        let script = format!(
            "#!/bin/sh\ncase \"$*\" in\n  --scan) cat {d}/scan ;;\n  '-A /dev/sda') cat {d}/ata; exit {sda_exit} ;;\n  '-A /dev/sdb') echo 'Smartctl open device: /dev/sdb failed: Permission denied'; exit {sdb_exit} ;;\n  *) exit 1 ;;\nesac\n",
            d = dir.0.display()
        );
        dir.write("smartctl", &script);
        let path = dir.0.join("smartctl");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn reports_every_scanned_disk_it_can_read() {
        let dir = Scratch::new("smart");
        let (ctx, _) = context("smart");
        let mut src = Smart {
            tool: Tool::new(fake_smartctl(&dir, 0, 2), "smartmontools"),
            scan: true,
            disks: Vec::new(),
            scanned: None,
        };
        let events = src.get(&ctx).await.unwrap();
        assert_eq!(events.len(), 18, "sdb could not be opened");
        let temp = events
            .iter()
            .find(|e| e.service == "smart./dev/sda.Temperature Celsius")
            .unwrap();
        assert_eq!(temp.metric, Some(Metric::Int(34)));
        assert_eq!(temp.description, "Attribute /dev/sda:Temperature Celsius - 34");
        assert_eq!(src.disks.len(), 2);

        // Exit bits above the first two are the disk's own news: still read.
        let dir = Scratch::new("smart-failing");
        let mut src = Smart {
            tool: Tool::new(fake_smartctl(&dir, 64, 2), "smartmontools"),
            scan: false,
            disks: vec![Disk {
                device: "/dev/sda".into(),
                kind: None,
            }],
            scanned: None,
        };
        assert_eq!(src.get(&ctx).await.unwrap().len(), 18);
    }
}
