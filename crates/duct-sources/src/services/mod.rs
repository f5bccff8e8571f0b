//! Service sources under Duct's names: Redis queues, memcached,
//! PostgreSQL, munin-node, NUT's upsd, unbound and Postfix, each speaking
//! its server's own protocol (or reading its spool) instead of shelling
//! out to a client as Duct did.
//!
//! One file per source family; the servers that talk a line-based
//! request/reply protocol over TCP share one client, [`conn::Conn`]
//! (PostgreSQL has its own, tokio-postgres), which bounds every
//! conversation by the source's time budget and every reply by a size
//! limit. Each source's parser is a pure function over what the server
//! sent, unit-tested on replies captured from the real server
//! (`tests/fixtures/<source>/`).
//!
//! Faults: a server that is down, hangs or answers garbage gives one
//! critical event per tick naming the cause (on the service Duct reported
//! failures on), and a warning in the log at most once per
//! [`LOG_EVERY`] while the fault lasts ([`Faults`]); the agent carries on.

/// The `Source` impl every service source shares: a tick is the type's
/// `async fn check(&mut self, ctx) -> Vec<Event>`, given its `budget` (the
/// conversation's time) and a second of grace before the runtime gives up
/// on it. `counters`: the source sends counters, so its first tick only
/// primes the rates.
macro_rules! service_source {
    ($source:ty) => {
        service_source!(@impl $source, false);
    };
    ($source:ty, counters) => {
        service_source!(@impl $source, true);
    };
    (@impl $source:ty, $counters:expr) => {
        impl ::duct_core::Source for $source {
            fn get<'a>(&'a mut self, ctx: &'a ::duct_core::SourceContext) -> ::duct_core::Poll<'a> {
                Box::pin(async move { Ok(self.check(ctx).await) })
            }

            fn needs_two_ticks(&self) -> bool {
                $counters
            }

            fn tick_timeout(&self, _configured: ::std::time::Duration) -> ::std::time::Duration {
                self.budget + $crate::network::GRACE
            }
        }
    };
}

mod apache;

mod conn;
mod docker;
mod ds18b20;
mod elasticsearch;
#[doc(hidden)]
pub mod fuzzing;
mod haproxy;
mod libav;
mod memcache;
mod mpl115;
mod munin;
mod nginx;
mod nut;
mod postfix;
mod postgresql;
mod rabbitmq;
mod redis;
mod riak;
mod unbound;
mod uwsgi;
mod web;

use std::fmt::Display;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::throttle::Throttle;
use duct_core::{Registry, SourceArgs, SourceContext};

pub(crate) use conn::{Conn, ServiceError};

/// Adds the service sources to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(redis::spec());
    registry.add_source(memcache::spec());
    registry.add_source(munin::spec());
    registry.add_source(nut::spec());
    registry.add_source(unbound::spec());
    registry.add_source(postfix::spec());
    registry.add_source(postgresql::spec());
    registry.add_source(nginx::spec());
    registry.add_source(apache::spec());
    registry.add_source(haproxy::spec());
    registry.add_source(elasticsearch::spec());
    registry.add_source(riak::spec());
    registry.add_source(ds18b20::spec());
    registry.add_source(ds18b20::alias_spec());
    registry.add_source(mpl115::spec());
    registry.add_source(mpl115::alias_spec());
    registry.add_source(libav::spec());
    registry.add_source(docker::spec());
    registry.add_source(uwsgi::spec());
    registry.add_source(rabbitmq::spec());
}

/// Why a program a source ran failed, in its own words: the first line it
/// printed (stderr first), then how it ended — "`said` (exit status N)",
/// "exit status N, without a word", or "… killed by a signal".
pub(crate) fn program_failure(out: &duct_core::ForkOutput) -> String {
    let said = [&out.stderr, &out.stdout]
        .into_iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .find(|l| !l.is_empty());
    match (out.code, said) {
        (Some(code), Some(said)) => format!("{said} (exit status {code})"),
        (Some(code), None) => format!("exit status {code}, without a word"),
        (None, Some(said)) => format!("{said} (killed by a signal)"),
        (None, None) => "killed by a signal".to_string(),
    }
}

/// A fault that repeats every tick is logged at most this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(300);

/// Default time a conversation with a server may take when the block sets
/// no `timeout` (capped at 90 % of the interval, as for the network checks).
pub(crate) const DEFAULT_TIMEOUT: f64 = 10.0;

/// The most a server's reply may hold. The largest real replies here
/// (munin-node's `config` of a plugin with hundreds of fields, unbound's
/// histogram) are tens of kilobytes.
pub(crate) const MAX_REPLY_BYTES: usize = 4 << 20;

/// A source's time budget for one tick: `timeout` when the block sets it,
/// else `duct_default` capped by the interval (see [`crate::network`]).
pub(crate) fn budget(args: &SourceArgs<'_>, duct_default: f64) -> Duration {
    crate::network::check_budget(args, duct_default)
}

/// A `port` option: 1 to 65535.
pub(crate) fn port_option(args: &SourceArgs<'_>, value: i64) -> Result<u16, Diagnostic> {
    crate::network::port_option(args, "port", value)
}

/// A `host` option that names something.
pub(crate) fn host_option(args: &SourceArgs<'_>, host: String) -> Result<String, Diagnostic> {
    let host = host.trim().trim_matches(['[', ']']).to_string();
    if host.is_empty() {
        return Err(args.invalid("host", "must name a host or an address"));
    }
    Ok(host)
}

/// The log side of a source's faults: the first failure is a warning, a
/// repeat is logged again only after [`LOG_EVERY`] (with the count held
/// back), and recovery is logged once.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    throttle: Throttle,
    failing: bool,
}

impl Faults {
    /// The tick failed with `cause`.
    pub fn failed(&mut self, ctx: &SourceContext, cause: impl Display) {
        self.failing = true;
        if let Some(held_back) = self.throttle.allow(LOG_EVERY) {
            if held_back > 0 {
                tracing::warn!(service = %ctx.service(), repeats = held_back, "{cause}");
            } else {
                tracing::warn!(service = %ctx.service(), "{cause}");
            }
        }
    }

    /// The tick worked: a fault that was logged is reported as over.
    pub fn worked(&mut self, ctx: &SourceContext) {
        if self.failing {
            self.failing = false;
            self.throttle.reset();
            tracing::info!(service = %ctx.service(), "the server answers again");
        }
    }
}

/// The path of a fixture in `tests/fixtures/<dir>`.
#[cfg(test)]
pub(crate) fn fixture(dir: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
