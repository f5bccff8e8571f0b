//! The decoding hot path: a `Msg` body straight into
//! [`duct_core::Event`]s, with no intermediate protobuf structs. The events
//! are counted first so that their vector is allocated once at its size,
//! and each event's strings are copied once, from the frame into the
//! event. It reads exactly what `prost` reads for [`crate::Msg`] followed
//! by [`crate::Event::into_event`] (the tests hold the two together):
//! unknown fields are skipped, a field given twice keeps its last value.
//! Unlike `prost`, a string that is not UTF-8 (Latin-1 from old clients,
//! collectd's `write_riemann`) is decoded with U+FFFD in place of the bad
//! bytes and counted, as Riemann and Duct accept it, rather than failing
//! the whole message.
//!
//! What a message may cost is bounded ([`Limits`]): its number of events,
//! checked before anything is allocated, and the memory its decoded events
//! take, charged as it is allocated. An event is far larger in memory than
//! on the wire (an empty one is 2 bytes encoded and about 180 in memory),
//! so without the bound a 16 MiB frame of empty events would take
//! gigabytes.
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

/// The most one decoded message may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events in one message.
    pub max_events: usize,
    /// Bytes of memory its decoded events may take (an estimate that errs
    /// high: allocator overhead and vector slack included).
    pub max_memory: usize,
}

impl Limits {
    /// No bound: for trusted input (tests, tools).
    pub const NONE: Limits = Limits {
        max_events: usize::MAX,
        max_memory: usize::MAX,
    };
}

/// Why a message was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a `Msg`: the stream can no longer be trusted.
    #[error("undecodable message: {0}")]
    Malformed(#[from] Malformed),
    /// A well-formed message above [`Limits::max_events`].
    #[error("a message of {count} events exceeds the limit of {max} (max_events_per_message)")]
    TooManyEvents { count: usize, max: usize },
    /// A well-formed message whose events would take more than
    /// [`Limits::max_memory`].
    #[error(
        "the message's events would take more than {max} bytes of memory (max_message_memory); send smaller messages"
    )]
    TooCostly { max: usize },
}

/// What a client sent: its events, whether it asked a query (which the
/// listener refuses), and how many of its strings were not UTF-8.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Incoming {
    pub events: Vec<Event>,
    pub query: bool,
    /// Strings decoded with U+FFFD in place of bytes that are not UTF-8.
    pub repaired: usize,
}

/// What a heap allocation of `n` bytes costs, estimated high: glibc's
/// malloc adds an 8-byte header and rounds to 16, 32 bytes at least
/// (mimalloc, which the binary uses, wastes less).
fn allocation(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.saturating_add(8 + 15).max(32) & !15
    }
}

/// Memory charged against [`Limits::max_memory`] while decoding.
struct Budget {
    used: usize,
    max: usize,
}

impl Budget {
    fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            return Err(DecodeError::TooCostly { max: self.max });
        }
        Ok(())
    }

    /// Pushes onto `v`, charging what its buffer grew by.
    fn push<T>(&mut self, v: &mut Vec<T>, item: T) -> Result<(), DecodeError> {
        let before = v.capacity();
        v.push(item);
        let grown = v.capacity() - before;
        if grown > 0 {
            self.charge(allocation(v.capacity() * std::mem::size_of::<T>()))?;
            if before > 0 {
                // The old buffer is freed by the move.
                self.used = self.used.saturating_sub(allocation(before * std::mem::size_of::<T>()));
            }
        }
        Ok(())
    }
}

/// A string field as decoded, and the state it leaves the decoder in.
struct Strings<'b> {
    budget: &'b mut Budget,
    repaired: usize,
}

impl Strings<'_> {
    /// `bytes` as a string: lossily when they are not UTF-8, charged.
    fn take(&mut self, bytes: &[u8]) -> Result<String, DecodeError> {
        // Checking first is faster than the lossy walk, and nearly every
        // string is valid.
        let s = match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                self.repaired += 1;
                String::from_utf8_lossy(bytes).into_owned()
            }
        };
        self.budget.charge(allocation(s.capacity()))?;
        Ok(s)
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;
/// Groups nested deeper are refused, as `prost` refuses them (its
/// recursion limit).
const MAX_GROUP_DEPTH: u32 = 100;

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

    /// Skips a field `tag` of `wire` type that this decoder does not read.
    fn skip(&mut self, tag: u32, wire: u8) -> Result<(), Malformed> {
        self.skip_within(tag, wire, MAX_GROUP_DEPTH)
    }

    /// As `skip`, inside `depth` more levels of groups at most. A group
    /// (proto2's start- and end-group wire types, unused by Riemann) is
    /// skipped field by field up to its end as `prost` skips it, so that
    /// an unknown field written as one does not refuse the message.
    fn skip_within(&mut self, tag: u32, wire: u8, depth: u32) -> Result<(), Malformed> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.bytes(8).map(drop),
            LEN => self.delimited().map(drop),
            FIXED32 => self.bytes(4).map(drop),
            START_GROUP => {
                let depth = depth.checked_sub(1).ok_or(Malformed("groups are nested too deeply"))?;
                loop {
                    if self.done() {
                        return Err(Malformed("a group runs past the end of the message"));
                    }
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == END_GROUP {
                        return if inner == tag {
                            Ok(())
                        } else {
                            Err(Malformed("a group ends with another field's tag"))
                        };
                    }
                    self.skip_within(inner, inner_wire, depth)?;
                }
            }
            END_GROUP => Err(Malformed("a group ends where none began")),
            _ => Err(Malformed("a field has a wire type protobuf does not have")),
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
/// from `fallback`), and whether it holds a query; refused whole when it
/// would cost more than `limits`.
pub fn decode_msg(body: &[u8], fallback: &Fallback, limits: &Limits) -> Result<Incoming, DecodeError> {
    // First pass: count the events, so that a message of too many is
    // refused before anything is allocated, and the vector is allocated
    // once.
    let mut r = Reader::new(body);
    let mut count = 0;
    while !r.done() {
        let (tag, wire) = r.key()?;
        if tag == 6 && wire == LEN {
            count += 1;
        }
        r.skip(tag, wire)?;
    }
    if count > limits.max_events {
        return Err(DecodeError::TooManyEvents {
            count,
            max: limits.max_events,
        });
    }
    let mut budget = Budget {
        used: 0,
        max: limits.max_memory,
    };
    budget.charge(allocation(count.saturating_mul(std::mem::size_of::<Event>())))?;
    let mut strings = Strings {
        budget: &mut budget,
        repaired: 0,
    };
    let mut events = Vec::with_capacity(count);
    let mut query = false;
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
                // The error text a client sends: never used.
                r.delimited()?;
            }
            4 => {
                expect(wire, LEN)?;
                // Never used by the listener: checked as `prost` would.
                crate::State::decode(r.delimited()?).map_err(|_| Malformed("a state does not decode"))?;
            }
            5 => {
                expect(wire, LEN)?;
                crate::Query::decode(r.delimited()?).map_err(|_| Malformed("a query does not decode"))?;
                query = true;
            }
            6 => {
                expect(wire, LEN)?;
                events.push(event(r.delimited()?, fallback, &mut strings)?);
            }
            _ => r.skip(tag, wire)?,
        }
    }
    Ok(Incoming {
        events,
        query,
        repaired: strings.repaired,
    })
}

fn event(body: &[u8], fallback: &Fallback, strings: &mut Strings<'_>) -> Result<Event, DecodeError> {
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
                ev.state = Some(strings.take(r.delimited()?)?);
            }
            3 => {
                expect(wire, LEN)?;
                ev.service = strings.take(r.delimited()?)?;
            }
            4 => {
                expect(wire, LEN)?;
                ev.host = strings.take(r.delimited()?)?;
            }
            5 => {
                expect(wire, LEN)?;
                ev.description = strings.take(r.delimited()?)?;
            }
            7 => {
                expect(wire, LEN)?;
                let tag = strings.take(r.delimited()?)?;
                strings.budget.push(&mut ev.tags, tag)?;
            }
            8 => {
                expect(wire, FIXED32)?;
                ttl = Some(f32::from_le_bytes(r.fixed32()?));
            }
            9 => {
                expect(wire, LEN)?;
                let attribute = attribute(r.delimited()?, strings)?;
                strings.budget.push(&mut ev.attributes, attribute)?;
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
            _ => r.skip(tag, wire)?,
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

fn attribute(body: &[u8], strings: &mut Strings<'_>) -> Result<(String, String), DecodeError> {
    let mut r = Reader::new(body);
    let (mut key, mut value) = (String::new(), String::new());
    while !r.done() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                expect(wire, LEN)?;
                key = strings.take(r.delimited()?)?;
            }
            2 => {
                expect(wire, LEN)?;
                value = strings.take(r.delimited()?)?;
            }
            _ => r.skip(tag, wire)?,
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
            repaired: 0,
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
        let got = decode_msg(&buf, &FALLBACK, &Limits::NONE).unwrap();
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
        let got = decode_msg(&bare, &FALLBACK, &Limits::NONE).unwrap();
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
        let got = decode_msg(&body, &FALLBACK, &Limits::NONE).unwrap();
        assert!(got.query);
        assert_eq!(Some(&got), via_prost(&body).as_ref());
        let mut ev = crate::Event::from_event(&sample()).encode_to_vec();
        ev.extend_from_slice(&[0xb0, 0x01, 7]);
        let mut body = vec![0x32];
        body.extend_from_slice(&varint(ev.len()));
        body.extend_from_slice(&ev);
        assert_eq!(
            Some(decode_msg(&body, &FALLBACK, &Limits::NONE).unwrap()),
            via_prost(&body)
        );
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
        let got = decode_msg(&body, &FALLBACK, &Limits::NONE).unwrap();
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
                decode_msg(body, &FALLBACK, &Limits::NONE).is_ok(),
                via_prost(body).is_some(),
                "cut at {cut}"
            );
        }
        for garbage in [
            &[0xff, 0xff, 0xff, 0xff][..],
            &[0x32, 2, 0x1a, 5],
            &[0x1a, 5, b'a'],
            &[0x00, 1],
        ] {
            assert!(decode_msg(garbage, &FALLBACK, &Limits::NONE).is_err(), "{garbage:?}");
            assert!(via_prost(garbage).is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn unknown_fields_written_as_groups_are_skipped_like_prost_does() {
        // Found by the riemann_msg fuzz target: field 1 as a group (start
        // 0x0b, a varint inside, end 0x0c), then more fields. `prost`
        // skips groups; ductd refused the message.
        let found = [
            0x0b, 0x68, 0xf7, 0x02, 0x0c, 0xdd, 0x8c, 0xfe, 0x00, 0xe5, 0x00, 0x00, 0xfe, 0x68, 0x00,
        ];
        let mut buf = BytesMut::new();
        crate::wire::put_events_msg(&mut buf, &[sample()]);
        let event_then_group = [&buf[..], &[0x5b, 0x08, 0x01, 0x5b, 0x5c, 0x5c]].concat();
        let cases: [&[u8]; 7] = [
            &found,
            &event_then_group,
            &[0x0b, 0x0c],       // an empty group
            &[0x0b, 0x14, 0x0c], // ends with another field's tag
            &[0x0b, 0x08, 0x01], // never ends
            &[0x0c],             // ends where none began
            &[0x0e, 0x00],       // wire type 6
        ];
        for body in cases {
            let ours = decode_msg(body, &FALLBACK, &Limits::NONE)
                .ok()
                .map(|m| (m.query, m.events));
            let theirs = via_prost(body).map(|m| (m.query, m.events));
            assert_eq!(ours, theirs, "{body:02x?}");
        }
        assert_eq!(
            decode_msg(&event_then_group, &FALLBACK, &Limits::NONE)
                .unwrap()
                .events
                .len(),
            1
        );
        let deep: Vec<u8> = [vec![0x0b; 101], vec![0x0c; 101]].concat();
        assert!(decode_msg(&deep, &FALLBACK, &Limits::NONE).is_err());
        assert!(via_prost(&deep).is_none());
    }

    #[test]
    fn strings_that_are_not_utf8_are_kept_with_replacement_characters() {
        // Latin-1 "café" as the service, "m\xfcnchen" as a tag, and a bad
        // attribute value: `prost` refuses the message, ductd keeps it.
        let event = [
            &[0x1a, 4, b'c', b'a', b'f', 0xe9][..],
            &[0x3a, 7, b'm', 0xfc, b'n', b'c', b'h', b'e', b'n'],
            &[0x4a, 6, 0x0a, 1, b'k', 0x12, 1, 0xff],
            &[0x22, 2, b'o', b'k'],
        ]
        .concat();
        let body = [&[0x32, event.len() as u8][..], &event].concat();
        assert!(via_prost(&body).is_none());
        let got = decode_msg(&body, &FALLBACK, &Limits::NONE).unwrap();
        assert_eq!(got.repaired, 3);
        let ev = &got.events[0];
        assert_eq!(ev.service, "caf\u{fffd}");
        assert_eq!(ev.tags, ["m\u{fffd}nchen"]);
        assert_eq!(ev.attributes, [("k".to_string(), "\u{fffd}".to_string())]);
        assert_eq!(ev.host, "ok");
        let clean = decode_msg(&[0x32, 4, 0x22, 2, b'o', b'k'], &FALLBACK, &Limits::NONE).unwrap();
        assert_eq!(clean.repaired, 0);
    }

    fn limits(max_events: usize, max_memory: usize) -> Limits {
        Limits { max_events, max_memory }
    }

    #[test]
    fn a_message_of_too_many_events_is_refused_before_it_is_decoded() {
        // A million empty events in 2 MB: 180 MB once decoded, unbounded.
        let body: Vec<u8> = [0x32, 0x00].repeat(1_000_000);
        let err = decode_msg(&body, &FALLBACK, &limits(100_000, usize::MAX)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooManyEvents {
                count: 1_000_000,
                max: 100_000
            }
        );
        assert!(err.to_string().contains("max_events_per_message"), "{err}");
        let fine = decode_msg(&body[..200], &FALLBACK, &limits(100, usize::MAX)).unwrap();
        assert_eq!(fine.events.len(), 100);
    }

    #[test]
    fn memory_is_bounded_whatever_the_events_hold() {
        let empty: Vec<u8> = [0x32, 0x00].repeat(10_000);
        let each = std::mem::size_of::<Event>();
        assert!(decode_msg(&empty, &FALLBACK, &limits(usize::MAX, 10_000 * each + 64)).is_ok());
        let err = decode_msg(&empty, &FALLBACK, &limits(usize::MAX, 10_000 * each / 2)).unwrap_err();
        assert!(matches!(err, DecodeError::TooCostly { .. }), "{err}");
        assert!(err.to_string().contains("max_message_memory"), "{err}");

        // One event of 100,000 empty attributes (200 kB on the wire, over
        // 5 MB in memory) or as many one-byte tags.
        for field in [[0x4a, 0x00], [0x3a, 0x00]] {
            let event = field.repeat(100_000);
            let mut body = vec![0x32];
            body.extend_from_slice(&varint(event.len()));
            body.extend_from_slice(&event);
            let err = decode_msg(&body, &FALLBACK, &limits(10, 1 << 20)).unwrap_err();
            assert!(matches!(err, DecodeError::TooCostly { .. }), "{err}");
            assert!(decode_msg(&body, &FALLBACK, &limits(10, 64 << 20)).is_ok());
        }
        // Strings are charged for what they allocate.
        let long = [&[0x32, 0x83, 0x08, 0x2a, 0x80, 0x08][..], &[b'd'; 1024]].concat();
        assert!(decode_msg(&long, &FALLBACK, &limits(1, each + 1024)).is_err());
        assert!(decode_msg(&long, &FALLBACK, &limits(1, each + 2048)).is_ok());
    }
}
