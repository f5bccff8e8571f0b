//! ductd's SSH client for remote checks (`use_ssh: true`,
//! docs/remote-checks.md).
//!
//! A source that observes another host asks [`connection`] for the shared
//! [`Connection`] of its [`SshTarget`]: every source with the same host,
//! port, user and credentials gets the same one, which opens one SSH
//! session and runs each command on a channel of its own. The connection
//! is made on first use, verified against `ssh_knownhosts_file`
//! ([`known_hosts`]), made again after it drops (with a backoff while the
//! host stays unreachable), and bounds every command by a timeout and its
//! output by a size.
//!
//! All SSH work runs on one thread of its own ([`runtime`]): the sessions
//! outlive the actor threads of the sources that share them, and key
//! derivation or a slow handshake never stalls a source's thread.

mod auth;
mod connection;
pub mod known_hosts;
mod runtime;

pub use connection::{connection, Connection};
pub use duct_core::plan::SshTarget;

/// Why a remote command or read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    /// The host's key is not trusted: unknown, changed or revoked. Nothing
    /// is sent to such a host; sources report it as a critical event.
    #[error("{target}: host key refused: {reason}")]
    HostKey { target: String, reason: String },
    #[error("{target}: cannot connect: {reason}")]
    Connect { target: String, reason: String },
    #[error("{target}: login refused: {reason}")]
    Auth { target: String, reason: String },
    #[error("{target}: {reason}")]
    Key { target: String, reason: String },
    /// The last attempt failed; the next is not due yet.
    #[error("{last} (next attempt in {retry_in:.0} s)")]
    Backoff { last: Box<SshError>, retry_in: f64 },
    #[error("{target}: `{command}` took longer than {seconds} s")]
    Timeout {
        target: String,
        command: String,
        seconds: f64,
    },
    #[error("{target}: running `{command}`: {reason}")]
    Channel {
        target: String,
        command: String,
        reason: String,
    },
    /// A read (`cat`) or listing that the remote command refused.
    #[error("{target}: cannot read {path}: {reason}")]
    Read {
        target: String,
        path: String,
        reason: String,
    },
}

impl SshError {
    /// A refused host key, directly or as the cause of a backoff.
    pub fn is_host_key(&self) -> bool {
        match self {
            SshError::HostKey { .. } => true,
            SshError::Backoff { last, .. } => last.is_host_key(),
            _ => false,
        }
    }
}

/// `arg` as one word for the remote user's POSIX shell, which is how
/// SSH runs a command: quoted unless it is plainly safe.
pub fn shell_quote(arg: &str) -> std::borrow::Cow<'_, str> {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+-,".contains(&b));
    if safe {
        std::borrow::Cow::Borrowed(arg)
    } else {
        std::borrow::Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")))
    }
}

/// `program` and `args` as one command line for the remote shell.
pub fn command_line(program: &str, args: &[&str]) -> String {
    let mut line = shell_quote(program).into_owned();
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_the_remote_shell() {
        assert_eq!(command_line("cat", &["--", "/proc/stat"]), "cat -- /proc/stat");
        assert_eq!(command_line("smartctl", &["-A", "/dev/sda"]), "smartctl -A /dev/sda");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_quote(""), "''");
    }
}
