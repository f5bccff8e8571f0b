//! The options every source (and every output) has, read with serde, and
//! what they resolve to.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::field_names;

/// A source's resolved common options.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub service: String,
    /// The `source:` name as written.
    pub source: String,
    /// Position among all sources (after blueprint expansion).
    pub index: usize,
    /// Seconds between ticks.
    pub interval: f64,
    pub ttl: f32,
    pub hostname: String,
    pub tags: Vec<String>,
    pub attributes: Vec<(String, String)>,
    /// Log every tick's events.
    pub debug: bool,
    /// Recreate the source when it has produced nothing for 10 intervals.
    pub watchdog: bool,
    /// Seconds before the first tick; `None` uses the stagger rule.
    pub start_delay: Option<f64>,
    /// Seconds a tick may take before it is abandoned.
    pub timeout: f64,
    /// Extra directory to look for exec plugins in.
    pub path: Option<PathBuf>,
    /// Shared by every source of a configuration.
    pub base_path: Arc<std::path::Path>,
    /// `use_ssh: true`: the host the source observes over SSH instead of
    /// this one (docs/remote-checks.md).
    pub remote: Option<Arc<SshTarget>>,
}

/// Where and as whom a `use_ssh` source logs in: `ssh_host` and the
/// source's `ssh_*` options over the global ones. Equal targets share one
/// SSH connection, so every field that changes the login is part of it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    /// `ssh_host`: a name or an address.
    pub host: String,
    /// `ssh_port` (22).
    pub port: u16,
    /// `ssh_username`; `None` logs in as the user ductd runs as, as
    /// OpenSSH does.
    pub username: Option<String>,
    /// `ssh_key`: a private key written inline (OpenSSH or PEM text).
    pub key: Option<String>,
    /// `ssh_keyfile`: a private key file.
    pub keyfile: Option<PathBuf>,
    /// `ssh_keypass`: the passphrase of an encrypted key.
    pub keypass: Option<String>,
    /// `ssh_password`.
    pub password: Option<String>,
    /// `ssh_knownhosts_file`: the host keys trusted (OpenSSH format).
    pub knownhosts_file: PathBuf,
    /// `ssh_accept_new`: record the key of a host not yet in the file
    /// (OpenSSH's `StrictHostKeyChecking accept-new`) instead of refusing.
    pub accept_new: bool,
}

impl SshTarget {
    /// `user@host:port` for logs and events (no secrets).
    pub fn label(&self) -> String {
        match &self.username {
            Some(u) => format!("{u}@{}:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Secrets stay out of logs and `{:?}`.
impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: bool| if o { "set" } else { "unset" };
        f.debug_struct("SshTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("key", &set(self.key.is_some()))
            .field("keyfile", &self.keyfile)
            .field("keypass", &set(self.keypass.is_some()))
            .field("password", &set(self.password.is_some()))
            .field("knownhosts_file", &self.knownhosts_file)
            .field("accept_new", &self.accept_new)
            .finish()
    }
}

impl SourceSettings {
    /// Seconds before the first tick: `start_delay`, else
    /// `(index × stagger) mod interval` so that start-up is spread out but
    /// no source waits longer than one interval.
    pub fn first_tick_delay(&self, stagger: f64) -> f64 {
        match self.start_delay {
            Some(d) => d,
            None => stagger_offset(self.index, stagger, self.interval),
        }
    }

    /// Settings for a source made outside any configuration (tests, the
    /// examples' own harness).
    pub fn for_service(service: &str, hostname: &str) -> Self {
        SourceSettings {
            service: service.to_string(),
            source: String::new(),
            index: 0,
            interval: 60.0,
            ttl: 60.0,
            hostname: hostname.to_string(),
            tags: Vec::new(),
            attributes: Vec::new(),
            debug: false,
            watchdog: false,
            start_delay: None,
            timeout: 60.0,
            path: None,
            base_path: Arc::from(std::path::Path::new("/var/lib/duct")),
            remote: None,
        }
    }
}

/// The stagger rule (docs/configuration.md, *Start-up*).
pub fn stagger_offset(index: usize, stagger: f64, interval: f64) -> f64 {
    if interval <= 0.0 || stagger <= 0.0 {
        return 0.0;
    }
    (index as f64 * stagger) % interval
}

/// An output's resolved common options.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// The `output:` name as written.
    pub output: String,
    /// The routing name, if any.
    pub name: Option<String>,
    /// What logs and the agent's own metrics call it: the name, else the
    /// class name and position (`Logger#1`).
    pub label: String,
    pub index: usize,
    pub context: String,
    /// Seconds between flushes.
    pub interval: f64,
    /// Most events queued; beyond it the oldest are dropped.
    pub maxsize: usize,
    /// Most events per second delivered (0 = no limit).
    pub maxrate: f64,
    /// Drop queued events older than their TTL.
    pub expire: bool,
    /// Send events that have no metric.
    pub allow_nan: bool,
    pub debug: bool,
    /// Most events handed to the transport in one `send`.
    pub batch: usize,
    /// Queued events above which listener sources wait before taking more
    /// input, while the output is delivering; 0: never (see
    /// [`crate::telemetry::Backlog`]).
    pub pushback: usize,
    /// Longest wait between retries of a failing destination (s).
    pub backoff_max: f64,
    /// What listener sources do while the queue is past `pushback`.
    pub when_full: WhenFull,
    /// Log events are not queued (Riemann and other metric stores).
    pub metrics_only: bool,
    /// Where the queue lives: in memory, or backed by segment files.
    pub buffer: Buffer,
}

/// `buffer`: where an output's queue is kept (docs/durability.md).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Buffer {
    /// In memory only: lost if the agent is killed.
    #[default]
    Memory,
    /// Written to segment files in a directory before the output reads
    /// them; kept across a crash.
    Disk(DiskBufferSettings),
}

/// A disk buffer's resolved options.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskBufferSettings {
    /// The directory of segment files, this output's alone.
    pub path: PathBuf,
    /// Most bytes of segment files; past it the oldest segment is dropped.
    pub max_bytes: u64,
    /// Seconds between `fdatasync`s of what was written.
    pub sync_interval: f64,
}

/// `buffer:` as written (unknown keys are found from its node).
#[derive(Debug, Deserialize)]
pub(super) struct BufferOptions {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) path: Option<String>,
    pub(super) max_bytes: Option<u64>,
    pub(super) sync_interval: Option<f64>,
}

/// `when_full`: what an output past its `pushback` asks of the listener
/// sources that feed it (docs/configuration.md, "Output blocks").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Listeners wait, however long the destination is down: their
    /// clients are slowed down and nothing they send is dropped.
    #[default]
    Block,
    /// Duct's behaviour: listeners wait at most a second per message, and
    /// not at all while the destination fails; the queue then absorbs up
    /// to `maxsize` and drops the oldest.
    DropOldest,
}

impl WhenFull {
    /// The option's value as written.
    pub fn parse(text: &str) -> Option<WhenFull> {
        match text {
            "block" => Some(WhenFull::Block),
            "drop_oldest" => Some(WhenFull::DropOldest),
            _ => None,
        }
    }
}

/// Common source options read with serde; `route`, `critical`, `warning`
/// and `attributes` are read from their nodes to keep positions.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CommonSourceOptions {
    pub(super) service: String,
    pub(super) source: String,
    pub(super) interval: Option<f64>,
    pub(super) ttl: Option<f64>,
    pub(super) hostname: Option<String>,
    pub(super) tags: Option<StringList>,
    pub(super) debug: Option<bool>,
    pub(super) watchdog: Option<bool>,
    pub(super) start_delay: Option<f64>,
    pub(super) timeout: Option<f64>,
    pub(super) path: Option<String>,
    pub(super) use_ssh: Option<bool>,
    pub(super) ssh_host: Option<String>,
    pub(super) ssh_username: Option<String>,
    pub(super) ssh_key: Option<String>,
    pub(super) ssh_keyfile: Option<String>,
    pub(super) ssh_keypass: Option<String>,
    pub(super) ssh_password: Option<String>,
    pub(super) ssh_port: Option<u16>,
    pub(super) ssh_knownhosts_file: Option<String>,
    pub(super) ssh_accept_new: Option<bool>,
}

/// Read from their nodes to keep positions.
const SOURCE_NODE_KEYS: &[&str] = &["route", "critical", "warning", "attributes"];

#[derive(Debug, Default, Deserialize)]
pub(super) struct CommonOutputOptions {
    pub(super) output: String,
    pub(super) name: Option<String>,
    pub(super) interval: Option<f64>,
    pub(super) maxsize: Option<usize>,
    pub(super) maxrate: Option<f64>,
    pub(super) expire: Option<bool>,
    pub(super) allow_nan: Option<bool>,
    pub(super) debug: Option<bool>,
    pub(super) batch: Option<usize>,
    pub(super) pushback: Option<usize>,
    pub(super) backoff_max: Option<f64>,
    pub(super) when_full: Option<String>,
    pub(super) buffer: Option<BufferOptions>,
}

/// A comma-separated string or a list: `tags: "a, b"` or `tags: [a, b]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        Ok(StringList(match Either::deserialize(d)? {
            Either::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
            Either::Many(v) => v,
        }))
    }
}

/// The common source option names (for unknown-option checks and `ductd list`).
pub fn common_source_options() -> Vec<&'static str> {
    field_names::<CommonSourceOptions>()
        .iter()
        .chain(SOURCE_NODE_KEYS)
        .copied()
        .collect()
}

/// The common output option names.
pub fn common_output_options() -> &'static [&'static str] {
    field_names::<CommonOutputOptions>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stagger_spreads_starts_within_one_interval() {
        assert_eq!(stagger_offset(0, 0.2, 60.0), 0.0);
        assert!((stagger_offset(5, 0.2, 60.0) - 1.0).abs() < 1e-9);
        // Duct would wait 2000 s for source 10,000; ductd wraps at the interval.
        let late = stagger_offset(10_000, 0.2, 60.0);
        assert!((0.0..60.0).contains(&late), "{late}");
        assert!((stagger_offset(3, 0.2, 0.5) - 0.1).abs() < 1e-9);
        assert_eq!(stagger_offset(7, 0.0, 10.0), 0.0);
    }
}
