//! `duct.outputs.logger.Logger`: events as JSON lines (the event's JSON
//! form, see `duct_core::Event`), on
//! standard output or appended to `logfile`.
//!
//! The file is opened when the output starts and reopened when it has been
//! moved or deleted (logrotate without `copytruncate`), checked at most once
//! a second.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use duct_core::{Batch, BoxFuture, Output, OutputArgs, OutputError, OutputSpec};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// File to append to; standard output when absent.
    logfile: Option<PathBuf>,
}

pub fn spec() -> OutputSpec {
    OutputSpec::new::<Options>(
        "duct.outputs.logger.Logger",
        "Writes events as JSON lines to `logfile` (default: standard output)",
        false,
        build,
    )
}

fn build(args: &OutputArgs<'_>) -> Result<Box<dyn Output>, duct_core::config::Diagnostic> {
    let opts: Options = args.options()?;
    if let Some(path) = &opts.logfile {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(args.invalid("logfile", format!("the directory of {} does not exist", path.display())));
        }
    }
    Ok(Box::new(Logger {
        path: opts.logfile,
        file: None,
        checked: Instant::now(),
        buf: Vec::with_capacity(64 << 10),
    }))
}

pub struct Logger {
    path: Option<PathBuf>,
    /// The open log file and its inode, to notice rotation.
    file: Option<(File, u64)>,
    /// When the path was last compared with the open file.
    checked: Instant,
    /// Reused for every batch: one write per batch, no allocation per event.
    buf: Vec<u8>,
}

impl Logger {
    fn open(path: &PathBuf) -> io::Result<(File, u64)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let inode = file.metadata()?.ino();
        Ok((file, inode))
    }

    /// Reopens the file if it was rotated away since the last check.
    fn file(&mut self) -> io::Result<&mut File> {
        let Some(path) = &self.path else {
            return Err(io::Error::other("no log file configured"));
        };
        let rotated = match &self.file {
            None => true,
            Some((_, inode)) if self.checked.elapsed() >= Duration::from_secs(1) => {
                self.checked = Instant::now();
                std::fs::metadata(path).map(|m| m.ino() != *inode).unwrap_or(true)
            }
            Some(_) => false,
        };
        if rotated {
            self.file = Some(Self::open(path)?);
        }
        match &mut self.file {
            Some((f, _)) => Ok(f),
            None => Err(io::Error::other("log file not open")),
        }
    }

    fn write_batch(&mut self, batch: &Batch) -> io::Result<()> {
        self.buf.clear();
        for ev in batch.iter() {
            ev.write_json(&mut self.buf);
            self.buf.push(b'\n');
        }
        let buf = std::mem::take(&mut self.buf);
        let result = if self.path.is_some() {
            self.file().and_then(|f| f.write_all(&buf))
        } else {
            let mut out = io::stdout().lock();
            out.write_all(&buf).and_then(|_| out.flush())
        };
        self.buf = buf;
        if result.is_err() {
            // Start from a fresh handle next time.
            self.file = None;
        }
        result
    }
}

impl Output for Logger {
    fn start(&mut self) -> BoxFuture<'_, Result<(), OutputError>> {
        let result = match &self.path {
            Some(path) => Self::open(path)
                .map(|f| self.file = Some(f))
                .map_err(|e| OutputError::new(format!("cannot open {}: {e}", path.display()))),
            None => Ok(()),
        };
        Box::pin(std::future::ready(result))
    }

    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        let result = self.write_batch(batch).map_err(|e| {
            let target = self
                .path
                .as_ref()
                .map_or("standard output".to_string(), |p| p.display().to_string());
            OutputError::new(format!("writing to {target}: {e}"))
        });
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duct_core::Event;

    fn logger(path: PathBuf) -> Logger {
        Logger {
            path: Some(path),
            file: None,
            checked: Instant::now(),
            buf: Vec::new(),
        }
    }

    #[tokio::test]
    async fn writes_json_lines_and_follows_rotation() {
        let dir = std::env::temp_dir().join(format!("duct-logger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.log");
        let mut out = logger(path.clone());
        out.start().await.unwrap();
        let batch = Batch::from_events(vec![Event::new("h", "a"), Event::new("h", "b")]);
        out.send(&batch).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(r#"{"host":"h","service":"a""#), "{}", lines[0]);

        std::fs::rename(&path, dir.join("events.log.1")).unwrap();
        out.checked = Instant::now() - Duration::from_secs(2);
        out.send(&Batch::from_events(vec![Event::new("h", "c")])).await.unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.contains(r#""service":"c""#), "{fresh}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn special_floats_and_repeated_attributes_are_written_unambiguously() {
        let dir = std::env::temp_dir().join(format!("duct-logger-nan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.log");
        let mut out = logger(path.clone());
        out.start().await.unwrap();
        let mut events = Vec::new();
        for metric in [None, Some(f64::NAN), Some(f64::INFINITY), Some(f64::NEG_INFINITY)] {
            let mut ev = Event::new("h", "m");
            ev.metric = metric.map(duct_core::Metric::Float);
            ev.attributes = vec![("k".into(), "first".into()), ("k".into(), "last".into())];
            events.push(ev);
        }
        out.send(&Batch::from_events(events)).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let metrics: Vec<serde_json::Value> = text
            .lines()
            .map(|l| {
                assert_eq!(l.matches(r#""k":"#).count(), 1, "{l}");
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["attributes"]["k"], "last");
                v["metric"].clone()
            })
            .collect();
        assert_eq!(
            metrics,
            [
                serde_json::Value::Null,
                "NaN".into(),
                "Infinity".into(),
                "-Infinity".into()
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn unwritable_file_fails_the_send() {
        let mut out = logger(PathBuf::from("/proc/version/not-a-dir/x.log"));
        assert!(out.start().await.is_err());
        let err = out
            .send(&Batch::from_events(vec![Event::new("h", "a")]))
            .await
            .unwrap_err();
        assert!(err.message.contains("x.log"), "{err}");
    }
}
