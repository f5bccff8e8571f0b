//! A DNS response as the DNS check reads it: header, answer records, and
//! each record's data written out as text.
#![no_main]

use duct_sources::network::dns_message::decode_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = decode_response(data) {
        for record in &response.answers {
            let _ = record.data.to_string();
        }
    }
});
