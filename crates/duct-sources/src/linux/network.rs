//! `duct.sources.linux.basic.Network`: bytes, packets and errors per
//! interface, received and transmitted, as counters the router turns into
//! rates, from `/proc/net/dev`.
//!
//! Duct read the receive columns as `tx_*` and the transmit columns as
//! `rx_*`; here `rx` is what the interface received.

use duct_core::config::Diagnostic;
use duct_core::plan::StringList;
use duct_core::{Aggregation, Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::host::{reported, Host, HostFile};
use super::{number, ParseError, Selection};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// Interfaces to report; all when absent.
    interfaces: Option<StringList>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.linux.basic.Network",
        "Interface traffic from HOST_PROC/net/dev (HOST_PROC/1/net/dev, the host's, when HOST_PROC is set); option interfaces (list, default all)",
        &[
            "(service).(interface).rx_bytes: bytes received per second (Counter64 rate)",
            "(service).(interface).rx_packets: packets received per second (Counter64 rate)",
            "(service).(interface).rx_errors: receive errors per second (Counter64 rate)",
            "(service).(interface).tx_bytes: bytes transmitted per second (Counter64 rate)",
            "(service).(interface).tx_packets: packets transmitted per second (Counter64 rate)",
            "(service).(interface).tx_errors: transmit errors per second (Counter64 rate)",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    Ok(Box::new(Network::new(Host::of(args), Selection::new(opts.interfaces))))
}

/// One interface's line of `/proc/net/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetDev<'a> {
    pub name: &'a str,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
}

/// One line of `/proc/net/dev`; `None` for the two header lines. The name
/// ends at the colon, which it may touch (names of 6 characters or more),
/// as may the first counter on old kernels (`eth1:3193571870`).
pub(crate) fn parse_net_dev_line(line: &str) -> Result<Option<NetDev<'_>>, ParseError> {
    // Interface names cannot contain a colon; the header lines have none.
    let Some((name, counters)) = line.split_once(':') else {
        return Ok(None);
    };
    let mut n = [0u64; 11];
    let mut count = 0;
    for (slot, field) in n.iter_mut().zip(counters.split_ascii_whitespace()) {
        *slot = number("a net/dev counter", field)?;
        count += 1;
    }
    if count < n.len() {
        return Err(ParseError::short("an interface", line));
    }
    // Receive: bytes packets errs drop fifo frame compressed multicast;
    // transmit: bytes packets errs ...
    Ok(Some(NetDev {
        name: name.trim(),
        rx_bytes: n[0],
        rx_packets: n[1],
        rx_errors: n[2],
        tx_bytes: n[8],
        tx_packets: n[9],
        tx_errors: n[10],
    }))
}

pub(crate) struct Network {
    net_dev: HostFile,
    interfaces: Selection,
}

impl Network {
    pub fn new(host: impl Into<Host>, interfaces: Selection) -> Self {
        let host = host.into();
        Network {
            net_dev: host.first_of(host.paths().proc_per_namespace("net/dev")),
            interfaces,
        }
    }
}

fn report(text: &str, interfaces: &Selection, ctx: &SourceContext) -> Result<Vec<Event>, ParseError> {
    let mut events = Vec::new();
    for line in text.lines() {
        let Some(dev) = parse_net_dev_line(line)? else {
            continue;
        };
        if !interfaces.admits(dev.name) {
            continue;
        }
        let name = dev.name;
        let counters = [
            ("rx_bytes", "RX bytes", dev.rx_bytes),
            ("rx_packets", "RX packets", dev.rx_packets),
            ("rx_errors", "RX errors", dev.rx_errors),
            ("tx_bytes", "TX bytes", dev.tx_bytes),
            ("tx_packets", "TX packets", dev.tx_packets),
            ("tx_errors", "TX errors", dev.tx_errors),
        ];
        for (metric, what, value) in counters {
            events.push(
                ctx.create_event_prefixed(
                    &format!("{name}.{metric}"),
                    "ok",
                    format!("Network {name} {what}/sec"),
                    value,
                )
                .aggregated(Aggregation::Counter64),
            );
        }
    }
    Ok(events)
}

impl Source for Network {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let interfaces = &self.interfaces;
            let events = self.net_dev.parse(|text| report(text, interfaces, ctx)).await;
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

    const CAPTURED: &str = include_str!("../../tests/fixtures/linux/net-dev");
    const LONG: &str = include_str!("../../tests/fixtures/linux/net-dev-long");
    const WRAP_BEFORE: &str = include_str!("../../tests/fixtures/linux/net-dev-wrap-before");
    const WRAP_AFTER: &str = include_str!("../../tests/fixtures/linux/net-dev-wrap-after");

    fn all(text: &str) -> Vec<NetDev<'_>> {
        text.lines().filter_map(|l| parse_net_dev_line(l).unwrap()).collect()
    }

    #[test]
    fn receive_columns_come_first() {
        let devs = all(CAPTURED);
        let names: Vec<&str> = devs.iter().map(|d| d.name).collect();
        assert_eq!(names, ["lo", "ifb0", "ifb1", "eth0"]);
        assert_eq!(
            devs[3],
            NetDev {
                name: "eth0",
                rx_bytes: 121229090,
                rx_packets: 6794,
                rx_errors: 0,
                tx_bytes: 581099,
                tx_packets: 6372,
                tx_errors: 0,
            }
        );
    }

    #[test]
    fn names_and_counters_may_touch_the_colon() {
        let devs = all(LONG);
        let names: Vec<&str> = devs.iter().map(|d| d.name).collect();
        assert_eq!(names, ["lo", "enp0s31f6", "vethab12cd34ef5", "eth1", "wlp2s0"]);
        assert_eq!(
            (devs[1].rx_bytes, devs[1].rx_errors, devs[1].tx_errors),
            (9812736512, 3, 1)
        );
        assert_eq!(devs[2].tx_bytes, 19283712);
        assert_eq!((devs[3].rx_bytes, devs[3].rx_errors), (3193571870, 12));
        assert_eq!(
            (devs[3].tx_bytes, devs[3].tx_packets, devs[3].tx_errors),
            (412387123, 1938421, 7)
        );
    }

    #[test]
    fn refuses_short_lines() {
        assert!(parse_net_dev_line("  eth0: 1 2 3").is_err());
        assert!(parse_net_dev_line("  eth0: 1 2 3 4 5 6 7 8 x 10 11 12 13 14 15 16").is_err());
    }

    #[tokio::test]
    async fn rates_survive_a_counter_wrap() {
        let dir = Scratch::new("net");
        dir.write("proc/net/dev", WRAP_BEFORE);
        let (ctx, _) = context("net");
        let mut src = Network::new(&paths_in(&dir.0), Selection::default());
        let mut agg = Aggregator::new();
        let mut first = src.get(&ctx).await.unwrap();
        assert_eq!(first.len(), 6);
        first.iter_mut().for_each(|e| e.time = 10.0);
        agg.apply(&mut first);
        assert!(first.is_empty(), "the first sample only primes");
        dir.write("proc/net/dev", WRAP_AFTER);
        let mut second = src.get(&ctx).await.unwrap();
        second.iter_mut().for_each(|e| e.time = 12.0);
        agg.apply(&mut second);
        let rate = |s: &str| second.iter().find(|e| e.service == s).unwrap().metric;
        // 616 bytes up to 2^64, then 1000 more, over two seconds.
        assert_eq!(rate("net.eth0.rx_bytes"), Some(Metric::Float(808.0)));
        // Past 2^32 is no wrap for a 64-bit counter.
        assert_eq!(rate("net.eth0.rx_packets"), Some(Metric::Float(5.0)));
        assert_eq!(rate("net.eth0.tx_bytes"), Some(Metric::Float(1000.0)));
        assert_eq!(
            rate("net.eth0.rx_errors"),
            Some(Metric::Float(0.0)),
            "zero rates are kept"
        );
        let tx = second.iter().find(|e| e.service == "net.eth0.tx_packets").unwrap();
        assert_eq!(tx.description, "Network eth0 TX packets/sec");
    }

    #[tokio::test]
    async fn reads_only_the_listed_interfaces_of_the_host_namespace() {
        let dir = Scratch::new("net-host");
        // With HOST_PROC set, the host init's view comes first.
        dir.write("proc/1/net/dev", LONG);
        dir.write("proc/net/dev", CAPTURED);
        let (ctx, _) = context("net");
        let only = Selection::new(Some(StringList(vec!["eth1".into()])));
        let events = Network::new(&paths_in(&dir.0), only).get(&ctx).await.unwrap();
        let services: Vec<&str> = events.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(
            services,
            [
                "net.eth1.rx_bytes",
                "net.eth1.rx_packets",
                "net.eth1.rx_errors",
                "net.eth1.tx_bytes",
                "net.eth1.tx_packets",
                "net.eth1.tx_errors"
            ]
        );
        assert_eq!(events[0].metric, Some(Metric::Int(3193571870)));
    }
}
