//! The line splitter of the TCP line sources: the same lines, and the same
//! over-long ones, whatever sizes the reads come in (the first byte
//! chooses the read size and the line limit).
#![no_main]

use bytes::BytesMut;
use duct_sources::lines::{Line, LineCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn split(stream: &[u8], read_size: usize, max: usize) -> Vec<Line> {
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for read in stream.chunks(read_size) {
        buf.extend_from_slice(read);
        while let Some(line) = codec.decode(&mut buf).expect("splitting lines cannot fail") {
            out.push(line);
        }
    }
    while let Some(line) = codec.decode_eof(&mut buf).expect("splitting lines cannot fail") {
        out.push(line);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, stream)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(knobs & 0x0f) + 1;
    let max = usize::from(knobs >> 4) * 4 + 1;
    let whole = split(stream, stream.len().max(1), max);
    let pieces = split(stream, read_size, max);
    assert_eq!(
        format!("{whole:?}"),
        format!("{pieces:?}"),
        "reads of {read_size}, limit {max}"
    );
});
