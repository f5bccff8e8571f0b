//! The process's ICMP echo client, shared by every Ping source.
//!
//! A poller with thousands of Ping sources holds two sockets, not
//! thousands: one surge-ping client per address family, created the first
//! time a Ping of that family runs. Source actors live on several arbiter
//! threads, each its own single-threaded runtime, while a socket belongs to
//! the runtime that registered it; so the clients live on one small thread
//! of their own (`duct-icmp`, with its own runtime), and a Ping hands its
//! whole exchange to that thread and awaits the result. Sending, receiving
//! and both timestamps of a round trip are taken on that one quiet thread,
//! however busy the arbiters are. (Sending from the arbiters instead costs
//! as much CPU, and races: on loopback the reply can be stamped by the
//! receiving thread before the sender has stamped its request.)
//!
//! Replies are matched to their pinger by identifier and sequence number:
//! the sequence comes from one process-wide counter, so two Ping sources
//! aiming at the same host never wait for the same reply. On a datagram
//! ("unprivileged") socket the kernel sets the identifier itself and
//! delivers to each socket only its own replies.
//!
//! Sockets: a datagram ICMP socket first (allowed to the groups in
//! `net.ipv4.ping_group_range`), else a raw one (needs CAP_NET_RAW). When
//! neither opens, [`IcmpUnavailable`] says both ways to fix it; the failure
//! is kept for [`RETRY_AFTER`] so that thousands of sources do not retry it
//! at every tick, and logged once per family until it works again.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use surge_ping::{Client, Config, PingIdentifier, PingSequence, SurgeError, ICMP};
use tokio::runtime::Handle;

/// How long a failure to open a socket is reported without trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// One ping exchange: `count` echo requests `spacing` apart, each waited
/// for `timeout`.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub target: IpAddr,
    pub count: u16,
    pub spacing: Duration,
    pub timeout: Duration,
    /// Bytes of ICMP payload in each request.
    pub payload: usize,
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Round trips of the replies received.
    pub rtts: Vec<Duration>,
    /// Requests sent (sending can fail: no route, for instance).
    pub sent: u16,
    /// Why a request could not be sent, if one could not.
    pub send_error: Option<String>,
}

impl Outcome {
    fn record(&mut self, result: Result<(surge_ping::IcmpPacket, Duration), SurgeError>) {
        match result {
            Ok((_, rtt)) => {
                self.sent += 1;
                self.rtts.push(rtt);
            }
            Err(SurgeError::Timeout { .. }) => self.sent += 1,
            Err(e) => {
                self.send_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Neither kind of ICMP socket may be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IcmpUnavailable(Arc<str>);

/// Runs `exchange` on the ICMP thread.
pub async fn ping(exchange: Exchange) -> Result<Outcome, IcmpUnavailable> {
    icmp_thread()?
        .spawn(run(exchange))
        .await
        .unwrap_or_else(|e| Err(IcmpUnavailable(format!("the ICMP task failed: {e}").into())))
}

/// The exchange itself, on the ICMP thread.
async fn run(exchange: Exchange) -> Result<Outcome, IcmpUnavailable> {
    let client = open(exchange.target)?;
    let payload = payload(exchange.payload);
    let first = SEQUENCE.fetch_add(exchange.count, Ordering::Relaxed);
    let probe = |i: u16| {
        let (payload, exchange) = (&payload, &exchange);
        async move {
            if i > 0 {
                tokio::time::sleep(exchange.spacing * u32::from(i)).await;
            }
            let mut pinger = client.pinger(exchange.target, identifier()).await;
            pinger.timeout(exchange.timeout);
            pinger.ping(PingSequence(first.wrapping_add(i)), payload).await
        }
    };
    let mut outcome = Outcome::default();
    for result in join_all((0..exchange.count).map(probe)).await {
        outcome.record(result);
    }
    Ok(outcome)
}

/// The ICMP thread's runtime, started on first use.
fn icmp_thread() -> Result<Handle, IcmpUnavailable> {
    static THREAD: OnceLock<Result<Handle, String>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("duct-icmp".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                    match runtime {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            rx.recv().map_err(|e| e.to_string())?
        })
        .clone()
        .map_err(|e| IcmpUnavailable(format!("cannot start the ICMP thread: {e}").into()))
}

/// A family's client once open, and the last failure to open it.
///
/// The client is never dropped: surge-ping's `Client` shuts its socket down
/// for every clone when any clone is dropped, so the one client lives for
/// the whole process and pingers borrow it.
struct Family {
    open: OnceLock<&'static Client>,
    /// Why it could not be opened, and when that was found.
    failed: Mutex<Option<(Instant, IcmpUnavailable)>>,
}

static V4: Family = Family {
    open: OnceLock::new(),
    failed: Mutex::new(None),
};
static V6: Family = Family {
    open: OnceLock::new(),
    failed: Mutex::new(None),
};

fn family(target: IpAddr) -> &'static Family {
    match target {
        IpAddr::V4(_) => &V4,
        IpAddr::V6(_) => &V6,
    }
}

/// The next sequence number, process-wide.
static SEQUENCE: AtomicU16 = AtomicU16::new(0);

/// This process's identifier in echo requests on raw sockets.
fn identifier() -> PingIdentifier {
    static ID: OnceLock<u16> = OnceLock::new();
    // The pid's low bits, as ping(8) does; the kernel picks its own on
    // datagram sockets.
    PingIdentifier(*ID.get_or_init(|| (std::process::id() & 0xffff) as u16))
}

/// The family's client, opened unless it is open or failed lately. Runs
/// on the ICMP thread: the socket registers with its runtime, and its
/// receive loop is spawned there.
fn open(target: IpAddr) -> Result<&'static Client, IcmpUnavailable> {
    let family = family(target);
    if let Some(c) = family.open.get() {
        return Ok(c);
    }
    let mut failed = family.failed.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = family.open.get() {
        return Ok(c);
    }
    if let Some((at, e)) = &*failed {
        if at.elapsed() < RETRY_AFTER {
            return Err(e.clone());
        }
    }
    let kind = match target {
        IpAddr::V4(_) => ICMP::V4,
        IpAddr::V6(_) => ICMP::V6,
    };
    let config = Config::builder()
        .kind(kind)
        .sock_type_hint(socket2::Type::DGRAM)
        .build();
    let name = if target.is_ipv4() { "IPv4" } else { "IPv6" };
    match Client::new(&config) {
        Ok(c) => {
            let socket = c.get_socket();
            let raw = socket.get_type() == socket2::Type::RAW;
            tune(socket.get_native_sock(), target, raw);
            let kind = if raw { "raw" } else { "datagram (unprivileged)" };
            if failed.take().is_some() {
                tracing::info!(family = name, socket = kind, "ICMP sockets work again");
            } else {
                tracing::info!(family = name, socket = kind, "ICMP socket opened");
            }
            let c: &'static Client = Box::leak(Box::new(c));
            Ok(*family.open.get_or_init(|| c))
        }
        Err(e) => {
            let error = IcmpUnavailable(unavailable_message(target, &e, ping_group_range().as_deref()).into());
            if failed.is_none() {
                tracing::error!("{error}");
            }
            *failed = Some((Instant::now(), error.clone()));
            Err(error)
        }
    }
}

/// Receive buffer asked for: replies to thousands of pings a second wait
/// there whenever the ICMP thread is not scheduled.
const RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// Readies a new socket for a busy poller: a larger receive buffer (beyond
/// `net.core.rmem_max` when the process may), and on a raw socket a filter
/// that lets only echo replies through — a raw socket otherwise gets every
/// ICMP message the host receives (on loopback, the requests too).
/// Failures only cost performance, so they are ignored.
fn tune(fd: std::os::fd::RawFd, target: IpAddr, raw: bool) {
    // Linux's <linux/icmp.h> and <netinet/icmp6.h>: a set bit blocks a type.
    const ICMP_FILTER: libc::c_int = 1;
    const ICMP6_FILTER: libc::c_int = 1;
    const ECHO_REPLY_V4: u32 = 0;
    const ECHO_REPLY_V6: u32 = 129;
    let set = |level: libc::c_int, name: libc::c_int, value: &[u32]| {
        // SAFETY: `fd` is the client's open socket; the option value is a
        // live slice whose size is passed along.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                value.as_ptr().cast(),
                std::mem::size_of_val(value) as libc::socklen_t,
            )
        }
    };
    let size = [RECEIVE_BUFFER as u32];
    if set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size) != 0 {
        set(libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
    }
    if !raw {
        return;
    }
    match target {
        IpAddr::V4(_) => {
            set(libc::SOL_RAW, ICMP_FILTER, &[!(1u32 << ECHO_REPLY_V4)]);
        }
        IpAddr::V6(_) => {
            let mut blocked = [u32::MAX; 8];
            blocked[(ECHO_REPLY_V6 / 32) as usize] &= !(1u32 << (ECHO_REPLY_V6 % 32));
            set(libc::IPPROTO_ICMPV6, ICMP6_FILTER, &blocked);
        }
    }
}

fn ping_group_range() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").ok()?;
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The one message an operator needs when ICMP sockets cannot be opened.
fn unavailable_message(target: IpAddr, error: &std::io::Error, range: Option<&str>) -> String {
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    let family = if target.is_ipv4() { "IPv4" } else { "IPv6" };
    let range = range.map_or(String::new(), |r| format!(" (it is \"{r}\")"));
    format!(
        "cannot open an {family} ICMP socket ({error}): unprivileged ICMP is not allowed for group {gid} by \
         net.ipv4.ping_group_range{range}, and raw sockets need CAP_NET_RAW. Either grant CAP_NET_RAW \
         (setcap cap_net_raw+ep on the binary, AmbientCapabilities=CAP_NET_RAW under systemd, \
         capabilities.add: [NET_RAW] in Kubernetes) or allow the group: sysctl -w \
         net.ipv4.ping_group_range=\"{gid} {gid}\""
    )
}

/// Printable bytes counting up from `!`, as Duct filled its requests, so
/// that a packet capture shows text.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'!' + (i % 94) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_both_fixes() {
        let e = std::io::Error::from_raw_os_error(libc::EPERM);
        let m = unavailable_message("127.0.0.1".parse().unwrap(), &e, Some("1 0"));
        assert!(m.contains("CAP_NET_RAW"), "{m}");
        assert!(m.contains("net.ipv4.ping_group_range"), "{m}");
        assert!(m.contains("(it is \"1 0\")"), "{m}");
        assert!(m.contains("NET_RAW"), "{m}");
        assert!(m.starts_with("cannot open an IPv4 ICMP socket"), "{m}");
    }

    #[test]
    fn payloads_are_printable_and_sized() {
        let p = payload(200);
        assert_eq!(p.len(), 200);
        assert!(p.iter().all(|b| b.is_ascii_graphic()));
        assert!(payload(0).is_empty());
    }
}
