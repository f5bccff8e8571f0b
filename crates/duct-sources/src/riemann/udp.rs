//! `duct.sources.riemann.RiemannUDP`: Riemann over UDP. Each datagram is
//! one bare `Msg` (no length prefix) and is never answered; its events are
//! judged and ingested exactly as a TCP message's (see [`super::Admission`]
//! and [`super::ingest`]). While the pipeline is saturated the socket is
//! not read, so datagrams wait in, and then overflow, the kernel's receive
//! buffer: over UDP a flood is dropped, not pushed back on.

use std::sync::Arc;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::throttle::Throttle;
use duct_core::{Poll, Schedule, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use duct_proto::Limits;
use serde::Deserialize;

use super::{ingest, Admission, Verdict, DEFAULT_MAX_EVENTS};

/// The largest UDP payload over IPv4; a datagram cannot be longer.
const MAX_DATAGRAM: usize = 65_507;
/// The memory one datagram's decoded events may take unless configured:
/// room for a full datagram of typical events (3 to 5 times their encoded
/// size), refusing one of tens of thousands of empty events.
const DEFAULT_MAX_MESSAGE_MEMORY: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    port: u16,
    /// Address to listen on; every interface by default, as RiemannTCP.
    bind: String,
    /// Most events in one datagram.
    max_events_per_message: usize,
    /// Most memory the decoded events of one datagram may take, in bytes.
    max_message_memory: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 5555,
            bind: "0.0.0.0".into(),
            max_events_per_message: DEFAULT_MAX_EVENTS,
            max_message_memory: DEFAULT_MAX_MESSAGE_MEMORY,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.riemann.RiemannUDP",
        "A Riemann UDP listener: every event of every datagram enters the pipeline unchanged; nothing is answered",
        &["(any): the events clients send, as they are"],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    if opts.max_events_per_message == 0 {
        return Err(args.invalid("max_events_per_message", "must be at least 1"));
    }
    if opts.max_message_memory == 0 {
        return Err(args.invalid("max_message_memory", "must be at least 1"));
    }
    Ok(Box::new(RiemannUdpListener {
        bind: opts.bind,
        port: opts.port,
        admission: Arc::new(Admission::new(Limits {
            max_events: opts.max_events_per_message,
            max_memory: opts.max_message_memory,
        })),
    }))
}

/// The source: binds in `start` (a port in use is an error of the start,
/// retried with backoff), then one task reads datagrams until it stops.
pub struct RiemannUdpListener {
    bind: String,
    port: u16,
    admission: Arc<Admission>,
}

impl Source for RiemannUdpListener {
    fn schedule(&self) -> Schedule {
        Schedule::Listener
    }

    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let (bind, port) = (&self.bind, self.port);
        let socket = std::net::UdpSocket::bind((bind.as_str(), port))
            .map_err(|e| format!("cannot listen on {bind}:{port} (UDP): {e}"))?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let address = socket.local_addr()?;
        tracing::info!(service = %ctx.service(), %address, "Riemann UDP listener ready");
        ctx.spawn(receive(socket, self.admission.clone(), ctx.clone()));
        Ok(())
    }

    fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// Reads datagrams until the source stops.
async fn receive(socket: tokio::net::UdpSocket, admission: Arc<Admission>, sctx: SourceContext) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut problems = Throttle::default();
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // An ICMP error for an earlier send, or a transient fault.
                if let Some(held) = problems.allow(Duration::from_secs(60)) {
                    tracing::warn!(service = %sctx.service(), held_back = held, "receiving a datagram failed: {e}");
                }
                continue;
            }
        };
        match admission.judge(&buf[..n], &sctx, peer) {
            Verdict::Take(events) => ingest(&sctx, events).await,
            // Already counted and logged; nobody to tell over UDP.
            Verdict::Refuse(_) => {}
            Verdict::Broken(e) => {
                duct_core::Telemetry::count(&sctx.telemetry().messages_refused, 1);
                if let Some(held) = problems.allow(Duration::from_secs(60)) {
                    tracing::warn!(
                        service = %sctx.service(),
                        %peer,
                        bytes = n,
                        held_back = held,
                        "dropped a datagram that is not a Riemann message: {e}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;
    use bytes::BytesMut;
    use duct_core::{Event, Metric};
    use std::net::UdpSocket;

    fn free_udp_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn listener(port: u16) -> RiemannUdpListener {
        RiemannUdpListener {
            bind: "127.0.0.1".into(),
            port,
            admission: Arc::new(Admission::new(Limits {
                max_events: 100,
                max_memory: 1 << 20,
            })),
        }
    }

    fn sample(i: i64) -> Event {
        let mut ev = Event::new("udp-client", format!("svc.{i}"));
        ev.time = 1732500000.5;
        ev.metric = Some(Metric::Int(i));
        ev.tags = vec!["t".into()];
        ev
    }

    /// Waits until `n` events arrived, or a few seconds passed.
    async fn wait_for(sink: &crate::testing::Collect, n: usize) -> Vec<Event> {
        for _ in 0..100 {
            if sink.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sink.0.lock().unwrap().clone()
    }

    #[test]
    fn each_datagram_is_a_message_and_bad_ones_are_dropped() {
        let port = free_udp_port();
        actix::System::new().block_on(async move {
            let (ctx, sink) = context("riemann-udp");
            listener(port).start(&ctx).unwrap();
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = BytesMut::new();
            duct_proto::wire::put_events_msg(&mut buf, &[sample(1), sample(2)]);
            client.send_to(&buf, ("127.0.0.1", port)).unwrap();
            // Garbage, then too many events: dropped, counted.
            client.send_to(&[0xff, 0xff, 0xff], ("127.0.0.1", port)).unwrap();
            client.send_to(&[0x32, 0x00].repeat(101), ("127.0.0.1", port)).unwrap();
            let mut buf = BytesMut::new();
            duct_proto::wire::put_events_msg(&mut buf, &[sample(3)]);
            client.send_to(&buf, ("127.0.0.1", port)).unwrap();
            let got = wait_for(&sink, 3).await;
            assert_eq!(got, [sample(1), sample(2), sample(3)]);
            let refused = ctx
                .telemetry()
                .messages_refused
                .load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(refused, 2);
        });
    }

    #[test]
    fn a_port_in_use_is_an_error_from_start() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        actix::System::new().block_on(async move {
            let (ctx, _) = context("riemann-udp");
            let err = listener(port).start(&ctx).unwrap_err();
            assert!(err.to_string().contains("cannot listen on 127.0.0.1"), "{err}");
        });
    }
}
