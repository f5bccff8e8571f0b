//! `duct.sources.database.elasticsearch.ElasticSearch`: an Elasticsearch
//! cluster's health and size from `GET /_cluster/stats`, and each data
//! node's operation counters from `GET /_nodes/stats/indices`.
//!
//! Events, Duct's names: `(service).cluster.status` (red 0, yellow 1,
//! green 2), `.cluster.nodes`, `.indices`, `.shards.total`,
//! `.shards.primary`, `.documents.total`, `.documents.rate` (the count as
//! a Counter64: documents per second), `.documents.size` (bytes), and per
//! node host `.nodes.(host).search`, `.delete`, `.index`, `.get`
//! (Counter64: operations per second). Client nodes of old clusters
//! (`attributes.client: "true"`) are skipped, and a host with several
//! nodes reports its first, as in Duct.
//!
//! Beyond Duct: the status sets the state (yellow is a warning, red is
//! critical), and a partial answer (`_nodes.failed` above 0) makes
//! `.cluster.nodes` a warning naming the nodes that did not answer. A
//! cluster that cannot be read — refused, timed out, a 401 from a secured
//! cluster, a body that is not the stats — is `(service)` critical with no
//! metric and the cause (Duct logged the exception and sent nothing).

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;
use serde_json::Value;

use super::web::{json, Access, Api, WebError};
use super::{budget, Faults, DEFAULT_TIMEOUT};

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The cluster's base URL.
    url: String,
    user: Option<String>,
    password: Option<String>,
    /// Verify an https server's certificate (against `ca`, else the
    /// system's CA store).
    tls_verify: bool,
    ca: Option<std::path::PathBuf>,
    /// Seconds both requests may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "http://localhost:9200".into(),
            user: None,
            password: None,
            tls_verify: true,
            ca: None,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.database.elasticsearch.ElasticSearch",
        "Elasticsearch /_cluster/stats and /_nodes/stats/indices over HTTP: `url` (http://localhost:9200), \
         `user`, `password`, `tls_verify` (true), `ca`, `timeout`",
        &[
            "(service).cluster.status: red 0 (critical), yellow 1 (warning), green 2",
            "(service).cluster.nodes: nodes in the cluster (a warning when some did not answer)",
            "(service).indices, .shards.total, .shards.primary, .documents.total, .documents.size (bytes)",
            "(service).documents.rate: documents per second (Counter64)",
            "(service).nodes.(host).search, .delete, .index, .get: operations per second (Counter64)",
            "(service): critical with no metric when the cluster cannot be read",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let _ = o.timeout;
    let budget = budget(args, DEFAULT_TIMEOUT);
    let access = Access {
        user: o.user,
        password: o.password,
        tls_verify: o.tls_verify,
        ca: o.ca,
    };
    Ok(Box::new(ElasticSearch {
        api: Api::new(args, "url", o.url.trim_end_matches('\n'), access, budget)?,
        budget,
        faults: Faults::default(),
    }))
}

pub struct ElasticSearch {
    api: Api,
    budget: Duration,
    faults: Faults,
}

service_source!(ElasticSearch, counters);

impl ElasticSearch {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let read = self.api.within(async {
            let cluster = parse_cluster(&json(&self.api.get_path("/_cluster/stats").await?)?);
            let cluster = cluster.map_err(|e| WebError::garbage(format!("/_cluster/stats: {e}")))?;
            let nodes = parse_nodes(&json(&self.api.get_path("/_nodes/stats/indices").await?)?);
            let nodes = nodes.map_err(|e| WebError::garbage(format!("/_nodes/stats/indices: {e}")))?;
            Ok((cluster, nodes))
        });
        match read.await {
            Ok((cluster, nodes)) => {
                self.faults.worked(ctx);
                events(ctx, &cluster, &nodes)
            }
            Err(e) => {
                let text = format!("{} - {e}", self.api.url());
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }
}

/// The figures of `/_cluster/stats`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cluster {
    /// `green`, `yellow` or `red`.
    pub status: String,
    pub nodes: u64,
    pub indices: u64,
    pub shards: u64,
    pub primaries: u64,
    pub documents: u64,
    pub store_bytes: u64,
    /// Nodes that did not answer, with ES's reasons, when the answer is
    /// partial.
    pub failed: Option<(u64, u64, String)>,
}

/// One node's counters of `/_nodes/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub host: String,
    pub search: u64,
    pub delete: u64,
    pub index: u64,
    pub get: u64,
}

fn events(ctx: &SourceContext, c: &Cluster, nodes: &[Node]) -> Vec<Event> {
    let (status, state) = match c.status.as_str() {
        "green" => (2, "ok"),
        "yellow" => (1, "warning"),
        _ => (0, "critical"),
    };
    let nodes_event = match &c.failed {
        None => ctx.create_event_prefixed("cluster.nodes", "ok", "Nodes", c.nodes),
        Some((failed, total, why)) => ctx.create_event_prefixed(
            "cluster.nodes",
            "warning",
            format!("Nodes: {failed} of {total} did not answer: {why}"),
            c.nodes,
        ),
    };
    let mut evs = vec![
        ctx.create_event_prefixed("cluster.status", state, format!("Status: {}", c.status), status),
        nodes_event,
        ctx.create_event_prefixed("indices", "ok", "Indices", c.indices),
        ctx.create_event_prefixed("shards.total", "ok", "Shards", c.shards),
        ctx.create_event_prefixed("shards.primary", "ok", "Primary shards", c.primaries),
        ctx.create_event_prefixed("documents.total", "ok", "Documents", c.documents),
        ctx.create_event_prefixed("documents.rate", "ok", "Documents", c.documents)
            .aggregated(Aggregation::Counter64),
        ctx.create_event_prefixed("documents.size", "ok", "Store size", c.store_bytes),
    ];
    for n in nodes {
        for (name, value) in [
            ("search", n.search),
            ("delete", n.delete),
            ("index", n.index),
            ("get", n.get),
        ] {
            evs.push(
                ctx.create_event_prefixed(&format!("nodes.{}.{name}", n.host), "ok", name, value)
                    .aggregated(Aggregation::Counter64),
            );
        }
    }
    evs
}

/// A whole number at `pointer` in `v`, or the complaint naming it.
fn count(v: &Value, pointer: &str) -> Result<u64, String> {
    match v.pointer(pointer) {
        Some(n) => n
            .as_u64()
            .ok_or_else(|| format!("{} is {n}, not a count", &pointer[1..].replace('/', "."))),
        None => Err(format!("no {}", &pointer[1..].replace('/', "."))),
    }
}

/// Parses `/_cluster/stats`; an error body (`{"error": …, "status": 500}`)
/// is refused with Elasticsearch's reason.
pub(crate) fn parse_cluster(v: &Value) -> Result<Cluster, String> {
    if let Some(error) = v.get("error") {
        return Err(format!("the cluster answered an error: {}", reason(error)));
    }
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or("no status: not the cluster stats")?;
    if !matches!(status, "green" | "yellow" | "red") {
        return Err(format!("status is {status:?}, not green, yellow or red"));
    }
    let failed = match count(v, "/_nodes/failed") {
        Ok(n) if n > 0 => {
            let why: Vec<String> = v
                .pointer("/_nodes/failures")
                .and_then(Value::as_array)
                .map(|all| all.iter().map(reason).collect())
                .unwrap_or_default();
            Some((n, count(v, "/_nodes/total").unwrap_or(n), why.join("; ")))
        }
        _ => None,
    };
    Ok(Cluster {
        status: status.to_string(),
        nodes: count(v, "/nodes/count/total")?,
        indices: count(v, "/indices/count")?,
        shards: count(v, "/indices/shards/total")?,
        primaries: count(v, "/indices/shards/primaries")?,
        documents: count(v, "/indices/docs/count")?,
        store_bytes: count(v, "/indices/store/size_in_bytes")?,
        failed,
    })
}

/// Parses `/_nodes/stats` (or its `indices` part): the nodes that are not
/// client nodes, one per host, in host order.
pub(crate) fn parse_nodes(v: &Value) -> Result<Vec<Node>, String> {
    if let Some(error) = v.get("error") {
        return Err(format!("the cluster answered an error: {}", reason(error)));
    }
    let all = v
        .get("nodes")
        .and_then(Value::as_object)
        .ok_or("no nodes: not the nodes stats")?;
    let mut nodes: Vec<Node> = Vec::new();
    for (id, n) in all {
        if n.pointer("/attributes/client").and_then(Value::as_str) == Some("true") {
            continue;
        }
        let host = n
            .get("host")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("node {id} has no host"))?;
        if nodes.iter().any(|known| known.host == host) {
            continue;
        }
        let field = |pointer: &str| count(n, pointer).map_err(|e| format!("node {id}: {e}"));
        nodes.push(Node {
            host: host.to_string(),
            search: field("/indices/search/query_total")?,
            delete: field("/indices/indexing/delete_total")?,
            index: field("/indices/indexing/index_total")?,
            get: field("/indices/get/total")?,
        });
    }
    nodes.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(nodes)
}

/// Elasticsearch's words for an error or a node failure: the reason of
/// the deepest cause.
fn reason(error: &Value) -> String {
    let mut e = error;
    while let Some(cause) = e.get("caused_by") {
        e = cause;
    }
    match (
        e.get("type").and_then(Value::as_str),
        e.get("reason").and_then(Value::as_str),
    ) {
        (Some(kind), Some(why)) => format!("{kind}: {why}"),
        (None, Some(why)) => why.to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;
    use crate::testing::context;

    fn load(name: &str) -> Value {
        serde_json::from_slice(&fixture("elasticsearch", name)).unwrap()
    }

    #[test]
    fn cluster_stats_of_7_17_parse() {
        let c = parse_cluster(&load("cluster_stats-7.17.json")).unwrap();
        assert_eq!(
            c,
            Cluster {
                status: "green".into(),
                nodes: 3,
                indices: 12,
                shards: 48,
                primaries: 24,
                documents: 1843920,
                store_bytes: 2147483648,
                failed: None,
            }
        );
    }

    #[test]
    fn a_partial_answer_names_the_nodes_that_failed() {
        let c = parse_cluster(&load("cluster_stats-partial-7.17.json")).unwrap();
        assert_eq!(c.status, "yellow");
        assert_eq!(c.nodes, 2);
        let (failed, total, why) = c.failed.clone().unwrap();
        assert_eq!((failed, total), (1, 3));
        assert_eq!(
            why,
            "node_not_connected_exception: [es-3][10.0.0.13:9300] Node not connected"
        );
        let (ctx, _) = context("es");
        let evs = events(&ctx, &c, &[]);
        assert_eq!(evs[0].service, "es.cluster.status");
        assert_eq!(
            (evs[0].state.as_deref(), evs[0].metric),
            (Some("warning"), Some(duct_core::Metric::Int(1)))
        );
        assert_eq!(evs[1].state.as_deref(), Some("warning"));
        assert!(
            evs[1].description.starts_with("Nodes: 1 of 3 did not answer"),
            "{}",
            evs[1].description
        );
    }

    #[test]
    fn node_counters_are_per_host_without_client_nodes() {
        let nodes = parse_nodes(&load("nodes_stats_indices-7.17.json")).unwrap();
        let hosts: Vec<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.11", "10.0.0.12", "10.0.0.13"]);
        assert_eq!(
            nodes[0],
            Node {
                host: "10.0.0.11".into(),
                search: 70211,
                delete: 120,
                index: 912345,
                get: 4410
            }
        );
        let legacy = parse_nodes(&load("nodes_stats-client-1.7.json")).unwrap();
        assert_eq!(legacy.len(), 1, "the client node is skipped");
        assert_eq!(legacy[0].host, "data1");
        assert_eq!(legacy[0].search, 900);
    }

    #[test]
    fn events_are_ducts_with_the_status_as_state() {
        let (ctx, _) = context("es");
        let c = parse_cluster(&load("cluster_stats-7.17.json")).unwrap();
        let nodes = parse_nodes(&load("nodes_stats_indices-7.17.json")).unwrap();
        let evs = events(&ctx, &c, &nodes);
        let names: Vec<&str> = evs.iter().take(8).map(|e| e.service.as_str()).collect();
        assert_eq!(
            names,
            [
                "es.cluster.status",
                "es.cluster.nodes",
                "es.indices",
                "es.shards.total",
                "es.shards.primary",
                "es.documents.total",
                "es.documents.rate",
                "es.documents.size"
            ]
        );
        assert_eq!(evs[0].metric, Some(duct_core::Metric::Int(2)));
        assert_eq!(evs[6].aggregation, Some(Aggregation::Counter64));
        assert_eq!(evs.len(), 8 + 3 * 4);
        assert_eq!(evs[8].service, "es.nodes.10.0.0.11.search");
        let red = Cluster {
            status: "red".into(),
            ..c
        };
        let evs = events(&ctx, &red, &[]);
        assert_eq!(
            (evs[0].state.as_deref(), evs[0].metric),
            (Some("critical"), Some(duct_core::Metric::Int(0)))
        );
    }

    #[test]
    fn error_bodies_and_other_json_are_refused() {
        let denied = load("unauthorized-7.17.json");
        assert_eq!(
            parse_cluster(&denied).unwrap_err(),
            "the cluster answered an error: security_exception: missing authentication credentials for REST \
             request [/_cluster/stats]"
        );
        assert!(parse_nodes(&denied).is_err());
        let nodes_as_cluster = parse_cluster(&load("nodes_stats_indices-7.17.json")).unwrap_err();
        assert_eq!(nodes_as_cluster, "no status: not the cluster stats");
        let mut truncated = load("cluster_stats-7.17.json");
        truncated["indices"].as_object_mut().unwrap().remove("docs");
        assert_eq!(parse_cluster(&truncated).unwrap_err(), "no indices.docs.count");
    }
}
