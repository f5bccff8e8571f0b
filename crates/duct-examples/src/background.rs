//! `hello.Background`: the guide's advice for sources with many metrics —
//! return nothing from `get` and push events with `queue_back` as they are
//! ready. Here a background task started with the source emits a counter
//! every `every` seconds until the source stops.

use std::time::Duration;

use duct_core::config::seconds::Zero;
use duct_core::config::Diagnostic;
use duct_core::{Poll, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// Seconds between background events.
    every: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { every: 0.5 }
    }
}

pub struct Background {
    every: Duration,
}

impl Source for Background {
    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let every = self.every;
        let ctx2 = ctx.clone();
        // Ends when the source stops: `spawn` ties the task to the source.
        ctx.spawn(async move {
            let mut n: i64 = 0;
            loop {
                tokio::time::sleep(every).await;
                n += 1;
                ctx2.queue_back(vec![ctx2.create_event("ok", "From the background", n)]);
            }
        });
        Ok(())
    }

    fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
        // The timer still ticks; there is just nothing to return.
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "hello.Background",
        "Returns nothing from get; a background task calls queue_back every `every` seconds",
        &["(service): 1, 2, 3, … one per `every` seconds"],
        |args: &SourceArgs<'_>| -> Result<Box<dyn Source>, Diagnostic> {
            let o: Options = args.options()?;
            // Positive, finite and at most a year: always a valid Duration.
            let every = args.duration("every", o.every, Zero::Refused)?;
            Ok(Box::new(Background { every }))
        },
    )
}
