//! What the router does to each event, as plain functions: turn counters
//! into rates, raise warning/critical states from triggers, and say where
//! events go. The router actor and `ductd once` both use these.

use std::collections::HashMap;

use regex::Regex;

use crate::event::{Aggregation, Event, Metric};
use crate::expr::Trigger;

/// A `warning`/`critical` entry: a service pattern (matching the whole
/// name) and its expression.
#[derive(Debug, Clone)]
pub struct TriggerRule {
    pub pattern: Regex,
    pub trigger: Trigger,
}

/// Where a source's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every output.
    All,
    /// The outputs with these names.
    Named(Vec<String>),
}

/// Per-source rules the router applies; shared by every batch the source
/// sends.
#[derive(Debug, Clone)]
pub struct SourceRules {
    pub service: String,
    pub warning: Vec<TriggerRule>,
    pub critical: Vec<TriggerRule>,
    pub route: Route,
    /// Log every batch the router receives from this source.
    pub debug: bool,
}

impl SourceRules {
    /// No triggers, every output.
    pub fn plain(service: impl Into<String>) -> Self {
        SourceRules {
            service: service.into(),
            warning: Vec::new(),
            critical: Vec::new(),
            route: Route::All,
            debug: false,
        }
    }

    /// Sets `warning`/`critical` on events whose state is `ok` and whose
    /// service matches a rule whose expression holds; critical wins.
    pub fn apply_triggers(&self, events: &mut [Event]) {
        if self.warning.is_empty() && self.critical.is_empty() {
            return;
        }
        for ev in events {
            if ev.state.as_deref() != Some("ok") {
                continue;
            }
            let metric = ev.metric.map(Metric::as_f64);
            let fires = |rules: &[TriggerRule]| {
                rules
                    .iter()
                    .any(|r| r.pattern.is_match(&ev.service) && r.trigger.eval(metric))
            };
            if fires(&self.critical) {
                ev.state = Some("critical".into());
            } else if fires(&self.warning) {
                ev.state = Some("warning".into());
            }
        }
    }
}

/// The last sample of one counter.
#[derive(Debug, Clone, Copy)]
struct Sample {
    value: Metric,
    time: f64,
}

/// Counters not seen for this long are forgotten, so series that vanish
/// (containers, processes) do not grow the cache for ever.
const FORGET_AFTER: f64 = 24.0 * 3600.0;
const SWEEP_EVERY: f64 = 3600.0;

/// Turns counter samples into rates, keyed by host and service.
#[derive(Debug, Default)]
pub struct Aggregator {
    last: HashMap<String, Sample>,
    /// Reused to build lookup keys without allocating per event.
    key: String,
    last_sweep: f64,
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces each aggregated event's metric by its rate since the
    /// previous sample of the same host and service. The first sample only
    /// primes the cache and is removed, as are samples that cannot give a
    /// rate (a `Counter` that went backwards, no time elapsed). Zero rates
    /// are kept.
    pub fn apply(&mut self, events: &mut Vec<Event>) {
        if !events.iter().any(|e| e.aggregation.is_some()) {
            return;
        }
        let mut newest = self.last_sweep;
        events.retain_mut(|ev| {
            let Some(agg) = ev.aggregation.take() else {
                return true;
            };
            let Some(value) = ev.metric else {
                return false;
            };
            newest = newest.max(ev.time);
            self.key.clear();
            self.key.push_str(&ev.host);
            self.key.push('\u{1f}');
            self.key.push_str(&ev.service);
            let current = Sample { value, time: ev.time };
            let previous = match self.last.get_mut(self.key.as_str()) {
                Some(slot) => std::mem::replace(slot, current),
                None => {
                    self.last.insert(self.key.clone(), current);
                    return false;
                }
            };
            match rate(agg, previous.value, value, ev.time - previous.time) {
                Some(r) => {
                    ev.metric = Some(Metric::Float(r));
                    true
                }
                None => false,
            }
        });
        if newest - self.last_sweep > SWEEP_EVERY {
            self.last.retain(|_, s| newest - s.time < FORGET_AFTER);
            self.last_sweep = newest;
        }
    }

    /// Counters remembered now.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The per-second rate between two samples `dt` seconds apart, or `None`
/// when there is none. Integer counters wrap modulo 2^32 / 2^64 (their bit
/// pattern is read as unsigned); float counters add the wrap size.
pub fn rate(agg: Aggregation, previous: Metric, current: Metric, dt: f64) -> Option<f64> {
    if dt <= 0.0 || !dt.is_finite() {
        return None;
    }
    let delta = match (agg, previous, current) {
        (Aggregation::Counter, p, c) => {
            let d = match (p, c) {
                (Metric::Int(p), Metric::Int(c)) => (i128::from(c) - i128::from(p)) as f64,
                (p, c) => c.as_f64() - p.as_f64(),
            };
            if d < 0.0 {
                return None;
            }
            d
        }
        (Aggregation::Counter32, Metric::Int(p), Metric::Int(c)) => {
            (c as u64 as u32).wrapping_sub(p as u64 as u32) as f64
        }
        (Aggregation::Counter64, Metric::Int(p), Metric::Int(c)) => (c as u64).wrapping_sub(p as u64) as f64,
        (agg, p, c) => {
            let (p, c) = (p.as_f64(), c.as_f64());
            if c >= p {
                c - p
            } else {
                let span = if agg == Aggregation::Counter32 {
                    4_294_967_296.0
                } else {
                    18_446_744_073_709_551_616.0
                };
                span - p + c
            }
        }
    };
    Some(delta / dt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(service: &str, value: impl Into<Metric>, time: f64, agg: Aggregation) -> Event {
        let mut e = Event::new("h", service);
        e.metric = Some(value.into());
        e.time = time;
        e.aggregation = Some(agg);
        e
    }

    fn metrics(events: &[Event]) -> Vec<f64> {
        events.iter().map(|e| e.metric.unwrap().as_f64()).collect()
    }

    #[test]
    fn first_sample_primes_then_rates_flow() {
        let mut agg = Aggregator::new();
        let mut batch = vec![sample("rx", 100i64, 10.0, Aggregation::Counter)];
        agg.apply(&mut batch);
        assert!(batch.is_empty(), "first sample only primes");
        let mut batch = vec![sample("rx", 300i64, 12.0, Aggregation::Counter)];
        agg.apply(&mut batch);
        assert_eq!(metrics(&batch), [100.0]);
        assert_eq!(batch[0].aggregation, None);
    }

    #[test]
    fn zero_rates_are_emitted() {
        let mut agg = Aggregator::new();
        agg.apply(&mut vec![sample("x", 5i64, 1.0, Aggregation::Counter64)]);
        let mut batch = vec![sample("x", 5i64, 2.0, Aggregation::Counter64)];
        agg.apply(&mut batch);
        assert_eq!(metrics(&batch), [0.0]);
    }

    #[test]
    fn counter_going_backwards_is_dropped_and_reprimes() {
        let mut agg = Aggregator::new();
        agg.apply(&mut vec![sample("x", 500i64, 1.0, Aggregation::Counter)]);
        let mut batch = vec![sample("x", 20i64, 2.0, Aggregation::Counter)];
        agg.apply(&mut batch);
        assert!(batch.is_empty());
        let mut batch = vec![sample("x", 30i64, 3.0, Aggregation::Counter)];
        agg.apply(&mut batch);
        assert_eq!(metrics(&batch), [10.0]);
    }

    #[test]
    fn counter32_and_counter64_wrap() {
        assert_eq!(
            rate(Aggregation::Counter32, Metric::Int(4_294_967_290), Metric::Int(4), 2.0),
            Some(5.0)
        );
        assert_eq!(
            rate(Aggregation::Counter64, Metric::from(u64::MAX - 9), Metric::Int(10), 1.0),
            Some(20.0)
        );
        // Floats wrap by adding the counter's span.
        assert_eq!(
            rate(
                Aggregation::Counter32,
                Metric::Float(4_294_967_295.0),
                Metric::Float(1.0),
                1.0
            ),
            Some(2.0)
        );
        // A plain Counter never wraps.
        assert_eq!(rate(Aggregation::Counter, Metric::Int(10), Metric::Int(1), 1.0), None);
    }

    #[test]
    fn no_elapsed_time_gives_no_rate() {
        assert_eq!(rate(Aggregation::Counter, Metric::Int(1), Metric::Int(2), 0.0), None);
    }

    #[test]
    fn counters_are_keyed_by_host_and_service() {
        let mut agg = Aggregator::new();
        let mut a = sample("x", 0i64, 0.0, Aggregation::Counter);
        let mut b = sample("x", 100i64, 0.0, Aggregation::Counter);
        b.host = "other".into();
        agg.apply(&mut vec![a.clone(), b.clone()]);
        a.metric = Some(Metric::Int(10));
        a.time = 1.0;
        b.metric = Some(Metric::Int(300));
        b.time = 1.0;
        let mut batch = vec![a, b];
        agg.apply(&mut batch);
        assert_eq!(metrics(&batch), [10.0, 200.0]);
        assert_eq!(agg.len(), 2);
    }

    #[test]
    fn plain_events_pass_untouched() {
        let mut agg = Aggregator::new();
        let mut e = Event::new("h", "g");
        e.metric = Some(Metric::Int(7));
        let mut batch = vec![e.clone()];
        agg.apply(&mut batch);
        assert_eq!(batch, vec![e]);
    }

    fn rule(pattern: &str, expr: &str) -> TriggerRule {
        TriggerRule {
            pattern: Regex::new(&format!("^(?:{pattern})$")).unwrap(),
            trigger: Trigger::parse(expr).unwrap(),
        }
    }

    fn with_state(service: &str, state: &str, metric: f64) -> Event {
        let mut e = Event::new("h", service);
        e.state = Some(state.into());
        e.metric = Some(Metric::Float(metric));
        e
    }

    #[test]
    fn triggers_set_states_and_critical_wins() {
        let mut rules = SourceRules::plain("cpu");
        rules.warning = vec![rule("cpu", "> 0.5")];
        rules.critical = vec![rule("cpu", "> 0.9")];
        let mut events = vec![
            with_state("cpu", "ok", 0.1),
            with_state("cpu", "ok", 0.6),
            with_state("cpu", "ok", 0.95),
            with_state("cpu", "unknown", 0.95),
        ];
        rules.apply_triggers(&mut events);
        let states: Vec<_> = events.iter().map(|e| e.state.clone().unwrap()).collect();
        assert_eq!(states, ["ok", "warning", "critical", "unknown"]);
    }

    #[test]
    fn trigger_patterns_match_the_whole_service() {
        let mut rules = SourceRules::plain("cpu");
        rules.critical = vec![rule("cpu", "> 0.5")];
        let mut events = vec![with_state("cpu.idle", "ok", 0.9), with_state("cpu", "ok", 0.9)];
        rules.apply_triggers(&mut events);
        assert_eq!(
            events[0].state.as_deref(),
            Some("ok"),
            "Duct matched prefixes; ductd does not"
        );
        assert_eq!(events[1].state.as_deref(), Some("critical"));
        let mut rules = SourceRules::plain("cpu");
        rules.critical = vec![rule(r"cpu\..*", "> 0.5")];
        let mut events = vec![with_state("cpu.idle", "ok", 0.9)];
        rules.apply_triggers(&mut events);
        assert_eq!(events[0].state.as_deref(), Some("critical"));
    }
}
