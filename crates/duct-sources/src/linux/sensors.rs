//! `duct.sources.linux.sensors.Sensors` (the kernel's hwmon sensors under
//! `/sys/class/hwmon`) and `LMSensors` (the same through lm-sensors'
//! `sensors -u`): temperatures and fan speeds, and with lm-sensors every
//! other input the chip drivers export.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::{Event, NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSpec};

use super::command::{first_line, Tool};
use super::host::Host;
use super::{HostPaths, ProcFile};

/// Sensors come and go rarely (a USB device, a driver loaded late): the
/// hwmon tree is walked again this often, and after a read fails.
const RESCAN_EVERY: Duration = Duration::from_secs(600);

pub fn hwmon_spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "duct.sources.linux.sensors.Sensors",
        "Temperatures (°C) and fan speeds (RPM) from the kernel's hwmon drivers (HOST_SYS/class/hwmon)",
        &["(service).(adapter).(sensor): the sensor's label lower-cased with spaces as _ (the channel, e.g. temp1, when unlabelled)"],
        build_hwmon,
    )
}

pub fn lm_spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "duct.sources.linux.sensors.LMSensors",
        "Every input lm-sensors reports (`sensors -u`; Debian package lm-sensors): temperatures, fans, voltages, currents, power",
        &["(service).(chip).(label): the input's value in its unit, labels as `sensors` prints them (`Package id 0`, `fan1`)"],
        build_lm,
    )
    .over_ssh()
}

fn build_hwmon(_: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    Ok(Box::new(Hwmon::new(&HostPaths::from_env())))
}

fn build_lm(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    Ok(Box::new(LmSensors {
        tool: Tool::new("sensors", "lm-sensors").on(&Host::of(args)),
    }))
}

/// What an hwmon input file measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `tempN_input`, in millidegrees Celsius.
    Temperature,
    /// `fanN_input`, in RPM.
    Fan,
}

/// The channel (`temp1`) and kind of an hwmon input file name
/// (`temp1_input`); `None` for the rest (limits, alarms, labels and the
/// inputs Duct did not report: voltages, currents, power).
pub(crate) fn hwmon_input(file_name: &str) -> Option<(&str, Kind)> {
    let channel = file_name.strip_suffix("_input")?;
    let kind = if channel.starts_with("temp") {
        Kind::Temperature
    } else if channel.starts_with("fan") {
        Kind::Fan
    } else {
        return None;
    };
    Some((channel, kind))
}

/// Duct's sensor name: the label lower-cased with spaces as underscores;
/// the channel when the driver gives no label.
pub(crate) fn sensor_name(label: Option<&str>, channel: &str) -> String {
    match label.map(str::trim).filter(|l| !l.is_empty()) {
        Some(l) => l.to_lowercase().replace(' ', "_"),
        None => channel.to_string(),
    }
}

/// One hwmon input, its file kept open between ticks.
struct HwmonInput {
    /// `adapter.sensor`, the metric name.
    name: String,
    /// `adapter:sensor`, as Duct's descriptions wrote it.
    title: String,
    kind: Kind,
    file: ProcFile,
}

pub(crate) struct Hwmon {
    class_dir: PathBuf,
    inputs: Vec<HwmonInput>,
    scanned: Option<Instant>,
    /// "No sensors" has been logged; not again until some appear.
    said_none: bool,
}

impl Hwmon {
    pub fn new(paths: &HostPaths) -> Self {
        Hwmon {
            class_dir: paths.sys("class/hwmon"),
            inputs: Vec::new(),
            scanned: None,
            said_none: false,
        }
    }

    fn scan(&mut self) {
        self.inputs.clear();
        let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir(&self.class_dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_prefix("hwmon")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        dirs.sort_unstable();
        let mut adapters: Vec<String> = Vec::new();
        for (n, dir) in dirs {
            let mut adapter = read_trimmed(&dir.join("name")).unwrap_or_else(|| format!("hwmon{n}"));
            // Two chips of one driver (two NVMe disks) must not report
            // under one name.
            if adapters.contains(&adapter) {
                adapter = format!("{adapter}-hwmon{n}");
            }
            let mut files: Vec<String> = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            files.sort_unstable();
            for file in &files {
                let Some((channel, kind)) = hwmon_input(file) else {
                    continue;
                };
                let label = read_trimmed(&dir.join(format!("{channel}_label")));
                let sensor = sensor_name(label.as_deref(), channel);
                self.inputs.push(HwmonInput {
                    name: format!("{adapter}.{sensor}"),
                    title: format!("{adapter}:{sensor}"),
                    kind,
                    file: ProcFile::new(dir.join(file)),
                });
            }
            adapters.push(adapter);
        }
        self.scanned = Some(Instant::now());
    }

    fn tick(&mut self, ctx: &SourceContext) -> Vec<Event> {
        if self.scanned.is_none_or(|at| at.elapsed() >= RESCAN_EVERY) {
            self.scan();
        }
        if self.inputs.is_empty() {
            if !self.said_none {
                self.said_none = true;
                tracing::info!(service = %ctx.service(), dir = %self.class_dir.display(), "no hwmon sensors: no events");
            }
            return Vec::new();
        }
        self.said_none = false;
        let mut events = Vec::with_capacity(self.inputs.len());
        let mut failed = false;
        for input in &mut self.inputs {
            // A sensor that cannot be read now (a chip asleep, a device
            // gone) is left out of this tick and the tree walked again.
            let raw = match input.file.read() {
                Ok(text) => text.trim().parse::<i64>().ok(),
                Err(_) => None,
            };
            let Some(raw) = raw else {
                failed = true;
                continue;
            };
            let event = match input.kind {
                Kind::Temperature => {
                    let celsius = raw as f64 / 1000.0;
                    ctx.create_event_prefixed(
                        &input.name,
                        "ok",
                        format!("Sensor {} - {celsius}", input.title),
                        celsius,
                    )
                }
                Kind::Fan => {
                    ctx.create_event_prefixed(&input.name, "ok", format!("Sensor {} - {raw}", input.title), raw)
                }
            };
            events.push(event);
        }
        if failed {
            self.scanned = None;
        }
        events
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

impl Source for Hwmon {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(std::future::ready(Ok(self.tick(ctx))))
    }
}

/// One input of `sensors -u`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SensorReading<'a> {
    /// The chip (`coretemp-isa-0000`).
    pub chip: &'a str,
    /// The feature's label (`Package id 0`, `fan1`).
    pub label: &'a str,
    pub value: f64,
}

/// The inputs of `sensors -u` output: a chip name line, an `Adapter:`
/// line, then per feature its label line (`Core 0:`) and indented
/// subfeatures (`  temp2_input: 44.000`), of which `*_input` is the value.
pub(crate) fn parse_sensors_u(text: &str) -> Vec<SensorReading<'_>> {
    let mut out = Vec::new();
    let (mut chip, mut label) = (None, None);
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            (chip, label) = (None, None);
        } else if line.starts_with([' ', '\t']) {
            let Some((name, value)) = line.trim_start().split_once(':') else {
                continue;
            };
            let (Some(chip), Some(label)) = (chip, label) else {
                continue;
            };
            if let (true, Ok(value)) = (name.ends_with("_input"), value.trim().parse()) {
                out.push(SensorReading { chip, label, value });
            }
        } else if line.starts_with("Adapter:") || line.starts_with("ERROR:") {
            continue;
        } else if let Some(feature) = line.strip_suffix(':') {
            label = Some(feature);
        } else {
            (chip, label) = (Some(line), None);
        }
    }
    out
}

pub(crate) struct LmSensors {
    tool: Tool,
}

impl LmSensors {
    async fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, duct_core::SourceError> {
        let Some(out) = self.tool.run(ctx, &["-u"]).await? else {
            return Ok(Vec::new());
        };
        if out.code != Some(0) {
            // `sensors` exits 1 with "No sensors found!" on machines
            // without sensor drivers: say it once, not every tick.
            let why = first_line(&out.stderr);
            self.tool
                .warn(ctx, format_args!("`sensors -u` failed ({:?}): {why}", out.code));
            return Ok(Vec::new());
        }
        self.tool.worked(ctx);
        Ok(parse_sensors_u(&out.stdout)
            .into_iter()
            .map(|r| {
                let name = format!("{}.{}", r.chip, r.label);
                ctx.create_event_prefixed(
                    &name,
                    "ok",
                    format!("Sensor {}:{} - {}", r.chip, r.label, r.value),
                    r.value,
                )
            })
            .collect())
    }
}

impl Source for LmSensors {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(self.tick(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::{fixtures, paths_in, Scratch};
    use crate::testing::context;
    use duct_core::Metric;

    const SENSORS_U: &str = include_str!("../../tests/fixtures/linux/sensors-u");

    #[test]
    fn recognises_temperature_and_fan_inputs() {
        assert_eq!(hwmon_input("temp1_input"), Some(("temp1", Kind::Temperature)));
        assert_eq!(hwmon_input("fan2_input"), Some(("fan2", Kind::Fan)));
        assert_eq!(hwmon_input("temp1_max"), None);
        assert_eq!(hwmon_input("in0_input"), None);
        assert_eq!(sensor_name(Some("Package id 0\n"), "temp1"), "package_id_0");
        assert_eq!(sensor_name(None, "temp7"), "temp7");
        assert_eq!(sensor_name(Some(" "), "fan1"), "fan1");
    }

    #[tokio::test]
    async fn reads_the_hwmon_tree() {
        let (ctx, _) = context("sensors");
        let mut src = Hwmon::new(&paths_in(&fixtures()));
        let events = src.get(&ctx).await.unwrap();
        let got: Vec<(&str, Metric)> = events.iter().map(|e| (e.service.as_str(), e.metric.unwrap())).collect();
        assert_eq!(
            got,
            [
                ("sensors.coretemp.package_id_0", Metric::Float(46.0)),
                ("sensors.coretemp.core_0", Metric::Float(44.0)),
                ("sensors.nvme.composite", Metric::Float(35.85)),
                ("sensors.nct6775.fan1", Metric::Int(1205)),
                ("sensors.nct6775.fan2", Metric::Int(0)),
                ("sensors.nct6775.temp7", Metric::Float(32.0)),
                ("sensors.acpitz.temp1", Metric::Float(27.8)),
                ("sensors.nvme-hwmon4.composite", Metric::Float(40.85)),
            ]
        );
        assert_eq!(events[0].description, "Sensor coretemp:package_id_0 - 46");
    }

    #[tokio::test]
    async fn no_hwmon_directory_means_no_events() {
        let dir = Scratch::new("no-hwmon");
        let (ctx, _) = context("sensors");
        let mut src = Hwmon::new(&paths_in(&dir.0));
        assert!(src.get(&ctx).await.unwrap().is_empty());
        assert!(src.said_none);
        // A sensor that appears later is found at the next walk.
        dir.write("sys/class/hwmon/hwmon0/temp1_input", "51500\n");
        src.scanned = None;
        let events = src.get(&ctx).await.unwrap();
        assert_eq!(events[0].service, "sensors.hwmon0.temp1");
        assert_eq!(events[0].metric, Some(Metric::Float(51.5)));
        // An unreadable value leaves the sensor out and walks the tree again.
        dir.write("sys/class/hwmon/hwmon0/temp1_input", "N/A\n");
        assert!(src.get(&ctx).await.unwrap().is_empty());
        assert!(src.scanned.is_none());
    }

    #[test]
    fn parses_sensors_u() {
        let r = parse_sensors_u(SENSORS_U);
        let got: Vec<(&str, &str, f64)> = r.iter().map(|r| (r.chip, r.label, r.value)).collect();
        assert_eq!(
            got,
            [
                ("coretemp-isa-0000", "Package id 0", 46.0),
                ("coretemp-isa-0000", "Core 0", 44.0),
                ("coretemp-isa-0000", "Core 1", 45.0),
                ("nvme-pci-0100", "Composite", 35.85),
                ("nvme-pci-0100", "Sensor 1", 35.85),
                ("nct6775-isa-0290", "Vcore", 0.88),
                ("nct6775-isa-0290", "fan1", 1205.0),
                ("nct6775-isa-0290", "SYSTIN", 32.0),
                ("acpitz-acpi-0", "temp1", 27.8),
                ("BAT0-acpi-0", "in0", 12.891),
                ("BAT0-acpi-0", "curr1", 0.0),
            ]
        );
        // Unreadable subfeatures and stray lines are skipped.
        let odd = "chip-0\nAdapter: x\nCore 0:\nERROR: Can't get value of subfeature temp2_input: Can't read\n  temp2_input: nan-ish\n";
        assert!(parse_sensors_u(odd).is_empty());
        assert!(parse_sensors_u("  temp1_input: 3.0\n").is_empty(), "no chip yet");
    }

    #[tokio::test]
    async fn lm_sensors_without_the_command_gives_nothing() {
        let (ctx, _) = context("lm");
        let mut src = LmSensors {
            tool: Tool::new("/nonexistent/sensors", "lm-sensors"),
        };
        assert!(src.get(&ctx).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn lm_sensors_reports_every_input() {
        let dir = Scratch::new("lm");
        dir.write("sensors-u", SENSORS_U);
        let script = dir.0.join("sensors");
        dir.write(
            "sensors",
            &format!(
                "#!/bin/sh\n[ \"$1\" = -u ] && exec cat {}\nexit 2\n",
                dir.0.join("sensors-u").display()
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (ctx, _) = context("lm");
        let mut src = LmSensors {
            tool: Tool::new(script.to_str().unwrap(), "lm-sensors"),
        };
        let events = src.get(&ctx).await.unwrap();
        assert_eq!(events.len(), 11);
        assert_eq!(events[0].service, "lm.coretemp-isa-0000.Package id 0");
        assert_eq!(events[6].metric, Some(Metric::Float(1205.0)));
        assert_eq!(events[6].description, "Sensor nct6775-isa-0290:fan1 - 1205");
    }
}
