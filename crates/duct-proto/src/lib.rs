//! Riemann's protocol for ductd (docs/riemann.md): the protobuf messages, their
//! conversion from and to [`duct_core::Event`], the TCP framing codec, and
//! TLS set-up shared by the listener and the TCP output.
//!
//! - [`messages`]: `Msg`, `Event`, `Attribute`, `Query`, `State` as
//!   `prost` derives (no `protoc` needed);
//! - [`convert`]: events to and from their protobuf form;
//! - [`wire`]: the encoding hot path, straight from events into a reused
//!   buffer;
//! - [`decode`]: the decoding hot path, straight from a message body into
//!   events;
//! - [`codec`]: 4-byte big-endian length framing with a frame size limit;
//! - [`tls`]: rustls client and server configurations from PEM files.

pub mod codec;
pub mod convert;
pub mod decode;
pub mod messages;
pub mod tls;
pub mod wire;

pub use codec::{FrameCodec, FrameError, MsgCodec, DEFAULT_MAX_FRAME_BYTES, OK_FRAME};
pub use convert::Fallback;
pub use decode::{decode_msg, DecodeError, Incoming, Limits, Malformed};
pub use messages::{Attribute, Event, Msg, Query, State};
pub use prost::Message;
