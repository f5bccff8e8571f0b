//! `duct.sources.network.NumberProxy`: the seed guide's listener, built in.
//! Every line a client sends that reads as a number becomes an event
//! (`Number: 4.2`, metric 4.2); other lines are ignored. Clients are bounded
//! in number, line length and idle time.

use std::time::Duration;

use duct_core::config::seconds::Zero;
use duct_core::{Event, Poll, Schedule, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use serde::Deserialize;

use crate::lines::{listen, ListenerLimits};

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    port: u16,
    /// Address to listen on; all interfaces by default, as Duct did.
    bind: String,
    max_line_bytes: usize,
    max_connections: usize,
    /// Connections at once from one client address; by default a quarter
    /// of `max_connections`.
    max_connections_per_client: Option<usize>,
    /// Seconds of silence after which a client is disconnected.
    idle_timeout: f64,
    /// Seconds from connecting to the first line before a client is
    /// disconnected.
    first_message_timeout: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 8000,
            bind: "0.0.0.0".into(),
            max_line_bytes: 1024,
            max_connections: 1024,
            max_connections_per_client: None,
            idle_timeout: 300.0,
            first_message_timeout: crate::accept::FIRST_MESSAGE_TIMEOUT.as_secs_f64(),
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.network.NumberProxy",
        "Listens on TCP (port 8000); every line that reads as a number becomes an event, other lines are ignored",
        &["(service): each number received"],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    let o: Options = args.options()?;
    if o.max_line_bytes == 0 {
        return Err(args.invalid("max_line_bytes", "must be at least 1"));
    }
    if o.max_connections == 0 {
        return Err(args.invalid("max_connections", "must be at least 1"));
    }
    if o.max_connections_per_client == Some(0) {
        return Err(args.invalid("max_connections_per_client", "must be at least 1"));
    }
    // Checked here so that `start` can make them Durations.
    args.duration("first_message_timeout", o.first_message_timeout, Zero::Refused)?;
    args.duration("idle_timeout", o.idle_timeout, Zero::Refused)?;
    Ok(Box::new(NumberProxy { options: o }))
}

pub struct NumberProxy {
    options: Options,
}

/// A line that is a number (surrounding blanks allowed) becomes an event.
pub fn number_event(line: &str, ctx: &SourceContext) -> Option<Event> {
    let n: f64 = line.trim().parse().ok().filter(|n: &f64| n.is_finite())?;
    Some(ctx.create_event("ok", format!("Number: {n}"), n))
}

impl Source for NumberProxy {
    fn schedule(&self) -> Schedule {
        Schedule::Listener
    }

    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let o = &self.options;
        let limits = ListenerLimits {
            max_line_bytes: o.max_line_bytes,
            max_connections: o.max_connections,
            max_connections_per_client: o.max_connections_per_client,
            idle_timeout: Duration::from_secs_f64(o.idle_timeout),
            first_message_timeout: Duration::from_secs_f64(o.first_message_timeout),
        };
        let addr = listen(&o.bind, o.port, limits, ctx, number_event)?;
        tracing::info!(service = %ctx.service(), %addr, "NumberProxy listening");
        Ok(())
    }

    fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;
    use duct_core::Metric;

    #[test]
    fn numbers_become_events_and_the_rest_is_ignored() {
        let (ctx, _) = context("numbers");
        let ev = number_event(" 4.25 ", &ctx).unwrap();
        assert_eq!(ev.metric, Some(Metric::Float(4.25)));
        assert_eq!(ev.description, "Number: 4.25");
        assert_eq!(ev.service, "numbers");
        assert!(number_event("-3e2", &ctx).is_some());
        for junk in ["", "abc", "1.2.3", "NaN", "inf", "4 5"] {
            assert!(number_event(junk, &ctx).is_none(), "{junk}");
        }
    }
}
