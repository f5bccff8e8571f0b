//! A source's `warning:`/`critical:` trigger: parsed, then evaluated on a
//! few metrics (none, zero, ordinary, extreme, NaN).
#![no_main]

use duct_core::expr::Trigger;
use libfuzzer_sys::fuzz_target;

const METRICS: [Option<f64>; 7] = [
    None,
    Some(0.0),
    Some(-1.5),
    Some(0.95),
    Some(1e300),
    Some(-1e-300),
    Some(f64::NAN),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Trigger::parse(text) {
        Ok(trigger) => {
            for m in METRICS {
                trigger.eval(m);
            }
        }
        Err(e) => assert!(e.offset <= text.len(), "error at {} in {} bytes", e.offset, text.len()),
    }
});
