//! The cluster CA and node certificates (`edgerate certs init` / `certs issue`): every node's
//! certificate is signed by the cluster CA, and peers accept only certificates it signed.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a certificate could not be made.
#[derive(Debug, Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; remove it first to replace it")]
    Exists(PathBuf),
    #[error("{path} is not a usable {what}")]
    Unreadable { path: PathBuf, what: &'static str },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("node name {0:?} must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'")]
    BadName(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to a new file, durably, never over an existing one; a `private` file is
/// readable by its owner only. Used for keys and the node's other secrets.
pub fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists(path.to_owned())
        } else {
            CertError::Io {
                path: path.to_owned(),
                source: e,
            }
        }
    })?;
    file.write_all(contents.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Creates a cluster CA in `out`: `ca.pem` and `ca.key`. Returns the certificate's path.
pub fn init_ca(out: &Path) -> Result<PathBuf, CertError> {
    fs::create_dir_all(out).map_err(io(out))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "edgerate cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    let cert = params.self_signed(&key)?;
    let (cert_path, key_path) = (out.join("ca.pem"), out.join("ca.key"));
    if cert_path.exists() {
        return Err(CertError::Exists(cert_path));
    }
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok(cert_path)
}

/// Issues a certificate for node `name`, signed by the CA in `ca_dir`, into `out`: `NAME.pem` and
/// `NAME.key`. The node name is the certificate's common name and DNS name (peers identify each
/// other by it); it is valid for both TLS client and server use (mutual authentication).
pub fn issue(ca_dir: &Path, name: &str, out: &Path) -> Result<PathBuf, CertError> {
    if !crate::valid_name(name) {
        return Err(CertError::BadName(name.to_owned()));
    }
    let (ca_cert_path, ca_key_path) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    let ca_pem = fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|_| CertError::Unreadable {
        path: ca_key_path.clone(),
        what: "CA key",
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|_| CertError::Unreadable {
        path: ca_cert_path.clone(),
        what: "CA certificate",
    })?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    let cert = params.signed_by(&key, &issuer)?;
    fs::create_dir_all(out).map_err(io(out))?;
    let (cert_path, key_path) = (
        out.join(format!("{name}.pem")),
        out.join(format!("{name}.key")),
    );
    if cert_path.exists() {
        return Err(CertError::Exists(cert_path));
    }
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok(cert_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::pem::parse_x509_pem;

    fn parse(path: &Path) -> Vec<u8> {
        let pem = fs::read(path).unwrap();
        parse_x509_pem(&pem).unwrap().1.contents
    }

    #[test]
    fn a_node_certificate_is_signed_by_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        init_ca(&ca_dir).unwrap();
        assert!(
            matches!(init_ca(&ca_dir), Err(CertError::Exists(_))),
            "never overwrites a CA"
        );
        let node = issue(&ca_dir, "lon-1", &dir.path().join("nodes")).unwrap();
        let ca_der = parse(&ca_dir.join("ca.pem"));
        let node_der = parse(&node);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&node_der).unwrap();
        assert!(ca.is_ca());
        assert_eq!(cert.issuer(), ca.subject());
        cert.verify_signature(Some(ca.public_key()))
            .expect("signed by the CA");
        let other = dir.path().join("other");
        init_ca(&other).unwrap();
        let other_der = parse(&other.join("ca.pem"));
        let (_, other_ca) = x509_parser::parse_x509_certificate(&other_der).unwrap();
        assert!(
            cert.verify_signature(Some(other_ca.public_key())).is_err(),
            "another CA did not sign it"
        );
        assert!(matches!(
            issue(&ca_dir, "a b", dir.path()),
            Err(CertError::BadName(_))
        ));
        assert!(matches!(
            issue(&dir.path().join("none"), "x", dir.path()),
            Err(CertError::Io { .. })
        ));
    }
}
