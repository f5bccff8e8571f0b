//! `duct.sources.munin.MuninNode`: every field of every plugin of a
//! munin-node, over the munin-node protocol (TCP, port 4949).
//!
//! One conversation per tick: the banner, `cap multigraph`, `list`, then
//! `config` and `fetch` for every plugin, pipelined in one write. The
//! plugin's `config` says each field's type: `COUNTER` fields are sent as
//! `Counter32` and `DERIVE` fields as `Counter` for the router to turn into
//! rates (as Duct did), anything else as the value read. Values of `U`
//! (unknown) are left out; a value written `epoch:value` is stamped with
//! that time.
//!
//! Names: `(category).(plugin).(field)`, the category being the plugin's
//! `graph_category` (`system` when it has none), as in Duct. A multigraph
//! plugin's graphs are named by their `multigraph` names
//! (`disk.diskstats_latency.vda.vda_avgwait`); Duct folded them all into the
//! plugin's name, where fields of different graphs could collide.
//!
//! Faults: `(service)` critical, without a metric, naming the cause.

use std::collections::HashMap;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Metric, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::conn::shown;
use super::{budget, host_option, port_option, Conn, Faults, ServiceError, MAX_REPLY_BYTES};

/// A node runs every plugin at each fetch; the budget without a `timeout`
/// (capped at 90 % of the interval) leaves room for a node with many.
const DEFAULT_TIMEOUT: f64 = 30.0;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    host: String,
    port: i64,
    /// Seconds the whole conversation may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "localhost".into(),
            port: 4949,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.munin.MuninNode",
        "Every plugin's fields from a munin-node: `host` (localhost), `port` (4949), `timeout`",
        &[
            "(service).(graph_category, default system).(plugin).(field): the value; COUNTER as a Counter32 rate, \
             DERIVE as a Counter rate",
            "(service): critical with no metric when the node fails",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    Ok(Box::new(MuninNode {
        host: host_option(args, o.host)?,
        port: port_option(args, o.port)?,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct MuninNode {
    host: String,
    port: u16,
    budget: Duration,
    faults: Faults,
}

service_source!(MuninNode, counters);

impl MuninNode {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        match self.read_node().await {
            Ok(plugins) => {
                self.faults.worked(ctx);
                plugins
                    .iter()
                    .flat_map(|(config, values)| readings(config, values))
                    .map(|r| {
                        let ev = ctx.create_event_prefixed(&r.name, "ok", r.description, r.value);
                        let ev = match r.time {
                            Some(t) => ev.at(t),
                            None => ev,
                        };
                        match r.aggregation {
                            Some(a) => ev.aggregated(a),
                            None => ev,
                        }
                    })
                    .collect()
            }
            Err(e) => {
                let text = format!("{}:{} - {e}", self.host, self.port);
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }

    /// Every plugin's configuration and values.
    async fn read_node(&self) -> Result<Vec<(PluginConfig, Vec<Value>)>, ServiceError> {
        let mut conn = Conn::open(&self.host, self.port, self.budget, MAX_REPLY_BYTES, None).await?;
        let banner = conn.line("the banner").await?;
        if !banner.starts_with("# munin node at ") {
            return Err(ServiceError::Garbage {
                doing: "as a banner".into(),
                detail: format!("{} is not munin-node's", shown(&banner)),
            });
        }
        conn.send(b"cap multigraph\nlist\n", "`list`").await?;
        let cap = conn.line("the reply to `cap`").await?;
        if !cap.starts_with("cap") {
            return Err(ServiceError::Garbage {
                doing: "to `cap multigraph`".into(),
                detail: shown(&cap),
            });
        }
        let list = conn.line("the reply to `list`").await?;
        let plugins = parse_list(&list);
        let mut request = String::new();
        for p in &plugins {
            request.push_str(&format!("config {p}\nfetch {p}\n"));
        }
        request.push_str("quit\n");
        conn.send(request.as_bytes(), "`config` and `fetch`").await?;
        let mut out = Vec::with_capacity(plugins.len());
        for p in plugins {
            let (config, _) = conn
                .lines_until(&format!("the reply to `config {p}`"), |l| l == ".")
                .await?;
            let (values, _) = conn
                .lines_until(&format!("the reply to `fetch {p}`"), |l| l == ".")
                .await?;
            out.push((parse_config(p, &config), parse_fetch(p, &values)));
        }
        Ok(out)
    }
}

/// The plugins of a `list` reply. Names are words without controls, which
/// is all munin-node lists; anything else is skipped rather than sent
/// back as a command.
pub(crate) fn parse_list(line: &str) -> Vec<&str> {
    line.split_ascii_whitespace()
        .filter(|p| p.chars().all(|c| c.is_ascii_graphic()))
        .collect()
}

/// What a field's configuration says.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldConfig {
    /// `GAUGE` (the default), `COUNTER`, `DERIVE` or `ABSOLUTE`.
    pub kind: Option<String>,
    pub info: Option<String>,
}

/// One graph of a plugin: the plugin's own, or one of a multigraph
/// plugin's.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GraphConfig {
    pub category: Option<String>,
    pub fields: HashMap<String, FieldConfig>,
}

/// A plugin's `config` reply: its graphs by name (the plugin's name for a
/// plain plugin, the `multigraph` names otherwise).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PluginConfig {
    pub plugin: String,
    pub graphs: HashMap<String, GraphConfig>,
}

/// Parses a `config` reply (the lines before its `.`). Comment lines (`#
/// Unknown service`, `# timeout`) and lines that are not `key value`
/// are skipped.
pub(crate) fn parse_config(plugin: &str, lines: &[String]) -> PluginConfig {
    let mut config = PluginConfig {
        plugin: plugin.to_string(),
        graphs: HashMap::new(),
    };
    let mut graph = plugin.to_string();
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        if key == "multigraph" {
            graph = value.to_string();
            continue;
        }
        let entry = config.graphs.entry(graph.clone()).or_default();
        if key == "graph_category" {
            entry.category = Some(value.to_string());
        } else if let Some((field, attr)) = key.split_once('.') {
            let f = entry.fields.entry(field.to_string()).or_default();
            match attr {
                "type" => f.kind = Some(value.to_ascii_uppercase()),
                "info" => f.info = Some(value.to_string()),
                _ => {}
            }
        }
    }
    config
}

/// One value of a `fetch` reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    pub graph: String,
    pub field: String,
    pub value: Metric,
    /// The time the plugin gave (`epoch:value`), if any.
    pub time: Option<f64>,
}

/// Parses a `fetch` reply (the lines before its `.`): `field.value N`
/// lines, grouped by `multigraph` lines. Unknown values (`U`) and lines
/// that are not values are skipped.
pub(crate) fn parse_fetch(plugin: &str, lines: &[String]) -> Vec<Value> {
    let mut graph = plugin.to_string();
    let mut out = Vec::new();
    for line in lines {
        let Some((key, raw)) = line.split_once(' ') else {
            continue;
        };
        if key == "multigraph" {
            graph = raw.trim().to_string();
            continue;
        }
        let Some(field) = key.strip_suffix(".value") else {
            continue;
        };
        let raw = raw.trim();
        let (time, number) = match raw.split_once(':') {
            Some((t, v)) => match t.parse::<f64>() {
                Ok(t) => (Some(t), v),
                Err(_) => continue,
            },
            None => (None, raw),
        };
        let Some(value) = number_of(number) else {
            continue;
        };
        out.push(Value {
            graph: graph.clone(),
            field: field.to_string(),
            value,
            time,
        });
    }
    out
}

/// A munin value: integers stay integers, `U` and other text is none.
fn number_of(text: &str) -> Option<Metric> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Metric::Int(i));
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite()).map(Metric::Float)
}

/// One event's worth: its name under the service, and how to send it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub name: String,
    pub description: String,
    pub value: Metric,
    pub time: Option<f64>,
    pub aggregation: Option<Aggregation>,
}

/// A plugin's values named and typed by its configuration.
pub(crate) fn readings(config: &PluginConfig, values: &[Value]) -> Vec<Reading> {
    let own = config.graphs.get(&config.plugin);
    values
        .iter()
        .map(|v| {
            let graph = config.graphs.get(&v.graph);
            let category = graph
                .and_then(|g| g.category.as_deref())
                .or_else(|| own.and_then(|g| g.category.as_deref()))
                .unwrap_or("system");
            let field = graph.and_then(|g| g.fields.get(&v.field));
            let base = format!("{}.{}", v.graph, v.field);
            let aggregation = match field.and_then(|f| f.kind.as_deref()) {
                Some("COUNTER") => Some(Aggregation::Counter32),
                Some("DERIVE") => Some(Aggregation::Counter),
                _ => None,
            };
            Reading {
                name: format!("{category}.{base}"),
                description: field.and_then(|f| f.info.clone()).unwrap_or_else(|| base.clone()),
                value: v.value,
                time: v.time,
                aggregation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    /// The first `head` lines of a captured session (banner, replies to
    /// `cap` and `list`), then its replies split at the `.` lines.
    fn session(name: &str, head: usize) -> (Vec<String>, Vec<Vec<String>>) {
        let text = String::from_utf8(fixture("munin", name)).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut replies = vec![Vec::new()];
        for l in &lines[head..] {
            if l == "." {
                replies.push(Vec::new());
            } else {
                replies.last_mut().unwrap().push(l.clone());
            }
        }
        (lines[..head].to_vec(), replies)
    }

    #[test]
    fn a_session_with_munin_node_2_0_parses() {
        let (head, r) = session("munin-session.txt", 3);
        assert_eq!(head[0], "# munin node at vm");
        assert_eq!(
            parse_list(&head[2]),
            ["cpu", "diskstats", "load", "nocat", "requests", "uptime"]
        );
        // config and fetch of: requests, nocat, uptime, cpu, load.
        let requests = parse_config("requests", &r[0]);
        let got = readings(&requests, &parse_fetch("requests", &r[1]));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name, "webserver.requests.hits");
        assert_eq!(got[0].description, "Requests served");
        assert_eq!(got[0].aggregation, Some(Aggregation::Counter32));
        assert_eq!(got[1].name, "webserver.requests.errors");
        assert_eq!(got[1].aggregation, Some(Aggregation::Counter));
        assert_eq!(got[1].value, Metric::Int(7));
        assert_eq!(got[2].name, "webserver.requests.inflight");
        assert_eq!((got[2].aggregation, got[2].value), (None, Metric::Float(3.5)));
        assert_eq!(got[2].description, "requests.inflight", "no info: Duct's fallback");

        let nocat = readings(&parse_config("nocat", &r[2]), &parse_fetch("nocat", &r[3]));
        assert_eq!(nocat[0].name, "system.nocat.temp", "no graph_category: system");

        let cpu = readings(&parse_config("cpu", &r[6]), &parse_fetch("cpu", &r[7]));
        assert_eq!(cpu.len(), 9);
        assert!(cpu.iter().all(|c| c.aggregation == Some(Aggregation::Counter)));
        assert_eq!(cpu[0].name, "system.cpu.user");
        assert_eq!(cpu[0].value, Metric::Int(144559));
        let load = readings(&parse_config("load", &r[8]), &parse_fetch("load", &r[9]));
        assert_eq!(load[0].name, "system.load.load");
        assert_eq!(load[0].description, "5 minute load average");
    }

    #[test]
    fn multigraph_plugins_are_named_by_graph() {
        let (_, r) = session("munin-multigraph.txt", 2);
        let config = parse_config("diskstats", &r[0]);
        assert!(
            config.graphs.contains_key("diskstats_latency.vda"),
            "{:?}",
            config.graphs.keys()
        );
        let latency = &config.graphs["diskstats_latency"];
        assert_eq!(latency.category.as_deref(), Some("disk"));
        assert_eq!(latency.fields["vda_avgwait"].kind.as_deref(), Some("GAUGE"));
        // The node had no state yet, so its first fetch was empty; the
        // second, captured apart, has every graph's values.
        assert!(parse_fetch("diskstats", &r[1]).is_empty());
        let (_, fetched) = session("munin-multigraph-fetch.txt", 2);
        let values = parse_fetch("diskstats", &fetched[0]);
        assert_eq!(values.len(), 17);
        let got = readings(&config, &values);
        assert_eq!(got[0].name, "disk.diskstats_latency.vda_avgwait");
        assert_eq!(got[0].value, Metric::Float(0.0010952380952381));
        assert_eq!(got[0].description, "Average wait time for an I/O request");
        let svctm = got
            .iter()
            .find(|g| g.name == "disk.diskstats_latency.vda.svctm")
            .unwrap();
        assert_eq!(svctm.value, Metric::Float(6.56814449917898e-05));
        assert!(
            got.iter().all(|g| g.aggregation.is_none()),
            "diskstats' fields are gauges"
        );
        assert!(
            got.iter().all(|g| g.name.starts_with("disk.diskstats_")),
            "every graph is in `disk`"
        );
        let unknown: Vec<String> = ["multigraph diskstats_iops.vda", "rdio.value U"]
            .map(String::from)
            .to_vec();
        assert!(parse_fetch("diskstats", &unknown).is_empty(), "U is unknown");
        // An unknown service is a comment and an empty reply.
        assert_eq!(r[2], ["# Unknown service"]);
        assert!(parse_config("nosuch", &r[2]).graphs.is_empty());
    }

    #[test]
    fn timestamped_and_odd_values() {
        let lines: Vec<String> = [
            "a.value 1700000000:42",
            "b.value -1.5e3",
            "c.value nan",
            "d.extinfo text",
            "garbage",
        ]
        .map(String::from)
        .to_vec();
        let v = parse_fetch("p", &lines);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].time, v[0].value), (Some(1_700_000_000.0), Metric::Int(42)));
        assert_eq!(v[1].value, Metric::Float(-1500.0));
        assert_eq!(parse_list("a b\tc \u{7}x"), ["a", "b", "c"]);
    }
}
