//! nginx access logs: the first line a `log_format` (a name, nginx's
//! `$variable` syntax or Duct's Apache `%` directives) compiled as the
//! source compiles it, the other lines split into fields and read as the
//! metrics source reads them.
#![no_main]

use duct_sources::logs::aggregate::Request;
use duct_sources::logs::format::LogFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (spec, lines) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(format) = LogFormat::compile(&String::from_utf8_lossy(spec)) else {
        return;
    };
    let mut spans = Vec::new();
    for line in lines.split(|&b| b == b'\n') {
        if let Some(fields) = format.parse(line, &mut spans) {
            for i in 0..format.names().len() {
                let _ = fields.get(i);
            }
            let _ = format.time_of(&fields);
            let _ = Request::of(&format, &fields, 1_796_278_802.0);
        }
    }
});
