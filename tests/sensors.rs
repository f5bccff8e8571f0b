//! The hardware sensor and media sources end to end under `ductd once`:
//! DS18B20 on a 1-wire sysfs tree built here from real `w1_slave` reads
//! (crates/duct-sources/tests/fixtures/ds18b20), and DarwinRTSP probing a
//! stream that GStreamer's RTSP server serves on a free loopback port
//! (tests/data/rtsp/serve.py; skipped without ffmpeg and the GStreamer
//! packages unless DUCT_REQUIRE_SERVICES=1). MPL115 needs `/dev/i2c-N`,
//! which a container cannot have (no i2c-stub module): its maths and its
//! conversation with the chip are unit-tested on a fake device instead.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    closed_port, ductd_output, free_port, metric, require_binary, service, services_required, state, Running, Server,
    TempDir,
};
use serde_json::Value;

/// Runs `ductd once` on `config` (written in `dir`); the events by service.
fn once(dir: &TempDir, config: &str) -> HashMap<String, Value> {
    let path = dir.write("duct.yml", config);
    let (code, stdout, stderr) = ductd_output(&["once", "-c", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "ductd once failed:\n{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (service(&v).to_string(), v))
        .collect()
}

/// The event for `name`, or a panic listing what there was.
fn event<'a>(events: &'a HashMap<String, Value>, name: &str) -> &'a Value {
    events.get(name).unwrap_or_else(|| {
        let mut names: Vec<&String> = events.keys().collect();
        names.sort();
        panic!("no event {name}; got {names:?}")
    })
}

fn description(ev: &Value) -> &str {
    ev["description"].as_str().unwrap_or("")
}

// --------------------------------------------------------------- DS18B20

/// A captured `w1_slave` read.
fn w1_sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/duct-sources/tests/fixtures/ds18b20")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn ds18b20_reports_each_sensor_by_name_and_a_bad_crc_as_critical() {
    let dir = TempDir::new("ds18b20");
    dir.write(
        "devices/w1_bus_master1/28-00000623003b/w1_slave",
        &w1_sample("23125.w1_slave"),
    );
    dir.write(
        "devices/w1_bus_master1/28-031655c9d5ff/w1_slave",
        &w1_sample("crc-no.w1_slave"),
    );
    dir.write("devices/w1_bus_master1/w1_master_slave_count", "2\n");
    dir.write(
        "devices/w1_bus_master2/28-000005e2fdc3/w1_slave",
        &w1_sample("21062.w1_slave"),
    );
    dir.write(
        "devices/w1_bus_master2/28-0000075a3b1e/w1_slave",
        &w1_sample("17812.w1_slave"),
    );
    dir.write("empty/platform/x", "");
    let devices = dir.path().join("devices");
    let events = once(
        &dir,
        &format!(
            "interval: 5
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - service: w1
    source: duct.sources.sensors.environment.DS18B20
    device_path: {devices}
    device_map: {{28-00000623003b: cellar, 28-031655c9d5ff: attic}}
  - service: mapped
    source: duct.sources.sensors.environment.ds18b20.DS18B20
    device_path: {devices}
    device_map: {{28-000005e2fdc3: garage}}
    ignore_unmapped: true
  - {{service: nobus, source: duct.sources.sensors.environment.DS18B20, device_path: {empty}}}
",
            devices = devices.display(),
            empty = dir.path().join("empty").display(),
        ),
    );
    let cellar = event(&events, "w1.cellar");
    assert_eq!(state(cellar), "ok");
    assert_eq!(metric(cellar), Some(23.125));
    assert_eq!(description(cellar), "28-00000623003b Temperature C");
    assert_eq!(metric(event(&events, "w1.28-000005e2fdc3")), Some(21.062));
    assert_eq!(metric(event(&events, "w1.28-0000075a3b1e")), Some(17.812));

    let attic = event(&events, "w1.attic");
    assert_eq!(state(attic), "critical", "{attic}");
    assert_eq!(metric(attic), None, "no garbage temperature: {attic}");
    assert!(description(attic).contains("CRC check failed"), "{attic}");

    let mapped: Vec<&String> = events.keys().filter(|s| s.starts_with("mapped")).collect();
    assert_eq!(mapped, ["mapped.garage"], "ignore_unmapped keeps only mapped sensors");
    assert_eq!(metric(event(&events, "mapped.garage")), Some(21.062));

    let nobus = event(&events, "nobus");
    assert_eq!(state(nobus), "critical");
    assert!(description(nobus).contains("no w1_bus_master"), "{nobus}");
}

/// Under the agent every tick reads the bus again: a sensor whose CRC
/// starts failing turns critical (and back), and one plugged in later is
/// reported without a restart.
#[test]
fn ds18b20_under_the_agent_follows_faults_and_new_sensors() {
    let dir = TempDir::new("ds18b20-agent");
    let slave = "devices/w1_bus_master1/28-00000623003b/w1_slave";
    dir.write(slave, &w1_sample("23125.w1_slave"));
    let config = dir.write(
        "duct.yml",
        &format!(
            "interval: 1
outputs: [{{output: duct.outputs.logger.Logger}}]
sources: [{{service: w1, source: duct.sources.sensors.environment.DS18B20, device_path: {}}}]
",
            dir.path().join("devices").display()
        ),
    );
    let agent = Running::start(&["-c", config.to_str().unwrap()]);
    let sensor = |ev: &Value| service(ev) == "w1.28-00000623003b";
    agent.wait_for(Duration::from_secs(10), |ev| sensor(ev) && metric(ev) == Some(23.125));
    dir.write(slave, &w1_sample("crc-no.w1_slave"));
    agent.wait_for(Duration::from_secs(10), |ev| {
        sensor(ev) && state(ev) == "critical" && metric(ev).is_none()
    });
    dir.write(
        "devices/w1_bus_master1/28-000005e2fdc3/w1_slave",
        &w1_sample("21062.w1_slave"),
    );
    dir.write(slave, &w1_sample("23187.w1_slave"));
    agent.wait_for(Duration::from_secs(10), |ev| {
        service(ev) == "w1.28-000005e2fdc3" && metric(ev) == Some(21.062)
    });
    agent.wait_for(Duration::from_secs(10), |ev| {
        sensor(ev) && state(ev) == "ok" && metric(ev) == Some(23.187)
    });
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

// ---------------------------------------------------------------- MPL115

/// Without the chip (no `/dev/i2c-N` in a container, and i2c-stub cannot
/// be loaded there) the source must say which bus it tried and why, under
/// both of Duct's names; a bad `address` is refused by `ductd check`.
#[test]
fn mpl115_without_a_bus_is_critical_naming_the_device() {
    let dir = TempDir::new("mpl115");
    let events = once(
        &dir,
        "interval: 5
outputs: [{output: duct.outputs.logger.Logger}]
sources:
  - {service: baro, source: duct.sources.sensors.environment.MPL115, smbus: 97}
  - {service: baro2, source: duct.sources.sensors.environment.mpl115.MPL115, smbus: 98, address: 0x61}
",
    );
    let baro = event(&events, "baro");
    assert_eq!(state(baro), "critical");
    assert_eq!(metric(baro), None);
    assert!(
        description(baro).starts_with("MPL115 at 0x60 on /dev/i2c-97 - cannot open: "),
        "{baro}"
    );
    assert!(description(event(&events, "baro2")).starts_with("MPL115 at 0x61 on /dev/i2c-98"));

    let path = dir.write(
        "bad.yml",
        "sources: [{service: b, source: duct.sources.sensors.environment.MPL115, address: 0x80}]\n",
    );
    let (code, _, stderr) = ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("7-bit I2C address"), "{stderr}");
}

// ------------------------------------------------------------ DarwinRTSP

/// GStreamer's RTSP server (tests/data/rtsp/serve.py) on a free port,
/// serving Duct's sample path; `None` (skipped) without ffprobe or the
/// GStreamer packages, unless DUCT_REQUIRE_SERVICES=1.
fn start_rtsp() -> Option<Server> {
    require_binary("ffprobe", "ffmpeg")?;
    // The system interpreter: the GStreamer bindings are Debian packages.
    let python = require_binary("python3", "python3")
        .filter(|p| p.starts_with("/usr/bin"))
        .unwrap_or_else(|| "/usr/bin/python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0')"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let msg = "GStreamer's RTSP server bindings missing (Debian packages python3-gi gir1.2-gst-rtsp-server-1.0 \
                   gstreamer1.0-plugins-base gstreamer1.0-plugins-good)";
        assert!(!services_required(), "{msg}, and DUCT_REQUIRE_SERVICES=1");
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rtsp/serve.py");
    let port = free_port();
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(port.to_string()).arg("/sample_100kbit.mp4");
    Some(Server::spawn(cmd, port, TempDir::new("rtsp"), "the RTSP server"))
}

#[test]
fn darwin_rtsp_times_a_probe_of_a_real_stream_and_an_unreachable_one_is_critical() {
    let Some(server) = start_rtsp() else { return };
    let destination = format!("127.0.0.1:{}", server.port);
    // ffprobe itself reads the stream that the source will time.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(format!("rtsp://{destination}/sample_100kbit.mp4"))
        .output()
        .expect("run ffprobe");
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "vp8,160,120");

    let dir = TempDir::new("darwin-rtsp");
    let events = once(
        &dir,
        &format!(
            "interval: 30
outputs: [{{output: duct.outputs.logger.Logger}}]
sources:
  - {{service: rtsp, source: duct.sources.media.libav.DarwinRTSP, destination: '{destination}', timeout: 20}}
  - {{service: down, source: duct.sources.media.libav.DarwinRTSP, destination: '127.0.0.1:{closed}'}}
  - {{service: noprobe, source: duct.sources.media.libav.DarwinRTSP, destination: '{destination}', \
       ffprobe: avprobe-is-gone}}
",
            closed = closed_port(),
        ),
    );
    let ok = event(&events, "rtsp");
    assert_eq!(state(ok), "ok", "{ok}");
    assert_eq!(description(ok), format!("RTSP Request time to {destination}"));
    let ms = metric(ok).expect("a probe time");
    assert!(ms > 0.0 && ms < 20_000.0, "{ok}");

    let down = event(&events, "down");
    assert_eq!(state(down), "critical", "{down}");
    assert!(
        description(down).starts_with("Unable to stream 127.0.0.1:")
            && description(down).contains("Connection refused"),
        "{down}"
    );
    assert!(metric(down).is_some(), "Duct sent the time on failure too: {down}");

    let noprobe = event(&events, "noprobe");
    assert_eq!(state(noprobe), "critical");
    assert!(
        description(noprobe).contains("`avprobe-is-gone` not found"),
        "{noprobe}"
    );
}
