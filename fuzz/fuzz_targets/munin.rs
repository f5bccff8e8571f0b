//! A munin-node session: banner, `cap`, `list`, then `config` and `fetch`
//! replies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duct_sources::services::fuzzing::munin(data));
