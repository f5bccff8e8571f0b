//! `duct.sources.postfix.Postfix`: the number of messages in each of
//! Postfix's queues, counted in the spool directories.
//!
//! Duct ran `find <queue> -type f | wc -l` through a shell with quotes
//! that made it one word, so it never worked; ductd counts the regular
//! files under each queue directory itself (Postfix keeps one file per
//! message, in hashed subdirectories for `deferred` and `defer`), off the
//! async threads and within the tick's budget.
//!
//! Events, for `active`, `deferred`, `maildrop`, `incoming`, `corrupt`,
//! `hold` and `bounce`: `(service).(queue).value`, the count, and
//! `(service).(queue).rate`, the same value as a counter (messages per
//! second arriving; a queue that drains gives no rate for that tick).
//! A queue that cannot be read (missing, or not readable by the agent's
//! user — the queues are `postfix`'s, mode 0700) is a critical
//! `(queue).value` without a metric naming the cause; a spool that cannot
//! be read at all is one critical `(service)`. With `use_ssh: true` the
//! spool is `ssh_host`'s, counted there by one `sh` running `find | wc -l`
//! per queue (docs/remote-checks.md).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::{budget, program_failure, Faults, DEFAULT_TIMEOUT, MAX_REPLY_BYTES};
use crate::linux::host::Host;

/// The queues Duct reported, in its order.
const QUEUES: &[&str] = &[
    "active", "deferred", "maildrop", "incoming", "corrupt", "hold", "bounce",
];

/// Postfix hashes queue files at most a few levels deep
/// (`hash_queue_depth`, 1 by default, at most a handful); deeper trees are
/// not a spool and are not walked.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    spool: PathBuf,
    /// Seconds the count may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            spool: PathBuf::from("/var/spool/postfix"),
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.postfix.Postfix",
        "Postfix queue sizes counted in the spool: `spool` (/var/spool/postfix), `timeout`; needs read access \
         to the queues (root or the postfix user)",
        &[
            "(service).(queue).value: messages in active, deferred, maildrop, incoming, corrupt, hold, bounce",
            "(service).(queue).rate: the same as a Counter rate",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    if o.spool.as_os_str().is_empty() {
        return Err(args.invalid("spool", "must name Postfix's spool directory"));
    }
    Ok(Box::new(Postfix {
        spool: o.spool,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
        host: Host::of(args),
    }))
}

pub struct Postfix {
    spool: PathBuf,
    /// Where the spool is: here, or over SSH (`use_ssh`).
    host: Host,
    budget: Duration,
    faults: Faults,
}

service_source!(Postfix, counters);

/// What counting one queue gave.
type QueueCount = (&'static str, Result<u64, String>);

impl Postfix {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let counted = if self.host.remote().is_some() {
            self.count_remote().await
        } else {
            let spool = self.spool.clone();
            let count = tokio::task::spawn_blocking(move || count_spool(&spool));
            match tokio::time::timeout(self.budget, count).await {
                Ok(Ok(counted)) => counted,
                Ok(Err(join)) => Err(format!("the count failed: {join}")),
                Err(_) => Err(format!("counting took longer than {} s", self.budget.as_secs_f64())),
            }
        };
        let queues = match counted {
            Ok(queues) => queues,
            Err(cause) => {
                let text = format!("{} - {cause}", self.spool.display());
                self.faults.failed(ctx, &text);
                return vec![ctx.create_event("critical", text, None::<i64>)];
            }
        };
        let mut events = Vec::with_capacity(2 * queues.len());
        let mut problems = Vec::new();
        for (queue, count) in queues {
            match count {
                Ok(n) => {
                    events.push(ctx.create_event_prefixed(
                        &format!("{queue}.value"),
                        "ok",
                        format!("{queue} queue length"),
                        n,
                    ));
                    events.push(
                        ctx.create_event_prefixed(&format!("{queue}.rate"), "ok", "Queue rate", n)
                            .aggregated(Aggregation::Counter),
                    );
                }
                Err(cause) => {
                    problems.push(format!("{queue}: {cause}"));
                    events.push(ctx.create_event_prefixed(&format!("{queue}.value"), "critical", cause, None::<i64>));
                }
            }
        }
        if problems.is_empty() {
            self.faults.worked(ctx);
        } else {
            self.faults
                .failed(ctx, format!("{}: {}", self.spool.display(), problems.join("; ")));
        }
        events
    }
}

impl Postfix {
    /// The counts on the remote host: one `find | wc -l` per queue in one
    /// remote shell (see [`remote_script`]).
    async fn count_remote(&self) -> Result<Vec<QueueCount>, String> {
        let script = remote_script(&self.spool);
        let out = self
            .host
            .run(
                Path::new("sh"),
                &["-c".to_string(), script],
                &[],
                self.budget,
                MAX_REPLY_BYTES,
            )
            .await
            .map_err(|e| e.to_string())?;
        if out.code != Some(0) {
            return Err(format!(
                "cannot read {}: {}",
                self.spool.display(),
                program_failure(&out)
            ));
        }
        Ok(parse_remote_counts(&self.spool, &out.stdout))
    }
}

/// A POSIX shell script that enters `spool` (failing with the shell's
/// complaint when it cannot) and prints, for each queue, the complaints of
/// `find` about it (its stderr, sent to stdout first) and then
/// `= QUEUE COUNT`: the regular files down to the depth counted here,
/// symbolic links not followed (find's default).
fn remote_script(spool: &Path) -> String {
    let mut script = format!(
        "cd -- {} || exit 2\nfor q in {}; do\n",
        duct_ssh::shell_quote(&spool.to_string_lossy()),
        QUEUES.join(" ")
    );
    script.push_str(&format!(
        "  n=$(find \"$q\" -maxdepth {} -type f 2>&3 | wc -l)\n  echo \"= $q $n\"\ndone 3>&1\n",
        MAX_DEPTH + 1
    ));
    script
}

/// The counts [`remote_script`] printed: a queue with a complaint before
/// its count is a fault, with the first complaint as its cause.
fn parse_remote_counts(spool: &Path, text: &str) -> Vec<QueueCount> {
    let mut complaint: Option<&str> = None;
    let mut counts = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("= ") else {
            complaint = complaint.or(Some(line.trim()).filter(|l| !l.is_empty()));
            continue;
        };
        let (name, n) = rest.split_once(' ').unwrap_or((rest, ""));
        let Some(queue) = QUEUES.iter().find(|q| **q == name) else {
            continue;
        };
        let dir = spool.join(queue);
        let count = match (complaint.take(), n.trim().parse::<u64>()) {
            (Some(said), _) => Err(format!("cannot read {}: {said}", dir.display())),
            (None, Ok(n)) => Ok(n),
            (None, Err(_)) => Err(format!("cannot read {}: the count was {n:?}", dir.display())),
        };
        counts.push((*queue, count));
    }
    for queue in QUEUES {
        if !counts.iter().any(|(q, _)| q == queue) {
            let dir = spool.join(queue);
            counts.push((
                *queue,
                Err(format!("cannot read {}: no count came back", dir.display())),
            ));
        }
    }
    counts
}

/// Counts every queue under `spool`; `Err` when the spool itself cannot
/// be read.
fn count_spool(spool: &Path) -> Result<Vec<QueueCount>, String> {
    std::fs::read_dir(spool).map_err(|e| describe(spool, &e))?;
    Ok(QUEUES
        .iter()
        .map(|q| {
            let dir = spool.join(q);
            (*q, count_files(&dir, MAX_DEPTH).map_err(|e| describe(&dir, &e)))
        })
        .collect())
}

/// The regular files under `dir`, in subdirectories down to `depth`
/// levels; symbolic links are not followed.
pub(crate) fn count_files(dir: &Path, depth: usize) -> io::Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            n += 1;
        } else if kind.is_dir() && depth > 0 {
            n += count_files(&entry.path(), depth - 1)?;
        }
    }
    Ok(n)
}

/// An I/O error, with a hint for the usual one.
fn describe(path: &Path, e: &io::Error) -> String {
    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
        " (Postfix's queues are readable only by root and postfix)"
    } else {
        ""
    };
    format!("cannot read {}: {e}{hint}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::Scratch;
    use crate::services::fixture;

    /// The spool of a real Postfix 3.7.11 rebuilt from its listing
    /// (`find` output captured with four messages deferred, one of them
    /// then held, and one left in maildrop with the mail system stopped):
    /// its directories and regular files. Sockets and pipes are left out;
    /// they are outside the queues.
    fn spool() -> Scratch {
        let s = Scratch::new("postfix-spool");
        let listing = String::from_utf8(fixture("postfix", "spool-3.7.11.txt")).unwrap();
        for line in listing.lines() {
            let (kind, path) = line.split_once(' ').unwrap();
            let path = path.trim_start_matches("./");
            match kind {
                "d" => std::fs::create_dir_all(s.0.join(path)).unwrap(),
                "f" => s.write(path, "queue file"),
                _ => {}
            }
        }
        s
    }

    /// The queue of every message, as `postqueue -j` listed them.
    fn postqueue_counts() -> Vec<(String, u64)> {
        let text = String::from_utf8(fixture("postfix", "postqueue-j-3.7.11.json")).unwrap();
        let mut counts: Vec<(String, u64)> = QUEUES.iter().map(|q| (q.to_string(), 0)).collect();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let queue = v["queue_name"].as_str().unwrap();
            counts.iter_mut().find(|(q, _)| q == queue).unwrap().1 += 1;
        }
        counts
    }

    #[test]
    fn queues_are_counted_as_postqueue_lists_them() {
        let s = spool();
        let counts = count_spool(&s.0).unwrap();
        let got: Vec<(String, u64)> = counts
            .iter()
            .map(|(q, c)| (q.to_string(), *c.as_ref().unwrap()))
            .collect();
        assert_eq!(got, postqueue_counts());
        let deferred = got.iter().find(|(q, _)| q == "deferred").unwrap();
        assert_eq!(deferred.1, 4, "hashed one level deep; `defer` holds logs, not messages");
    }

    #[test]
    fn links_are_not_followed_and_depth_is_bounded() {
        let s = spool();
        std::os::unix::fs::symlink(s.0.join("deferred"), s.0.join("hold/loop")).unwrap();
        assert_eq!(count_files(&s.0.join("hold"), MAX_DEPTH).unwrap(), 1);
        s.write("active/a/b/c/deep", "x");
        s.write("active/4Ymn2x0Qz4z9sKQ", "x");
        assert_eq!(
            count_files(&s.0.join("active"), 1).unwrap(),
            1,
            "too deep to be a queue file"
        );
        assert_eq!(count_files(&s.0.join("active"), MAX_DEPTH).unwrap(), 2);
    }

    #[test]
    fn remote_counts_are_read_with_the_complaints_before_them() {
        // What the remote script printed (bash 5.2, GNU find 4.9) for a
        // spool without `hold`.
        let text = "= active 1\n= deferred 2\n= maildrop 0\n= incoming 0\n= corrupt 0\n\
                    find: \u{2018}hold\u{2019}: No such file or directory\n= hold 0\n= bounce 0\n";
        let counts = parse_remote_counts(Path::new("/sp"), text);
        let got: Vec<(&str, Result<u64, String>)> = counts.into_iter().collect();
        assert_eq!(got[0], ("active", Ok(1)));
        assert_eq!(got[1], ("deferred", Ok(2)));
        assert_eq!(
            got[5],
            (
                "hold",
                Err("cannot read /sp/hold: find: \u{2018}hold\u{2019}: No such file or directory".into())
            )
        );
        assert_eq!(got[6], ("bounce", Ok(0)), "the complaint was the hold queue's alone");
        // A queue that never came back (the output cut short) is a fault.
        let short = parse_remote_counts(Path::new("/sp"), "= active 4\n");
        assert_eq!(short.len(), QUEUES.len());
        assert!(short[1].1.as_ref().unwrap_err().contains("no count came back"));
        assert!(remote_script(Path::new("/var/spool/post fix")).starts_with("cd -- '/var/spool/post fix' || exit 2"));
    }

    #[test]
    fn a_missing_queue_or_spool_names_the_path() {
        let s = spool();
        std::fs::remove_dir(s.0.join("corrupt")).unwrap();
        let counts = count_spool(&s.0).unwrap();
        let corrupt = counts.iter().find(|(q, _)| *q == "corrupt").unwrap();
        let err = corrupt.1.as_ref().unwrap_err();
        assert!(
            err.starts_with(&format!("cannot read {}/corrupt: ", s.0.display())),
            "{err}"
        );
        let err = count_spool(&s.0.join("nowhere")).unwrap_err();
        assert!(err.contains("nowhere"), "{err}");
        let denied = describe(Path::new("/q"), &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(denied.ends_with("(Postfix's queues are readable only by root and postfix)"));
    }
}
