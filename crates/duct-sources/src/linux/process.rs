//! `duct.sources.linux.process.ProcessCount` and `ProcessStats`: the
//! number of processes, and CPU, memory and age per process name and per
//! user, read from `/proc/[pid]/` (Duct ran `ps`).
//!
//! ProcessStats names processes as Duct did: the first word of the command
//! line and the kernel's `comm`, each stripped to word characters, joined by
//! a dot when they differ (`usrsbinsshd.sshd`, `bash`). Kernel threads and
//! processes younger than a second are left out, as Duct left them out.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use duct_core::config::Diagnostic;
use duct_core::{Event, NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSpec};

use super::host::{reported, Host};
use super::{number, read_into, ready, HostError, HostPaths, ParseError, ProcFile};

/// `flags` bit of kernel threads (`PF_KTHREAD` in `linux/sched.h`).
const PF_KTHREAD: u64 = 0x0020_0000;

pub fn count_spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "duct.sources.linux.process.ProcessCount",
        "The number of processes, kernel threads included (the numbered entries of HOST_PROC)",
        &["(service): number of processes"],
        build_count,
    )
    .over_ssh()
}

pub fn stats_spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "duct.sources.linux.process.ProcessStats",
        "CPU, memory and age per process name and per user (HOST_PROC/[pid]/stat, status, cmdline); kernel threads left out",
        &[
            "(service).proc.(name).cpu: % of one CPU since the previous tick (since start for processes new to it), summed over processes of that name",
            "(service).proc.(name).mem: resident memory in MB, summed",
            "(service).proc.(name).age: seconds since start, summed",
            "(service).user.(user).cpu: % of one CPU, summed over the user's processes",
            "(service).user.(user).mem: resident memory in MB, summed",
        ],
        build_stats,
    )
}

fn build_count(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    Ok(Box::new(ProcessCount { host: Host::of(args) }))
}

fn build_stats(_: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    Ok(Box::new(ProcessStats::new(&HostPaths::from_env())))
}

/// Whether a `/proc` entry is a process.
fn pid_of(name: &std::ffi::OsStr) -> Option<u32> {
    name.to_str()?.parse().ok()
}

pub(crate) struct ProcessCount {
    host: Host,
}

impl ProcessCount {
    async fn count(&self) -> Result<usize, HostError> {
        let names = self.host.list_dir(self.host.paths().proc_dir()).await?;
        Ok(names.iter().filter(|n| pid_of(n.as_ref()).is_some()).count())
    }
}

impl Source for ProcessCount {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let count = self.count().await;
            reported(
                ctx,
                count.map(|n| vec![ctx.create_event("ok", format!("Process count {n}"), n)]),
            )
        })
    }
}

/// The fields of `/proc/[pid]/stat` that ProcessStats uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidStat<'a> {
    pub comm: &'a str,
    pub flags: u64,
    /// User and system time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/[pid]/stat`. The command name is in parentheses and may
/// itself hold spaces and parentheses, so it ends at the last `)`.
pub(crate) fn parse_pid_stat(text: &str) -> Result<PidStat<'_>, ParseError> {
    let open = text.find('(').ok_or(ParseError::Missing("("))?;
    let close = text.rfind(')').ok_or(ParseError::Missing(")"))?;
    let comm = text.get(open + 1..close).ok_or(ParseError::Missing("comm"))?;
    // Fields from the third (state) on; see proc(5) for the numbering.
    let mut fields = text[close + 1..].split_ascii_whitespace();
    let mut field = |skip: usize, what: &'static str| -> Result<u64, ParseError> {
        let f = fields.nth(skip).ok_or(ParseError::Missing(what))?;
        // rss is signed in the kernel's format; clamp odd negatives to 0.
        if f.starts_with('-') {
            return Ok(0);
        }
        number(what, f)
    };
    let flags = field(6, "flags")?; // field 9
    let utime = field(4, "utime")?; // field 14
    let stime = field(0, "stime")?; // field 15
    let start_ticks = field(6, "starttime")?; // field 22
    let rss_pages = field(1, "rss")?; // field 24
    Ok(PidStat {
        comm,
        flags,
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
        rss_pages,
    })
}

/// The effective user id from `/proc/[pid]/status` (`Uid: real effective
/// saved fs`), the one `ps` shows.
pub(crate) fn parse_status_euid(text: &str) -> Option<u32> {
    let line = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Seconds since boot, the first figure of `/proc/uptime`.
pub(crate) fn parse_uptime(text: &str) -> Result<f64, ParseError> {
    let first = text
        .split_ascii_whitespace()
        .next()
        .ok_or(ParseError::Missing("uptime"))?;
    first.parse().map_err(|_| ParseError::Number {
        what: "uptime",
        text: first.to_string(),
    })
}

/// User names by id from an `/etc/passwd` file.
pub(crate) fn parse_passwd(text: &str) -> HashMap<u32, &str> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next().filter(|n| !n.is_empty() && !n.starts_with('#'))?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name))
        })
        .collect()
}

/// Duct's `re.sub(r'[^\w_]', '', text)`: letters, digits and underscores.
pub(crate) fn word_chars(text: &str) -> String {
    text.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Duct's name for a process, written into `key`: the first word of its
/// command line and its `comm`, stripped to word characters, joined by a
/// dot when they differ, without leading or trailing underscores. False
/// for an empty command line (kernel threads and zombies, which `ps` shows
/// in brackets and Duct skipped).
pub(crate) fn process_key(cmdline: &[u8], comm: &str, key: &mut String) -> bool {
    key.clear();
    // `ps` joins the arguments with spaces; Duct took the first word.
    let first = cmdline
        .split(|b| *b == 0 || b.is_ascii_whitespace())
        .find(|w| !w.is_empty());
    let Some(first) = first else {
        return false;
    };
    let binary = word_chars(&String::from_utf8_lossy(first));
    let comm = word_chars(comm);
    if binary != comm {
        key.push_str(&binary);
        key.push('.');
    }
    key.push_str(&comm);
    let trimmed = key.trim_matches('_');
    if trimmed.len() != key.len() {
        *key = trimmed.to_string();
    }
    true
}

/// CPU use in % of one CPU: since the previous reading of the same process
/// if there is one, else since it started (what `ps` shows).
pub(crate) fn cpu_percent(previous: Option<(u64, f64)>, ticks: u64, started: f64, uptime: f64, hz: f64) -> f64 {
    let (ticks, seconds) = match previous {
        Some((before, at)) if uptime > at => (ticks.saturating_sub(before), uptime - at),
        _ => (ticks, uptime - started),
    };
    if seconds <= 0.0 {
        0.0
    } else {
        ticks as f64 / hz / seconds * 100.0
    }
}

/// User names, re-read when the passwd file changes.
struct Users {
    passwd: PathBuf,
    modified: Option<SystemTime>,
    /// Lower-cased and stripped to word characters, as Duct named users.
    names: HashMap<u32, String>,
}

impl Users {
    fn refresh(&mut self) {
        let modified = fs::metadata(&self.passwd).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.modified {
            return;
        }
        self.modified = modified;
        self.names = fs::read_to_string(&self.passwd)
            .map(|text| {
                parse_passwd(&text)
                    .into_iter()
                    .map(|(uid, name)| (uid, word_chars(&name.to_lowercase())))
                    .collect()
            })
            .unwrap_or_default();
    }

    /// The user's name, or the number `ps` would show for an unknown one.
    fn name(&self, uid: u32) -> String {
        self.names.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    cpu: f64,
    mem_mb: f64,
    age: u64,
}

/// One tick's reading of one process.
struct Sample {
    start_ticks: u64,
    cpu_ticks: u64,
    uptime: f64,
}

pub(crate) struct ProcessStats {
    proc: PathBuf,
    uptime: ProcFile,
    users: Users,
    /// Clock ticks per second and bytes per page, asked of the system once.
    hz: f64,
    page_size: u64,
    /// The previous tick's CPU reading per pid, for rates; swapped with
    /// `current` each tick.
    previous: HashMap<u32, Sample>,
    current: HashMap<u32, Sample>,
    /// Reused buffers: one file's content each, a path, a process key.
    stat_buf: Vec<u8>,
    other_buf: Vec<u8>,
    path: PathBuf,
    key: String,
}

impl ProcessStats {
    pub fn new(paths: &HostPaths) -> Self {
        // SAFETY: sysconf only reads system constants.
        let (hz, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        ProcessStats {
            proc: paths.proc_dir().to_path_buf(),
            uptime: ProcFile::new(paths.proc("uptime")),
            users: Users {
                passwd: paths.on_host("/etc/passwd".as_ref()).into_owned(),
                modified: None,
                names: HashMap::new(),
            },
            hz: if hz > 0 { hz as f64 } else { 100.0 },
            page_size: u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096),
            previous: HashMap::new(),
            current: HashMap::new(),
            stat_buf: Vec::new(),
            other_buf: Vec::new(),
            path: PathBuf::new(),
            key: String::new(),
        }
    }

    fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, HostError> {
        let uptime = self.uptime.parse(parse_uptime)?;
        self.users.refresh();
        let entries = fs::read_dir(&self.proc).map_err(|source| HostError::Read {
            path: self.proc.clone(),
            source,
        })?;
        let mut procs: BTreeMap<String, Totals> = BTreeMap::new();
        let mut users: BTreeMap<String, Totals> = BTreeMap::new();
        self.current.clear();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(pid) = pid_of(&name) else {
                continue;
            };
            // A process may exit between any two reads: skip it then.
            let mut read = |file: &str, buf: &mut Vec<u8>| {
                self.path.clear();
                self.path.push(&self.proc);
                self.path.push(&name);
                self.path.push(file);
                read_into(&self.path, buf).is_ok()
            };
            if !read("stat", &mut self.stat_buf) {
                continue;
            }
            let stat_text = String::from_utf8_lossy(&self.stat_buf);
            let Ok(stat) = parse_pid_stat(&stat_text) else {
                continue;
            };
            if stat.flags & PF_KTHREAD != 0 {
                continue;
            }
            let started = stat.start_ticks as f64 / self.hz;
            let age = (uptime - started).floor();
            if age < 1.0 {
                continue;
            }
            if !read("cmdline", &mut self.other_buf) || !process_key(&self.other_buf, stat.comm, &mut self.key) {
                continue;
            }
            if !read("status", &mut self.other_buf) {
                continue;
            }
            let Some(uid) = parse_status_euid(&String::from_utf8_lossy(&self.other_buf)) else {
                continue;
            };
            let previous = self
                .previous
                .get(&pid)
                .filter(|p| p.start_ticks == stat.start_ticks)
                .map(|p| (p.cpu_ticks, p.uptime));
            let cpu = cpu_percent(previous, stat.cpu_ticks, started, uptime, self.hz);
            self.current.insert(
                pid,
                Sample {
                    start_ticks: stat.start_ticks,
                    cpu_ticks: stat.cpu_ticks,
                    uptime,
                },
            );
            let mem_mb = (stat.rss_pages * self.page_size) as f64 / (1024.0 * 1024.0);
            let p = match procs.get_mut(self.key.as_str()) {
                Some(p) => p,
                None => procs.entry(self.key.clone()).or_default(),
            };
            p.cpu += cpu;
            p.mem_mb += mem_mb;
            p.age += age as u64;
            let u = users.entry(self.users.name(uid)).or_default();
            u.cpu += cpu;
            u.mem_mb += mem_mb;
        }
        std::mem::swap(&mut self.previous, &mut self.current);

        let mut events = Vec::with_capacity(users.len() * 2 + procs.len() * 3);
        for (user, t) in &users {
            events.push(ctx.create_event_prefixed(
                &format!("user.{user}.mem"),
                "ok",
                format!("User memory {user}: {:.2}MB", t.mem_mb),
                t.mem_mb,
            ));
            events.push(ctx.create_event_prefixed(
                &format!("user.{user}.cpu"),
                "ok",
                format!("User CPU usage {user}: {:.1}%", t.cpu),
                t.cpu,
            ));
        }
        for (name, t) in &procs {
            events.push(ctx.create_event_prefixed(
                &format!("proc.{name}.age"),
                "ok",
                format!("Process age {name}: {}s", t.age),
                t.age,
            ));
            events.push(ctx.create_event_prefixed(
                &format!("proc.{name}.mem"),
                "ok",
                format!("Process memory {name}: {:.2}MB", t.mem_mb),
                t.mem_mb,
            ));
            events.push(ctx.create_event_prefixed(
                &format!("proc.{name}.cpu"),
                "ok",
                format!("Process CPU usage {name}: {:.1}%", t.cpu),
                t.cpu,
            ));
        }
        Ok(events)
    }
}

impl Source for ProcessStats {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        ready(self.tick(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::{paths_in, Scratch};
    use crate::testing::context;
    use duct_core::Metric;

    const CAPTURED_STAT: &str = include_str!("../../tests/fixtures/linux/pid-stat");
    const TRICKY_STAT: &str = include_str!("../../tests/fixtures/linux/pid-stat-odd-comm");
    const CAPTURED_STATUS: &str = include_str!("../../tests/fixtures/linux/pid-status");
    const PASSWD: &str = include_str!("../../tests/fixtures/linux/passwd");

    #[test]
    fn parses_a_captured_stat() {
        let s = parse_pid_stat(CAPTURED_STAT).unwrap();
        assert_eq!(
            s,
            PidStat {
                comm: "cat",
                flags: 4194304,
                cpu_ticks: 0,
                start_ticks: 166603,
                rss_pages: 393
            }
        );
    }

    #[test]
    fn the_command_name_may_hold_spaces_and_parentheses() {
        let s = parse_pid_stat(TRICKY_STAT).unwrap();
        assert_eq!(s.comm, "tmux: a) (b");
        assert_eq!((s.cpu_ticks, s.start_ticks, s.rss_pages), (1500 + 250, 98765, 2048));
        assert!(parse_pid_stat("12 (x) S 1 2").is_err());
        assert!(parse_pid_stat("no parentheses").is_err());
    }

    #[test]
    fn huge_cpu_times_saturate_instead_of_overflowing() {
        // Found by the proc fuzz target: utime + stime past u64 panicked
        // in a debug build (and wrapped in a release one).
        let max = u64::MAX;
        let text = format!("1 (x) S 0 0 0 0 0 0 0 0 0 0 {max} {max} 0 0 0 0 0 0 7 0 9");
        let s = parse_pid_stat(&text).unwrap();
        assert_eq!((s.cpu_ticks, s.start_ticks, s.rss_pages), (max, 7, 9));
    }

    #[test]
    fn reads_the_effective_uid_and_user_names() {
        assert_eq!(parse_status_euid(CAPTURED_STATUS), Some(0));
        assert_eq!(parse_status_euid("Name:\tx\nUid:\t1000\t33\t33\t33\n"), Some(33));
        assert_eq!(parse_status_euid("Name:\tx\n"), None);
        let users = parse_passwd(PASSWD);
        assert_eq!(users.get(&0), Some(&"root"));
        assert_eq!(users.get(&33), Some(&"www-data"));
        assert_eq!(users.get(&1000), Some(&"Alice.Smith"));
        assert_eq!(users.len(), 6, "comments and broken lines are skipped");
    }

    #[test]
    fn names_processes_as_duct_did() {
        let mut key = String::new();
        assert!(process_key(b"/usr/sbin/sshd\0-D\0", "sshd", &mut key));
        assert_eq!(key, "usrsbinsshd.sshd");
        assert!(process_key(b"bash\0", "bash", &mut key));
        assert_eq!(key, "bash");
        // A retitled process: the first word of the joined arguments.
        assert!(process_key(b"nginx: worker process\0\0", "nginx", &mut key));
        assert_eq!(key, "nginx");
        assert!(process_key(b"_x_\0", "_x_", &mut key));
        assert_eq!(key, "x");
        assert!(
            !process_key(b"", "kworker/0:1", &mut key),
            "kernel threads have no command line"
        );
        assert_eq!(word_chars("Alice.Smith-2"), "AliceSmith2");
    }

    #[test]
    fn cpu_is_a_rate_since_the_previous_reading_or_since_start() {
        // 50 ticks at 100 Hz over 2 s since the previous reading: 25 %.
        assert_eq!(cpu_percent(Some((100, 98.0)), 150, 10.0, 100.0, 100.0), 25.0);
        // First seen: 150 ticks over the 90 s it has lived.
        assert_eq!(cpu_percent(None, 900, 10.0, 100.0, 100.0), 10.0);
        assert_eq!(cpu_percent(None, 5, 100.0, 100.0, 100.0), 0.0);
        assert_eq!(parse_uptime("3600.50 7000.10\n"), Ok(3600.5));
        assert_eq!(
            parse_uptime(include_str!("../../tests/fixtures/linux/uptime")),
            Ok(1431.58)
        );
        assert!(parse_uptime("").is_err());
    }

    fn write_process(dir: &Scratch, pid: u32, stat: &str, cmdline: &str, uid: u32) {
        dir.write(&format!("proc/{pid}/stat"), stat);
        dir.write(&format!("proc/{pid}/cmdline"), cmdline);
        dir.write(
            &format!("proc/{pid}/status"),
            &format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        );
    }

    /// A `stat` line with the given name, flags, CPU ticks, start and rss.
    fn stat_line(pid: u32, comm: &str, flags: u64, utime: u64, start: u64, rss: u64) -> String {
        format!("{pid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 {utime} 0 0 0 20 0 1 0 {start} 1000 {rss} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n")
    }

    #[tokio::test]
    async fn aggregates_per_name_and_user_from_a_proc_tree() {
        let dir = Scratch::new("procs");
        // Uptime 1000 s. Clock ticks come from the machine; start times are
        // written in them.
        let paths = paths_in(&dir.0);
        let probe = ProcessStats::new(&paths);
        let hz = probe.hz as u64;
        let page_mb = probe.page_size as f64 / (1024.0 * 1024.0);
        dir.write("proc/uptime", "1000.00 1900.00\n");
        write_process(
            &dir,
            1,
            &stat_line(1, "init", 0x400100, 10 * hz, 0, 256),
            "/sbin/init\0",
            0,
        );
        write_process(&dir, 2, &stat_line(2, "kthreadd", PF_KTHREAD, 0, 0, 0), "", 0);
        write_process(
            &dir,
            40,
            &stat_line(40, "bash", 0x400000, 50 * hz, 500 * hz, 100),
            "bash\0",
            1000,
        );
        write_process(
            &dir,
            41,
            &stat_line(41, "bash", 0x400000, 25 * hz, 750 * hz, 50),
            "-bash\0",
            1000,
        );
        // Younger than a second: skipped, as the `ps` Duct ran.
        write_process(&dir, 42, &stat_line(42, "ps", 0x400000, 0, 1000 * hz, 10), "ps\0", 1000);
        dir.write("proc/self/stat", "not a process\n");
        dir.write("root/etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        let mut src = ProcessStats::new(&paths);
        src.users.passwd = dir.0.join("root/etc/passwd");
        let (ctx, _) = context("ps");
        let events = src.get(&ctx).await.unwrap();
        let m = |s: &str| -> f64 {
            let e = events
                .iter()
                .find(|e| e.service == s)
                .unwrap_or_else(|| panic!("no {s}: {:?}", events.iter().map(|e| &e.service).collect::<Vec<_>>()));
            e.metric.map(Metric::as_f64).unwrap()
        };
        assert_eq!(
            events.len(),
            2 * 2 + 2 * 3,
            "users root and 1000; processes init and bash"
        );
        assert_eq!(m("ps.proc.sbininit.init.age"), 1000.0);
        assert_eq!(m("ps.proc.sbininit.init.cpu"), 1.0);
        assert_eq!(m("ps.proc.bash.age"), 500.0 + 250.0);
        // 50 s of CPU over 500 s and 25 s over 250 s: 10 % each.
        assert_eq!(m("ps.proc.bash.cpu"), 20.0);
        assert_eq!(m("ps.proc.bash.mem"), 150.0 * page_mb);
        assert_eq!(m("ps.user.1000.cpu"), 20.0, "unknown users go by number");
        assert_eq!(m("ps.user.root.mem"), 256.0 * page_mb);

        // Ten seconds later bash 40 used 5 s more: 50 % since the last tick.
        dir.write("proc/uptime", "1010.00 1900.00\n");
        dir.write("proc/40/stat", &stat_line(40, "bash", 0x400000, 55 * hz, 500 * hz, 100));
        let events = src.get(&ctx).await.unwrap();
        let cpu = events.iter().find(|e| e.service == "ps.proc.bash.cpu").unwrap();
        assert_eq!(cpu.metric, Some(Metric::Float(50.0)));
        assert_eq!(cpu.description, "Process CPU usage bash: 50.0%");
    }

    #[tokio::test]
    async fn counts_numbered_entries() {
        let dir = Scratch::new("pcount");
        for pid in [1, 2, 300] {
            dir.write(&format!("proc/{pid}/stat"), "x");
        }
        dir.write("proc/self/stat", "x");
        dir.write("proc/meminfo", "x");
        let (ctx, _) = context("procs");
        let mut src = ProcessCount {
            host: Host::from(&crate::linux::testing::paths_in(&dir.0)),
        };
        let events = src.get(&ctx).await.unwrap();
        assert_eq!(events[0].metric, Some(Metric::Int(3)));
        assert_eq!(events[0].description, "Process count 3");
    }
}
