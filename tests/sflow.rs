//! `duct.sources.sflow.sFlow` end to end: a running ductd receives sFlow v5
//! datagrams over loopback UDP. No sFlow agent is packaged here (no
//! hsflowd, no sflowtool), so the datagrams are built below from the sFlow
//! v5 specification (a counter sample with one generic interface counter
//! record); garbage in between must be dropped without stopping anything.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{metric, service, Running, TempDir};

fn words(out: &mut Vec<u8>, w: &[u32]) {
    for x in w {
        out.extend_from_slice(&x.to_be_bytes());
    }
}

/// A datagram from agent 192.0.2.7: one counter sample of ifIndex 3 with
/// the given octet counters.
fn datagram(sequence: u32, in_octets: u64, out_octets: u64) -> Vec<u8> {
    let mut record = Vec::new();
    words(&mut record, &[3, 6, 0, 1_000_000_000, 1, 3]);
    words(
        &mut record,
        &[(in_octets >> 32) as u32, in_octets as u32, 10, 0, 0, 0, 0, 0],
    );
    words(
        &mut record,
        &[(out_octets >> 32) as u32, out_octets as u32, 5, 0, 0, 0, 0, 0],
    );
    let mut sample = Vec::new();
    words(&mut sample, &[sequence, 3, 1, 1, record.len() as u32]);
    sample.extend_from_slice(&record);
    let mut d = Vec::new();
    words(&mut d, &[5, 1]);
    d.extend_from_slice(&[192, 0, 2, 7]);
    words(&mut d, &[0, sequence, 1000, 1, 2, sample.len() as u32]);
    d.extend_from_slice(&sample);
    d
}

#[test]
fn counter_samples_become_rates_on_the_agents_host() {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = TempDir::new("sflow");
    let path = dir.write(
        "duct.yml",
        &format!(
            "outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: sflow, source: duct.sources.sflow.sFlow, port: {port}, bind: 127.0.0.1, dnslookup: false}}
"
        ),
    );
    let agent = Running::start(&["-c", path.to_str().unwrap()]);
    assert!(
        agent.wait_for_log("sFlow collector ready", Duration::from_secs(20)),
        "{}",
        agent.stderr()
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", port);
    client.send_to(&datagram(1, 1_000, 100), to).unwrap();
    client.send_to(b"\x00\x00\x00\x05garbage", to).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    client.send_to(&datagram(2, 51_000, 100), to).unwrap();
    let seen = agent.wait_for(Duration::from_secs(10), |e| service(e) == "sflow.3.outOctets");
    let inbound = seen
        .iter()
        .find(|e| service(e) == "sflow.3.inOctets")
        .expect("inOctets");
    assert_eq!(inbound["host"], "127.0.0.1", "{inbound}");
    // 50,000 bytes over about half a second (no timing bound asserted).
    assert!(metric(inbound).unwrap_or_default() > 0.0, "{inbound}");
    let outbound = seen.last().unwrap();
    assert_eq!(metric(outbound), Some(0.0), "{outbound}");
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}
