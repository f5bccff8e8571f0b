//! HTTP/1.1 responses as the HTTP check reads them (RFC 9112): the head
//! (status line and header fields), how the body is delimited, and the
//! chunked transfer coding. Pure functions over bytes, fed by the check's
//! reads; nothing here trusts the server: heads and chunk-size lines are
//! bounded, and every malformed input is an error naming what was wrong.

/// Why a response cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("not an HTTP response: `{0}`")]
    StatusLine(String),
    #[error("malformed header line `{0}`")]
    Header(String),
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("bad Content-Length `{0}`")]
    ContentLength(String),
    #[error("unsupported Transfer-Encoding `{0}`")]
    TransferEncoding(String),
    #[error("bad chunk size line `{0}`")]
    ChunkSize(String),
    #[error("chunk not followed by CRLF")]
    ChunkEnd,
}

/// A response's status line and header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

/// The longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl ResponseHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How the body that follows is delimited (RFC 9112 §6.3), for a
    /// response to a request made with `method`.
    pub fn framing(&self, method: &str) -> Result<Framing, ResponseError> {
        if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&self.status) || matches!(self.status, 204 | 304)
        {
            return Ok(Framing::Empty);
        }
        if let Some(te) = self.header("transfer-encoding") {
            let last = te.rsplit(',').next().unwrap_or_default().trim();
            return if last.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else if self.minor_version == 0 || !te.to_ascii_lowercase().contains("chunked") {
                // A coding the check cannot undo, but the length is still
                // "until close": the body is read, only not decoded.
                Ok(Framing::UntilClose)
            } else {
                Err(ResponseError::TransferEncoding(te.to_string()))
            };
        }
        let lengths: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .collect();
        match lengths.split_first() {
            None => Ok(Framing::UntilClose),
            Some((first, rest)) => {
                if rest.iter().any(|l| l != first) {
                    return Err(ResponseError::ContentLength(lengths.join(", ")));
                }
                if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ResponseError::ContentLength(first.to_string()));
                }
                first
                    .parse()
                    .map(Framing::Length)
                    .map_err(|_| ResponseError::ContentLength(first.to_string()))
            }
        }
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// Reads a response head from the start of `buf`: `Ok(None)` while the
/// empty line that ends it has not arrived, else the head and how many
/// bytes of `buf` it took. A head longer than `max` is an error.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
    let Some(end) = find_head_end(buf) else {
        if buf.len() > max {
            return Err(ResponseError::HeadTooLarge(max));
        }
        // A peer that is not speaking HTTP is told apart early.
        let probe = &buf[..buf.len().min(5)];
        if !b"HTTP/".starts_with(probe) {
            return Err(ResponseError::StatusLine(first_line(buf)));
        }
        return Ok(None);
    };
    if end > max {
        return Err(ResponseError::HeadTooLarge(max));
    }
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let (minor_version, status, reason) =
        parse_status_line(status_line).ok_or_else(|| ResponseError::StatusLine(status_line.to_string()))?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            // Obsolete line folding: part of the previous field's value.
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                    continue;
                }
                None => return Err(ResponseError::Header(line.to_string())),
            }
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(is_token_byte))
            .ok_or_else(|| ResponseError::Header(line.to_string()))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some((
        ResponseHead {
            minor_version,
            status,
            reason,
            headers,
        },
        end,
    )))
}

/// The end of the head: just past `\r\n\r\n` (or a bare `\n\n`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + nl;
        let rest = &buf[at + 1..];
        if rest.starts_with(b"\n") {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

fn first_line(buf: &[u8]) -> String {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = &line[..line.len().min(80)];
    String::from_utf8_lossy(line).trim_end().to_string()
}

/// `HTTP/1.1 200 OK` → (1, 200, "OK").
fn parse_status_line(line: &str) -> Option<(u8, u16, String)> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let (minor, rest) = rest.split_at_checked(1)?;
    let minor = minor.parse::<u8>().ok()?;
    let rest = rest.strip_prefix(' ')?;
    let (code, reason) = rest.split_at_checked(3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !(reason.is_empty() || reason.starts_with(' ')) {
        return None;
    }
    Some((minor, code.parse().ok()?, reason.trim().to_string()))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Undoes the chunked transfer coding incrementally: feed it what has
/// arrived, take the data it finds, keep the rest for the next read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
    Done,
}

/// One step of decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input used.
    pub consumed: usize,
    /// Body data found: `input[data.0..data.1]`.
    pub data: (usize, usize),
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from the start of `input` as far as it can; `consumed` is
    /// 0 when more input is needed.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ResponseError> {
        let none = |consumed| Step { consumed, data: (0, 0) };
        match self.state {
            ChunkState::Done => Ok(none(0)),
            ChunkState::Size => {
                let Some(line) = take_line(input, MAX_CHUNK_LINE)
                    .map_err(|_| ResponseError::ChunkSize(first_line(&input[..input.len().min(80)])))?
                else {
                    return Ok(none(0));
                };
                let text = String::from_utf8_lossy(&input[..line.content]);
                let size_text = text.split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(size_text, 16)
                    .ok()
                    .filter(|_| !size_text.is_empty() && size_text.len() <= 16)
                    .ok_or_else(|| ResponseError::ChunkSize(text.to_string()))?;
                self.state = if size == 0 {
                    ChunkState::Trailers
                } else {
                    ChunkState::Data(size)
                };
                Ok(none(line.total))
            }
            ChunkState::Data(left) => {
                let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - n as u64;
                self.state = if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                };
                Ok(Step {
                    consumed: n,
                    data: (0, n),
                })
            }
            ChunkState::DataEnd => {
                if input.starts_with(b"\r\n") {
                    self.state = ChunkState::Size;
                    Ok(none(2))
                } else if input.starts_with(b"\n") {
                    self.state = ChunkState::Size;
                    Ok(none(1))
                } else if input.is_empty() || input == b"\r" {
                    Ok(none(0))
                } else {
                    Err(ResponseError::ChunkEnd)
                }
            }
            ChunkState::Trailers => {
                let Some(line) =
                    take_line(input, MAX_CHUNK_LINE).map_err(|_| ResponseError::Header(first_line(input)))?
                else {
                    return Ok(none(0));
                };
                if line.content == 0 {
                    self.state = ChunkState::Done;
                }
                Ok(none(line.total))
            }
        }
    }

    /// Decodes all of `input` that can be decoded now, handing data to
    /// `out`; returns the bytes used.
    pub fn decode(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> Result<usize, ResponseError> {
        let mut used = 0;
        while !self.is_done() {
            let step = self.step(&input[used..])?;
            if step.consumed == 0 {
                break;
            }
            let (from, to) = step.data;
            if to > from {
                out(&input[used + from..used + to]);
            }
            used += step.consumed;
        }
        Ok(used)
    }
}

struct Line {
    /// Bytes before the line ending.
    content: usize,
    /// Bytes including the line ending.
    total: usize,
}

/// A line at the start of `input`, if complete; an error past `max`.
fn take_line(input: &[u8], max: usize) -> Result<Option<Line>, ()> {
    match input.iter().position(|&b| b == b'\n') {
        Some(nl) if nl <= max => {
            let content = if nl > 0 && input[nl - 1] == b'\r' { nl - 1 } else { nl };
            Ok(Some(Line { content, total: nl + 1 }))
        }
        Some(_) => Err(()),
        None if input.len() > max => Err(()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::fixture;

    const MAX: usize = 64 << 10;

    fn head(name: &str) -> (ResponseHead, Vec<u8>) {
        let raw = fixture(name);
        let (head, used) = parse_head(&raw, MAX).unwrap().expect("a complete head");
        (head, raw[used..].to_vec())
    }

    #[test]
    fn reads_nginx_heads() {
        let (h, body) = head("nginx-200.http");
        assert_eq!((h.minor_version, h.status, h.reason.as_str()), (1, 200, "OK"));
        assert_eq!(h.header("server"), Some("nginx/1.22.1"));
        assert_eq!(h.header("CONTENT-TYPE"), Some("text/plain"));
        assert_eq!(h.framing("GET"), Ok(Framing::Length(body.len() as u64)));
        assert_eq!(h.framing("HEAD"), Ok(Framing::Empty));

        let (h, _) = head("nginx-404.http");
        assert_eq!((h.status, h.reason.as_str()), (404, "Not Found"));

        let (h, _) = head("nginx-302.http");
        assert_eq!(h.status, 302);
        assert_eq!(h.header("location"), Some("http://127.0.0.1:41873/"));
    }

    #[test]
    fn decodes_a_chunked_body_from_a_go_server() {
        // prometheus-blackbox-exporter's /metrics: Go's net/http chunks
        // bodies it does not know the length of.
        let (h, body) = head("blackbox-metrics-chunked.http");
        assert_eq!(h.framing("GET"), Ok(Framing::Chunked));
        let mut dec = ChunkedDecoder::default();
        let mut data = Vec::new();
        let used = dec.decode(&body, |d| data.extend_from_slice(d)).unwrap();
        assert!(dec.is_done());
        assert_eq!(used, body.len());
        let text = String::from_utf8(data).unwrap();
        assert!(text.starts_with("# HELP"), "{}", &text[..40]);
        assert!(text.ends_with('\n'));
        assert!(!text.contains("\r\n"), "no chunk framing left in the data");

        // The same body fed one byte at a time gives the same data.
        let mut dec = ChunkedDecoder::default();
        let mut pending = Vec::new();
        let mut again = Vec::new();
        for &b in &body {
            pending.push(b);
            let used = dec.decode(&pending, |d| again.extend_from_slice(d)).unwrap();
            pending.drain(..used);
        }
        assert!(dec.is_done());
        assert_eq!(again, text.as_bytes());
    }

    #[test]
    fn chunk_extensions_and_trailers_are_skipped() {
        let body = b"4;name=v\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n";
        let mut dec = ChunkedDecoder::default();
        let mut data = Vec::new();
        assert_eq!(dec.decode(body, |d| data.extend_from_slice(d)), Ok(body.len()));
        assert_eq!(data, b"Wikipedia");
        assert!(dec.is_done());
    }

    #[test]
    fn bad_chunks_are_errors() {
        let mut dec = ChunkedDecoder::default();
        assert!(matches!(
            dec.decode(b"zz\r\n", |_| {}),
            Err(ResponseError::ChunkSize(_))
        ));
        let mut dec = ChunkedDecoder::default();
        assert_eq!(dec.decode(b"2\r\nabX", |_| {}), Err(ResponseError::ChunkEnd));
        let mut dec = ChunkedDecoder::default();
        let endless = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(dec.decode(&endless, |_| {}).is_err(), "an endless size line is refused");
        let mut dec = ChunkedDecoder::default();
        assert!(
            dec.decode(b"fffffffffffffffff\r\n", |_| {}).is_err(),
            "a size over 64 bits"
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let raw = fixture("nginx-200.http");
        for cut in [0, 4, 20, 100] {
            assert_eq!(parse_head(&raw[..cut], MAX), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_refused_early() {
        assert!(matches!(
            parse_head(b"SSH-2.0-OpenSSH_9.2\r\n", MAX),
            Err(ResponseError::StatusLine(s)) if s == "SSH-2.0-OpenSSH_9.2"
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 abc Nope\r\n\r\n", MAX),
            Err(ResponseError::StatusLine(_))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", MAX),
            Err(ResponseError::Header(_))
        ));
        let endless = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 200]].concat();
        assert_eq!(parse_head(&endless, 100), Err(ResponseError::HeadTooLarge(100)));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let with = |headers: &[(&str, &str)], status| ResponseHead {
            minor_version: 1,
            status,
            reason: String::new(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        };
        assert_eq!(with(&[], 200).framing("GET"), Ok(Framing::UntilClose));
        assert_eq!(with(&[("Content-Length", "5")], 204).framing("GET"), Ok(Framing::Empty));
        assert_eq!(with(&[], 304).framing("GET"), Ok(Framing::Empty));
        assert_eq!(
            with(&[("Transfer-Encoding", "gzip, chunked"), ("Content-Length", "9")], 200).framing("GET"),
            Ok(Framing::Chunked),
            "Transfer-Encoding wins over Content-Length"
        );
        assert_eq!(
            with(&[("Content-Length", "7, 7")], 200).framing("GET"),
            Ok(Framing::Length(7))
        );
        assert!(with(&[("Content-Length", "7"), ("Content-Length", "8")], 200)
            .framing("GET")
            .is_err());
        assert!(with(&[("Content-Length", "-1")], 200).framing("GET").is_err());
        assert!(with(&[("Transfer-Encoding", "chunked, gzip")], 200)
            .framing("GET")
            .is_err());
    }

    #[test]
    fn folded_header_lines_join_the_previous_value() {
        let (h, _) = parse_head(b"HTTP/1.0 200 OK\r\nX-A: one\r\n  two\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert_eq!(h.header("x-a"), Some("one two"));
        assert_eq!(h.minor_version, 0);
    }
}
