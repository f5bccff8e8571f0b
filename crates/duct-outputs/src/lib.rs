//! ductd's built-in outputs, registered under Duct's names. Each implements
//! only its transport (`Output::send`); queueing, batching, rate limits and
//! retry are the runtime's output actor's.

pub mod elasticsearch;
pub mod graphite;
mod http_push;
pub mod influxdb;
mod json_object;
pub mod line_protocol;
pub mod logger;
pub mod nats;
pub mod null;
pub mod opentsdb;
pub mod opentsdb_json;
pub mod prometheus;
pub mod remote_write;
pub mod riemann;

use duct_core::Registry;

/// Adds every built-in output to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_output(elasticsearch::spec());
    registry.add_output(elasticsearch::log_spec());
    registry.add_output(graphite::spec());
    registry.add_output(influxdb::spec());
    registry.add_output(influxdb::v3_spec());
    registry.add_output(logger::spec());
    registry.add_output(nats::spec());
    registry.add_output(null::spec());
    registry.add_output(opentsdb::spec());
    registry.add_output(opentsdb::bosun_spec());
    registry.add_output(prometheus::spec());
    registry.add_output(remote_write::spec());
    registry.add_output(riemann::tcp_spec());
    registry.add_output(riemann::udp_spec());
}
