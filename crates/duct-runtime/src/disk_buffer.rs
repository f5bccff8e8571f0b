//! An output's disk buffer (`buffer: {type: disk}`): the backing store of
//! the output actor's queue, so that what the agent took survives a kill.
//!
//! The buffer is a directory of append-only segment files
//! (`00000000000000000001.seg`, …), numbered in the order they are
//! written. Each holds records, one per chunk the router handed the
//! output:
//!
//! ```text
//! magic "DBUF" (4) · payload length (u32 LE) · events (u32 LE) · CRC-32 (u32 LE) · payload
//! payload = one kind byte per event (0 metric, 1 log) · the events as a Riemann `Msg` body
//! ```
//!
//! The CRC covers the length, the count and the payload, so a torn or
//! corrupted record is detected; reading then looks for the next magic
//! that starts a valid record and goes on from there, counting what it
//! skipped. A segment is deleted once every record in it has been
//! delivered; an `acked` file (position and CRC) says where delivery had
//! got to, so that a restart sends again only what was in flight.
//!
//! The output actor holds the buffer and calls it from its own thread.
//! Appends are one `write` per record into the page cache (microseconds);
//! `fdatasync` runs every `sync_interval` on the blocking pool, never on
//! the actor's thread. Reads (after a restart, or when the queue in memory
//! has spilled) go through the same files in order. A lock on the
//! directory keeps two actors (a reload's old and new output) from using
//! it at once.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use duct_core::plan::DiskBufferSettings;
use duct_core::{Event, EventKind, StoredAt};
use duct_proto::{decode_msg, Fallback, Limits};

const MAGIC: [u8; 4] = *b"DBUF";
const HEADER: usize = 16;
/// No record is larger (the router's chunks are far smaller); a length
/// beyond it is corruption.
const MAX_RECORD: usize = 256 << 20;
/// Bytes read from a segment at a time.
const READ_BLOCK: usize = 4 << 20;
const SEGMENT_SUFFIX: &str = ".seg";
const ACKED_FILE: &str = "acked";
const LOCK_FILE: &str = "lock";
/// How often the `acked` file is rewritten while delivery moves on: what a
/// kill makes the next run send twice is what was delivered meanwhile.
const ACKED_EVERY: Duration = Duration::from_millis(50);

/// Why the buffer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("another output holds the disk buffer {0} (a reload's old output still closing?)")]
    Busy(PathBuf),
    #[error("cannot use the disk buffer {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    /// Events in it (read from the record headers for older segments).
    events: u64,
}

/// What opening found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Events left undelivered by the last run, to be sent now.
    pub events: u64,
    pub segments: usize,
}

/// What an append did besides writing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub at: Option<StoredAt>,
    /// The record stays on disk only (the queue in memory is full): it is
    /// read back when the queue has room.
    pub spilled: bool,
    /// Segments before this one were deleted to stay within `max_bytes`:
    /// the queue drops its chunks from them.
    pub dropped_before: Option<u64>,
    /// Events of those segments not read into memory yet, now gone.
    pub dropped_unread: u64,
}

/// Records read back from disk.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub chunks: Vec<(StoredAt, Vec<Event>)>,
    /// Torn or corrupted records skipped.
    pub corrupted: u64,
}

/// A read of records from one segment ([`DiskBuffer::next_read`]).
pub struct ReadJob {
    file: File,
    from: StoredAt,
    /// The segment's length when the read was planned.
    end: u64,
    want: usize,
}

/// What a [`ReadJob`] read, for [`DiskBuffer::finish_read`].
pub struct ReadDone {
    from: StoredAt,
    /// Where the next read starts in the segment.
    to: u64,
    /// Events read.
    events: u64,
    back: ReadBack,
}

impl ReadJob {
    /// Reads one block (or the one record larger than a block) from the
    /// planned position and decodes the whole records in it, up to about
    /// `want` events; a torn or corrupted record is skipped to the next
    /// magic that starts a valid one, and counted.
    pub fn run(self) -> io::Result<ReadDone> {
        let ReadJob { file, from, end, want } = self;
        let mut back = ReadBack::default();
        let mut got = 0;
        let block = ((end - from.offset) as usize).min(READ_BLOCK);
        let mut buf = vec![0u8; block];
        file.read_exact_at(&mut buf, from.offset)?;
        let mut at_end = from.offset + block as u64 == end;
        let mut pos = 0;
        let mut damaged = false;
        loop {
            match parse_record(&buf[pos..]) {
                Parsed::Record { events, len } => {
                    if damaged {
                        back.corrupted += 1;
                        damaged = false;
                    }
                    let at = StoredAt {
                        segment: from.segment,
                        offset: from.offset + pos as u64,
                    };
                    got += events.len();
                    back.chunks.push((at, events));
                    pos += len;
                    if got >= want {
                        break;
                    }
                }
                Parsed::Short { need } if !at_end => {
                    if pos == 0 && need > buf.len() {
                        // One record larger than a block: read it whole.
                        let mut whole = vec![0u8; need.min((end - from.offset) as usize)];
                        file.read_exact_at(&mut whole, from.offset)?;
                        at_end = from.offset + whole.len() as u64 == end;
                        buf = whole;
                        continue;
                    }
                    break;
                }
                Parsed::Short { .. } if pos == buf.len() => break,
                Parsed::Short { .. } | Parsed::Bad => {
                    damaged = true;
                    match find_magic(&buf[pos + 1..]) {
                        Some(skip) => pos += 1 + skip,
                        None if at_end => {
                            pos = buf.len();
                            break;
                        }
                        // Keep the last bytes: a magic may straddle.
                        None => {
                            pos = buf.len().saturating_sub(MAGIC.len() - 1).max(pos + 1);
                            break;
                        }
                    }
                }
            }
        }
        if damaged {
            back.corrupted += 1;
        }
        Ok(ReadDone {
            from,
            to: from.offset + pos as u64,
            events: got as u64,
            back,
        })
    }
}

pub struct DiskBuffer {
    dir: PathBuf,
    max_bytes: u64,
    /// A segment is closed past this size and a new one started.
    segment_bytes: u64,
    /// Held while the buffer is open: the directory is this output's alone.
    _lock: File,
    /// Oldest first; the last one is being written.
    segments: VecDeque<Segment>,
    writer: File,
    /// The next record not in memory, while the queue has spilled to disk;
    /// `None` while everything on disk is also in memory.
    read: Option<StoredAt>,
    /// The open segment `read` is in.
    reader: Option<(u64, File)>,
    /// Events of `read`'s segment before `read`.
    read_in_segment: u64,
    /// Events on disk not in memory.
    unread: u64,
    /// Delivery had got here, as last written to `acked`.
    acked: Option<StoredAt>,
    /// When `acked` was last written: at most every [`ACKED_EVERY`].
    acked_written: Instant,
    /// Written since the last sync.
    dirty: bool,
    /// A sync is running on the blocking pool.
    syncing: Arc<AtomicBool>,
    record: BytesMut,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `settings.path`: locks it, finds
    /// the segments a previous run left and where their delivery had got
    /// to, and starts a new segment for this run's writes.
    pub fn open(settings: &DiskBufferSettings) -> Result<(DiskBuffer, Recovered), BufferError> {
        let dir = settings.path.clone();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(BufferError::Busy(dir));
            }
            return Err(io_at(&lock_path)(e));
        }
        let mut ids: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let acked = read_acked(&dir);
        let mut segments = VecDeque::new();
        for id in ids {
            let path = segment_path(&dir, id);
            if acked.is_some_and(|a| id < a.segment) {
                fs::remove_file(&path).map_err(io_at(&path))?;
                continue;
            }
            let file = File::open(&path).map_err(io_at(&path))?;
            let bytes = file.metadata().map_err(io_at(&path))?.len();
            segments.push_back(Segment {
                id,
                bytes,
                events: count_events_until(&file, bytes),
            });
        }
        let mut read = segments.front().map(|s| StoredAt {
            segment: s.id,
            offset: 0,
        });
        let mut read_in_segment = 0;
        if let (Some(a), Some(first)) = (acked, segments.front()) {
            if a.segment == first.id && a.offset <= first.bytes {
                let file = File::open(segment_path(&dir, first.id)).map_err(io_at(&dir))?;
                read_in_segment = count_events_until(&file, a.offset);
                read = Some(a);
            }
        }
        let recovered_events = segments
            .iter()
            .map(|s| s.events)
            .sum::<u64>()
            .saturating_sub(read_in_segment);
        let recovered = Recovered {
            events: recovered_events,
            segments: segments.len(),
        };
        let next_id = segments.back().map_or(1, |s| s.id + 1);
        let writer = create_segment(&dir, next_id)?;
        segments.push_back(Segment {
            id: next_id,
            bytes: 0,
            events: 0,
        });
        let segment_bytes = (settings.max_bytes / 16).clamp(256 << 10, 64 << 20);
        let mut buffer = DiskBuffer {
            dir,
            max_bytes: settings.max_bytes,
            segment_bytes,
            _lock: lock,
            segments,
            writer,
            read,
            reader: None,
            read_in_segment,
            unread: recovered_events,
            acked,
            acked_written: Instant::now(),
            dirty: false,
            syncing: Arc::default(),
            record: BytesMut::new(),
        };
        buffer.skip_to_unread();
        Ok((buffer, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Events on disk and not in memory.
    pub fn unread(&self) -> u64 {
        self.unread
    }

    pub fn spilled(&self) -> bool {
        self.read.is_some()
    }

    /// Where the next record will be written.
    fn head(&self) -> StoredAt {
        let last = self
            .segments
            .back()
            .expect("the segment being written is always listed");
        StoredAt {
            segment: last.id,
            offset: last.bytes,
        }
    }

    /// Writes `events` as one record. With `keep_in_memory` false, or
    /// while earlier records wait on disk, the record is left on disk
    /// (`spilled`) to be read back in order.
    /// `record` is `events` already encoded ([`encode_record`]), or `None`
    /// to encode them here.
    pub fn append(&mut self, events: &[Event], record: Option<&[u8]>, keep_in_memory: bool) -> io::Result<Appended> {
        if events.is_empty() {
            return Ok(Appended::default());
        }
        if let Some(record) = record {
            return self.write_record(record, events.len(), keep_in_memory);
        }
        let mut own = std::mem::take(&mut self.record);
        encode_record(&mut own, events);
        let written = self.write_record(&own, events.len(), keep_in_memory);
        self.record = own;
        written
    }

    fn write_record(&mut self, record: &[u8], count: usize, keep_in_memory: bool) -> io::Result<Appended> {
        let mut out = Appended::default();
        let len = record.len() as u64;
        let active = self.head();
        if active.offset > 0 && active.offset + len > self.segment_bytes {
            self.rotate()?;
        }
        self.writer.write_all(record)?;
        self.dirty = true;
        let at = self.head();
        let last = self
            .segments
            .back_mut()
            .expect("the segment being written is always listed");
        last.bytes += len;
        last.events += count as u64;
        out.at = Some(at);
        if self.read.is_some() || !keep_in_memory {
            out.spilled = true;
            self.unread += count as u64;
            if self.read.is_none() {
                self.read = Some(at);
                self.read_in_segment = last.events - count as u64;
            }
        }
        self.enforce_max_bytes(&mut out);
        Ok(out)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.head().segment + 1;
        let writer = create_segment(&self.dir, next).map_err(|e| match e {
            BufferError::Io { source, .. } => source,
            BufferError::Busy(_) => io::Error::other("busy"),
        })?;
        let old = std::mem::replace(&mut self.writer, writer);
        // The closed segment is made durable in the background, with the
        // directory entry of the new one.
        let dir = self.dir.clone();
        in_background(move || {
            let _ = old.sync_data();
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
        });
        self.segments.push_back(Segment {
            id: next,
            bytes: 0,
            events: 0,
        });
        Ok(())
    }

    /// Drops the oldest segments while the buffer is over `max_bytes`.
    fn enforce_max_bytes(&mut self, out: &mut Appended) {
        while self.segments.len() > 1 && self.segments.iter().map(|s| s.bytes).sum::<u64>() > self.max_bytes {
            let oldest = self.segments.pop_front().expect("more than one");
            let _ = fs::remove_file(segment_path(&self.dir, oldest.id));
            out.dropped_before = Some(oldest.id + 1);
            if let Some(read) = self.read {
                if read.segment == oldest.id {
                    let gone = oldest.events.saturating_sub(self.read_in_segment);
                    out.dropped_unread += gone;
                    self.unread = self.unread.saturating_sub(gone);
                    self.read = Some(StoredAt {
                        segment: oldest.id + 1,
                        offset: 0,
                    });
                    self.reader = None;
                    self.read_in_segment = 0;
                    self.skip_to_unread();
                }
            }
        }
    }

    /// Moves `read` past ends of segments; `None` once it meets the head.
    fn skip_to_unread(&mut self) {
        loop {
            let Some(read) = self.read else { return };
            if read == self.head() {
                self.read = None;
                self.reader = None;
                self.unread = 0;
                return;
            }
            match self.segments.iter().find(|s| s.id >= read.segment) {
                Some(s) if s.id == read.segment && read.offset < s.bytes => return,
                Some(s) if s.id > read.segment => {
                    self.read = Some(StoredAt {
                        segment: s.id,
                        offset: 0,
                    });
                    self.read_in_segment = 0;
                    self.reader = None;
                    if s.bytes > 0 {
                        return;
                    }
                }
                Some(s) => {
                    // At the end of a segment that is not the last.
                    self.read = Some(StoredAt {
                        segment: s.id + 1,
                        offset: 0,
                    });
                    self.read_in_segment = 0;
                    self.reader = None;
                }
                None => {
                    self.read = None;
                    self.unread = 0;
                    return;
                }
            }
        }
    }

    /// Reads records in order until about `want` events are read or
    /// nothing is left on disk that is not in memory, on this thread.
    pub fn read_back(&mut self, want: usize) -> io::Result<ReadBack> {
        let mut back = ReadBack::default();
        let mut got = 0;
        while got < want {
            let Some(job) = self.next_read(want - got)? else {
                break;
            };
            let before = self.read;
            let part = self.finish_read(job.run()?);
            if self.read == before {
                break;
            }
            got += part.chunks.iter().map(|(_, events)| events.len()).sum::<usize>();
            back.chunks.extend(part.chunks);
            back.corrupted += part.corrupted;
        }
        Ok(back)
    }

    /// The next read of records from disk, to run anywhere (the output
    /// actor runs it on the blocking pool, so that decoding does not hold
    /// up its sends): up to one block of the segment being read, or about
    /// `want` events. `None` when everything on disk is in memory. One read
    /// at a time: [`DiskBuffer::finish_read`] must see its result before
    /// the next is asked for.
    pub fn next_read(&mut self, want: usize) -> io::Result<Option<ReadJob>> {
        let Some(read) = self.read else {
            self.unread = 0;
            return Ok(None);
        };
        let end = self
            .segments
            .iter()
            .find(|s| s.id == read.segment)
            .map_or(0, |s| s.bytes);
        if self.reader.as_ref().is_none_or(|(id, _)| *id != read.segment) {
            let file = File::open(segment_path(&self.dir, read.segment))?;
            self.reader = Some((read.segment, file));
        }
        let (_, file) = self.reader.as_ref().expect("just opened");
        Ok(Some(ReadJob {
            // Its own handle: the segment may be deleted meanwhile (full
            // buffer), and the read still sees it.
            file: file.try_clone()?,
            from: read,
            end,
            want,
        }))
    }

    /// Takes in what a [`ReadJob`] read, unless the buffer moved on
    /// meanwhile (its segment dropped for `max_bytes`, whose events were
    /// counted as dropped then, or read by [`DiskBuffer::read_back`]):
    /// then it is discarded.
    pub fn finish_read(&mut self, done: ReadDone) -> ReadBack {
        if self.read != Some(done.from) {
            return ReadBack::default();
        }
        self.read_in_segment += done.events;
        self.unread = self.unread.saturating_sub(done.events);
        self.read = Some(StoredAt {
            segment: done.from.segment,
            offset: done.to,
        });
        self.skip_to_unread();
        if self.read.is_none() {
            self.unread = 0;
        }
        done.back
    }

    /// Everything before `oldest` is delivered: deletes the segments wholly
    /// before it.
    pub fn delivered_before(&mut self, oldest: Option<StoredAt>) {
        let oldest = oldest.or(self.read).unwrap_or_else(|| self.head());
        while self.segments.len() > 1 && self.segments[0].id < oldest.segment {
            let s = self.segments.pop_front().expect("more than one");
            let _ = fs::remove_file(segment_path(&self.dir, s.id));
        }
        if self.acked != Some(oldest) {
            self.acked = Some(oldest);
            // Written now (not synced: a kill keeps it, power loss may
            // not, which only means sending more again).
            if self.acked_written.elapsed() >= ACKED_EVERY {
                self.acked_written = Instant::now();
                let _ = write_acked(&self.dir, oldest);
            } else {
                self.dirty = true;
            }
        }
    }

    /// Makes what was written durable, on the blocking pool (one sync at a
    /// time; a sync still running makes this one wait for the next call).
    pub fn sync_in_background(&mut self) {
        if !self.dirty || self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.dirty = false;
        let writer = self.writer.try_clone();
        let (dir, acked, syncing) = (self.dir.clone(), self.acked, self.syncing.clone());
        in_background(move || {
            if let Ok(w) = writer {
                let _ = w.sync_data();
            }
            if let Some(a) = acked {
                let _ = write_acked(&dir, a);
            }
            syncing.store(false, Ordering::Release);
        });
    }

    /// Syncs on the calling thread (shutdown).
    pub fn sync_now(&mut self) {
        let _ = self.writer.sync_data();
        if let Some(a) = self.acked {
            let _ = write_acked(&self.dir, a);
        }
        self.dirty = false;
    }
}

/// Runs `job` on the runtime's blocking pool (on this thread outside one).
fn in_background(job: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(job)),
        Err(_) => job(),
    }
}

fn create_segment(dir: &Path, id: u64) -> Result<File, BufferError> {
    let path = segment_path(dir, id);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_at(&path))
}

/// Encodes one record of `events` into `buf` (replacing what it held).
pub fn encode_record(buf: &mut BytesMut, events: &[Event]) {
    buf.clear();
    buf.put_slice(&MAGIC);
    buf.put_u32_le(0);
    buf.put_u32_le(events.len() as u32);
    buf.put_u32_le(0);
    for ev in events {
        buf.put_u8(u8::from(ev.kind == EventKind::Log));
    }
    duct_proto::wire::put_events_msg(buf, events);
    let len = (buf.len() - HEADER) as u32;
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    let crc = record_crc(&buf[4..12], &buf[HEADER..]);
    buf[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn record_crc(lengths: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(lengths);
    h.update(payload);
    h.finalize()
}

enum Parsed {
    Record {
        events: Vec<Event>,
        len: usize,
    },
    /// The record goes on past the bytes given (`need` in all).
    Short {
        need: usize,
    },
    /// Not a valid record here.
    Bad,
}

fn parse_record(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER {
        if !buf.is_empty() && !MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            return Parsed::Bad;
        }
        return Parsed::Short { need: HEADER };
    }
    if buf[..4] != MAGIC {
        return Parsed::Bad;
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let (len, count, crc) = (word(4) as usize, word(8) as usize, word(12));
    if len > MAX_RECORD || count > len {
        return Parsed::Bad;
    }
    if buf.len() < HEADER + len {
        return Parsed::Short { need: HEADER + len };
    }
    let payload = &buf[HEADER..HEADER + len];
    if record_crc(&buf[4..12], payload) != crc {
        return Parsed::Bad;
    }
    let (kinds, body) = payload.split_at(count);
    let fallback = Fallback { time: 0.0, ttl: 60.0 };
    let limits = Limits {
        max_events: count,
        max_memory: usize::MAX,
    };
    match decode_msg(body, &fallback, &limits) {
        Ok(incoming) if incoming.events.len() == count => {
            let mut events = incoming.events;
            for (ev, kind) in events.iter_mut().zip(kinds) {
                if *kind == 1 {
                    ev.kind = EventKind::Log;
                }
            }
            Parsed::Record {
                events,
                len: HEADER + len,
            }
        }
        _ => Parsed::Bad,
    }
}

fn find_magic(buf: &[u8]) -> Option<usize> {
    buf.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// Events in a segment before `until`, from its record headers (an
/// estimate for `.queued`: a damaged header ends the count).
fn count_events_until(file: &File, until: u64) -> u64 {
    let (mut at, mut events) = (0u64, 0u64);
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= until {
        if file.read_exact_at(&mut header, at).is_err() || header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
        events += u64::from(u32::from_le_bytes([header[8], header[9], header[10], header[11]]));
        at += HEADER as u64 + len;
    }
    events
}

fn read_acked(dir: &Path) -> Option<StoredAt> {
    let bytes = fs::read(dir.join(ACKED_FILE)).ok()?;
    if bytes.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    if crc32fast::hash(&bytes[..16]) != crc {
        return None;
    }
    Some(StoredAt {
        segment: u64::from_le_bytes(bytes[..8].try_into().ok()?),
        offset: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
    })
}

fn write_acked(dir: &Path, at: StoredAt) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&at.segment.to_le_bytes());
    bytes.extend_from_slice(&at.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("acked.tmp");
    fs::write(&tmp, &bytes)?;
    fs::rename(tmp, dir.join(ACKED_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use duct_core::Metric;

    fn settings(dir: &Path, max_bytes: u64) -> DiskBufferSettings {
        DiskBufferSettings {
            path: dir.to_path_buf(),
            max_bytes,
            sync_interval: 1.0,
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ductd-disk-buffer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn events(range: std::ops::Range<i64>) -> Vec<Event> {
        range
            .map(|i| {
                let mut e = Event::new("h", format!("svc {i}"));
                e.metric = Some(Metric::Int(i));
                e.time = 1_700_000_000.25;
                e
            })
            .collect()
    }

    fn metrics(back: &ReadBack) -> Vec<i64> {
        back.chunks
            .iter()
            .flat_map(|(_, evs)| evs.iter())
            .map(|e| match e.metric {
                Some(Metric::Int(i)) => i,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn records_come_back_unchanged_after_a_restart() {
        let dir = temp_dir("restart");
        let mut log = events(0..1);
        log[0].kind = EventKind::Log;
        log[0].description = "a line".into();
        log[0].tags = vec!["t".into()];
        log[0].attributes = vec![("k".into(), "v".into())];
        {
            let (mut b, recovered) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
            assert_eq!(recovered, Recovered::default());
            assert!(!b.append(&events(0..10), None, true).unwrap().spilled);
            b.append(&log, None, true).unwrap();
            // Killed: nothing delivered, nothing synced.
        }
        let (mut b, recovered) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
        assert_eq!(recovered.events, 11);
        assert_eq!(b.unread(), 11);
        let back = b.read_back(usize::MAX).unwrap();
        assert_eq!(back.corrupted, 0);
        assert_eq!(back.chunks.len(), 2);
        assert_eq!(back.chunks[0].1, events(0..10));
        assert_eq!(back.chunks[1].1, log);
        assert!(!b.spilled());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_opener_is_told_the_buffer_is_busy() {
        let dir = temp_dir("busy");
        let (first, _) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
        assert!(matches!(
            DiskBuffer::open(&settings(&dir, 64 << 20)),
            Err(BufferError::Busy(_))
        ));
        drop(first);
        assert!(DiskBuffer::open(&settings(&dir, 64 << 20)).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupted_record_is_skipped_and_counted_and_the_rest_read() {
        let dir = temp_dir("corrupt");
        {
            let (mut b, _) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
            for i in 0..5 {
                b.append(&events(i * 10..i * 10 + 10), None, true).unwrap();
            }
        }
        let seg = segment_path(&dir, 1);
        let mut bytes = fs::read(&seg).unwrap();
        let record = bytes.len() / 5;
        // A flipped byte in the second record's payload, and the fourth
        // record's length field garbled.
        bytes[record + HEADER + 5] ^= 0xff;
        bytes[3 * record + 5] ^= 0x7f;
        // And a torn tail: half of a record that was being written.
        let tail = bytes[..record / 2].to_vec();
        bytes.extend_from_slice(&tail);
        fs::write(&seg, &bytes).unwrap();
        let (mut b, _) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
        let back = b.read_back(usize::MAX).unwrap();
        let mut want: Vec<i64> = (0..10).collect();
        want.extend(20..30);
        want.extend(40..50);
        assert_eq!(metrics(&back), want);
        assert_eq!(back.corrupted, 3, "two damaged records and a torn tail");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn delivered_segments_are_deleted_and_a_restart_resumes_after_them() {
        let dir = temp_dir("delivered");
        let s = settings(&dir, 4 << 20);
        let (mut b, _) = DiskBuffer::open(&s).unwrap();
        let mut positions = Vec::new();
        for i in 0..400 {
            positions.push(
                b.append(&events(i * 100..i * 100 + 100), None, true)
                    .unwrap()
                    .at
                    .unwrap(),
            );
        }
        let segments = b.segments.len();
        assert!(segments > 2, "{segments}");
        // Delivered up to record 300.
        b.delivered_before(Some(positions[300]));
        assert!(b.segments.len() < segments);
        assert!(!segment_path(&dir, 1).exists());
        b.sync_now();
        drop(b);
        let (mut b, recovered) = DiskBuffer::open(&s).unwrap();
        assert_eq!(recovered.events, 100 * 100, "only what was not delivered");
        let back = b.read_back(usize::MAX).unwrap();
        assert_eq!(metrics(&back), (30_000..40_000).collect::<Vec<_>>());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn past_max_bytes_the_oldest_segment_goes_and_is_counted() {
        let dir = temp_dir("full");
        let (mut b, _) = DiskBuffer::open(&settings(&dir, 1 << 20)).unwrap();
        let (mut dropped_unread, mut dropped_from) = (0, None);
        for i in 0..6000 {
            // Left on disk: the queue in memory is full.
            let out = b.append(&events(i * 10..i * 10 + 10), None, false).unwrap();
            assert!(out.spilled);
            dropped_unread += out.dropped_unread;
            dropped_from = out.dropped_before.or(dropped_from);
        }
        let on_disk: u64 = b.segments.iter().map(|s| s.bytes).sum();
        assert!(on_disk <= 1 << 20, "{on_disk}");
        assert!(dropped_from.is_some());
        let back = b.read_back(usize::MAX).unwrap();
        let kept = metrics(&back);
        assert_eq!(
            kept.len() as u64 + dropped_unread,
            60_000,
            "every event kept or counted"
        );
        assert_eq!(*kept.last().unwrap(), 59_999, "the newest are kept");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_encoded_by_the_router_is_written_as_it_is() {
        let dir = temp_dir("given");
        let (mut b, _) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
        let mut given = BytesMut::new();
        encode_record(&mut given, &events(0..5));
        b.append(&events(0..5), Some(&given), false).unwrap();
        b.append(&events(5..10), None, false).unwrap();
        let back = b.read_back(usize::MAX).unwrap();
        assert_eq!(metrics(&back), (0..10).collect::<Vec<_>>());
        assert_eq!(back.chunks[1].0.offset, given.len() as u64, "the given record, whole");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_read_run_elsewhere_is_taken_in_or_discarded_when_overtaken() {
        let dir = temp_dir("job");
        let (mut b, _) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
        b.append(&events(0..5), None, false).unwrap();
        b.append(&events(5..10), None, false).unwrap();
        // Planned here, run on another thread, taken in here.
        let job = b.next_read(3).unwrap().expect("records to read");
        let done = std::thread::spawn(move || job.run()).join().unwrap().unwrap();
        let back = b.finish_read(done);
        assert_eq!(
            metrics(&back),
            (0..5).collect::<Vec<_>>(),
            "whole records, about `want`"
        );
        assert_eq!(b.unread(), 5);
        // Overtaken: the rest was read meanwhile, so the job's events are
        // not queued twice.
        let job = b.next_read(100).unwrap().expect("records to read");
        let done = job.run().unwrap();
        assert_eq!(metrics(&b.read_back(usize::MAX).unwrap()), (5..10).collect::<Vec<_>>());
        assert!(b.finish_read(done).chunks.is_empty());
        assert!(!b.spilled());
        assert!(b.next_read(100).unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spilled_records_are_read_back_in_order_with_later_ones() {
        let dir = temp_dir("spill");
        let (mut b, _) = DiskBuffer::open(&settings(&dir, 64 << 20)).unwrap();
        assert!(!b.append(&events(0..5), None, true).unwrap().spilled);
        assert!(b.append(&events(5..10), None, false).unwrap().spilled);
        // Once spilled, later records stay on disk too, to keep the order.
        assert!(b.append(&events(10..15), None, true).unwrap().spilled);
        assert_eq!(b.unread(), 10);
        let back = b.read_back(6).unwrap();
        assert_eq!(metrics(&back), (5..15).collect::<Vec<_>>());
        assert!(!b.spilled());
        assert!(!b.append(&events(15..20), None, true).unwrap().spilled);
        fs::remove_dir_all(&dir).unwrap();
    }
}
