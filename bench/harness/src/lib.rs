//! ductd's benchmark suite (issue 9). The `ductd-bench` binary drives the
//! release `ductd` through four scenarios — throughput, footprint, scale
//! and latency — side by side with Duct 2.2.1, collectd and
//! node_exporter where they apply, and prints one JSON line per figure
//! (see `docs/performance.md`). The criterion benches in `benches/` time
//! the hot paths; [`hot_paths`] holds their workloads.
//!
//! Everything the harness does is bounded in time and stays on loopback.

pub mod access_log;
pub mod agents;
pub mod hot_paths;
pub mod peers;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod senders;
pub mod sink;
pub mod stand_ins;
pub mod wire;
