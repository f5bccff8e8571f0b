//! A Riemann TCP stream as the listener reads it: length-prefixed frames
//! (arriving in reads of a size the first byte chooses), each body decoded
//! into events under the listener's limits.
#![no_main]

use bytes::BytesMut;
use duct_proto::{decode_msg, Fallback, FrameCodec, Limits};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Small enough that the fuzzer meets the frame and memory limits.
const MAX_FRAME_BYTES: usize = 64 << 10;
const LIMITS: Limits = Limits {
    max_events: 1000,
    max_memory: 4 * MAX_FRAME_BYTES,
};
const FALLBACK: Fallback = Fallback { time: 1.0, ttl: 60.0 };

fuzz_target!(|data: &[u8]| {
    let Some((&read_size, stream)) = data.split_first() else {
        return;
    };
    let mut codec = FrameCodec::new(MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    for read in stream.chunks(usize::from(read_size).max(1)) {
        buf.extend_from_slice(read);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(body)) => {
                    if let Ok(msg) = decode_msg(&body, &FALLBACK, &LIMITS) {
                        assert!(msg.events.len() <= LIMITS.max_events);
                    }
                }
                Ok(None) => break,
                // The listener closes the connection.
                Err(_) => return,
            }
        }
    }
});
