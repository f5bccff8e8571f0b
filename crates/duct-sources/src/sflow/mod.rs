//! `duct.sources.sflow.sFlow`: an sFlow v5 collector (a UDP listener,
//! port 6343), under Duct's names.
//!
//! Datagrams are read by [`datagram`] (pure, unit-tested). For every agent
//! (named by the reverse DNS of the datagram's source address when
//! `dnslookup` is on, as Duct did, else the address) and interface, two
//! counter samples in a row give `(ifIndex).inOctets` and
//! `(ifIndex).outOctets`, in bytes per second, on that agent's host (64-bit
//! counters: a wrap is taken as one). The flow samples seen on an
//! interface in between are shared out, as Duct did, in proportion to
//! their bytes, over that interval's inbound rate:
//! `(ifIndex).ip.(address).(src|dst)` and `(ifIndex).port.(port).(src|dst)`
//! (ports for TCP and UDP only).
//!
//! A datagram that is not sFlow v5 is counted (`messages_refused` in the
//! agent's telemetry), logged at most once a minute, and dropped.

pub mod datagram;
pub mod generate;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::throttle::Throttle;
use duct_core::{Event, Poll, Registry, Schedule, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use serde::Deserialize;

use datagram::{decode, Conversation, Datagram, Sample};

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// How long a reverse lookup's answer (or failure) is kept.
const NAME_TTL: Duration = Duration::from_secs(3600);
/// Conversations kept per interface between two counter samples.
const MAX_CONVERSATIONS: usize = 10_000;

/// Adds the sFlow source to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(spec());
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    port: u16,
    dnslookup: bool,
    /// Address to listen on; every interface by default, as Duct.
    bind: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 6343,
            dnslookup: true,
            bind: "0.0.0.0".into(),
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.sflow.sFlow",
        "An sFlow v5 collector: `port` (6343), `dnslookup` (true: agents named by reverse DNS), `bind` (0.0.0.0)",
        &[
            "(service).(ifIndex).inOctets, .outOctets: bytes/s per agent host and interface",
            "(service).(ifIndex).ip.(address).(src|dst), .port.(port).(src|dst): the inbound rate shared by \
             sampled bytes",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    Ok(Box::new(SFlow {
        bind: o.bind,
        port: o.port,
        dnslookup: o.dnslookup,
    }))
}

pub struct SFlow {
    bind: String,
    port: u16,
    dnslookup: bool,
}

/// Receive buffer asked for the collector's socket.
const RECEIVE_BUFFER: usize = 8 << 20;

impl Source for SFlow {
    fn schedule(&self) -> Schedule {
        Schedule::Listener
    }

    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let (bind, port) = (&self.bind, self.port);
        let socket = std::net::UdpSocket::bind((bind.as_str(), port))
            .map_err(|e| format!("cannot listen on {bind}:{port} (UDP): {e}"))?;
        socket.set_nonblocking(true)?;
        // Agents send in bursts (a switch's counter samples all at once):
        // the kernel's default 208 KiB was seen to drop 1 % of 10,000
        // datagrams/s while other work held the thread. Best effort: the
        // kernel caps it at net.core.rmem_max.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER);
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let address = socket.local_addr()?;
        let buffer = socket2::SockRef::from(&socket).recv_buffer_size().unwrap_or(0);
        tracing::info!(service = %ctx.service(), %address, receive_buffer = buffer, "sFlow collector ready");
        ctx.spawn(receive(socket, self.dnslookup, ctx.clone()));
        Ok(())
    }

    fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// What the collector remembers of one agent's interface.
#[derive(Debug, Default)]
struct Interface {
    last: Option<(u64, u64, Instant)>,
    conversations: Vec<Conversation>,
}

/// The collector's state: per agent host, per ifIndex.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    interfaces: HashMap<(String, u32), Interface>,
}

/// One figure to send: (host, name, description, value).
pub(crate) type Figure = (String, String, String, f64);

impl Collector {
    /// Takes a datagram from `host` received at `now`; the figures it
    /// completes.
    pub fn take(&mut self, host: &str, d: &Datagram, now: Instant) -> Vec<Figure> {
        let mut out = Vec::new();
        for sample in &d.samples {
            match sample {
                Sample::Flow { input, packets, .. } => {
                    let i = self.interfaces.entry((host.to_string(), *input)).or_default();
                    let room = MAX_CONVERSATIONS.saturating_sub(i.conversations.len());
                    i.conversations.extend(packets.iter().take(room));
                }
                Sample::Counters(counters) => {
                    for c in counters {
                        let i = self.interfaces.entry((host.to_string(), c.if_index)).or_default();
                        let previous = i.last.replace((c.in_octets, c.out_octets, now));
                        let Some((last_in, last_out, then)) = previous else {
                            continue;
                        };
                        let span = now.duration_since(then).as_secs_f64();
                        if span <= 0.0 {
                            continue;
                        }
                        let delta_in = c.in_octets.wrapping_sub(last_in) as f64;
                        let delta_out = c.out_octets.wrapping_sub(last_out) as f64;
                        let (in_rate, out_rate) = (delta_in / span, delta_out / span);
                        let idx = c.if_index;
                        let conversations = std::mem::take(&mut i.conversations);
                        out.extend(shares(host, idx, &conversations, in_rate));
                        out.push((
                            host.to_string(),
                            format!("{idx}.inOctets"),
                            format!("sFlow index {idx} inOctets/sec {in_rate:0.2}"),
                            in_rate,
                        ));
                        out.push((
                            host.to_string(),
                            format!("{idx}.outOctets"),
                            format!("sFlow index {idx} outOctets/sec {out_rate:0.2}"),
                            out_rate,
                        ));
                    }
                }
            }
        }
        out
    }
}

/// The inbound rate shared by the bytes of each address and port.
fn shares(host: &str, idx: u32, conversations: &[Conversation], in_rate: f64) -> Vec<Figure> {
    let total: f64 = conversations.iter().map(|c| f64::from(c.bytes)).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let mut addr: [HashMap<String, f64>; 2] = Default::default();
    let mut port: [HashMap<u16, f64>; 2] = Default::default();
    for c in conversations {
        let b = f64::from(c.bytes);
        *addr[0].entry(c.src.to_string()).or_default() += b;
        *addr[1].entry(c.dst.to_string()).or_default() += b;
        if let Some((s, d)) = c.ports {
            *port[0].entry(s).or_default() += b;
            *port[1].entry(d).or_default() += b;
        }
    }
    let mut out = Vec::new();
    for (dir, map) in ["src", "dst"].iter().zip(&addr) {
        let mut v: Vec<_> = map.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        for (ip, b) in v {
            let m = b / total * in_rate;
            out.push((
                host.to_string(),
                format!("{idx}.ip.{ip}.{dir}"),
                format!("sFlow if:{idx} addr:{ip} inOctets/sec {m:0.2}"),
                m,
            ));
        }
    }
    for (dir, map) in ["src", "dst"].iter().zip(&port) {
        let mut v: Vec<_> = map.iter().collect();
        v.sort_by_key(|(p, _)| **p);
        // Port 0 is skipped, as Duct did.
        for (p, b) in v.into_iter().filter(|(p, _)| **p != 0) {
            let m = b / total * in_rate;
            out.push((
                host.to_string(),
                format!("{idx}.port.{p}.{dir}"),
                format!("sFlow if:{idx} port:{p} inOctets/sec {m:0.2}"),
                m,
            ));
        }
    }
    out
}

/// Reverse DNS through the system's resolver (getnameinfo, on a blocking
/// thread), the address itself when it has no name.
async fn reverse(ip: IpAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let addr = std::net::SocketAddr::new(ip, 0);
        let sa: socket2::SockAddr = addr.into();
        let mut host = [0 as libc::c_char; 1025];
        // SAFETY: `sa` is a valid socket address of the given length, and
        // `host` a writable buffer of the length passed.
        let rc = unsafe {
            libc::getnameinfo(
                sa.as_ptr() as *const libc::sockaddr,
                sa.len(),
                host.as_mut_ptr(),
                host.len() as libc::socklen_t,
                std::ptr::null_mut(),
                0,
                libc::NI_NAMEREQD,
            )
        };
        if rc != 0 {
            return ip.to_string();
        }
        // SAFETY: getnameinfo wrote a NUL-terminated string on success.
        unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    })
    .await
    .unwrap_or_else(|_| ip.to_string())
}

async fn receive(socket: tokio::net::UdpSocket, dnslookup: bool, ctx: SourceContext) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut problems = Throttle::default();
    let mut collector = Collector::default();
    let mut names: HashMap<IpAddr, (String, Instant)> = HashMap::new();
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                if let Some(held) = problems.allow(Duration::from_secs(60)) {
                    tracing::warn!(service = %ctx.service(), held_back = held, "receiving a datagram failed: {e}");
                }
                continue;
            }
        };
        let d = match decode(&buf[..n]) {
            Ok(d) => d,
            Err(e) => {
                duct_core::Telemetry::count(&ctx.telemetry().messages_refused, 1);
                if let Some(held) = problems.allow(Duration::from_secs(60)) {
                    tracing::warn!(service = %ctx.service(), peer = %peer, bytes = n, held_back = held,
                        "dropped a datagram that is not sFlow v5: {e}");
                }
                continue;
            }
        };
        let ip = peer.ip();
        let host = if dnslookup {
            match names.get(&ip) {
                Some((name, at)) if at.elapsed() < NAME_TTL => name.clone(),
                _ => {
                    let name = reverse(ip).await;
                    names.insert(ip, (name.clone(), Instant::now()));
                    name
                }
            }
        } else {
            ip.to_string()
        };
        let figures = collector.take(&host, &d, Instant::now());
        if figures.is_empty() {
            continue;
        }
        let events: Vec<Event> = figures
            .into_iter()
            .map(|(host, name, description, value)| {
                ctx.create_event_prefixed(&name, "ok", description, value).on_host(host)
            })
            .collect();
        ctx.queue_back_wait(events).await;
    }
}

#[cfg(test)]
mod tests {
    use super::datagram::InterfaceCounters;
    use super::generate::{encode, frame};
    use super::*;

    fn counters(in_octets: u64, out_octets: u64) -> InterfaceCounters {
        InterfaceCounters {
            if_index: 3,
            in_octets,
            out_octets,
            ..Default::default()
        }
    }

    #[test]
    fn two_counter_samples_give_rates_and_flows_share_the_inbound_rate() {
        let mut c = Collector::default();
        let t0 = Instant::now();
        let first = decode(&encode([192, 0, 2, 7], 1, &[counters(1000, 500)], 3, &[])).unwrap();
        assert!(c.take("sw1", &first, t0).is_empty());
        let frames = [
            frame([10, 0, 0, 1], [10, 0, 0, 2], 40_000, 443, 1500),
            frame([10, 0, 0, 3], [10, 0, 0, 2], 40_001, 80, 500),
        ];
        let second = decode(&encode([192, 0, 2, 7], 2, &[counters(3000, 600)], 3, &frames)).unwrap();
        // The flow sample comes after the counter sample in this
        // datagram: it is kept for the next interval.
        let got = c.take("sw1", &second, t0 + Duration::from_secs(2));
        let names: Vec<(&str, f64)> = got.iter().map(|(_, n, _, v)| (n.as_str(), *v)).collect();
        assert_eq!(names, [("3.inOctets", 1000.0), ("3.outOctets", 50.0)]);
        let third = decode(&encode([192, 0, 2, 7], 3, &[counters(u64::MAX, 600)], 3, &[])).unwrap();
        let wrapped = decode(&encode([192, 0, 2, 7], 3, &[counters(3999, 600)], 3, &[])).unwrap();
        let got = c.take("sw1", &wrapped, t0 + Duration::from_secs(4));
        let mut by_name: HashMap<&str, f64> = got.iter().map(|(_, n, _, v)| (n.as_str(), *v)).collect();
        assert_eq!(by_name.remove("3.inOctets"), Some(499.5));
        assert_eq!(by_name.remove("3.ip.10.0.0.1.src"), Some(499.5 * 0.75));
        assert_eq!(by_name.remove("3.ip.10.0.0.3.src"), Some(499.5 * 0.25));
        assert_eq!(by_name.remove("3.ip.10.0.0.2.dst"), Some(499.5));
        assert_eq!(by_name.remove("3.port.443.dst"), Some(499.5 * 0.75));
        assert_eq!(by_name.remove("3.port.40001.src"), Some(499.5 * 0.25));
        assert!(got.iter().all(|(h, ..)| h == "sw1"));
        // A 64-bit wrap is one wrap.
        let mut c = Collector::default();
        c.take("sw1", &third, t0);
        let got = c.take("sw1", &wrapped, t0 + Duration::from_secs(1));
        assert_eq!(got[0].3, 4000.0);
    }

    #[test]
    fn flows_captured_from_pmacct_are_shared_over_the_counters_rate() {
        // pmacct's counter samples carry no records, so the interface's
        // counters come from the generator, on the same ifIndex (1).
        let counter = |octets: u64| InterfaceCounters {
            if_index: 1,
            in_octets: octets,
            ..Default::default()
        };
        let mut c = Collector::default();
        let t0 = Instant::now();
        let first = decode(&encode([127, 0, 0, 1], 1, &[counter(0)], 1, &[])).unwrap();
        assert!(c.take("lo", &first, t0).is_empty());
        for i in 0..10 {
            let bytes = crate::services::fixture("sflow", &format!("pmacct-{i:03}.bin"));
            assert!(c.take("lo", &decode(&bytes).unwrap(), t0).is_empty());
        }
        let last = decode(&encode([127, 0, 0, 1], 2, &[counter(10_000)], 1, &[])).unwrap();
        let got = c.take("lo", &last, t0 + Duration::from_secs(10));
        let by_name: HashMap<&str, f64> = got.iter().map(|(_, n, _, v)| (n.as_str(), *v)).collect();
        assert_eq!(by_name["1.inOctets"], 1000.0);
        // Every sampled packet went from and to 127.0.0.1.
        assert_eq!(by_name["1.ip.127.0.0.1.src"], 1000.0);
        assert_eq!(by_name["1.ip.127.0.0.1.dst"], 1000.0);
        let udp = by_name["1.port.9999.dst"];
        assert!(udp > 0.0 && udp < 1000.0, "{udp}");
        assert_eq!(by_name["1.port.40000.src"], udp);
        assert!(by_name["1.port.18080.dst"] > 0.0 && by_name["1.port.18080.src"] > 0.0);
    }

    #[test]
    fn datagrams_are_received_and_garbage_is_counted() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        actix::System::new().block_on(async move {
            let (ctx, sink) = crate::testing::context("sflow");
            let mut s = SFlow {
                bind: "127.0.0.1".into(),
                port,
                dnslookup: false,
            };
            s.start(&ctx).unwrap();
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = ("127.0.0.1", port);
            client
                .send_to(&encode([192, 0, 2, 7], 1, &[counters(0, 0)], 3, &[]), to)
                .unwrap();
            client.send_to(b"not sflow", to).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            client
                .send_to(&encode([192, 0, 2, 7], 2, &[counters(100, 10)], 3, &[]), to)
                .unwrap();
            let mut got = Vec::new();
            for _ in 0..100 {
                got = sink.0.lock().unwrap().clone();
                if got.len() >= 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let names: Vec<&str> = got.iter().map(|e| e.service.as_str()).collect();
            assert_eq!(names, ["sflow.3.inOctets", "sflow.3.outOctets"]);
            assert_eq!(got[0].host, "127.0.0.1");
            assert!(got[0].metric.is_some());
            assert_eq!(
                ctx.telemetry()
                    .messages_refused
                    .load(std::sync::atomic::Ordering::Relaxed),
                1
            );
        });
    }
}
