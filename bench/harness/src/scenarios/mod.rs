//! The scenarios of issue 9, each a function from options to figures.

pub mod footprint;
pub mod latency;
pub mod logs;
pub mod network;
pub mod scale;
pub mod throughput;

use crate::agents::{Programs, Scratch};

/// What every scenario works with.
pub struct Env {
    pub programs: Programs,
    pub scratch: Scratch,
}
