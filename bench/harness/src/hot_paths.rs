//! The hot paths the micro-benchmarks time, as workloads shared by the
//! criterion benches (`benches/hot_paths.rs`, timed) and a unit test that
//! runs each once (CI's quick mode: it checks they work, never how fast).
//!
//! Each workload handles one 100-event message, the unit the listener,
//! router and output work in; the benches report per-event figures.

use bytes::{Bytes, BytesMut};
use duct_core::expr::Trigger;
use duct_core::pipeline::{self, SourceRules, TriggerRule};
use duct_core::{Event, Telemetry};
use duct_proto::Fallback;
use duct_runtime::router::Router;
use regex::Regex;

use crate::wire::{sample_event, EVENTS_PER_MESSAGE};

/// Events per workload run.
pub const EVENTS: usize = EVENTS_PER_MESSAGE;

/// A message's events as the listener decodes them.
pub struct Decode {
    body: Bytes,
    fallback: Fallback,
}

impl Decode {
    pub fn new() -> Self {
        let mut buf = BytesMut::new();
        duct_proto::wire::put_events_msg(&mut buf, &events());
        Decode {
            body: buf.freeze(),
            fallback: Fallback { time: 0.0, ttl: 60.0 },
        }
    }

    pub fn run(&self) -> Vec<Event> {
        // The body is a message the encoder wrote: it decodes.
        duct_proto::decode_msg(&self.body, &self.fallback, &duct_proto::Limits::NONE)
            .expect("a valid message")
            .events
    }
}

impl Default for Decode {
    fn default() -> Self {
        Self::new()
    }
}

/// A batch's events encoded as the Riemann output frames them.
pub struct Encode {
    events: Vec<Event>,
    buf: BytesMut,
}

impl Encode {
    pub fn new() -> Self {
        Encode {
            events: events(),
            buf: BytesMut::with_capacity(64 << 10),
        }
    }

    /// Encodes into the reused buffer; returns the frame's size.
    pub fn run(&mut self) -> usize {
        self.buf.clear();
        duct_proto::wire::put_events_frame(&mut self.buf, &self.events).unwrap_or(0)
    }
}

impl Default for Encode {
    fn default() -> Self {
        Self::new()
    }
}

/// A source's rules as the throughput scenario configures them: one
/// warning and one critical trigger on the services.
pub fn rules() -> SourceRules {
    let rule = |expr: &str| TriggerRule {
        pattern: Regex::new(r"^(?:bench\.service\..*)$").expect("a valid pattern"),
        trigger: Trigger::parse(expr).expect("a valid trigger"),
    };
    SourceRules {
        service: "bench".into(),
        warning: vec![rule("> 90")],
        critical: vec![rule("> 99")],
        route: pipeline::Route::All,
        debug: false,
    }
}

/// The router's work on one batch: rates, triggers, the shared chunk for
/// the outputs (here none, so no mailbox is timed, only the routing).
pub struct Route {
    router: Router,
    rules: SourceRules,
}

impl Route {
    pub fn new() -> Self {
        Route {
            router: Router::new(Telemetry::new()),
            rules: rules(),
        }
    }

    pub fn run(&mut self, events: Vec<Event>) {
        // With no outputs, nothing can be blocked.
        let _ = self.router.route(&self.rules, events, None);
    }
}

impl Default for Route {
    fn default() -> Self {
        Self::new()
    }
}

/// The events every workload uses: those the throughput senders send.
pub fn events() -> Vec<Event> {
    (0..EVENTS).map(sample_event).collect()
}

/// How many events of a batch each state holds (checks the triggers ran).
pub fn states(events: &[Event]) -> (usize, usize, usize) {
    let count = |s: &str| events.iter().filter(|e| e.state.as_deref() == Some(s)).count();
    (count("ok"), count("warning"), count("critical"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_gives_back_what_was_encoded() {
        let got = Decode::new().run();
        assert_eq!(got, events());
    }

    #[test]
    fn encode_writes_a_whole_frame() {
        let mut e = Encode::new();
        let n = e.run();
        assert!(n > EVENTS * 40, "{n}");
        assert_eq!(e.run(), n, "the buffer is reused, not appended to");
    }

    #[test]
    fn routing_takes_a_batch() {
        let mut r = Route::new();
        r.run(events());
        r.run(Vec::new());
    }

    #[test]
    fn triggers_raise_some_events() {
        let mut evs = events();
        rules().apply_triggers(&mut evs);
        let (ok, warning, critical) = states(&evs);
        assert_eq!(ok + warning + critical, EVENTS);
        assert!(warning > 0 && critical > 0 && ok > warning, "{ok} {warning} {critical}");
    }
}
