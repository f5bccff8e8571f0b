//! `duct.sources.redis.Queues`: the length of a Redis list (a Celery or
//! RQ queue) and its rate of change.
//!
//! Duct ran `redis-cli -n db llen queue`, so it could only watch a server
//! on the default local port without a password. ductd speaks RESP over
//! TCP itself — `AUTH`, `SELECT`, `LLEN`, pipelined in one write — with
//! `host`, `port`, `password` (and ACL `username`) and optional TLS.
//! Duct's `clipath` is accepted and ignored, so old configurations still
//! load.
//!
//! With `use_ssh: true`, as in Duct, `redis-cli` (`clipath`, else the one
//! on the remote `PATH`) runs on `ssh_host` against `host:port` as that
//! host sees them; the commands, the password among them, go to its
//! standard input, never onto a command line the remote host's users can
//! read. TLS is refused there (redis-cli would need certificates of its
//! own on that host).
//!
//! Events: `(service)`, the length; `(service).rate`, the same value as a
//! counter the router turns into a rate (items per second, negative
//! changes dropped as for every counter). Any failure — refused, timed
//! out, wrong password, not a list — is `(service)` critical with no
//! metric, as in Duct, with the cause in the description.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Source, SourceArgs, SourceContext, SourceSpec};
use rustls::ClientConfig;
use serde::Deserialize;

use super::conn::{shown, split_line, Parsed};
use super::{
    budget, host_option, port_option, program_failure, Conn, Faults, ServiceError, DEFAULT_TIMEOUT, MAX_REPLY_BYTES,
};
use crate::linux::host::Host;
use crate::network::tls_policy;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The list to measure.
    queue: String,
    db: i64,
    /// Duct's path to `redis-cli`; not used (ductd speaks RESP itself).
    clipath: Option<String>,
    host: String,
    port: i64,
    password: Option<String>,
    /// ACL user (Redis 6 and later); `default` when only a password is set.
    username: Option<String>,
    tls: bool,
    tls_verify: bool,
    ca: Option<PathBuf>,
    /// Seconds the whole conversation may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue: "celery".into(),
            db: 0,
            clipath: None,
            host: "127.0.0.1".into(),
            port: 6379,
            password: None,
            username: None,
            tls: false,
            tls_verify: true,
            ca: None,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.redis.Queues",
        "Length of a Redis list over RESP: `queue` (celery), `db` (0), `host` (127.0.0.1), `port` (6379), \
         `password`, `username`, `tls` (with `tls_verify`, `ca`), `timeout`; Duct's `clipath` is accepted and unused",
        &[
            "(service): the list's length (critical with no metric when the server fails)",
            "(service).rate: items per second (a Counter)",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    // `clipath` is used only over SSH; here it only lets Duct's
    // configurations load.
    let host = host_option(args, o.host)?;
    let port = port_option(args, o.port)?;
    if o.db < 0 {
        return Err(args.invalid("db", format!("{} is not a database number", o.db)));
    }
    if o.queue.is_empty() {
        return Err(args.invalid("queue", "must name a list"));
    }
    if o.username.is_some() && o.password.is_none() {
        return Err(args.invalid("username", "needs a `password`"));
    }
    let tls = if o.tls {
        let policy = tls_policy(args, o.tls_verify, o.ca)?;
        Some(policy.client_config().map_err(|e| args.invalid("ca", e))?)
    } else {
        None
    };
    let cli = match &args.settings.remote {
        Some(_) if o.tls => {
            return Err(args.invalid(
                "tls",
                "not with `use_ssh: true`: redis-cli on ssh_host would need its own certificates there",
            ))
        }
        Some(_) => Some(RemoteCli {
            host: Host::of(args),
            program: o.clipath.clone().unwrap_or_else(|| "redis-cli".into()),
            args: vec!["-h".into(), host.clone(), "-p".into(), port.to_string()],
            input: cli_input(o.username.as_deref(), o.password.as_deref(), o.db, &o.queue),
        }),
        None => None,
    };
    let request = request(o.username.as_deref(), o.password.as_deref(), o.db, &o.queue);
    Ok(Box::new(Queues {
        cli,
        host,
        port,
        tls,
        queue: o.queue,
        request,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct Queues {
    /// Over SSH: redis-cli on the remote host instead of RESP from here.
    cli: Option<RemoteCli>,
    host: String,
    port: u16,
    tls: Option<Arc<ClientConfig>>,
    queue: String,
    /// The pipelined commands, encoded once.
    request: Request,
    budget: Duration,
    faults: Faults,
}

/// `redis-cli` on a `use_ssh` host: its arguments, and its standard
/// input, the commands (one per line) whose replies it prints one per line.
struct RemoteCli {
    host: Host,
    program: String,
    args: Vec<String>,
    input: RemoteInput,
}

/// What is written to redis-cli, and which command each reply answers.
struct RemoteInput {
    text: String,
    commands: Vec<&'static str>,
}

/// The same commands as [`request`], as lines redis-cli reads, each word
/// in double quotes (redis-cli's escapes for `\`, `"` and line ends).
fn cli_input(username: Option<&str>, password: Option<&str>, db: i64, queue: &str) -> RemoteInput {
    let quote = |w: &str| {
        let mut q = String::with_capacity(w.len() + 2);
        q.push('"');
        for c in w.chars() {
            match c {
                '\\' => q.push_str("\\\\"),
                '"' => q.push_str("\\\""),
                '\n' => q.push_str("\\n"),
                '\r' => q.push_str("\\r"),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    let mut text = String::new();
    let mut commands = Vec::new();
    if let Some(password) = password {
        match username {
            Some(user) => text.push_str(&format!("AUTH {} {}\n", quote(user), quote(password))),
            None => text.push_str(&format!("AUTH {}\n", quote(password))),
        }
        commands.push("AUTH");
    }
    if db != 0 {
        text.push_str(&format!("SELECT {db}\n"));
        commands.push("SELECT");
    }
    text.push_str(&format!("LLEN {}\n", quote(queue)));
    commands.push("LLEN");
    RemoteInput { text, commands }
}

/// The length from what redis-cli printed: one line per reply (errors in
/// the server's words, then a blank line), in the order of `commands`;
/// every reply before `LLEN`'s must be `OK`. Nothing printed: its
/// complaint on stderr (it cannot connect).
fn cli_length(commands: &[&str], stdout: &str, stderr: &str) -> Result<i64, ServiceError> {
    let mut replies = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    for command in commands {
        let Some(reply) = replies.next() else {
            let said = stderr.lines().map(str::trim).find(|l| !l.is_empty());
            return Err(ServiceError::Program(match said {
                Some(said) => said.to_string(),
                None => format!("redis-cli printed no reply to {command}"),
            }));
        };
        match (*command, reply.parse::<i64>()) {
            ("LLEN", Ok(n)) => return Ok(n),
            ("LLEN", Err(_)) => return Err(ServiceError::Refused(format!("{reply} to LLEN"))),
            (_, _) if reply == "OK" => {}
            (_, _) => return Err(ServiceError::Refused(format!("{reply} to {command}"))),
        }
    }
    Err(ServiceError::Refused("nothing to LLEN".into()))
}

/// The commands sent at every tick, and how many replies come back.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    bytes: Vec<u8>,
    /// The names of the commands, in order, for errors.
    commands: Vec<&'static str>,
}

/// `AUTH` when there is a password, `SELECT` for a database other than
/// 0, then `LLEN`.
fn request(username: Option<&str>, password: Option<&str>, db: i64, queue: &str) -> Request {
    let mut bytes = Vec::new();
    let mut commands = Vec::new();
    if let Some(password) = password {
        match username {
            Some(user) => encode(&mut bytes, &["AUTH", user, password]),
            None => encode(&mut bytes, &["AUTH", password]),
        }
        commands.push("AUTH");
    }
    if db != 0 {
        encode(&mut bytes, &["SELECT", &db.to_string()]);
        commands.push("SELECT");
    }
    encode(&mut bytes, &["LLEN", queue]);
    commands.push("LLEN");
    Request { bytes, commands }
}

/// Appends a command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, words: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

service_source!(Queues, counters);

impl Queues {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        match self.length().await {
            Ok(len) => {
                self.faults.worked(ctx);
                vec![
                    ctx.create_event("ok", format!("{} queue length", self.queue), len),
                    ctx.create_event_prefixed("rate", "ok", "Queue rate", len)
                        .aggregated(Aggregation::Counter),
                ]
            }
            Err(e) => {
                let text = format!("{}:{} - {e}", self.host, self.port);
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }

    async fn length(&self) -> Result<i64, ServiceError> {
        if let Some(cli) = &self.cli {
            return self.length_remote(cli).await;
        }
        let mut conn = Conn::open(&self.host, self.port, self.budget, MAX_REPLY_BYTES, self.tls.clone()).await?;
        conn.send(&self.request.bytes, "the commands").await?;
        let mut length = None;
        for command in &self.request.commands {
            let reply = conn.read(&format!("the reply to {command}"), parse_reply).await?;
            match (command, reply) {
                (_, Reply::Error(e)) => return Err(ServiceError::Refused(format!("{e} to {command}"))),
                (&"LLEN", Reply::Integer(n)) => length = Some(n),
                (&"LLEN", other) => {
                    return Err(ServiceError::Garbage {
                        doing: "to LLEN".into(),
                        detail: format!("{other:?} is not a length"),
                    })
                }
                _ => {}
            }
        }
        // LLEN is always the last command, so a length was read or an
        // error returned above.
        length.ok_or_else(|| ServiceError::Refused("nothing to LLEN".into()))
    }

    async fn length_remote(&self, cli: &RemoteCli) -> Result<i64, ServiceError> {
        let out = cli
            .host
            .run(
                Path::new(&cli.program),
                &cli.args,
                cli.input.text.as_bytes(),
                self.budget,
                MAX_REPLY_BYTES,
            )
            .await
            .map_err(|e| ServiceError::Io {
                doing: "running redis-cli".into(),
                reason: e.to_string(),
            })?;
        if out.code != Some(0) {
            return Err(ServiceError::Program(format!(
                "{}: {}",
                cli.program,
                program_failure(&out)
            )));
        }
        cli_length(&cli.input.commands, &out.stdout, &out.stderr)
    }
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None` for the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` for the null array (`*-1`).
    Array(Option<Vec<Reply>>),
}

/// Deepest nesting of arrays accepted: a hostile server must not recurse
/// the parser off its stack.
const MAX_DEPTH: usize = 16;

/// Parses one reply at the start of `buf` (RESP2, which a server speaks
/// until a client sends `HELLO 3`).
pub(crate) fn parse_reply(buf: &[u8]) -> Parsed<Reply> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Parsed<Reply> {
    let Some((line, used)) = split_line(buf) else {
        return Ok(None);
    };
    let mut chars = line.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| format!("{} is not a RESP length or integer", shown(&line)))
    };
    match kind {
        Some('+') => Ok(Some((Reply::Simple(rest.to_string()), used))),
        Some('-') => Ok(Some((Reply::Error(rest.to_string()), used))),
        Some(':') => Ok(Some((Reply::Integer(number()?), used))),
        Some('$') => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), used)));
            }
            let len = len as usize;
            let Some(body) = buf.get(used..used.saturating_add(len).saturating_add(2)) else {
                return Ok(None);
            };
            if &body[len..] != b"\r\n" {
                return Err(format!("bulk string of {len} bytes without its CRLF"));
            }
            Ok(Some((Reply::Bulk(Some(body[..len].to_vec())), used + len + 2)))
        }
        Some('*') => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Reply::Array(None), used)));
            }
            if depth >= MAX_DEPTH {
                return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
            }
            let mut items = Vec::new();
            let mut at = used;
            for _ in 0..count {
                let Some((item, n)) = parse_at(&buf[at..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at += n;
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        _ => Err(format!("{} is not RESP", shown(&line))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    /// Every reply in a captured stream.
    fn replies(name: &str) -> Vec<Reply> {
        let data = fixture("redis", name);
        let mut at = 0;
        let mut out = Vec::new();
        while at < data.len() {
            let (r, n) = parse_reply(&data[at..]).unwrap().expect("complete capture");
            out.push(r);
            at += n;
        }
        out
    }

    #[test]
    fn redis_cli_input_quotes_every_word() {
        let input = cli_input(Some("ops"), Some("se\"cr\\et"), 3, "my queue");
        assert_eq!(
            input.text,
            "AUTH \"ops\" \"se\\\"cr\\\\et\"\nSELECT 3\nLLEN \"my queue\"\n"
        );
        assert_eq!(input.commands, ["AUTH", "SELECT", "LLEN"]);
        assert_eq!(cli_input(None, None, 0, "celery").text, "LLEN \"celery\"\n");
    }

    #[test]
    fn redis_cli_replies_captured_from_redis_cli_7_0_parse() {
        // redis-cli 7.0.15 against redis-server 7.0.15, commands on stdin.
        let three = ["AUTH", "SELECT", "LLEN"];
        assert_eq!(cli_length(&three, "OK\nOK\n7\n", "").unwrap(), 7);
        let bad_db = cli_length(&three, "OK\nERR DB index is out of range\n\n0\n", "").unwrap_err();
        assert_eq!(
            bad_db.to_string(),
            "the server answered ERR DB index is out of range to SELECT"
        );
        let two = ["AUTH", "LLEN"];
        let wrong = cli_length(
            &two,
            "WRONGPASS invalid username-password pair or user is disabled.\n\nNOAUTH Authentication required.\n\n",
            "",
        )
        .unwrap_err();
        assert!(wrong.to_string().contains("WRONGPASS") && wrong.to_string().ends_with("to AUTH"));
        let kind = cli_length(
            &two,
            "OK\nWRONGTYPE Operation against a key holding the wrong kind of value\n\n",
            "",
        );
        assert!(kind.unwrap_err().to_string().contains("WRONGTYPE"));
        let down = cli_length(
            &["LLEN"],
            "",
            "Could not connect to Redis at 127.0.0.1:1: Connection refused\n",
        );
        assert_eq!(
            down.unwrap_err().to_string(),
            "Could not connect to Redis at 127.0.0.1:1: Connection refused"
        );
    }

    #[test]
    fn replies_captured_from_redis_server_parse() {
        // AUTH, SELECT 0, LLEN of a three-item list, LLEN of no key.
        assert_eq!(
            replies("llen.resp"),
            [
                Reply::Simple("OK".into()),
                Reply::Simple("OK".into()),
                Reply::Integer(3),
                Reply::Integer(0)
            ]
        );
        assert_eq!(
            replies("wrongtype.resp")[2],
            Reply::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into())
        );
        assert!(matches!(&replies("noauth.resp")[0], Reply::Error(e) if e.starts_with("NOAUTH")));
        assert!(matches!(&replies("badpass.resp")[0], Reply::Error(e) if e.starts_with("WRONGPASS")));
        assert_eq!(
            replies("baddb.resp")[1],
            Reply::Error("ERR DB index is out of range".into())
        );
        let bulk = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
        assert_eq!(
            replies("mixed.resp"),
            [
                Reply::Simple("OK".into()),
                Reply::Array(Some(vec![bulk("a"), bulk("b"), bulk("c")])),
                Reply::Simple("OK".into()),
                bulk("x"),
                Reply::Bulk(None),
            ]
        );
    }

    #[test]
    fn a_partial_reply_waits_for_more_and_garbage_is_refused() {
        let data = fixture("redis", "mixed.resp");
        for cut in [5, 9, 14, 20] {
            assert_eq!(parse_reply(&data[5..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_reply(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse_reply(b":many\r\n").is_err());
        assert!(parse_reply(b"$3\r\nabcde\r\n").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse_reply(deep.as_bytes()).is_err());
    }

    #[test]
    fn commands_are_pipelined_as_resp_arrays() {
        let r = request(None, Some("pw"), 2, "celery");
        assert_eq!(
            String::from_utf8(r.bytes).unwrap(),
            "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n*2\r\n$4\r\nLLEN\r\n$6\r\ncelery\r\n"
        );
        assert_eq!(r.commands, ["AUTH", "SELECT", "LLEN"]);
        let r = request(Some("app"), Some("pw"), 0, "q");
        assert!(String::from_utf8(r.bytes)
            .unwrap()
            .starts_with("*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n"));
        assert_eq!(request(None, None, 0, "q").commands, ["LLEN"]);
    }
}
