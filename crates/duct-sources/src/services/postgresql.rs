//! `duct.sources.database.postgresql.PostgreSQL`: each database's
//! activity from `pg_stat_database`, under Duct's names.
//!
//! One connection per tick (over TCP, optionally TLS, or a Unix socket),
//! one query in the simple protocol, then the connection is closed. The
//! client is tokio-postgres (pure Rust, no libpq), driven inside the tick's
//! future so nothing outlives the tick's budget.
//!
//! Events: `(service).state`, 1 when the query worked (0 and critical,
//! with the cause, when it did not: Duct's convention); per database
//! (templates and the shared-objects row left out) `(db).threads`
//! (`numbackends`), and as `Counter64` rates `(db).commits`, `rollbacks`,
//! `disk.read`, `disk.cache`, `returned`, `selects`, `inserts`, `updates`,
//! `deletes`.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll as TaskPoll};
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Source, SourceArgs, SourceContext, SourceSpec};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, NoTls, TlsConnect};
use tokio_postgres::{Client, Config, SimpleQueryMessage};

use super::{budget, host_option, port_option, DEFAULT_TIMEOUT};
use super::{Faults, ServiceError};
use crate::network::{connect, resolve, tls_policy};

/// `pg_stat_database`'s columns and Duct's names for them; the first two
/// are the database and its backends (`threads`), the rest counters.
const COLUMNS: &[(&str, &str)] = &[
    ("datname", ""),
    ("numbackends", "threads"),
    ("xact_commit", "commits"),
    ("xact_rollback", "rollbacks"),
    ("blks_read", "disk.read"),
    ("blks_hit", "disk.cache"),
    ("tup_returned", "returned"),
    ("tup_fetched", "selects"),
    ("tup_inserted", "inserts"),
    ("tup_updated", "updates"),
    ("tup_deleted", "deletes"),
];

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// A host name or address; a path (starting with `/`) is the directory
    /// of the server's Unix socket, as in libpq.
    host: String,
    port: i64,
    user: String,
    password: String,
    /// The database to connect to (any: pg_stat_database lists them all).
    database: String,
    /// libpq's: `disable`, `prefer` (TLS when the server offers it),
    /// `require`, `verify-ca`, `verify-full`.
    sslmode: String,
    /// Whether the server's certificate is checked; by default only for
    /// `verify-ca` and `verify-full`, as libpq does.
    tls_verify: Option<bool>,
    ca: Option<PathBuf>,
    /// The Unix socket: its directory (`/var/run/postgresql`) or its path.
    socket: Option<PathBuf>,
    /// Seconds the whole exchange may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: String::new(),
            database: "postgres".into(),
            sslmode: "prefer".into(),
            tls_verify: None,
            ca: None,
            socket: None,
            timeout: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.database.postgresql.PostgreSQL",
        "pg_stat_database per database: `host` (127.0.0.1; a path is a socket directory), `port` (5432), `user` \
         (postgres), `password`, `database` (postgres), `sslmode` (disable, prefer, require; with `tls_verify`, \
         `ca`), `socket`, `timeout`",
        &[
            "(service).state: 1 when the query worked, 0 and critical (with the cause) when not",
            "(service).(database).threads: backends connected",
            "(service).(database).commits, .rollbacks, .disk.read, .disk.cache, .returned, .selects, .inserts, \
             .updates, .deletes: Counter64 rates",
        ],
        build,
    )
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Tcp { host: String, port: u16 },
    Socket(PathBuf),
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let port = port_option(args, o.port)?;
    let socket = match o.socket {
        Some(path) => Some(path),
        None if o.host.starts_with('/') => Some(PathBuf::from(&o.host)),
        None => None,
    };
    let is_socket_file = |p: &PathBuf| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".s.PGSQL."))
    };
    let target = match socket {
        // The socket itself, or its directory as libpq takes it.
        Some(path) if is_socket_file(&path) => Target::Socket(path),
        Some(dir) => Target::Socket(dir.join(format!(".s.PGSQL.{port}"))),
        None => Target::Tcp {
            host: host_option(args, o.host)?,
            port,
        },
    };
    let (ssl_mode, verify) = match o.sslmode.as_str() {
        "disable" => (SslMode::Disable, false),
        "allow" | "prefer" => (SslMode::Prefer, false),
        "require" => (SslMode::Require, false),
        "verify-ca" | "verify-full" => (SslMode::Require, true),
        other => {
            return Err(args.invalid(
                "sslmode",
                format!("`{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"),
            ))
        }
    };
    let tls = match (&target, ssl_mode) {
        (Target::Tcp { .. }, SslMode::Prefer | SslMode::Require) => {
            let policy = tls_policy(args, o.tls_verify.unwrap_or(verify), o.ca)?;
            Some(policy.client_config().map_err(|e| args.invalid("ca", e))?)
        }
        _ => None,
    };
    let mut config = Config::new();
    config
        .user(o.user)
        .password(o.password)
        .dbname(o.database)
        .application_name("ductd")
        .ssl_mode(if tls.is_some() { ssl_mode } else { SslMode::Disable });
    Ok(Box::new(PostgreSql {
        target,
        config,
        tls,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct PostgreSql {
    target: Target,
    config: Config,
    /// For `sslmode` prefer and require over TCP.
    tls: Option<Arc<ClientConfig>>,
    budget: Duration,
    faults: Faults,
}

service_source!(PostgreSql, counters);

/// The query: every column Duct read, for databases that have a name
/// (PostgreSQL 12 and later add a row for shared objects, with none).
fn query() -> String {
    let columns: Vec<&str> = COLUMNS.iter().map(|(c, _)| *c).collect();
    format!(
        "SELECT {} FROM pg_stat_database WHERE datname IS NOT NULL",
        columns.join(", ")
    )
}

impl PostgreSql {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let rows = match tokio::time::timeout(self.budget, self.fetch()).await {
            Ok(Ok(rows)) => parse_rows(&rows),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("timed out after {} s", self.budget.as_secs_f64())),
        };
        let stats = match rows {
            Ok(stats) => stats,
            Err(cause) => {
                let text = format!("{} - {cause}", self.where_());
                self.faults.failed(ctx, &text);
                return vec![ctx.create_event_prefixed("state", "critical", text, 0)];
            }
        };
        self.faults.worked(ctx);
        let mut events = vec![ctx.create_event_prefixed("state", "ok", "Connection ok", 1)];
        for db in stats {
            events.push(ctx.create_event_prefixed(
                &format!("{}.threads", db.name),
                "ok",
                format!("threads: {}", db.threads),
                db.threads,
            ));
            for (name, value) in db.counters {
                events.push(
                    ctx.create_event_prefixed(&format!("{}.{name}", db.name), "ok", format!("{name}: {value}"), value)
                        .aggregated(Aggregation::Counter64),
                );
            }
        }
        events
    }

    /// The server, for descriptions.
    fn where_(&self) -> String {
        match &self.target {
            Target::Tcp { host, port } => format!("{host}:{port}"),
            Target::Socket(path) => path.display().to_string(),
        }
    }

    /// The rows of the query, each column as text or NULL.
    async fn fetch(&self) -> Result<Vec<Vec<Option<String>>>, String> {
        match &self.target {
            Target::Socket(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
                let (client, conn) = self.config.connect_raw(stream, NoTls).await.map_err(pg_error)?;
                run(client, conn).await
            }
            Target::Tcp { host, port } => {
                let addr = resolve(host, *port).await.map_err(|e| e.to_string())?;
                let stream = connect(addr).await.map_err(|e| ServiceError::from(e).to_string())?;
                match &self.tls {
                    None => {
                        let (client, conn) = self.config.connect_raw(stream, NoTls).await.map_err(pg_error)?;
                        run(client, conn).await
                    }
                    Some(config) => {
                        let name = duct_proto::tls::server_name(host).map_err(|e| e.to_string())?;
                        let tls = RustlsConnect {
                            config: config.clone(),
                            name,
                        };
                        let (client, conn) = self.config.connect_raw(stream, tls).await.map_err(pg_error)?;
                        run(client, conn).await
                    }
                }
            }
        }
    }
}

/// Runs the query while driving the connection, in one future.
async fn run<C>(client: Client, conn: C) -> Result<Vec<Vec<Option<String>>>, String>
where
    C: Future<Output = Result<(), tokio_postgres::Error>>,
{
    let sql = query();
    let query = async {
        let messages = client.simple_query(&sql).await.map_err(pg_error)?;
        Ok::<_, String>(
            messages
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect(),
        )
    };
    tokio::pin!(conn);
    tokio::select! {
        rows = query => rows,
        ended = &mut conn => Err(match ended {
            Ok(()) => "the server closed the connection".to_string(),
            Err(e) => pg_error(e),
        }),
    }
}

/// A client error with its cause (`db error: FATAL: password
/// authentication failed for user "x"`), on one line.
fn pg_error(e: tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// One database's figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DatabaseStats {
    pub name: String,
    pub threads: i64,
    /// Duct's names and the counters' values.
    pub counters: Vec<(&'static str, i64)>,
}

/// The query's rows (columns in [`COLUMNS`] order) as figures; templates
/// and nameless rows are left out, as Duct left the templates out.
pub(crate) fn parse_rows(rows: &[Vec<Option<String>>]) -> Result<Vec<DatabaseStats>, String> {
    let mut out = Vec::new();
    for row in rows {
        if row.len() != COLUMNS.len() {
            return Err(format!("a row of {} columns, not {}", row.len(), COLUMNS.len()));
        }
        let Some(name) = row[0].as_deref() else { continue };
        if name == "template0" || name == "template1" {
            continue;
        }
        let number = |i: usize| -> Result<i64, String> {
            match row[i].as_deref() {
                None => Ok(0),
                Some(text) => text
                    .parse()
                    .map_err(|_| format!("{} of {name} is {text:?}, not a number", COLUMNS[i].0)),
            }
        };
        let mut counters = Vec::with_capacity(COLUMNS.len() - 2);
        for (i, (_, duct)) in COLUMNS.iter().enumerate().skip(2) {
            counters.push((*duct, number(i)?));
        }
        out.push(DatabaseStats {
            name: name.to_string(),
            threads: number(1)?,
            counters,
        });
    }
    Ok(out)
}

/// TLS for tokio-postgres over the workspace's rustls.
struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<TcpStream> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

struct RustlsStream(Box<tokio_rustls::client::TlsStream<TcpStream>>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding, which every server accepts
        // unless configured to insist on it.
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> TaskPoll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> TaskPoll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    /// psql's `--csv` output of the query: an empty field is NULL (no
    /// field here holds an empty string).
    fn rows(name: &str) -> Vec<Vec<Option<String>>> {
        let text = String::from_utf8(fixture("postgresql", name)).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header, COLUMNS.iter().map(|(c, _)| *c).collect::<Vec<_>>());
        lines
            .map(|l| l.split(',').map(|f| (!f.is_empty()).then(|| f.to_string())).collect())
            .collect()
    }

    #[test]
    fn pg_stat_database_of_postgresql_15_parses() {
        let stats = parse_rows(&rows("pg_stat_database-15.csv")).unwrap();
        let names: Vec<&str> = stats.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["postgres", "app"], "no templates, no shared-objects row");
        let app = &stats[1];
        assert_eq!(app.threads, 0);
        let get = |k: &str| app.counters.iter().find(|(n, _)| *n == k).unwrap().1;
        // 100 rows inserted, then one more in a rolled-back transaction;
        // 9 updated, 10 deleted.
        assert_eq!(get("inserts"), 114);
        assert_eq!(get("updates"), 9);
        assert_eq!(get("deletes"), 10);
        assert_eq!(get("rollbacks"), 1);
        assert_eq!(get("commits"), 7);
        assert_eq!(get("disk.cache"), 1891);
        assert_eq!(stats[0].threads, 1, "the psql session that ran the query");
        assert_eq!(app.counters.len(), 9);
    }

    #[test]
    fn odd_rows_are_errors_or_skipped() {
        let short = vec![vec![Some("db".to_string())]];
        assert!(parse_rows(&short).is_err());
        let mut row: Vec<Option<String>> = vec![Some("db".into())];
        row.extend((1..COLUMNS.len()).map(|_| Some("1".to_string())));
        row[3] = Some("many".into());
        let err = parse_rows(&[row]).unwrap_err();
        assert_eq!(err, "xact_rollback of db is \"many\", not a number");
        assert!(query().ends_with("FROM pg_stat_database WHERE datname IS NOT NULL"));
    }
}
