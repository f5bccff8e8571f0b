//! Fuzz entry points for the service sources' protocols and bodies (see
//! [`crate::fuzzing`]): what a server sends, read as the source reads it.

use std::hint::black_box;

use serde_json::Value;

use super::conn::split_line;
use super::{
    apache, docker, ds18b20, elasticsearch, haproxy, memcache, munin, nginx, nut, postgresql, rabbitmq, redis, riak,
    unbound, uwsgi, web,
};
use crate::fuzzing::{choose, text};

/// The lines of a reply as a connection reads them.
fn lines(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((line, used)) = split_line(data) {
        out.push(line);
        data = &data[used..];
    }
    out
}

/// A stream of RESP replies (Redis), read one after another.
pub fn resp(mut data: &[u8]) {
    while let Ok(Some((reply, used))) = redis::parse_reply(data) {
        assert!(
            used > 0 && used <= data.len(),
            "a reply used {used} of {} bytes",
            data.len()
        );
        black_box(reply);
        data = &data[used..];
    }
}

/// memcached's reply to `stats`: lines up to `END`.
pub fn memcache(data: &[u8]) {
    let lines: Vec<String> = lines(data).into_iter().take_while(|l| l != "END").collect();
    black_box(memcache::parse_stats(&lines).ok());
}

/// A munin-node session: banner, `cap` and `list` replies, then a
/// `config` and a `fetch` reply per plugin listed, each ending at `.`.
pub fn munin(data: &[u8]) {
    let lines = lines(data);
    let Some(list) = lines.get(2) else {
        return;
    };
    let mut replies = lines[3..].split(|l| l == ".");
    for plugin in munin::parse_list(list) {
        let (Some(config), Some(fetch)) = (replies.next(), replies.next()) else {
            return;
        };
        let config = munin::parse_config(plugin, config);
        let values = munin::parse_fetch(plugin, fetch);
        black_box(munin::readings(&config, &values));
    }
}

/// upsd's reply to `LIST VAR ups`: the `BEGIN` line names the UPS, `VAR`
/// lines follow.
pub fn nut(data: &[u8]) {
    let lines = lines(data);
    let Some(ups) = lines.first().and_then(|l| l.strip_prefix("BEGIN LIST VAR ")) else {
        return;
    };
    let vars: Vec<String> = lines[1..]
        .iter()
        .take_while(|l| l.starts_with("VAR "))
        .cloned()
        .collect();
    if let Ok(vars) = nut::parse_vars(ups, &vars) {
        for (name, value) in &vars {
            if name == "ups.status" {
                black_box(nut::status_state(value));
            }
        }
    }
}

/// A text page or output, the first byte choosing which: nginx's
/// `stub_status`, Apache's `server-status?auto`, HAProxy's CSV, unbound's
/// `stats`, `rabbitmqctl list_queues`, psql's CSV rows, a DS18B20's
/// `w1_slave`.
pub fn service_text(data: &[u8]) {
    let Some((which, body)) = choose(data) else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(page) = web::text(body) {
                black_box(nginx::parse_stub_status(page).ok());
            }
        }
        1 => {
            if let Ok(page) = web::text(body) {
                black_box(apache::parse_status(page).ok());
            }
        }
        2 => {
            if let Ok(page) = web::text(body) {
                black_box(haproxy::parse_stats(page).ok());
            }
        }
        3 => {
            black_box(unbound::parse_stats(&text(body)));
        }
        4 => {
            black_box(rabbitmq::parse_list_queues(&text(body)).ok());
        }
        5 => {
            // The query's rows as psql prints them: an empty field is NULL.
            let rows: Vec<Vec<Option<String>>> = text(body)
                .lines()
                .map(|l| l.split(',').map(|f| (!f.is_empty()).then(|| f.to_string())).collect())
                .collect();
            black_box(postgresql::parse_rows(&rows).ok());
        }
        _ => {
            black_box(ds18b20::parse_w1_slave(&text(body)).ok());
        }
    }
}

/// A JSON answer, the first byte choosing whose: Elasticsearch's cluster
/// and node stats, Riak's stats, Docker's container list and a
/// container's stats, RabbitMQ's queues, a uWSGI emperor's stats (read
/// from a stream, as its stats server sends it).
pub fn service_json(data: &[u8]) {
    let Some((which, body)) = choose(data) else {
        return;
    };
    if which % 7 == 6 {
        if let Ok(Some((stats, used))) = uwsgi::json_document(body) {
            assert!(used <= body.len());
            black_box(uwsgi::parse_stats(&stats).ok());
        }
        return;
    }
    let Ok(v): Result<Value, _> = web::json(body) else {
        return;
    };
    match which % 7 {
        0 => {
            black_box(elasticsearch::parse_cluster(&v).ok());
        }
        1 => {
            black_box(elasticsearch::parse_nodes(&v).ok());
        }
        2 => {
            black_box(riak::parse_stats(&v).ok());
        }
        3 => {
            black_box(docker::parse_containers(&v).ok());
        }
        4 => {
            black_box(docker::parse_stats(&v).ok());
        }
        _ => {
            black_box(rabbitmq::parse_api_queues(&v).ok());
        }
    }
}
