//! Where a log source stopped reading, kept across restarts.
//!
//! One small JSON file per source under `state_dir/logs/`, named after the
//! source kind, its service and its `file` pattern (two sources reading the
//! same log keep separate positions). It lists, for every file being
//! followed, its path, device and inode, the offset of the end of the last
//! line handed on, and the few bytes just before that offset: on restart a
//! file is resumed only if its identity matches, it is at least that long,
//! and those bytes are still there — otherwise it was truncated or replaced
//! and is read from the start.
//!
//! The file is replaced atomically (written beside, synced, renamed, the
//! directory synced), so a crash leaves either the old or the new list,
//! never half of one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::{Deserialize, Serialize};

/// The default state directory when neither the option nor systemd's
/// `$STATE_DIRECTORY` names one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ductd";

/// How many bytes before a position are kept to recognise the file.
pub const FINGERPRINT_BYTES: usize = 32;

/// One followed file's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Offset just past the last line handed on.
    pub offset: u64,
    /// Hex of up to [`FINGERPRINT_BYTES`] bytes ending at `offset`.
    #[serde(default)]
    pub before: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    files: Vec<Position>,
}

/// The state file of one source.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    /// What was last written (or read), to skip writes that change nothing.
    written: Vec<Position>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read log positions from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log positions in {path} are unreadable ({source}); reading as if first started")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot save log positions to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state directory: the option if set, else `$STATE_DIRECTORY` (the
/// first of its colon-separated list, as systemd's `StateDirectory=` sets
/// it), else [`DEFAULT_STATE_DIR`].
pub fn state_dir(option: Option<&Path>) -> PathBuf {
    if let Some(dir) = option {
        return dir.to_path_buf();
    }
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

impl Checkpoint {
    /// The state file of source `kind` (e.g. `nginx-log`) with `service`
    /// reading `pattern`, under `dir`.
    pub fn new(dir: &Path, kind: &str, service: &str, pattern: &str) -> Checkpoint {
        let safe: String = service
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let name = format!("{kind}-{safe}-{:016x}.json", fnv1a(pattern.as_bytes()));
        Checkpoint {
            path: dir.join("logs").join(name),
            written: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved positions; `Ok(None)` when there is no state file (the
    /// source never ran, or the state was removed).
    pub fn load(&mut self) -> Result<Option<Vec<Position>>, CheckpointError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let state: StateFile = serde_json::from_slice(&text).map_err(|source| CheckpointError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        self.written = state.files.clone();
        Ok(Some(state.files))
    }

    /// Replaces the state file with `files`, unless that is what it holds.
    pub fn save(&mut self, files: &[Position]) -> Result<(), CheckpointError> {
        if self.written == files && self.path.exists() {
            return Ok(());
        }
        let state = StateFile {
            version: 1,
            files: files.to_vec(),
        };
        // Serialising plain strings and integers cannot fail.
        let body = serde_json::to_vec(&state).unwrap_or_default();
        write_atomically(&self.path, &body).map_err(|source| CheckpointError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.written = files.to_vec();
        Ok(())
    }
}

/// The lock of the state file at `path`, shared by every source instance
/// that uses it: a source rebuilt by a reload holds it while it reads the
/// positions, so it waits for the instance it replaces to finish its tick
/// (and save) first.
pub fn exclusive(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Weak<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    locks.retain(|_, l| l.strong_count() > 0);
    if let Some(lock) = locks.get(path).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(Mutex::new(()));
    locks.insert(path.to_path_buf(), Arc::downgrade(&lock));
    lock
}

/// Writes `body` to `path` so that readers see the old or the new file.
fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself must reach the disk before the positions count as
    // saved; a directory that cannot be synced (some FUSE mounts) is fine.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// FNV-1a, 64 bits: a stable name for a pattern (not a security measure).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_a_save_and_load() {
        let dir = std::env::temp_dir().join(format!("duct-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Checkpoint::new(&dir, "nginx-log", "web/access", "/var/log/nginx/*.log");
        assert!(c.path().starts_with(dir.join("logs")));
        assert!(c
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("nginx-log-web_access-"));
        assert_eq!(c.load().unwrap(), None);
        let files = vec![Position {
            path: "/var/log/nginx/access.log".into(),
            dev: 2049,
            ino: 77,
            offset: 1234,
            before: hex(b"HTTP/1.1\"\n"),
        }];
        c.save(&files).unwrap();
        assert!(!dir.join("logs").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
        let mut again = Checkpoint::new(&dir, "nginx-log", "web/access", "/var/log/nginx/*.log");
        assert_eq!(again.load().unwrap(), Some(files));
        let other = Checkpoint::new(&dir, "nginx-log-metrics", "web/access", "/var/log/nginx/*.log");
        assert_ne!(other.path(), c.path(), "each source kind keeps its own positions");

        std::fs::write(c.path(), "{not json").unwrap();
        assert!(matches!(c.load(), Err(CheckpointError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn instances_of_a_source_share_the_lock_of_its_state_file() {
        let a = exclusive(Path::new("/state/logs/x.json"));
        let b = exclusive(Path::new("/state/logs/x.json"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &exclusive(Path::new("/state/logs/y.json"))));
    }

    #[test]
    fn the_state_directory_defaults_to_systemds_then_var_lib() {
        assert_eq!(state_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
        // The environment is not touched here (tests run in parallel); the
        // fallback is what an unset variable gives.
        if std::env::var_os("STATE_DIRECTORY").is_none() {
            assert_eq!(state_dir(None), PathBuf::from(DEFAULT_STATE_DIR));
        }
    }
}
