//! `hello.NumberProxy`: the guide's "thinking outside the box" — a source
//! that starts a TCP listener instead of a timer. Every line a client sends
//! that reads as a number is queued as an event; other lines are ignored.
//!
//! The listener and its per-connection stream actors come from
//! `duct_sources::lines`, the same machinery as the built-in
//! `duct.sources.network.NumberProxy`; what a source of your own supplies
//! is the line parser.

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Schedule, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use duct_sources::lines::{listen, ListenerLimits};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    port: u16,
    bind: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 8000,
            bind: "0.0.0.0".into(),
        }
    }
}

pub struct NumberProxy {
    options: Options,
}

/// The guide's `lineReceived`: a number becomes an event, anything else
/// is dropped.
fn number(line: &str, ctx: &SourceContext) -> Option<Event> {
    let n: f64 = line.trim().parse().ok()?;
    n.is_finite().then(|| ctx.create_event("ok", format!("Number: {n}"), n))
}

impl Source for NumberProxy {
    fn schedule(&self) -> Schedule {
        // No timer: events come when clients write.
        Schedule::Listener
    }

    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let limits = ListenerLimits {
            max_line_bytes: 1024,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            ..ListenerLimits::default()
        };
        let addr = listen(&self.options.bind, self.options.port, limits, ctx, number)?;
        tracing::info!(service = %ctx.service(), %addr, "NumberProxy listening");
        Ok(())
    }

    fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "hello.NumberProxy",
        "The guide's listener: every number sent on a line to `port` (8000) becomes an event",
        &["(service): each number received"],
        |args: &SourceArgs<'_>| -> Result<Box<dyn Source>, Diagnostic> {
            Ok(Box::new(NumberProxy {
                options: args.options()?,
            }))
        },
    )
}
