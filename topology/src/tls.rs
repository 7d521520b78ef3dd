//! The TLS identities of the cluster: every node presents a certificate signed by the cluster
//! CA and accepts only peers whose certificate the CA signed, in both directions (mutual TLS).
//!
//! A node is named by its certificate (the DNS name `certs issue` wrote), not by what it says:
//! [`peer_name`] reads the name a verified certificate carries. Server names are not checked
//! against the address dialled (seeds are addresses, not names); the chain to the cluster CA is.

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

use crate::TlsSection;

/// ALPN protocol name; the suffix is the replication protocol version.
pub const ALPN: &[u8] = b"edgerate/3";

/// Why the TLS identity could not be loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("[tls] {path}: {reason}")]
    File { path: String, reason: String },
    #[error("[tls] {0}")]
    Config(String),
}

/// Client and server TLS configs of one node, and what its verifier refused.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// Names of certificates refused lately (newest last), for the operator view.
    pub refusals: Arc<Refusals>,
    /// This node's name as its certificate carries it.
    pub name: String,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("name", &self.name).finish()
    }
}

/// Certificates refused by this node's verifiers, named as they named themselves.
#[derive(Debug, Default)]
pub struct Refusals {
    names: Mutex<VecDeque<String>>,
}

impl Refusals {
    fn push(&self, cert: &CertificateDer<'_>) {
        let name = peer_name(cert).unwrap_or_else(|| "(unnamed)".into());
        let mut names = self.names.lock();
        if names.len() >= 64 {
            names.pop_front();
        }
        names.push_back(name);
    }

    /// The oldest refusal not yet taken.
    pub fn take(&self) -> Option<String> {
        self.names.lock().pop_front()
    }
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Loads `[tls]`: the CA, this node's certificate and key.
pub fn load(section: &TlsSection) -> Result<PeerTls, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&section.ca)
        .map_err(|e| file_error(&section.ca, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&section.ca, e))?;
    if ca_certs.is_empty() {
        return Err(file_error(&section.ca, "no certificate in it"));
    }
    for cert in ca_certs {
        roots
            .add(cert)
            .map_err(|e| file_error(&section.ca, format!("not a CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&section.cert)
        .map_err(|e| file_error(&section.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&section.cert, e))?;
    let first = chain
        .first()
        .ok_or_else(|| file_error(&section.cert, "no certificate in it"))?;
    let name = peer_name(first)
        .ok_or_else(|| file_error(&section.cert, "the certificate names no node"))?;
    let key =
        PrivateKeyDer::from_pem_file(&section.key).map_err(|e| file_error(&section.key, e))?;
    let refusals = Arc::new(Refusals::default());

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(Recording {
            inner: client_verifier,
            refusals: refusals.clone(),
        }))
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| file_error(&section.key, format!("does not fit the certificate: {e}")))?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let server_verifier = CaSigned {
        signatures: WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(format!("server verifier: {e}")))?,
        roots,
        provider: provider.clone(),
        refusals: refusals.clone(),
    };
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(server_verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| file_error(&section.key, format!("does not fit the certificate: {e}")))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(PeerTls {
        server: Arc::new(server),
        client: Arc::new(client),
        refusals,
        name,
    })
}

/// The node name a certificate carries: its first DNS subject alternative name.
pub fn peer_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(name) => Some((*name).to_owned()),
        _ => None,
    })
}

/// Checks a client certificate with the CA verifier and remembers what it refused.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ClientCertVerifier>,
    refusals: Arc<Refusals>,
}

impl ClientCertVerifier for Recording {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                tracing::warn!(peer = ?peer_name(end_entity), error = %e, "refused a peer certificate");
                self.refusals.push(end_entity);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts a server certificate that chains to the cluster CA, whatever name was dialled.
#[derive(Debug)]
struct CaSigned {
    signatures: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    refusals: Arc<Refusals>,
}

impl ServerCertVerifier for CaSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .inspect_err(|e| {
            tracing::warn!(peer = ?peer_name(end_entity), error = %e, "refused a peer certificate");
            self.refusals.push(end_entity);
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dir: &Path, ca: &Path, name: &str) -> TlsSection {
        crate::certs::issue(ca, name, dir).unwrap();
        TlsSection {
            ca: ca.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    #[test]
    fn loads_an_identity_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init_ca(dir.path()).unwrap();
        let tls = load(&identity(dir.path(), dir.path(), "lon-1")).unwrap();
        assert_eq!(tls.name, "lon-1");
        assert_eq!(tls.server.alpn_protocols, [ALPN.to_vec()]);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init_ca(dir.path()).unwrap();
        let mut section = identity(dir.path(), dir.path(), "lon-1");
        section.key = dir.path().join("ca.pem");
        let err = load(&section).unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");
        section.ca = dir.path().join("missing.pem");
        let err = load(&section).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
