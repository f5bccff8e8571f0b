//! The harness's Riemann server: it accepts what an agent's Riemann output
//! (or collectd's `write_riemann`) sends, acknowledges every message as a
//! Riemann server does, and counts the events. A thread per connection
//! reads large buffers and answers all the frames of one read with one
//! write, so that the sink costs little beside the agent it measures.
//!
//! Scenarios that need more than a count (latency, scale) pass an
//! [`Inspect`] callback that sees every message body with its arrival time.
//!
//! The accepting and counting are shared with the stand-ins for the other
//! outputs' receivers ([`crate::stand_ins`]): [`Sink::serving`] takes the
//! function that serves one connection.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duct_proto::OK_FRAME;

use crate::wire::count_events;

/// Called with each message body and the moment it was read.
pub type Inspect = Arc<dyn Fn(&[u8], Instant) + Send + Sync>;

/// An event's time in seconds: `time_micros` where the sender wrote it
/// (ductd), else whole-second `time` (Duct), else 0.
pub fn event_seconds(ev: &duct_proto::Event) -> f64 {
    ev.time_micros
        .map(|us| us as f64 / 1e6)
        .or(ev.time.map(|s| s as f64))
        .unwrap_or(0.0)
}

/// Serves one accepted connection, counting what arrives, until the peer
/// leaves or the flag (the sink's stop) is set.
pub type Serve = Arc<dyn Fn(TcpStream, &SinkCounts, &AtomicBool) + Send + Sync>;

/// What the sink has seen so far.
#[derive(Debug, Default)]
pub struct SinkCounts {
    pub events: AtomicU64,
    pub messages: AtomicU64,
    pub connections: AtomicU64,
    /// Messages that could not be walked (a protocol bug somewhere).
    pub malformed: AtomicU64,
}

impl SinkCounts {
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Waits until `events` have arrived or `within` passes; true if they did.
    pub fn wait_for(&self, events: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.events() < events {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// A running sink on a free loopback port; stops when dropped.
pub struct Sink {
    port: u16,
    counts: Arc<SinkCounts>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Sink {
    /// A Riemann server.
    pub fn start(inspect: Option<Inspect>) -> io::Result<Sink> {
        Sink::serving(Arc::new(move |stream, counts, stop| {
            serve(stream, counts, stop, inspect.as_ref())
        }))
    }

    /// A server whose connections `serve` serves.
    pub fn serving(serve: Serve) -> io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(SinkCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::Builder::new()
                .name("sink-accept".into())
                .spawn(move || accept_loop(listener, counts, stop, serve))?
        };
        Ok(Sink {
            port,
            counts,
            stop,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn counts(&self) -> &Arc<SinkCounts> {
        &self.counts
    }

    pub fn events(&self) -> u64 {
        self.counts.events()
    }

    /// Waits until `events` have arrived or `within` passes; true if they did.
    pub fn wait_for(&self, events: u64, within: Duration) -> bool {
        self.counts.wait_for(events, within)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Joins the connection threads that have ended.
fn reap(connections: &mut Vec<JoinHandle<()>>) {
    let mut i = 0;
    while i < connections.len() {
        if connections[i].is_finished() {
            let _ = connections.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
}

fn accept_loop(listener: TcpListener, counts: Arc<SinkCounts>, stop: Arc<AtomicBool>, serve: Serve) {
    let mut connections = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                counts.connections.fetch_add(1, Ordering::Relaxed);
                let (counts, stop, serve) = (counts.clone(), stop.clone(), serve.clone());
                let spawned = std::thread::Builder::new()
                    .name("sink-conn".into())
                    .stack_size(256 << 10)
                    .spawn(move || serve(stream, &counts, &stop));
                if let Ok(handle) = spawned {
                    connections.push(handle);
                }
                // A joinable thread keeps its stack until joined: a sender
                // that opens a connection per batch (Duct's Graphite
                // output) would otherwise run the process out of mappings.
                reap(&mut connections);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    for c in connections {
        let _ = c.join();
    }
}

/// Reads frames until the peer leaves or the sink stops; answers each.
fn serve(mut stream: TcpStream, counts: &SinkCounts, stop: &AtomicBool, inspect: Option<&Inspect>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut acks = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        if filled == buf.len() {
            let grown = buf.len() * 2;
            buf.resize(grown, 0);
        }
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        };
        let now = Instant::now();
        filled += n;
        let mut at = 0;
        acks.clear();
        while filled - at >= 4 {
            let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if filled - at - 4 < len {
                break;
            }
            let body = &buf[at + 4..at + 4 + len];
            match count_events(body) {
                Ok(n) => {
                    counts.events.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    counts.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(inspect) = inspect {
                inspect(body, now);
            }
            counts.messages.fetch_add(1, Ordering::Relaxed);
            acks.extend_from_slice(&OK_FRAME);
            at += 4 + len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if !acks.is_empty() && stream.write_all(&acks).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encoded_messages, EVENTS_PER_MESSAGE};

    #[test]
    fn counts_and_acknowledges_every_message() {
        let sink = Sink::start(None).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", sink.port())).unwrap();
        let msgs = encoded_messages(5);
        // In two writes that cut a frame in half.
        s.write_all(&msgs[..msgs.len() / 2 + 3]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&msgs[msgs.len() / 2 + 3..]).unwrap();
        let mut answers = vec![0u8; 5 * OK_FRAME.len()];
        s.read_exact(&mut answers).unwrap();
        assert!(answers.chunks(OK_FRAME.len()).all(|a| a == OK_FRAME));
        assert!(sink.wait_for(5 * EVENTS_PER_MESSAGE as u64, Duration::from_secs(5)));
        assert_eq!(sink.counts().messages.load(Ordering::Relaxed), 5);
        assert_eq!(sink.counts().malformed.load(Ordering::Relaxed), 0);
    }
}
