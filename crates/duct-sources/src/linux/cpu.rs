//! `duct.sources.linux.basic.CPU`: how busy the processors were since the
//! previous tick, overall and per core, from the `cpu` lines of
//! `/proc/stat`. The first tick only primes the counters.

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::host::{reported, Host, HostFile};
use super::{number, HostError, ParseError};

/// The columns of a `cpu` line, in the kernel's order; also the metric
/// names. Kernels before 2.6.33 print fewer (7 before 2.6.11, 8 before
/// 2.6.24): the missing ones read as zero, as in Duct.
pub(crate) const COLUMNS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];
const IDLE: usize = 3;
const IOWAIT: usize = 4;
/// `guest` and `guest_nice` are already counted in `user` and `nice`.
const GUEST: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// Report every core too (`coreN`, `coreN.(type)`); off saves 11 events
    /// per core on large machines.
    per_core: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { per_core: true }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.linux.basic.CPU",
        "Processor use since the previous tick, as a fraction 0..1, overall and per core (HOST_PROC/stat); the first tick only primes",
        &[
            "(service): busy fraction (all but idle and iowait)",
            "(service).(type): fraction spent in user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice",
            "(service).coreN: busy fraction of core N (option per_core, default true)",
            "(service).coreN.(type): fraction of core N by type",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    Ok(Box::new(Cpu::new(Host::of(args), opts.per_core)))
}

/// Which line of `/proc/stat`: the `cpu` total or one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuId {
    All,
    Core(u32),
}

/// One `cpu` line: the time spent in each state since boot, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    pub id: CpuId,
    pub ticks: [u64; 10],
}

/// Puts every `cpu` line of `/proc/stat` in `out` (cleared first).
pub(crate) fn parse_stat(text: &str, out: &mut Vec<CpuTimes>) -> Result<(), ParseError> {
    out.clear();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let id = if rest.starts_with([' ', '\t']) {
            CpuId::All
        } else {
            let Some(n) = fields.next().and_then(|n| n.parse().ok()) else {
                continue;
            };
            CpuId::Core(n)
        };
        let mut ticks = [0u64; 10];
        let mut count = 0;
        for (slot, field) in ticks.iter_mut().zip(fields) {
            *slot = number("cpu time", field)?;
            count += 1;
        }
        if count < 4 {
            return Err(ParseError::short("a cpu line", line));
        }
        out.push(CpuTimes { id, ticks });
    }
    if out.is_empty() {
        return Err(ParseError::Missing("cpu"));
    }
    Ok(())
}

/// How one processor spent the time between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuShares {
    /// Everything but idle and iowait, as a fraction of the total.
    pub busy: f64,
    /// Each column as a fraction of the total.
    pub by_column: [f64; 10],
}

/// The shares between `previous` and `current`, or `None` when no time was
/// counted (the same reading twice, a core brought back online with reset
/// counters). A column that went backwards (iowait may, on some kernels)
/// counts as zero.
pub(crate) fn shares(previous: &[u64; 10], current: &[u64; 10]) -> Option<CpuShares> {
    let mut delta = [0u64; 10];
    for (d, (p, c)) in delta.iter_mut().zip(previous.iter().zip(current)) {
        *d = c.saturating_sub(*p);
    }
    // Summed as floats: counters near 2^64 (a corrupt or hostile file)
    // would overflow an integer sum.
    let total: f64 = delta[..GUEST].iter().map(|&d| d as f64).sum();
    if total == 0.0 {
        return None;
    }
    let idle = delta[IDLE] as f64 + delta[IOWAIT] as f64;
    let mut by_column = [0.0; 10];
    for (share, d) in by_column.iter_mut().zip(delta) {
        *share = d as f64 / total;
    }
    Some(CpuShares {
        busy: ((total - idle) / total).max(0.0),
        by_column,
    })
}

pub(crate) struct Cpu {
    stat: HostFile,
    per_core: bool,
    /// The previous reading, to difference against; swapped with `current`
    /// every tick so neither is reallocated.
    previous: Vec<CpuTimes>,
    current: Vec<CpuTimes>,
}

impl Cpu {
    pub fn new(host: impl Into<Host>, per_core: bool) -> Self {
        let host = host.into();
        Cpu {
            stat: host.file(host.paths().proc("stat")),
            per_core,
            previous: Vec::new(),
            current: Vec::new(),
        }
    }

    async fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, HostError> {
        let current = &mut self.current;
        self.stat.parse(|text| parse_stat(text, current)).await?;
        let mut events = Vec::new();
        for (i, now) in self.current.iter().enumerate() {
            let core = match now.id {
                CpuId::All => None,
                CpuId::Core(n) if self.per_core => Some(n),
                CpuId::Core(_) => continue,
            };
            // Lines come in the same order every time unless a core went
            // offline; search only then.
            let before = match self.previous.get(i) {
                Some(p) if p.id == now.id => Some(p),
                _ => self.previous.iter().find(|p| p.id == now.id),
            };
            let Some(s) = before.and_then(|b| shares(&b.ticks, &now.ticks)) else {
                continue;
            };
            let prefix = core.map(|n| format!("core{n}"));
            for (name, share) in COLUMNS.iter().zip(s.by_column) {
                let service = match &prefix {
                    Some(p) => format!("{p}.{name}"),
                    None => (*name).to_string(),
                };
                events.push(ctx.create_event_prefixed(
                    &service,
                    "ok",
                    format!("CPU {name} {}%", percent(share)),
                    share,
                ));
            }
            events.push(ctx.create_event_prefixed(
                prefix.as_deref().unwrap_or(""),
                "ok",
                format!("CPU {}%", percent(s.busy)),
                s.busy,
            ));
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        Ok(events)
    }
}

/// A share as a whole percentage for descriptions (truncated, as Duct did).
fn percent(share: f64) -> i64 {
    (share * 100.0) as i64
}

impl Source for Cpu {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let events = self.tick(ctx).await;
            reported(ctx, events)
        })
    }

    fn needs_two_ticks(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::{paths_in, Scratch};
    use crate::testing::context;
    use duct_core::Metric;

    const CAPTURED: &str = include_str!("../../tests/fixtures/linux/stat");
    const LATER: &str = include_str!("../../tests/fixtures/linux/stat-later");
    const MANY: &str = include_str!("../../tests/fixtures/linux/stat-64cores");
    const SEVEN: &str = include_str!("../../tests/fixtures/linux/stat-7col");
    const EIGHT: &str = include_str!("../../tests/fixtures/linux/stat-8col");

    fn parsed(text: &str) -> Vec<CpuTimes> {
        let mut out = Vec::new();
        parse_stat(text, &mut out).unwrap();
        out
    }

    #[test]
    fn parses_the_captured_file() {
        let cpus = parsed(CAPTURED);
        assert_eq!(cpus.len(), 3);
        assert_eq!(cpus[0].id, CpuId::All);
        assert_eq!(cpus[0].ticks, [31557, 0, 5484, 248097, 477, 0, 123, 50, 0, 0]);
        assert_eq!(cpus[2].id, CpuId::Core(1));
    }

    #[test]
    fn parses_many_cores() {
        let cpus = parsed(MANY);
        assert_eq!(cpus.len(), 65);
        assert_eq!(cpus[64].id, CpuId::Core(63));
        // The total line is the sum of the cores, column by column.
        for (col, name) in COLUMNS.iter().enumerate() {
            let sum: u64 = cpus[1..].iter().map(|c| c.ticks[col]).sum();
            assert_eq!(cpus[0].ticks[col], sum, "column {name}");
        }
    }

    #[test]
    fn old_kernels_have_fewer_columns_read_as_zero() {
        let seven = parsed(SEVEN);
        assert_eq!(seven.len(), 5);
        assert_eq!(
            seven[0].ticks,
            [1195227, 3429, 406470, 232271810, 130839, 5034, 37396, 0, 0, 0]
        );
        let eight = parsed(EIGHT);
        assert_eq!(eight[1].ticks[7], 1893, "steal is the eighth column");
        assert_eq!(eight[1].ticks[8], 0);
    }

    #[test]
    fn refuses_text_without_cpu_lines() {
        let mut out = Vec::new();
        assert_eq!(parse_stat("intr 1 2\n", &mut out), Err(ParseError::Missing("cpu")));
        assert!(matches!(
            parse_stat("cpu  1 x 3 4\n", &mut out),
            Err(ParseError::Number { .. })
        ));
        assert!(matches!(
            parse_stat("cpu  1 2\n", &mut out),
            Err(ParseError::Short { .. })
        ));
    }

    #[test]
    fn shares_are_fractions_of_the_counted_time() {
        let prev = [100, 0, 50, 800, 50, 0, 0, 0, 10, 0];
        let cur = [160, 0, 70, 900, 50, 5, 5, 10, 40, 0];
        // Deltas: user 60, system 20, idle 100, irq 5, softirq 5, steal 10
        // = 200; guest (30, inside user) is not added again.
        let s = shares(&prev, &cur).unwrap();
        assert_eq!(s.busy, 0.5);
        assert_eq!(s.by_column[0], 0.3);
        assert_eq!(s.by_column[IDLE], 0.5);
        assert_eq!(s.by_column[GUEST], 0.15);
        assert_eq!(shares(&cur, &cur), None, "no time passed");
        // iowait going backwards counts as zero, not as a huge number.
        let mut back = cur;
        back[IOWAIT] -= 10;
        back[IDLE] += 100;
        let s = shares(&cur, &back).unwrap();
        assert_eq!(s.by_column[IOWAIT], 0.0);
        assert_eq!(s.busy, 0.0);
    }

    #[test]
    fn counters_near_the_top_of_u64_do_not_overflow_the_sum() {
        // Found by the `proc` fuzz target: jiffies summing past 2^64.
        let prev = [0u64; 10];
        let cur = [u64::MAX, 0, u64::MAX, u64::MAX, u64::MAX, 0, 0, 0, 0, 0];
        let s = shares(&prev, &cur).unwrap();
        assert!((s.busy - 0.5).abs() < 1e-9, "{s:?}");
        assert!(s.by_column.iter().all(|f| f.is_finite() && (0.0..=1.0).contains(f)));
    }

    #[tokio::test]
    async fn primes_then_reports_overall_and_per_core() {
        let dir = Scratch::new("cpu");
        dir.write("proc/stat", CAPTURED);
        let (ctx, _) = context("cpu");
        let mut src = Cpu::new(&paths_in(&dir.0), true);
        assert!(src.needs_two_ticks());
        assert!(src.get(&ctx).await.unwrap().is_empty(), "the first tick primes");
        dir.write("proc/stat", LATER);
        let events = src.get(&ctx).await.unwrap();
        assert_eq!(events.len(), 33, "11 for the total and for each of 2 cores");
        let metric = |s: &str| -> f64 {
            let ev = events
                .iter()
                .find(|e| e.service == s)
                .unwrap_or_else(|| panic!("no {s}"));
            match ev.metric {
                Some(Metric::Float(v)) => v,
                other => panic!("{s}: {other:?}"),
            }
        };
        // stat-later adds 150 user, 50 system, 300 idle to the total; core0
        // gets 100 user + 100 idle, core1 50 user, 50 system, 200 idle.
        assert_eq!(metric("cpu"), 0.4);
        assert_eq!(metric("cpu.user"), 0.3);
        assert_eq!(metric("cpu.idle"), 0.6);
        assert_eq!(metric("cpu.steal"), 0.0);
        assert_eq!(metric("cpu.core0"), 0.5);
        assert_eq!(metric("cpu.core1"), 1.0 / 3.0);
        assert_eq!(metric("cpu.core1.system"), 50.0 / 300.0);
        let total = events.iter().find(|e| e.service == "cpu").unwrap();
        assert_eq!(total.description, "CPU 40%");

        // Counters that went backwards (another file) give nothing rather
        // than nonsense.
        dir.write("proc/stat", CAPTURED);
        assert!(src.get(&ctx).await.unwrap().is_empty());

        let mut quiet = Cpu::new(&paths_in(&dir.0), false);
        quiet.get(&ctx).await.unwrap();
        dir.write("proc/stat", LATER);
        let events = quiet.get(&ctx).await.unwrap();
        assert_eq!(events.len(), 11);
        assert!(events.iter().all(|e| !e.service.contains("core")));
    }
}
