//! `duct.sources.docker.ContainerStats`: memory, CPU and block I/O of each
//! running container, from the Docker Engine API — on the daemon's Unix
//! socket by default (`unix:/var/run/docker.sock`), or over HTTP. Podman's
//! Docker-compatible socket (`podman system service`) answers the same
//! requests.
//!
//! Each tick lists the running containers (`/containers/json`), then for
//! every container, all at once, reads one sample of its statistics
//! (`/containers/(id)/stats?stream=false&one-shot=true`: without
//! `one-shot` the daemon waits for a second sample, a second or two per
//! container) and its configuration (`/containers/(id)/json`, for
//! `MARATHON_APP_ID`).
//!
//! Events, Duct's names, per container (its name without the `/`, or its
//! `MARATHON_APP_ID` when it has one): `(service).(name).mem_limit` and
//! `.mem_used` (bytes), `.io_(op)` for each block I/O figure the daemon
//! lists (`io_read`, `io_write`, and on cgroup v1 `io_sync`, `io_async`,
//! `io_total`, …: Counter64, bytes per second) and, from the second tick,
//! `.cpu`: the container's share of the whole machine's CPU time since the
//! last tick, in whole percent (Duct's figure). The daemon that cannot be
//! read is `(service)` critical with no metric and the cause; a container
//! that cannot be read (it stopped meanwhile) is `(service).(name)`
//! critical.

use std::collections::HashMap;
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
    /// The daemon: `unix:/path/to.sock` or `http://host:port`.
    url: String,
    /// Seconds a tick's requests may take together (also the common
    /// option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "unix:/var/run/docker.sock".into(),
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.docker.ContainerStats",
        "Running containers' statistics from the Docker Engine API (Podman's compatible socket too): \
         `url` (unix:/var/run/docker.sock, or http://host:port), `timeout`",
        &[
            "(service).(container).mem_limit, .mem_used: bytes",
            "(service).(container).cpu: % of the machine's CPU time since the last tick (from the second tick)",
            "(service).(container).io_(op): block I/O bytes per second (Counter64): io_read, io_write, \
             and on cgroup v1 io_sync, io_async, io_total, …",
            "(service): critical with no metric when the daemon cannot be read; (service).(container) when \
             that container cannot",
        ],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let _ = o.timeout;
    let budget = budget(args, DEFAULT_TIMEOUT);
    Ok(Box::new(ContainerStats {
        api: Api::new(args, "url", &o.url, Access::default(), budget)?,
        budget,
        cpu: HashMap::new(),
        faults: Faults::default(),
    }))
}

pub struct ContainerStats {
    api: Api,
    budget: Duration,
    /// Each container's (machine, container) CPU time at the last tick,
    /// by name, for the next tick's share.
    cpu: HashMap<String, (u64, u64)>,
    faults: Faults,
}

service_source!(ContainerStats, counters);

/// One container's reading: its name, and its statistics or why not.
type Reading = (String, Result<Sample, WebError>);

impl ContainerStats {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let api = &self.api;
        let read = api.within(async {
            let list = parse_containers(&json(&api.get_path("/containers/json").await?)?).map_err(WebError::garbage)?;
            let reads = list.into_iter().map(|(id, name)| async move {
                let sample = async {
                    let stats = json(
                        &api.get_path(&format!("/containers/{id}/stats?stream=false&one-shot=true"))
                            .await?,
                    )?;
                    let sample = parse_stats(&stats).map_err(WebError::garbage)?;
                    let inspect = json(&api.get_path(&format!("/containers/{id}/json")).await?)?;
                    Ok((marathon_app_id(&inspect), sample))
                };
                match sample.await {
                    Ok((Some(app), sample)) => (app, Ok(sample)),
                    Ok((None, sample)) => (name, Ok(sample)),
                    Err(e) => (name, Err(e)),
                }
            });
            Ok(futures_util::future::join_all(reads).await)
        });
        let readings: Vec<Reading> = match read.await {
            Ok(readings) => readings,
            Err(e) => {
                let text = format!("{} - {e}", self.api.url());
                self.faults.failed(ctx, &text);
                return vec![ctx.create_event("critical", text, None::<i64>)];
            }
        };
        self.faults.worked(ctx);
        let mut evs = Vec::new();
        let mut seen = HashMap::new();
        for (name, sample) in readings {
            match sample {
                Ok(sample) => {
                    let last = self.cpu.get(&name).copied();
                    evs.extend(events(ctx, &name, &sample, last));
                    seen.insert(name, (sample.system_cpu, sample.container_cpu));
                }
                Err(e) => {
                    let text = format!("container {name} - {e}");
                    tracing::debug!(service = %ctx.service(), "{text}");
                    evs.push(ctx.create_event_prefixed(&name, "critical", text, None::<i64>));
                }
            }
        }
        // Containers gone since the last tick are forgotten.
        self.cpu = seen;
        evs
    }
}

/// One statistics sample of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub mem_limit: u64,
    pub mem_used: u64,
    /// Block I/O bytes by operation, lower case, in the daemon's order.
    pub io: Vec<(String, u64)>,
    /// The machine's CPU time (ns), 0 when the daemon does not say.
    pub system_cpu: u64,
    /// The container's CPU time (ns).
    pub container_cpu: u64,
}

fn events(ctx: &SourceContext, name: &str, s: &Sample, last: Option<(u64, u64)>) -> Vec<Event> {
    let mut evs = vec![
        ctx.create_event_prefixed(&format!("{name}.mem_limit"), "ok", "", s.mem_limit),
        ctx.create_event_prefixed(&format!("{name}.mem_used"), "ok", "", s.mem_used),
    ];
    for (op, value) in &s.io {
        evs.push(
            ctx.create_event_prefixed(&format!("{name}.io_{op}"), "ok", "", *value)
                .aggregated(Aggregation::Counter64),
        );
    }
    if let Some((system, container)) = last {
        let system_delta = s.system_cpu.saturating_sub(system);
        if system_delta > 0 {
            let share = s.container_cpu.saturating_sub(container) as f64 / system_delta as f64;
            evs.push(ctx.create_event_prefixed(&format!("{name}.cpu"), "ok", "", (share * 100.0) as i64));
        }
    }
    evs
}

/// The running containers of `/containers/json`: (id, name).
pub(crate) fn parse_containers(v: &Value) -> Result<Vec<(String, String)>, String> {
    let list = v.as_array().ok_or("not a list of containers")?;
    list.iter()
        .map(|c| {
            let id = c.get("Id").and_then(Value::as_str).ok_or("a container without an Id")?;
            let name = c
                .pointer("/Names/0")
                .and_then(Value::as_str)
                .map(|n| n.trim_start_matches('/'))
                .filter(|n| !n.is_empty())
                .unwrap_or(id);
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("{id:?} is not a container id"));
            }
            Ok((id.to_string(), name.to_string()))
        })
        .collect()
}

/// A container's `MARATHON_APP_ID`, without its leading `/`, from
/// `/containers/(id)/json`.
pub(crate) fn marathon_app_id(v: &Value) -> Option<String> {
    v.pointer("/Config/Env")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|var| var.strip_prefix("MARATHON_APP_ID="))
        .map(|app| app.trim_start_matches('/').to_string())
}

/// A sample of `/containers/(id)/stats?stream=false`.
pub(crate) fn parse_stats(v: &Value) -> Result<Sample, String> {
    let count = |pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no {}", pointer[1..].replace('/', ".")))
    };
    let io = match v.pointer("/blkio_stats/io_service_bytes_recursive") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| {
                let op = item.get("op")?.as_str()?.to_ascii_lowercase();
                Some((op, item.get("value")?.as_u64()?))
            })
            .collect(),
        Some(other) => return Err(format!("blkio_stats.io_service_bytes_recursive is {other}, not a list")),
    };
    Ok(Sample {
        mem_limit: count("/memory_stats/limit")?,
        mem_used: count("/memory_stats/usage")?,
        io,
        system_cpu: count("/cpu_stats/system_cpu_usage").unwrap_or(0),
        container_cpu: count("/cpu_stats/cpu_usage/total_usage")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;
    use crate::testing::context;

    fn load(name: &str) -> Value {
        serde_json::from_slice(&fixture("docker", name)).unwrap()
    }

    #[test]
    fn containers_stats_and_names_parse() {
        let list = parse_containers(&load("containers-1.43.json")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].1, "web");
        assert_eq!(list[1].1, "mesos-3f1c2a9e-worker");
        assert_eq!(marathon_app_id(&load("inspect-web.json")), None);
        assert_eq!(
            marathon_app_id(&load("inspect-worker.json")).as_deref(),
            Some("data/worker")
        );
        let web = parse_stats(&load("stats-web-1.json")).unwrap();
        assert_eq!(web.mem_limit, 2147483648);
        assert_eq!(web.mem_used, 52428800);
        let ops: Vec<&str> = web.io.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(ops, ["read", "write", "sync", "async", "discard", "total"]);
        let worker = parse_stats(&load("stats-worker-1.json")).unwrap();
        assert_eq!(
            worker.io,
            [("read".to_string(), 10485760), ("write".to_string(), 2097152)]
        );
    }

    #[test]
    fn cpu_is_the_share_of_the_machine_from_the_second_sample() {
        let (ctx, _) = context("docker");
        let first = parse_stats(&load("stats-web-1.json")).unwrap();
        let evs = events(&ctx, "web", &first, None);
        assert!(!evs.iter().any(|e| e.service == "docker.web.cpu"));
        assert_eq!(evs[2].service, "docker.web.io_read");
        assert_eq!(evs[2].aggregation, Some(Aggregation::Counter64));
        let second = parse_stats(&load("stats-web-2.json")).unwrap();
        let evs = events(&ctx, "web", &second, Some((first.system_cpu, first.container_cpu)));
        let cpu = evs.iter().find(|e| e.service == "docker.web.cpu").unwrap();
        // 2 s of the container's CPU time in 40 s of the machine's.
        assert_eq!(cpu.metric, Some(duct_core::Metric::Int(5)));
    }

    #[test]
    fn answers_that_are_not_the_apis_are_refused() {
        assert!(parse_containers(&serde_json::json!({"message": "page not found"})).is_err());
        assert!(parse_containers(&serde_json::json!([{"Id": "../../etc", "Names": ["/x"]}])).is_err());
        let mut stats = load("stats-web-1.json");
        stats["memory_stats"].as_object_mut().unwrap().remove("usage");
        assert_eq!(parse_stats(&stats).unwrap_err(), "no memory_stats.usage");
    }
}
