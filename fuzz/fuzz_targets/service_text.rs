//! A service's text page or output (nginx, Apache, HAProxy CSV, unbound,
//! rabbitmqctl, psql, DS18B20), the first byte choosing which.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duct_sources::services::fuzzing::service_text(data));
