//! The harness's side of Riemann's TCP protocol: the messages its senders
//! push (encoded once, before the clock starts) and the cheap frame walk
//! its sink uses to count events without decoding them.

use bytes::BytesMut;
use duct_core::{Event, Metric};

/// Events per message the senders use (the "100-event messages").
pub const EVENTS_PER_MESSAGE: usize = 100;

/// A message that cannot be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// An event as a busy client would send it: a host, a service among many,
/// state `ok` (so that the listener's triggers evaluate it), a float
/// metric spread over 0..101 (so that about one in ten triggers), a description and a
/// tag.
pub fn sample_event(i: usize) -> Event {
    let mut ev = Event::new("bench-host-01.example.net", format!("bench.service.{}", i % 500));
    // Whole microseconds: what the wire keeps, so events survive a round trip.
    ev.time = 1_732_500_000.25 + (i % 1000) as f64 * 1e-3;
    ev.state = Some("ok".into());
    ev.description = "synthetic load".into();
    ev.metric = Some(Metric::Float((i * 37 % 101) as f64 + 0.5));
    ev.tags = vec!["bench".into()];
    ev.ttl = 60.0;
    ev
}

/// `messages` framed messages of [`EVENTS_PER_MESSAGE`] events each, one
/// after the other in a single buffer.
pub fn encoded_messages(messages: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for m in 0..messages {
        let events: Vec<Event> = (0..EVENTS_PER_MESSAGE)
            .map(|i| sample_event(m * EVENTS_PER_MESSAGE + i))
            .collect();
        // 100 small events: far below the 4 GiB a frame may hold.
        duct_proto::wire::put_events_frame(&mut buf, &events).expect("a 100-event message fits a frame");
    }
    buf.to_vec()
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, Malformed> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or(Malformed)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Malformed)
}

/// Calls `each` with the number and contents of every length-delimited
/// top-level field of an encoded protobuf message (other fields are
/// skipped), without decoding anything.
pub fn for_each_field(msg: &[u8], mut each: impl FnMut(u64, &[u8]) -> Result<(), Malformed>) -> Result<(), Malformed> {
    let mut at = 0;
    while at < msg.len() {
        let key = varint(msg, &mut at)?;
        match key & 7 {
            0 => {
                varint(msg, &mut at)?;
            }
            1 => at += 8,
            2 => {
                let len = usize::try_from(varint(msg, &mut at)?).map_err(|_| Malformed)?;
                let end = at.checked_add(len).filter(|&e| e <= msg.len()).ok_or(Malformed)?;
                each(key >> 3, &msg[at..end])?;
                at = end;
            }
            5 => at += 4,
            _ => return Err(Malformed),
        }
    }
    if at == msg.len() {
        Ok(())
    } else {
        Err(Malformed)
    }
}

/// How many times the length-delimited top-level field `field` occurs.
pub fn count_field(msg: &[u8], field: u64) -> Result<usize, Malformed> {
    let mut n = 0;
    for_each_field(msg, |f, _| {
        n += usize::from(f == field);
        Ok(())
    })?;
    Ok(n)
}

/// The number of events (`Msg` field 6) in an encoded `Msg`.
pub fn count_events(msg: &[u8]) -> Result<usize, Malformed> {
    count_field(msg, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_agrees_with_decoding() {
        let buf = encoded_messages(3);
        let mut at = 0;
        let mut frames = 0;
        while at < buf.len() {
            let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let body = &buf[at + 4..at + 4 + len];
            let msg = <duct_proto::Msg as duct_proto::Message>::decode(body).unwrap();
            assert_eq!(count_events(body), Ok(msg.events.len()));
            assert_eq!(msg.events.len(), EVENTS_PER_MESSAGE);
            at += 4 + len;
            frames += 1;
        }
        assert_eq!(frames, 3);
    }

    #[test]
    fn truncated_messages_are_malformed() {
        let buf = encoded_messages(1);
        assert_eq!(count_events(&buf[4..buf.len() - 1]), Err(Malformed));
        assert_eq!(count_events(&[]), Ok(0));
    }
}
