//! ductd's one HTTP stack, on hyper 1.x (HTTP/1.1).
//!
//! [`client`] is what every HTTP source, check and output uses to make a
//! request; [`server`] serves the health endpoint and the pull outputs.
//! Both run hyper's connection state machines over streams ductd opens
//! itself, so callers keep control of DNS, connect and TLS (and can time
//! each phase). [`tls`] turns `tls_verify` and `ca` into the client's TLS
//! configuration.

pub mod client;
pub mod rt;
pub mod server;
pub mod tls;
