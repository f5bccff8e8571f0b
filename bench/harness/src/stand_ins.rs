//! Stand-ins for the push outputs' receivers, for the throughput scenario:
//! each takes what an output sends, answers as the real receiver's API
//! does, and counts the events exactly — and cheaply, so that the
//! receiver is never what limits the figure (a real Elasticsearch or
//! InfluxDB on the same two cores would measure itself, not the agent).
//!
//! Counting does not parse the payload; it finds one mark per event:
//! - Graphite (carbon's plaintext over TCP): a line per event;
//! - InfluxDB 1.x, 2.x and 3 (`/write`, `/api/v3/write_lp`): a line per point;
//! - OpenTSDB and Bosun (`/api/put`): a `"timestamp"` key per data point
//!   (Bosun's `/api/metadata/put` is answered and not counted);
//! - Elasticsearch (`/_bulk`): two lines per document, answered with one
//!   `201` item per document, which the output reads;
//! - Prometheus remote write: the snappy block is uncompressed and the
//!   protobuf walked to count the samples of every series;
//! - NATS: the real `nats-server`, and a subscriber to every subject that
//!   counts the messages it delivers (one per event).
//!
//! The HTTP server speaks just enough HTTP/1.1: requests with a
//! `Content-Length`, kept alive unless the client asks otherwise. A
//! request it cannot read is counted as malformed and its connection
//! closed, so an exact-count check fails instead of guessing.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use regex::bytes::Regex;

use crate::agents::{free_port, Running, Scratch};
use crate::sink::{Sink, SinkCounts};
use crate::wire::{count_field, for_each_field, Malformed};

/// What a stand-in receives and how it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Graphite,
    /// InfluxDB's line protocol, any version.
    LineProtocol,
    /// OpenTSDB's and Bosun's `/api/put`.
    OpenTsdb,
    Elasticsearch,
    RemoteWrite,
}

/// Starts the stand-in for `api` on a free loopback port.
pub fn start(api: Api) -> io::Result<Sink> {
    match api {
        Api::Graphite => Sink::serving(Arc::new(serve_lines)),
        _ => {
            let timestamp = Regex::new("\"timestamp\"").map_err(io::Error::other)?;
            Sink::serving(Arc::new(move |stream, counts, stop| {
                serve_http(stream, api, &timestamp, counts, stop)
            }))
        }
    }
}

/// Carbon's plaintext protocol: count the lines, answer nothing.
fn serve_lines(mut stream: TcpStream, counts: &SinkCounts, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    // Small: a sender may hold thousands of connections at once.
    let mut buf = vec![0u8; 64 << 10];
    counts.messages.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                counts.events.fetch_add(lines as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
    }
}

/// What a request's head says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Bytes up to and including the blank line.
    len: usize,
    body_len: usize,
    path: String,
    close: bool,
}

/// Reads a request head from the front of `buf`: `Ok(None)` if it is not
/// all there yet.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Malformed> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 64 << 10 { Err(Malformed) } else { Ok(None) };
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| Malformed)?;
    let mut lines = text.split("\r\n");
    let request = lines.next().ok_or(Malformed)?;
    let path = request.split(' ').nth(1).ok_or(Malformed)?.to_string();
    let mut head = Head {
        len: end + 4,
        body_len: 0,
        path,
        close: request.ends_with("HTTP/1.0"),
    };
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(Malformed)?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.body_len = value.parse().map_err(|_| Malformed)?,
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            // Chunked bodies are not read here (no output sends them).
            "transfer-encoding" => return Err(Malformed),
            _ => {}
        }
    }
    Ok(Some(head))
}

/// Lines that hold something.
fn count_lines(body: &[u8]) -> usize {
    let newlines = body.iter().filter(|&&b| b == b'\n').count();
    let unterminated = usize::from(body.last().is_some_and(|&b| b != b'\n'));
    let blank = body.windows(2).filter(|w| w == b"\n\n").count() + usize::from(body.first() == Some(&b'\n'));
    newlines + unterminated - blank
}

/// The samples of a remote-write `WriteRequest` (snappy-compressed).
fn count_samples(body: &[u8]) -> Result<usize, Malformed> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|_| Malformed)?;
    let mut samples = 0;
    for_each_field(&raw, |field, series| {
        if field == 1 {
            samples += count_field(series, 2)?;
        }
        Ok(())
    })?;
    Ok(samples)
}

/// The events of one request, and the answer's status and body.
fn answer(api: Api, path: &str, body: &[u8], timestamp: &Regex) -> Result<(usize, u16, Vec<u8>), Malformed> {
    Ok(match api {
        Api::LineProtocol => (count_lines(body), 204, Vec::new()),
        Api::OpenTsdb if path.starts_with("/api/metadata/put") => (0, 204, Vec::new()),
        Api::OpenTsdb => {
            let points = timestamp.find_iter(body).count();
            let answer = format!("{{\"failed\":0,\"success\":{points}}}");
            (points, 200, answer.into_bytes())
        }
        Api::Elasticsearch => {
            let lines = count_lines(body);
            if lines % 2 != 0 {
                return Err(Malformed);
            }
            let documents = lines / 2;
            const ITEM: &[u8] = br#"{"create":{"status":201}}"#;
            let mut answer = Vec::with_capacity(40 + documents * (ITEM.len() + 1));
            answer.extend_from_slice(br#"{"took":1,"errors":false,"items":["#);
            for i in 0..documents {
                if i > 0 {
                    answer.push(b',');
                }
                answer.extend_from_slice(ITEM);
            }
            answer.extend_from_slice(b"]}");
            (documents, 200, answer)
        }
        Api::RemoteWrite => (count_samples(body)?, 204, Vec::new()),
        Api::Graphite => return Err(Malformed),
    })
}

fn serve_http(mut stream: TcpStream, api: Api, timestamp: &Regex, counts: &SinkCounts, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    // The head of the request whose body is still arriving.
    let mut pending: Option<Head> = None;
    while !stop.load(Ordering::Relaxed) {
        if pending.is_none() {
            match parse_head(&buf[..filled]) {
                Ok(head) => pending = head,
                Err(Malformed) => {
                    counts.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        if let Some(head) = pending.as_ref().filter(|h| filled >= h.len + h.body_len) {
            let end = head.len + head.body_len;
            let Ok((events, status, body)) = answer(api, &head.path, &buf[head.len..end], timestamp) else {
                counts.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            counts.events.fetch_add(events as u64, Ordering::Relaxed);
            counts.messages.fetch_add(1, Ordering::Relaxed);
            let close = head.close;
            let mut reply = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n",
                if status == 200 { "OK" } else { "No Content" },
                body.len()
            );
            if !body.is_empty() {
                reply.push_str("Content-Type: application/json\r\n");
            }
            if close {
                reply.push_str("Connection: close\r\n");
            }
            reply.push_str("\r\n");
            let mut reply = reply.into_bytes();
            reply.extend_from_slice(&body);
            if stream.write_all(&reply).is_err() || close {
                return;
            }
            buf.copy_within(end..filled, 0);
            filled -= end;
            pending = None;
            continue;
        }
        let want = pending.as_ref().map_or(0, |h| h.len + h.body_len);
        if filled == buf.len() || want > buf.len() {
            let grown = (buf.len() * 2).max(want);
            buf.resize(grown, 0);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return,
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
    }
}

/// A `nats-server` on a free loopback port and a subscriber to every
/// subject on it, counting the messages delivered.
pub struct NatsReceiver {
    pub port: u16,
    counts: Arc<SinkCounts>,
    stop: Arc<AtomicBool>,
    subscriber: Option<JoinHandle<()>>,
    /// Stopped after the subscriber (declared last, dropped last).
    _server: Running,
}

impl NatsReceiver {
    pub fn start(binary: &Path, scratch: &Scratch, tag: &str) -> io::Result<NatsReceiver> {
        let port = free_port()?;
        // A subscriber that falls behind by this much is cut off by the
        // server (a "slow consumer"): generous, so that it never is.
        let conf = scratch.write(
            &format!("nats-{tag}.conf"),
            &format!("listen: 127.0.0.1:{port}\nmax_pending: 1GB\nwrite_deadline: \"30s\"\n"),
        )?;
        let mut cmd = Command::new(binary);
        cmd.arg("-c").arg(conf);
        let mut server = Running::spawn("nats-server", cmd, scratch.path(&format!("nats-{tag}.log")))?;
        server.wait_for_port(port, Duration::from_secs(20))?;
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        stream.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB > 1\r\nPING\r\n")?;
        // The server has the subscription once it answers the PING.
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.windows(6).any(|w| w == b"PONG\r\n") {
            if Instant::now() > deadline {
                return Err(io::Error::other("nats-server did not answer the subscriber's PING"));
            }
            let mut part = [0u8; 4096];
            match stream.read(&mut part) {
                Ok(0) => return Err(io::Error::other("nats-server closed the subscriber's connection")),
                Ok(n) => seen.extend_from_slice(&part[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
        let counts = Arc::new(SinkCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let subscriber = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::Builder::new()
                .name("nats-subscriber".into())
                .spawn(move || subscribe(stream, &counts, &stop))?
        };
        Ok(NatsReceiver {
            port,
            counts,
            stop,
            subscriber: Some(subscriber),
            _server: server,
        })
    }

    pub fn counts(&self) -> &Arc<SinkCounts> {
        &self.counts
    }
}

impl Drop for NatsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.subscriber.take() {
            let _ = t.join();
        }
    }
}

/// What the front of a subscriber's buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// Not all there yet.
    Partial,
    /// A delivered message (`MSG` or `HMSG`) of this many bytes in all.
    Message(usize),
    /// A control line of this many bytes (`PING` is answered).
    Control { len: usize, ping: bool },
}

/// Reads the frame at the front of `buf` (NATS's client protocol).
fn nats_frame(buf: &[u8]) -> Result<Frame, Malformed> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(Frame::Partial);
    };
    let line = std::str::from_utf8(&buf[..eol]).map_err(|_| Malformed)?;
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().unwrap_or("");
    if verb == "MSG" || verb == "HMSG" {
        // The last word is the payload's size (headers included for HMSG).
        let size: usize = line.rsplit(' ').next().and_then(|s| s.parse().ok()).ok_or(Malformed)?;
        let total = eol + 2 + size + 2;
        return Ok(if buf.len() >= total {
            Frame::Message(total)
        } else {
            Frame::Partial
        });
    }
    if verb == "-ERR" {
        return Err(Malformed);
    }
    Ok(Frame::Control {
        len: eol + 2,
        ping: verb == "PING",
    })
}

fn subscribe(mut stream: TcpStream, counts: &SinkCounts, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0;
    while !stop.load(Ordering::Relaxed) {
        if filled == buf.len() {
            let grown = buf.len() * 2;
            buf.resize(grown, 0);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return,
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        let mut at = 0;
        let mut messages = 0;
        loop {
            match nats_frame(&buf[at..filled]) {
                Ok(Frame::Partial) => break,
                Ok(Frame::Message(len)) => {
                    messages += 1;
                    at += len;
                }
                Ok(Frame::Control { len, ping }) => {
                    if ping && stream.write_all(b"PONG\r\n").is_err() {
                        return;
                    }
                    at += len;
                }
                Err(Malformed) => {
                    counts.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        counts.events.fetch_add(messages, Ordering::Relaxed);
        counts.messages.fetch_add(messages, Ordering::Relaxed);
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_once_whole() {
        let req = b"POST /_bulk HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n{}\n";
        let head = parse_head(req).unwrap().unwrap();
        assert_eq!(
            (head.len, head.body_len, head.path.as_str(), head.close),
            (req.len() - 3, 12, "/_bulk", false)
        );
        assert_eq!(parse_head(&req[..30]), Ok(None));
        let close = b"PUT /api/put HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert!(parse_head(close).unwrap().unwrap().close);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(chunked), Err(Malformed));
    }

    #[test]
    fn lines_are_counted_with_or_without_a_final_newline() {
        assert_eq!(count_lines(b"a 1\nb 2\n"), 2);
        assert_eq!(count_lines(b"a 1\nb 2"), 2);
        assert_eq!(count_lines(b"\na\n\nb\n"), 2);
        assert_eq!(count_lines(b""), 0);
    }

    #[test]
    fn each_api_counts_its_events() {
        let ts = Regex::new("\"timestamp\"").unwrap();
        let duct = br#"[{"timestamp": 1, "metric": "a"}, {"timestamp": 2, "metric": "b"}]"#;
        assert_eq!(answer(Api::OpenTsdb, "/api/put", duct, &ts).unwrap().0, 2);
        assert_eq!(answer(Api::OpenTsdb, "/api/metadata/put", duct, &ts).unwrap().0, 0);
        let (docs, status, body) = answer(Api::Elasticsearch, "/_bulk", b"{}\n{}\n{}\n{}\n", &ts).unwrap();
        assert_eq!((docs, status), (2, 200));
        let items: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(items["items"].as_array().unwrap().len(), 2);
        assert!(answer(Api::Elasticsearch, "/_bulk", b"{}\n", &ts).is_err());
    }

    #[test]
    fn remote_write_samples_are_counted_across_series() {
        use duct_core::{Event, Metric};
        let events: Vec<Event> = (0..7)
            .map(|i| {
                let mut e = Event::new("h", format!("s{}", i % 3));
                e.metric = Some(Metric::Float(i as f64));
                e.time = 1_700_000_000.0 + i as f64;
                e
            })
            .collect();
        let request = duct_outputs::remote_write::write_request("duct_", events.iter());
        let raw = duct_proto::Message::encode_to_vec(&request);
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(count_samples(&body), Ok(7));
        assert_eq!(count_samples(b"not snappy"), Err(Malformed));
    }

    #[test]
    fn nats_frames_are_walked_by_their_sizes() {
        assert_eq!(nats_frame(b"MSG a.b 1 5\r\nhel"), Ok(Frame::Partial));
        assert_eq!(nats_frame(b"MSG a.b 1 5\r\nhello\r\nMSG"), Ok(Frame::Message(20)));
        let hmsg = b"HMSG a 1 12 17\r\nNATS/1.0\r\n\r\nhello\r\n";
        assert_eq!(nats_frame(hmsg), Ok(Frame::Message(hmsg.len())));
        assert_eq!(nats_frame(b"PING\r\n"), Ok(Frame::Control { len: 6, ping: true }));
        assert_eq!(nats_frame(b"-ERR 'Slow Consumer'\r\n"), Err(Malformed));
    }

    #[test]
    fn the_http_stand_in_keeps_connections_alive_and_counts() {
        let sink = start(Api::LineProtocol).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", sink.port())).unwrap();
        for _ in 0..2 {
            s.write_all(b"POST /write?db=x HTTP/1.1\r\nContent-Length: 8\r\n\r\na v=1 1\n")
                .unwrap();
            let mut answer = [0u8; 64];
            let n = s.read(&mut answer).unwrap();
            assert!(
                answer[..n].starts_with(b"HTTP/1.1 204 "),
                "{:?}",
                String::from_utf8_lossy(&answer[..n])
            );
        }
        assert!(sink.wait_for(2, Duration::from_secs(5)));
        assert_eq!(sink.counts().messages.load(Ordering::Relaxed), 2);
    }
}
