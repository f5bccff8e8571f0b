//! `duct.sources.linux.basic.DiskIO`: per block device, operations and
//! bytes as counters (the router turns them into rates) and the average
//! time per read and per write since the previous tick, from
//! `/proc/diskstats`.

use std::collections::HashMap;

use duct_core::config::Diagnostic;
use duct_core::plan::StringList;
use duct_core::{Aggregation, Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::host::{reported, Host, HostFile};
use super::{counter_delta, number, ParseError, Selection};

/// `/proc/diskstats` counts sectors of 512 bytes whatever the device's own
/// sector size.
const SECTOR_BYTES: u64 = 512;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// Devices to report (`/dev/sda` or `sda`); all when absent.
    devices: Option<StringList>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.linux.basic.DiskIO",
        "Block device activity from HOST_PROC/diskstats; option devices (list, default all but loop and ram devices)",
        &[
            "(service)./dev/(device).reads: reads completed per second (Counter64 rate)",
            "(service)./dev/(device).writes: writes completed per second (Counter64 rate)",
            "(service)./dev/(device).read_bytes: bytes read per second (Counter64 rate)",
            "(service)./dev/(device).write_bytes: bytes written per second (Counter64 rate)",
            "(service)./dev/(device).read_latency: ms per read completed since the previous tick (since boot on the first; 0 when none)",
            "(service)./dev/(device).write_latency: ms per write completed since the previous tick (since boot on the first; 0 when none)",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    Ok(Box::new(DiskIo::new(Host::of(args), Selection::new(opts.devices))))
}

/// One line of `/proc/diskstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskStat<'a> {
    pub name: &'a str,
    pub reads: u64,
    pub read_sectors: u64,
    pub writes: u64,
    pub write_sectors: u64,
    /// Milliseconds spent reading and writing; absent from the short
    /// partition lines of kernels before 2.6.25.
    pub read_ms: Option<u64>,
    pub write_ms: Option<u64>,
}

/// One line of `/proc/diskstats`: major, minor and name, then 11 counters
/// (14 fields, Linux 2.6–4.17), 15 (18 fields, with discards, 4.18+) or 17
/// (20 fields, with flushes, 5.5+) — or, for partitions before 2.6.25,
/// just reads, sectors read, writes, sectors written. `None` for a blank
/// line.
pub(crate) fn parse_diskstats_line(line: &str) -> Result<Option<DiskStat<'_>>, ParseError> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(_major), Some(_minor), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
        return if line.trim().is_empty() {
            Ok(None)
        } else {
            Err(ParseError::short("a diskstats line", line))
        };
    };
    let mut n = [0u64; 8];
    let mut count = 0;
    for (slot, field) in n.iter_mut().zip(fields.by_ref()) {
        *slot = number("a diskstats counter", field)?;
        count += 1;
    }
    let stat = match count {
        4 => DiskStat {
            name,
            reads: n[0],
            read_sectors: n[1],
            writes: n[2],
            write_sectors: n[3],
            read_ms: None,
            write_ms: None,
        },
        // The remaining counters (in flight, busy time, discards, flushes)
        // are not reported; they need not even be numbers.
        8 if fields.count() >= 3 => DiskStat {
            name,
            reads: n[0],
            read_sectors: n[2],
            read_ms: Some(n[3]),
            writes: n[4],
            write_sectors: n[6],
            write_ms: Some(n[7]),
        },
        _ => return Err(ParseError::short("a diskstats line", line)),
    };
    Ok(Some(stat))
}

/// Milliseconds per operation between two readings of (operations,
/// milliseconds) — or since boot without a previous reading; 0 when no
/// operation completed in between (as iostat shows an idle disk).
pub(crate) fn latency_ms(previous: Option<(u64, u64)>, current: (u64, u64)) -> f64 {
    let (ops, ms) = match previous {
        Some((ops, ms)) => (counter_delta(ops, current.0), counter_delta(ms, current.1)),
        None => current,
    };
    if ops == 0 {
        0.0
    } else {
        ms as f64 / ops as f64
    }
}

/// Loop and RAM disks are rarely interesting and numerous (one loop
/// device per snap package), so they are left out unless listed.
fn skipped_by_default(name: &str) -> bool {
    name.starts_with("loop") || name.starts_with("ram")
}

/// The previous reading of one device, for latencies.
#[derive(Debug, Clone, Copy)]
struct Last {
    reads: u64,
    writes: u64,
    read_ms: u64,
    write_ms: u64,
    /// Read at the current tick; devices not seen are forgotten.
    seen: bool,
}

pub(crate) struct DiskIo {
    diskstats: HostFile,
    devices: Devices,
}

/// What the source knows of the devices between ticks.
struct Devices {
    selection: Selection,
    last: HashMap<String, Last>,
    /// `/dev/` + name, rebuilt per device without a new allocation.
    dev_name: String,
}

impl DiskIo {
    pub fn new(host: impl Into<Host>, selection: Selection) -> Self {
        let host = host.into();
        DiskIo {
            diskstats: host.file(host.paths().proc("diskstats")),
            devices: Devices {
                selection,
                last: HashMap::new(),
                dev_name: String::new(),
            },
        }
    }
}

impl Devices {
    fn wanted(&self, name: &str) -> bool {
        let listed = self.selection.lists(&self.dev_name) || self.selection.lists(name);
        listed || (self.selection.admits(&self.dev_name) && !skipped_by_default(name))
    }

    fn report(&mut self, text: &str, ctx: &SourceContext) -> Result<Vec<Event>, ParseError> {
        let mut events = Vec::new();
        for last in self.last.values_mut() {
            last.seen = false;
        }
        for line in text.lines() {
            let Some(stat) = parse_diskstats_line(line)? else {
                continue;
            };
            self.dev_name.clear();
            self.dev_name.push_str("/dev/");
            self.dev_name.push_str(stat.name);
            if !self.wanted(stat.name) {
                continue;
            }
            let dev = self.dev_name.as_str();
            if let (Some(read_ms), Some(write_ms)) = (stat.read_ms, stat.write_ms) {
                let previous = self.last.get(stat.name).copied();
                let read = latency_ms(previous.map(|p| (p.reads, p.read_ms)), (stat.reads, read_ms));
                let write = latency_ms(previous.map(|p| (p.writes, p.write_ms)), (stat.writes, write_ms));
                let now = Last {
                    reads: stat.reads,
                    writes: stat.writes,
                    read_ms,
                    write_ms,
                    seen: true,
                };
                match self.last.get_mut(stat.name) {
                    Some(slot) => *slot = now,
                    None => {
                        self.last.insert(stat.name.to_string(), now);
                    }
                }
                events.push(ctx.create_event_prefixed(&format!("{dev}.read_latency"), "ok", "Read latency (ms)", read));
                events.push(ctx.create_event_prefixed(
                    &format!("{dev}.write_latency"),
                    "ok",
                    "Write latency (ms)",
                    write,
                ));
            }
            let counters = [
                ("reads", "Reads", stat.reads),
                ("read_bytes", "Read Bps", stat.read_sectors.wrapping_mul(SECTOR_BYTES)),
                ("writes", "Writes", stat.writes),
                (
                    "write_bytes",
                    "Write Bps",
                    stat.write_sectors.wrapping_mul(SECTOR_BYTES),
                ),
            ];
            for (metric, description, value) in counters {
                events.push(
                    ctx.create_event_prefixed(&format!("{dev}.{metric}"), "ok", description, value)
                        .aggregated(Aggregation::Counter64),
                );
            }
        }
        self.last.retain(|_, l| l.seen);
        Ok(events)
    }
}

impl Source for DiskIo {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let devices = &mut self.devices;
            let events = self.diskstats.parse(|text| devices.report(text, ctx)).await;
            reported(ctx, events)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::{paths_in, Scratch};
    use crate::testing::context;
    use duct_core::pipeline::Aggregator;
    use duct_core::Metric;

    const FIELDS_20: &str = include_str!("../../tests/fixtures/linux/diskstats-20");
    const FIELDS_18: &str = include_str!("../../tests/fixtures/linux/diskstats-18");
    const FIELDS_14: &str = include_str!("../../tests/fixtures/linux/diskstats-14");
    const WRAP_BEFORE: &str = include_str!("../../tests/fixtures/linux/diskstats-wrap-before");
    const WRAP_AFTER: &str = include_str!("../../tests/fixtures/linux/diskstats-wrap-after");

    fn all(text: &str) -> Vec<DiskStat<'_>> {
        text.lines().filter_map(|l| parse_diskstats_line(l).unwrap()).collect()
    }

    #[test]
    fn reads_the_20_field_form_of_linux_5_5() {
        let stats = all(FIELDS_20);
        let vda = stats.iter().find(|s| s.name == "vda").unwrap();
        assert_eq!(
            *vda,
            DiskStat {
                name: "vda",
                reads: 27134,
                read_sectors: 2463210,
                read_ms: Some(8835),
                writes: 9145,
                write_sectors: 7415952,
                write_ms: Some(26157),
            }
        );
    }

    #[test]
    fn reads_the_18_field_form_of_linux_4_18() {
        let stats = all(FIELDS_18);
        assert_eq!(stats.len(), 7);
        let nvme = stats.iter().find(|s| s.name == "nvme0n1").unwrap();
        assert_eq!(
            (nvme.reads, nvme.read_sectors, nvme.read_ms),
            (8803410, 541295482, Some(2280112))
        );
        assert_eq!(
            (nvme.writes, nvme.write_sectors, nvme.write_ms),
            (37282291, 1623950042, Some(31205584))
        );
    }

    #[test]
    fn reads_the_14_field_form_and_old_partition_lines() {
        let stats = all(FIELDS_14);
        let sda = stats.iter().find(|s| s.name == "sda").unwrap();
        assert_eq!((sda.reads, sda.write_ms), (1035221, Some(42131901)));
        // 2.6.18 partition lines have four counters and no times.
        let sda1 = stats.iter().find(|s| s.name == "sda1").unwrap();
        assert_eq!(
            *sda1,
            DiskStat {
                name: "sda1",
                reads: 1047121,
                read_sectors: 28870850,
                writes: 5434412,
                write_sectors: 43618928,
                read_ms: None,
                write_ms: None,
            }
        );
    }

    #[test]
    fn refuses_truncated_lines() {
        assert!(parse_diskstats_line("   8 0 sda 1 2 3").is_err());
        assert!(parse_diskstats_line("   8 0").is_err());
        assert!(matches!(
            parse_diskstats_line("8 0 sda 1 2 x 4 5 6 7 8 9 10 11"),
            Err(ParseError::Number { .. })
        ));
        assert_eq!(parse_diskstats_line("  "), Ok(None));
    }

    #[test]
    fn latency_is_time_per_operation_between_readings() {
        assert_eq!(latency_ms(None, (100, 250)), 2.5, "since boot");
        assert_eq!(latency_ms(None, (0, 0)), 0.0);
        assert_eq!(latency_ms(Some((100, 250)), (110, 300)), 5.0);
        assert_eq!(latency_ms(Some((100, 250)), (100, 250)), 0.0, "idle");
    }

    #[test]
    fn millisecond_counters_wrap_at_32_bits() {
        let before = all(WRAP_BEFORE)[0];
        let after = all(WRAP_AFTER)[0];
        let prev = Some((before.reads, before.read_ms.unwrap()));
        // 296 ms to the wrap and 704 after it, over 100 reads.
        assert_eq!(latency_ms(prev, (after.reads, after.read_ms.unwrap())), 10.0);
        let prev = Some((before.writes, before.write_ms.unwrap()));
        assert_eq!(latency_ms(prev, (after.writes, after.write_ms.unwrap())), 5.1);
    }

    fn find<'e>(events: &'e [Event], service: &str) -> &'e Event {
        events.iter().find(|e| e.service == service).unwrap_or_else(|| {
            panic!(
                "no {service} in {:?}",
                events.iter().map(|e| &e.service).collect::<Vec<_>>()
            )
        })
    }

    #[tokio::test]
    async fn reports_counters_and_latencies_per_device() {
        let dir = Scratch::new("diskio");
        dir.write("proc/diskstats", WRAP_BEFORE);
        let (ctx, _) = context("io");
        let mut src = DiskIo::new(&paths_in(&dir.0), Selection::default());
        let mut agg = Aggregator::new();
        let mut first = src.get(&ctx).await.unwrap();
        first.iter_mut().for_each(|e| e.time = 100.0);
        assert_eq!(
            find(&first, "io./dev/sdc.reads").aggregation,
            Some(Aggregation::Counter64)
        );
        assert_eq!(
            find(&first, "io./dev/sdc.read_bytes").metric,
            Some(Metric::Int(8000 * 512))
        );
        assert_eq!(
            find(&first, "io./dev/sdc.read_latency").metric,
            Some(Metric::Float(4294967000.0 / 1000.0))
        );
        agg.apply(&mut first);
        assert_eq!(first.len(), 2, "counters prime the aggregator; latencies pass");

        dir.write("proc/diskstats", WRAP_AFTER);
        let mut second = src.get(&ctx).await.unwrap();
        second.iter_mut().for_each(|e| e.time = 102.0);
        agg.apply(&mut second);
        assert_eq!(second.len(), 6);
        assert_eq!(
            find(&second, "io./dev/sdc.read_latency").metric,
            Some(Metric::Float(10.0))
        );
        assert_eq!(
            find(&second, "io./dev/sdc.write_latency").metric,
            Some(Metric::Float(5.1))
        );
        assert_eq!(find(&second, "io./dev/sdc.reads").metric, Some(Metric::Float(50.0)));
        assert_eq!(
            find(&second, "io./dev/sdc.read_bytes").metric,
            Some(Metric::Float(800.0 * 512.0 / 2.0))
        );
        assert_eq!(find(&second, "io./dev/sdc.writes").metric, Some(Metric::Float(5.0)));
    }

    #[tokio::test]
    async fn skips_loop_and_ram_devices_unless_listed() {
        let dir = Scratch::new("diskio-select");
        dir.write("proc/diskstats", FIELDS_14);
        let (ctx, _) = context("io");
        let events = DiskIo::new(&paths_in(&dir.0), Selection::default())
            .get(&ctx)
            .await
            .unwrap();
        let mut devices: Vec<&str> = events
            .iter()
            .filter_map(|e| e.service.strip_prefix("io.")?.strip_suffix(".reads"))
            .collect();
        devices.sort_unstable();
        assert_eq!(devices, ["/dev/hda", "/dev/hda1", "/dev/sda", "/dev/sda1", "/dev/sdb"]);
        // Partitions of old kernels have no times, hence no latencies.
        assert!(!events.iter().any(|e| e.service == "io./dev/sda1.read_latency"));

        let listed = Selection::new(Some(StringList(vec!["/dev/sdb".into(), "loop0".into()])));
        let events = DiskIo::new(&paths_in(&dir.0), listed).get(&ctx).await.unwrap();
        let services: Vec<&str> = events.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(events.len(), 12, "{services:?}");
        assert!(services.contains(&"io./dev/loop0.writes"));
        assert!(services.contains(&"io./dev/sdb.write_latency"));
    }
}
