//! The `Source` trait and the context a source works in
//! (docs/writing-sources.md, *Rust sources*).
//!
//! A source is a struct holding whatever state it needs between ticks. The
//! runtime calls [`Source::get`] every interval; listener sources instead
//! start their own tasks in [`Source::start`] and push events with
//! [`SourceContext::queue_back`] whenever input arrives. The context carries
//! Duct's helpers: `create_event`, `create_log`, `queue_back` and `fork`.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::event::{now, Event, EventKind, Metric};
use crate::plan::SourceSettings;
use crate::telemetry::{SourceStatus, Telemetry};

/// A boxed future that may borrow from the source and need not be `Send`:
/// it runs on the arbiter thread that owns the source.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Any error a source reports; it is logged with the source's service name.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// What `get` hands back: zero, one or many events.
pub type Poll<'a> = BoxFuture<'a, Result<Vec<Event>, SourceError>>;

/// How a source wants to be driven once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Call `get` every interval.
    Timer,
    /// The source started its own tasks (a listener); no timer.
    Listener,
}

/// A producer of events.
///
/// Implement `get` for a polling source. Keep state in the struct: the same
/// value is used for every tick until the source is restarted (after a
/// panic, a watchdog timeout, or a configuration change).
pub trait Source: Send + 'static {
    /// How the source is driven; listener sources return
    /// [`Schedule::Listener`] (and `ductd once` skips them).
    fn schedule(&self) -> Schedule {
        Schedule::Timer
    }

    /// Called once when the source's actor starts, on the thread that will
    /// run it. Listener sources bind and spawn their tasks here (with
    /// [`SourceContext::spawn`]); an error is logged and the source is
    /// rebuilt and started again after a backoff.
    fn start(&mut self, _ctx: &SourceContext) -> Result<(), SourceError> {
        Ok(())
    }

    /// One tick: the events observed now. Not called again while a previous
    /// call is still running. Listener sources return no events.
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a>;

    /// True when one tick is not enough to report anything (the first only
    /// primes a rate); `ductd once` then ticks twice.
    fn needs_two_ticks(&self) -> bool {
        false
    }

    /// How long one tick may run before the runtime abandons it:
    /// `configured` (the common `timeout` option, by default the interval).
    /// A source that bounds its own work and reports its own timeouts as
    /// events returns the time it needs instead — the network checks, whose
    /// `timeout` is Duct's per-request or per-packet wait, not a deadline
    /// for the whole tick.
    fn tick_timeout(&self, configured: Duration) -> Duration {
        configured
    }
}

/// Where a source's events go: the router in the agent, a list in
/// `ductd once`.
pub trait EventSink: Send + Sync {
    /// Hands events on without waiting.
    fn publish(&self, events: Vec<Event>);

    /// Hands events on, waiting while the receiver is saturated (listener
    /// sources use this to push back on their clients).
    fn publish_wait(&self, events: Vec<Event>) -> BoxFuture<'static, ()> {
        self.publish(events);
        Box::pin(std::future::ready(()))
    }

    /// Like `publish_wait`, with a `receipt` that every output the events
    /// reach holds until it has kept them (`end_to_end`). A sink without
    /// outputs of its own keeps them once it has them.
    fn publish_held(&self, events: Vec<Event>, receipt: Option<crate::output::Receipt>) -> BoxFuture<'static, ()> {
        drop(receipt);
        self.publish_wait(events)
    }
}

/// The agent's worker threads, as a source sees them: somewhere to run a
/// job so that work spreads over every core (a listener hands each new
/// connection to the next worker). The runtime provides it.
pub trait Workers: Send + Sync {
    /// Runs `job` on the next worker thread, in turn.
    fn run_on_next(&self, job: Box<dyn FnOnce() + Send>);
}

/// A source's view of the agent. Cheap to clone; listener tasks keep a
/// clone each.
#[derive(Clone)]
pub struct SourceContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    settings: Arc<SourceSettings>,
    sink: Arc<dyn EventSink>,
    /// Cancelled when the source stops: listener tasks end with it.
    cancel: CancellationToken,
    /// When the source last produced anything (f64 seconds as bits), for
    /// the watchdog.
    last_event: AtomicU64,
    telemetry: Arc<Telemetry>,
    /// Whether the source works, for the health endpoint: the source actor
    /// writes it after each tick, a source's own tasks (a stream plugin
    /// that keeps exiting) through [`SourceContext::report_problem`]. One
    /// per source, kept across rebuilds.
    status: Arc<SourceStatus>,
    /// Where [`SourceContext::spawn_on_worker`] sends jobs; `None` outside
    /// the agent (tests, `ductd once`): jobs then run on the caller's thread.
    workers: Option<Arc<dyn Workers>>,
    /// A one-off run (`ductd once`) beside the agent: sources that keep
    /// state across restarts (log positions) read it but leave it as the
    /// agent saved it.
    one_off: bool,
}

impl SourceContext {
    pub fn new(settings: Arc<SourceSettings>, sink: Arc<dyn EventSink>, telemetry: Arc<Telemetry>) -> Self {
        let status = SourceStatus::new(settings.service.clone());
        SourceContext {
            inner: Arc::new(ContextInner {
                settings,
                sink,
                cancel: CancellationToken::new(),
                last_event: AtomicU64::new(now().to_bits()),
                telemetry,
                status,
                workers: None,
                one_off: false,
            }),
        }
    }

    /// The same context for a one-off run (`ductd once`): see
    /// [`is_one_off`](Self::is_one_off).
    pub fn one_off(self) -> Self {
        self.copied(self.inner.workers.clone(), true)
    }

    /// Whether this is a one-off run (`ductd once`) rather than the agent:
    /// a source must then not change what the agent resumes from (its
    /// saved state), since an agent may be running beside it.
    pub fn is_one_off(&self) -> bool {
        self.inner.one_off
    }

    /// The same context, with the agent's worker threads to spread jobs on.
    pub fn with_workers(self, workers: Arc<dyn Workers>) -> Self {
        self.copied(Some(workers), self.inner.one_off)
    }

    /// This context (same cancellation, last event time and status) with
    /// other workers or one-off flag.
    fn copied(&self, workers: Option<Arc<dyn Workers>>, one_off: bool) -> Self {
        let inner = &self.inner;
        SourceContext {
            inner: Arc::new(ContextInner {
                settings: inner.settings.clone(),
                sink: inner.sink.clone(),
                cancel: inner.cancel.clone(),
                last_event: AtomicU64::new(inner.last_event.load(Ordering::Relaxed)),
                telemetry: inner.telemetry.clone(),
                status: inner.status.clone(),
                workers,
                one_off,
            }),
        }
    }

    /// A fresh context for a rebuilt source: this one is cancelled (its
    /// tasks end), the new one shares its settings, sink and workers.
    pub fn renewed(&self) -> SourceContext {
        self.cancel();
        let inner = &self.inner;
        SourceContext {
            inner: Arc::new(ContextInner {
                settings: inner.settings.clone(),
                sink: inner.sink.clone(),
                cancel: CancellationToken::new(),
                last_event: AtomicU64::new(now().to_bits()),
                telemetry: inner.telemetry.clone(),
                status: inner.status.clone(),
                workers: inner.workers.clone(),
                one_off: inner.one_off,
            }),
        }
    }

    /// What the health endpoint reports about this source.
    pub fn status(&self) -> &Arc<SourceStatus> {
        &self.inner.status
    }

    /// Says that the source is in trouble outside a tick (a listener's or
    /// a stream plugin's task): the health endpoint lists it as failing
    /// until [`report_working`](Self::report_working) or a good tick.
    pub fn report_problem(&self, why: &str) {
        self.inner.status.failing(why);
    }

    /// The trouble reported with [`report_problem`](Self::report_problem) is over.
    pub fn report_working(&self) {
        self.inner.status.working();
    }

    pub fn settings(&self) -> &SourceSettings {
        &self.inner.settings
    }

    /// The configured service name.
    pub fn service(&self) -> &str {
        &self.inner.settings.service
    }

    /// The agent's counters (the `duct.sources.Duct` source reads them).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.inner.telemetry
    }

    /// An event of this source: its service, host, TTL, tags and
    /// attributes, stamped now. Adjust it with [`Event::prefixed`],
    /// [`Event::on_host`], [`Event::aggregated`] and [`Event::at`].
    pub fn create_event(&self, state: &str, description: impl Into<String>, metric: impl IntoMetric) -> Event {
        let s = &self.inner.settings;
        Event {
            host: s.hostname.clone(),
            service: s.service.clone(),
            state: Some(state.to_string()),
            time: now(),
            description: description.into(),
            metric: metric.into_metric(),
            ttl: s.ttl,
            tags: s.tags.clone(),
            attributes: s.attributes.clone(),
            kind: EventKind::Metric,
            aggregation: None,
        }
    }

    /// Like [`create_event`](Self::create_event) with `.prefix` appended to
    /// the service name (`cpu` → `cpu.user`).
    pub fn create_event_prefixed(
        &self,
        prefix: &str,
        state: &str,
        description: impl Into<String>,
        metric: impl IntoMetric,
    ) -> Event {
        self.create_event(state, description, metric).prefixed(prefix)
    }

    /// A log event (Duct's `createLog`): `evtype` as the service, the text
    /// as the description; metric-only outputs skip it.
    pub fn create_log(&self, evtype: &str, data: impl Into<String>) -> Event {
        let mut ev = self.create_event("", data, 0);
        ev.service = evtype.to_string();
        ev.state = None;
        ev.kind = EventKind::Log;
        ev
    }

    /// Pushes events into the pipeline now (Duct's `queueBack`), from any
    /// task or thread.
    pub fn queue_back(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.mark_alive();
        self.inner.sink.publish(events);
    }

    /// Like [`queue_back`](Self::queue_back), waiting while the pipeline is
    /// saturated.
    pub async fn queue_back_wait(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.mark_alive();
        self.inner.sink.publish_wait(events).await;
    }

    /// Like [`queue_back_wait`](Self::queue_back_wait); the answer says,
    /// once every output the events are routed to has them in its disk
    /// buffer (or delivered), whether all did (true) or any had to give
    /// them up (false).
    pub async fn queue_back_held(&self, events: Vec<Event>) -> tokio::sync::oneshot::Receiver<bool> {
        let (receipt, kept) = crate::output::Receipt::new();
        if !events.is_empty() {
            self.mark_alive();
            self.inner.sink.publish_held(events, Some(receipt)).await;
        }
        kept
    }

    pub(crate) fn mark_alive(&self) {
        self.inner.last_event.store(now().to_bits(), Ordering::Relaxed);
    }

    /// Seconds since the epoch when the source last produced events.
    pub fn last_event_time(&self) -> f64 {
        f64::from_bits(self.inner.last_event.load(Ordering::Relaxed))
    }

    /// Resolves when the source is stopped; listener tasks select on it.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// The source's cancellation token, for tasks and actors that must end
    /// with it (`token.cancelled_owned()` is a `'static` future).
    pub fn cancellation(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Stops the source's tasks (the runtime calls this when the source
    /// stops).
    pub fn cancel(&self) {
        self.inner.cancel.cancel();
    }

    /// Spawns a task on the current thread that ends when the source stops.
    /// Must be called from within the source's thread (in `start` or `get`).
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + 'static,
    {
        let token = self.inner.cancel.clone();
        tokio::task::spawn_local(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Runs `job` on the next of the agent's worker threads (on this thread
    /// outside the agent). A listener hands each connection over this way,
    /// so that its connections use every core; the job may start actors
    /// and call [`spawn`](Self::spawn) there.
    pub fn spawn_on_worker(&self, job: impl FnOnce() + Send + 'static) {
        match &self.inner.workers {
            Some(w) => w.run_on_next(Box::new(job)),
            None => job(),
        }
    }

    /// Runs `executable` with `args`, killing it past `timeout` (Duct's
    /// `fork`).
    pub async fn fork(
        &self,
        executable: impl AsRef<Path>,
        args: &[&str],
        timeout: Duration,
    ) -> Result<ForkOutput, ForkError> {
        fork(executable.as_ref(), args, timeout).await
    }
}

/// What a forked process left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkOutput {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the process was killed by a signal.
    pub code: Option<i32>,
    /// Output beyond the limit was discarded.
    pub truncated: bool,
    /// Processes still holding the output pipes after the process exited
    /// and its group was killed: children that left the group (`setsid`).
    pub survivors: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} took longer than {seconds} s and was killed")]
    Timeout { path: String, seconds: f64 },
    #[error("reading the output of {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A process to run: Duct's `fork` with the knobs exec plugins need.
#[derive(Debug, Clone)]
pub struct ForkRequest<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    /// Added to (not replacing) the agent's environment.
    pub env: &'a [(String, String)],
    /// Killed, and reported as a timeout, past this.
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr; the rest is read and
    /// discarded so the child never blocks on a full pipe.
    pub output_limit: usize,
}

/// The most a forked process may print on each stream by default: a
/// runaway command must not grow the agent without bound.
pub const FORK_OUTPUT_LIMIT: usize = 16 << 20;

/// Runs `executable` with `args`, killing it past `timeout` (Duct's `fork`).
pub async fn fork(executable: &Path, args: &[&str], timeout: Duration) -> Result<ForkOutput, ForkError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run(&ForkRequest {
        program: executable,
        args: &args,
        env: &[],
        timeout,
        output_limit: FORK_OUTPUT_LIMIT,
    })
    .await
}

/// How long the pipes are still read once the process has exited: what it
/// wrote is already in them, and a background child it left holding them
/// must not hold the run up.
pub const PIPE_GRACE: Duration = Duration::from_millis(100);

/// Runs a process with piped stdout/stderr and a deadline, in a process
/// group of its own. The run ends when the process exits, whether or not
/// its pipes are closed: a plugin that leaves a background child holding
/// its stdout (`sleep 300 & echo 7`) still reports its `7`. The group is
/// then killed, taking such children along; processes that escaped it
/// (`setsid`) and still hold the pipes are listed in
/// [`ForkOutput::survivors`]. Past the deadline, or when the caller gives
/// up, the whole group is killed (and the child reaped).
pub async fn run(req: &ForkRequest<'_>) -> Result<ForkOutput, ForkError> {
    let path = req.program.display().to_string();
    let mut child = tokio::process::Command::new(req.program)
        .args(req.args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ForkError::Spawn {
            path: path.clone(),
            source,
        })?;
    let mut group = ProcessGroup::of(&child);
    let exit = ExitWatch::of(&child);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Captured::new(req.output_limit);
    let mut err = Captured::new(req.output_limit);
    let run = async {
        // Both pipes closed (the usual end), or the process exited first.
        {
            let reading = async {
                let (a, b) = tokio::join!(out.read(stdout.as_mut()), err.read(stderr.as_mut()));
                a.and(b)
            };
            tokio::select! {
                read = reading => {
                    read?;
                    exit.wait().await?;
                }
                exited = exit.wait() => exited?,
            }
        }
        drain(&mut out, &mut err, stdout.as_mut(), stderr.as_mut(), PIPE_GRACE).await?;
        // The process is a zombie, not yet reaped: its pid is still the
        // group's id, so this reaches exactly its group.
        group.kill();
        let mut survivors = Vec::new();
        if !(out.closed && err.closed) {
            drain(&mut out, &mut err, stdout.as_mut(), stderr.as_mut(), PIPE_GRACE).await?;
            if !(out.closed && err.closed) {
                let pipes = [
                    stdout.as_ref().map(AsRawFd::as_raw_fd),
                    stderr.as_ref().map(AsRawFd::as_raw_fd),
                ];
                survivors = pipe_holders(&pipes.into_iter().flatten().collect::<Vec<_>>());
            }
        }
        let status = child.wait().await?;
        group.reaped();
        Ok::<_, std::io::Error>((status, survivors))
    };
    let result = tokio::time::timeout(req.timeout, run).await;
    match result {
        Ok(Ok((status, survivors))) => Ok(ForkOutput {
            stdout: String::from_utf8_lossy(&out.kept).into_owned(),
            stderr: String::from_utf8_lossy(&err.kept).into_owned(),
            code: status.code(),
            truncated: out.truncated || err.truncated,
            survivors,
        }),
        Ok(Err(source)) => Err(ForkError::Io { path, source }),
        Err(_) => Err(ForkError::Timeout {
            path,
            seconds: req.timeout.as_secs_f64(),
        }),
    }
}

/// Reads both pipes until they close or `within` passes, keeping what was
/// read either way.
async fn drain<O, E>(
    out: &mut Captured,
    err: &mut Captured,
    o: Option<&mut O>,
    e: Option<&mut E>,
    within: Duration,
) -> std::io::Result<()>
where
    O: tokio::io::AsyncRead + Unpin,
    E: tokio::io::AsyncRead + Unpin,
{
    let both = async {
        let (a, b) = tokio::join!(out.read(o), err.read(e));
        a.and(b)
    };
    tokio::time::timeout(within, both).await.unwrap_or(Ok(()))
}

/// Kills a child's whole process group when dropped before the child was
/// reaped: a plugin that is a shell script leaves its own children behind
/// otherwise (`kill_on_drop` only reaches the shell).
pub struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    /// Guards a child spawned with `process_group(0)`.
    pub fn of(child: &tokio::process::Child) -> Self {
        ProcessGroup(child.id().and_then(|id| i32::try_from(id).ok()))
    }

    /// The child exited and was waited for: nothing to kill.
    pub fn reaped(&mut self) {
        self.0 = None;
    }

    /// Kills every process of the group now. Call it only while the child
    /// is running or a zombie (not yet reaped).
    pub fn kill(&self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the group this
            // child leads; the child has not been reaped, so its pid (and
            // group id) cannot have been reused.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Notices that a child exited without reaping it (a pidfd becomes
/// readable; where the kernel has none, `waitid` with `WNOWAIT` is asked
/// every few milliseconds), so that its group can still be killed safely.
pub struct ExitWatch {
    pid: libc::pid_t,
    pidfd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl ExitWatch {
    /// Watches `child`, which must not have been waited for yet.
    pub fn of(child: &tokio::process::Child) -> Self {
        let pid = child.id().and_then(|id| libc::pid_t::try_from(id).ok()).unwrap_or(0);
        // SAFETY: pidfd_open takes a pid and flags and returns a new file
        // descriptor, or -1; nothing else is touched.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = i32::try_from(fd).ok().filter(|&fd| fd >= 0).and_then(|fd| {
            // SAFETY: `fd` was just returned by pidfd_open and is owned by
            // nothing else.
            let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // SAFETY: the AsyncFd owns the descriptor, which stays open and
            // the same until it is dropped.
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }.ok()
        });
        ExitWatch { pid, pidfd }
    }

    /// Resolves once the child has exited (it stays a zombie until waited).
    pub async fn wait(&self) -> std::io::Result<()> {
        if let Some(fd) = &self.pidfd {
            let _ready = fd.readable().await?;
            return Ok(());
        }
        while !self.exited() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn exited(&self) -> bool {
        // SAFETY: waitid fills `info` (zeroed, a plain C struct) and, with
        // WNOWAIT, leaves the child waitable.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            // An error (no such child) also means there is nothing to wait for.
            r != 0 || info.si_pid() != 0
        }
    }
}

/// One pipe's output, kept up to a limit; what was read survives the read
/// being abandoned.
struct Captured {
    kept: Vec<u8>,
    limit: usize,
    truncated: bool,
    /// The other end is closed: everything has been read.
    closed: bool,
}

impl Captured {
    fn new(limit: usize) -> Self {
        Captured {
            kept: Vec::new(),
            limit,
            truncated: false,
            closed: false,
        }
    }

    /// Reads `reader` to its end (or until dropped), keeping at most the
    /// limit and discarding the rest so the writer never blocks.
    async fn read<R: tokio::io::AsyncRead + Unpin>(&mut self, reader: Option<&mut R>) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;
        let Some(reader) = reader else {
            self.closed = true;
            return Ok(());
        };
        let mut buf = [0u8; 16 << 10];
        while !self.closed {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                self.closed = true;
                break;
            }
            let room = self.limit.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&buf[..n.min(room)]);
            self.truncated |= n > room;
        }
        Ok(())
    }
}

/// The processes, other than this one, holding the far ends of `pipes` (our
/// read ends) open: children that left their process group.
fn pipe_holders(pipes: &[std::os::fd::RawFd]) -> Vec<u32> {
    let inodes: Vec<std::path::PathBuf> = pipes
        .iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .collect();
    let me = std::process::id();
    let mut holders = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| inodes.contains(&target)))
        {
            holders.push(pid);
        }
    }
    holders.sort_unstable();
    holders
}

/// Values a source can give as a metric: numbers, or `None` for none.
pub trait IntoMetric {
    fn into_metric(self) -> Option<Metric>;
}

macro_rules! into_metric {
    ($($t:ty),*) => {$(
        impl IntoMetric for $t {
            fn into_metric(self) -> Option<Metric> {
                Some(Metric::from(self))
            }
        }
    )*};
}

into_metric!(i32, i64, u32, u64, usize, f32, f64, Metric);

impl<T: IntoMetric> IntoMetric for Option<T> {
    fn into_metric(self) -> Option<Metric> {
        self.and_then(IntoMetric::into_metric)
    }
}

impl Event {
    /// Appends `.prefix` to the service name.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.service.push('.');
            self.service.push_str(prefix);
        }
        self
    }

    /// Reports the event for another host.
    pub fn on_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Marks the metric as a counter for the router to turn into a rate.
    pub fn aggregated(mut self, aggregation: crate::event::Aggregation) -> Self {
        self.aggregation = Some(aggregation);
        self
    }

    /// Sets the event's time (seconds since the epoch).
    pub fn at(mut self, time: f64) -> Self {
        self.time = time;
        self
    }
}

/// The text of a panic payload (a source, an output or a kind's
/// constructor that panicked).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fork_captures_output_and_exit_code() {
        let out = fork(
            Path::new("/bin/sh"),
            &["-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.code, Some(3));
    }

    #[tokio::test]
    async fn fork_kills_a_process_past_its_deadline() {
        let started = std::time::Instant::now();
        let err = fork(Path::new("/bin/sleep"), &["30"], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ForkError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn fork_caps_output_and_keeps_reading() {
        let args = vec!["-c".to_string(), "head -c 300000 /dev/zero; echo done >&2".to_string()];
        let out = run(&ForkRequest {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &[("DUCT_FORK_TEST".into(), "1".into())],
            timeout: Duration::from_secs(5),
            output_limit: 1000,
        })
        .await
        .unwrap();
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.truncated);
        assert_eq!(out.stderr, "done\n");
        assert_eq!(out.code, Some(0));
    }

    #[tokio::test]
    async fn fork_passes_environment_additions() {
        let args = vec!["-c".to_string(), "echo $DUCT_FORK_TEST-$HOME".to_string()];
        let out = run(&ForkRequest {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &[("DUCT_FORK_TEST".into(), "set".into())],
            timeout: Duration::from_secs(5),
            output_limit: 1000,
        })
        .await
        .unwrap();
        assert!(out.stdout.starts_with("set-"), "{}", out.stdout);
        assert!(out.stdout.trim().len() > 4, "the agent's own environment is kept");
    }

    #[tokio::test]
    async fn a_background_child_holding_stdout_does_not_hold_the_run() {
        let secs = format!("310.{}", std::process::id());
        let args = vec!["-c".to_string(), format!("sleep {secs} & echo 7")];
        let started = std::time::Instant::now();
        let out = run(&ForkRequest {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &[],
            timeout: Duration::from_secs(20),
            output_limit: 1000,
        })
        .await
        .expect("the run ends when the plugin exits");
        assert_eq!(out.stdout, "7\n");
        assert_eq!(out.code, Some(0));
        assert!(out.survivors.is_empty(), "{:?}", out.survivors);
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {secs}")])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "the group was killed with the plugin's exit");
    }

    #[tokio::test]
    async fn an_exit_is_noticed_without_reaping_with_or_without_a_pidfd() {
        for with_pidfd in [true, false] {
            let mut child = tokio::process::Command::new("/bin/sh")
                .args(["-c", "exit 4"])
                .spawn()
                .unwrap();
            let mut watch = ExitWatch::of(&child);
            if !with_pidfd {
                watch.pidfd = None;
            }
            tokio::time::timeout(Duration::from_secs(10), watch.wait())
                .await
                .expect("noticed")
                .unwrap();
            // Still a zombie: its status is there to be taken.
            assert_eq!(child.wait().await.unwrap().code(), Some(4));
        }
    }

    #[tokio::test]
    async fn children_that_left_the_group_are_reported() {
        let secs = format!("320.{}", std::process::id());
        let args = vec!["-c".to_string(), format!("setsid sleep {secs} & echo 7")];
        let out = run(&ForkRequest {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &[],
            timeout: Duration::from_secs(20),
            output_limit: 1000,
        })
        .await
        .unwrap();
        let left = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {secs}")])
            .output()
            .unwrap();
        let pids: Vec<u32> = String::from_utf8_lossy(&left.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        for pid in &pids {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
        assert_eq!(out.stdout, "7\n");
        assert_eq!(out.survivors, pids, "the escaped child is named");
        assert_eq!(pids.len(), 1);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_plugins_children_too() {
        // A duration no other process uses, to find the orphan by.
        let secs = format!("300.{}", std::process::id());
        let args = vec!["-c".to_string(), format!("sleep {secs} & exec sleep 301")];
        let err = run(&ForkRequest {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &[],
            timeout: Duration::from_millis(300),
            output_limit: 1000,
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ForkError::Timeout { .. }));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {secs}")])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "the backgrounded child survived the timeout");
    }

    #[tokio::test]
    async fn fork_reports_a_missing_executable() {
        let err = fork(Path::new("/no/such/binary"), &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ForkError::Spawn { .. }));
        assert!(err.to_string().contains("/no/such/binary"));
    }
}
