//! `duct.sources.rabbitmq.Queues`: the ready and unacknowledged messages
//! of every queue of a RabbitMQ vhost, and how fast they change.
//!
//! Two ways to read them: Duct's, `rabbitmqctl list_queues -p (vhost) name
//! messages_ready messages_unacknowledged` (the default; `rabbitmqctl`
//! names the program), or, when `url` is set, the management plugin's
//! HTTP API (`GET (url)/api/queues/(vhost)`, with `user` and `password`),
//! which needs no local binary and no Erlang cookie. With `use_ssh: true`
//! `rabbitmqctl` runs on `ssh_host` through the shared SSH connection, as
//! Duct ran it (docs/remote-checks.md); `url` is refused there.
//!
//! Events, Duct's names: per queue `(service).(queue).ready` and
//! `.unack`, and from the second tick `.ready_rate` and `.unack_rate`
//! (messages per second, negative while the queue drains, computed here
//! as Duct did); from the second tick the sums `total.ready`,
//! `total.unack`, `total.ready_rate`, `total.unack_rate`. A failure —
//! the program is missing or fails, the API refuses or is down, an answer
//! that is not the queues — is `(service)` critical with no metric and the
//! cause (Duct only logged a warning).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use duct_core::config::Diagnostic;
use duct_core::{Event, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;
use serde_json::Value;

use super::conn::shown;
use super::web::{json, Access, Api, WebError};
use super::{budget, program_failure, Faults, DEFAULT_TIMEOUT, MAX_REPLY_BYTES};
use crate::linux::host::Host;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    vhost: String,
    /// The program Duct ran.
    rabbitmqctl: PathBuf,
    /// The management API (e.g. http://localhost:15672); when set, it is
    /// read instead of running `rabbitmqctl`.
    url: Option<String>,
    user: String,
    password: String,
    tls_verify: bool,
    ca: Option<PathBuf>,
    /// Seconds a tick may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vhost: "/".into(),
            rabbitmqctl: "/usr/sbin/rabbitmqctl".into(),
            url: None,
            user: "guest".into(),
            password: "guest".into(),
            tls_verify: true,
            ca: None,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.rabbitmq.Queues",
        "A RabbitMQ vhost's queues: `vhost` (/), through `rabbitmqctl` (/usr/sbin/rabbitmqctl) or, with `url`, \
         the management API (`user` guest, `password` guest, `tls_verify`, `ca`); `timeout`",
        &[
            "(service).(queue).ready, .(queue).unack: messages",
            "(service).(queue).ready_rate, .(queue).unack_rate: messages per second (from the second tick)",
            "(service).total.ready, .total.unack, .total.ready_rate, .total.unack_rate (from the second tick)",
            "(service): critical with no metric when the queues cannot be read",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let _ = o.timeout;
    let budget = budget(args, DEFAULT_TIMEOUT);
    let reader = match &o.url {
        Some(_) if args.settings.remote.is_some() => {
            return Err(args.invalid(
                "url",
                "`use_ssh: true` runs rabbitmqctl on ssh_host, while the management API is read from this \
                 machine: drop `url`, or `use_ssh` and point `url` at the broker",
            ))
        }
        Some(url) => {
            let access = Access {
                user: Some(o.user),
                password: Some(o.password),
                tls_verify: o.tls_verify,
                ca: o.ca,
            };
            let api = Api::new(args, "url", url, access, budget)?;
            let path = format!(
                "/api/queues/{}?columns=name,messages_ready,messages_unacknowledged",
                encode_vhost(&o.vhost)
            );
            Reader::Api {
                api: Box::new(api),
                path,
            }
        }
        None => Reader::Ctl {
            program: o.rabbitmqctl,
            args: [
                "list_queues",
                "-p",
                &o.vhost,
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ]
            .map(String::from)
            .to_vec(),
        },
    };
    Ok(Box::new(Queues {
        reader,
        host: Host::of(args),
        budget,
        last: None,
        faults: Faults::default(),
    }))
}

/// Where the queues are read from.
enum Reader {
    Ctl {
        program: PathBuf,
        args: Vec<String>,
    },
    /// Boxed: a request is much larger than a program's path.
    Api {
        api: Box<Api>,
        path: String,
    },
}

pub struct Queues {
    reader: Reader,
    /// Where rabbitmqctl runs: here, or over SSH (`use_ssh`).
    host: Host,
    budget: Duration,
    /// The last tick's counts per queue, their totals and when, for rates.
    last: Option<Last>,
    faults: Faults,
}

struct Last {
    at: Instant,
    queues: HashMap<String, (i64, i64)>,
    total: (i64, i64),
}

service_source!(Queues, counters);

/// A queue's name, ready and unacknowledged messages.
pub(crate) type Queue = (String, i64, i64);

impl Queues {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let (queues, source) = match &self.reader {
            Reader::Ctl { program, .. } => (self.run_ctl().await, program.display().to_string()),
            Reader::Api { api, .. } => (self.read_api().await, api.url().to_string()),
        };
        match queues {
            Ok(queues) => {
                self.faults.worked(ctx);
                self.events(ctx, &queues)
            }
            Err(e) => {
                let text = format!("{source} - {e}");
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }

    async fn run_ctl(&self) -> Result<Vec<Queue>, String> {
        let Reader::Ctl { program, args } = &self.reader else {
            unreachable!("called for the rabbitmqctl reader only")
        };
        let out = self
            .host
            .run(program, args, &[], self.budget, MAX_REPLY_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if out.code != Some(0) {
            return Err(program_failure(&out));
        }
        if out.truncated {
            return Err(format!("the output was longer than {MAX_REPLY_BYTES} bytes"));
        }
        parse_list_queues(&out.stdout)
    }

    async fn read_api(&self) -> Result<Vec<Queue>, String> {
        let Reader::Api { api, path } = &self.reader else {
            unreachable!("called for the API reader only")
        };
        let read = async { parse_api_queues(&json(&api.get_path(path).await?)?).map_err(WebError::garbage) };
        read.await.map_err(|e| e.to_string())
    }

    fn events(&mut self, ctx: &SourceContext, queues: &[Queue]) -> Vec<Event> {
        let now = Instant::now();
        let mut evs = Vec::new();
        let dt = self.last.as_ref().map(|l| now.duration_since(l.at).as_secs_f64());
        let total = queues.iter().fold((0, 0), |(r, u), q| (r + q.1, u + q.2));
        for (name, ready, unack) in queues {
            evs.push(ctx.create_event_prefixed(
                &format!("{name}.unack"),
                "ok",
                format!("{name} unacknowledged messages: {unack}"),
                *unack,
            ));
            evs.push(ctx.create_event_prefixed(
                &format!("{name}.ready"),
                "ok",
                format!("{name} ready messages: {ready}"),
                *ready,
            ));
            let before = self.last.as_ref().and_then(|l| l.queues.get(name));
            if let (Some(&(last_ready, last_unack)), Some(dt)) = (before, dt.filter(|dt| *dt > 0.0)) {
                let urate = (unack - last_unack) as f64 / dt;
                let rrate = (ready - last_ready) as f64 / dt;
                evs.push(ctx.create_event_prefixed(
                    &format!("{name}.unack_rate"),
                    "ok",
                    format!("{name} unacknowledged rate: {urate:.2}"),
                    urate,
                ));
                evs.push(ctx.create_event_prefixed(
                    &format!("{name}.ready_rate"),
                    "ok",
                    format!("{name} ready rate: {rrate:.2}"),
                    rrate,
                ));
            }
        }
        if let (Some(last), Some(dt)) = (&self.last, dt.filter(|dt| *dt > 0.0)) {
            let urate = (total.1 - last.total.1) as f64 / dt;
            let rrate = (total.0 - last.total.0) as f64 / dt;
            evs.push(ctx.create_event_prefixed(
                "total.unack_rate",
                "ok",
                format!("Total unacknowledged rate: {urate:.2}"),
                urate,
            ));
            evs.push(ctx.create_event_prefixed(
                "total.ready_rate",
                "ok",
                format!("Total ready rate: {rrate:.2}"),
                rrate,
            ));
            evs.push(ctx.create_event_prefixed(
                "total.unack",
                "ok",
                format!("Total unacknowledged messages: {}", total.1),
                total.1,
            ));
            evs.push(ctx.create_event_prefixed(
                "total.ready",
                "ok",
                format!("Total ready messages: {}", total.0),
                total.0,
            ));
        }
        self.last = Some(Last {
            at: now,
            queues: queues.iter().map(|(n, r, u)| (n.clone(), (*r, *u))).collect(),
            total,
        });
        evs
    }
}

/// A vhost as one path segment of the management API (`/` is `%2F`).
fn encode_vhost(vhost: &str) -> String {
    vhost
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The queues of `rabbitmqctl list_queues … name messages_ready
/// messages_unacknowledged`: tab-separated rows, after the lines it
/// prints about what it does (`Timeout: …`, `Listing queues …`) and the
/// header of 3.7 and later, which are skipped.
pub(crate) fn parse_list_queues(out: &str) -> Result<Vec<Queue>, String> {
    let mut queues = Vec::new();
    for line in out.lines() {
        if line.trim().is_empty() || line.contains("...") || line.starts_with("Timeout: ") {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, ready, unack] = fields[..] else {
            return Err(format!("not a queue row: {}", shown(line)));
        };
        if (name, ready, unack) == ("name", "messages_ready", "messages_unacknowledged") {
            continue;
        }
        let count = |text: &str, what: &str| {
            text.trim()
                .parse::<i64>()
                .map_err(|_| format!("{what} of {name} is {}, not a count", shown(text)))
        };
        queues.push((
            name.to_string(),
            count(ready, "messages_ready")?,
            count(unack, "messages_unacknowledged")?,
        ));
    }
    Ok(queues)
}

/// The queues of the management API's `/api/queues/(vhost)`. A queue
/// the statistics have not caught up with yet (declared since their last
/// collection) has no counts, and is left out until it has.
pub(crate) fn parse_api_queues(v: &Value) -> Result<Vec<Queue>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("not a list of queues: {}", shown(&v.to_string())))?;
    let mut queues = Vec::new();
    for q in list {
        let name = q.get("name").and_then(Value::as_str).ok_or("a queue without a name")?;
        let count = |key: &str| match q.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{key} of {name} is {n}, not a count")),
        };
        if let (Some(ready), Some(unack)) = (count("messages_ready")?, count("messages_unacknowledged")?) {
            queues.push((name.to_string(), ready, unack));
        }
    }
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;
    use crate::testing::context;

    fn text(name: &str) -> String {
        String::from_utf8(fixture("rabbitmq", name)).unwrap()
    }

    #[test]
    fn list_queues_of_3_10_parses_past_its_banner_and_header() {
        // Five messages published to `jobs`, none to `mail`.
        let queues = parse_list_queues(&text("list_queues-3.10.8.txt")).unwrap();
        assert_eq!(queues, [("jobs".to_string(), 5, 0), ("mail".to_string(), 0, 0)]);
        assert!(parse_list_queues(&text("list_queues-novhost-3.10.8.txt"))
            .unwrap()
            .is_empty());
        assert!(parse_list_queues("Error: unable to perform an operation on node").is_err());
        assert_eq!(
            parse_list_queues("q\tmany\t0\n").unwrap_err(),
            "messages_ready of q is \"many\", not a count"
        );
    }

    #[test]
    fn the_management_api_gives_the_same_queues() {
        let v: Value = serde_json::from_str(&text("api-queues-3.10.8.json")).unwrap();
        assert_eq!(
            parse_api_queues(&v).unwrap(),
            parse_list_queues(&text("list_queues-3.10.8.txt")).unwrap()
        );
        let fresh =
            serde_json::json!([{"name": "new"}, {"name": "old", "messages_ready": 1, "messages_unacknowledged": 2}]);
        assert_eq!(parse_api_queues(&fresh).unwrap(), [("old".to_string(), 1, 2)]);
        let missing: Value = serde_json::from_str(&text("api-novhost-3.10.8.json")).unwrap();
        assert!(parse_api_queues(&missing)
            .unwrap_err()
            .starts_with("not a list of queues"));
        assert_eq!(encode_vhost("/"), "%2F");
        assert_eq!(encode_vhost("prod/eu"), "prod%2Feu");
    }

    #[test]
    fn rates_and_totals_come_from_the_second_tick() {
        let (ctx, _) = context("mq");
        let mut source = Queues {
            reader: Reader::Ctl {
                program: "/bin/false".into(),
                args: Vec::new(),
            },
            host: Host::local(crate::linux::HostPaths::from_env()),
            budget: Duration::from_secs(1),
            last: None,
            faults: Faults::default(),
        };
        let first = source.events(&ctx, &[("jobs".into(), 5, 0)]);
        let names: Vec<&str> = first.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(names, ["mq.jobs.unack", "mq.jobs.ready"]);
        let second = source.events(&ctx, &[("jobs".into(), 7, 1), ("mail".into(), 0, 0)]);
        let get = |name: &str| {
            second
                .iter()
                .find(|e| e.service == name)
                .map(|e| e.metric.unwrap().as_f64())
        };
        assert!(get("mq.jobs.ready_rate").unwrap() > 0.0);
        assert_eq!(get("mq.mail.ready_rate"), None, "a new queue primes its rate");
        assert_eq!(get("mq.total.ready"), Some(7.0));
        assert_eq!(get("mq.total.unack"), Some(1.0));
        assert!(get("mq.total.unack_rate").unwrap() > 0.0);
    }
}
