//! Throwaway TLS identities for tests.

/// A self-signed certificate for `localhost` and `127.0.0.1`.
pub fn self_signed() -> rcgen::CertifiedKey {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    rcgen::generate_simple_self_signed(names).expect("self-signed certificate")
}
