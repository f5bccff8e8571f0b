//! `duct.sources.linux.basic.LoadAverage`: the 1-minute load average from
//! `/proc/loadavg`.

use duct_core::config::Diagnostic;
use duct_core::{NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSpec};

use super::host::{reported, Host, HostFile};
use super::ParseError;

pub fn spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "duct.sources.linux.basic.LoadAverage",
        "The host's 1-minute load average (HOST_PROC/loadavg)",
        &["(service): 1-minute load average"],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    Ok(Box::new(LoadAverage::new(Host::of(args))))
}

pub(crate) struct LoadAverage {
    loadavg: HostFile,
}

impl LoadAverage {
    pub fn new(host: impl Into<Host>) -> Self {
        let host = host.into();
        LoadAverage {
            loadavg: host.file(host.paths().proc("loadavg")),
        }
    }
}

impl Source for LoadAverage {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let load = self.loadavg.parse(parse_loadavg).await;
            reported(ctx, load.map(|la| vec![ctx.create_event("ok", "Load average", la)]))
        })
    }
}

/// The 1-minute figure of `/proc/loadavg` (`0.63 0.39 0.23 1/79 17958`).
pub(crate) fn parse_loadavg(text: &str) -> Result<f64, ParseError> {
    let first = text
        .split_ascii_whitespace()
        .next()
        .ok_or(ParseError::Missing("load"))?;
    first.parse().map_err(|_| ParseError::Number {
        what: "the 1-minute load",
        text: first.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::{paths_in, Scratch};
    use crate::testing::context;
    use duct_core::Metric;

    #[test]
    fn parses_the_captured_file() {
        assert_eq!(
            parse_loadavg(include_str!("../../tests/fixtures/linux/loadavg")),
            Ok(0.37)
        );
        assert_eq!(parse_loadavg("12.5 1 1 2/300 4\n"), Ok(12.5));
        assert!(matches!(parse_loadavg(""), Err(ParseError::Missing(_))));
        assert!(matches!(parse_loadavg("x 1 1"), Err(ParseError::Number { .. })));
    }

    #[tokio::test]
    async fn reports_one_event_from_host_proc() {
        let dir = Scratch::new("load");
        dir.write("proc/loadavg", "3.25 2.00 1.00 1/80 100\n");
        let (ctx, _) = context("load");
        let mut src = LoadAverage::new(&paths_in(&dir.0));
        let events = src.get(&ctx).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].service, "load");
        assert_eq!(events[0].metric, Some(Metric::Float(3.25)));
        assert_eq!(events[0].description, "Load average");
        std::fs::remove_file(dir.0.join("proc/loadavg")).unwrap();
        let mut gone = LoadAverage::new(&paths_in(&dir.0));
        let err = gone.get(&ctx).await.unwrap_err();
        assert!(err.to_string().contains("loadavg"), "{err}");
    }
}
