//! Riemann's hand-written message decoder against `prost`'s: whatever
//! `prost` reads, ductd's decoder reads the same (it promises to, and
//! accepts more: strings that are not UTF-8).
#![no_main]

use duct_proto::{decode_msg, Fallback, Limits, Message, Msg};
use libfuzzer_sys::fuzz_target;

const FALLBACK: Fallback = Fallback { time: 42.0, ttl: 30.0 };

fuzz_target!(|body: &[u8]| {
    let ours = decode_msg(body, &FALLBACK, &Limits::NONE);
    let Ok(msg) = Msg::decode(body) else {
        return;
    };
    let ours = ours.unwrap_or_else(|e| panic!("prost reads the message, decode_msg refuses it: {e}"));
    assert_eq!(ours.query, msg.query.is_some());
    assert_eq!(ours.repaired, 0);
    let theirs: Vec<_> = msg.events.into_iter().map(|e| e.into_event(&FALLBACK)).collect();
    // Compared as text, so that a NaN metric equals itself.
    assert_eq!(format!("{:?}", ours.events), format!("{theirs:?}"));
});
