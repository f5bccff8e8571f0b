//! A service's JSON answer (Elasticsearch, Riak, Docker, RabbitMQ, uWSGI),
//! the first byte choosing whose.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duct_sources::services::fuzzing::service_json(data));
