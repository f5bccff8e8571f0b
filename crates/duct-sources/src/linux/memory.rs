//! `duct.sources.linux.basic.Memory`: the fraction of memory in use, from
//! `/proc/meminfo`.

use duct_core::config::Diagnostic;
use duct_core::{NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSpec};

use super::host::{reported, Host, HostFile};
use super::{number, ParseError};

pub fn spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "duct.sources.linux.basic.Memory",
        "Memory in use as a fraction 0..1: (MemTotal - MemAvailable) / MemTotal (HOST_PROC/meminfo); kernels without MemAvailable (before 3.14) count MemFree + Buffers + Cached as available",
        &["(service): used fraction; the description gives used/total in kB"],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    Ok(Box::new(Memory::new(Host::of(args))))
}

/// What the Memory source needs of `/proc/meminfo`, in kB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemInfo {
    pub total_kb: u64,
    pub available_kb: u64,
}

impl MemInfo {
    pub fn used_kb(&self) -> u64 {
        self.total_kb.saturating_sub(self.available_kb)
    }

    pub fn used_fraction(&self) -> f64 {
        self.used_kb() as f64 / self.total_kb as f64
    }
}

/// Total and available memory. `MemAvailable` (Linux 3.14+) is the
/// kernel's own estimate; older kernels get Duct's approximation.
pub(crate) fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    let (mut total, mut available, mut free, mut buffers, mut cached) = (None, None, None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let (slot, name) = match key {
            "MemTotal" => (&mut total, "MemTotal"),
            "MemAvailable" => (&mut available, "MemAvailable"),
            "MemFree" => (&mut free, "MemFree"),
            "Buffers" => (&mut buffers, "Buffers"),
            "Cached" => (&mut cached, "Cached"),
            _ => continue,
        };
        let value = rest.split_ascii_whitespace().next().unwrap_or_default();
        *slot = Some(number(name, value)?);
    }
    let total_kb = total.filter(|t| *t > 0).ok_or(ParseError::Missing("MemTotal"))?;
    let available_kb = match available {
        Some(a) => a,
        None => free.ok_or(ParseError::Missing("MemFree"))? + buffers.unwrap_or(0) + cached.unwrap_or(0),
    };
    Ok(MemInfo { total_kb, available_kb })
}

pub(crate) struct Memory {
    meminfo: HostFile,
}

impl Memory {
    pub fn new(host: impl Into<Host>) -> Self {
        let host = host.into();
        Memory {
            meminfo: host.file(host.paths().proc("meminfo")),
        }
    }
}

impl Source for Memory {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let info = self.meminfo.parse(parse_meminfo).await;
            let events = info.map(|m| {
                vec![ctx.create_event(
                    "ok",
                    format!("Memory {}/{}", m.used_kb(), m.total_kb),
                    m.used_fraction(),
                )]
            });
            reported(ctx, events)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::{paths_in, Scratch};
    use crate::testing::context;
    use duct_core::Metric;

    const CAPTURED: &str = include_str!("../../tests/fixtures/linux/meminfo");
    const OLD: &str = include_str!("../../tests/fixtures/linux/meminfo-2.6.18");

    #[test]
    fn uses_mem_available_when_the_kernel_has_it() {
        let m = parse_meminfo(CAPTURED).unwrap();
        assert_eq!(
            m,
            MemInfo {
                total_kb: 24684092,
                available_kb: 24258376
            }
        );
        assert_eq!(m.used_kb(), 425716);
    }

    #[test]
    fn old_kernels_count_free_buffers_and_cached() {
        let m = parse_meminfo(OLD).unwrap();
        assert_eq!(m.total_kb, 2074084);
        assert_eq!(m.available_kb, 103960 + 166316 + 1235448);
        assert_eq!(m.used_fraction(), (2074084.0 - 1505724.0) / 2074084.0);
    }

    #[test]
    fn refuses_a_file_without_total() {
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), Err(ParseError::Missing("MemTotal")));
        assert_eq!(parse_meminfo("MemTotal: 0 kB\n"), Err(ParseError::Missing("MemTotal")));
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), Err(ParseError::Missing("MemFree")));
        assert!(matches!(
            parse_meminfo("MemTotal: lots kB\n"),
            Err(ParseError::Number { what: "MemTotal", .. })
        ));
    }

    #[tokio::test]
    async fn reports_the_used_fraction() {
        let dir = Scratch::new("mem");
        dir.write(
            "proc/meminfo",
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n",
        );
        let (ctx, _) = context("memory");
        let events = Memory::new(&paths_in(&dir.0)).get(&ctx).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].service, "memory");
        assert_eq!(events[0].metric, Some(Metric::Float(0.75)));
        assert_eq!(events[0].description, "Memory 750/1000");
    }
}
