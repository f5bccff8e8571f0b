//! upsd's reply to `LIST VAR`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duct_sources::services::fuzzing::nut(data));
