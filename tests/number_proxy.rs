//! The built-in `duct.sources.network.NumberProxy` under the input a
//! listener on a network gets: junk, endless lines, too many clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{free_port, metric, Running, TempDir};

fn start(extra: &str) -> (Running, u16, TempDir) {
    let dir = TempDir::new("numberproxy");
    let port = free_port();
    let path = dir.write(
        "duct.yml",
        &format!(
            "outputs:\n  - output: duct.outputs.logger.Logger\n    interval: 0.1\nsources:\n  - service: numbers\n    source: duct.sources.network.NumberProxy\n    bind: 127.0.0.1\n    port: {port}\n{extra}"
        ),
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    assert!(
        common::wait_for_port(port, Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    (agent, port, dir)
}

fn send(port: u16, bytes: &[u8]) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(bytes).unwrap();
}

#[test]
fn binary_junk_is_ignored_and_numbers_still_count() {
    let (agent, port, _dir) = start("");
    let mut junk: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    junk.extend_from_slice(b"\n\x00\x01\x02\n12.5\n");
    send(port, &junk);
    let events = agent.wait_for(Duration::from_secs(10), |e| metric(e) == Some(12.5));
    assert_eq!(events.len(), 1, "only the number became an event: {events:?}");
}

#[test]
fn an_endless_line_is_dropped_with_bounded_memory() {
    let (agent, port, _dir) = start("    max_line_bytes: 64\n");
    let before = common::status_kib(agent.pid(), "VmRSS:");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let chunk = vec![b'9'; 1 << 20];
    for _ in 0..50 {
        conn.write_all(&chunk).unwrap();
    }
    conn.write_all(b"\n7\n").unwrap();
    let events = agent.wait_for(Duration::from_secs(20), |e| metric(e) == Some(7.0));
    assert_eq!(events.len(), 1, "the 50 MB line was not a number");
    let after = common::status_kib(agent.pid(), "VmRSS:");
    assert!(after < before + 20_000, "RSS grew from {before} to {after} KiB");
    assert!(agent.wait_for_log("discarded a line longer than max_line_bytes", Duration::from_secs(5)));
}

#[test]
fn connections_beyond_the_limit_are_refused_and_the_listener_goes_on() {
    let (agent, port, _dir) = start("    max_connections: 50\n");
    let mut held = Vec::new();
    for _ in 0..2000 {
        if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
            held.push(c);
        }
    }
    // Refused connections are closed by the agent: a read sees the end.
    std::thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut buf = [0u8; 1];
        if matches!(c.read(&mut buf), Ok(0)) {
            closed += 1;
        }
    }
    // The test's own descriptor limit may stop short of 2,000.
    let opened = held.len();
    assert!(opened >= 500, "only {opened} connections could be opened");
    assert!(
        closed >= opened - 60,
        "only {closed} of {opened} connections were refused"
    );
    assert!(agent.wait_for_log("too many connections", Duration::from_secs(5)));
    assert!(common::status_kib(agent.pid(), "VmRSS:") < 100_000);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    send(port, b"3\n");
    agent.wait_for(Duration::from_secs(10), |e| metric(e) == Some(3.0));
}
