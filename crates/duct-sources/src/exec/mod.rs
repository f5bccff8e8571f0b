//! Exec plugins: user sources in any language
//! (docs/writing-sources.md, "Exec plugins").
//!
//! `source: hello.HelloWorld` that names no built-in runs an executable
//! `hello` (or `hello.HelloWorld`) found in the source's `path`, then in
//! `base_path` (`/var/lib/duct`); an absolute path names the program
//! directly. Each tick runs it with `args` and `env`, in a process group
//! of its own, killed past the source's `timeout`, and reads what it prints
//! (see [`parse`]). The tick ends when the plugin exits, even if a child it
//! left in the background still holds its output; the group is then
//! killed, and children that escaped it are reported. With
//! `mode: stream` the program is started once and every line it prints is
//! an event as it arrives; it is restarted with backoff when it exits.

pub mod parse;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duct_core::registry::PluginSpec;
use duct_core::source::{run, ExitWatch, ForkRequest, ProcessGroup, PIPE_GRACE};
use duct_core::throttle::Throttle;
use duct_core::{Event, Poll, Schedule, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio_util::codec::FramedRead;

use crate::lines::{Line, LineCodec};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Run once per tick.
    #[default]
    Poll,
    /// Run once; every line printed is an event.
    Stream,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    args: Vec<String>,
    /// Added to the agent's environment.
    env: std::collections::BTreeMap<String, String>,
    mode: Mode,
    /// Most bytes read from each of stdout and stderr per run (poll mode).
    max_output_bytes: Option<usize>,
    /// Longest line read (stream mode); longer ones are dropped and logged.
    max_line_bytes: Option<usize>,
}

const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
const DEFAULT_MAX_LINE: usize = 64 << 10;

/// Registers exec plugins as the registry's source for unknown names.
pub fn plugins() -> PluginSpec {
    PluginSpec {
        spec: SourceSpec::new::<Options>(
            "exec plugin",
            "Any executable in `path` or `base_path`: prints JSON lines, a number, or Nagios plugin output",
            &["(service) and (service).(prefix or perfdata label): as the plugin prints them"],
            build,
        ),
        locate,
    }
}

/// The first existing candidate for `name`: the part before the first dot
/// (`hello` for `hello.HelloWorld`), then the whole name, in each directory
/// in turn; an absolute path stands for itself.
pub fn locate(name: &str, dirs: &[&Path]) -> Result<PathBuf, String> {
    if name.starts_with('/') {
        let p = PathBuf::from(name);
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!("{name} does not exist"))
        };
    }
    if name.contains('/') || name.starts_with('.') || name.is_empty() {
        return Err(format!("`{name}` is not a plugin name"));
    }
    let module = name.split('.').next().unwrap_or(name);
    let mut tried = Vec::new();
    for dir in dirs {
        for candidate in [module, name] {
            let path = dir.join(candidate);
            if path.exists() {
                return Ok(path);
            }
            let shown = path.display().to_string();
            if !tried.contains(&shown) {
                tried.push(shown);
            }
        }
    }
    Err(format!("looked for {}", tried.join(", ")))
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    let o: Options = args.options()?;
    let s = args.settings;
    let dirs: Vec<&Path> = s.path.as_deref().into_iter().chain([&*s.base_path]).collect();
    let program = locate(&s.source, &dirs).map_err(|e| args.invalid("source", format!("plugin not found: {e}")))?;
    let meta = std::fs::metadata(&program)
        .map_err(|e| args.invalid("source", format!("cannot inspect plugin {}: {e}", program.display())))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(args.invalid(
            "source",
            format!(
                "plugin {} is not an executable regular file (chmod +x it)",
                program.display()
            ),
        ));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        args.warn(
            "source",
            format!(
                "plugin {} is world-writable: anyone on this host can change what ductd runs",
                program.display()
            ),
        );
    }
    Ok(Box::new(ExecSource {
        program,
        args: o.args,
        env: o.env.into_iter().collect(),
        mode: o.mode,
        max_output: o.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT).max(1),
        max_line: o.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE).max(1),
        problems: Throttle::default(),
    }))
}

pub struct ExecSource {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    mode: Mode,
    max_output: usize,
    max_line: usize,
    /// Thins reports of unreadable output, which a broken plugin repeats
    /// every tick.
    problems: Throttle,
}

/// The event a plugin's output is laid over: the source's service, host,
/// TTL, tags and attributes, state `ok`, no metric.
fn template(ctx: &SourceContext) -> Event {
    ctx.create_event("ok", "", None::<f64>)
}

impl ExecSource {
    fn report(&mut self, ctx: &SourceContext, what: &str) {
        if let Some(held) = self.problems.allow(Duration::from_secs(60)) {
            tracing::warn!(service = %ctx.service(), plugin = %self.program.display(), held_back = held, "{what}");
        }
    }

    async fn poll(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, SourceError> {
        // Kill the plugin a little before the tick's own deadline, so the
        // log says the plugin was killed rather than the tick abandoned.
        let timeout = Duration::from_secs_f64(ctx.settings().timeout * 0.9);
        let out = run(&ForkRequest {
            program: &self.program,
            args: &self.args,
            env: &self.env,
            timeout,
            output_limit: self.max_output,
        })
        .await?;
        if !out.survivors.is_empty() {
            let pids: Vec<String> = out.survivors.iter().map(u32::to_string).collect();
            self.report(
                ctx,
                &format!(
                    "the plugin left {} process(es) running outside its process group (setsid?), holding its output: pid {}",
                    pids.len(),
                    pids.join(", ")
                ),
            );
        }
        if out.truncated {
            self.report(
                ctx,
                &format!("output cut at max_output_bytes ({} bytes)", self.max_output),
            );
        }
        let parsed = parse::parse_output(&out.stdout, out.code, &template(ctx)).map_err(|e| {
            let stderr = out.stderr.lines().next().unwrap_or_default();
            if stderr.is_empty() {
                e
            } else {
                format!("{e}; stderr: {stderr}")
            }
        })?;
        if !parsed.problems.is_empty() {
            let first = &parsed.problems[0];
            let n = parsed.problems.len();
            self.report(
                ctx,
                &format!("{n} unreadable line(s) in the plugin's output, first: {first}"),
            );
        }
        Ok(parsed.events)
    }
}

impl Source for ExecSource {
    fn schedule(&self) -> Schedule {
        match self.mode {
            Mode::Poll => Schedule::Timer,
            Mode::Stream => Schedule::Listener,
        }
    }

    fn start(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        if self.mode == Mode::Stream {
            let stream = StreamPlugin {
                program: self.program.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
                max_line: self.max_line,
            };
            ctx.spawn(stream.supervise(ctx.clone()));
        }
        Ok(())
    }

    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        match self.mode {
            Mode::Poll => Box::pin(self.poll(ctx)),
            Mode::Stream => Box::pin(std::future::ready(Ok(Vec::new()))),
        }
    }
}

/// A long-running plugin and how to restart it.
struct StreamPlugin {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    max_line: usize,
}

/// Restarts wait 1 s, doubling to a minute while the plugin keeps dying; a
/// run of a minute or more resets the wait.
const RESTART_BASE: Duration = Duration::from_secs(1);
const RESTART_CAP: Duration = Duration::from_secs(60);

impl StreamPlugin {
    /// Runs the plugin for as long as the source lives (the task is dropped
    /// when the source stops, which kills the child).
    async fn supervise(self, ctx: SourceContext) {
        let mut wait = RESTART_BASE;
        let mut exits = Throttle::default();
        let mut problems = Throttle::default();
        loop {
            let started = Instant::now();
            let run = self.run_once(&ctx, &mut problems);
            tokio::pin!(run);
            // A plugin that has run for a while is working again, for /health.
            let outcome = tokio::select! {
                outcome = &mut run => outcome,
                () = tokio::time::sleep(RESTART_CAP) => {
                    ctx.report_working();
                    run.await
                }
            };
            if started.elapsed() >= RESTART_CAP {
                wait = RESTART_BASE;
            } else {
                ctx.report_problem(&format!("stream plugin keeps exiting: {outcome}"));
            }
            if let Some(held) = exits.allow(Duration::from_secs(60)) {
                tracing::warn!(
                    service = %ctx.service(),
                    plugin = %self.program.display(),
                    restarts_held_back = held,
                    restart_in_s = wait.as_secs_f64(),
                    "stream plugin ended: {outcome}"
                );
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RESTART_CAP);
        }
    }

    /// One life of the plugin: read its lines until it exits.
    async fn run_once(&self, ctx: &SourceContext, problems: &mut Throttle) -> String {
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return format!("cannot start: {e}"),
        };
        // Stopping the source drops this future: the plugin's children go too.
        let mut group = ProcessGroup::of(&child);
        let exit = ExitWatch::of(&child);
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return "no pipes to the plugin".into();
        };
        // Keep the last bit of stderr to say why it died; never more.
        let service = ctx.service().to_string();
        let stderr_tail = tokio::task::spawn_local(async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 4096);
                }
            }
            tracing::debug!(%service, "stream plugin closed stderr");
            String::from_utf8_lossy(&tail)
                .trim()
                .lines()
                .last()
                .unwrap_or_default()
                .to_string()
        });
        let mut lines = FramedRead::new(stdout, LineCodec::new(self.max_line));
        let template = template(ctx);
        // Lines read, and whether one is waiting for room in the pipeline:
        // how the reading is told slow from stuck once the plugin exited.
        let progress = std::cell::Cell::new(0u64);
        let in_pipeline = std::cell::Cell::new(false);
        let reading = async {
            while let Some(item) = lines.next().await {
                progress.set(progress.get() + 1);
                let problem = match item {
                    Ok(Line::Text(bytes)) => {
                        let line = String::from_utf8_lossy(&bytes);
                        if line.trim().is_empty() {
                            continue;
                        }
                        let mut ev = template.clone();
                        ev.time = duct_core::event::now();
                        match parse::parse_line(&line, &ev) {
                            Ok(ev) => {
                                in_pipeline.set(true);
                                ctx.queue_back_wait(vec![ev]).await;
                                in_pipeline.set(false);
                                continue;
                            }
                            Err(e) => e,
                        }
                    }
                    Ok(Line::TooLong(n)) => format!("dropped a {n}-byte line (max_line_bytes is {})", self.max_line),
                    Err(e) => format!("reading: {e}"),
                };
                if let Some(held) = problems.allow(Duration::from_secs(60)) {
                    tracing::warn!(service = %ctx.service(), plugin = %self.program.display(), held_back = held, "{problem}");
                }
            }
        };
        // The plugin may exit while a child it left behind holds its
        // stdout: its exit ends this life all the same. Its group goes with
        // it, and what it printed is still read for as long as lines keep
        // coming or wait for the pipeline; a pipe that stays open and
        // silent (a child that escaped the group) is given up.
        let mut reading = std::pin::pin!(reading);
        tokio::select! {
            () = &mut reading => {
                let _ = exit.wait().await;
            }
            _ = exit.wait() => {
                group.kill();
                loop {
                    let seen = progress.get();
                    match tokio::time::timeout(PIPE_GRACE, &mut reading).await {
                        Ok(()) => break,
                        Err(_) if progress.get() == seen && !in_pipeline.get() => break,
                        Err(_) => {}
                    }
                }
            }
        }
        // Children left in the group, now that the plugin is gone.
        group.kill();
        let status = child.wait().await;
        group.reaped();
        // A child that escaped the group may hold stderr open: do not wait
        // for it.
        let mut stderr_tail = stderr_tail;
        let tail = match tokio::time::timeout(PIPE_GRACE, &mut stderr_tail).await {
            Ok(tail) => tail.unwrap_or_default(),
            Err(_) => {
                stderr_tail.abort();
                String::new()
            }
        };
        let status = match status {
            Ok(s) => match s.code() {
                Some(c) => format!("exited with status {c}"),
                None => "killed by a signal".into(),
            },
            Err(e) => format!("wait failed: {e}"),
        };
        if tail.is_empty() {
            status
        } else {
            format!("{status}; stderr: {tail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_are_found_by_module_then_full_name_in_path_then_base_path() {
        let dir = std::env::temp_dir().join(format!("duct-exec-locate-{}", std::process::id()));
        let own = dir.join("own");
        let base = dir.join("base");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("hello"), "").unwrap();
        std::fs::write(base.join("hello.HelloWorld"), "").unwrap();
        std::fs::write(own.join("only.Full"), "").unwrap();
        let dirs = [own.as_path(), base.as_path()];
        assert_eq!(locate("hello.HelloWorld", &dirs).unwrap(), base.join("hello"));
        assert_eq!(locate("only.Full", &dirs).unwrap(), own.join("only.Full"));
        let err = locate("missing.Thing", &dirs).unwrap_err();
        assert!(err.contains(&own.join("missing").display().to_string()), "{err}");
        assert!(err.contains(&base.join("missing.Thing").display().to_string()), "{err}");
        assert!(locate("../escape", &dirs).is_err());
        assert_eq!(locate("/bin/sh", &dirs).unwrap(), PathBuf::from("/bin/sh"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
