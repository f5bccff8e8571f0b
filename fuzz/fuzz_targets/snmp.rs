//! An SNMP agent's answer: a v1/v2c message (BER) with its values written
//! out, and a v3 message as at engine discovery and after it.
#![no_main]

use duct_sources::snmp::{ber, v3};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ber::decode_message(data) {
        let _ = ber::error_name(message.pdu.error_status);
        for (oid, value) in &message.pdu.varbinds {
            let _ = (oid.to_string(), value.text(), value.as_i128());
        }
    }
    let _ = ber::decode_pdu(data);
    v3::fuzz_decode(data);
});
