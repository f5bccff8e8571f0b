//! `duct.sources.sensors.environment.DS18B20`: the temperature of every
//! DS18B20 (1-wire family `28`) the kernel's w1_therm driver presents in
//! sysfs, `(device_path)/w1_bus_master*/28-*/w1_slave`.
//!
//! Each read of `w1_slave` makes the sensor convert (about 750 ms per
//! sensor), so the reads run off the async threads, one blocking task per
//! bus master (sensors on one bus are read in turn, as the bus serialises
//! them anyway), within the tick's budget. The buses and sensors are
//! listed again every tick: a sensor plugged in later is picked up.
//!
//! Events: `(service).(label)`, the temperature in °C, where `label` is
//! the sensor's name in `device_map` or its serial (`28-00000623003b`),
//! with Duct's description `28-… Temperature C`. A sensor whose read
//! fails the driver's CRC check (`NO`: a loose wire, a missing pull-up) or
//! cannot be read is a critical `(service).(label)` without a metric
//! naming the cause (Duct dropped it silently); a `device_path` without
//! bus masters, or one that cannot be read, is one critical `(service)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::{budget, Faults, DEFAULT_TIMEOUT};
use crate::network::GRACE;

/// A `w1_slave` is two short lines; anything much longer is not one.
const MAX_READ: u64 = 4096;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    device_path: PathBuf,
    /// Serial (`28-…`) to the name its events carry.
    device_map: BTreeMap<String, String>,
    /// Only the sensors in `device_map` are reported.
    ignore_unmapped: bool,
    /// Seconds all the reads may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            device_path: PathBuf::from("/sys/devices/"),
            device_map: BTreeMap::new(),
            ignore_unmapped: false,
            timeout: None,
        }
    }
}

const SUMMARY: &str = "DS18B20 1-wire temperatures from the w1_therm driver in sysfs: `device_path` (/sys/devices/), \
                       `device_map` (serial: name), `ignore_unmapped` (false), `timeout`";
const METRICS: &[&str] = &["(service).(name or 28-serial): °C; a failed CRC or read is critical with the cause"];

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>("duct.sources.sensors.environment.DS18B20", SUMMARY, METRICS, build)
}

/// The module path Duct also accepts.
pub fn alias_spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.sensors.environment.ds18b20.DS18B20",
        SUMMARY,
        METRICS,
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    if o.device_path.as_os_str().is_empty() {
        return Err(args.invalid(
            "device_path",
            "must name the directory holding the w1_bus_master* devices",
        ));
    }
    if o.ignore_unmapped && o.device_map.is_empty() {
        args.warn(
            "ignore_unmapped",
            "is true with an empty device_map: no sensor will be reported",
        );
    }
    Ok(Box::new(Ds18b20 {
        device_path: o.device_path,
        device_map: o.device_map,
        ignore_unmapped: o.ignore_unmapped,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct Ds18b20 {
    device_path: PathBuf,
    device_map: BTreeMap<String, String>,
    ignore_unmapped: bool,
    budget: Duration,
    faults: Faults,
}

impl Source for Ds18b20 {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

/// One sensor's serial and what reading it gave.
type Reading = (String, Result<f64, String>);

impl Ds18b20 {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        match tokio::time::timeout(self.budget, self.read_all()).await {
            Ok(Ok(readings)) => self.events(ctx, readings),
            Ok(Err(cause)) => self.fail(ctx, cause),
            Err(_) => self.fail(
                ctx,
                format!("reading the sensors took longer than {} s", self.budget.as_secs_f64()),
            ),
        }
    }

    fn fail(&mut self, ctx: &SourceContext, cause: String) -> Vec<Event> {
        let text = format!("{} - {cause}", self.device_path.display());
        self.faults.failed(ctx, &text);
        vec![ctx.create_event("critical", text, None::<i64>)]
    }

    /// Every wanted sensor on every bus, read one blocking task per bus.
    async fn read_all(&self) -> Result<Vec<Reading>, String> {
        let root = self.device_path.clone();
        let buses = tokio::task::spawn_blocking(move || bus_masters(&root))
            .await
            .map_err(|e| format!("listing the buses failed: {e}"))??;
        if buses.is_empty() {
            return Err("no w1_bus_master* here (is the w1-gpio or another 1-wire master driver loaded?)".into());
        }
        let tasks: Vec<_> = buses
            .into_iter()
            .map(|bus| {
                let map = self.device_map.clone();
                let ignore_unmapped = self.ignore_unmapped;
                tokio::task::spawn_blocking(move || read_bus(&bus, &map, ignore_unmapped))
            })
            .collect();
        let mut readings = Vec::new();
        for task in tasks {
            readings.extend(task.await.map_err(|e| format!("reading a bus failed: {e}"))??);
        }
        Ok(readings)
    }

    fn events(&mut self, ctx: &SourceContext, readings: Vec<Reading>) -> Vec<Event> {
        let mut problems = Vec::new();
        let events = readings
            .into_iter()
            .map(|(serial, reading)| {
                let label = self.device_map.get(&serial).unwrap_or(&serial);
                match reading {
                    Ok(celsius) => ctx.create_event_prefixed(label, "ok", format!("{serial} Temperature C"), celsius),
                    Err(cause) => {
                        let text = format!("{serial}: {cause}");
                        problems.push(text.clone());
                        ctx.create_event_prefixed(label, "critical", text, None::<i64>)
                    }
                }
            })
            .collect();
        if problems.is_empty() {
            self.faults.worked(ctx);
        } else {
            self.faults.failed(ctx, problems.join("; "));
        }
        events
    }
}

/// The `w1_bus_master*` directories under `root`, sorted.
fn bus_masters(root: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(root).map_err(|e| format!("cannot read the directory: {e}"))?;
    let mut buses: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("w1_bus_master"))
        .map(|e| e.path())
        .collect();
    buses.sort();
    Ok(buses)
}

/// Reads every DS18B20 (`28-*`) on `bus` that is wanted, in serial order.
fn read_bus(bus: &Path, map: &BTreeMap<String, String>, ignore_unmapped: bool) -> Result<Vec<Reading>, String> {
    let entries = std::fs::read_dir(bus).map_err(|e| format!("cannot read {}: {e}", bus.display()))?;
    let mut serials: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("28-"))
        .filter(|name| !ignore_unmapped || map.contains_key(name))
        .collect();
    serials.sort();
    Ok(serials
        .into_iter()
        .map(|serial| {
            let reading = read_sensor(&bus.join(&serial).join("w1_slave"));
            (serial, reading)
        })
        .collect())
}

fn read_sensor(path: &Path) -> Result<f64, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_READ).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_w1_slave(&text)
}

/// The temperature in °C from a `w1_slave`'s two lines: the first must end
/// in the driver's CRC verdict `YES`, the second carries `t=` millidegrees.
pub(crate) fn parse_w1_slave(text: &str) -> Result<f64, String> {
    let mut lines = text.lines();
    let crc_line = lines.next().map(str::trim).unwrap_or("");
    if crc_line.is_empty() {
        return Err("empty reading (the sensor did not answer)".into());
    }
    match crc_line.rsplit(' ').next() {
        Some("YES") => {}
        Some("NO") => {
            return Err(format!(
            "CRC check failed ({crc_line}): the sensor's data was corrupted on the wire (check wiring and the pull-up)"
        ))
        }
        _ => return Err(format!("not a w1_therm reading: {crc_line:?}")),
    }
    let value_line = lines.next().unwrap_or("").trim();
    let Some((_, millis)) = value_line.rsplit_once("t=") else {
        return Err(format!("no t= in the reading: {value_line:?}"));
    };
    let millis: i64 = millis
        .trim()
        .parse()
        .map_err(|_| format!("t= is not a number: {value_line:?}"))?;
    Ok(millis as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::Scratch;
    use crate::services::fixture;

    fn sample(name: &str) -> String {
        String::from_utf8(fixture("ds18b20", name)).unwrap()
    }

    /// Dallas/Maxim CRC-8 (polynomial x^8 + x^5 + x^4 + 1, reflected).
    fn crc8(bytes: &[u8]) -> u8 {
        let mut crc = 0u8;
        for &b in bytes {
            let mut b = b;
            for _ in 0..8 {
                let mix = (crc ^ b) & 1;
                crc >>= 1;
                if mix != 0 {
                    crc ^= 0x8c;
                }
                b >>= 1;
            }
        }
        crc
    }

    const REAL: &[(&str, f64)] = &[
        ("23125.w1_slave", 23.125),
        ("21062.w1_slave", 21.062),
        ("17812.w1_slave", 17.812),
        ("23187.w1_slave", 23.187),
    ];

    #[test]
    fn real_samples_are_genuine_driver_output() {
        for (name, _) in REAL {
            let text = sample(name);
            let first = text.lines().next().unwrap();
            let (hex, verdict) = first.split_once(" : ").unwrap();
            let bytes: Vec<u8> = hex.split(' ').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
            assert_eq!(bytes.len(), 9, "{name}");
            assert_eq!(crc8(&bytes[..8]), bytes[8], "{name}: CRC of the scratchpad");
            assert_eq!(verdict, format!("crc={:02x} YES", bytes[8]), "{name}");
            let raw = i16::from_le_bytes([bytes[0], bytes[1]]) as i32;
            assert!(text.ends_with(&format!("t={}\n", raw * 1000 / 16)), "{name}");
        }
    }

    #[test]
    fn readings_parse_to_degrees() {
        for (name, celsius) in REAL {
            assert_eq!(parse_w1_slave(&sample(name)), Ok(*celsius), "{name}");
        }
    }

    #[test]
    fn a_failed_crc_is_an_error_not_a_temperature() {
        let text = sample("crc-no.w1_slave");
        let bytes = [0xffu8; 8];
        assert_ne!(crc8(&bytes), 0xff, "the sample really fails its CRC");
        let err = parse_w1_slave(&text).unwrap_err();
        assert!(err.starts_with("CRC check failed (ff ff"), "{err}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(parse_w1_slave("").unwrap_err().contains("did not answer"));
        assert!(parse_w1_slave("hello\n")
            .unwrap_err()
            .contains("not a w1_therm reading"));
        let no_t = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n";
        assert!(parse_w1_slave(no_t).unwrap_err().contains("no t="));
        let bad_t = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 t=abc\n";
        assert!(parse_w1_slave(bad_t).unwrap_err().contains("not a number"));
    }

    #[test]
    fn buses_are_walked_and_unmapped_sensors_can_be_ignored() {
        let s = Scratch::new("ds18b20");
        s.write("w1_bus_master1/28-00000623003b/w1_slave", &sample("23125.w1_slave"));
        s.write("w1_bus_master1/28-031655c9d5ff/w1_slave", &sample("crc-no.w1_slave"));
        s.write("w1_bus_master1/10-000802b4a6f1/w1_slave", &sample("17812.w1_slave"));
        s.write("w1_bus_master1/w1_master_slaves", "28-00000623003b\n");
        s.write("w1_bus_master2/28-000005e2fdc3/w1_slave", &sample("21062.w1_slave"));
        s.write("platform/other", "");
        let buses = bus_masters(&s.0).unwrap();
        assert_eq!(buses, vec![s.0.join("w1_bus_master1"), s.0.join("w1_bus_master2")]);

        let all = read_bus(&buses[0], &BTreeMap::new(), false).unwrap();
        let serials: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            serials,
            ["28-00000623003b", "28-031655c9d5ff"],
            "family 10 is not a DS18B20"
        );
        assert_eq!(all[0].1, Ok(23.125));
        assert!(all[1].1.as_ref().unwrap_err().starts_with("CRC check failed"));

        let map = BTreeMap::from([("28-031655c9d5ff".to_string(), "attic".to_string())]);
        let mapped = read_bus(&buses[0], &map, true).unwrap();
        assert_eq!(mapped.len(), 1);
        assert_eq!(mapped[0].0, "28-031655c9d5ff");

        assert!(bus_masters(&s.0.join("nowhere"))
            .unwrap_err()
            .starts_with("cannot read"));
    }
}
