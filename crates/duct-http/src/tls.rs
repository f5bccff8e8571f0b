//! How an HTTP client (and the TCP check) verifies the servers it talks
//! TLS to: `tls_verify` and `ca`, made into rustls client configurations.
//!
//! The PEM reading and the platform CA store come from duct-proto's TLS
//! set-up, so ductd has one way to load certificates. What this adds is
//! the prober's needs: verification that can be turned off (the server
//! must still prove it holds the key of the certificate it shows) and no
//! session resumption, so that every check does the full handshake a new
//! client would and times it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use duct_proto::tls::{self as proto_tls, TlsFiles};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub use duct_proto::tls::TlsError;
pub use rustls::ClientConfig;

/// `tls_verify` and `ca` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Verify the server's certificate chain and name.
    pub verify: bool,
    /// CA certificates (PEM) to verify with instead of the system's store.
    pub ca: Option<PathBuf>,
}

impl Default for TlsPolicy {
    /// Verified against the system's CA store.
    fn default() -> Self {
        TlsPolicy { verify: true, ca: None }
    }
}

impl TlsPolicy {
    /// The client configuration for this policy. Configurations using the
    /// system's CA store, or verifying nothing, are made once per process
    /// and shared: a poller of hundreds of HTTPS checks holds one copy of
    /// the CA store. A `ca` file is read each time this is called, so
    /// callers make the configuration once, when their block is built.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
        static UNVERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        if !self.verify {
            return Ok(UNVERIFIED.get_or_init(unverified_config).clone());
        }
        if let Some(ca) = &self.ca {
            let files = TlsFiles {
                ca: Some(ca.clone()),
                ..TlsFiles::default()
            };
            return proto_tls::client_config(&files).map(fresh_handshakes);
        }
        SYSTEM
            .get_or_init(|| {
                proto_tls::client_config(&TlsFiles::default())
                    .map(fresh_handshakes)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|message| TlsError::Rustls { option: "ca", message })
    }
}

/// A copy of `config` that never resumes a session.
fn fresh_handshakes(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = (*config).clone();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

fn unverified_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions: an invariant.
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// `tls_verify: false`: any certificate is accepted, but the handshake's
/// signatures are still checked, so the server must hold the key of the
/// certificate it shows.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
