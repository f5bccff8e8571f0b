//! A stream of Redis replies (RESP2).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duct_sources::services::fuzzing::resp(data));
