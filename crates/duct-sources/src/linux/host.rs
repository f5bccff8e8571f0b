//! Where a host source observes: this machine (its `/proc` and `/sys`, or
//! `HOST_PROC`/`HOST_SYS`), or the host a `use_ssh: true` source names,
//! through its shared SSH connection (docs/remote-checks.md).
//!
//! Sources read files through [`HostFile`], list directories and run
//! commands through [`Host`]; the parsers never know which it was. Reading
//! here keeps the file open between ticks ([`ProcFile`]); reading there is
//! one `cat` per file and tick on a channel of the shared connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use duct_core::source::ForkRequest;
use duct_core::{Event, ForkOutput, SourceArgs, SourceContext, SourceError};
use duct_ssh::{Connection, SshError};

use super::{HostError, HostPaths, ParseError, ProcFile};

/// The most of a remote file or listing read in one tick: kernel text
/// files are a few KiB, `/proc/diskstats` of a large SAN host some hundred.
pub(crate) const REMOTE_READ_LIMIT: usize = 4 << 20;

/// A host to observe.
#[derive(Clone)]
pub(crate) struct Host {
    paths: Arc<HostPaths>,
    remote: Option<Remote>,
}

/// The other end of a `use_ssh` source.
#[derive(Clone)]
pub(crate) struct Remote {
    conn: Arc<Connection>,
    /// Each read or command, connecting included, within the tick's
    /// timeout.
    timeout: Duration,
}

impl Host {
    /// The host a source's settings name: over SSH with `use_ssh: true`,
    /// else this one.
    pub fn of(args: &SourceArgs<'_>) -> Host {
        match &args.settings.remote {
            Some(target) => Host {
                // The remote host's own directories: HOST_PROC describes
                // this machine's mounts, not the other one's.
                paths: Arc::new(HostPaths::from_vars(|_| None)),
                remote: Some(Remote {
                    conn: duct_ssh::connection(target),
                    timeout: Duration::from_secs_f64(args.settings.timeout),
                }),
            },
            None => Host::local(HostPaths::from_env()),
        }
    }

    /// This machine, through `paths`.
    pub fn local(paths: Arc<HostPaths>) -> Host {
        Host { paths, remote: None }
    }

    pub fn paths(&self) -> &HostPaths {
        &self.paths
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// A file read whole at every tick.
    pub fn file(&self, path: PathBuf) -> HostFile {
        self.first_of(vec![path])
    }

    /// The first of `paths` that can be read.
    pub fn first_of(&self, paths: Vec<PathBuf>) -> HostFile {
        match &self.remote {
            None => HostFile::Local(ProcFile::first_of(paths)),
            Some(r) => HostFile::Remote {
                remote: r.clone(),
                candidates: paths,
                shown: PathBuf::new(),
            },
        }
    }

    /// The names in directory `dir` (`.` and `..` left out).
    pub async fn list_dir(&self, dir: &Path) -> Result<Vec<String>, HostError> {
        match &self.remote {
            None => {
                let entries = std::fs::read_dir(dir).map_err(|source| HostError::Read {
                    path: dir.to_path_buf(),
                    source,
                })?;
                Ok(entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect())
            }
            Some(r) => {
                let text = dir.to_string_lossy();
                let out = r
                    .conn
                    .exec(
                        &duct_ssh::command_line("ls", &["-1A", "--", &text]),
                        r.timeout,
                        REMOTE_READ_LIMIT,
                    )
                    .await?;
                if out.code != Some(0) {
                    return Err(HostError::Remote(SshError::Read {
                        target: r.conn.target().label(),
                        path: text.into_owned(),
                        reason: out.stderr.lines().next().unwrap_or("ls failed").to_string(),
                    }));
                }
                Ok(out.stdout.lines().map(String::from).collect())
            }
        }
    }
}

impl Host {
    /// Runs `program` with `args` on the host, within `timeout`, keeping
    /// `limit` bytes of each of stdout and stderr: here through the shared
    /// fork helper, there through the remote user's shell on the shared
    /// connection, with `input` as its standard input (for what must not
    /// appear on a command line the remote host's users can list). Only a
    /// remote program takes input (nothing here needs it), so here it must
    /// be empty. A program missing there is the shell's exit status 127
    /// and its complaint on stderr.
    pub async fn run(
        &self,
        program: &Path,
        args: &[String],
        input: &[u8],
        timeout: Duration,
        limit: usize,
    ) -> Result<ForkOutput, HostError> {
        let Some(r) = &self.remote else {
            debug_assert!(input.is_empty(), "standard input is sent to remote programs only");
            let request = ForkRequest {
                program,
                args,
                env: &[],
                timeout,
                output_limit: limit,
            };
            return Ok(duct_core::source::run(&request).await?);
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = duct_ssh::command_line(&program.to_string_lossy(), &args);
        Ok(r.conn.exec_with_input(&line, input.to_vec(), timeout, limit).await?)
    }
}

impl From<&HostPaths> for Host {
    fn from(paths: &HostPaths) -> Host {
        Host::local(Arc::new(paths.clone()))
    }
}

impl From<&Host> for Host {
    fn from(host: &Host) -> Host {
        host.clone()
    }
}

impl Remote {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A host's text file read whole at every tick.
pub(crate) enum HostFile {
    Local(ProcFile),
    Remote {
        remote: Remote,
        candidates: Vec<PathBuf>,
        /// `user@host:port:/path` of the last read, for parse errors.
        shown: PathBuf,
    },
}

impl HostFile {
    /// Reads and parses the file, naming it in a parse error.
    pub async fn parse<T>(&mut self, parse: impl FnOnce(&str) -> Result<T, ParseError>) -> Result<T, HostError> {
        match self {
            HostFile::Local(file) => file.parse(parse),
            HostFile::Remote {
                remote,
                candidates,
                shown,
            } => {
                let (path, text) = read_first(remote, candidates).await?;
                *shown = PathBuf::from(format!("{}:{}", remote.conn.target().label(), path.display()));
                parse(&text).map_err(|source| HostError::Parse {
                    path: shown.clone(),
                    source,
                })
            }
        }
    }
}

/// The first candidate that the remote `cat` can read.
async fn read_first<'p>(remote: &Remote, candidates: &'p [PathBuf]) -> Result<(&'p Path, String), HostError> {
    let mut first_error = None;
    for path in candidates {
        match remote
            .conn
            .read_file(&path.to_string_lossy(), remote.timeout, REMOTE_READ_LIMIT)
            .await
        {
            Ok(text) => return Ok((path, text)),
            Err(e @ SshError::Read { .. }) => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(first_error.map(HostError::Remote).unwrap_or_else(|| {
        HostError::Remote(SshError::Read {
            target: remote.conn.target().label(),
            path: String::new(),
            reason: "no path to read".into(),
        })
    }))
}

/// A tick's result, with a refused SSH host key turned into a critical
/// event of the source (nothing was read: the host could be anyone), and
/// every other fault left to the runtime to log.
pub(crate) fn reported(ctx: &SourceContext, result: Result<Vec<Event>, HostError>) -> Result<Vec<Event>, SourceError> {
    match result {
        Ok(events) => Ok(events),
        Err(HostError::Remote(e)) if e.is_host_key() => {
            Ok(vec![ctx.create_event("critical", e.to_string(), None::<i64>)])
        }
        Err(e) => Err(e.into()),
    }
}
