//! The client side of `https` and `tls_hello` health checks: the rustls
//! `ClientConfig` built from a [`TlsCheck`]. It lives with the config
//! because validation builds it to check the files and the name, and
//! because lb-agent uses it too (to reach Keystone and Octavia) without
//! depending on lbd's data plane.
//!
//! Always uses the ring crypto provider explicitly, never a process default.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::model::TlsCheck;
use crate::tls_files::{self, TlsSetupError};

/// Builds the client config of `https` (`alpn_http`: offers ALPN
/// `http/1.1`) and `tls_hello` checks, reading the PEM files of `tls`.
///
/// Without `ca_file` the member's certificate is accepted whatever it is,
/// but the handshake signatures are verified. With it, the certificate must
/// chain to one of its certificates and match the server name. `sni` is
/// checked too, so that check-config reports a bad one.
pub fn client_config(tls: &TlsCheck, alpn_http: bool) -> Result<Arc<ClientConfig>, TlsSetupError> {
    tls_files::server_name(tls)?;
    let provider = tls_files::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // Cannot fail with the ring provider, which has TLS 1.2 and 1.3 suites.
        .map_err(|e| TlsSetupError::new("tls", Path::new(""), e.to_string()))?;
    let builder = match &tls.ca_file {
        Some(path) => {
            let roots = Arc::new(tls_files::root_store(path)?);
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsSetupError::new("ca_file", path, e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            ))),
    };
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), None) => {
            return Err(TlsSetupError::new(
                "client_cert",
                cert,
                "client_key is not set",
            ))
        }
        (None, Some(key)) => {
            return Err(TlsSetupError::new(
                "client_key",
                key,
                "client_cert is not set",
            ))
        }
        (Some(cert_path), Some(key_path)) => {
            let identity = tls_files::certified_key(
                ("client_cert", cert_path),
                ("client_key", key_path),
                &provider,
            )?;
            // What `with_client_auth_cert` does, with the key checked above.
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)))
        }
    };
    if alpn_http {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Arc::new(config))
}

/// Accepts any certificate for any name (HAProxy `verify none`) but still
/// verifies the handshake signatures, so the peer must hold the key of the
/// certificate it sent.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbd_test_support::{self_signed, TempFile};

    fn tls(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> TlsCheck {
        TlsCheck {
            ca_file: ca.map(Path::to_owned),
            sni: None,
            client_cert: cert.map(Path::to_owned),
            client_key: key.map(Path::to_owned),
        }
    }

    fn error(tls: &TlsCheck) -> String {
        client_config(tls, false).unwrap_err().to_string()
    }

    #[test]
    fn builds_with_and_without_files() {
        let id = self_signed();
        let cert = TempFile::new(id.cert.pem());
        let key = TempFile::new(id.key_pair.serialize_pem());
        let config = client_config(&TlsCheck::default(), true).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(client_config(&TlsCheck::default(), false)
            .unwrap()
            .alpn_protocols
            .is_empty());
        let all = tls(Some(&cert.0), Some(&cert.0), Some(&key.0));
        assert!(client_config(&all, false).is_ok());
        // One file holding both the certificate and its key.
        let both = TempFile::new(id.cert.pem() + &id.key_pair.serialize_pem());
        assert!(client_config(&tls(None, Some(&both.0), Some(&both.0)), false).is_ok());
    }

    #[test]
    fn unreadable_files_are_reported() {
        let missing = Path::new("/nonexistent/lbd/ca.pem");
        assert_eq!(
            error(&tls(Some(missing), None, None)),
            "ca_file \"/nonexistent/lbd/ca.pem\": cannot read: \
             No such file or directory (os error 2)"
        );
        let dir = std::env::temp_dir();
        let e = client_config(&tls(Some(&dir), None, None), false).unwrap_err();
        assert_eq!((e.field, e.path), ("ca_file", dir));
        assert!(e.reason.starts_with("cannot read: "), "{}", e.reason);
    }

    #[test]
    fn files_without_the_right_pem_are_reported() {
        let id = self_signed();
        let empty = TempFile::new("");
        let text = TempFile::new("not a certificate\n");
        let cert = TempFile::new(id.cert.pem());
        let key = TempFile::new(id.key_pair.serialize_pem());
        let e = error(&tls(Some(&empty.0), None, None));
        assert_eq!(
            e,
            format!("ca_file \"{}\": no certificate found", empty.0.display())
        );
        let e = error(&tls(Some(&text.0), None, None));
        assert!(e.ends_with(": no certificate found"), "{e}");
        let e = error(&tls(None, Some(&key.0), Some(&key.0)));
        assert!(
            e.starts_with("client_cert ") && e.ends_with("no certificate found"),
            "{e}"
        );
        let e = error(&tls(None, Some(&cert.0), Some(&cert.0)));
        assert_eq!(
            e,
            format!("client_key \"{}\": no private key found", cert.0.display())
        );
        let e = error(&tls(None, Some(&cert.0), Some(&empty.0)));
        assert!(e.ends_with(": no private key found"), "{e}");
    }

    #[test]
    fn broken_pem_is_reported() {
        let id = self_signed();
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let garbage = TempFile::new(garbage);
        let e = error(&tls(Some(&garbage.0), None, None));
        assert!(
            e.starts_with("ca_file ") && e.contains("certificate 1 of 1: "),
            "{e}"
        );
        let cut = id.cert.pem();
        let cut = TempFile::new(&cut[..cut.len() / 2]);
        let e = error(&tls(Some(&cut.0), None, None));
        assert!(
            e.contains(": invalid PEM: section \"CERTIFICATE\" has no END line"),
            "{e}"
        );
        let bad_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let bad_key = TempFile::new(bad_key);
        let cert = TempFile::new(id.cert.pem());
        let e = error(&tls(None, Some(&cert.0), Some(&bad_key.0)));
        assert!(
            e.starts_with("client_key ") && e.contains("unusable key: "),
            "{e}"
        );
    }

    #[test]
    fn key_must_match_certificate() {
        let (a, b) = (self_signed(), self_signed());
        let cert = TempFile::new(a.cert.pem());
        let key = TempFile::new(b.key_pair.serialize_pem());
        let e = error(&tls(None, Some(&cert.0), Some(&key.0)));
        assert!(
            e.starts_with("client_key ") && e.contains("does not go with"),
            "{e}"
        );
        let e = error(&tls(None, Some(&cert.0), None));
        assert!(e.ends_with(": client_key is not set"), "{e}");
    }

    #[test]
    fn endless_files_are_refused() {
        let tls = TlsCheck {
            ca_file: Some("/dev/zero".into()),
            ..TlsCheck::default()
        };
        assert_eq!(error(&tls), "ca_file \"/dev/zero\": larger than 4 MiB");
    }

    #[test]
    fn sni_must_be_a_name() {
        let mut check = TlsCheck {
            sni: Some("api.example".to_owned()),
            ..TlsCheck::default()
        };
        assert!(client_config(&check, false).is_ok());
        check.sni = Some("bad name".to_owned());
        assert_eq!(error(&check), "sni \"bad name\": not a valid DNS name");
    }
}
