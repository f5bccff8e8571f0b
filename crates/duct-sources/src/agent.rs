//! `duct.sources.Duct`: the agent's own figures, so that the pipeline can
//! be watched through itself. Duct reported `event rate` and `sources`;
//! ductd adds tick failures, how late ticks start (quantiles since the
//! agent started) and, per output, its queue, drops, deliveries and health.

use std::sync::atomic::Ordering;

use duct_core::{event::now, NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSpec};

pub fn spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "duct.sources.Duct",
        "The agent itself: event rate, sources, tick failures and every output's queue",
        &[
            "(service).event rate: events entering the router per second",
            "(service).sources: sources running",
            "(service).ticks skipped: ticks skipped because the previous one still ran (total)",
            "(service).tick errors: ticks that failed, timed out or panicked (total)",
            "(service).restarts: router shards and outputs restarted by their supervisor after a panic (total)",
            "(service).strings not utf-8: strings listeners received that were not UTF-8, kept with U+FFFD (total)",
            "(service).messages refused: listener messages refused (answered ok: false over TCP, dropped over UDP), none of their events taken (total)",
            "(service).tick lateness p50, p99, max: how late ticks start after they are due (ms, since start)",
            "(service).output.(name).queued: events waiting",
            "(service).output.(name).dropped: events dropped (total)",
            "(service).output.(name).sent: events delivered (total)",
            "(service).output.(name).send failures: failed deliveries (total)",
            "(service).output.(name).restarts: restarts after a panic (total)",
            "(service).output.(name).healthy: 1 if the last delivery succeeded and the disk buffer, if any, is written",
            "(service).output.(name).buffer corrupted: torn or corrupted disk buffer records skipped (total; disk buffers only)",
        ],
        build,
    )
}

fn build(_: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    Ok(Box::new(AgentSource { last: None }))
}

pub struct AgentSource {
    /// Events counted and when, at the previous tick (for the rate).
    last: Option<(u64, f64)>,
}

impl Source for AgentSource {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        let t = ctx.telemetry();
        let received = t.events_received.load(Ordering::Relaxed);
        let time = now();
        let rate = match self.last {
            Some((n, at)) if time > at => (received.saturating_sub(n)) as f64 / (time - at),
            _ => 0.0,
        };
        self.last = Some((received, time));
        let mut events = vec![
            ctx.create_event_prefixed("event rate", "ok", "Event rate", rate),
            ctx.create_event_prefixed("sources", "ok", "Sources", t.sources.load(Ordering::Relaxed)),
            ctx.create_event_prefixed(
                "ticks skipped",
                "ok",
                "Ticks skipped",
                t.ticks_skipped.load(Ordering::Relaxed),
            ),
            ctx.create_event_prefixed(
                "tick errors",
                "ok",
                "Tick errors",
                t.tick_errors.load(Ordering::Relaxed),
            ),
            ctx.create_event_prefixed("restarts", "ok", "Actor restarts", t.restarts.load(Ordering::Relaxed)),
            ctx.create_event_prefixed(
                "strings not utf-8",
                "ok",
                "Strings not UTF-8 received by listeners",
                t.strings_not_utf8.load(Ordering::Relaxed),
            ),
            ctx.create_event_prefixed(
                "messages refused",
                "ok",
                "Listener messages refused",
                t.messages_refused.load(Ordering::Relaxed),
            ),
        ];
        let lateness = &t.tick_lateness;
        for (label, value) in [
            ("p50", lateness.quantile(0.5)),
            ("p99", lateness.quantile(0.99)),
            ("max", lateness.max()),
        ] {
            if let Some(d) = value {
                events.push(ctx.create_event_prefixed(
                    &format!("tick lateness {label}"),
                    "ok",
                    "Tick lateness (ms)",
                    d.as_secs_f64() * 1000.0,
                ));
            }
        }
        for o in t.outputs() {
            let p = |what: &str| format!("output.{}.{what}", o.name);
            let healthy = o.is_healthy();
            events.push(ctx.create_event_prefixed(
                &p("queued"),
                "ok",
                "Queued events",
                o.queued.load(Ordering::Relaxed),
            ));
            events.push(ctx.create_event_prefixed(
                &p("dropped"),
                "ok",
                "Dropped events",
                o.dropped.load(Ordering::Relaxed),
            ));
            events.push(ctx.create_event_prefixed(
                &p("sent"),
                "ok",
                "Delivered events",
                o.sent.load(Ordering::Relaxed),
            ));
            events.push(ctx.create_event_prefixed(
                &p("send failures"),
                "ok",
                "Failed deliveries",
                o.send_failures.load(Ordering::Relaxed),
            ));
            events.push(ctx.create_event_prefixed(
                &p("restarts"),
                "ok",
                "Output restarts",
                o.restarts.load(Ordering::Relaxed),
            ));
            events.push(ctx.create_event_prefixed(
                &p("healthy"),
                if healthy { "ok" } else { "critical" },
                if healthy { "Delivering" } else { "Delivery failing" },
                i64::from(healthy),
            ));
            let corrupted = o.buffer_corrupted.load(Ordering::Relaxed);
            if corrupted > 0 {
                events.push(ctx.create_event_prefixed(
                    &p("buffer corrupted"),
                    "warning",
                    "Disk buffer records skipped as torn or corrupted",
                    corrupted,
                ));
            }
        }
        Box::pin(std::future::ready(Ok(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;
    use duct_core::{Metric, OutputStats};

    #[tokio::test]
    async fn reports_rate_sources_and_outputs() {
        let (ctx, _) = context("duct");
        let t = ctx.telemetry().clone();
        t.sources.store(3, Ordering::Relaxed);
        let out = OutputStats::new("riemann");
        out.queued.store(42, Ordering::Relaxed);
        out.healthy.store(false, Ordering::Relaxed);
        out.restarts.store(2, Ordering::Relaxed);
        t.restarts.store(5, Ordering::Relaxed);
        t.register_output(out);
        let mut src = AgentSource { last: None };
        let first = src.get(&ctx).await.unwrap();
        assert!(
            !first.iter().any(|e| e.service.contains("lateness")),
            "no lateness before any tick"
        );
        t.tick_lateness.record(std::time::Duration::from_millis(3));
        t.events_received.fetch_add(100, Ordering::Relaxed);
        t.strings_not_utf8.fetch_add(2, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let events = src.get(&ctx).await.unwrap();
        let find = |s: &str| {
            events
                .iter()
                .find(|e| e.service == s)
                .unwrap_or_else(|| panic!("no {s}"))
        };
        let rate = find("duct.event rate").metric.unwrap().as_f64();
        assert!(rate > 100.0 && rate < 2100.0, "{rate}");
        assert_eq!(find("duct.sources").metric, Some(Metric::Int(3)));
        assert_eq!(find("duct.tick lateness max").metric, Some(Metric::Float(3.0)));
        assert_eq!(find("duct.strings not utf-8").metric, Some(Metric::Int(2)));
        assert_eq!(find("duct.messages refused").metric, Some(Metric::Int(0)));
        assert_eq!(find("duct.output.riemann.queued").metric, Some(Metric::Int(42)));
        assert_eq!(find("duct.restarts").metric, Some(Metric::Int(5)));
        assert_eq!(find("duct.output.riemann.restarts").metric, Some(Metric::Int(2)));
        let healthy = find("duct.output.riemann.healthy");
        assert_eq!(healthy.metric, Some(Metric::Int(0)));
        assert_eq!(healthy.state.as_deref(), Some("critical"));
    }
}
