//! The one client the request/reply service sources share: a TCP (or TLS)
//! connection with a deadline for the whole conversation and a size limit
//! on each reply.
//!
//! Redis (RESP), memcached, munin-node and upsd all send a request and
//! read a reply that ends at a line or a marker; what differs is how a
//! reply ends, which each source says with a parser over the bytes read so
//! far ([`Conn::read`]) or an end-line test ([`Conn::lines_until`]). The
//! conversation's deadline is the source's time budget: a server that
//! accepts but never answers is reported as a timeout naming the request
//! it left unanswered, not as a tick the runtime had to abandon.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::network::{connect, handshake, resolve, CheckError};

/// Why a conversation with a server failed; the description of the
/// critical event (after the server's address).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// Resolving, connecting or the TLS handshake failed.
    #[error("{0}")]
    Network(#[from] CheckError),
    #[error("timed out after {seconds} s {doing}")]
    Timeout { seconds: f64, doing: String },
    #[error("the server closed the connection {doing}")]
    Closed { doing: String },
    #[error("{doing}: {reason}")]
    Io { doing: String, reason: String },
    #[error("the reply was longer than {limit} bytes {doing}")]
    TooLarge { limit: usize, doing: String },
    /// The server sent something that is not its protocol.
    #[error("unexpected reply {doing}: {detail}")]
    Garbage { doing: String, detail: String },
    /// The server understood and said no (`-NOAUTH`, `ERR UNKNOWN-UPS`).
    #[error("the server answered {0}")]
    Refused(String),
    /// A program the source runs failed, in its own words.
    #[error("{0}")]
    Program(String),
}

/// What a byte stream to a server must offer: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// What a reply parser says about the bytes read so far: `Ok(None)` when
/// more are needed, `Ok(Some((value, consumed)))` when a reply is complete,
/// `Err(detail)` when they are not the protocol.
pub(crate) type Parsed<T> = Result<Option<(T, usize)>, String>;

/// A connection to a server, for one tick's conversation.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed by a parser.
    buf: BytesMut,
    /// When the whole conversation must be over.
    deadline: Instant,
    /// The budget the deadline came from, for the timeout's description.
    budget: Duration,
    /// The most one reply may hold.
    limit: usize,
}

impl Conn {
    /// Connects to `host:port` (and does the TLS handshake with `tls`),
    /// giving the whole conversation `budget` from now.
    pub async fn open(
        host: &str,
        port: u16,
        budget: Duration,
        limit: usize,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Conn, ServiceError> {
        let deadline = Instant::now() + budget;
        let timeout = |doing: &str| ServiceError::Timeout {
            seconds: budget.as_secs_f64(),
            doing: doing.to_string(),
        };
        let addr = tokio::time::timeout_at(deadline, resolve(host, port))
            .await
            .map_err(|_| timeout("resolving the name"))??;
        let tcp = tokio::time::timeout_at(deadline, connect(addr))
            .await
            .map_err(|_| timeout("connecting"))??;
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let (stream, _) = tokio::time::timeout_at(deadline, handshake(config, host, tcp))
                    .await
                    .map_err(|_| timeout("in the TLS handshake"))??;
                Box::new(stream)
            }
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(4096),
            deadline,
            budget,
            limit,
        })
    }

    /// Sends `bytes`; `what` names the request for errors.
    pub async fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), ServiceError> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServiceError::Io {
                doing: format!("sending {what}"),
                reason: e.to_string(),
            }),
            Err(_) => Err(self.timeout(format!("sending {what}"))),
        }
    }

    /// Reads until `parse` accepts the bytes as one reply, and returns it;
    /// `what` names what is awaited ("the reply to `stats`").
    pub async fn read<T>(&mut self, what: &str, mut parse: impl FnMut(&[u8]) -> Parsed<T>) -> Result<T, ServiceError> {
        loop {
            match parse(&self.buf) {
                Ok(Some((_, used))) if used > self.limit => break,
                Ok(Some((value, used))) => {
                    self.buf.advance(used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(detail) => {
                    return Err(ServiceError::Garbage {
                        doing: format!("to {what}"),
                        detail,
                    })
                }
            }
            if self.buf.len() >= self.limit {
                break;
            }
            self.fill(what).await?;
        }
        Err(ServiceError::TooLarge {
            limit: self.limit,
            doing: format!("in {what}"),
        })
    }

    /// One line (without its `\n` or `\r\n`).
    pub async fn line(&mut self, what: &str) -> Result<String, ServiceError> {
        self.read(what, |buf| Ok(split_line(buf))).await
    }

    /// Lines up to the one `end` accepts; that line is consumed and
    /// returned separately. The lines together may hold at most the
    /// reply limit.
    pub async fn lines_until(
        &mut self,
        what: &str,
        end: impl Fn(&str) -> bool,
    ) -> Result<(Vec<String>, String), ServiceError> {
        let mut lines = Vec::new();
        let mut total = 0usize;
        loop {
            let line = self.line(what).await?;
            if end(&line) {
                return Ok((lines, line));
            }
            total += line.len() + 1;
            if total > self.limit {
                return Err(ServiceError::TooLarge {
                    limit: self.limit,
                    doing: format!("in {what}"),
                });
            }
            lines.push(line);
        }
    }

    /// Reads more bytes into the buffer before the deadline.
    async fn fill(&mut self, what: &str) -> Result<(), ServiceError> {
        let room = self.limit.saturating_sub(self.buf.len()).clamp(1, 64 << 10);
        self.buf.reserve(room);
        let read = self.io.read_buf(&mut self.buf);
        match tokio::time::timeout_at(self.deadline, read).await {
            Ok(Ok(0)) => Err(ServiceError::Closed {
                doing: format!("before {what}"),
            }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ServiceError::Io {
                doing: format!("reading {what}"),
                reason: e.to_string(),
            }),
            Err(_) => Err(self.timeout(format!("waiting for {what}"))),
        }
    }

    fn timeout(&self, doing: String) -> ServiceError {
        ServiceError::Timeout {
            seconds: self.budget.as_secs_f64(),
            doing,
        }
    }
}

/// The first line of `buf` and the bytes it used (with its end), if a
/// whole line is there. Bytes that are not UTF-8 are replaced: the
/// protocols here are ASCII, and their parsers reject what is not.
pub(crate) fn split_line(buf: &[u8]) -> Option<(String, usize)> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    Some((String::from_utf8_lossy(line).into_owned(), end + 1))
}

/// The start of a reply, quoted for an error's description.
pub(crate) fn shown(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers the first request with `reply`, then holds
    /// the connection open without a word.
    async fn server(reply: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        port
    }

    async fn open(port: u16, budget: Duration, limit: usize) -> Conn {
        Conn::open("127.0.0.1", port, budget, limit, None).await.unwrap()
    }

    #[tokio::test]
    async fn lines_are_read_up_to_the_end_marker() {
        let port = server(b"STAT a 1\r\nSTAT b 2\r\nEND\r\n").await;
        let mut c = open(port, Duration::from_secs(5), 1000).await;
        c.send(b"stats\r\n", "`stats`").await.unwrap();
        let (lines, end) = c.lines_until("the reply", |l| l == "END").await.unwrap();
        assert_eq!(lines, ["STAT a 1", "STAT b 2"]);
        assert_eq!(end, "END");
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout_naming_the_request() {
        let port = server(b"half a li").await;
        let mut c = open(port, Duration::from_millis(300), 1000).await;
        c.send(b"x\n", "`x`").await.unwrap();
        let err = c.line("the reply to `x`").await.unwrap_err();
        assert_eq!(err.to_string(), "timed out after 0.3 s waiting for the reply to `x`");
    }

    #[tokio::test]
    async fn a_reply_past_the_limit_is_refused() {
        let port = server(b"0123456789012345678901234567890123456789\nEND\n").await;
        let mut c = open(port, Duration::from_secs(5), 16).await;
        c.send(b"x\n", "`x`").await.unwrap();
        let err = c.line("the reply").await.unwrap_err();
        assert!(matches!(err, ServiceError::TooLarge { limit: 16, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_parser_complaint_is_garbage() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Conn::open("127.0.0.1", closed, Duration::from_secs(5), 100, None)
            .await
            .err()
            .unwrap();
        assert_eq!(err.to_string(), format!("connection refused by 127.0.0.1:{closed}"));

        let port = server(b"HTTP/1.1 400 Bad Request\r\n").await;
        let mut c = open(port, Duration::from_secs(5), 1000).await;
        c.send(b"x\n", "`x`").await.unwrap();
        let err = c
            .read("the reply", |buf: &[u8]| -> Parsed<()> {
                match buf.first() {
                    Some(b'+') | None => Ok(None),
                    Some(_) => Err(shown(&String::from_utf8_lossy(buf))),
                }
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("unexpected reply to the reply: \"HTTP/1.1"),
            "{err}"
        );
    }

    #[test]
    fn lines_end_at_lf_with_or_without_cr() {
        assert_eq!(split_line(b"a\r\nb"), Some(("a".into(), 3)));
        assert_eq!(split_line(b"a\nb"), Some(("a".into(), 2)));
        assert_eq!(split_line(b"partial"), None);
    }
}
