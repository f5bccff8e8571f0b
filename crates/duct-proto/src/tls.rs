//! TLS for Riemann connections, shared by the listener and the TCP output:
//! certificates and keys read from PEM files into rustls configurations
//! (ring provider), with errors that name the file and the option.
//!
//! Files are read when the source or output is built, so `ductd check`
//! reports a missing or unreadable certificate; a renewed certificate is
//! picked up when the block is rebuilt (a configuration change).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use rustls::pki_types::ServerName;
pub use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Why a TLS configuration could not be made; each names the option at
/// fault so that the message can be placed on it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {message}", path.display())]
    Read {
        option: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { option: &'static str, path: PathBuf },
    #[error("`cert` and `key` go together: give both or neither")]
    HalfPair { option: &'static str },
    #[error("a TLS listener needs its certificate: set `cert` and `key`")]
    NoServerCertificate { option: &'static str },
    #[error("no CA certificate found in the system store; set `ca`")]
    NoRoots { option: &'static str },
    #[error("{message}")]
    Rustls { option: &'static str, message: String },
}

impl TlsError {
    /// The configuration option the problem is about.
    pub fn option(&self) -> &'static str {
        match self {
            TlsError::Read { option, .. }
            | TlsError::NoCertificate { option, .. }
            | TlsError::HalfPair { option }
            | TlsError::NoServerCertificate { option }
            | TlsError::NoRoots { option }
            | TlsError::Rustls { option, .. } => option,
        }
    }
}

/// The PEM files of one end of a TLS connection, as configured.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// This end's certificate chain.
    pub cert: Option<PathBuf>,
    /// This end's private key.
    pub key: Option<PathBuf>,
    /// CA certificates to verify the other end with.
    pub ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_error(option: &'static str) -> impl Fn(rustls::Error) -> TlsError {
    move |e| TlsError::Rustls {
        option,
        message: e.to_string(),
    }
}

fn read_certs(option: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |e: rustls::pki_types::pem::Error| TlsError::Read {
        option,
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            option,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        option: "key",
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// This end's certificate chain and key, if configured.
fn identity(files: &TlsFiles) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Ok(Some((read_certs("cert", cert)?, read_key(key)?))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::HalfPair { option: "key" }),
        (None, Some(_)) => Err(TlsError::HalfPair { option: "cert" }),
    }
}

fn roots_from(option: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(option, path)? {
        roots.add(cert).map_err(rustls_error(option))?;
    }
    Ok(roots)
}

/// A client configuration: the server is verified against `ca`, else the
/// system's CA store; `cert`/`key`, when given, authenticate the client.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &files.ca {
        Some(ca) => roots_from("ca", ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(TlsError::NoRoots { option: "ca" });
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("tls"))?
        .with_root_certificates(roots);
    let config = match identity(files)? {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(rustls_error("key"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A server configuration: `cert`/`key` are required; with `ca`, clients
/// must present a certificate signed by it.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let Some((certs, key)) = identity(files)? else {
        return Err(TlsError::NoServerCertificate { option: "cert" });
    };
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("tls"))?;
    let builder = match &files.ca {
        Some(ca) => {
            let roots = Arc::new(roots_from("ca", ca)?);
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Rustls {
                    option: "ca",
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(rustls_error("key"))?;
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry: an IP address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|e| TlsError::Rustls {
        option: "server",
        message: format!("`{host}` is not a valid TLS server name: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_option_and_path() {
        let files = TlsFiles {
            cert: Some("/no/such/cert.pem".into()),
            key: Some("/no/such/key.pem".into()),
            ca: None,
        };
        let err = server_config(&files).unwrap_err();
        assert_eq!(err.option(), "cert");
        assert!(err.to_string().contains("/no/such/cert.pem"), "{err}");
    }

    #[test]
    fn cert_without_key_is_refused() {
        let files = TlsFiles {
            cert: Some("/etc/hostname".into()),
            ..TlsFiles::default()
        };
        let err = server_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::HalfPair { option: "key" }), "{err}");
        assert!(matches!(
            server_config(&TlsFiles::default()).unwrap_err(),
            TlsError::NoServerCertificate { .. }
        ));
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let err = client_config(&TlsFiles {
            ca: Some("/etc/hostname".into()),
            ..TlsFiles::default()
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { option: "ca", .. }), "{err}");
    }

    #[test]
    fn server_names_accept_ips_and_hosts() {
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("riemann.example.com").is_ok());
        assert!(server_name("not a name").is_err());
    }
}
