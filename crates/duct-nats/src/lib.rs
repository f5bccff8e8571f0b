//! What `duct.sources.nats.Nats` and `duct.outputs.nats.Nats` share: the
//! connection to a NATS cluster (servers, credentials, nkey seed and TLS
//! files under Duct's option names, reconnecting for ever) and the payload
//! formats Duct writes and reads ([`format`]: Duct's JSON event, SenML as
//! JSON and as CBOR).
//!
//! A user and password or a token ride in the server URLs, as Duct's
//! client (nats-py) reads them: `nats://user:password@host:4222` (either
//! percent-encoded where it holds `@`, `:` or `/`) is a user and password,
//! `nats://token@host:4222` a token. async-nats itself ignores what a URL
//! carries, so it is taken out of the URLs here, handed to the client as
//! its user and password or token, and never shown: logs and errors name
//! the servers with `***` in its place.

mod cbor;
pub mod format;

use std::path::PathBuf;
use std::time::Duration;

pub use async_nats;
use async_nats::ServerAddr;
pub use format::Format;

/// How long one attempt to reach a server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Duct's connection options, shared by the source and the output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connection {
    /// `nats://host:port` (or `tls://`) URLs; the client tries each. A URL
    /// may carry `user:password@` or `token@`.
    pub servers: Vec<String>,
    pub credentials_file: Option<PathBuf>,
    pub nkey_seed_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// Who the server URLs say the client is.
#[derive(Debug, Clone, PartialEq)]
enum UrlAuth {
    User { user: String, password: String },
    Token(String),
}

/// A connection that cannot be set up from its options, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{option}: {message}")]
    Invalid { option: &'static str, message: String },
    #[error("cannot connect to NATS ({servers}): {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
}

impl ConnectError {
    /// The option at fault, if the options are.
    pub fn option(&self) -> Option<&'static str> {
        match self {
            ConnectError::Invalid { option, .. } => Some(option),
            ConnectError::Connect { .. } => None,
        }
    }
}

impl Connection {
    /// The server addresses, checked (as `ductd check` does), without
    /// the credentials they carry, and those credentials.
    fn addresses(&self) -> Result<(Vec<ServerAddr>, Option<UrlAuth>), ConnectError> {
        if self.servers.is_empty() {
            return Err(invalid("servers", "needs at least one nats:// URL".into()));
        }
        let mut addresses = Vec::with_capacity(self.servers.len());
        let mut auth = None;
        for server in &self.servers {
            let address: ServerAddr = server
                .parse()
                .map_err(|e| invalid("servers", format!("{}: {e}", shown(server))))?;
            let (address, carried) =
                take_auth(address).map_err(|e| invalid("servers", format!("{}: {e}", shown(server))))?;
            if let Some(carried) = carried {
                if auth.as_ref().is_some_and(|a| *a != carried) {
                    return Err(invalid(
                        "servers",
                        "the URLs carry different users, passwords or tokens: the client has one for every server"
                            .into(),
                    ));
                }
                auth = Some(carried);
            }
            addresses.push(address);
        }
        Ok((addresses, auth))
    }

    /// The servers as logs and errors name them: a password or token in a
    /// URL is `***`.
    pub fn shown_servers(&self) -> String {
        self.servers.iter().map(|s| shown(s)).collect::<Vec<_>>().join(", ")
    }

    /// Checks what can be checked without connecting: the URLs, and that
    /// the files named exist and fit together.
    pub fn check(&self) -> Result<(), ConnectError> {
        self.addresses()?;
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            let option = if self.tls_cert_file.is_some() {
                "tls_key_file"
            } else {
                "tls_cert_file"
            };
            return Err(invalid(option, "tls_cert_file and tls_key_file go together".into()));
        }
        for (option, file) in [
            ("credentials_file", &self.credentials_file),
            ("nkey_seed_file", &self.nkey_seed_file),
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ] {
            if let Some(path) = file {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(invalid(option, format!("{}: {e}", path.display())));
                }
            }
        }
        Ok(())
    }

    /// Connects; once connected, the client reconnects by itself for ever
    /// (publishes meanwhile wait in its buffer, subscriptions are renewed).
    /// `name` is the client name the server shows (`ductd <service>`).
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectError> {
        let (addresses, auth) = self.addresses()?;
        let mut options = match &self.credentials_file {
            // As Duct: a credentials file wins over a seed file.
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| invalid("credentials_file", format!("{}: {e}", path.display())))?,
            None => async_nats::ConnectOptions::new(),
        };
        if self.credentials_file.is_none() {
            if let Some(path) = &self.nkey_seed_file {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| invalid("nkey_seed_file", format!("{}: {e}", path.display())))?;
                options = options.nkey(seed.trim().to_string());
            }
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        match auth {
            Some(UrlAuth::User { user, password }) => options = options.user_and_password(user, password),
            Some(UrlAuth::Token(token)) => options = options.token(token),
            None => {}
        }
        let servers = self.shown_servers();
        let logged = servers.clone();
        options
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .event_callback(move |event| {
                let servers = logged.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!(%servers, "NATS connected"),
                        async_nats::Event::Disconnected => tracing::warn!(%servers, "NATS disconnected"),
                        async_nats::Event::Closed => tracing::debug!(%servers, "NATS connection closed"),
                        other => tracing::warn!(%servers, "NATS: {other}"),
                    }
                }
            })
            .connect(addresses)
            .await
            .map_err(|source| ConnectError::Connect { servers, source })
    }
}

fn invalid(option: &'static str, message: String) -> ConnectError {
    ConnectError::Invalid { option, message }
}

/// Takes the user and password, or the token, out of a server address.
fn take_auth(address: ServerAddr) -> Result<(ServerAddr, Option<UrlAuth>), String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "the user, password or token is not UTF-8 once percent-decoded".to_string())
    };
    let auth = match (address.username(), address.password()) {
        (None, None) => return Ok((address, None)),
        (Some(user), Some(password)) => UrlAuth::User {
            user: decode(user)?,
            password: decode(password)?,
        },
        (Some(token), None) => UrlAuth::Token(decode(token)?),
        (None, Some(_)) => return Err("a password needs a user before it (user:password@)".into()),
    };
    let mut url = address.into_inner();
    // Only fails for URLs that cannot have credentials, which these had.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let address = ServerAddr::from_url(url).map_err(|e| e.to_string())?;
    Ok((address, Some(auth)))
}

/// A server URL with its password or token, if any, as `***`.
fn shown(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => {
            let userinfo = &url[start..start + at];
            let kept = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{}{kept}{}", &url[..start], &url[start + at..])
        }
        None => url.to_string(),
    }
}

/// Makes a subject of a rendered topic: NATS subjects cannot hold
/// whitespace (it separates the protocol's fields), so each run of it (and
/// of control characters) becomes `_`; an empty token (`a..b`, a trailing
/// dot) becomes `_` too, as the server refuses those.
pub fn subject(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    let mut gap = false;
    for c in topic.chars() {
        if c.is_whitespace() || c.is_control() {
            if !gap {
                out.push('_');
            }
            gap = true;
        } else {
            gap = false;
            out.push(c);
        }
    }
    let tokens: Vec<&str> = out.split('.').map(|t| if t.is_empty() { "_" } else { t }).collect();
    tokens.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_lose_whitespace_and_empty_tokens() {
        assert_eq!(subject("web1.example.disk /var"), "web1.example.disk_/var");
        assert_eq!(subject("a..b.\t\n"), "a._.b._");
        assert_eq!(subject("h.cpu"), "h.cpu");
    }

    #[test]
    fn credentials_come_out_of_the_urls_and_are_never_shown() {
        let c = Connection {
            servers: vec![
                "nats://ductd:p%40ss%20word@127.0.0.1:4222".into(),
                "tls://ductd:p%40ss%20word@[::1]:4223".into(),
                "nats://127.0.0.1:4224".into(),
            ],
            ..Connection::default()
        };
        let (addresses, auth) = c.addresses().unwrap();
        assert_eq!(
            auth,
            Some(UrlAuth::User {
                user: "ductd".into(),
                password: "p@ss word".into()
            })
        );
        let urls: Vec<&str> = addresses.iter().map(|a| a.as_url_str()).collect();
        assert_eq!(
            urls,
            ["nats://127.0.0.1:4222", "tls://[::1]:4223", "nats://127.0.0.1:4224"]
        );
        assert_eq!(
            c.shown_servers(),
            "nats://ductd:***@127.0.0.1:4222, tls://ductd:***@[::1]:4223, nats://127.0.0.1:4224"
        );

        let token = Connection {
            servers: vec!["nats://s3cr%2Ft@localhost".into()],
            ..Connection::default()
        };
        assert_eq!(token.addresses().unwrap().1, Some(UrlAuth::Token("s3cr/t".into())));
        assert_eq!(token.shown_servers(), "nats://***@localhost");

        let mixed = Connection {
            servers: vec!["nats://a:1@h1".into(), "nats://a:2@h2".into()],
            ..Connection::default()
        };
        let err = mixed.check().unwrap_err();
        assert_eq!(err.option(), Some("servers"));
        assert!(!err.to_string().contains(":2@"), "{err}");
    }

    #[test]
    fn options_are_checked_before_connecting() {
        let mut c = Connection {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..Connection::default()
        };
        assert!(c.check().is_ok());
        c.tls_cert_file = Some("/etc/hostname".into());
        assert_eq!(c.check().unwrap_err().option(), Some("tls_key_file"));
        c.tls_cert_file = None;
        c.nkey_seed_file = Some("/nonexistent/seed".into());
        assert_eq!(c.check().unwrap_err().option(), Some("nkey_seed_file"));
        c.nkey_seed_file = None;
        c.servers.clear();
        assert_eq!(c.check().unwrap_err().option(), Some("servers"));
    }
}
