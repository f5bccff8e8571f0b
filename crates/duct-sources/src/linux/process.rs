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
    .over_ssh()
}

fn build_count(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    Ok(Box::new(ProcessCount { host: Host::of(args) }))
}

fn build_stats(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let host = Host::of(args);
    if host.remote().is_none() {
        return Ok(Box::new(ProcessStats::new(host.paths())));
    }
    let timeout = std::time::Duration::from_secs_f64(args.settings.timeout);
    Ok(Box::new(RemoteProcessStats::new(host, timeout)))
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
    /// `R`, `S`, … `Z` for a zombie.
    pub state: &'a str,
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
    let state = fields.next().ok_or(ParseError::Missing("state"))?;
    let mut field = |skip: usize, what: &'static str| -> Result<u64, ParseError> {
        let f = fields.nth(skip).ok_or(ParseError::Missing(what))?;
        // rss is signed in the kernel's format; clamp odd negatives to 0.
        if f.starts_with('-') {
            return Ok(0);
        }
        number(what, f)
    };
    let flags = field(5, "flags")?; // field 9
    let utime = field(4, "utime")?; // field 14
    let stime = field(0, "stime")?; // field 15
    let start_ticks = field(6, "starttime")?; // field 22
    let rss_pages = field(1, "rss")?; // field 24
    Ok(PidStat {
        comm,
        state,
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

/// User names by id, as Duct named users: lower-cased and stripped to
/// word characters.
fn user_names(passwd: &str) -> HashMap<u32, String> {
    parse_passwd(passwd)
        .into_iter()
        .map(|(uid, name)| (uid, word_chars(&name.to_lowercase())))
        .collect()
}

/// The user's name, or the number `ps` would show for an unknown one.
fn user_name(names: &HashMap<u32, String>, uid: u32) -> String {
    names.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
}

/// User names of this machine, re-read when the passwd file changes.
struct Users {
    passwd: PathBuf,
    modified: Option<SystemTime>,
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
            .map(|text| user_names(&text))
            .unwrap_or_default();
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    cpu: f64,
    mem_mb: f64,
    age: u64,
}

/// One tick's sums per process name and per user.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    procs: BTreeMap<String, Totals>,
    users: BTreeMap<String, Totals>,
}

/// One tick's reading of one process.
struct Sample {
    start_ticks: u64,
    cpu_ticks: u64,
    uptime: f64,
}

/// What turns readings of processes into a tick's sums, wherever they
/// were read: the clock, the page size and the previous tick's CPU times.
struct Rates {
    /// Clock ticks per second and bytes per page of the observed host.
    hz: f64,
    page_size: u64,
    /// The previous tick's CPU reading per pid, for rates; swapped with
    /// `current` each tick.
    previous: HashMap<u32, Sample>,
    current: HashMap<u32, Sample>,
}

impl Rates {
    /// Whether a process counts: not a kernel thread nor a zombie, and at
    /// least a second old (younger ones are left out, as by the `ps` Duct
    /// ran).
    fn counts(&self, stat: &PidStat<'_>, uptime: f64) -> bool {
        let kernel_or_dead = stat.flags & PF_KTHREAD != 0 || matches!(stat.state, "Z" | "X");
        !kernel_or_dead && uptime - stat.start_ticks as f64 / self.hz >= 1.0
    }

    /// Adds a process that counts, named `key` and run by `user`.
    fn add(&mut self, tally: &mut Tally, pid: u32, stat: &PidStat<'_>, uptime: f64, key: &str, user: String) {
        let started = stat.start_ticks as f64 / self.hz;
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
        let mem_mb = (stat.rss_pages.saturating_mul(self.page_size)) as f64 / (1024.0 * 1024.0);
        let p = match tally.procs.get_mut(key) {
            Some(p) => p,
            None => tally.procs.entry(key.to_string()).or_default(),
        };
        p.cpu += cpu;
        p.mem_mb += mem_mb;
        p.age = p.age.saturating_add((uptime - started).floor() as u64);
        let u = tally.users.entry(user).or_default();
        u.cpu += cpu;
        u.mem_mb += mem_mb;
    }

    /// The tick is over: its readings are the next one's previous.
    fn finish(&mut self) {
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
    }
}

/// The events of a tick's sums.
fn tally_events(ctx: &SourceContext, tally: &Tally) -> Vec<Event> {
    let mut events = Vec::with_capacity(tally.users.len() * 2 + tally.procs.len() * 3);
    for (user, t) in &tally.users {
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
    for (name, t) in &tally.procs {
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
    events
}

pub(crate) struct ProcessStats {
    proc: PathBuf,
    uptime: ProcFile,
    users: Users,
    rates: Rates,
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
            rates: Rates {
                hz: if hz > 0 { hz as f64 } else { 100.0 },
                page_size: u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096),
                previous: HashMap::new(),
                current: HashMap::new(),
            },
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
        let mut tally = Tally::default();
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
            if !self.rates.counts(&stat, uptime) {
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
            let user = user_name(&self.users.names, uid);
            self.rates.add(&mut tally, pid, &stat, uptime, &self.key, user);
        }
        self.rates.finish();
        Ok(tally_events(ctx, &tally))
    }
}

impl Source for ProcessStats {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        ready(self.tick(ctx))
    }
}

/// Marker lines between the parts of [`REMOTE_SNAPSHOT`]'s output. Longer
/// than the 15 bytes a command name can hold, so that no process can
/// forge one in the `stat` lines.
const STAT_MARK: &str = "@@ductd: /proc/PID/stat@@";
const PS_MARK: &str = "@@ductd: ps pid,euid,args@@";
const PASSWD_MARK: &str = "@@ductd: /etc/passwd@@";

/// The one command ProcessStats runs on a `use_ssh` host at each tick:
/// the uptime, clock ticks and page size, every process's `stat` line,
/// `ps` for the effective user and command line of each (in one
/// process, where reading each `cmdline` would take one per process),
/// and the user names. A process that exits meanwhile only makes `cat`
/// complain.
const REMOTE_SNAPSHOT: &str = "cat /proc/uptime; getconf CLK_TCK; getconf PAGESIZE; \
     echo '@@ductd: /proc/PID/stat@@'; cat /proc/[0-9]*/stat 2>/dev/null; \
     echo '@@ductd: ps pid,euid,args@@'; ps -e -ww -o pid= -o euid= -o args=; \
     echo '@@ductd: /etc/passwd@@'; cat /etc/passwd";

/// The output of [`REMOTE_SNAPSHOT`], parsed.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot<'a> {
    pub uptime: f64,
    pub hz: f64,
    pub page_size: u64,
    /// `stat` lines by pid; a pid seen twice (a command name holding a
    /// newline) is dropped.
    pub stats: Vec<(u32, &'a str)>,
    /// Effective uid and command line (arguments joined by spaces) by pid.
    pub args: HashMap<u32, (u32, &'a str)>,
    pub passwd: &'a str,
}

/// Splits and reads [`REMOTE_SNAPSHOT`]'s output.
pub(crate) fn parse_snapshot(text: &str) -> Result<Snapshot<'_>, ParseError> {
    let (head, rest) = split_at_line(text, STAT_MARK).ok_or(ParseError::Missing(STAT_MARK))?;
    let (stat_part, rest) = split_at_line(rest, PS_MARK).ok_or(ParseError::Missing(PS_MARK))?;
    let (ps_part, passwd) = split_at_line(rest, PASSWD_MARK).ok_or(ParseError::Missing(PASSWD_MARK))?;
    let mut lines = head.lines();
    let uptime = parse_uptime(lines.next().unwrap_or(""))?;
    let mut constant = |what: &'static str| -> Result<u64, ParseError> {
        let line = lines.next().ok_or(ParseError::Missing(what))?;
        number(what, line.trim()).and_then(|n| if n == 0 { Err(ParseError::Missing(what)) } else { Ok(n) })
    };
    let hz = constant("CLK_TCK")? as f64;
    let page_size = constant("PAGESIZE")?;

    let mut stats: Vec<(u32, &str)> = stat_part
        .lines()
        .filter_map(|line| Some((line.split_once(" (")?.0.parse().ok()?, line)))
        .collect();
    stats.sort_unstable_by_key(|(pid, _)| *pid);
    let unique = stats
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|same_pid| same_pid.len() == 1)
        .map(|one| one[0])
        .collect();
    let args = ps_part
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let (pid, rest) = line.split_once(' ')?;
            let rest = rest.trim_start();
            let (euid, args) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((pid.parse().ok()?, (euid.parse().ok()?, args.trim_start())))
        })
        .collect();
    Ok(Snapshot {
        uptime,
        hz,
        page_size,
        stats: unique,
        args,
        passwd,
    })
}

/// The text before and after the line `mark`.
fn split_at_line<'a>(text: &'a str, mark: &str) -> Option<(&'a str, &'a str)> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches('\n') == mark {
            return Some((&text[..at], &text[at + line.len()..]));
        }
        at += line.len();
    }
    None
}

/// The command line `ps` shows, as the NUL-separated one `process_key`
/// reads: `ps` shows an empty one as the name in brackets.
fn ps_cmdline<'a>(args: &'a str, comm: &str) -> &'a str {
    let bracketed = args.strip_prefix('[').and_then(|a| a.strip_suffix(']'));
    if bracketed == Some(comm) {
        ""
    } else {
        args
    }
}

/// ProcessStats on a `use_ssh` host: one [`REMOTE_SNAPSHOT`] per tick,
/// read by the same parsers and summed by the same [`Rates`].
pub(crate) struct RemoteProcessStats {
    host: Host,
    timeout: std::time::Duration,
    rates: Rates,
    key: String,
}

impl RemoteProcessStats {
    pub fn new(host: Host, timeout: std::time::Duration) -> Self {
        RemoteProcessStats {
            host,
            timeout,
            rates: Rates {
                // Until the first snapshot says what the host uses.
                hz: 100.0,
                page_size: 4096,
                previous: HashMap::new(),
                current: HashMap::new(),
            },
            key: String::new(),
        }
    }

    async fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, HostError> {
        let args = ["-c".to_string(), REMOTE_SNAPSHOT.to_string()];
        let out = self
            .host
            .run("sh".as_ref(), &args, &[], self.timeout, super::host::REMOTE_READ_LIMIT)
            .await?;
        let label = self
            .host
            .remote()
            .map(|r| r.connection().target().label())
            .unwrap_or_default();
        let snapshot = parse_snapshot(&out.stdout).map_err(|source| match out.stderr.lines().next() {
            // The command failed before its end: what it said is the cause.
            Some(first) if !out.stdout.contains(PASSWD_MARK) => HostError::Remote(duct_ssh::SshError::Read {
                target: label.clone(),
                path: "/proc".into(),
                reason: first.to_string(),
            }),
            _ => HostError::Parse {
                path: format!("{label}: the process table").into(),
                source,
            },
        })?;
        let tally = self.tally(&snapshot);
        Ok(tally_events(ctx, &tally))
    }

    /// Sums a snapshot, as [`ProcessStats::tick`] sums the files here.
    pub(crate) fn tally(&mut self, snapshot: &Snapshot<'_>) -> Tally {
        self.rates.hz = snapshot.hz;
        self.rates.page_size = snapshot.page_size;
        let names = user_names(snapshot.passwd);
        let mut tally = Tally::default();
        for &(pid, line) in &snapshot.stats {
            let Ok(stat) = parse_pid_stat(line) else {
                continue;
            };
            if !self.rates.counts(&stat, snapshot.uptime) {
                continue;
            }
            // Exited before `ps` ran: left out, as when a file of it
            // cannot be read here.
            let Some(&(euid, args)) = snapshot.args.get(&pid) else {
                continue;
            };
            if !process_key(ps_cmdline(args, stat.comm).as_bytes(), stat.comm, &mut self.key) {
                continue;
            }
            let user = user_name(&names, euid);
            self.rates.add(&mut tally, pid, &stat, snapshot.uptime, &self.key, user);
        }
        self.rates.finish();
        tally
    }
}

impl Source for RemoteProcessStats {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let result = self.tick(ctx).await;
            reported(ctx, result)
        })
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
                state: "R",
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
        let hz = probe.rates.hz as u64;
        let page_mb = probe.rates.page_size as f64 / (1024.0 * 1024.0);
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

    const SNAPSHOT: &str = include_str!("../../tests/fixtures/linux/process-snapshot");

    fn remote_stats() -> RemoteProcessStats {
        // The host is not used by `tally`: the snapshot is given.
        let host = Host::from(&HostPaths::from_vars(|_| None));
        RemoteProcessStats::new(host, std::time::Duration::from_secs(1))
    }

    #[test]
    fn reads_a_captured_remote_snapshot() {
        let s = parse_snapshot(SNAPSHOT).unwrap();
        assert_eq!((s.uptime, s.hz, s.page_size), (22964.13, 100.0, 4096));
        assert_eq!(s.stats.len(), 71);
        assert_eq!(s.args.len(), 72);
        assert_eq!(s.args[&1].0, 0);
        assert!(s.args[&1].1.starts_with("/process_api --firecracker-init"));
        assert_eq!(s.args[&2], (0, "[kthreadd]"));
        assert!(s.passwd.starts_with("root:x:0:0:"));
        // The shell running the snapshot shows the marks in its command
        // line, which is no mark line.
        assert!(s.args.values().any(|(_, a)| a.contains(PS_MARK)));

        let mut src = remote_stats();
        let tally = src.tally(&s);
        let names: Vec<&str> = tally.procs.keys().map(String::as_str).collect();
        // Kernel threads and what started within the last second (the
        // snapshot's own sh, cat and ps) are left out.
        assert_eq!(
            names,
            [
                "bash",
                "line_io_toolsbinary_backend.memfdsealed91",
                "process_api",
                "tmpfznonex86_64unknownlinuxgnureleaseconfig.config"
            ]
        );
        assert_eq!(tally.users.keys().collect::<Vec<_>>(), ["root"]);
    }

    #[test]
    fn remote_snapshots_drop_forged_lines_zombies_and_the_unfinished() {
        let stat = |pid: u32, comm: &str, state: &str| {
            stat_line(pid, comm, 0x400000, 100, 100, 10).replacen(" S ", &format!(" {state} "), 1)
        };
        let text = format!(
            "1000.0 1.0\n100\n4096\n{STAT_MARK}\n{}{}{}{}{}{PS_MARK}\n  7  1000 /bin/app -x\n  8 0 [fake]\n  9 0 [nine]\n 10 0 zombie\n{PASSWD_MARK}\nalice:x:1000:1000::/:/bin/sh\n",
            stat(7, "app", "S"),
            stat(8, "fake", "S").replacen("8 (", "8 (\n8 (", 1),
            stat(9, "nine", "S"),
            stat(10, "zombie", "Z"),
            stat(11, "gone", "S"),
        );
        let s = parse_snapshot(&text).unwrap();
        let pids: Vec<u32> = s.stats.iter().map(|(p, _)| *p).collect();
        assert_eq!(pids, [7, 9, 10, 11], "a pid seen twice is dropped");
        let tally = remote_stats().tally(&s);
        // 8 is dropped, 9 has an empty command line, 10 is a zombie, 11
        // exited before `ps` ran.
        assert_eq!(tally.procs.keys().collect::<Vec<_>>(), ["binapp.app"]);
        assert_eq!(tally.users.keys().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(tally.procs["binapp.app"].age, 999);

        let cut = &text[..text.find(PS_MARK).unwrap()];
        assert_eq!(parse_snapshot(cut), Err(ParseError::Missing(PS_MARK)));
        let bad = text.replacen("\n100\n", "\n0\n", 1);
        assert!(parse_snapshot(&bad).is_err(), "a zero clock rate");
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
