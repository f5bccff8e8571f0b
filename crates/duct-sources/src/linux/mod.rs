//! Host sources for Linux under Duct's names (`duct.sources.linux.*`):
//! load, CPU, memory, disks, network, processes, sensors and IPsec tunnels.
//!
//! They read the kernel's text interfaces under `/proc` and `/sys` — or
//! under `HOST_PROC`, `HOST_SYS` and `HOST_ROOT` when a container watches
//! its host — through [`HostPaths`], and turn them into values with pure
//! parsers kept apart from the I/O (each module's `parse_*` functions, tested
//! on captured files in `tests/fixtures/linux/`). Files are kept open and
//! read whole into a reused buffer at every tick ([`ProcFile`]); commands
//! (`sensors`, `smartctl`, `ipsec`) go through [`command::Tool`].

pub(crate) mod command;
mod cpu;
mod diskfree;
mod diskio;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod host;
mod ipsec;
mod load;
mod memory;
mod network;
mod process;
mod sensors;
mod smart;

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use duct_core::plan::StringList;
use duct_core::{Event, Poll, Registry};

/// Adds every Linux host source to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(load::spec());
    registry.add_source(cpu::spec());
    registry.add_source(memory::spec());
    registry.add_source(diskio::spec());
    registry.add_source(diskfree::spec());
    registry.add_source(network::spec());
    registry.add_source(process::count_spec());
    registry.add_source(process::stats_spec());
    registry.add_source(sensors::hwmon_spec());
    registry.add_source(sensors::lm_spec());
    registry.add_source(smart::spec());
    registry.add_source(ipsec::spec());
}

/// Where the host's kernel interfaces and files are: `/proc`, `/sys` and
/// `/`, or `HOST_PROC`, `HOST_SYS` and `HOST_ROOT` when set, which is how a
/// container with the host's directories mounted elsewhere reports the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    proc: PathBuf,
    sys: PathBuf,
    /// The host's root filesystem when it is mounted elsewhere: mount points
    /// are measured and `/etc/passwd` is read under it.
    root: Option<PathBuf>,
    /// `HOST_PROC` was given, so it is presumably another namespace's procfs:
    /// per-namespace files (`net/dev`) are read as the host's init process
    /// sees them (`HOST_PROC/1/…`), since `HOST_PROC/self` is this process.
    proc_is_host: bool,
}

impl HostPaths {
    /// The paths from the environment, read once per process.
    pub fn from_env() -> Arc<HostPaths> {
        static PATHS: OnceLock<Arc<HostPaths>> = OnceLock::new();
        PATHS
            .get_or_init(|| Arc::new(HostPaths::from_vars(|k| std::env::var_os(k))))
            .clone()
    }

    /// The paths from `var` (the environment, or a test's table); unset or
    /// empty variables give the defaults.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> HostPaths {
        let set = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let proc = set("HOST_PROC");
        HostPaths {
            proc_is_host: proc.is_some(),
            proc: proc.unwrap_or_else(|| PathBuf::from("/proc")),
            sys: set("HOST_SYS").unwrap_or_else(|| PathBuf::from("/sys")),
            root: set("HOST_ROOT").filter(|r| r != Path::new("/")),
        }
    }

    /// `rel` under the proc directory.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    /// `rel` under the sys directory.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    pub fn proc_dir(&self) -> &Path {
        &self.proc
    }

    /// A file that differs per network namespace, in the order to try it:
    /// the host init's view when `HOST_PROC` is given, else this process's.
    pub fn proc_per_namespace(&self, rel: &str) -> Vec<PathBuf> {
        let own = self.proc.join(rel);
        if self.proc_is_host {
            vec![self.proc.join("1").join(rel), own]
        } else {
            vec![own]
        }
    }

    /// The mount table to read, in the order to try it. With `HOST_ROOT` it
    /// is the host init's, whose mount points exist under `HOST_ROOT`;
    /// without, it is this process's own, whose mount points `statvfs` can
    /// reach directly (`HOST_PROC/mounts` serves fake trees in tests).
    pub fn mount_tables(&self) -> Vec<PathBuf> {
        let first = if self.root.is_some() { "1/mounts" } else { "self/mounts" };
        vec![self.proc.join(first), self.proc.join("mounts")]
    }

    /// An absolute host path as this process reaches it (under `HOST_ROOT`).
    pub fn on_host<'a>(&self, path: &'a Path) -> Cow<'a, Path> {
        match &self.root {
            Some(root) => Cow::Owned(root.join(path.strip_prefix("/").unwrap_or(path))),
            None => Cow::Borrowed(path),
        }
    }
}

/// Why a host source could not report.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    /// Over SSH (`use_ssh`): the connection, the login or the remote read.
    #[error(transparent)]
    Remote(#[from] duct_ssh::SshError),
    /// A program run here ([`host::Host::run`]) could not be run or timed out.
    #[error(transparent)]
    Fork(#[from] duct_core::source::ForkError),
}

/// What a parser found wrong in a kernel file or a tool's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no `{0}` in the text")]
    Missing(&'static str),
    #[error("`{text}` is not a number (reading {what})")]
    Number { what: &'static str, text: String },
    #[error("too few fields for {what} in `{line}`")]
    Short { what: &'static str, line: String },
}

impl ParseError {
    fn short(what: &'static str, line: &str) -> Self {
        ParseError::Short {
            what,
            line: line.trim().to_string(),
        }
    }
}

/// `text` as an unsigned integer, or an error naming `what` was read.
fn number(what: &'static str, text: &str) -> Result<u64, ParseError> {
    text.parse().map_err(|_| ParseError::Number {
        what,
        text: text.to_string(),
    })
}

/// How far a kernel counter moved between two readings. The kernel keeps
/// some counters in 32 bits (the millisecond fields of `/proc/diskstats`,
/// every counter on 32-bit kernels), so a reading below a previous one that
/// fitted in 32 bits is a wrap at 2^32; a 64-bit counter going backwards
/// was reset (a device re-created under the same name), and the distance
/// since the reset is the new reading.
pub(crate) fn counter_delta(previous: u64, current: u64) -> u64 {
    if current >= previous {
        current - previous
    } else if previous <= u64::from(u32::MAX) {
        current + (1 << 32) - previous
    } else {
        current
    }
}

/// A kernel text file read whole at every tick into a buffer kept between
/// ticks. The file stays open: procfs and sysfs regenerate a file's content
/// when it is read again from offset 0, so a tick costs a seek and a read
/// rather than an open, a read and a close. A failed read reopens it once
/// (the device behind a sysfs file may have been re-created).
pub(crate) struct ProcFile {
    /// Paths to try, in order, until one opens.
    candidates: Vec<PathBuf>,
    /// The open file, which candidate it is, and its filesystem's magic
    /// number (procfs and sysfs are read differently).
    open: Option<(File, usize, Option<i64>)>,
    buf: Vec<u8>,
}

impl ProcFile {
    pub fn new(path: PathBuf) -> Self {
        Self::first_of(vec![path])
    }

    /// The first of `paths` that opens.
    pub fn first_of(paths: Vec<PathBuf>) -> Self {
        ProcFile {
            candidates: paths,
            open: None,
            buf: Vec::new(),
        }
    }

    /// The path read (or the first to try, before the first read).
    pub fn path(&self) -> &Path {
        let i = self.open.as_ref().map_or(0, |(_, i, _)| *i);
        self.candidates.get(i).map_or(Path::new(""), PathBuf::as_path)
    }

    /// The file's whole content now. Invalid UTF-8 (an interface or mount
    /// point named in another encoding) is replaced, not refused.
    pub fn read(&mut self) -> Result<Cow<'_, str>, HostError> {
        self.buf.clear();
        let kept = match &mut self.open {
            Some((file, _, magic)) => read_from_start(file, *magic, &mut self.buf).is_ok(),
            None => false,
        };
        if !kept {
            self.buf.clear();
            self.open = None;
            let (mut file, index) = self.open_first()?;
            let magic = fs_magic(&file);
            if let Err(source) = read_from_start(&mut file, magic, &mut self.buf) {
                return Err(HostError::Read {
                    path: self.candidates[index].clone(),
                    source,
                });
            }
            self.open = Some((file, index, magic));
        }
        Ok(String::from_utf8_lossy(&self.buf))
    }

    /// Whether a procfs mount table changed since it was last polled: the
    /// kernel flags each change of the mount namespace with `POLLPRI`, so
    /// the table need not be read and parsed every tick. True when it cannot
    /// tell (not open yet, not procfs).
    pub fn mount_table_changed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Some((file, _, magic)) = &self.open else {
            return true;
        };
        if *magic != Some(PROC_SUPER_MAGIC) {
            return true;
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n != 0
    }

    /// Reads and parses the file, naming it in a parse error.
    pub fn parse<T>(&mut self, parse: impl FnOnce(&str) -> Result<T, ParseError>) -> Result<T, HostError> {
        let text = self.read()?;
        let parsed = parse(&text);
        drop(text);
        parsed.map_err(|source| HostError::Parse {
            path: self.path().to_path_buf(),
            source,
        })
    }

    fn open_first(&self) -> Result<(File, usize), HostError> {
        let mut first_error = None;
        for (i, path) in self.candidates.iter().enumerate() {
            match File::open(path) {
                Ok(f) => return Ok((f, i)),
                Err(e) => {
                    first_error.get_or_insert((path.clone(), e));
                }
            }
        }
        let (path, source) = first_error.unwrap_or_else(|| {
            (
                PathBuf::new(),
                io::Error::new(io::ErrorKind::NotFound, "no path to read"),
            )
        });
        Err(HostError::Read { path, source })
    }
}

/// Reads the whole file from offset 0 with `pread`: one system call for a
/// small kernel file, where a seek and `read_to_end` cost four (seek, a
/// `statx` to size the buffer, the read, and a read to see the end).
fn read_from_start(file: &mut File, magic: Option<i64>, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let kernel = magic.is_some_and(|m| m == PROC_SUPER_MAGIC || m == SYSFS_MAGIC);
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        // procfs and sysfs hand out what they have in one read: a short
        // read is the end. Regular files (fake trees in tests) loop on.
        if n < chunk.len() && kernel {
            return Ok(());
        }
    }
}

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

fn fs_magic(file: &File) -> Option<i64> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs fills the zeroed struct for a valid open descriptor.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::fstatfs(file.as_raw_fd(), &mut st) == 0).then_some(st.f_type as i64)
    }
}

/// Reads a short-lived file (a process's `stat`) whole into `buf`.
pub(crate) fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    Ok(())
}

/// A `devices` / `disks` / `interfaces` option: the names to report, or
/// every one when it is absent or empty. A comma-separated string or a
/// list, as Duct accepted.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Selection(Vec<String>);

impl Selection {
    pub fn new(option: Option<StringList>) -> Self {
        Selection(option.map(|l| l.0).unwrap_or_default())
    }

    /// Whether `name` is listed explicitly.
    pub fn lists(&self, name: &str) -> bool {
        self.0.iter().any(|n| n == name)
    }

    /// Whether `name` is reported: listed, or nothing is listed.
    pub fn admits(&self, name: &str) -> bool {
        self.0.is_empty() || self.lists(name)
    }
}

/// The future of a tick that did all its work synchronously (a `/proc`
/// read is fast enough not to matter to the arbiter).
pub(crate) fn ready<'a, E: Into<duct_core::SourceError>>(result: Result<Vec<Event>, E>) -> Poll<'a> {
    Box::pin(std::future::ready(result.map_err(Into::into)))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fixture access for the host sources' unit tests.

    use std::path::PathBuf;

    use super::HostPaths;

    /// The fixture directory `crates/duct-sources/tests/fixtures/linux`.
    pub fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linux")
    }

    /// Host paths pointing into a directory with `proc/` and `sys/`.
    pub fn paths_in(dir: &std::path::Path) -> HostPaths {
        let proc = dir.join("proc").into_os_string();
        let sys = dir.join("sys").into_os_string();
        HostPaths::from_vars(|k| match k {
            "HOST_PROC" => Some(proc.clone()),
            "HOST_SYS" => Some(sys.clone()),
            _ => None,
        })
    }

    /// A scratch directory removed when dropped.
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> Scratch {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("duct-sources-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Writes `text` at `rel`, creating parents; overwrites in place so
        /// that files kept open see the new content.
        pub fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_the_real_directories() {
        let p = HostPaths::from_vars(|_| None);
        assert_eq!(p.proc("stat"), Path::new("/proc/stat"));
        assert_eq!(p.sys("class/hwmon"), Path::new("/sys/class/hwmon"));
        assert_eq!(p.proc_per_namespace("net/dev"), [PathBuf::from("/proc/net/dev")]);
        assert_eq!(p.mount_tables()[0], Path::new("/proc/self/mounts"));
        assert_eq!(p.on_host(Path::new("/boot")), Path::new("/boot"));
        // Empty values count as unset; a root of `/` is no root at all.
        let p = HostPaths::from_vars(vars(&[("HOST_PROC", ""), ("HOST_ROOT", "/")]));
        assert_eq!(p, HostPaths::from_vars(|_| None));
    }

    #[test]
    fn host_directories_move_every_path() {
        let p = HostPaths::from_vars(vars(&[
            ("HOST_PROC", "/host/proc"),
            ("HOST_SYS", "/host/sys"),
            ("HOST_ROOT", "/host"),
        ]));
        assert_eq!(p.proc("meminfo"), Path::new("/host/proc/meminfo"));
        assert_eq!(p.sys("class/hwmon"), Path::new("/host/sys/class/hwmon"));
        assert_eq!(
            p.proc_per_namespace("net/dev"),
            [
                PathBuf::from("/host/proc/1/net/dev"),
                PathBuf::from("/host/proc/net/dev")
            ]
        );
        assert_eq!(
            p.mount_tables(),
            [PathBuf::from("/host/proc/1/mounts"), PathBuf::from("/host/proc/mounts")]
        );
        assert_eq!(p.on_host(Path::new("/")), Path::new("/host"));
        assert_eq!(p.on_host(Path::new("/var/lib")), Path::new("/host/var/lib"));
    }

    #[test]
    fn counters_wrap_at_32_bits_or_restart() {
        assert_eq!(counter_delta(10, 25), 15);
        assert_eq!(counter_delta(u64::from(u32::MAX) - 4, 10), 15);
        assert_eq!(counter_delta(1 << 40, 7), 7, "a 64-bit counter going back was reset");
    }

    #[test]
    fn proc_file_rereads_the_same_open_file() {
        let dir = testing::Scratch::new("procfile");
        dir.write("f", "one");
        let mut f = ProcFile::first_of(vec![dir.0.join("missing"), dir.0.join("f")]);
        assert_eq!(f.read().unwrap(), "one");
        assert_eq!(f.path(), dir.0.join("f"));
        dir.write("f", "two, longer");
        assert_eq!(f.read().unwrap(), "two, longer");
        let mut none = ProcFile::new(dir.0.join("absent"));
        let err = none.read().unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn kernel_files_are_read_whole_and_mount_tables_report_changes() {
        let mut stat = ProcFile::new(PathBuf::from("/proc/stat"));
        let first = stat.read().unwrap().into_owned();
        assert!(first.starts_with("cpu "), "{first}");
        assert!(first.contains("\nctxt "), "read to the end: {first}");
        assert!(stat.read().unwrap().starts_with("cpu "), "read again from the start");

        let mut mounts = ProcFile::new(PathBuf::from("/proc/self/mounts"));
        assert!(mounts.mount_table_changed(), "nothing read yet");
        assert!(!mounts.read().unwrap().is_empty());
        // The first poll consumes the namespace's current change count.
        let _ = mounts.mount_table_changed();
        assert!(!mounts.mount_table_changed(), "no mount came or went");

        // A regular file (a fake tree) cannot tell: it is read every time.
        let dir = testing::Scratch::new("mounts");
        dir.write("mounts", "/dev/x / ext4 rw 0 0\n");
        let mut fake = ProcFile::new(dir.0.join("mounts"));
        fake.read().unwrap();
        assert!(fake.mount_table_changed());
    }

    #[test]
    fn selections_admit_everything_when_empty() {
        let all = Selection::new(None);
        assert!(all.admits("eth0") && !all.lists("eth0"));
        let some = Selection::new(Some(StringList(vec!["eth0".into()])));
        assert!(some.admits("eth0") && !some.admits("lo"));
    }
}
