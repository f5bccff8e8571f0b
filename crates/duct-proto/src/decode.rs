//! The decoding hot path: a `Msg` body straight into
//! [`duct_core::Event`]s, with no intermediate protobuf structs. The events
//! are counted first so that their vector is allocated once at its size,
//! and each event's strings are copied once, from the frame into the
//! event. It reads exactly what `prost` reads for [`crate::Msg`] followed
//! by [`crate::Event::into_event`] (the tests hold the two together):
//! unknown fields are skipped, a field given twice keeps its last value,
//! strings must be UTF-8.
//!
//! Profiled on the throughput scenario, going through `prost` spent more
//! time growing and copying vectors of intermediate events than reading
//! the wire.

use duct_core::{Event, EventKind, Metric};
use prost::Message;

use crate::convert::Fallback;

/// A message that does not decode, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// What a client sent: its events, and whether it asked a query (which the
/// listener refuses).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Incoming {
    pub events: Vec<Event>,
    pub query: bool,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over a message body.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.at) else {
                return Err(Malformed("a varint runs past the end of the message"));
            };
            self.at += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(Malformed("a varint is longer than 64 bits"));
                }
                return Ok(v);
            }
        }
        Err(Malformed("a varint is longer than 10 bytes"))
    }

    /// The next field's tag and wire type.
    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| Malformed("a field number is out of range"))?;
        if tag == 0 {
            return Err(Malformed("a field number is zero"));
        }
        Ok((tag, (key & 7) as u8))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Malformed("a field runs past the end of the message"))?;
        let b = &self.buf[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn delimited(&mut self) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| Malformed("a length is out of range"))?;
        self.bytes(len)
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let b = self.delimited()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Malformed("a string is not UTF-8"))
    }

    fn fixed32(&mut self) -> Result<[u8; 4], Malformed> {
        let b = self.bytes(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    fn fixed64(&mut self) -> Result<[u8; 8], Malformed> {
        let b = self.bytes(8)?;
        let mut out = [0u8; 8];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// Skips a field of `wire` type that this decoder does not read.
    fn skip(&mut self, wire: u8) -> Result<(), Malformed> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.bytes(8).map(drop),
            LEN => self.delimited().map(drop),
            FIXED32 => self.bytes(4).map(drop),
            _ => Err(Malformed("a field has a wire type Riemann does not use")),
        }
    }
}

fn expect(wire: u8, want: u8) -> Result<(), Malformed> {
    if wire == want {
        Ok(())
    } else {
        Err(Malformed("a field has the wrong wire type"))
    }
}

/// Decodes a `Msg` body: its events (what missing fields default to comes
/// from `fallback`), and whether it holds a query.
pub fn decode_msg(body: &[u8], fallback: &Fallback) -> Result<Incoming, Malformed> {
    // First pass: count the events, so the vector is allocated once.
    let mut r = Reader::new(body);
    let mut count = 0;
    while !r.done() {
        let (tag, wire) = r.key()?;
        if tag == 6 && wire == LEN {
            count += 1;
        }
        r.skip(wire)?;
    }
    let mut incoming = Incoming {
        events: Vec::with_capacity(count),
        query: false,
    };
    let mut r = Reader::new(body);
    while !r.done() {
        let (tag, wire) = r.key()?;
        match tag {
            2 => {
                expect(wire, VARINT)?;
                r.varint()?;
            }
            3 => {
                expect(wire, LEN)?;
                r.string()?;
            }
            4 => {
                expect(wire, LEN)?;
                // Never used by the listener: checked as `prost` would.
                crate::State::decode(r.delimited()?).map_err(|_| Malformed("a state does not decode"))?;
            }
            5 => {
                expect(wire, LEN)?;
                crate::Query::decode(r.delimited()?).map_err(|_| Malformed("a query does not decode"))?;
                incoming.query = true;
            }
            6 => {
                expect(wire, LEN)?;
                incoming.events.push(event(r.delimited()?, fallback)?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(incoming)
}

fn event(body: &[u8], fallback: &Fallback) -> Result<Event, Malformed> {
    let mut r = Reader::new(body);
    let mut time = None;
    let mut time_micros = None;
    let (mut metric_sint64, mut metric_d, mut metric_f) = (None, None, None);
    let mut ttl = None;
    let mut ev = Event {
        host: String::new(),
        service: String::new(),
        state: None,
        time: 0.0,
        description: String::new(),
        metric: None,
        ttl: 0.0,
        tags: Vec::new(),
        attributes: Vec::new(),
        kind: EventKind::Metric,
        aggregation: None,
    };
    while !r.done() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                expect(wire, VARINT)?;
                time = Some(r.varint()? as i64);
            }
            2 => {
                expect(wire, LEN)?;
                ev.state = Some(r.string()?);
            }
            3 => {
                expect(wire, LEN)?;
                ev.service = r.string()?;
            }
            4 => {
                expect(wire, LEN)?;
                ev.host = r.string()?;
            }
            5 => {
                expect(wire, LEN)?;
                ev.description = r.string()?;
            }
            7 => {
                expect(wire, LEN)?;
                ev.tags.push(r.string()?);
            }
            8 => {
                expect(wire, FIXED32)?;
                ttl = Some(f32::from_le_bytes(r.fixed32()?));
            }
            9 => {
                expect(wire, LEN)?;
                ev.attributes.push(attribute(r.delimited()?)?);
            }
            10 => {
                expect(wire, VARINT)?;
                time_micros = Some(r.varint()? as i64);
            }
            13 => {
                expect(wire, VARINT)?;
                let z = r.varint()?;
                metric_sint64 = Some((z >> 1) as i64 ^ -((z & 1) as i64));
            }
            14 => {
                expect(wire, FIXED64)?;
                metric_d = Some(f64::from_le_bytes(r.fixed64()?));
            }
            15 => {
                expect(wire, FIXED32)?;
                metric_f = Some(f32::from_le_bytes(r.fixed32()?));
            }
            _ => r.skip(wire)?,
        }
    }
    ev.time = match (time_micros, time) {
        (Some(us), _) => us.div_euclid(1_000_000) as f64 + us.rem_euclid(1_000_000) as f64 / 1e6,
        (None, Some(s)) => s as f64,
        (None, None) => fallback.time,
    };
    ev.metric = match (metric_sint64, metric_d, metric_f) {
        (Some(v), _, _) => Some(Metric::Int(v)),
        (None, Some(v), _) => Some(Metric::Float(v)),
        (None, None, Some(v)) => Some(Metric::Float(v.into())),
        (None, None, None) => None,
    };
    ev.ttl = ttl.unwrap_or(fallback.ttl);
    Ok(ev)
}

fn attribute(body: &[u8]) -> Result<(String, String), Malformed> {
    let mut r = Reader::new(body);
    let (mut key, mut value) = (String::new(), String::new());
    while !r.done() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                expect(wire, LEN)?;
                key = r.string()?;
            }
            2 => {
                expect(wire, LEN)?;
                value = r.string()?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    const FALLBACK: Fallback = Fallback { time: 42.0, ttl: 30.0 };

    /// What `prost` makes of the same bytes.
    fn via_prost(body: &[u8]) -> Option<Incoming> {
        let msg = crate::Msg::decode(body).ok()?;
        Some(Incoming {
            query: msg.query.is_some(),
            events: msg.events.into_iter().map(|e| e.into_event(&FALLBACK)).collect(),
        })
    }

    fn sample() -> Event {
        let mut ev = Event::new("h", "cpu");
        ev.state = Some("ok".into());
        ev.time = 1732500000.25;
        ev.description = "CPU 12%".into();
        ev.metric = Some(Metric::Float(0.12));
        ev.tags = vec!["a".into(), "b".into()];
        ev.attributes = vec![("k".into(), "v".into()), (String::new(), "x".repeat(300))];
        ev
    }

    #[test]
    fn agrees_with_prost_on_every_shape_of_event() {
        let mut events = Vec::new();
        for metric in [
            None,
            Some(Metric::Int(i64::MIN)),
            Some(Metric::Int(-1)),
            Some(Metric::Float(-2.5)),
        ] {
            for state in [None, Some(String::new()), Some("critical".to_string())] {
                let mut ev = sample();
                ev.metric = metric;
                ev.state = state;
                ev.time = -1.5;
                events.push(ev);
            }
        }
        events.push(Event::new("", "").at(7.0));
        let mut buf = BytesMut::new();
        crate::wire::put_events_msg(&mut buf, &events);
        let got = decode_msg(&buf, &FALLBACK).unwrap();
        assert_eq!(Some(&got), via_prost(&buf).as_ref());
        assert_eq!(got.events, events);
        assert!(!got.query);
    }

    #[test]
    fn missing_fields_come_from_the_fallback_as_with_prost() {
        let bare = crate::Msg {
            events: vec![
                crate::Event::default(),
                crate::Event {
                    time: Some(100),
                    metric_f: Some(1.5),
                    ..crate::Event::default()
                },
                crate::Event {
                    metric_d: Some(2.0),
                    metric_f: Some(1.5),
                    ttl: Some(0.0),
                    ..crate::Event::default()
                },
            ],
            ..crate::Msg::default()
        }
        .encode_to_vec();
        let got = decode_msg(&bare, &FALLBACK).unwrap();
        assert_eq!(Some(&got), via_prost(&bare).as_ref());
        assert_eq!(got.events[0].time, 42.0);
        assert_eq!(got.events[0].ttl, 30.0);
    }

    #[test]
    fn queries_states_and_unknown_fields() {
        let msg = crate::Msg {
            ok: Some(true),
            error: Some("e".into()),
            states: vec![crate::State {
                service: Some("s".into()),
                ..crate::State::default()
            }],
            query: Some(crate::Query {
                string: Some("true".into()),
            }),
            events: vec![crate::Event::from_event(&sample())],
        };
        let mut body = msg.encode_to_vec();
        // An unknown field of each wire type, in the message and in an event.
        body.extend_from_slice(&[
            0x58, 0x96, 0x01, 0x61, 1, 2, 3, 4, 5, 6, 7, 8, 0x6a, 1, b'x', 0x75, 1, 2, 3, 4,
        ]);
        let got = decode_msg(&body, &FALLBACK).unwrap();
        assert!(got.query);
        assert_eq!(Some(&got), via_prost(&body).as_ref());
        let mut ev = crate::Event::from_event(&sample()).encode_to_vec();
        ev.extend_from_slice(&[0xb0, 0x01, 7]);
        let mut body = vec![0x32];
        body.extend_from_slice(&varint(ev.len()));
        body.extend_from_slice(&ev);
        assert_eq!(Some(decode_msg(&body, &FALLBACK).unwrap()), via_prost(&body));
    }

    fn varint(mut v: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    #[test]
    fn a_repeated_field_keeps_its_last_value() {
        let mut ev = Vec::new();
        ev.extend_from_slice(&[0x1a, 1, b'a', 0x1a, 1, b'b']);
        let body = [&[0x32, ev.len() as u8][..], &ev].concat();
        let got = decode_msg(&body, &FALLBACK).unwrap();
        assert_eq!(got.events[0].service, "b");
        assert_eq!(Some(got), via_prost(&body));
    }

    #[test]
    fn broken_messages_are_refused_like_prost_does() {
        let mut buf = BytesMut::new();
        crate::wire::put_events_msg(&mut buf, &[sample()]);
        for cut in 1..buf.len() {
            let body = &buf[..cut];
            assert_eq!(
                decode_msg(body, &FALLBACK).is_ok(),
                via_prost(body).is_some(),
                "cut at {cut}"
            );
        }
        for garbage in [
            &[0xff, 0xff, 0xff, 0xff][..],
            &[0x32, 2, 0x1a, 5],
            &[0x1a, 1, 0xc3],
            &[0x00, 1],
        ] {
            assert!(decode_msg(garbage, &FALLBACK).is_err(), "{garbage:?}");
            assert!(via_prost(garbage).is_none(), "{garbage:?}");
        }
        // A service that is not UTF-8.
        let body = [0x32, 3, 0x1a, 1, 0xc3];
        assert_eq!(decode_msg(&body, &FALLBACK), Err(Malformed("a string is not UTF-8")));
        assert!(via_prost(&body).is_none());
    }
}
