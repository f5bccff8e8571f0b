//! `duct.sources.media.libav.DarwinRTSP`: how long it takes to open the
//! Darwin Streaming Server's sample stream,
//! `rtsp://(destination)/sample_100kbit.mp4`, and read enough of it to
//! know its streams.
//!
//! Duct ran `/usr/bin/avprobe`, which no Debian release ships any more;
//! ductd runs `ffprobe` (Debian package ffmpeg; the `ffprobe` option names
//! another binary or path) with `-v error`, so that what it prints is only
//! the failure. `destination` may carry a port (`camera:8554`), as Duct's
//! URL allowed; it defaults to the source's `hostname`, as Duct's did.
//!
//! Events: `(service)`, the time in milliseconds from starting the probe
//! to its end, `ok` when ffprobe exits 0; otherwise critical with Duct's
//! `Unable to stream (destination):(cause)` and the time it took, the
//! cause being ffprobe's own message (or the timeout, or why it could not
//! be run). The probe gets `timeout` seconds (Duct's 30, capped at 90 %
//! of the interval) and is killed after it.

use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::source::{run, ForkRequest};
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::{budget, Faults};
use crate::linux::command::find_program;
use crate::network::GRACE;

/// Duct's timeout for the probe, in seconds.
const DUCT_TIMEOUT: f64 = 30.0;

/// The stream Duct asks for: the sample every Darwin server carries.
const SAMPLE: &str = "sample_100kbit.mp4";

/// ffprobe's complaints are a few lines; more is not kept.
const MAX_OUTPUT: usize = 64 << 10;

/// The longest cause put in a description.
const MAX_CAUSE: usize = 300;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Options {
    /// Host (and optionally `:port`) of the RTSP server.
    destination: Option<String>,
    /// The probe binary: a name looked up on the PATH, or a path.
    ffprobe: Option<String>,
    /// Seconds the probe may take (also the common option).
    timeout: Option<f64>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.media.libav.DarwinRTSP",
        "Time to probe rtsp://(destination)/sample_100kbit.mp4 with ffprobe (Debian package ffmpeg): \
         `destination` (the source's hostname; may be host:port), `ffprobe` (ffprobe), `timeout` (30)",
        &["(service): probe time, ms; critical `Unable to stream (destination):(cause)` when it fails"],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let destination = o
        .destination
        .unwrap_or_else(|| args.settings.hostname.clone())
        .trim()
        .to_string();
    if destination.is_empty() || destination.contains(['/', ' ', '?', '#']) {
        return Err(args.invalid("destination", "must be a host name or address, optionally with :port"));
    }
    let ffprobe = o.ffprobe.unwrap_or_else(|| "ffprobe".into());
    if ffprobe.trim().is_empty() {
        return Err(args.invalid("ffprobe", "must name the ffprobe binary"));
    }
    Ok(Box::new(DarwinRtsp {
        url: format!("rtsp://{destination}/{SAMPLE}"),
        destination,
        ffprobe,
        budget: budget(args, DUCT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct DarwinRtsp {
    destination: String,
    url: String,
    ffprobe: String,
    budget: Duration,
    faults: Faults,
}

impl Source for DarwinRtsp {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

impl DarwinRtsp {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let start = Instant::now();
        let outcome = self.probe().await;
        let millis = start.elapsed().as_secs_f64() * 1000.0;
        let event = match outcome {
            Ok(()) => {
                self.faults.worked(ctx);
                ctx.create_event("ok", format!("RTSP Request time to {}", self.destination), millis)
            }
            Err(cause) => {
                let text = format!("Unable to stream {}:{cause}", self.destination);
                self.faults.failed(ctx, &text);
                ctx.create_event("critical", text, millis)
            }
        };
        vec![event]
    }

    async fn probe(&self) -> Result<(), String> {
        let program = find_program(&self.ffprobe)
            .ok_or_else(|| format!("`{}` not found on the PATH (Debian package ffmpeg)", self.ffprobe))?;
        let args = ["-v".to_string(), "error".to_string(), self.url.clone()];
        let out = run(&ForkRequest {
            program: &program,
            args: &args,
            env: &[],
            timeout: self.budget,
            output_limit: MAX_OUTPUT,
        })
        .await
        .map_err(|e| e.to_string())?;
        match out.code {
            Some(0) => Ok(()),
            code => {
                let said = cause(&out.stderr, &self.url);
                Err(match (code, said) {
                    (_, Some(said)) => said,
                    (Some(code), None) => format!("ffprobe exited with status {code} without a word"),
                    (None, None) => "ffprobe was killed by a signal".into(),
                })
            }
        }
    }
}

/// What ffprobe said went wrong: its last line (`URL: reason`, without
/// the URL) and, when it differs, the first detail before it (`[tcp @ 0x…]
/// Failed to resolve hostname …`, without the context tag).
pub(crate) fn cause(stderr: &str, url: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let last = lines.last()?;
    let summary = last
        .strip_prefix(url)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(last)
        .trim();
    let detail = lines[..lines.len() - 1].first().map(|l| untagged(l));
    let mut text = match detail {
        Some(detail) if !detail.is_empty() && detail != summary => format!("{summary} ({detail})"),
        _ => summary.to_string(),
    };
    if text.len() > MAX_CAUSE {
        let mut end = MAX_CAUSE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    Some(text)
}

/// A libav log line without its `[component @ 0x…] ` tag.
fn untagged(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((tag, rest)) if tag.contains(" @ ") => rest.trim(),
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ffprobe 5.1.9's stderr (`-v error`) for a port nothing listens on,
    /// a path the server does not have, and a name that does not resolve.
    const REFUSED: &str =
        "[tcp @ 0x55f017579dc0] Connection to tcp://127.0.0.1:1?timeout=0 failed: Connection refused\n\
                           rtsp://127.0.0.1:1/sample_100kbit.mp4: Connection refused\n";
    const NOT_FOUND: &str = "[rtsp @ 0x561174ddb1c0] method DESCRIBE failed: 404 Not Found\n\
                             rtsp://127.0.0.1:18558/sample_100kbit.mp4: Server returned 404 Not Found\n";
    const UNRESOLVED: &str =
        "[tcp @ 0x55ce00b1edc0] Failed to resolve hostname no.such.host.invalid: Name or service not known\n\
                              rtsp://no.such.host.invalid/sample_100kbit.mp4: Input/output error\n";

    #[test]
    fn the_cause_is_ffprobes_summary_with_its_detail() {
        assert_eq!(
            cause(REFUSED, "rtsp://127.0.0.1:1/sample_100kbit.mp4").unwrap(),
            "Connection refused (Connection to tcp://127.0.0.1:1?timeout=0 failed: Connection refused)"
        );
        assert_eq!(
            cause(NOT_FOUND, "rtsp://127.0.0.1:18558/sample_100kbit.mp4").unwrap(),
            "Server returned 404 Not Found (method DESCRIBE failed: 404 Not Found)"
        );
        assert_eq!(
            cause(UNRESOLVED, "rtsp://no.such.host.invalid/sample_100kbit.mp4").unwrap(),
            "Input/output error (Failed to resolve hostname no.such.host.invalid: Name or service not known)"
        );
    }

    #[test]
    fn odd_output_is_kept_short_and_silence_is_none() {
        assert_eq!(cause("", "rtsp://x/s"), None);
        assert_eq!(cause("\n  \n", "rtsp://x/s"), None);
        assert_eq!(cause("just one line\n", "rtsp://x/s").unwrap(), "just one line");
        let long = "é".repeat(400);
        let got = cause(&long, "rtsp://x/s").unwrap();
        assert!(got.ends_with('…') && got.len() <= MAX_CAUSE + '…'.len_utf8(), "{got}");
    }
}
