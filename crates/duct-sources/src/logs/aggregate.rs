//! Access-log lines summed into fixed time windows (`resolution` seconds),
//! Duct's NginxLogMetrics aggregates plus request-time percentiles.
//!
//! A line falls in the window of its own timestamp. A window is closed —
//! and its sums handed on, stamped with its start, as Duct stamped its
//! buckets — once a line [`LATE`] past its end has been read, or, when
//! every file has been read to its end, once the clock is that far past
//! it. Lines are written when requests end, by several workers, so they
//! are not strictly in time order: a line whose window is already closed
//! is counted in the oldest open one rather than dropped, and within one
//! file a line is never put in an earlier window than the line before it.
//! That keeps the lines of each file that have been handed on a prefix of
//! the file, which is what lets the file's position be saved exactly: the
//! end of the last line of the newest closed window (see
//! [`Window::ends`]).

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;

use super::format::{Fields, LogFormat};
use super::tail::FileKey;

/// How far past a window's end its last lines may still arrive.
pub const LATE: f64 = 1.0;

/// The groupings Duct emits, in its order, with their metric prefixes.
pub const GROUPS: [&str; 4] = ["status", "client", "user-agent", "request"];

/// Per key of one grouping: (rbytes, requests). Keys are the bytes of the
/// line (made text once per window, when it is handed on, rather than
/// once per line); the hasher is foldhash's, seeded per process: several
/// times SipHash's speed on these short keys, and keys an attacker writes
/// into a log (paths, agents) cannot be aimed at one bucket.
pub type Sums = HashMap<Vec<u8>, (u64, u64), RandomState>;

/// What one line contributes.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// Seconds since the epoch.
    pub time: f64,
    pub bytes: u64,
    /// Keys for [`GROUPS`], in order; `None` when the line lacks the field.
    pub keys: [Option<&'a [u8]>; 4],
    /// Seconds.
    pub request_time: Option<f64>,
}

impl<'a> Request<'a> {
    /// What a line parsed by `format` contributes; `read_at` stands in for
    /// a time the format lacks.
    pub fn of(format: &LogFormat, fields: &Fields<'a>, read_at: f64) -> Request<'a> {
        let roles = &format.roles;
        let field = |i: Option<usize>| i.and_then(|i| fields.get(i));
        // Duct's request key: the path of the request line, without the
        // query (its dots become commas when the window is handed on).
        let path = field(roles.request).and_then(|v| {
            let target = if roles.request_is_line { second_word(v)? } else { v };
            Some(target.split(|b| *b == b'?').next().unwrap_or(target))
        });
        Request {
            time: format.time_of(fields).unwrap_or(read_at),
            bytes: field(roles.bytes).and_then(unsigned).unwrap_or(0),
            keys: [field(roles.status), field(roles.client), field(roles.user_agent), path],
            request_time: roles.request_time.and_then(|(i, scale)| {
                let v = std::str::from_utf8(fields.get(i)?).ok()?;
                v.parse::<f64>().ok().map(|v| v * scale)
            }),
        }
    }
}

/// The second space-separated word of a request line (its target).
fn second_word(line: &[u8]) -> Option<&[u8]> {
    let mut words = line.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    words.next()?;
    words.next()
}

/// A decimal number of at most 19 digits.
fn unsigned(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The sums of one window.
#[derive(Debug, Default)]
pub struct Window {
    /// Seconds since the epoch.
    pub start: f64,
    pub rbytes: u64,
    pub requests: u64,
    /// Per grouping of [`GROUPS`]: key → (rbytes, requests).
    pub groups: [Sums; 4],
    pub request_times: Histogram,
    /// Per file, the end of its last line counted here (a few files: a
    /// list beats a map).
    ends: Vec<(FileKey, u64)>,
}

impl Window {
    /// Where each file's lines in this window end: safe to commit once the
    /// window has been handed on.
    pub fn ends(&self) -> impl Iterator<Item = (FileKey, u64)> + '_ {
        self.ends.iter().copied()
    }

    fn ended(&mut self, file: FileKey, end: u64) {
        match self.ends.iter_mut().find(|(k, _)| *k == file) {
            Some(slot) => slot.1 = end,
            None => self.ends.push((file, end)),
        }
    }
}

/// Key used once a grouping holds `max_keys` keys in one window.
pub const OTHER: &str = "_other";

/// Windows being filled.
#[derive(Debug)]
pub struct Aggregator {
    resolution: f64,
    /// Most keys per grouping per window; the rest are summed under
    /// [`OTHER`].
    max_keys: usize,
    open: BTreeMap<i64, Window>,
    /// Windows before this index are closed.
    first_open: Option<i64>,
    /// Per file, the window its last line went to.
    last: Vec<(FileKey, i64)>,
    /// The latest line time seen.
    latest: f64,
}

impl Aggregator {
    pub fn new(resolution: f64, max_keys: usize) -> Aggregator {
        Aggregator {
            resolution,
            max_keys,
            open: BTreeMap::new(),
            first_open: None,
            last: Vec::new(),
            latest: f64::MIN,
        }
    }

    fn index(&self, t: f64) -> i64 {
        (t / self.resolution).floor() as i64
    }

    /// Counts one parsed line of `file` ending at `end`.
    pub fn add(&mut self, file: FileKey, end: u64, r: &Request<'_>) {
        self.latest = self.latest.max(r.time);
        let mut idx = self.index(r.time);
        if let Some(first) = self.first_open {
            idx = idx.max(first);
        }
        match self.last.iter_mut().find(|(k, _)| *k == file) {
            Some(slot) => {
                idx = idx.max(slot.1);
                slot.1 = idx;
            }
            None => self.last.push((file, idx)),
        }
        let resolution = self.resolution;
        let max_keys = self.max_keys;
        let w = self.open.entry(idx).or_insert_with(|| Window {
            start: idx as f64 * resolution,
            ..Window::default()
        });
        w.ended(file, end);
        w.rbytes += r.bytes;
        w.requests += 1;
        for (group, key) in w.groups.iter_mut().zip(r.keys) {
            let Some(key) = key else { continue };
            let slot = match group.get_mut(key) {
                Some(slot) => slot,
                None => {
                    let key = if group.len() >= max_keys { OTHER.as_bytes() } else { key };
                    group.entry(key.to_vec()).or_default()
                }
            };
            slot.0 += r.bytes;
            slot.1 += 1;
        }
        if let Some(t) = r.request_time {
            w.request_times.record(t);
        }
    }

    /// A line of `file` ending at `end` that adds nothing (it did not
    /// parse). It goes with the file's open window if it has one; otherwise
    /// every earlier line of the file has been handed on, and the returned
    /// position may be committed now.
    pub fn skip(&mut self, file: FileKey, end: u64) -> Option<(FileKey, u64)> {
        let last = self.last.iter().find(|(k, _)| *k == file).map(|(_, i)| *i);
        match last.and_then(|i| self.open.get_mut(&i)) {
            Some(w) => {
                w.ended(file, end);
                None
            }
            None => Some((file, end)),
        }
    }

    /// Closes the windows that can take no more lines: those [`LATE`]
    /// before the latest line read, and, when `now` is given (every file
    /// was read to its end), those [`LATE`] before `now`.
    pub fn close(&mut self, now: Option<f64>) -> Vec<Window> {
        let horizon = now.map_or(self.latest, |n| n.max(self.latest)) - LATE;
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let end = (*entry.key() + 1) as f64 * self.resolution;
            if end > horizon {
                break;
            }
            let idx = *entry.key();
            closed.push(entry.remove());
            self.first_open = Some(idx + 1);
        }
        if let Some(first) = self.first_open {
            self.last.retain(|(_, i)| *i >= first);
        }
        closed
    }
}

/// Request times in a log-linear histogram of milliseconds: exact below
/// 128 ms, within 0.8 % above (seven significant bits), a few kilobytes at
/// most whatever the traffic.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    fn bucket(ms: u64) -> usize {
        if ms < 128 {
            return ms as usize;
        }
        let shift = 63 - ms.leading_zeros() as usize - 6;
        128 + (shift - 1) * 64 + ((ms >> shift) as usize - 64)
    }

    /// The middle of bucket `i`, in milliseconds.
    fn value(i: usize) -> f64 {
        if i < 128 {
            return i as f64;
        }
        let shift = (i - 128) / 64 + 1;
        let m = ((i - 128) % 64 + 64) as u64;
        let lo = m << shift;
        let hi = ((m + 1) << shift) - 1;
        (lo + hi) as f64 / 2.0
    }

    /// Records `seconds` (negative or NaN values are ignored).
    pub fn record(&mut self, seconds: f64) {
        if seconds.is_nan() || seconds < 0.0 {
            return;
        }
        let i = Self::bucket((seconds * 1000.0).round() as u64);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The nearest-rank `p` quantile (0 < p ≤ 1) in seconds: the smallest
    /// recorded value with at least `p` of the values at or below it.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i) / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino,
            generation: 1,
        }
    }

    fn req(time: f64, bytes: u64, status: &str) -> Request<'_> {
        Request {
            time,
            bytes,
            keys: [Some(status.as_bytes()), Some(b"10.0.0.1"), None, Some(b"/")],
            request_time: None,
        }
    }

    #[test]
    fn lines_are_summed_per_window_and_closed_by_later_lines() {
        let mut a = Aggregator::new(10.0, 100);
        a.add(key(1), 10, &req(1000.0, 100, "200"));
        a.add(key(1), 20, &req(1005.0, 50, "404"));
        a.add(key(1), 30, &req(1009.9, 1, "200"));
        assert!(a.close(None).is_empty(), "a line may still come for 1000..1010");
        a.add(key(1), 40, &req(1011.5, 7, "200"));
        let closed = a.close(None);
        assert_eq!(closed.len(), 1);
        let w = &closed[0];
        assert_eq!(w.start, 1000.0);
        assert_eq!((w.rbytes, w.requests), (151, 3));
        assert_eq!(w.groups[0][b"200".as_slice()], (101, 2));
        assert_eq!(w.groups[0][b"404".as_slice()], (50, 1));
        assert_eq!(w.groups[1][b"10.0.0.1".as_slice()], (151, 3));
        assert!(w.groups[2].is_empty());
        assert_eq!(w.ends().collect::<Vec<_>>(), [(key(1), 30)]);
    }

    #[test]
    fn the_clock_closes_windows_once_every_file_is_read() {
        let mut a = Aggregator::new(10.0, 100);
        a.add(key(1), 10, &req(1000.0, 1, "200"));
        assert!(a.close(Some(1010.5)).is_empty());
        assert_eq!(a.close(Some(1011.0)).len(), 1);
    }

    #[test]
    fn late_lines_are_counted_in_the_oldest_open_window_and_never_go_back() {
        let mut a = Aggregator::new(10.0, 100);
        a.add(key(1), 10, &req(1000.0, 1, "200"));
        a.add(key(1), 20, &req(1012.0, 1, "200"));
        assert_eq!(a.close(None).len(), 1);
        // Late for 1000..1010, which is gone: counted in 1010.
        a.add(key(2), 5, &req(1009.0, 1, "200"));
        // Out of order within file 1: stays in 1020, not back to 1010.
        a.add(key(1), 30, &req(1021.0, 1, "200"));
        a.add(key(1), 40, &req(1019.0, 1, "200"));
        let closed = a.close(Some(1040.0));
        assert_eq!(closed.len(), 2);
        assert_eq!((closed[0].start, closed[0].requests), (1010.0, 2));
        assert_eq!((closed[1].start, closed[1].requests), (1020.0, 2));
        let mut ends: Vec<_> = closed[0].ends().collect();
        ends.sort_by_key(|(k, _)| k.ino);
        assert_eq!(ends, [(key(1), 20), (key(2), 5)]);
        assert_eq!(closed[1].ends().collect::<Vec<_>>(), [(key(1), 40)]);
    }

    #[test]
    fn unparsed_lines_ride_with_their_files_open_window() {
        let mut a = Aggregator::new(10.0, 100);
        assert_eq!(a.skip(key(1), 3), Some((key(1), 3)), "nothing pending: commit now");
        a.add(key(1), 10, &req(1000.0, 1, "200"));
        assert_eq!(a.skip(key(1), 15), None);
        let closed = a.close(Some(2000.0));
        assert_eq!(closed[0].ends().collect::<Vec<_>>(), [(key(1), 15)]);
        assert_eq!(a.skip(key(1), 20), Some((key(1), 20)));
    }

    #[test]
    fn keys_beyond_the_limit_are_summed_as_other() {
        let mut a = Aggregator::new(10.0, 2);
        for (i, s) in ["200", "404", "500", "502", "200"].iter().enumerate() {
            a.add(key(1), i as u64, &req(1000.0, 1, s));
        }
        let w = &a.close(Some(2000.0))[0];
        assert_eq!(w.groups[0].len(), 3);
        assert_eq!(w.groups[0][b"200".as_slice()], (2, 2));
        assert_eq!(w.groups[0][OTHER.as_bytes()], (2, 2));
    }

    #[test]
    fn request_time_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(ms as f64 / 1000.0);
        }
        assert_eq!(h.quantile(0.5), Some(0.050));
        assert_eq!(h.quantile(0.99), Some(0.099));
        assert_eq!(h.quantile(1.0), Some(0.100));
        h.record(12.345);
        h.record(f64::NAN);
        assert_eq!(h.count(), 101);
        let top = h.quantile(1.0).unwrap();
        assert!((top - 12.345).abs() / 12.345 < 0.01, "{top}");
        for ms in [128u64, 255, 256, 1000, 65_535, 1 << 40] {
            let v = Histogram::value(Histogram::bucket(ms));
            assert!((v - ms as f64).abs() / ms as f64 <= 0.008, "{ms} -> {v}");
        }
    }
}
