//! A TLS peer's certificate (DER) as the certificate check reads it: its
//! notAfter, and the days left from now.
#![no_main]

use duct_sources::network::cert::{days_left, not_after};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|der: &[u8]| {
    if let Ok(t) = not_after(der) {
        let _ = days_left(t, 1_796_278_802.0);
    }
});
