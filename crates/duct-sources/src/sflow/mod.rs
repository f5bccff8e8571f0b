//! sFlow (`duct.sources.sflow.sFlow`): so far the v5 datagram decoder
//! ([`datagram`]), pure and unit-tested; the UDP listener that turns its
//! counter samples into per-agent, per-interface rates and aggregates flow
//! samples by address and port, as Duct did, is not built yet (see
//! docs/network-devices.md).

pub mod datagram;
