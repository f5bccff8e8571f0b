//! The harness's Riemann clients.
//!
//! [`Flood`]: fast senders for the throughput scenario. Each connection
//! has its own thread that writes pre-encoded 100-event messages a block at
//! a time, keeps up to `window` messages unacknowledged (pipelining), and
//! reads acknowledgements in bulk. Nothing is encoded while the clock runs.
//!
//! [`Paced`]: one connection sending at a fixed rate, each event stamped
//! with the moment it is written (nanoseconds on the harness's clock, as
//! an integer metric), for the latency scenario.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use duct_core::{Event, Metric};
use duct_proto::OK_FRAME;

use crate::wire::{encoded_messages, EVENTS_PER_MESSAGE};

/// Messages written with one `write`.
const BLOCK: usize = 16;

/// What the senders did.
#[derive(Debug, Default)]
pub struct SendCounts {
    pub sent_events: AtomicU64,
    pub acked_events: AtomicU64,
    /// Answers that were not `ok: true`.
    pub refused: AtomicU64,
}

impl SendCounts {
    pub fn sent(&self) -> u64 {
        self.sent_events.load(Ordering::Relaxed)
    }

    pub fn acked(&self) -> u64 {
        self.acked_events.load(Ordering::Relaxed)
    }
}

/// Several connections pushing as fast as the agent takes them.
pub struct Flood {
    counts: Arc<SendCounts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Flood {
    pub fn start(port: u16, connections: usize, window: usize) -> io::Result<Flood> {
        let counts = Arc::new(SendCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let block = Arc::new(encoded_messages(BLOCK));
        let window = window.max(BLOCK);
        let mut threads = Vec::new();
        for i in 0..connections {
            let stream = TcpStream::connect(("127.0.0.1", port))?;
            let (counts, stop, block) = (counts.clone(), stop.clone(), block.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("flood-{i}"))
                    .spawn(move || flood(stream, &block, window, &counts, &stop))?,
            );
        }
        Ok(Flood { counts, stop, threads })
    }

    pub fn counts(&self) -> &Arc<SendCounts> {
        &self.counts
    }

    /// Stops writing, waits for the acknowledgement of everything written,
    /// and returns the first connection error, if any.
    pub fn finish(self) -> io::Result<Arc<SendCounts>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a sender thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result.map(|()| self.counts)
    }
}

/// Reads whatever answers have arrived (at least one byte, waiting up to
/// the socket's timeout); returns how many whole answers that completes.
fn read_answers(stream: &mut TcpStream, carry: &mut Vec<u8>, counts: &SendCounts) -> io::Result<usize> {
    let mut buf = [0u8; 16 << 10];
    let n = match stream.read(&mut buf) {
        Ok(0) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the agent closed the connection",
            ))
        }
        Ok(n) => n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(0),
        Err(e) => return Err(e),
    };
    carry.extend_from_slice(&buf[..n]);
    let whole = carry.len() / OK_FRAME.len();
    for answer in carry[..whole * OK_FRAME.len()].chunks(OK_FRAME.len()) {
        if answer != OK_FRAME {
            counts.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    carry.drain(..whole * OK_FRAME.len());
    Ok(whole)
}

fn flood(mut stream: TcpStream, block: &[u8], window: usize, counts: &SendCounts, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut in_flight = 0;
    let mut carry = Vec::new();
    let per_block = (BLOCK * EVENTS_PER_MESSAGE) as u64;
    while !stop.load(Ordering::Relaxed) {
        if in_flight + BLOCK <= window {
            stream.write_all(block)?;
            counts.sent_events.fetch_add(per_block, Ordering::Relaxed);
            in_flight += BLOCK;
        } else {
            let acked = read_answers(&mut stream, &mut carry, counts)?;
            in_flight -= acked;
            counts
                .acked_events
                .fetch_add((acked * EVENTS_PER_MESSAGE) as u64, Ordering::Relaxed);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_flight > 0 {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{in_flight} messages were never acknowledged"),
            ));
        }
        let acked = read_answers(&mut stream, &mut carry, counts)?;
        in_flight -= acked;
        counts
            .acked_events
            .fetch_add((acked * EVENTS_PER_MESSAGE) as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// The harness's clock: latency stamps are nanoseconds since this instant,
/// read by the sender and the sink of the same process.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    pub fn stamp(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.0).as_nanos() as i64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One connection sending `rate` single-event messages per second.
pub struct Paced {
    counts: Arc<SendCounts>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<()>>,
}

impl Paced {
    pub fn start(port: u16, rate: f64, clock: Clock) -> io::Result<Paced> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        let counts = Arc::new(SendCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let mut stream = stream.try_clone()?;
            stream.set_read_timeout(Some(Duration::from_millis(100)))?;
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut carry = Vec::new();
                while !stop.load(Ordering::Relaxed) || counts.acked() < counts.sent() {
                    match read_answers(&mut stream, &mut carry, &counts) {
                        Ok(n) => counts.acked_events.fetch_add(n as u64, Ordering::Relaxed),
                        Err(_) => return,
                    };
                }
            })
        };
        let thread = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::Builder::new().name("paced".into()).spawn(move || {
                let r = paced(stream, rate, clock, &counts, &stop);
                let _ = reader.join();
                r
            })?
        };
        Ok(Paced { counts, stop, thread })
    }

    pub fn finish(self) -> io::Result<Arc<SendCounts>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the paced sender panicked")))?;
        Ok(self.counts)
    }
}

fn paced(mut stream: TcpStream, rate: f64, clock: Clock, counts: &SendCounts, stop: &AtomicBool) -> io::Result<()> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut ev = Event::new("bench-host-01.example.net", "latency");
    ev.state = Some("ok".into());
    let mut buf = BytesMut::with_capacity(256);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += period;
        let written = Instant::now();
        ev.metric = Some(Metric::Int(clock.stamp(written)));
        buf.clear();
        duct_proto::wire::put_events_frame(&mut buf, [&ev]).map_err(io::Error::other)?;
        stream.write_all(&buf)?;
        counts.sent_events.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Sink;

    #[test]
    fn flood_counts_match_the_sink() {
        let sink = Sink::start(None).unwrap();
        let flood = Flood::start(sink.port(), 2, 64).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let counts = flood.finish().unwrap();
        assert!(counts.sent() > 0);
        assert_eq!(counts.sent(), counts.acked());
        assert!(sink.wait_for(counts.sent(), Duration::from_secs(5)));
        assert_eq!(sink.events(), counts.sent());
        assert_eq!(counts.refused.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn paced_sends_about_its_rate() {
        let sink = Sink::start(None).unwrap();
        let paced = Paced::start(sink.port(), 200.0, Clock::new()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let counts = paced.finish().unwrap();
        assert!((50..=150).contains(&counts.sent()), "{}", counts.sent());
        assert!(sink.wait_for(counts.sent(), Duration::from_secs(5)));
    }
}
