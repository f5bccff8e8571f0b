//! Running the host's tools (`sensors`, `smartctl`, `ipsec`, `swanctl`),
//! here or, for a `use_ssh` source, on the remote host through its shared
//! connection (the remote shell finds the tool on its `PATH` and the sbin
//! directories; exit status 127 means it is not installed there).
//!
//! A tool is looked up on the `PATH` and in the sbin directories (where
//! Debian puts `smartctl`, and which an unprivileged `PATH` lacks), run
//! through the shared `fork` helper with the tick's timeout, and — when it
//! is missing or keeps failing — reported once with a warning rather than
//! at every tick; the source then returns no events until the tool works.

use std::fmt::Display;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duct_core::source::{ForkError, FORK_OUTPUT_LIMIT};
use duct_core::{ForkOutput, SourceContext, SourceError};

use super::host::{Host, Remote};

/// The shell's exit status for a command it cannot find.
const NOT_FOUND: i32 = 127;

/// Searched after the `PATH`, here and on a remote host.
pub(crate) const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// One external program a source runs.
pub(crate) struct Tool {
    name: String,
    /// The Debian package that installs it, for the warning.
    package: &'static str,
    /// Where it was found; looked up again after it went missing.
    path: Option<PathBuf>,
    /// A warning about it is out: the next waits until it has worked again.
    warned: bool,
    /// Run it there instead of here.
    remote: Option<Remote>,
}

impl Tool {
    pub fn new(name: impl Into<String>, package: &'static str) -> Self {
        Tool {
            name: name.into(),
            package,
            path: None,
            warned: false,
            remote: None,
        }
    }

    /// The same tool, run on `host`.
    pub fn on(mut self, host: &Host) -> Self {
        self.remote = host.remote().cloned();
        self
    }

    /// Whether the program can be found now.
    pub fn is_installed(&mut self) -> bool {
        // A remote tool is known only by running it.
        self.remote.is_some() || self.resolve().is_some()
    }

    fn resolve(&mut self) -> Option<PathBuf> {
        if self.path.is_none() {
            self.path = find_program(&self.name);
        }
        self.path.clone()
    }

    /// Runs the program with `args` and the tick's timeout. `Ok(None)`
    /// when it is not installed (or may not be run), after a warning the
    /// first time; a timeout or an I/O failure is an error of the tick.
    pub async fn run(&mut self, ctx: &SourceContext, args: &[&str]) -> Result<Option<ForkOutput>, SourceError> {
        if let Some(remote) = self.remote.clone() {
            return self.run_remote(ctx, &remote, args).await;
        }
        let Some(path) = self.resolve() else {
            let message = format!(
                "`{}` not found on the PATH nor in {} (Debian package {}): no events until it is installed",
                self.name,
                SBIN_DIRS.join(", "),
                self.package
            );
            self.warn(ctx, message);
            return Ok(None);
        };
        let timeout = Duration::from_secs_f64(ctx.settings().timeout);
        match ctx.fork(&path, args, timeout).await {
            Ok(out) => Ok(Some(out)),
            Err(ForkError::Spawn { path, source })
                if matches!(source.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) =>
            {
                self.path = None;
                self.warn(ctx, format_args!("cannot run {path}: {source}; no events until it can"));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn run_remote(
        &mut self,
        ctx: &SourceContext,
        remote: &Remote,
        args: &[&str],
    ) -> Result<Option<ForkOutput>, SourceError> {
        let conn = remote.connection();
        let line = format!(
            "PATH=\"$PATH:{}\" {}",
            SBIN_DIRS.join(":"),
            duct_ssh::command_line(&self.name, args)
        );
        let out = conn.exec(&line, remote.timeout(), FORK_OUTPUT_LIMIT).await?;
        if out.code == Some(NOT_FOUND) {
            let message = format!(
                "`{}` not found on {} (Debian package {}): no events until it is installed there",
                self.name,
                conn.target().label(),
                self.package
            );
            self.warn(ctx, message);
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Logs a warning about the tool unless one is already out.
    pub fn warn(&mut self, ctx: &SourceContext, message: impl Display) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(service = %ctx.service(), tool = %self.name, "{message}");
        }
    }

    /// The tool answered as expected: a later fault is logged again.
    pub fn worked(&mut self, ctx: &SourceContext) {
        if self.warned {
            self.warned = false;
            tracing::info!(service = %ctx.service(), tool = %self.name, "works again");
        }
    }
}

/// `name` as a path to an executable: itself when it has a slash, else the
/// first match on the `PATH` or in the sbin directories.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first non-empty line of a tool's complaint, for a warning.
pub(crate) fn first_line(text: &str) -> &str {
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;

    #[test]
    fn programs_are_found_on_the_path_and_by_absolute_name() {
        assert_eq!(
            find_program("sh").map(|p| p.file_name().unwrap().to_owned()),
            Some("sh".into())
        );
        assert_eq!(find_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("no-such-tool-ductd"), None);
        let dir = crate::linux::testing::Scratch::new("find-program");
        dir.write("plain", "not a program");
        let plain = dir.0.join("plain");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_program(plain.to_str().unwrap()), None, "not executable");
    }

    #[tokio::test]
    async fn a_missing_tool_gives_no_events_and_one_warning() {
        let (ctx, _) = context("t");
        let mut tool = Tool::new("no-such-tool-ductd", "nothing");
        assert!(tool.run(&ctx, &[]).await.unwrap().is_none());
        assert!(tool.warned);
        assert!(tool.run(&ctx, &[]).await.unwrap().is_none());
        tool.worked(&ctx);
        assert!(!tool.warned);
    }

    #[tokio::test]
    async fn a_present_tool_runs() {
        let (ctx, _) = context("t");
        let mut tool = Tool::new("sh", "dash");
        let out = tool.run(&ctx, &["-c", "echo hi"]).await.unwrap().unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(
            first_line("\n  sudo: ipsec: command not found\nmore"),
            "sudo: ipsec: command not found"
        );
    }
}
