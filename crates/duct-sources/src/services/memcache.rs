//! `duct.sources.database.memcache.Memcache`: memcached's `stats` over
//! TCP, the figures Duct reported under Duct's names (`_` → `.`).
//!
//! Events: `(service).state`, 1 when the server answered (0 and critical,
//! with the cause, when it did not: Duct's convention); the counters Duct
//! chose as `Counter64` rates (hits, misses, commands, bytes, items,
//! evictions); and the gauges `curr.connections`, `curr.items`,
//! `hash.bytes`, `bytes`. A stat the server does not report (older
//! versions lack the touch and reclaim ones) is left out.

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::conn::shown;
use super::{budget, host_option, port_option, Conn, Faults, ServiceError, DEFAULT_TIMEOUT, MAX_REPLY_BYTES};

/// The stats Duct turned into rates, in Duct's order.
const COUNTERS: &[&str] = &[
    "reclaimed",
    "evictions",
    "total_items",
    "touch_hits",
    "touch_misses",
    "delete_misses",
    "delete_hits",
    "incr_hits",
    "incr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "get_misses",
    "get_hits",
    "decr_misses",
    "decr_hits",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_get",
    "bytes_written",
    "bytes_read",
];

/// The stats Duct sent as they are.
const GAUGES: &[&str] = &["curr_connections", "curr_items", "hash_bytes", "bytes"];

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    host: String,
    port: i64,
    /// Seconds the whole conversation may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "127.0.0.1".into(),
            port: 11211,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.database.memcache.Memcache",
        "memcached `stats` over TCP: `host` (127.0.0.1), `port` (11211), `timeout`",
        &[
            "(service).state: 1 when the server answered, 0 and critical (with the cause) when not",
            "(service).(stat with _ as .): Counter64 rates of reclaimed, evictions, total_items, touch_hits, \
             touch_misses, delete_misses, delete_hits, incr_hits, incr_misses, cas_hits, cas_misses, cas_badval, \
             get_misses, get_hits, decr_misses, decr_hits, cmd_set, cmd_flush, cmd_touch, cmd_get, bytes_written, \
             bytes_read",
            "(service).curr.connections, .curr.items, .hash.bytes, .bytes: as reported",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    Ok(Box::new(Memcache {
        host: host_option(args, o.host)?,
        port: port_option(args, o.port)?,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct Memcache {
    host: String,
    port: u16,
    budget: Duration,
    faults: Faults,
}

service_source!(Memcache, counters);

impl Memcache {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let stats = match self.stats().await {
            Ok(stats) => stats,
            Err(e) => {
                let text = format!("{}:{} - {e}", self.host, self.port);
                self.faults.failed(ctx, &text);
                return vec![ctx.create_event_prefixed("state", "critical", text, 0)];
            }
        };
        self.faults.worked(ctx);
        let mut events = vec![ctx.create_event_prefixed("state", "ok", "Connection", 1)];
        let find = |key: &str| stats.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        for (keys, counter) in [(COUNTERS, true), (GAUGES, false)] {
            for key in keys {
                let Some(value) = find(key) else { continue };
                let ev = ctx.create_event_prefixed(&key.replace('_', "."), "ok", describe(key), value);
                events.push(if counter {
                    ev.aggregated(Aggregation::Counter64)
                } else {
                    ev
                });
            }
        }
        events
    }

    async fn stats(&self) -> Result<Vec<(String, u64)>, ServiceError> {
        let mut conn = Conn::open(&self.host, self.port, self.budget, MAX_REPLY_BYTES, None).await?;
        conn.send(b"stats\r\n", "`stats`").await?;
        // Anything but a STAT line ends the reply, so that a server that
        // is not memcached is told at its first line, not at the deadline.
        let (lines, end) = conn
            .lines_until("the reply to `stats`", |l| !l.starts_with("STAT "))
            .await?;
        if is_error(&end) {
            return Err(ServiceError::Refused(end));
        }
        if end != "END" {
            return Err(ServiceError::Garbage {
                doing: "to `stats`".into(),
                detail: format!("{} is not a STAT line", shown(&end)),
            });
        }
        parse_stats(&lines).map_err(|detail| ServiceError::Garbage {
            doing: "to `stats`".into(),
            detail,
        })
    }
}

/// memcached's answers to a request it cannot serve.
fn is_error(line: &str) -> bool {
    line == "ERROR" || line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR")
}

/// Duct's description: the key capitalised with spaces (`Total items`).
fn describe(key: &str) -> String {
    let mut text = key.replace('_', " ");
    if let Some(first) = text.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    text
}

/// The numeric stats of a `stats` reply (`STAT name value` lines, before
/// `END`). Values that are not whole numbers (`version`, `rusage_user`)
/// are left out; a line that is not a `STAT` means this is not memcached.
pub(crate) fn parse_stats(lines: &[String]) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for line in lines {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("STAT"), Some(name), Some(value), None) => {
                if let Ok(v) = value.parse() {
                    out.push((name.to_string(), v));
                }
            }
            (Some("STAT"), ..) => {}
            _ => return Err(format!("{} is not a STAT line", shown(line))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;
    use crate::testing::context;

    fn lines(name: &str) -> Vec<String> {
        let text = String::from_utf8(fixture("memcache", name)).unwrap();
        text.lines().take_while(|l| *l != "END").map(str::to_string).collect()
    }

    #[test]
    fn stats_of_memcached_1_6_parse() {
        let stats = parse_stats(&lines("stats-1.6.18.txt")).unwrap();
        let get = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        // One set, one hit and one miss, one incr of a missing key.
        assert_eq!(get("cmd_get"), Some(2));
        assert_eq!(get("cmd_set"), Some(1));
        assert_eq!(get("get_hits"), Some(1));
        assert_eq!(get("get_misses"), Some(1));
        assert_eq!(get("incr_misses"), Some(1));
        assert_eq!(get("curr_items"), Some(1));
        assert_eq!(get("hash_bytes"), Some(524288));
        assert_eq!(get("version"), None, "not a number");
        assert_eq!(get("rusage_user"), None, "not a whole number");
        for key in COUNTERS.iter().chain(GAUGES) {
            assert!(get(key).is_some(), "memcached 1.6 reports {key}");
        }
    }

    #[test]
    fn replies_that_are_not_stats_are_refused() {
        let error = String::from_utf8(fixture("memcache", "error.txt")).unwrap();
        assert!(is_error(error.trim_end()));
        assert!(parse_stats(&["HTTP/1.1 400 Bad Request".into()]).is_err());
        assert!(parse_stats(&[]).unwrap().is_empty());
    }

    #[test]
    fn names_and_descriptions_are_ducts() {
        assert_eq!(describe("total_items"), "Total items");
        assert_eq!("curr_connections".replace('_', "."), "curr.connections");
    }

    #[tokio::test]
    async fn a_refused_connection_is_state_zero_and_critical() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (ctx, _) = context("mc");
        let mut source = Memcache {
            host: "127.0.0.1".into(),
            port,
            budget: Duration::from_secs(5),
            faults: Faults::default(),
        };
        let evs = source.check(&ctx).await;
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].service, "mc.state");
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        assert_eq!(evs[0].metric, Some(duct_core::Metric::Int(0)));
        assert!(
            evs[0].description.contains("connection refused"),
            "{}",
            evs[0].description
        );
    }
}
