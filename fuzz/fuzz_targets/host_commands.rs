//! What a host command prints (`sensors -u`, `smartctl`, `ipsec`,
//! `swanctl`), the first byte choosing which.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duct_sources::linux::fuzzing::command_output(data));
