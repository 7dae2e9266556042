//! PEM files of the config: reading and checking certificates, CA bundles
//! and private keys, and the `sni` name. Validation uses these to report
//! unusable files; lbd's runtime TLS settings (the admin server's
//! `ServerConfig`, the health checks' `ClientConfig`) are built from what
//! they return, so a file that validates is a file that works.
//!
//! Uses rustls (with the ring provider, explicitly) for parsing only; no
//! I/O runtime.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::model::TlsCheck;

/// Why TLS settings cannot be used, e.g. `ca_file "/etc/ca.pem": no
/// certificate found`. For `sni`, `path` holds the rejected name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} \"{}\": {reason}", path.display())]
pub struct TlsSetupError {
    /// The config key: `ca_file`, `client_cert`, `client_key`, `sni`,
    /// `tls_cert` or `tls_key`.
    pub field: &'static str,
    /// The file (or, for `sni`, the name) that cannot be used.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsSetupError {
    pub fn new(field: &'static str, path: &Path, reason: impl Into<String>) -> Self {
        TlsSetupError {
            field,
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The crypto provider of every TLS setting lbd builds: ring, never a
/// process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Checks the admin server's `tls_cert` and `tls_key` as lbd's
/// `ServerConfig` uses them: a certificate chain, a usable key, and the
/// two going together.
pub fn check_server_files(cert: &Path, key: &Path) -> Result<(), TlsSetupError> {
    certified_key(("tls_cert", cert), ("tls_key", key), &provider()).map(drop)
}

/// The configured `sni` as a server name, `None` when not set. An IP
/// address is accepted: nothing is sent then, but a `ca_file` certificate
/// must be for that address.
pub fn server_name(tls: &TlsCheck) -> Result<Option<ServerName<'static>>, TlsSetupError> {
    let Some(sni) = &tls.sni else {
        return Ok(None);
    };
    ServerName::try_from(sni.as_str())
        .map(|name| Some(name.to_owned()))
        .map_err(|_| TlsSetupError::new("sni", Path::new(sni), "not a valid DNS name"))
}

/// A certificate chain (`cert`: its config key and file) with its private
/// key (`key`), checked to be usable and to go together.
pub fn certified_key(
    (cert_field, cert_path): (&'static str, &Path),
    (key_field, key_path): (&'static str, &Path),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsSetupError> {
    let chain = certificates(cert_field, cert_path)?;
    let key = private_key(key_field, key_path, provider)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        let reason = format!("does not go with {cert_field}: {e}");
        TlsSetupError::new(key_field, key_path, reason)
    })
}

/// Largest PEM file read: CA bundles are a few hundred KiB; this keeps a
/// mistake such as `/dev/zero` from hanging config validation.
const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| TlsSetupError::new(field, path, format!("cannot read: {e}"));
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_FILE + 1).read_to_end(&mut pem))
        .map_err(cannot)?;
    if pem.len() as u64 > MAX_PEM_FILE {
        return Err(TlsSetupError::new(
            field,
            path,
            format!("larger than {} MiB", MAX_PEM_FILE >> 20),
        ));
    }
    Ok(pem)
}

/// Every certificate in the PEM file, at least one, each parseable.
pub fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::new(field, path, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(TlsSetupError::new(field, path, "no certificate found"));
    }
    for (i, cert) in certs.iter().enumerate() {
        ParsedCertificate::try_from(cert).map_err(|e| {
            let reason = format!("certificate {} of {}: {e}", i + 1, certs.len());
            TlsSetupError::new(field, path, reason)
        })?;
    }
    Ok(certs)
}

/// The certificates of a `ca_file`, as trust anchors.
pub fn root_store(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let certs = certificates("ca_file", path)?;
    let count = certs.len();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            let reason = format!("certificate {} of {count}: {e}", i + 1);
            TlsSetupError::new("ca_file", path, reason)
        })?;
    }
    Ok(roots)
}

/// The first private key of the PEM file, checked to be usable.
pub fn private_key(
    field: &'static str,
    path: &Path,
    provider: &CryptoProvider,
) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(field, path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound => "no private key found".to_owned(),
            e => pem_reason(e),
        };
        TlsSetupError::new(field, path, reason)
    })?;
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsSetupError::new(field, path, format!("unusable key: {e}")))?;
    Ok(key)
}

/// A PEM syntax error, with the lines it quotes as text, not byte lists.
fn pem_reason(e: pem::Error) -> String {
    let mut reason = "invalid PEM: ".to_owned();
    let _ = match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            write!(
                reason,
                "section \"{}\" has no END line",
                end_marker.escape_ascii()
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            write!(reason, "bad section start \"{}\"", line.escape_ascii())
        }
        e => write!(reason, "{e}"),
    };
    reason
}

#[cfg(test)]
mod tests {
    use lbd_test_support::{self_signed, TempFile};

    use super::*;

    #[test]
    fn server_files_must_hold_a_chain_and_its_key() {
        let id = self_signed();
        let cert = TempFile::new(id.cert.pem());
        let key = TempFile::new(id.key_pair.serialize_pem());
        assert_eq!(check_server_files(&cert.0, &key.0), Ok(()));
        let other = TempFile::new(self_signed().key_pair.serialize_pem());
        let e = check_server_files(&cert.0, &other.0).unwrap_err();
        assert_eq!((e.field, &e.path), ("tls_key", &other.0));
        assert!(e.reason.starts_with("does not go with tls_cert: "), "{e}");
        let e = check_server_files(&key.0, &key.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("tls_cert \"{}\": no certificate found", key.0.display())
        );
        let e = check_server_files(&cert.0, &cert.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("tls_key \"{}\": no private key found", cert.0.display())
        );
    }
}
