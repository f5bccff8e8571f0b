//! The disk buffer end to end: a relay ductd (a Riemann listener with
//! `end_to_end: true` feeding a disk-buffered RiemannTCP output) between a
//! sender that counts what was acknowledged and a receiving ductd that
//! logs what arrives. The relay is SIGKILLed mid-stream, the receiver
//! restarted, a segment corrupted, the buffer directory made unusable.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, metric, read_riemann_answer, riemann_frame, service, Running, TempDir};
use serde_json::Value;

/// Starts `ductd` with `config` written to `name` in `dir`.
fn start_agent(dir: &TempDir, name: &str, config: &str) -> Running {
    let path = dir.write(name, config);
    Running::start(&["-c", path.to_str().expect("utf-8 path")])
}

fn wait_ready(agent: &Running, what: &str) {
    assert!(
        agent.wait_for_log("Riemann listener ready", Duration::from_secs(20)),
        "the {what} did not start:\n{}",
        agent.stderr()
    );
}

/// The receiver: a Riemann listener whose events come out of its Logger.
fn start_receiver(dir: &TempDir, name: &str, port: u16) -> Running {
    let config = format!(
        "outputs:
  - output: duct.outputs.logger.Logger
    interval: 0.05
sources:
  - service: riemann
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {port}
"
    );
    let agent = start_agent(dir, name, &config);
    wait_ready(&agent, "receiver");
    agent
}

/// The relay: listener on `port` (end to end), a disk-buffered RiemannTCP
/// output to `downstream`; `extra` is added at the top level.
fn relay_config(port: u16, downstream: u16, buffer: &Path, extra: &str) -> String {
    format!(
        "outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: downstream
    server: 127.0.0.1
    port: {downstream}
    interval: 0.05
    backoff_max: 0.5
    buffer:
      type: disk
      path: {}
      max_bytes: 67108864
      sync_interval: 0.2
{extra}
sources:
  - service: listener
    source: duct.sources.riemann.RiemannTCP
    bind: 127.0.0.1
    port: {port}
    end_to_end: true
    route: downstream
",
        buffer.display()
    )
}

/// The sequence numbers of the `seq` events among `events`.
fn seqs(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| service(e) == "seq")
        .filter_map(metric)
        .map(|m| m.round() as i64)
        .collect()
}

/// Sends events `0..total` in messages of `per_message` to `port`, each
/// message again (on a new connection) until it is acknowledged `ok`;
/// `acked` counts the events acknowledged. Returns once all are.
fn send_all(port: u16, total: i64, per_message: i64, acked: &AtomicU64, stop: &AtomicBool) {
    let mut conn: Option<TcpStream> = None;
    let mut next = 0;
    while next < total && !stop.load(Ordering::Relaxed) {
        let end = (next + per_message).min(total);
        let events: Vec<(&str, &str, i64)> = (next..end).map(|i| ("seq", "sender", i)).collect();
        let frame = riemann_frame(&events);
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => conn.insert(s),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let answered = s.write_all(&frame).ok().and_then(|_| read_riemann_answer(s));
        match answered {
            Some(true) => {
                acked.fetch_add((end - next) as u64, Ordering::SeqCst);
                next = end;
                // Paced, so that the kills land mid-stream.
                std::thread::sleep(Duration::from_millis(3));
            }
            Some(false) => std::thread::sleep(Duration::from_millis(50)),
            None => {
                conn = None;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Takes what `receiver` has logged so far into `seen`.
fn gather(receiver: &Running, seen: &mut Vec<i64>, for_at_most: Duration) {
    let deadline = Instant::now() + for_at_most;
    while let Some(ev) = receiver.next_event(deadline.saturating_duration_since(Instant::now())) {
        seen.extend(seqs(&[ev]));
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_acknowledged_event_arrives_across_three_sigkills_and_a_receiver_restart() {
    const TOTAL: i64 = 30_000;
    let dir = TempDir::new("disk-buffer-kill");
    let (port, downstream) = (free_port(), free_port());
    let buffer = dir.path().join("buffer");
    let config = relay_config(port, downstream, &buffer, "");
    let mut receiver = start_receiver(&dir, "receiver1.yml", downstream);
    let mut relay = start_agent(&dir, "relay.yml", &config);
    wait_ready(&relay, "relay");

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || send_all(port, TOTAL, 100, &acked, &stop))
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    for (round, at) in [0.2, 0.45, 0.7].into_iter().enumerate() {
        while acked.load(Ordering::SeqCst) < (TOTAL as f64 * at) as u64 {
            assert!(Instant::now() < deadline, "the sender stalled at {acked:?}");
            gather(&receiver, &mut seen, Duration::from_millis(50));
        }
        relay.signal(libc::SIGKILL);
        drop(relay);
        if round == 1 {
            // The receiver goes too, and comes back on the same port.
            let (_, rest) = receiver.terminate(Duration::from_secs(15));
            seen.extend(seqs(&rest));
            receiver = start_receiver(&dir, &format!("receiver{}.yml", round + 2), downstream);
        }
        relay = start_agent(&dir, "relay.yml", &config);
        wait_ready(&relay, "relay");
    }
    while !sender.is_finished() {
        assert!(Instant::now() < deadline, "the sender stalled at {acked:?}");
        gather(&receiver, &mut seen, Duration::from_millis(100));
    }
    sender.join().expect("the sender");
    assert_eq!(acked.load(Ordering::SeqCst), TOTAL as u64);
    // Everything acknowledged arrives.
    loop {
        let distinct: HashSet<i64> = seen.iter().copied().collect();
        if distinct.len() as i64 == TOTAL {
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<i64> = (0..TOTAL).filter(|i| !distinct.contains(i)).take(20).collect();
            panic!(
                "{} of {TOTAL} acknowledged events arrived; missing e.g. {missing:?}\nrelay:\n{}",
                distinct.len(),
                relay.stderr()
            );
        }
        gather(&receiver, &mut seen, Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let (code, _) = relay.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let (_, rest) = receiver.terminate(Duration::from_secs(15));
    seen.extend(seqs(&rest));
    let distinct: HashSet<i64> = seen.iter().copied().collect();
    assert!(distinct.iter().all(|s| (0..TOTAL).contains(s)));
    println!(
        "disk buffer, 3 SIGKILLs and a receiver restart: {TOTAL} events acknowledged, {} received, {} distinct, {} duplicates",
        seen.len(),
        distinct.len(),
        seen.len() - distinct.len()
    );
}

#[test]
fn a_backlog_past_maxsize_is_read_back_from_disk_in_order_while_running() {
    let dir = TempDir::new("disk-buffer-spill");
    let (port, downstream) = (free_port(), free_port());
    let buffer = dir.path().join("buffer");
    // 300 events in memory, batches of 50: a backlog of 5,000 spills to
    // disk and is read back, a block at a time off the output's thread.
    let config = relay_config(port, downstream, &buffer, "").replace(
        "    backoff_max: 0.5\n",
        "    backoff_max: 0.5\n    maxsize: 300\n    batch: 50\n",
    );
    let relay = start_agent(&dir, "relay.yml", &config);
    wait_ready(&relay, "relay");
    let (acked, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    send_all(port, 5000, 50, &acked, &stop);
    assert_eq!(acked.load(Ordering::SeqCst), 5000);

    let receiver = start_receiver(&dir, "receiver.yml", downstream);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 5000 && Instant::now() < deadline {
        gather(&receiver, &mut seen, Duration::from_millis(200));
    }
    gather(&receiver, &mut seen, Duration::from_millis(500));
    assert_eq!(seen.len(), 5000, "each once:\n{}", relay.stderr());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in the order sent");
    let (code, _) = relay.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
}

#[test]
fn a_corrupted_record_is_skipped_counted_and_the_rest_delivered() {
    let dir = TempDir::new("disk-buffer-corrupt");
    let (port, downstream) = (free_port(), free_port());
    let buffer = dir.path().join("buffer");
    // The receiver is absent at first: everything waits on disk.
    let config = relay_config(port, downstream, &buffer, "");
    let relay = start_agent(&dir, "relay.yml", &config);
    wait_ready(&relay, "relay");
    let (acked, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    send_all(port, 1000, 100, &acked, &stop);
    assert_eq!(acked.load(Ordering::SeqCst), 1000);
    let (code, _) = relay.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));

    // Ten records of 100 events: flip bytes in the middle of the segment.
    let segment = segment_files(&buffer)
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .expect("a segment with records");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&segment, &bytes).unwrap();

    let receiver = start_receiver(&dir, "receiver.yml", downstream);
    let relay = start_agent(&dir, "relay.yml", &config);
    assert!(
        relay.wait_for_log("skipped torn or corrupted records", Duration::from_secs(20)),
        "{}",
        relay.stderr()
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 900 && Instant::now() < deadline {
        gather(&receiver, &mut seen, Duration::from_millis(200));
    }
    gather(&receiver, &mut seen, Duration::from_secs(1));
    let distinct: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 900, "one record of 100 lost, the other nine delivered");
    // The lost record is one message: 100 consecutive events.
    let missing: Vec<i64> = (0..1000).filter(|i| !distinct.contains(i)).collect();
    assert_eq!(missing.len(), 100);
    assert_eq!(missing[99] - missing[0], 99, "{missing:?}");
    assert!(relay.stderr().contains("records=1"), "{}", relay.stderr());
}

#[test]
fn an_unusable_buffer_directory_falls_back_to_memory_and_reports_unhealthy() {
    let dir = TempDir::new("disk-buffer-unusable");
    let (port, downstream) = (free_port(), free_port());
    // A file where the directory should be.
    let buffer = dir.write("not-a-directory", "x");
    let agent_source = "  - output: duct.outputs.logger.Logger
    name: log
    interval: 0.05";
    let config = relay_config(port, downstream, &buffer, agent_source).replace(
        "sources:\n",
        "sources:\n  - service: duct\n    source: duct.sources.Duct\n    interval: 0.2\n    route: log\n",
    );
    let receiver = start_receiver(&dir, "receiver.yml", downstream);
    let relay = start_agent(&dir, "relay.yml", &config);
    wait_ready(&relay, "relay");
    assert!(
        relay.wait_for_log("cannot use the disk buffer", Duration::from_secs(20)),
        "{}",
        relay.stderr()
    );
    let (acked, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    send_all(port, 200, 50, &acked, &stop);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 200 && Instant::now() < deadline {
        gather(&receiver, &mut seen, Duration::from_millis(200));
    }
    assert_eq!(seen.len(), 200, "delivered from memory");
    // Delivering, yet not healthy: the queue is not where it should be.
    relay.wait_for(Duration::from_secs(20), |e| {
        service(e) == "duct.output.downstream.healthy" && metric(e) == Some(0.0)
    });
    drop(receiver);
}

#[test]
fn bad_buffer_options_are_located_errors_at_check() {
    let dir = TempDir::new("disk-buffer-check");
    let cases = [
        ("{type: tape}", "buffer.type: must be `memory` or `disk`"),
        ("{type: disk}", "buffer.path: a disk buffer needs the directory"),
        (
            "{type: disk, path: /tmp/x, max_bytes: 10}",
            "buffer.max_bytes: must be at least",
        ),
        (
            "{type: disk, path: /tmp/x, sync_interval: 0}",
            "buffer.sync_interval: must be a positive",
        ),
        ("{type: disk, path: /tmp/x, size: 10}", "size"),
        ("{type: memory, path: /tmp/x}", "buffer.type: `path`"),
    ];
    for (buffer, want) in cases {
        let path = dir.write(
            "duct.yml",
            &format!("outputs:\n  - output: duct.outputs.null.Null\n    buffer: {buffer}\n"),
        );
        let (code, out, err) = common::ductd_output(&["check", "-c", path.to_str().unwrap()]);
        let text = format!("{out}{err}");
        assert_eq!(code, 1, "{buffer}: {text}");
        assert!(text.contains(want), "{buffer}: want {want:?} in {text}");
        assert!(text.contains("duct.yml:3:"), "{buffer}: located: {text}");
    }
    let twice = dir.write(
        "twice.yml",
        "outputs:\n  - output: duct.outputs.null.Null\n    buffer: {type: disk, path: /tmp/b}\n  - output: duct.outputs.null.Null\n    buffer: {type: disk, path: /tmp/b}\n",
    );
    let (code, out, err) = common::ductd_output(&["check", "-c", twice.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        format!("{out}{err}").contains("twice.yml:5:") && err.contains("is already the disk buffer of Null#0"),
        "{out}{err}"
    );
    let good = dir.write(
        "good.yml",
        "outputs:\n  - output: duct.outputs.null.Null\n    buffer: {type: disk, path: /tmp/ductd-check-buffer, max_bytes: 1048576}\n",
    );
    let (code, out, err) = common::ductd_output(&["check", "-c", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}
