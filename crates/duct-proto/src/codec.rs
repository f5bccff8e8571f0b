//! TCP framing: every `Msg` travels as a 4-byte big-endian length and then
//! the message. [`take_frame`] is the pure parser; [`MsgCodec`] puts it
//! behind tokio-util's `Decoder`/`Encoder` for `FramedRead` and friends.
//!
//! A frame's length is checked against `max_frame_bytes` as soon as its
//! prefix is read, before any of its body is buffered: a peer that
//! announces 100 MB gets an error at once, not 100 MB of buffer.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::messages::Msg;

/// The largest frame accepted unless configured otherwise: 16 MiB, far
/// above any real Riemann message (clients batch hundreds of events, a few
/// hundred bytes each) and small enough that a handful of hostile peers
/// cannot exhaust memory.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// The framed `Msg{ok: true}`, the answer to every accepted message.
pub const OK_FRAME: [u8; 6] = [0, 0, 0, 2, 0x10, 0x01];

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes exceeds the limit of {max} bytes (max_frame_bytes)")]
    TooLarge { len: usize, max: usize },
    #[error("undecodable message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("undecodable message: {0}")]
    Malformed(#[from] crate::decode::Malformed),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Takes one whole frame's body off the front of `src`; `None` until all of
/// it has arrived.
pub fn take_frame(src: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<BytesMut>, FrameError> {
    let Some(prefix) = src.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    if src.len() < 4 + len {
        return Ok(None);
    }
    src.advance(4);
    Ok(Some(src.split_to(len)))
}

/// Appends `msg` to `buf` as one frame.
pub fn put_msg_frame(buf: &mut BytesMut, msg: &Msg) {
    let len = msg.encoded_len();
    buf.reserve(4 + len);
    // An answer or a test message: far below the 4 GiB a prefix can say.
    buf.put_u32(len as u32);
    // Cannot fail: the space was reserved above.
    let _ = msg.encode(buf);
}

/// Frames `Msg`s on a byte stream, in both directions.
#[derive(Debug, Clone, Copy)]
pub struct MsgCodec {
    max_frame_bytes: usize,
}

impl MsgCodec {
    pub fn new(max_frame_bytes: usize) -> Self {
        MsgCodec { max_frame_bytes }
    }
}

impl Default for MsgCodec {
    fn default() -> Self {
        MsgCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for MsgCodec {
    type Item = Msg;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Msg>, FrameError> {
        match take_frame(src, self.max_frame_bytes)? {
            Some(body) => Ok(Some(Msg::decode(body.freeze())?)),
            None => Ok(None),
        }
    }
}

impl Encoder<&Msg> for MsgCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: &Msg, dst: &mut BytesMut) -> Result<(), FrameError> {
        put_msg_frame(dst, msg);
        Ok(())
    }
}

/// Frames on a byte stream, bodies left undecoded.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec { max_frame_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        take_frame(src, self.max_frame_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_frame_is_msg_ok() {
        let mut buf = BytesMut::new();
        put_msg_frame(&mut buf, &Msg::accepted());
        assert_eq!(&buf[..], &OK_FRAME);
    }

    #[test]
    fn error_answer_golden_bytes() {
        let mut buf = BytesMut::new();
        put_msg_frame(&mut buf, &Msg::refused("no"));
        assert_eq!(&buf[..], &[0, 0, 0, 6, 0x10, 0x00, 0x1a, 2, b'n', b'o']);
    }

    #[test]
    fn frames_come_whole_and_in_order() {
        let mut codec = MsgCodec::default();
        let mut wire = BytesMut::new();
        put_msg_frame(&mut wire, &Msg::accepted());
        put_msg_frame(&mut wire, &Msg::refused("bad"));
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        // Byte by byte: nothing is decoded before its frame is complete.
        for b in wire.iter() {
            src.put_u8(*b);
            if let Some(msg) = codec.decode(&mut src).unwrap() {
                got.push(msg);
            }
        }
        assert_eq!(got, [Msg::accepted(), Msg::refused("bad")]);
        assert!(src.is_empty());
    }

    #[test]
    fn empty_frame_is_an_empty_message() {
        let mut src = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(MsgCodec::default().decode(&mut src).unwrap(), Some(Msg::default()));
    }

    #[test]
    fn oversized_prefix_fails_before_the_body_arrives() {
        let mut src = BytesMut::from(&100_000_000u32.to_be_bytes()[..]);
        let err = MsgCodec::new(1 << 20).decode(&mut src).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len: 100_000_000, max } if max == 1 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("max_frame_bytes"));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut src = BytesMut::from(&[0u8, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        let err = MsgCodec::default().decode(&mut src).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }
}
