//! Following log files: the shared tailer under every log source.
//!
//! A [`Tailer`] follows the files a [`FilePattern`] names, by identity
//! (device and inode) rather than by name, and hands on complete lines — a
//! line is handed on only once its newline has arrived. It is synchronous
//! and does plain file I/O: sources run [`Tailer::poll`] on a blocking
//! thread (`spawn_blocking`), never on an arbiter, since logs may sit on
//! slow disks.
//!
//! Rotation:
//! - **rename** (logrotate's default, `create`): the path comes to name a
//!   new file. The old one stays open and is read to its end, and on for as
//!   long as it keeps growing (nginx writes to it until it reopens its logs
//!   on `USR1`); once it has been quiet for [`ROTATED_IDLE`] and every line
//!   read from it has been committed it is closed. A last line without a
//!   newline in a closed file is handed on then: nothing will complete it.
//!   The new file is read from its start.
//! - **copytruncate**: the same file shrinks (or is rewritten from the
//!   start: the bytes just before the read position are no longer there).
//!   The copy logrotate made beside it (`NAME.1`, `NAME-20240101`…) is
//!   looked for by content, and what had not been read yet is read from
//!   the copy; then the file is read from its new start. Lines written
//!   between logrotate's copy and its truncation are lost by logrotate
//!   itself, as its manual says.
//! - a file that appears later (a plain path that did not exist yet, a new
//!   match of a pattern) is read from its start.
//!
//! Positions: the consumer [`commit`](Tailer::commit)s the end of each line
//! once it has handed the line on, and [`Tailer::save`] writes the
//! committed positions to the source's [`Checkpoint`]. After a restart a
//! file is resumed at its committed position if it is still the same file
//! (same identity, long enough, the same bytes before the position); a
//! file rotated while ductd was down is found beside its old name by its
//! identity and finished first. With no saved state, files that exist at
//! start are read from their end, or from the start with `history: true`
//! (Duct's meaning of the option).
//!
//! Bounds: reads are [`CHUNK`] bytes; at most `max_lines` lines per file per
//! poll (Duct's option, 0 = no limit), the rest waits for the next poll; a
//! line longer than `max_line_bytes` is skipped and counted.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checkpoint::{hex, Checkpoint, CheckpointError, Position, FINGERPRINT_BYTES};
use super::glob::{is_compressed, FilePattern};

/// Bytes read from a file at once.
pub const CHUNK: usize = 64 << 10;

/// How long a rotated (renamed or removed) file must stay unchanged before
/// it is closed, by default.
pub const ROTATED_IDLE: Duration = Duration::from_secs(10);

/// What a tailer is told besides its pattern.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Read files that exist at first start from their beginning.
    pub history: bool,
    /// Lines per file per poll; 0 for no limit.
    pub max_lines: usize,
    /// Longer lines are skipped.
    pub max_line_bytes: usize,
    /// A rotated file unchanged this long is closed ([`ROTATED_IDLE`]).
    pub rotated_idle: Duration,
}

/// Which file (and which generation of its content: a truncated file
/// starts a new one) a line came from; what [`Tailer::commit`] takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub generation: u32,
}

/// One complete line, without its newline.
#[derive(Debug)]
pub struct Line<'a> {
    pub key: FileKey,
    /// The name the file had when the line was read.
    pub path: &'a Path,
    pub text: &'a [u8],
    /// Offset just past the newline: what to commit.
    pub end: u64,
}

/// What one poll did, for the source to report.
#[derive(Debug, Default)]
pub struct PollReport {
    pub lines: usize,
    /// Every file was read to its end (no `max_lines` limit was hit).
    pub caught_up: bool,
    /// Lines longer than `max_line_bytes`, skipped.
    pub overlong: usize,
    /// Files found renamed, removed, truncated or rewritten.
    pub rotations: Vec<String>,
    /// Files that could not be read, with the reason.
    pub errors: Vec<String>,
    /// Nothing matches the pattern (yet).
    pub missing: bool,
}

/// One file being followed.
struct Followed {
    /// The name it had when last seen.
    path: PathBuf,
    key: FileKey,
    /// The key of the file this one's content came from: a copytruncate copy
    /// carries on from the truncated original, and lines read before the
    /// truncation commit to the copy.
    former: Option<FileKey>,
    file: File,
    /// File offset of `pending[0]`.
    start: u64,
    /// Read but not yet handed on: a partial last line, or lines left over
    /// when `max_lines` was reached.
    pending: Vec<u8>,
    /// Up to [`FINGERPRINT_BYTES`] bytes just before the read position,
    /// to notice the file being rewritten from the start.
    recent: Vec<u8>,
    /// Size at the last poll: the fingerprint is checked when it changes.
    size: u64,
    /// The consumer has handed on everything before this offset.
    committed: u64,
    /// End of the last line handed to the consumer.
    handed: u64,
    /// End of the last line skipped as overlong (or as the unfinished line
    /// reading started in): once everything handed has been committed, the
    /// position may move past it.
    skipped_to: u64,
    /// `(committed, hex)` of the bytes before the last saved position.
    saved: Option<(u64, String)>,
    /// Inside an overlong line: bytes are dropped up to the next newline.
    skipping: bool,
    /// Since when the pattern no longer names this file.
    rotated: Option<Instant>,
    last_growth: Instant,
}

impl Followed {
    fn open(path: &Path, meta: &Metadata, generation: u32, start: u64) -> std::io::Result<Followed> {
        let file = File::open(path)?;
        let mut f = Followed {
            path: path.to_path_buf(),
            key: FileKey {
                dev: meta.dev(),
                ino: meta.ino(),
                generation,
            },
            former: None,
            file,
            start,
            pending: Vec::new(),
            recent: Vec::new(),
            size: meta.len(),
            committed: start,
            handed: start,
            skipped_to: start,
            saved: None,
            skipping: false,
            rotated: None,
            last_growth: Instant::now(),
        };
        f.recent = f.bytes_before(start);
        Ok(f)
    }

    fn id(&self) -> (u64, u64) {
        (self.key.dev, self.key.ino)
    }

    /// The read position.
    fn pos(&self) -> u64 {
        self.start + self.pending.len() as u64
    }

    /// Up to [`FINGERPRINT_BYTES`] bytes ending at `offset`.
    fn bytes_before(&self, offset: u64) -> Vec<u8> {
        let n = offset.min(FINGERPRINT_BYTES as u64) as usize;
        let mut buf = vec![0; n];
        match self.file.read_exact_at(&mut buf, offset - n as u64) {
            Ok(()) => buf,
            Err(_) => Vec::new(),
        }
    }

    /// Whether the bytes before the read position are still the ones read.
    fn unchanged(&self) -> bool {
        let pos = self.pos();
        self.recent.is_empty() || self.bytes_before(pos) == self.recent
    }

    /// Rotated, and unchanged for `idle` since.
    fn quiet(&self, idle: Duration) -> bool {
        self.rotated.is_some_and(|t| t.elapsed() >= idle) && self.last_growth.elapsed() >= idle
    }

    /// Closed once rotated, quiet, drained and committed.
    fn done(&self, idle: Duration) -> bool {
        self.quiet(idle) && self.pending.is_empty() && self.settled() >= self.start
    }

    /// The position to save: what was committed, moved past lines skipped
    /// after the last handed one.
    fn settled(&self) -> u64 {
        if self.committed >= self.handed {
            self.committed.max(self.skipped_to)
        } else {
            self.committed
        }
    }

    fn position(&mut self) -> Position {
        let offset = self.settled();
        let before = match &self.saved {
            Some((at, before)) if *at == offset => before.clone(),
            _ => {
                let before = hex(&self.bytes_before(offset));
                self.saved = Some((offset, before.clone()));
                before
            }
        };
        Position {
            path: self.path.clone(),
            dev: self.key.dev,
            ino: self.key.ino,
            offset,
            before,
        }
    }

    /// Hands on the complete lines in `pending`, at most `limit` (0: all).
    /// True when it stopped at the limit with lines left.
    fn drain(&mut self, limit: usize, max_line: usize, out: &mut dyn FnMut(Line<'_>), report: &mut PollReport) -> bool {
        let mut consumed = 0;
        let mut handed = 0;
        let mut stopped = false;
        while let Some(i) = memchr::memchr(b'\n', &self.pending[consumed..]) {
            if limit > 0 && handed >= limit {
                stopped = true;
                break;
            }
            let end = self.start + (consumed + i + 1) as u64;
            if self.skipping {
                self.skipping = false;
                self.skipped_to = end;
            } else if i > max_line {
                report.overlong += 1;
                self.skipped_to = end;
            } else {
                self.handed = end;
                out(Line {
                    key: self.key,
                    path: &self.path,
                    text: &self.pending[consumed..consumed + i],
                    end,
                });
                handed += 1;
            }
            consumed += i + 1;
        }
        self.pending.drain(..consumed);
        self.start += consumed as u64;
        report.lines += handed;
        if !stopped && (self.skipping || self.pending.len() > max_line) {
            if !self.skipping {
                report.overlong += 1;
                self.skipping = true;
            }
            self.start += self.pending.len() as u64;
            self.pending.clear();
        }
        stopped
    }
}

/// Follows the files of one pattern.
pub struct Tailer {
    pattern: FilePattern,
    opts: TailOptions,
    /// `None`: positions are kept in memory only.
    checkpoint: Option<Checkpoint>,
    files: Vec<Followed>,
    /// The first scan has been done.
    started: bool,
    /// Positions loaded from the checkpoint, used up by the first scan;
    /// `None` when there was no state file.
    restored: Option<Vec<Position>>,
    next_generation: u32,
    buf: Vec<u8>,
}

impl Tailer {
    /// A tailer for `pattern`; positions are loaded from `checkpoint` (a
    /// state file that cannot be read is reported and ignored).
    pub fn new(
        pattern: FilePattern,
        opts: TailOptions,
        mut checkpoint: Option<Checkpoint>,
    ) -> (Tailer, Option<CheckpointError>) {
        let (restored, problem) = match checkpoint.as_mut().map(Checkpoint::load) {
            None | Some(Ok(None)) => (None, None),
            Some(Ok(Some(p))) => (Some(p), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let tailer = Tailer {
            pattern,
            opts,
            checkpoint,
            files: Vec::new(),
            started: false,
            restored,
            next_generation: 0,
            buf: vec![0; CHUNK],
        };
        (tailer, problem)
    }

    /// Finds new, rotated and truncated files, then reads every file,
    /// calling `out` with each complete line.
    pub fn poll(&mut self, out: &mut dyn FnMut(Line<'_>)) -> PollReport {
        let mut report = PollReport {
            caught_up: true,
            ..PollReport::default()
        };
        let idle = self.opts.rotated_idle;
        self.files.retain(|f| !f.done(idle));
        self.scan(&mut report);
        self.check_truncation(&mut report);
        // Rotated files first: their lines are older.
        self.files.sort_by_key(|f| f.rotated.is_none());
        for i in 0..self.files.len() {
            if self.read(i, out, &mut report) {
                report.caught_up = false;
            }
        }
        report.missing = self.files.is_empty();
        report
    }

    /// The consumer has handed on the line of `key` ending at `end`.
    pub fn commit(&mut self, key: FileKey, end: u64) {
        if let Some(f) = self.files.iter_mut().find(|f| f.key == key || f.former == Some(key)) {
            f.committed = f.committed.max(end);
        }
    }

    /// Writes the committed positions to the state file (if they changed).
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        let positions: Vec<Position> = self.files.iter_mut().map(Followed::position).collect();
        match &mut self.checkpoint {
            Some(c) => c.save(&positions),
            None => Ok(()),
        }
    }

    /// Names of the files followed now (rotated ones included).
    #[cfg(test)]
    fn followed(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    fn scan(&mut self, report: &mut PollReport) {
        let mut seen = HashSet::new();
        for path in self.pattern.expand() {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            let id = (meta.dev(), meta.ino());
            seen.insert(id);
            if let Some(f) = self.files.iter_mut().find(|f| f.id() == id) {
                // Renamed to another name the pattern matches: same file.
                f.path = path;
                f.rotated = None;
                continue;
            }
            for f in self.files.iter_mut().filter(|f| f.path == path && f.rotated.is_none()) {
                f.rotated = Some(Instant::now());
                report
                    .rotations
                    .push(format!("{} was replaced by a new file", path.display()));
            }
            let start = self.first_offset(&path, &meta);
            let generation = self.generation();
            match Followed::open(&path, &meta, generation, start) {
                Ok(mut f) => {
                    // Started inside a line (history off, a line being
                    // written): its beginning is not ours to read.
                    f.skipping = start > 0 && f.recent.last() != Some(&b'\n');
                    self.files.push(f);
                }
                Err(e) => report.errors.push(format!("cannot open {}: {e}", path.display())),
            }
        }
        for f in self
            .files
            .iter_mut()
            .filter(|f| f.rotated.is_none() && !seen.contains(&f.id()))
        {
            f.rotated = Some(Instant::now());
            report
                .rotations
                .push(format!("{} was renamed or removed", f.path.display()));
        }
        if !self.started {
            self.started = true;
            self.resume_rotated(&seen, report);
        }
    }

    /// Where to start a file not followed yet.
    fn first_offset(&self, path: &Path, meta: &Metadata) -> u64 {
        if self.started {
            return 0;
        }
        let Some(restored) = &self.restored else {
            return if self.opts.history { 0 } else { meta.len() };
        };
        match restored.iter().find(|p| p.dev == meta.dev() && p.ino == meta.ino()) {
            Some(p) if resumable(path, meta, p) => p.offset,
            // Unknown to the state file, or the same path now naming a new
            // file: it appeared while ductd was down, all of it is new.
            _ => 0,
        }
    }

    /// After a restart: files in the state that their pattern no longer
    /// names were rotated while ductd was down; finish them if they are
    /// still beside their old name.
    fn resume_rotated(&mut self, seen: &HashSet<(u64, u64)>, report: &mut PollReport) {
        let Some(restored) = self.restored.take() else { return };
        for p in restored {
            if seen.contains(&(p.dev, p.ino)) {
                continue;
            }
            let Some((path, meta)) = siblings(&p.path)
                .into_iter()
                .find(|(_, m)| m.dev() == p.dev && m.ino() == p.ino)
            else {
                continue;
            };
            if !resumable(&path, &meta, &p) || p.offset >= meta.len() {
                continue;
            }
            let generation = self.generation();
            if let Ok(mut f) = Followed::open(&path, &meta, generation, p.offset) {
                f.rotated = Some(Instant::now());
                report.rotations.push(format!(
                    "{} was rotated to {} while stopped",
                    p.path.display(),
                    path.display()
                ));
                self.files.push(f);
            }
        }
    }

    /// Notices files truncated or rewritten in place (copytruncate).
    fn check_truncation(&mut self, report: &mut PollReport) {
        let mut copies = Vec::new();
        let mut generation = self.next_generation;
        for f in &mut self.files {
            let Ok(meta) = f.file.metadata() else { continue };
            let size = meta.len();
            let pos = f.pos();
            let shrank = size < pos;
            let rewritten = !shrank && size != f.size && pos > 0 && !f.unchanged();
            f.size = size;
            if !shrank && !rewritten {
                continue;
            }
            report
                .rotations
                .push(format!("{} was truncated; reading it from the start", f.path.display()));
            // The copy logrotate left beside it holds what was not read yet.
            if pos > 0 && !f.recent.is_empty() {
                if let Some((path, meta)) = find_copy(&f.path, f.id(), pos, &f.recent) {
                    if let Ok(file) = File::open(&path) {
                        if meta.len() > pos {
                            report.rotations.push(format!(
                                "reading the rest of {} from its copy {}",
                                f.path.display(),
                                path.display()
                            ));
                        }
                        copies.push(Followed {
                            path,
                            key: FileKey {
                                dev: meta.dev(),
                                ino: meta.ino(),
                                generation: 0,
                            },
                            former: Some(f.key),
                            file,
                            start: f.start,
                            pending: std::mem::take(&mut f.pending),
                            recent: std::mem::take(&mut f.recent),
                            size: meta.len(),
                            committed: f.committed,
                            handed: f.handed,
                            skipped_to: f.skipped_to,
                            saved: None,
                            skipping: f.skipping,
                            rotated: Some(Instant::now()),
                            last_growth: Instant::now(),
                        });
                    }
                }
            }
            f.start = 0;
            f.pending.clear();
            f.recent.clear();
            f.skipping = false;
            f.committed = 0;
            f.handed = 0;
            f.skipped_to = 0;
            f.saved = None;
            generation = generation.wrapping_add(1);
            f.key.generation = generation;
        }
        self.next_generation = generation;
        for mut c in copies {
            c.key.generation = self.generation();
            self.files.push(c);
        }
    }

    /// Reads file `i` up to its end or the line limit. True when lines are
    /// left for the next poll.
    fn read(&mut self, i: usize, out: &mut dyn FnMut(Line<'_>), report: &mut PollReport) -> bool {
        let limit = self.opts.max_lines;
        let max_line = self.opts.max_line_bytes;
        let f = &mut self.files[i];
        let mut handed = 0;
        loop {
            let before = report.lines;
            let stopped = f.drain(limit.saturating_sub(handed), max_line, out, report);
            handed += report.lines - before;
            if stopped {
                return true;
            }
            if limit > 0 && handed >= limit {
                // Exactly at the limit: say whether more is waiting.
                return f.size > f.pos() || memchr::memchr(b'\n', &f.pending).is_some();
            }
            match f.file.read_at(&mut self.buf, f.pos()) {
                Ok(0) => break,
                Ok(n) => {
                    f.pending.extend_from_slice(&self.buf[..n]);
                    let keep = n.min(FINGERPRINT_BYTES);
                    f.recent.extend_from_slice(&self.buf[n - keep..n]);
                    let excess = f.recent.len().saturating_sub(FINGERPRINT_BYTES);
                    f.recent.drain(..excess);
                    f.last_growth = Instant::now();
                    f.size = f.size.max(f.pos());
                }
                Err(e) => {
                    report.errors.push(format!("reading {}: {e}", f.path.display()));
                    break;
                }
            }
        }
        // A rotated file that has gone quiet will not get its last newline.
        if f.quiet(self.opts.rotated_idle) && (f.skipping || !f.pending.is_empty()) {
            let end = f.pos();
            if f.skipping {
                f.skipped_to = end;
            } else {
                out(Line {
                    key: f.key,
                    path: &f.path,
                    text: &f.pending,
                    end,
                });
                f.handed = end;
                report.lines += 1;
            }
            f.start = f.pos();
            f.pending.clear();
            f.skipping = false;
        }
        false
    }
}

/// Whether a saved position still applies to the file at `path`.
fn resumable(path: &Path, meta: &Metadata, p: &Position) -> bool {
    if meta.len() < p.offset {
        return false;
    }
    if p.offset == 0 || p.before.is_empty() {
        return true;
    }
    let Ok(file) = File::open(path) else { return false };
    let n = p.before.len() / 2;
    let mut buf = vec![0; n];
    p.offset >= n as u64 && file.read_exact_at(&mut buf, p.offset - n as u64).is_ok() && hex(&buf) == p.before
}

/// Uncompressed files beside `path` whose names extend it
/// (`access.log.1`, `access.log-20240101`), newest first.
fn siblings(path: &Path) -> Vec<(PathBuf, Metadata)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Metadata)> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() > name.len() && n.starts_with(&*name)
        })
        .map(|e| e.path())
        .filter(|p| !is_compressed(p))
        .filter_map(|p| std::fs::metadata(&p).ok().filter(Metadata::is_file).map(|m| (p, m)))
        .collect();
    found.sort_by_key(|(_, m)| std::cmp::Reverse(m.mtime()));
    found
}

/// The copy of a truncated file: beside it, at least `pos` long, with the
/// bytes `recent` just before `pos`.
fn find_copy(path: &Path, id: (u64, u64), pos: u64, recent: &[u8]) -> Option<(PathBuf, Metadata)> {
    siblings(path).into_iter().find(|(p, m)| {
        if (m.dev(), m.ino()) == id || m.len() < pos {
            return false;
        }
        let mut buf = vec![0; recent.len()];
        File::open(p)
            .and_then(|f| f.read_exact_at(&mut buf, pos - recent.len() as u64))
            .is_ok()
            && buf == recent
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A temporary directory for one test.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let d = std::env::temp_dir().join(format!("duct-tail-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn pattern(&self, name: &str) -> FilePattern {
            FilePattern::new(&self.join(name).display().to_string())
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn opts(history: bool) -> TailOptions {
        TailOptions {
            history,
            max_lines: 0,
            max_line_bytes: 1 << 20,
            rotated_idle: ROTATED_IDLE,
        }
    }

    /// One poll: the lines, each committed as a consumer would.
    fn poll(t: &mut Tailer) -> Vec<String> {
        poll_report(t).0
    }

    fn poll_report(t: &mut Tailer) -> (Vec<String>, PollReport) {
        let mut lines = Vec::new();
        let mut ends = Vec::new();
        let report = t.poll(&mut |l| {
            lines.push(String::from_utf8_lossy(l.text).into_owned());
            ends.push((l.key, l.end));
        });
        for (k, e) in ends {
            t.commit(k, e);
        }
        (lines, report)
    }

    /// A tailer that has made its first poll (where it decides where
    /// existing files start).
    fn started(pattern: FilePattern, opts: TailOptions, state: Option<&Dir>) -> Tailer {
        let mut t = tailer(pattern, opts, state);
        assert!(poll(&mut t).is_empty());
        t
    }

    fn tailer(pattern: FilePattern, opts: TailOptions, state: Option<&Dir>) -> Tailer {
        let ckpt = state.map(|d| Checkpoint::new(&d.join("state"), "test", "svc", pattern.as_str()));
        let (t, problem) = Tailer::new(pattern, opts, ckpt);
        assert!(problem.is_none(), "{problem:?}");
        t
    }

    #[test]
    fn a_line_is_handed_on_only_when_its_newline_arrives() {
        let d = Dir::new("partial");
        let log = d.join("a.log");
        append(&log, "");
        let mut t = tailer(d.pattern("a.log"), opts(false), None);
        assert!(poll(&mut t).is_empty());
        append(&log, "one\ntw");
        assert_eq!(poll(&mut t), ["one"]);
        assert!(poll(&mut t).is_empty());
        append(&log, "o\nthree\n");
        assert_eq!(poll(&mut t), ["two", "three"]);
    }

    #[test]
    fn history_decides_where_existing_files_start() {
        let d = Dir::new("history");
        let log = d.join("a.log");
        append(&log, "old 1\nold 2\nhalf a li");
        let mut from_end = tailer(d.pattern("a.log"), opts(false), None);
        assert!(poll(&mut from_end).is_empty());
        let mut from_start = tailer(d.pattern("a.log"), opts(true), None);
        assert_eq!(poll(&mut from_start), ["old 1", "old 2"]);
        append(&log, "ne\nnew\n");
        assert_eq!(poll(&mut from_end), ["new"], "the line it started inside is not ours");
        assert_eq!(poll(&mut from_start), ["half a line", "new"]);
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_start() {
        let d = Dir::new("later");
        let log = d.join("a.log");
        let mut t = tailer(d.pattern("a.log"), opts(false), None);
        let (lines, report) = poll_report(&mut t);
        assert!(lines.is_empty() && report.missing);
        append(&log, "first\nsecond\n");
        assert_eq!(poll(&mut t), ["first", "second"]);
    }

    #[test]
    fn rename_rotation_drains_the_old_file_then_reads_the_new_one() {
        let d = Dir::new("rename");
        let log = d.join("access.log");
        append(&log, "");
        let mut t = started(d.pattern("access.log"), opts(false), None);
        append(&log, "a1\na2\n");
        assert_eq!(poll(&mut t), ["a1", "a2"]);
        // logrotate renames; the server still writes to its open file until
        // it reopens, then writes the new one.
        std::fs::rename(&log, d.join("access.log.1")).unwrap();
        append(&d.join("access.log.1"), "a3\na4 unfinished");
        append(&log, "b1\n");
        let (lines, report) = poll_report(&mut t);
        assert_eq!(lines, ["a3", "b1"]);
        assert!(
            report.rotations.iter().any(|r| r.contains("replaced")),
            "{:?}",
            report.rotations
        );
        append(&d.join("access.log.1"), "\n");
        append(&log, "b2\n");
        assert_eq!(poll(&mut t), ["a4 unfinished", "b2"]);
        assert_eq!(t.followed().len(), 2, "the rotated file stays open while it may grow");
    }

    #[test]
    fn a_quiet_rotated_file_is_closed_and_its_last_line_handed_on() {
        let d = Dir::new("close");
        let log = d.join("access.log");
        append(&log, "");
        let mut o = opts(false);
        o.rotated_idle = Duration::ZERO;
        let mut t = started(d.pattern("access.log"), o, None);
        append(&log, "a1\nno newline");
        assert_eq!(poll(&mut t), ["a1"]);
        std::fs::remove_file(&log).unwrap();
        assert_eq!(poll(&mut t), ["no newline"]);
        poll(&mut t);
        assert!(t.followed().is_empty(), "closed once drained and committed");
    }

    #[test]
    fn skipped_lines_do_not_hold_a_file_open_or_its_position_back() {
        let d = Dir::new("skipped");
        let log = d.join("access.log");
        append(&log, "");
        let mut o = opts(false);
        o.rotated_idle = Duration::ZERO;
        o.max_line_bytes = 10;
        let mut t = started(d.pattern("access.log"), o.clone(), Some(&d));
        append(&log, &format!("ok\n{}\n", "x".repeat(50)));
        let (lines, report) = poll_report(&mut t);
        assert_eq!((lines, report.overlong), (vec!["ok".to_string()], 1));
        t.save().unwrap();
        drop(t);
        append(&log, "next\n");
        let mut again = tailer(d.pattern("access.log"), o, Some(&d));
        assert_eq!(poll(&mut again), ["next"], "resumed after the skipped line");
        append(&log, &"y".repeat(50));
        poll(&mut again);
        std::fs::remove_file(&log).unwrap();
        poll(&mut again);
        poll(&mut again);
        assert!(again.followed().is_empty(), "closed although its last line was skipped");
    }

    #[test]
    fn copytruncate_reads_the_unread_rest_from_the_copy() {
        let d = Dir::new("copytruncate");
        let log = d.join("access.log");
        append(&log, "");
        let mut t = started(d.pattern("access.log"), opts(false), None);
        append(&log, "a1\na2\n");
        assert_eq!(poll(&mut t), ["a1", "a2"]);
        append(&log, "a3\na4\n");
        // logrotate copytruncate: copy, then truncate in place.
        std::fs::copy(&log, d.join("access.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "b1\n");
        let (lines, report) = poll_report(&mut t);
        assert_eq!(lines, ["a3", "a4", "b1"]);
        assert!(report.rotations.iter().any(|r| r.contains("truncated")));
    }

    #[test]
    fn a_file_rewritten_past_the_old_position_is_read_from_the_start() {
        let d = Dir::new("rewritten");
        let log = d.join("access.log");
        append(&log, "");
        let mut t = started(d.pattern("access.log"), opts(false), None);
        append(&log, "short\n");
        assert_eq!(poll(&mut t), ["short"]);
        // Truncated and refilled beyond the old size between two polls, with
        // no copy to recover from.
        std::fs::write(&log, "a much longer first line\nsecond\n").unwrap();
        assert_eq!(poll(&mut t), ["a much longer first line", "second"]);
    }

    #[test]
    fn globs_follow_every_match_and_pick_up_new_ones() {
        let d = Dir::new("glob");
        append(&d.join("a.log"), "");
        let mut t = started(d.pattern("*.log"), opts(false), None);
        append(&d.join("a.log"), "a\n");
        assert_eq!(poll(&mut t), ["a"]);
        append(&d.join("b.log"), "b\n");
        append(&d.join("b.log.1"), "not matched\n");
        append(&d.join("a.log"), "a2\n");
        let mut lines = poll(&mut t);
        lines.sort();
        assert_eq!(lines, ["a2", "b"]);
    }

    #[test]
    fn max_lines_bounds_a_poll_and_the_rest_waits() {
        let d = Dir::new("max");
        let log = d.join("a.log");
        append(&log, "");
        let mut o = opts(false);
        o.max_lines = 3;
        let mut t = started(d.pattern("a.log"), o, None);
        append(&log, &(1..=7).map(|i| format!("{i}\n")).collect::<String>());
        let (first, r1) = poll_report(&mut t);
        assert_eq!(first, ["1", "2", "3"]);
        assert!(!r1.caught_up);
        assert_eq!(poll(&mut t), ["4", "5", "6"]);
        let (last, r3) = poll_report(&mut t);
        assert_eq!(last, ["7"]);
        assert!(r3.caught_up);
    }

    #[test]
    fn large_files_are_read_in_chunks_and_overlong_lines_skipped() {
        let d = Dir::new("chunks");
        let log = d.join("a.log");
        append(&log, "");
        let mut o = opts(false);
        o.max_line_bytes = 1000;
        let mut t = started(d.pattern("a.log"), o, None);
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("line {i:06}\n"));
        }
        text.push_str(&"x".repeat(5000));
        text.push_str("\nafter\n");
        append(&log, &text);
        let (lines, report) = poll_report(&mut t);
        assert_eq!(lines.len(), 20_001);
        assert_eq!(lines[12_345], "line 012345");
        assert_eq!(lines.last().unwrap(), "after");
        assert_eq!(report.overlong, 1);
    }

    #[test]
    fn a_restart_resumes_at_the_committed_position() {
        let d = Dir::new("restart");
        let log = d.join("a.log");
        append(&log, "before start\n");
        let mut t = tailer(d.pattern("a.log"), opts(false), Some(&d));
        assert!(poll(&mut t).is_empty());
        append(&log, "1\n2\n");
        assert_eq!(poll(&mut t), ["1", "2"]);
        t.save().unwrap();
        // Read but not committed when the agent died: read again.
        append(&log, "3\n");
        t.poll(&mut |_| {});
        drop(t);
        append(&log, "4\n");
        let mut again = tailer(d.pattern("a.log"), opts(false), Some(&d));
        assert_eq!(poll(&mut again), ["3", "4"]);
    }

    #[test]
    fn a_restart_reads_a_shrunk_or_replaced_file_from_the_start() {
        let d = Dir::new("replaced");
        let log = d.join("a.log");
        append(&log, "");
        let mut t = started(d.pattern("a.log"), opts(false), Some(&d));
        append(&log, "one line that is long enough\n");
        assert_eq!(poll(&mut t).len(), 1);
        t.save().unwrap();
        drop(t);
        // Same inode, shorter.
        std::fs::write(&log, "new\n").unwrap();
        let mut t = tailer(d.pattern("a.log"), opts(false), Some(&d));
        assert_eq!(poll(&mut t), ["new"]);
        t.save().unwrap();
        drop(t);
        // Same inode and as long, other content.
        std::fs::write(&log, "NEW\nnewer\n").unwrap();
        let mut t = tailer(d.pattern("a.log"), opts(false), Some(&d));
        assert_eq!(poll(&mut t), ["NEW", "newer"]);
    }

    #[test]
    fn a_file_rotated_while_stopped_is_finished_before_the_new_one() {
        let d = Dir::new("rotated-down");
        let log = d.join("access.log");
        append(&log, "");
        let mut t = started(d.pattern("access.log"), opts(false), Some(&d));
        append(&log, "a1\n");
        assert_eq!(poll(&mut t), ["a1"]);
        t.save().unwrap();
        drop(t);
        append(&log, "a2\n");
        std::fs::rename(&log, d.join("access.log.1")).unwrap();
        append(&log, "b1\n");
        let mut t = tailer(d.pattern("access.log"), opts(false), Some(&d));
        assert_eq!(poll(&mut t), ["a2", "b1"]);
    }
}
