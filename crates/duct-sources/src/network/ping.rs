//! `duct.sources.network.Ping`: ICMP echo to `destination`, Duct's
//! `.latency` (mean round trip, ms) and `.loss` (percent), plus
//! `.latency_max` (when `count` is more than 1).
//!
//! Options as Duct's Ping: `destination` (a name, an IPv4 or an IPv6
//! address; the source's `hostname` by default), `count` (5 requests a
//! tick, 0.2 s apart), `size` (Duct's meaning: the IPv4 packet's length,
//! 64 bytes), and `timeout`, the wait for each reply (1 s). The exchange
//! itself runs on the process's shared ICMP client ([`super::icmp`]).
//!
//! States: a destination that does not resolve gives a critical `.loss` of
//! 100 naming the cause, as Duct did; one that answers nothing gives a
//! critical `.loss` of 100 (Duct said ok); when no ICMP socket can be
//! opened, a critical `.loss` without a metric says what to grant.

use std::net::IpAddr;
use std::time::Duration;

use duct_core::config::seconds::Zero;
use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::icmp::{self, Exchange, Outcome};
use super::{ms, GRACE};

/// Requests of one tick are this far apart (Duct's `inter`).
const SPACING: Duration = Duration::from_millis(200);
/// The longest a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// IPv4 and ICMP headers: what `size` counts beyond the payload.
const HEADERS: u32 = 28;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// Name or address to ping; the source's hostname by default.
    destination: Option<String>,
    /// Echo requests per tick.
    count: u32,
    /// Seconds to wait for each reply.
    timeout: f64,
    /// Length of each request as an IPv4 packet, headers included.
    size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            destination: None,
            count: 5,
            timeout: 1.0,
            size: 64,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.network.Ping",
        "ICMP echo to `destination` (default: hostname): `count` requests (5) 0.2 s apart, each waited for \
         `timeout` s (1), of `size` bytes (64); unprivileged ICMP sockets where ping_group_range allows, \
         raw sockets (CAP_NET_RAW) otherwise",
        &[
            "(service).latency: mean round trip, ms",
            "(service).latency_max: slowest round trip, ms (when count > 1)",
            "(service).loss: requests unanswered, % (critical at 100, or when the destination does not resolve)",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let destination = o.destination.unwrap_or_else(|| args.settings.hostname.clone());
    if destination.trim().is_empty() {
        return Err(args.invalid("destination", "must name a host or an address"));
    }
    if !(1..=1000).contains(&o.count) {
        return Err(args.invalid("count", "must be between 1 and 1000"));
    }
    // The `timeout` key is also the common option, checked by the planner
    // when present; this is the default when it is not.
    let timeout = args.duration("timeout", o.timeout, Zero::Refused)?;
    if !(HEADERS..=65_535).contains(&o.size) {
        return Err(args.invalid("size", format!("must be between {HEADERS} and 65535 bytes")));
    }
    let literal = destination.trim_matches(['[', ']']).parse::<IpAddr>().ok();
    Ok(Box::new(Ping {
        destination,
        literal,
        count: o.count as u16,
        timeout,
        payload: (o.size - HEADERS) as usize,
    }))
}

pub struct Ping {
    destination: String,
    /// The destination when it is an address: no lookup at each tick.
    literal: Option<IpAddr>,
    count: u16,
    /// Wait for each reply.
    timeout: Duration,
    payload: usize,
}

impl Ping {
    /// The longest a tick can take: resolving, spacing the requests, and
    /// waiting for the last.
    fn worst_case(&self) -> Duration {
        let resolve = if self.literal.is_some() {
            Duration::ZERO
        } else {
            RESOLVE_TIMEOUT
        };
        resolve + SPACING * u32::from(self.count - 1) + self.timeout
    }

    async fn check(&self, ctx: &SourceContext) -> Vec<Event> {
        let host = &self.destination;
        let target = match self.literal {
            Some(ip) => ip,
            None => match resolve(host).await {
                Ok(ip) => ip,
                Err(reason) => {
                    return vec![ctx.create_event_prefixed(
                        "loss",
                        "critical",
                        format!("Unable to resolve {host}: {reason}"),
                        100,
                    )]
                }
            },
        };
        let exchange = Exchange {
            target,
            count: self.count,
            spacing: SPACING,
            timeout: self.timeout,
            payload: self.payload,
        };
        match icmp::ping(exchange).await {
            Ok(outcome) => events(ctx, host, self.count, &outcome),
            Err(e) => vec![ctx.create_event_prefixed("loss", "critical", e.to_string(), None::<f64>)],
        }
    }
}

async fn resolve(host: &str) -> Result<IpAddr, String> {
    let lookup = tokio::net::lookup_host((host, 0));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()).ok_or_else(|| "no address".to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs())),
    }
}

/// The events of one exchange.
fn events(ctx: &SourceContext, host: &str, count: u16, outcome: &Outcome) -> Vec<Event> {
    let received = outcome.rtts.len();
    let loss = 100.0 * (f64::from(count) - received as f64) / f64::from(count);
    if received == 0 {
        let why = match &outcome.send_error {
            Some(e) => format!("100% loss to {host}: {e}"),
            None => format!("100% loss to {host}: no reply to {count} requests"),
        };
        return vec![ctx.create_event_prefixed("loss", "critical", why, loss)];
    }
    let total: f64 = outcome.rtts.iter().map(|d| ms(*d)).sum();
    let max = outcome.rtts.iter().map(|d| ms(*d)).fold(0.0, f64::max);
    let mut description = format!("{}% loss to {host}", round2(loss));
    if let Some(e) = &outcome.send_error {
        description.push_str(&format!(" ({e})"));
    }
    let mut evs = vec![
        ctx.create_event_prefixed("loss", "ok", description, loss),
        ctx.create_event_prefixed("latency", "ok", format!("Latency to {host}"), total / received as f64),
    ];
    // With one request the slowest reply is the mean: not sent twice.
    if count > 1 {
        evs.push(ctx.create_event_prefixed("latency_max", "ok", format!("Slowest reply from {host}"), max));
    }
    evs
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Source for Ping {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.worst_case() + GRACE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;
    use duct_core::Metric;

    fn ms_(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn replies_give_loss_latency_and_the_slowest() {
        let (ctx, _) = context("ping");
        let outcome = Outcome {
            rtts: vec![ms_(10), ms_(30), ms_(20), ms_(20)],
            sent: 5,
            send_error: None,
        };
        let evs = events(&ctx, "web-1", 5, &outcome);
        let by = |s: &str| evs.iter().find(|e| e.service == s).unwrap();
        assert_eq!(by("ping.loss").metric, Some(Metric::Float(20.0)));
        assert_eq!(by("ping.loss").description, "20% loss to web-1");
        assert_eq!(by("ping.latency").metric, Some(Metric::Float(20.0)));
        assert_eq!(by("ping.latency_max").metric, Some(Metric::Float(30.0)));
        assert!(evs.iter().all(|e| e.state.as_deref() == Some("ok")));
    }

    #[test]
    fn no_reply_is_critical_with_full_loss() {
        let (ctx, _) = context("ping");
        let evs = events(&ctx, "gone", 3, &Outcome::default());
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].service, "ping.loss");
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        assert_eq!(evs[0].metric, Some(Metric::Float(100.0)));
        assert!(evs[0].description.contains("no reply to 3 requests"));
    }

    #[tokio::test]
    async fn an_unresolvable_destination_is_critical_loss_100() {
        let (ctx, _) = context("ping");
        let ping = Ping {
            destination: "no-such-host.invalid".into(),
            literal: None,
            count: 1,
            timeout: ms_(100),
            payload: 36,
        };
        let evs = ping.check(&ctx).await;
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        assert_eq!(evs[0].metric, Some(Metric::Int(100)));
        assert!(
            evs[0]
                .description
                .starts_with("Unable to resolve no-such-host.invalid: "),
            "{}",
            evs[0].description
        );
    }

    #[test]
    fn the_tick_deadline_covers_the_whole_exchange() {
        let ping = Ping {
            destination: "127.0.0.1".into(),
            literal: Some("127.0.0.1".parse().unwrap()),
            count: 5,
            timeout: Duration::from_secs(1),
            payload: 36,
        };
        assert_eq!(ping.tick_timeout(Duration::from_secs(1)), ms_(800 + 1000) + GRACE);
    }
}
