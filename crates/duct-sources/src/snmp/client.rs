//! The process's SNMP client, shared by every SNMP source.
//!
//! A central poller with thousands of devices holds one UDP socket per
//! address family, not one per device. As for ICMP
//! ([`crate::network::icmp`]), the sockets live on a small thread of their
//! own (`duct-snmp`, its own single-threaded runtime), because a socket
//! belongs to the runtime that registered it and source actors run on
//! several arbiters. A source hands each exchange to that thread and
//! awaits the answer's bytes, which it decodes itself.
//!
//! Answers are routed by request-id, drawn from one process-wide counter,
//! and must come from the address asked: a late answer to a request given
//! up on, a duplicate, or a datagram from elsewhere is dropped (and
//! counted). Each attempt waits `timeout`; a request is sent again, with
//! the same id, up to `retries` times, so a late answer to an earlier try
//! still counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::ber::{peek_request_id, MAX_MESSAGE_BYTES};

/// Bytes of receive buffer asked for each socket: room for the answers of
/// a few thousand devices polled at once.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Why an exchange got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExchangeError {
    #[error("no answer from {addr} after {tries} tries of {timeout:.1} s (agent down, unreachable, or it refuses the credentials)")]
    NoAnswer { addr: SocketAddr, tries: u32, timeout: f64 },
    #[error("{0}")]
    Io(String),
}

/// Datagrams dropped because nobody waited for them (late, duplicated,
/// from another address, or not SNMP).
pub static UNMATCHED: AtomicU64 = AtomicU64::new(0);

/// A fresh request-id (positive, as some agents mishandle negative ones).
pub fn next_request_id() -> i32 {
    static NEXT: OnceLock<AtomicI32> = OnceLock::new();
    let counter = NEXT.get_or_init(|| {
        // Starts somewhere else in every process, so that a restarted
        // agent does not take a previous run's late answers for its own.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ std::process::id())
            .unwrap_or_default();
        AtomicI32::new((seed & 0x3fff_ffff) as i32)
    });
    counter.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff
}

/// Who waits for each request-id: the address asked, and where to hand the answer.
type WaiterMap = HashMap<i32, (SocketAddr, oneshot::Sender<Vec<u8>>)>;
type Waiters = Mutex<WaiterMap>;

struct Shared {
    socket: Arc<UdpSocket>,
    waiters: Arc<Waiters>,
}

/// Sends `message` (whose request-id is `id`) to `addr` and returns the
/// bytes of the answer with that id.
pub async fn exchange(
    addr: SocketAddr,
    id: i32,
    message: Vec<u8>,
    timeout: Duration,
    retries: u32,
) -> Result<Vec<u8>, ExchangeError> {
    snmp_thread()?
        .spawn(run(addr, id, message, timeout, retries))
        .await
        .unwrap_or_else(|e| Err(ExchangeError::Io(format!("the SNMP task failed: {e}"))))
}

async fn run(
    addr: SocketAddr,
    id: i32,
    message: Vec<u8>,
    timeout: Duration,
    retries: u32,
) -> Result<Vec<u8>, ExchangeError> {
    let shared = open(addr).await?;
    let (tx, mut rx) = oneshot::channel();
    lock(&shared.waiters).insert(id, (addr, tx));
    // Removes the waiter however this ends (answer, timeout, or the
    // caller giving up and dropping the task's handle).
    struct Forget<'a>(&'a Waiters, i32);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            lock(self.0).remove(&self.1);
        }
    }
    let _forget = Forget(&shared.waiters, id);
    let tries = retries.saturating_add(1);
    for _ in 0..tries {
        if let Err(e) = shared.socket.send_to(&message, addr).await {
            return Err(ExchangeError::Io(format!("sending to {addr}: {e}")));
        }
        match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(bytes)) => return Ok(bytes),
            Ok(Err(_)) => return Err(ExchangeError::Io("the SNMP receiver stopped".into())),
            Err(_) => continue,
        }
    }
    Err(ExchangeError::NoAnswer {
        addr,
        tries,
        timeout: timeout.as_secs_f64(),
    })
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, WaiterMap> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// The socket of `addr`'s family, opened (with its receiving task) on
/// first use. Only the SNMP thread calls this, so no two open at once.
async fn open(addr: SocketAddr) -> Result<&'static Shared, ExchangeError> {
    static V4: OnceLock<Shared> = OnceLock::new();
    static V6: OnceLock<Shared> = OnceLock::new();
    let cell = if addr.is_ipv4() { &V4 } else { &V6 };
    if let Some(s) = cell.get() {
        return Ok(s);
    }
    let socket = bind(addr).map_err(|e| ExchangeError::Io(format!("cannot open an SNMP socket: {e}")))?;
    let socket = Arc::new(socket);
    let waiters: Arc<Waiters> = Arc::default();
    tokio::spawn(receive(socket.clone(), waiters.clone()));
    let _ = cell.set(Shared { socket, waiters });
    cell.get()
        .ok_or_else(|| ExchangeError::Io("the SNMP socket vanished".into()))
}

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&local.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

async fn receive(socket: Arc<UdpSocket>, waiters: Arc<Waiters>) {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on some systems; they concern
                // one exchange, which times out on its own.
                tracing::debug!("SNMP socket: {e}");
                continue;
            }
        };
        let datagram = &buf[..n];
        let id = peek_request_id(datagram).or_else(|| super::v3::peek_request_id(datagram));
        let waiter = id.and_then(|id| {
            let mut w = lock(&waiters);
            match w.get(&id) {
                Some((from, _)) if *from == peer => w.remove(&id).map(|(_, tx)| tx),
                _ => None,
            }
        });
        match waiter {
            Some(tx) => {
                let _ = tx.send(datagram.to_vec());
            }
            None => {
                UNMATCHED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn snmp_thread() -> Result<Handle, ExchangeError> {
    static THREAD: OnceLock<Result<Handle, String>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("duct-snmp".into())
                .spawn(
                    move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    },
                )
                .map_err(|e| e.to_string())?;
            rx.recv().map_err(|e| e.to_string())?
        })
        .clone()
        .map_err(|e| ExchangeError::Io(format!("cannot start the SNMP thread: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent that answers each datagram with `reply(datagram)`.
    async fn agent(reply: fn(&[u8]) -> Vec<Vec<u8>>) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                for r in reply(&buf[..n]) {
                    let _ = socket.send_to(&r, peer).await;
                }
            }
        });
        addr
    }

    fn request(id: i32) -> Vec<u8> {
        use super::super::ber::{encode_request, Oid, RequestKind, Version};
        encode_request(
            Version::V2c,
            b"c",
            RequestKind::Get,
            id,
            &[Oid::parse("1.3.6.1").unwrap()],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn answers_are_routed_by_request_id() {
        // The agent first sends an answer with another id, then echoes.
        let addr = agent(|d| {
            let id = peek_request_id(d).unwrap();
            vec![request(id.wrapping_add(1)), d.to_vec()]
        })
        .await;
        let id = next_request_id();
        let got = exchange(addr, id, request(id), Duration::from_secs(2), 0)
            .await
            .unwrap();
        assert_eq!(peek_request_id(&got), Some(id));
    }

    #[tokio::test]
    async fn silence_is_no_answer_after_every_try() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let id = next_request_id();
        let e = exchange(addr, id, request(id), Duration::from_millis(100), 2)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ExchangeError::NoAnswer {
                addr,
                tries: 3,
                timeout: 0.1
            }
        );
        // Three copies of the request reached the agent.
        silent.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let mut seen = 0;
        while silent.recv(&mut buf).is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 3);
    }
}
