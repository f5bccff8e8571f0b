//! Log sources: files followed line by line (`duct.sources.nginx.NginxLog`,
//! `duct.sources.nginx.NginxLogMetrics`).
//!
//! The pieces every log source shares live here, apart from the sources:
//! [`glob`] expands the `file` option, [`tail`] follows files across
//! rotation and hands on complete lines, [`checkpoint`] keeps positions
//! across restarts, [`format`] splits access-log lines by their
//! `log_format`, [`aggregate`] sums them per time window.

pub mod aggregate;
pub mod checkpoint;
pub mod format;
pub mod glob;
mod nginx;
pub mod tail;

use duct_core::Registry;

/// Adds the log sources to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(nginx::metrics_spec());
    registry.add_source(nginx::log_spec());
}
