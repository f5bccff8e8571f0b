//! Log sources: files followed line by line (`duct.sources.nginx.NginxLog`,
//! `duct.sources.nginx.NginxLogMetrics`).
//!
//! The pieces every log source shares live here, apart from the sources:
//! [`glob`] expands the `file` option, [`tail`] follows files across
//! rotation and hands on complete lines, [`checkpoint`] keeps positions
//! across restarts.

pub mod checkpoint;
pub mod format;
pub mod glob;
pub mod tail;
