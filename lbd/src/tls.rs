//! rustls settings built from PEM files: the server side of the admin
//! server here; the client side of `https` and `tls_hello` health checks
//! and the PEM reading live in lbd-config (validation builds them too).
//!
//! Always uses the ring crypto provider explicitly, never a process default.

use std::path::Path;
use std::sync::Arc;

use lbd_config::tls_files;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;

pub use lbd_config::tls_client::client_config;
pub use lbd_config::tls_files::{server_name, TlsSetupError};

/// The server config of the admin server: certificate chain and key from
/// PEM files (`tls_cert`, `tls_key`), ALPN `http/1.1`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = tls_files::provider();
    let identity = tls_files::certified_key(("tls_cert", cert), ("tls_key", key), &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::new("tls_cert", cert, e.to_string()))?
        .with_no_client_auth()
        // What `with_single_cert` does, with the key checked above.
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    // Re-exported for the health checks' unit tests (`health::probe`).
    pub(crate) use lbd_test_support::{self_signed, TempFile};

    use super::*;

    #[test]
    fn server_config_from_matching_files() {
        let id = self_signed();
        let cert = TempFile::new(id.cert.pem());
        let key = TempFile::new(id.key_pair.serialize_pem());
        let config = server_config(&cert.0, &key.0).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        let other = TempFile::new(self_signed().key_pair.serialize_pem());
        let e = server_config(&cert.0, &other.0).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "tls_key \"{}\": does not go with tls_cert: ",
                other.0.display()
            )),
            "{e}"
        );
        let e = server_config(&key.0, &key.0).unwrap_err().to_string();
        assert!(
            e.starts_with("tls_cert ") && e.ends_with("no certificate found"),
            "{e}"
        );
    }
}
