//! Line-oriented input, shared by the sources that read it: a codec that
//! splits bytes into lines without trusting them, and a TCP listener whose
//! every connection is a stream actor turning lines into events.
//!
//! The codec never fails on content: a line longer than the limit is
//! discarded up to its newline and reported as [`Line::TooLong`]; bytes that
//! are not UTF-8 are handed on as they are, for the parser to refuse. A
//! sender of endless junk costs at most `max_line_bytes` of memory.
//! Connections are accepted by [`crate::accept`] and spread over the
//! worker threads.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use bytes::BytesMut;
use duct_core::throttle::Throttle;
use duct_core::{Event, SourceContext, SourceError};

use crate::accept::{self, AcceptLimits, Accepted, Silence, SilenceClock, Slot, FIRST_MESSAGE_TIMEOUT};
use tokio_util::codec::{Decoder, FramedRead};

/// One item of line input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` (or `\r\n`).
    Text(BytesMut),
    /// A line longer than the limit was dropped; this many bytes of it.
    TooLong(usize),
}

/// Splits input at `\n`, with a bound on line length.
#[derive(Debug)]
pub struct LineCodec {
    max: usize,
    /// Bytes of an over-long line dropped so far (its end not yet seen).
    discarding: Option<usize>,
    /// How far the buffer was already searched for a newline.
    searched: usize,
}

impl LineCodec {
    pub fn new(max_line_bytes: usize) -> Self {
        LineCodec {
            max: max_line_bytes.max(1),
            discarding: None,
            searched: 0,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, io::Error> {
        loop {
            let newline = buf[self.searched..].iter().position(|&b| b == b'\n');
            match (self.discarding, newline) {
                (Some(dropped), Some(i)) => {
                    let at = self.searched + i;
                    let _ = buf.split_to(at + 1);
                    self.discarding = None;
                    self.searched = 0;
                    return Ok(Some(Line::TooLong(dropped + at)));
                }
                (Some(dropped), None) => {
                    let n = buf.len();
                    buf.clear();
                    self.discarding = Some(dropped + n);
                    self.searched = 0;
                    return Ok(None);
                }
                (None, Some(i)) => {
                    let at = self.searched + i;
                    self.searched = 0;
                    if at > self.max {
                        let _ = buf.split_to(at + 1);
                        return Ok(Some(Line::TooLong(at)));
                    }
                    let mut line = buf.split_to(at + 1);
                    line.truncate(at);
                    if line.last() == Some(&b'\r') {
                        line.truncate(at - 1);
                    }
                    return Ok(Some(Line::Text(line)));
                }
                (None, None) => {
                    if buf.len() > self.max {
                        // Start discarding; keep looking in what remains.
                        self.discarding = Some(0);
                        continue;
                    }
                    self.searched = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, io::Error> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.searched = 0;
        if let Some(dropped) = self.discarding.take() {
            return Ok(Some(Line::TooLong(dropped)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        // A last line without its newline still counts.
        Ok(Some(Line::Text(buf.split())))
    }
}

/// Turns one line into an event, or `None` to ignore it.
pub type LineParser = fn(&str, &SourceContext) -> Option<Event>;

/// Limits of a line listener; each is an option of the sources built on it.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_line_bytes: usize,
    pub max_connections: usize,
    /// Connections open at once from one client address; `None`: a quarter
    /// of `max_connections`.
    pub max_connections_per_client: Option<usize>,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// A connection that has sent no whole line this long after it opened
    /// is closed (at most `idle_timeout`).
    pub first_message_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_line_bytes: 1024,
            max_connections: 1024,
            max_connections_per_client: None,
            idle_timeout: Duration::from_secs(300),
            first_message_timeout: FIRST_MESSAGE_TIMEOUT,
        }
    }
}

/// Binds `bind:port` now (so a taken port is an error of the source's
/// start) and accepts connections until the source stops; each connection
/// becomes a [`LineConnection`] actor on the next worker thread.
pub fn listen(
    bind: &str,
    port: u16,
    limits: ListenerLimits,
    ctx: &SourceContext,
    parse: LineParser,
) -> Result<SocketAddr, SourceError> {
    let listener = accept::bind(bind, port)?;
    let local = listener.local_addr()?;
    let sctx = ctx.clone();
    let accept_limits = AcceptLimits::new(limits.max_connections, limits.max_connections_per_client);
    let silence = Silence {
        idle_timeout: Some(limits.idle_timeout),
        first_message_timeout: Some(limits.first_message_timeout),
    };
    let serve = move |accepted: Accepted| {
        let Accepted { tcp, peer, slot } = accepted;
        let stream = match tokio::net::TcpStream::from_std(tcp) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(service = %sctx.service(), %peer, "cannot serve the connection: {e}");
                return;
            }
        };
        let (ctx, limits) = (sctx.clone(), limits.clone());
        LineConnection::create(move |c| {
            c.add_stream(FramedRead::new(stream, LineCodec::new(limits.max_line_bytes)));
            LineConnection {
                ctx,
                parse,
                peer,
                pending: Vec::new(),
                flush_armed: false,
                silence: SilenceClock::new(silence),
                max_line_bytes: limits.max_line_bytes,
                too_long: Throttle::default(),
                _slot: slot,
            }
        });
    };
    ctx.spawn(accept::accept_loop(listener, accept_limits, ctx.clone(), serve));
    Ok(local)
}

/// Events from one connection wait this long, or for this many, before
/// going to the router together: one message per burst, not per line.
const FLUSH_AFTER: Duration = Duration::from_millis(5);
const FLUSH_AT: usize = 1000;

/// One client connection of a line listener.
pub struct LineConnection {
    ctx: SourceContext,
    parse: LineParser,
    peer: SocketAddr,
    /// Parsed events not yet handed to the router.
    pending: Vec<Event>,
    flush_armed: bool,
    /// For `idle_timeout` and `first_message_timeout`.
    silence: SilenceClock,
    max_line_bytes: usize,
    too_long: Throttle,
    /// Gives the connection's place back to `max_connections` when it ends.
    _slot: Slot,
}

impl LineConnection {
    fn flush(&mut self) {
        self.flush_armed = false;
        if !self.pending.is_empty() {
            self.ctx.queue_back(std::mem::take(&mut self.pending));
        }
    }
}

impl Actor for LineConnection {
    type Context = Context<Self>;

    fn started(&mut self, c: &mut Self::Context) {
        tracing::debug!(service = %self.ctx.service(), peer = %self.peer, "connection opened");
        // The connection ends with its source.
        let token = self.ctx.cancellation();
        c.spawn(token.cancelled_owned().into_actor(self).map(|_, _, c| c.stop()));
        if let Some(every) = self.silence.check_every() {
            c.run_interval(every, |act, c| {
                if let Some(limit) = act.silence.expired() {
                    tracing::debug!(service = %act.ctx.service(), peer = %act.peer, "closing a silent connection ({limit})");
                    c.stop();
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.flush();
        tracing::debug!(service = %self.ctx.service(), peer = %self.peer, "connection closed");
    }
}

impl StreamHandler<Result<Line, io::Error>> for LineConnection {
    fn handle(&mut self, item: Result<Line, io::Error>, c: &mut Self::Context) {
        match item {
            Ok(Line::Text(bytes)) => {
                self.silence.heard();
                // Lines that are not UTF-8 are not numbers, nor JSON: ignored.
                if let Some(ev) = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|l| (self.parse)(l, &self.ctx))
                {
                    self.pending.push(ev);
                }
            }
            Ok(Line::TooLong(n)) => {
                if let Some(held) = self.too_long.allow(Duration::from_secs(10)) {
                    tracing::warn!(
                        service = %self.ctx.service(),
                        peer = %self.peer,
                        bytes = n,
                        max_line_bytes = self.max_line_bytes,
                        held_back = held,
                        "discarded a line longer than max_line_bytes"
                    );
                }
            }
            Err(e) => {
                tracing::debug!(service = %self.ctx.service(), peer = %self.peer, "read failed: {e}");
                c.stop();
                return;
            }
        }
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        } else if !self.pending.is_empty() && !self.flush_armed {
            self.flush_armed = true;
            c.run_later(FLUSH_AFTER, |act, _| act.flush());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[&[u8]]) -> Vec<Line> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                out.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(BytesMut::from(s))
    }

    #[test]
    fn splits_lines_across_chunks_and_strips_crlf() {
        let mut c = LineCodec::new(100);
        let lines = decode_all(&mut c, &[b"1.5\n2", b"\r\n3\n", b"tail"]);
        assert_eq!(lines, vec![text("1.5"), text("2"), text("3"), text("tail")]);
    }

    #[test]
    fn over_long_lines_are_dropped_and_reading_goes_on() {
        let mut c = LineCodec::new(8);
        let long = [b'x'; 50];
        let lines = decode_all(&mut c, &[b"ok\n", &long[..20], &long[20..], b"\nafter\n"]);
        assert_eq!(lines, vec![text("ok"), Line::TooLong(50), text("after")]);
    }

    #[test]
    fn an_endless_line_never_grows_the_buffer() {
        let mut c = LineCodec::new(16);
        let mut buf = BytesMut::new();
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'y'; 1000]);
            assert!(c.decode(&mut buf).unwrap().is_none());
            assert!(buf.len() <= 1000);
        }
        buf.extend_from_slice(b"\n7\n");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Line::TooLong(1_000_000)));
        assert_eq!(c.decode(&mut buf).unwrap(), Some(text("7")));
    }

    #[test]
    fn binary_is_passed_on_untouched() {
        let mut c = LineCodec::new(100);
        let lines = decode_all(&mut c, &[b"\xff\xfe\x00\n"]);
        assert_eq!(lines, vec![Line::Text(BytesMut::from(&b"\xff\xfe\x00"[..]))]);
    }
}
