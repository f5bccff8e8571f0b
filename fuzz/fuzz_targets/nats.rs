//! A NATS message as the NATS source decodes it, the first byte choosing
//! the format (JSON, SenML JSON, SenML CBOR); a decoded event is encoded
//! again in every format, as the NATS output would send it on.
#![no_main]

use duct_nats::format::{decode, encode, Defaults, Format};
use libfuzzer_sys::fuzz_target;

const FORMATS: [Format; 4] = [
    Format::Json,
    Format::SenmlJson,
    Format::SenmlCbor,
    Format::SenmlCborExtended,
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    let defaults = Defaults {
        host: "fuzz-host",
        ttl: 60.0,
    };
    let Ok(event) = decode(FORMATS[usize::from(which) % FORMATS.len()], message, &defaults) else {
        return;
    };
    let mut out = Vec::new();
    for format in FORMATS {
        out.clear();
        encode(format, &event, &mut out);
    }
});
