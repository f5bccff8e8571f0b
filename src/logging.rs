//! Which log lines reach standard error. ductd's own crates (`ductd`,
//! `duct_*`) log at the level `-v` asks for; every other crate it is
//! built from (async-nats' connection events, hyper, rustls, …) only
//! from `warn`, so that what a library says at `info` about its own
//! workings does not drown the agent's log. ductd logs what matters of
//! those events itself, naming the source or output.
//!
//! | flags | ductd's crates | other crates |
//! |---|---|---|
//! | (none) | info | warn |
//! | `-v` | debug | info |
//! | `-vv` | trace | trace |
//!
//! `DUCTD_LOG` raises or lowers any of it, in tracing's directive syntax:
//! `DUCTD_LOG=async_nats=info` brings back async-nats' connection lines,
//! `DUCTD_LOG=debug` sets every other crate to debug (ductd's own keep
//! their flags' level unless named: `duct=debug`),
//! `DUCTD_LOG=hyper=debug,duct_runtime=trace` sets two. Its directives
//! come after those of the flags, so they win.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::LogFormat;

/// The variable whose directives raise or lower levels per crate.
pub const LOG_VARIABLE: &str = "DUCTD_LOG";

/// The target prefix of ductd's own crates: `ductd` and every `duct_*`.
const OWN: &str = "duct";

/// Sets up the subscriber; a `DUCTD_LOG` that does not parse is ignored,
/// with a warning saying why.
pub fn init(verbose: u8, format: LogFormat) {
    let raised = std::env::var(LOG_VARIABLE).ok();
    let (filter, refused) = filter(verbose, raised.as_deref());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let subscriber = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => subscriber.with(layer.with_ansi(false)).init(),
        LogFormat::Json => subscriber.with(layer.json()).init(),
    }
    if let Some(why) = refused {
        tracing::warn!("{LOG_VARIABLE} ignored: {why}");
    }
}

/// The levels for `-v` given `verbose` times, then `raised`'s directives;
/// when those do not parse, the flags' levels alone and why.
fn filter(verbose: u8, raised: Option<&str>) -> (Targets, Option<String>) {
    let (own, others) = match verbose {
        0 => (LevelFilter::INFO, LevelFilter::WARN),
        1 => (LevelFilter::DEBUG, LevelFilter::INFO),
        _ => (LevelFilter::TRACE, LevelFilter::TRACE),
    };
    let flags = Targets::new().with_default(others).with_target(OWN, own);
    let Some(raised) = raised.map(str::trim).filter(|r| !r.is_empty()) else {
        return (flags, None);
    };
    match raised.parse::<Targets>() {
        Ok(directives) => {
            let mut filter = flags;
            if let Some(level) = directives.default_level() {
                filter = filter.with_default(level);
            }
            (filter.with_targets(directives), None)
        }
        Err(e) => (flags, Some(format!("{raised:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn dependencies_log_from_warn_unless_raised() {
        let (quiet, _) = filter(0, None);
        assert!(quiet.would_enable("ductd", &Level::INFO));
        assert!(quiet.would_enable("duct_sources::nats", &Level::INFO));
        assert!(!quiet.would_enable("duct_sources::nats", &Level::DEBUG));
        assert!(!quiet.would_enable("async_nats::connector", &Level::INFO));
        assert!(quiet.would_enable("async_nats::connector", &Level::WARN));

        let (verbose, _) = filter(1, None);
        assert!(verbose.would_enable("duct_runtime", &Level::DEBUG));
        assert!(verbose.would_enable("async_nats", &Level::INFO));
        assert!(!verbose.would_enable("hyper", &Level::DEBUG));
        assert!(filter(2, None).0.would_enable("hyper", &Level::TRACE));
    }

    #[test]
    fn the_variable_raises_one_crate_or_all_and_wins_over_the_flags() {
        let (one, refused) = filter(0, Some("async_nats=info"));
        assert_eq!(refused, None);
        assert!(one.would_enable("async_nats::connector", &Level::INFO));
        assert!(!one.would_enable("hyper", &Level::INFO));
        assert!(one.would_enable("ductd", &Level::INFO));

        let (all, _) = filter(0, Some("debug"));
        assert!(all.would_enable("hyper", &Level::DEBUG));
        // ductd's own crates keep the flags' level unless named.
        assert!(!all.would_enable("ductd", &Level::DEBUG));

        let (quieter, _) = filter(1, Some("duct=warn"));
        assert!(!quieter.would_enable("duct_core", &Level::INFO));
    }

    #[test]
    fn a_bad_variable_is_refused_and_the_flags_apply() {
        let (flags, refused) = filter(0, Some("async_nats=loud"));
        assert!(refused.unwrap().contains("async_nats=loud"));
        assert!(!flags.would_enable("async_nats", &Level::INFO));
        assert!(flags.would_enable("ductd", &Level::INFO));
        assert_eq!(filter(0, Some("  ")).1, None);
    }
}
