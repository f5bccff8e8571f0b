//! `duct.sources.python.uwsgi.Emperor`: a uWSGI emperor's stats server
//! (`--emperor-stats host:port`), which writes one JSON document to each
//! client that connects and closes.
//!
//! Events, Duct's names: per vassal `(service).(vassal).accepting` (1 when
//! it accepts requests) and `.respawns`; and `(service).total.active`
//! (vassals accepting), `.total.accepting` (the sum of `accepting`),
//! `.total.respawns` (vassals that were respawned). An emperor that
//! cannot be read — refused, silent, not its JSON — is `(service)`
//! critical with no metric and the cause (Duct logged the exception and
//! sent nothing).

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;
use serde_json::Value;

use super::conn::{shown, Parsed};
use super::{budget, host_option, port_option, Conn, Faults, ServiceError, DEFAULT_TIMEOUT, MAX_REPLY_BYTES};

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    host: String,
    port: i64,
    /// Seconds the whole read may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "localhost".into(),
            port: 6001,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.python.uwsgi.Emperor",
        "A uWSGI emperor's stats server (JSON over TCP): `host` (localhost), `port` (6001), `timeout`",
        &[
            "(service).(vassal).accepting, .(vassal).respawns: as the emperor reports them",
            "(service).total.active: vassals accepting requests",
            "(service).total.accepting: the sum of the vassals' accepting",
            "(service).total.respawns: vassals respawned at least once",
            "(service): critical with no metric when the emperor cannot be read",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let _ = o.timeout;
    Ok(Box::new(Emperor {
        host: host_option(args, o.host)?,
        port: port_option(args, o.port)?,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct Emperor {
    host: String,
    port: u16,
    budget: Duration,
    faults: Faults,
}

service_source!(Emperor);

/// One vassal's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Vassal {
    pub id: String,
    pub accepting: i64,
    pub respawns: i64,
}

impl Emperor {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        match self.read().await {
            Ok(vassals) => {
                self.faults.worked(ctx);
                events(ctx, &vassals)
            }
            Err(e) => {
                let text = format!("{}:{} - {e}", self.host, self.port);
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }

    async fn read(&self) -> Result<Vec<Vassal>, ServiceError> {
        let mut conn = Conn::open(&self.host, self.port, self.budget, MAX_REPLY_BYTES, None).await?;
        let stats = conn.read("the emperor's stats", json_document).await?;
        parse_stats(&stats).map_err(|detail| ServiceError::Garbage {
            doing: "from the emperor".into(),
            detail,
        })
    }
}

/// A whole JSON document at the start of `buf`, or `None` while it is
/// still coming.
pub(crate) fn json_document(buf: &[u8]) -> Parsed<Value> {
    let mut docs = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    match docs.next() {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some((v, docs.byte_offset()))),
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(format!("not JSON ({e}): {}", shown(&String::from_utf8_lossy(buf)))),
    }
}

/// The vassals of the emperor's stats.
pub(crate) fn parse_stats(v: &Value) -> Result<Vec<Vassal>, String> {
    let Some(vassals) = v.get("vassals") else {
        return Err("no vassals: not an emperor's stats".into());
    };
    let vassals = vassals.as_array().ok_or("vassals is not a list")?;
    vassals
        .iter()
        .map(|n| {
            let id = n.get("id").and_then(Value::as_str).ok_or("a vassal without an id")?;
            let figure = |key: &str| {
                n.get(key)
                    .and_then(Value::as_i64)
                    .ok_or_else(|| format!("vassal {id} has no {key}"))
            };
            Ok(Vassal {
                id: id.to_string(),
                accepting: figure("accepting")?,
                respawns: figure("respawns")?,
            })
        })
        .collect()
}

fn events(ctx: &SourceContext, vassals: &[Vassal]) -> Vec<Event> {
    let mut evs = Vec::new();
    let (mut active, mut accepting, mut respawned) = (0, 0, 0);
    for v in vassals {
        if v.accepting > 0 {
            active += 1;
            accepting += v.accepting;
        }
        if v.respawns > 0 {
            respawned += 1;
        }
        evs.push(ctx.create_event_prefixed(&format!("{}.accepting", v.id), "ok", "accepting", v.accepting));
        evs.push(ctx.create_event_prefixed(&format!("{}.respawns", v.id), "ok", "respawns", v.respawns));
    }
    evs.push(ctx.create_event_prefixed("total.active", "ok", "active", active));
    evs.push(ctx.create_event_prefixed("total.accepting", "ok", "accepting", accepting));
    evs.push(ctx.create_event_prefixed("total.respawns", "ok", "respawns", respawned));
    evs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;
    use crate::testing::context;

    fn load(name: &str) -> Value {
        serde_json::from_slice(&fixture("uwsgi", name)).unwrap()
    }

    #[test]
    fn an_emperor_with_two_vassals_parses() {
        let vassals = parse_stats(&load("emperor-stats-2.0.21.json")).unwrap();
        let ids: Vec<&str> = vassals.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["beta.ini", "alpha.ini"]);
        assert!(vassals.iter().all(|v| v.accepting == 1 && v.respawns == 0));
        let (ctx, _) = context("uwsgi");
        let evs = events(&ctx, &vassals);
        let get = |name: &str| evs.iter().find(|e| e.service == name).unwrap().metric;
        assert_eq!(get("uwsgi.alpha.ini.accepting"), Some(duct_core::Metric::Int(1)));
        assert_eq!(get("uwsgi.total.active"), Some(duct_core::Metric::Int(2)));
        assert_eq!(get("uwsgi.total.accepting"), Some(duct_core::Metric::Int(2)));
        assert_eq!(get("uwsgi.total.respawns"), Some(duct_core::Metric::Int(0)));
    }

    #[test]
    fn a_killed_vassal_is_blacklisted_and_respawned() {
        // alpha.ini was killed with SIGKILL; the emperor throttled it
        // (the blacklist) and ran it again.
        let v = load("emperor-stats-respawned-2.0.21.json");
        assert_eq!(v["blacklist"][0]["id"], "alpha.ini");
        assert_eq!(parse_stats(&v).unwrap().len(), 2);
    }

    #[test]
    fn documents_are_read_whole_and_other_json_is_refused() {
        let text = fixture("uwsgi", "emperor-stats-2.0.21.json");
        assert_eq!(json_document(&text[..text.len() / 2]), Ok(None));
        assert!(matches!(json_document(&text), Ok(Some((_, n))) if n <= text.len()));
        assert!(json_document(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        let worker_stats = serde_json::json!({"version": "2.0.21", "workers": []});
        assert_eq!(
            parse_stats(&worker_stats).unwrap_err(),
            "no vassals: not an emperor's stats"
        );
    }
}
