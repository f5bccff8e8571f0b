//! One SSH session per target, shared by every source of that host and
//! login, each command on a channel of its own.
//!
//! The session is opened on first use and again whenever it has dropped;
//! while opening keeps failing, attempts are spaced by a backoff (1 s,
//! doubling up to [`BACKOFF_MAX`]) and commands fail at once with the last
//! cause. A refused host key is one such failure: logged as an error at
//! most every [`LOG_EVERY`], reported by the sources as a critical event.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use duct_core::throttle::Throttle;
use duct_core::ForkOutput;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PublicKey, PublicKeyOrCertificate};
use russh::ChannelMsg;

use crate::known_hosts::{self, KnownHosts, Verdict};
use crate::{auth, runtime, SshError, SshTarget};

/// Longest wait between two attempts to reach a host that is down.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A repeating fault of one connection is logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(300);

/// Commands one connection runs at once. One: with several channels open
/// at once on each of twenty sessions, russh 0.65 was seen to leave some
/// channels without their data (the server had sent it and closed them),
/// so the commands of a host take turns. A host's reads are a few
/// milliseconds each; one command that hangs holds the others up to its
/// timeout at most. Also well below OpenSSH's `MaxSessions` (10).
pub const MAX_CHANNELS: usize = 1;

/// Keepalives find a dead peer (a host that vanished without closing the
/// TCP connection) within about a minute.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Longest wait for a host to complete the handshake and the login: a
/// port that accepts and then says nothing (a dying sshd, a black hole
/// behind a load balancer) fails the attempt, which starts the backoff,
/// rather than holding every tick of the host to its whole timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared connection of `target`: the same for every caller with an
/// equal target while any of them holds it.
pub fn connection(target: &Arc<SshTarget>) -> Arc<Connection> {
    static POOL: OnceLock<Mutex<HashMap<SshTarget, Weak<Connection>>>> = OnceLock::new();
    let pool = POOL.get_or_init(Mutex::default);
    // A poisoned pool only means a panic elsewhere while it was held; the
    // map itself is always whole.
    let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(live) = pool.get(target.as_ref()).and_then(Weak::upgrade) {
        return live;
    }
    pool.retain(|_, c| c.strong_count() > 0);
    let conn = Arc::new(Connection::new(target.clone()));
    pool.insert(SshTarget::clone(target), Arc::downgrade(&conn));
    conn
}

/// A shared SSH connection to one host as one user.
pub struct Connection {
    target: Arc<SshTarget>,
    /// `user@host:port`, for messages.
    label: String,
    /// The session and the history of attempts; held while opening, so
    /// that sources starting together open one session, not one each.
    state: tokio::sync::Mutex<State>,
    /// Connection faults repeat every tick of every source of the host.
    log: Mutex<Throttle>,
    /// Sessions opened so far.
    opened: AtomicU64,
    /// Commands running at once on the session, at most
    /// [`MAX_CHANNELS`]; the rest wait their turn.
    channels: tokio::sync::Semaphore,
}

#[derive(Default)]
struct State {
    session: Option<Arc<Handle<Client>>>,
    /// The decoded private key (`None` inside: no key configured), kept
    /// across reconnects: decrypting it is a key derivation.
    key: Option<Option<Arc<PrivateKey>>>,
    /// Failed attempts in a row.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<SshError>,
}

impl Connection {
    fn new(target: Arc<SshTarget>) -> Self {
        Connection {
            label: target.label(),
            target,
            state: tokio::sync::Mutex::default(),
            log: Mutex::default(),
            opened: AtomicU64::new(0),
            channels: tokio::sync::Semaphore::new(MAX_CHANNELS),
        }
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// How many sessions this connection has opened (1 while the host
    /// stayed reachable).
    pub fn sessions_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Runs `command` through the remote user's shell, within `timeout`
    /// (connecting included), keeping at most `limit` bytes of each of
    /// stdout and stderr. The exit status is in [`ForkOutput::code`]
    /// (`None` when the command was killed by a signal).
    pub async fn exec(
        self: &Arc<Self>,
        command: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<ForkOutput, SshError> {
        self.exec_with_input(command, Vec::new(), timeout, limit).await
    }

    /// [`Connection::exec`] with `input` as the command's standard input
    /// (then end of file): for what must not appear on a command line,
    /// which every user of the remote host can read.
    pub async fn exec_with_input(
        self: &Arc<Self>,
        command: &str,
        input: Vec<u8>,
        timeout: Duration,
        limit: usize,
    ) -> Result<ForkOutput, SshError> {
        let me = self.clone();
        let command = command.to_string();
        let label = self.label.clone();
        let work = runtime::spawn(async move { me.exec_here(&command, &input, timeout, limit).await });
        work.await.unwrap_or_else(|join| {
            Err(SshError::Connect {
                target: label,
                reason: format!("the SSH task failed: {join}"),
            })
        })
    }

    /// The content of the remote file `path` (`cat`), at most `limit` bytes.
    pub async fn read_file(self: &Arc<Self>, path: &str, timeout: Duration, limit: usize) -> Result<String, SshError> {
        let out = self
            .exec(&crate::command_line("cat", &["--", path]), timeout, limit)
            .await?;
        if out.code != Some(0) {
            return Err(SshError::Read {
                target: self.label.clone(),
                path: path.to_string(),
                reason: remote_complaint(&out),
            });
        }
        Ok(out.stdout)
    }

    async fn exec_here(
        &self,
        command: &str,
        input: &[u8],
        timeout: Duration,
        limit: usize,
    ) -> Result<ForkOutput, SshError> {
        let deadline = Instant::now() + timeout;
        let run = async {
            // Never closed, so acquiring cannot fail.
            let _turn = self.channels.acquire().await;
            let session = self.session(deadline).await?;
            match run_command(&session, command, input, limit).await {
                // The session died since it was last used (the host
                // restarted its sshd): open another at once, once.
                Err(Run::Open(_)) => {
                    self.forget(&session).await;
                    let session = self.session(deadline).await?;
                    run_command(&session, command, input, limit)
                        .await
                        .map_err(|e| e.into_error(&self.label, command))
                }
                other => other.map_err(|e| e.into_error(&self.label, command)),
            }
        };
        tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| {
            Err(SshError::Timeout {
                target: self.label.clone(),
                command: command.to_string(),
                seconds: timeout.as_secs_f64(),
            })
        })
    }

    /// Drops `dead` if it is still the current session.
    async fn forget(&self, dead: &Arc<Handle<Client>>) {
        let mut state = self.state.lock().await;
        if state.session.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            state.session = None;
        }
    }

    /// The live session, opened now if there is none and no backoff holds;
    /// opening gives up at `deadline` or after [`CONNECT_TIMEOUT`].
    async fn session(&self, deadline: Instant) -> Result<Arc<Handle<Client>>, SshError> {
        let mut state = self.state.lock().await;
        if let Some(s) = &state.session {
            if !s.is_closed() {
                return Ok(s.clone());
            }
            state.session = None;
            tracing::info!(ssh = %self.label, "SSH connection closed; connecting again");
        }
        if let (Some(at), Some(last)) = (state.retry_at, &state.last_error) {
            let now = Instant::now();
            if now < at {
                return Err(SshError::Backoff {
                    last: Box::new(last.clone()),
                    retry_in: (at - now).as_secs_f64(),
                });
            }
        }
        let wait = CONNECT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        let opened = tokio::time::timeout(wait, self.open(&mut state))
            .await
            .unwrap_or_else(|_| {
                Err(SshError::Connect {
                    target: self.label.clone(),
                    reason: format!(
                        "the SSH handshake and login did not finish within {:.1} s",
                        wait.as_secs_f64()
                    ),
                })
            });
        match opened {
            Ok(handle) => {
                let handle = Arc::new(handle);
                if state.failures > 0 {
                    tracing::info!(ssh = %self.label, "SSH connection works again");
                    self.log_lock().reset();
                }
                self.opened.fetch_add(1, Ordering::Relaxed);
                state.session = Some(handle.clone());
                state.failures = 0;
                state.retry_at = None;
                state.last_error = None;
                Ok(handle)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let wait = backoff(state.failures);
                state.retry_at = Some(Instant::now() + wait);
                state.last_error = Some(e.clone());
                self.log_fault(&e, wait);
                Err(e)
            }
        }
    }

    async fn open(&self, state: &mut State) -> Result<Handle<Client>, SshError> {
        let t = &self.target;
        let known = known_hosts::read(&t.knownhosts_file).map_err(|e| SshError::HostKey {
            target: self.label.clone(),
            reason: format!("cannot read ssh_knownhosts_file {}: {e}", t.knownhosts_file.display()),
        })?;
        for (line, why) in &known.problems {
            tracing::warn!(ssh = %self.label, "{}:{line}: line skipped: {why}", t.knownhosts_file.display());
        }
        let key = match &state.key {
            Some(k) => k.clone(),
            None => {
                let k = auth::load_key(t).await?;
                state.key = Some(k.clone());
                k
            }
        };
        let config = Arc::new(client::Config {
            preferred: preferred_for(&known, t),
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: 3,
            nodelay: true,
            ..client::Config::default()
        });
        let handler = Client {
            target: t.clone(),
            label: self.label.clone(),
            known,
        };
        let mut handle = client::connect(config, (t.host.as_str(), t.port), handler)
            .await
            .map_err(|e| e.for_target(&self.label))?;
        auth::authenticate(&mut handle, t, key).await?;
        Ok(handle)
    }

    fn log_lock(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_fault(&self, e: &SshError, wait: Duration) {
        let Some(held_back) = self.log_lock().allow(LOG_EVERY) else {
            return;
        };
        let more = if held_back > 0 {
            format!(" ({held_back} more failures since the last report)")
        } else {
            String::new()
        };
        let retry = wait.as_secs_f64();
        if e.is_host_key() {
            tracing::error!(ssh = %self.label, "{e}{more}; retrying in {retry:.0} s");
        } else {
            tracing::warn!(ssh = %self.label, "{e}{more}; retrying in {retry:.0} s");
        }
    }
}

/// The wait after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(BACKOFF_MAX)
}

/// The algorithms to ask for: the host's known key types first, so that
/// the server presents a key the file can vouch for.
fn preferred_for(known: &KnownHosts, t: &SshTarget) -> russh::Preferred {
    let mut preferred = russh::Preferred::default();
    let mut keys = known.algorithms_for(&t.host, t.port);
    if !keys.is_empty() {
        for a in preferred.key.iter() {
            if !keys.contains(a) {
                keys.push(a.clone());
            }
        }
        preferred.key = Cow::Owned(keys);
    }
    preferred
}

/// The first line of a failed remote command's complaint.
fn remote_complaint(out: &ForkOutput) -> String {
    let line = out.stderr.lines().map(str::trim).find(|l| !l.is_empty());
    match (line, out.code) {
        (Some(l), _) => l.to_string(),
        (None, Some(c)) => format!("exit status {c}"),
        (None, None) => "killed by a signal".into(),
    }
}

/// Why running a command failed: opening its channel (the session may be
/// dead), or later.
enum Run {
    Open(russh::Error),
    Other(String),
}

impl Run {
    fn into_error(self, label: &str, command: &str) -> SshError {
        let reason = match self {
            Run::Open(e) => format!("cannot open a channel: {e}"),
            Run::Other(r) => r,
        };
        SshError::Channel {
            target: label.to_string(),
            command: command.to_string(),
            reason,
        }
    }
}

/// Runs one command on a new channel of `session`, reading its output to
/// the end and keeping at most `limit` bytes of each stream.
async fn run_command(session: &Handle<Client>, command: &str, input: &[u8], limit: usize) -> Result<ForkOutput, Run> {
    let mut channel = session.channel_open_session().await.map_err(Run::Open)?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| Run::Other(e.to_string()))?;
    // The input, then end of file: a command that reads its standard
    // input gets what it was given, never waits for more.
    if !input.is_empty() {
        channel.data(input).await.map_err(|e| Run::Other(e.to_string()))?;
    }
    channel.eof().await.map_err(|e| Run::Other(e.to_string()))?;
    let mut out = Kept::new(limit);
    let mut err = Kept::new(limit);
    let mut code = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.push(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => err.push(&data),
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            ChannelMsg::Failure => return Err(Run::Other("the server refused to run it".into())),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(ForkOutput {
        truncated: out.truncated || err.truncated,
        stdout: String::from_utf8_lossy(&out.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&err.bytes).into_owned(),
        code: code.and_then(|c| i32::try_from(c).ok()),
        survivors: Vec::new(),
    })
}

/// One stream's output up to a limit; the rest is read and dropped so the
/// channel's window keeps moving.
struct Kept {
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Kept {
    fn new(limit: usize) -> Self {
        Kept {
            bytes: Vec::new(),
            limit,
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= data.len() > room;
    }
}

/// The session's handler: checks the host key against the known hosts.
pub(crate) struct Client {
    target: Arc<SshTarget>,
    label: String,
    known: KnownHosts,
}

impl Client {
    fn verify(&self, key: &PublicKey) -> Result<bool, SshError> {
        let t = &self.target;
        let file = t.knownhosts_file.display();
        let what = format!("{} key {}", key.algorithm(), key.fingerprint(HashAlg::Sha256));
        let refuse = |reason: String| {
            Err(SshError::HostKey {
                target: self.label.clone(),
                reason,
            })
        };
        let name = known_hosts::lookup_name(&t.host, t.port);
        match self.known.check(&t.host, t.port, key) {
            Verdict::Trusted { .. } => Ok(true),
            Verdict::Revoked { line } => refuse(format!("its {what} is marked @revoked in {file}:{line}")),
            Verdict::Changed { lines } => {
                let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
                refuse(format!(
                    "HOST KEY CHANGED: it presented the {what}, but {file} (lines {}) lists other keys for `{name}`: \
                     someone may be intercepting the connection; if the host's key was changed on purpose, \
                     remove the old entry (ssh-keygen -R '{name}' -f {file})",
                    lines.join(", ")
                ))
            }
            Verdict::Unknown if t.accept_new => {
                known_hosts::append(&t.knownhosts_file, &t.host, t.port, key).map_err(|e| SshError::HostKey {
                    target: self.label.clone(),
                    reason: format!("cannot record its {what} in {file}: {e}"),
                })?;
                tracing::warn!(ssh = %self.label, "new host: recorded its {what} in {file} (ssh_accept_new)");
                Ok(true)
            }
            Verdict::Unknown => refuse(format!(
                "`{name}` is not in {file}, so its {what} cannot be verified; add the host's key \
                 (ssh-keyscan -p {port} {host} >> {file}, after checking the fingerprint) \
                 or set ssh_accept_new: true to record it on first contact",
                port = t.port,
                host = t.host
            )),
        }
    }
}

impl client::Handler for Client {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.verify(key),
            PublicKeyOrCertificate::Certificate(_) => Err(SshError::HostKey {
                target: self.label.clone(),
                reason: "it presented a host certificate, which ductd does not verify".into(),
            }),
        }
    }
}

impl From<russh::Error> for SshError {
    /// A protocol or I/O failure while connecting; the target is filled
    /// in by [`SshError::for_target`].
    fn from(e: russh::Error) -> Self {
        SshError::Connect {
            target: String::new(),
            reason: e.to_string(),
        }
    }
}

impl SshError {
    fn for_target(self, label: &str) -> SshError {
        match self {
            SshError::Connect { target, reason } if target.is_empty() => SshError::Connect {
                target: label.to_string(),
                reason,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn output_beyond_the_limit_is_dropped_and_flagged() {
        let mut k = Kept::new(5);
        k.push(b"abc");
        k.push(b"defg");
        k.push(b"h");
        assert_eq!(k.bytes, b"abcde");
        assert!(k.truncated);
    }

    #[test]
    fn equal_targets_share_one_connection() {
        let target = |host: &str, password: Option<&str>| {
            Arc::new(SshTarget {
                host: host.into(),
                port: 22,
                username: Some("u".into()),
                key: None,
                keyfile: None,
                keypass: None,
                password: password.map(Into::into),
                knownhosts_file: "/nonexistent".into(),
                accept_new: false,
            })
        };
        let a = connection(&target("h", None));
        let b = connection(&target("h", None));
        assert!(Arc::ptr_eq(&a, &b));
        let other_login = connection(&target("h", Some("pw")));
        assert!(!Arc::ptr_eq(&a, &other_login), "other credentials, other connection");
        assert!(!Arc::ptr_eq(&a, &connection(&target("h2", None))));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "the pool does not keep connections alive");
    }
}
