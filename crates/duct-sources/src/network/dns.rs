//! `duct.sources.network.DNS` (ductd's): one query per tick to a
//! nameserver, timed; critical on NXDOMAIN, SERVFAIL (any error code), no
//! record of the type, a timeout, or an answer without the `expect`ed value.
//!
//! Options: `query` (the source's hostname by default; for PTR an address
//! is turned into its reverse name), `record_type` (A, AAAA, CNAME, MX,
//! TXT, NS, SOA, SRV, PTR), `server` (`address` or `address:port`, IPv6 in
//! brackets; by default the first `nameserver` of `/etc/resolv.conf`, read
//! at each tick), `expect` and `timeout`. The query goes over UDP with
//! EDNS(0); a truncated answer is asked again over TCP. Messages are made
//! and read by [`super::dns_message`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::dns_message::{decode_response, encode_query, nameservers, rcode, reverse_name, RecordType, Response};
use super::{check_budget, ms, CheckError, Phase, Progress, GRACE};

/// Default `timeout` when none is set, in seconds (capped by the interval).
const DEFAULT_TIMEOUT: f64 = 5.0;
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Values shown in a description.
const SHOWN: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The name to look up; the source's hostname by default.
    query: Option<String>,
    record_type: String,
    /// `address` or `address:port`; the system's resolver by default.
    server: Option<String>,
    /// A value the answer must hold (`198.51.100.7`, `10 mx.example.com`).
    expect: Option<String>,
    /// Seconds the whole check may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            query: None,
            record_type: "A".into(),
            server: None,
            expect: None,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.network.DNS",
        "A DNS query per tick: `query` (default: hostname), `record_type` (A, AAAA, CNAME, MX, TXT, NS, SOA, \
         SRV, PTR), `server` (default: the first nameserver of /etc/resolv.conf), `expect` (a value the answer \
         must hold), `timeout` (s)",
        &["(service).latency: the query's round trip, ms (critical on NXDOMAIN, SERVFAIL, no record, timeout or a missing `expect`)"],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let rtype = RecordType::from_name(o.record_type.trim()).ok_or_else(|| {
        let known: Vec<&str> = RecordType::ALL.iter().map(|t| t.name()).collect();
        args.invalid(
            "record_type",
            format!("unknown record type `{}` (one of {})", o.record_type, known.join(", ")),
        )
    })?;
    let asked = o.query.unwrap_or_else(|| args.settings.hostname.clone());
    let name = if rtype == RecordType::Ptr {
        reverse_name(asked.trim())
    } else {
        asked.trim().to_string()
    };
    // Refuses a name that cannot be put in a query now, not at every tick.
    encode_query(0, &name, rtype).map_err(|e| args.invalid("query", e))?;
    let server = o
        .server
        .as_deref()
        .map(parse_server)
        .transpose()
        .map_err(|e| args.invalid("server", e))?;
    Ok(Box::new(Dns {
        name,
        rtype,
        server,
        expect: o.expect.map(|e| normalise(&e)),
        budget: check_budget(args, DEFAULT_TIMEOUT),
    }))
}

/// `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53` or `[2001:db8::53]:53`.
fn parse_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    if let Some(v6) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if let Ok(ip) = v6.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, 53));
        }
    }
    text.parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0)
        .ok_or_else(|| format!("`{text}` is not an address, or an address and port (1 to 65535)"))
}

/// Compares values as DNS does: names without case or trailing dot.
fn normalise(value: &str) -> String {
    value.trim().trim_end_matches('.').to_ascii_lowercase()
}

pub struct Dns {
    /// The name asked (a reverse name for PTR).
    name: String,
    rtype: RecordType,
    /// `None`: the first nameserver of resolv.conf.
    server: Option<SocketAddr>,
    /// Normalised.
    expect: Option<String>,
    budget: Duration,
}

impl Source for Dns {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

impl Dns {
    async fn check(&self, ctx: &SourceContext) -> Vec<Event> {
        let started = Instant::now();
        let what = format!("{} {}", self.name, self.rtype.name());
        let server = match self.server {
            Some(s) => s,
            None => match system_server() {
                Ok(s) => s,
                Err(e) => {
                    return vec![ctx.create_event_prefixed("latency", "critical", format!("{what} - {e}"), None::<f64>)]
                }
            },
        };
        let mut progress = Progress::new();
        progress.enter(Phase::Waiting);
        let result = match tokio::time::timeout(self.budget, query(server, &self.name, self.rtype)).await {
            Ok(r) => r,
            Err(_) => Err(progress.timeout(self.budget)),
        };
        let took = ms(started.elapsed());
        let (state, description) = match result.and_then(|r| self.judge(&r)) {
            Ok(values) => ("ok", format!("{what} from {server}: {}", summary(&values))),
            Err(e) => ("critical", format!("{what} from {server} - {e}")),
        };
        vec![ctx.create_event_prefixed("latency", state, description, took)]
    }

    /// The values of the answer's records of the asked type, or what is
    /// wrong with it.
    fn judge(&self, response: &Response) -> Result<Vec<String>, CheckError> {
        if response.rcode != rcode::NOERROR {
            return Err(CheckError::Failed(rcode::name(response.rcode)));
        }
        let values: Vec<String> = response
            .answers
            .iter()
            .filter(|r| r.rtype == self.rtype.code())
            .map(|r| r.data.to_string())
            .collect();
        if values.is_empty() {
            return Err(CheckError::Failed(format!("no {} record", self.rtype.name())));
        }
        if let Some(expect) = &self.expect {
            if !values.iter().any(|v| normalise(v) == *expect) {
                return Err(CheckError::Failed(format!(
                    "`{expect}` is not in the answer ({})",
                    summary(&values)
                )));
            }
        }
        Ok(values)
    }
}

fn summary(values: &[String]) -> String {
    let mut s = values.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if values.len() > SHOWN {
        s.push_str(&format!(" and {} more", values.len() - SHOWN));
    }
    s
}

/// The first nameserver of resolv.conf (a small local file: read
/// synchronously, like `/proc`).
fn system_server() -> Result<SocketAddr, CheckError> {
    let text = std::fs::read_to_string(RESOLV_CONF)
        .map_err(|e| CheckError::Failed(format!("cannot read {RESOLV_CONF}: {e}")))?;
    nameservers(&text)
        .first()
        .map(|ip| SocketAddr::new(*ip, 53))
        .ok_or_else(|| CheckError::Failed(format!("no nameserver in {RESOLV_CONF}")))
}

/// A query identifier nobody can guess from outside the process.
fn query_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or_default());
    (h.finish() & 0xffff) as u16
}

/// Asks `server` over UDP, and over TCP when the answer was truncated.
async fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Response, CheckError> {
    let id = query_id();
    let message = encode_query(id, name, rtype).map_err(|e| CheckError::Failed(e.to_string()))?;
    let response = over_udp(server, id, &message).await?;
    if response.truncated {
        return over_tcp(server, id, &message).await;
    }
    Ok(response)
}

fn io_error(server: SocketAddr) -> impl Fn(std::io::Error) -> CheckError {
    move |e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            CheckError::Failed(format!("{server} refused the query (nothing listens)"))
        }
        _ => CheckError::Failed(format!("asking {server}: {e}")),
    }
}

async fn over_udp(server: SocketAddr, id: u16, message: &[u8]) -> Result<Response, CheckError> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io_error(server))?;
    socket.connect(server).await.map_err(io_error(server))?;
    socket.send(message).await.map_err(io_error(server))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io_error(server))?;
        let response = decode_response(&buf[..n])
            .map_err(|e| CheckError::Failed(format!("invalid DNS response from {server}: {e}")))?;
        // A late answer to an earlier query is not this one's.
        if response.id == id {
            return Ok(response);
        }
    }
}

async fn over_tcp(server: SocketAddr, id: u16, message: &[u8]) -> Result<Response, CheckError> {
    let mut stream = TcpStream::connect(server).await.map_err(io_error(server))?;
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).await.map_err(io_error(server))?;
    let len = stream.read_u16().await.map_err(io_error(server))?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(io_error(server))?;
    let response =
        decode_response(&buf).map_err(|e| CheckError::Failed(format!("invalid DNS response from {server}: {e}")))?;
    if response.id != id {
        return Err(CheckError::Failed(format!("{server} answered another query over TCP")));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::fixture;
    use crate::testing::context;

    fn dns(server: SocketAddr, name: &str, rtype: RecordType, expect: Option<&str>) -> Dns {
        Dns {
            name: name.into(),
            rtype,
            server: Some(server),
            expect: expect.map(normalise),
            budget: Duration::from_millis(500),
        }
    }

    /// A UDP server answering each query with `answer`, its id set by
    /// `id` from the query's (`None`: left as it is).
    async fn udp_server(answer: Vec<u8>, id: fn(u16) -> Option<u16>) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let mut reply = answer.clone();
                let asked = u16::from_be_bytes([buf[0], buf[1]]);
                if let (Some(id), true) = (id(asked), n >= 2 && reply.len() >= 2) {
                    reply[..2].copy_from_slice(&id.to_be_bytes());
                }
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        addr
    }

    #[test]
    fn servers_are_addresses_with_an_optional_port() {
        assert_eq!(parse_server("192.0.2.53"), Ok("192.0.2.53:53".parse().unwrap()));
        assert_eq!(parse_server("127.0.0.1:5353"), Ok("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(parse_server("2001:db8::53"), Ok("[2001:db8::53]:53".parse().unwrap()));
        assert_eq!(parse_server("[::1]:5353"), Ok("[::1]:5353".parse().unwrap()));
        assert!(parse_server("dns.example").is_err());
        assert!(parse_server("127.0.0.1:0").is_err());
        assert!(parse_server("127.0.0.1:70000").is_err());
    }

    #[tokio::test]
    async fn a_captured_answer_is_judged() {
        let server = udp_server(fixture("answer-web-a.dns"), Some).await;
        let (ctx, _) = context("dns");
        let evs = dns(server, "web.duct.test", RecordType::A, Some("198.18.0.11"))
            .check(&ctx)
            .await;
        assert_eq!(evs[0].state.as_deref(), Some("ok"), "{}", evs[0].description);
        assert!(
            evs[0].description.ends_with(": 198.18.0.10, 198.18.0.11"),
            "{}",
            evs[0].description
        );

        let evs = dns(server, "web.duct.test", RecordType::A, Some("198.18.0.99"))
            .check(&ctx)
            .await;
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        assert!(
            evs[0].description.contains("`198.18.0.99` is not in the answer"),
            "{}",
            evs[0].description
        );
    }

    #[tokio::test]
    async fn nxdomain_garbage_and_silence_are_critical() {
        let (ctx, _) = context("dns");
        let nx = udp_server(fixture("answer-nxdomain.dns"), Some).await;
        let evs = dns(nx, "nope.duct.test", RecordType::A, None).check(&ctx).await;
        assert!(evs[0].description.ends_with(" - NXDOMAIN"), "{}", evs[0].description);

        let garbage = udp_server(b"\xff\xff\xff\xffgarbage".to_vec(), |_| None).await;
        let evs = dns(garbage, "web.duct.test", RecordType::A, None).check(&ctx).await;
        assert_eq!(evs[0].state.as_deref(), Some("critical"));
        assert!(
            evs[0].description.contains("invalid DNS response"),
            "{}",
            evs[0].description
        );

        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let evs = dns(silent.local_addr().unwrap(), "web.duct.test", RecordType::A, None)
            .check(&ctx)
            .await;
        assert!(
            evs[0].description.contains("timed out after 0.5 s"),
            "{}",
            evs[0].description
        );
    }

    #[tokio::test]
    async fn answers_to_other_queries_are_ignored() {
        let (ctx, _) = context("dns");
        let stale = udp_server(fixture("answer-web-a.dns"), |asked| Some(!asked)).await;
        let evs = dns(stale, "web.duct.test", RecordType::A, None).check(&ctx).await;
        assert!(evs[0].description.contains("timed out"), "{}", evs[0].description);
    }
}
