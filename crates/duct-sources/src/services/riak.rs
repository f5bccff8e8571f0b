//! `duct.sources.riak.RiakStats`: a Riak KV node's `/stats` JSON over
//! HTTP.
//!
//! Events, Duct's names: `(service).gets_per_second` and
//! `.puts_per_second`, the GETs and PUTs the node coordinated in the last
//! minute (`node_gets`, `node_puts`) divided by 60. A node that cannot be
//! read — refused, timed out, not 2xx, not Riak's statistics — is
//! `(service)` critical with no metric and the cause (Duct logged the
//! exception and sent nothing).

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;
use serde_json::Value;

use super::web::{json, Access, Api, WebError};
use super::{budget, Faults, DEFAULT_TIMEOUT};

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The statistics; `http://{hostname}:8098/stats` by default.
    url: Option<String>,
    useragent: String,
    /// Seconds the request may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: None,
            useragent: "Duct Riak stats checker".into(),
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.riak.RiakStats",
        "A Riak node's /stats over HTTP: `url` (http://{hostname}:8098/stats), `useragent` \
         (Duct Riak stats checker), `timeout`",
        &[
            "(service).gets_per_second, .puts_per_second: the last minute's node_gets and node_puts / 60",
            "(service): critical with no metric when the node cannot be read",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let _ = o.timeout;
    let url = o
        .url
        .unwrap_or_else(|| format!("http://{}:8098/stats", args.settings.hostname));
    let budget = budget(args, DEFAULT_TIMEOUT);
    let api = Api::new(args, "url", &url, Access::default(), budget)?.user_agent(args, "useragent", &o.useragent)?;
    Ok(Box::new(RiakStats {
        api,
        budget,
        faults: Faults::default(),
    }))
}

pub struct RiakStats {
    api: Api,
    budget: Duration,
    faults: Faults,
}

service_source!(RiakStats);

impl RiakStats {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let read = async { parse_stats(&json(&self.api.get().await?)?).map_err(WebError::garbage) };
        match read.await {
            Ok((gets, puts)) => {
                self.faults.worked(ctx);
                vec![
                    ctx.create_event_prefixed("gets_per_second", "ok", "GETs per second for past minute", gets),
                    ctx.create_event_prefixed("puts_per_second", "ok", "PUTs per second for past minute", puts),
                ]
            }
            Err(e) => {
                let text = format!("{} - {e}", self.api.url());
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }
}

/// GETs and PUTs per second over the last minute, from `/stats`.
pub(crate) fn parse_stats(v: &Value) -> Result<(f64, f64), String> {
    let per_second = |key: &str| match v.get(key) {
        Some(n) => n
            .as_f64()
            .map(|n| n / 60.0)
            .ok_or_else(|| format!("{key} is {n}, not a number")),
        None => Err(format!("no {key}: not Riak's statistics")),
    };
    Ok((per_second("node_gets")?, per_second("node_puts")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    #[test]
    fn riak_2_2_stats_give_the_last_minutes_rates() {
        let v: Value = serde_json::from_slice(&fixture("riak", "stats-2.2.json")).unwrap();
        assert_eq!(parse_stats(&v).unwrap(), (5430.0 / 60.0, 1266.0 / 60.0));
    }

    #[test]
    fn other_json_is_refused() {
        let v: Value = serde_json::from_str(r#"{"error":"not_found"}"#).unwrap();
        assert_eq!(parse_stats(&v).unwrap_err(), "no node_gets: not Riak's statistics");
        let v: Value = serde_json::from_str(r#"{"node_gets":"many","node_puts":1}"#).unwrap();
        assert_eq!(parse_stats(&v).unwrap_err(), "node_gets is \"many\", not a number");
    }
}
