//! A file of `/proc` (or `/etc/passwd`), the first byte choosing which
//! (see `duct_sources::linux::fuzzing::proc_file`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duct_sources::linux::fuzzing::proc_file(data));
