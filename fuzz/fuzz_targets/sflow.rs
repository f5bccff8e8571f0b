//! An sFlow v5 datagram as the sFlow collector decodes it.
#![no_main]

use duct_sources::sflow::datagram::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
