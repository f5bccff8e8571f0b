//! An exec plugin's output: a polled plugin's whole output with its exit
//! code (JSON lines, a number or Nagios text), and a streaming plugin's
//! lines.
#![no_main]

use duct_core::Event;
use duct_sources::exec::parse::{parse_line, parse_output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&code, out)) = data.split_first() else {
        return;
    };
    let stdout = String::from_utf8_lossy(out);
    let template = Event::new("fuzz-host", "plugin");
    // 0..=3 are Nagios' codes, 255 stands for a signal.
    let code = (code != 255).then_some(i32::from(code));
    let _ = parse_output(&stdout, code, &template);
    for line in stdout.lines() {
        let _ = parse_line(line, &template);
    }
});
