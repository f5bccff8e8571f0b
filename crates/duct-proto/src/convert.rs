//! Events to and from Riemann's protobuf form (docs/riemann.md, "Wire
//! format").
//!
//! Outgoing: integers go as `metric_sint64`, floats as `metric_d`, each with
//! `metric_f` beside it for clients that read only that; `time` and
//! `time_micros` are both set; an empty description is left out. Incoming:
//! `metric_sint64` is preferred, then `metric_d`, then `metric_f`;
//! `time_micros` over `time`. [`crate::wire`] writes the same bytes as
//! [`Event::from_event`] without building this intermediate form.

use duct_core::{Event as CoreEvent, EventKind, Metric};

use crate::messages::{Attribute, Event};

/// What a decoded event gets for the fields its sender left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fallback {
    /// Seconds since the epoch: when the message arrived.
    pub time: f64,
    /// Seconds: the receiving source's TTL.
    pub ttl: f32,
}

impl Event {
    /// The protobuf form of an event.
    pub fn from_event(ev: &CoreEvent) -> Event {
        let (time, time_micros) = ev.time_parts();
        let (metric_sint64, metric_d, metric_f) = match ev.metric {
            Some(Metric::Int(v)) => (Some(v), None, Some(v as f32)),
            Some(Metric::Float(v)) => (None, Some(v), Some(v as f32)),
            None => (None, None, None),
        };
        Event {
            time: Some(time),
            state: ev.state.clone(),
            service: Some(ev.service.clone()),
            host: Some(ev.host.clone()),
            description: (!ev.description.is_empty()).then(|| ev.description.clone()),
            tags: ev.tags.clone(),
            ttl: Some(ev.ttl),
            attributes: ev
                .attributes
                .iter()
                .map(|(k, v)| Attribute {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            time_micros: Some(time_micros),
            metric_sint64,
            metric_d,
            metric_f,
        }
    }

    /// The event this protobuf describes; fields the sender left out come
    /// from `fallback` (time, TTL) or are empty.
    pub fn into_event(self, fallback: &Fallback) -> CoreEvent {
        let time = match (self.time_micros, self.time) {
            (Some(us), _) => us.div_euclid(1_000_000) as f64 + us.rem_euclid(1_000_000) as f64 / 1e6,
            (None, Some(s)) => s as f64,
            (None, None) => fallback.time,
        };
        let metric = match (self.metric_sint64, self.metric_d, self.metric_f) {
            (Some(v), _, _) => Some(Metric::Int(v)),
            (None, Some(v), _) => Some(Metric::Float(v)),
            (None, None, Some(v)) => Some(Metric::Float(v.into())),
            (None, None, None) => None,
        };
        CoreEvent {
            host: self.host.unwrap_or_default(),
            service: self.service.unwrap_or_default(),
            state: self.state,
            time,
            description: self.description.unwrap_or_default(),
            metric,
            ttl: self.ttl.unwrap_or(fallback.ttl),
            tags: self.tags,
            attributes: self
                .attributes
                .into_iter()
                .map(|a| (a.key.unwrap_or_default(), a.value.unwrap_or_default()))
                .collect(),
            kind: EventKind::Metric,
            aggregation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FALLBACK: Fallback = Fallback { time: 42.0, ttl: 30.0 };

    fn sample() -> CoreEvent {
        let mut ev = CoreEvent::new("h", "cpu");
        ev.state = Some("ok".into());
        ev.time = 1732500000.25;
        ev.description = "CPU 12%".into();
        ev.metric = Some(Metric::Float(0.12));
        ev.tags = vec!["a".into(), "b".into()];
        ev.attributes = vec![("k".into(), "v".into())];
        ev
    }

    #[test]
    fn floats_go_as_double_and_float() {
        let pb = Event::from_event(&sample());
        assert_eq!(pb.metric_d, Some(0.12));
        assert_eq!(pb.metric_f, Some(0.12f32));
        assert_eq!(pb.metric_sint64, None);
        assert_eq!(pb.time, Some(1732500000));
        assert_eq!(pb.time_micros, Some(1732500000250000));
    }

    #[test]
    fn ints_go_as_sint64_and_float() {
        let mut ev = sample();
        ev.metric = Some(Metric::Int(-7));
        let pb = Event::from_event(&ev);
        assert_eq!(pb.metric_sint64, Some(-7));
        assert_eq!(pb.metric_f, Some(-7.0));
        assert_eq!(pb.metric_d, None);
    }

    #[test]
    fn round_trip_keeps_every_field() {
        for metric in [Some(Metric::Int(i64::MIN)), Some(Metric::Float(-2.5)), None] {
            let mut ev = sample();
            ev.metric = metric;
            ev.ttl = 12.5;
            assert_eq!(Event::from_event(&ev).into_event(&FALLBACK), ev);
        }
        let mut bare = CoreEvent::new("", "");
        bare.time = 7.0;
        bare.state = None;
        assert_eq!(Event::from_event(&bare).into_event(&FALLBACK), bare);
    }

    #[test]
    fn decode_prefers_sint64_then_double_then_float() {
        let pb = Event {
            metric_sint64: Some(3),
            metric_d: Some(4.0),
            metric_f: Some(5.0),
            ..Event::default()
        };
        assert_eq!(pb.clone().into_event(&FALLBACK).metric, Some(Metric::Int(3)));
        let pb = Event {
            metric_sint64: None,
            ..pb
        };
        assert_eq!(pb.clone().into_event(&FALLBACK).metric, Some(Metric::Float(4.0)));
        let pb = Event { metric_d: None, ..pb };
        assert_eq!(pb.into_event(&FALLBACK).metric, Some(Metric::Float(5.0)));
    }

    #[test]
    fn decode_prefers_micros_and_fills_what_is_missing() {
        let pb = Event {
            time: Some(100),
            time_micros: Some(200_500_000),
            ..Event::default()
        };
        assert_eq!(pb.into_event(&FALLBACK).time, 200.5);
        let pb = Event {
            time: Some(100),
            ..Event::default()
        };
        assert_eq!(pb.into_event(&FALLBACK).time, 100.0);
        let ev = Event::default().into_event(&FALLBACK);
        assert_eq!(
            (ev.time, ev.ttl, ev.metric, ev.state.as_deref()),
            (42.0, 30.0, None, None)
        );
        assert_eq!(ev.host, "");
        assert!(ev.is_metric());
    }
}
