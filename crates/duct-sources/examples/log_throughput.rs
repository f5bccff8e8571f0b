//! Access-log lines parsed and summed per second of CPU, the per-line work
//! of `NginxLogMetrics` without the file reading and the events: every
//! captured nginx line (`tests/fixtures/nginx-log/combined.log`, the
//! 5 KB-URL line left out) over and over, through the compiled `combined`
//! format and the window aggregator.
//!
//! `cargo run --release -p duct-sources --example log_throughput [LINES]`

use duct_sources::logs::aggregate::{Aggregator, Request};
use duct_sources::logs::format::LogFormat;
use duct_sources::logs::tail::FileKey;
use std::time::Instant;

const CAPTURED: &str = include_str!("../tests/fixtures/nginx-log/combined.log");

/// User CPU seconds of this process.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    usage.ru_utime.tv_sec as f64 + usage.ru_utime.tv_usec as f64 / 1e6
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let lines: Vec<&[u8]> = CAPTURED.lines().filter(|l| l.len() < 1000).map(str::as_bytes).collect();
    let format = LogFormat::compile("combined").expect("the built-in format compiles");
    let mut windows = Aggregator::new(10.0, 10_000);
    let mut spans = Vec::new();
    let file = FileKey {
        dev: 0,
        ino: 0,
        generation: 0,
    };
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut parsed = 0u64;
    for (i, line) in lines.iter().cycle().take(n).enumerate() {
        if let Some(fields) = format.parse(line, &mut spans) {
            parsed += 1;
            windows.add(file, i as u64, &Request::of(&format, &fields, 0.0));
        }
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let closed = windows.close(Some(f64::MAX));
    println!(
        "{parsed} of {n} lines in {wall:.2} s ({cpu:.2} s CPU): {:.0} lines per CPU-second, {} windows",
        n as f64 / cpu,
        closed.len()
    );
}
