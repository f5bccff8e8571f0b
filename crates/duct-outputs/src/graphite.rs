//! `duct.outputs.graphite.Graphite`: metrics to carbon's plaintext protocol
//! over TCP, one `path value timestamp` line per event.
//!
//! The path is Duct's: `prefix.hostname.service`, without the prefix when
//! none is set and without the host name when `prefix_hostname: false`.
//! Whitespace in a path would end the line's first field early, so each run
//! of it becomes `_`; dots are left alone (they are Graphite's hierarchy,
//! and a host name's dots stay levels as in Duct).
//!
//! Duct opened a connection per batch; this output keeps one open and
//! opens it again after a failure. Carbon never answers, so a batch counts
//! as delivered once it is written and flushed; a batch whose write fails is
//! sent again whole. Carbon keeps one value per path and timestamp, so a
//! line sent twice stores the same point twice, not two points. Events
//! without a metric, or whose metric is NaN or infinite, have no line.

use std::io::{self, Write as _};
use std::time::Duration;

use duct_core::config::seconds::Zero;
use duct_core::config::Diagnostic;
use duct_core::{Batch, BoxFuture, Event, Output, OutputArgs, OutputError, OutputSpec};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    server: String,
    port: u16,
    /// First element of every path; none by default.
    prefix: Option<String>,
    /// Put the event's host name after the prefix.
    prefix_hostname: bool,
    /// Seconds to wait for a connection.
    connect_timeout: f64,
    /// Seconds a batch may take to be written.
    write_timeout: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server: "localhost".into(),
            port: 2003,
            prefix: None,
            prefix_hostname: true,
            connect_timeout: 5.0,
            write_timeout: 10.0,
        }
    }
}

pub fn spec() -> OutputSpec {
    OutputSpec::new::<Options>(
        "duct.outputs.graphite.Graphite",
        "Sends metrics to Graphite's carbon as plaintext lines `prefix.hostname.service value time` over TCP",
        true,
        build,
    )
}

fn build(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic> {
    let opts: Options = args.options()?;
    if opts.server.trim().is_empty() {
        return Err(args.invalid("server", "needs a host name or address"));
    }
    if opts.port == 0 {
        return Err(args.invalid("port", "must be between 1 and 65535"));
    }
    let prefix = opts.prefix.filter(|p| !p.is_empty());
    Ok(Box::new(Graphite {
        peer: format!("{}:{}", opts.server, opts.port),
        server: opts.server,
        port: opts.port,
        paths: PathFormat {
            prefix,
            hostname: opts.prefix_hostname,
        },
        connect_timeout: args.duration("connect_timeout", opts.connect_timeout, Zero::Refused)?,
        write_timeout: args.duration("write_timeout", opts.write_timeout, Zero::Refused)?,
        conn: None,
        buf: Vec::with_capacity(64 << 10),
    }))
}

/// How an event's path is made.
#[derive(Debug, Clone)]
struct PathFormat {
    prefix: Option<String>,
    hostname: bool,
}

impl PathFormat {
    /// Appends the event's line to `out`, or nothing if it has no value.
    fn write_line(&self, event: &Event, out: &mut Vec<u8>) {
        let Some(metric) = event.metric else {
            return;
        };
        if !metric.as_f64().is_finite() {
            return;
        }
        let mut first = true;
        let parts = self.prefix.as_deref().into_iter();
        let host = self.hostname.then_some(event.host.as_str());
        for part in parts.chain(host).chain([event.service.as_str()]) {
            if !first {
                out.push(b'.');
            }
            first = false;
            push_path_part(part, out);
        }
        // Writing to a Vec cannot fail.
        let _ = writeln!(out, " {metric} {}", event.time.floor() as i64);
    }
}

/// `part` with each run of whitespace (or control characters) as one `_`.
fn push_path_part(part: &str, out: &mut Vec<u8>) {
    let mut in_gap = false;
    for c in part.chars() {
        if c.is_whitespace() || c.is_control() {
            if !in_gap {
                out.push(b'_');
            }
            in_gap = true;
        } else {
            in_gap = false;
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
}

pub struct Graphite {
    server: String,
    port: u16,
    /// `server:port`, for messages.
    peer: String,
    paths: PathFormat,
    connect_timeout: Duration,
    write_timeout: Duration,
    /// `None` until connected, and after any failure.
    conn: Option<TcpStream>,
    /// The batch's lines, reused from one send to the next.
    buf: Vec<u8>,
}

impl Graphite {
    async fn connect(&self) -> Result<TcpStream, String> {
        let connect = TcpStream::connect((self.server.as_str(), self.port));
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => {
                tracing::info!(server = %self.peer, "connected to Graphite");
                Ok(stream)
            }
            Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", self.peer)),
            Err(_) => Err(format!(
                "no connection to {} within {} s",
                self.peer,
                self.connect_timeout.as_secs_f64()
            )),
        }
    }

    async fn write(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        let write = async {
            stream.write_all(&self.buf).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing to {}: {e}", self.peer)),
            Err(_) => Err(format!(
                "{} did not take a batch within {} s",
                self.peer,
                self.write_timeout.as_secs_f64()
            )),
        }
    }
}

/// Whether carbon closed the connection while it was idle. Carbon never
/// writes, so a readable socket means end of file or an error.
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match tokio::time::timeout(Duration::ZERO, stream.read(&mut probe)).await {
        Err(_) => false,
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

impl Output for Graphite {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(async move {
            self.buf.clear();
            for event in batch.iter() {
                self.paths.write_line(event, &mut self.buf);
            }
            if self.buf.is_empty() {
                return Ok(());
            }
            let mut open = self.conn.take();
            if let Some(stream) = open.as_mut() {
                if is_closed(stream).await {
                    tracing::debug!(server = %self.peer, "connection closed while idle; reconnecting");
                    open = None;
                }
            }
            let mut stream = match open {
                Some(stream) => stream,
                None => self.connect().await.map_err(OutputError::new)?,
            };
            self.write(&mut stream).await.map_err(OutputError::new)?;
            self.conn = Some(stream);
            Ok(())
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut stream) = self.conn.take() {
                let _ = stream.shutdown().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(paths: &PathFormat, event: &Event) -> String {
        let mut out = Vec::new();
        paths.write_line(event, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn event(host: &str, service: &str, metric: Option<duct_core::Metric>) -> Event {
        let mut e = Event::new(host, service);
        e.metric = metric;
        e.time = 1_700_000_000.75;
        e
    }

    #[test]
    fn paths_are_ducts() {
        let duct = PathFormat {
            prefix: None,
            hostname: true,
        };
        let e = event("web1.example.org", "cpu.user", Some(3.into()));
        assert_eq!(line(&duct, &e), "web1.example.org.cpu.user 3 1700000000\n");
        let prefixed = PathFormat {
            prefix: Some("ops".into()),
            hostname: false,
        };
        let e = event("web1", "load.1", Some(0.25.into()));
        assert_eq!(line(&prefixed, &e), "ops.load.1 0.25 1700000000\n");
    }

    #[test]
    fn whitespace_cannot_split_a_line() {
        let paths = PathFormat {
            prefix: Some("a b".into()),
            hostname: true,
        };
        let e = event("h", "disk /var  used\n", Some(1.into()));
        assert_eq!(line(&paths, &e), "a_b.h.disk_/var_used_ 1 1700000000\n");
    }

    #[test]
    fn events_without_a_finite_value_have_no_line() {
        let paths = PathFormat {
            prefix: None,
            hostname: true,
        };
        assert_eq!(line(&paths, &event("h", "s", None)), "");
        assert_eq!(line(&paths, &event("h", "s", Some(f64::NAN.into()))), "");
        assert_eq!(line(&paths, &event("h", "s", Some(f64::INFINITY.into()))), "");
    }
}
