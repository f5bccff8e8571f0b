//! `duct.sources.sflow.sFlow` end to end: a running ductd receives sFlow v5
//! datagrams over loopback UDP: counter samples built by the generator
//! (`duct_sources::sflow::generate`, written from the sFlow v5
//! specification), with garbage in between that must be dropped without
//! stopping anything, and flow samples captured from a real agent
//! (pmacct's sfprobe) replayed between two counter samples.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{metric, service, Running, TempDir};
use duct_sources::sflow::datagram::InterfaceCounters;
use duct_sources::sflow::generate::encode;

/// A datagram from agent 192.0.2.7: one counter sample of ifIndex 3 with
/// the given octet counters.
fn datagram(sequence: u32, in_octets: u64, out_octets: u64) -> Vec<u8> {
    let counters = InterfaceCounters {
        if_index: 3,
        if_speed: 1_000_000_000,
        in_octets,
        in_packets: 10,
        out_octets,
        out_packets: 5,
        ..Default::default()
    };
    encode([192, 0, 2, 7], sequence, &[counters], 3, &[])
}

/// A ductd with one sFlow collector on a free loopback port.
fn collector(dir: &TempDir) -> (Running, u16) {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
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
    (agent, port)
}

#[test]
fn counter_samples_become_rates_on_the_agents_host() {
    let dir = TempDir::new("sflow");
    let (agent, port) = collector(&dir);
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

/// Datagrams captured from pmacct's sFlow agent (pmacctd 1.7.7's sfprobe
/// plugin, `crates/duct-sources/tests/fixtures/sflow/README.md`) replayed
/// over UDP between two counter samples of the same interface: pmacct's own
/// counter samples carry no records, so the counters come from the
/// generator, as a switch's would beside its flow samples.
#[test]
fn flow_samples_captured_from_pmacct_are_shared_out_by_address_and_port() {
    let dir = TempDir::new("sflow-pmacct");
    let (agent, port) = collector(&dir);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/duct-sources/tests/fixtures/sflow");
    let counters = |octets: u64| InterfaceCounters {
        if_index: 1,
        in_octets: octets,
        ..Default::default()
    };
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", port);
    client
        .send_to(&encode([127, 0, 0, 1], 1, &[counters(0)], 1, &[]), to)
        .unwrap();
    for i in 0..10 {
        let path = fixtures.join(format!("pmacct-{i:03}.bin"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        client.send_to(&bytes, to).unwrap();
    }
    client
        .send_to(&encode([127, 0, 0, 1], 2, &[counters(1_000_000)], 1, &[]), to)
        .unwrap();
    let seen = agent.wait_for(Duration::from_secs(10), |e| service(e) == "sflow.1.outOctets");
    let rate = |name: &str| {
        seen.iter()
            .find(|e| service(e) == name)
            .and_then(metric)
            .unwrap_or_else(|| panic!("no {name} in {seen:?}"))
    };
    let inbound = rate("sflow.1.inOctets");
    assert!(inbound > 0.0);
    // Every packet pmacct sampled went from and to 127.0.0.1: the whole
    // inbound rate, within rounding.
    for name in ["sflow.1.ip.127.0.0.1.src", "sflow.1.ip.127.0.0.1.dst"] {
        assert!((rate(name) - inbound).abs() <= inbound * 1e-9, "{name}");
    }
    // The UDP datagrams (port 40000 to 9999) and the HTTP exchanges (port
    // 18080) each got a share.
    let udp = rate("sflow.1.port.9999.dst");
    assert!(udp > 0.0 && udp < inbound);
    assert_eq!(rate("sflow.1.port.40000.src"), udp);
    assert!(rate("sflow.1.port.18080.dst") > 0.0);
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}
