//! What a process costs, read from `/proc`: resident memory (VmRSS, its
//! anonymous and file-backed parts RssAnon and RssFile, and its peak
//! VmHWM) and CPU time (utime + stime), sampled in the background
//! so that a scenario can report the largest RSS seen during its run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub rss_kib: u64,
    /// Heap, stacks and other anonymous pages: what the agent allocated,
    /// as opposed to the program's file-backed pages.
    pub anon_kib: u64,
    /// Mapped pages of the program and its libraries (page cache).
    pub file_kib: u64,
    pub hwm_kib: u64,
    /// User plus system CPU time of all its threads, in seconds.
    pub cpu_s: f64,
    pub threads: u64,
    pub at: Instant,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime from `/proc/PID/stat`, in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: count fields after
    // its closing parenthesis (state is field 3, utime 14, stime 15).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of every thread of `pid` in seconds, from each thread's
/// `schedstat` (nanoseconds): clock ticks are 10 ms, too coarse for an
/// agent that uses a millisecond a second.
fn schedstat_cpu_s(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

/// Reads `pid` now; `None` once it has gone.
pub fn read(pid: u32) -> Option<Reading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = cpu_ticks(&stat)? as f64 / clock_ticks();
    Some(Reading {
        rss_kib: status_kib(&status, "VmRSS:")?,
        anon_kib: status_kib(&status, "RssAnon:").unwrap_or(0),
        file_kib: status_kib(&status, "RssFile:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:")?,
        // (Threads that end take their schedstat with them: the agents
        // measured here keep theirs for the whole run.)
        cpu_s: schedstat_cpu_s(pid).unwrap_or(ticks),
        threads: status_kib(&status, "Threads:").unwrap_or(0),
        at: Instant::now(),
    })
}

/// Samples a process's RSS every `every` until dropped; keeps the largest
/// VmRSS and the largest RssAnon.
pub struct Sampler {
    max_rss_kib: Arc<AtomicU64>,
    max_anon_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let max_rss_kib = Arc::new(AtomicU64::new(0));
        let max_anon_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (max, anon, stop) = (max_rss_kib.clone(), max_anon_kib.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match read(pid) {
                        Some(r) => {
                            max.fetch_max(r.rss_kib, Ordering::Relaxed);
                            anon.fetch_max(r.anon_kib, Ordering::Relaxed);
                        }
                        None => return,
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Sampler {
            max_rss_kib,
            max_anon_kib,
            stop,
            thread: Some(thread),
        }
    }

    /// The largest RSS seen so far, in MiB.
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// The largest RssAnon seen so far, in MiB.
    pub fn max_anon_mib(&self) -> f64 {
        self.max_anon_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// Forgets the peaks so far (after a warm-up).
    pub fn reset(&self) {
        self.max_rss_kib.store(0, Ordering::Relaxed);
        self.max_anon_kib.store(0, Ordering::Relaxed);
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU used between two readings, as a fraction of one core.
pub fn core_share(from: &Reading, to: &Reading) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall > 0.0 {
        (to.cpu_s - from.cpu_s) / wall
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let r = read(std::process::id()).unwrap();
        assert!(r.rss_kib > 0 && r.hwm_kib >= r.rss_kib);
        assert!(r.threads >= 1);
    }

    #[test]
    fn cpu_fields_after_a_name_with_spaces() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
    }
}
