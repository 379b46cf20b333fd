//! The TLS client configuration for `rediss://` (crate feature `tls`).
//!
//! rustls with the ring provider, chosen explicitly so that no process-wide
//! default provider is needed (and aws-lc-rs is never built). Trusted roots:
//! the system's (the OS store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus every
//! certificate in the optional CA file, for servers whose certificate comes
//! from a private CA. The server name checked is the DSN's host, so a
//! certificate for an IP address needs that address in its subjectAltName.

use std::path::Path;
use std::sync::Arc;

use fred::types::config::{TlsConfig, TlsConnector};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// A client configuration trusting the system roots and `ca_file`.
///
/// # Errors
///
/// A message naming the problem when the CA file cannot be read or holds no
/// usable certificate, or when no root is trusted at all.
pub(super) fn config(ca_file: Option<&Path>) -> Result<TlsConfig, String> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(%error, "a system root certificate could not be loaded");
    }
    let (_, unusable) = roots.add_parsable_certificates(system.certs);
    if unusable > 0 {
        tracing::debug!(unusable, "system root certificates rustls cannot use were skipped");
    }
    if let Some(path) = ca_file {
        for cert in read_pem(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("the CA file {} holds an unusable certificate: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no trusted root certificates: the system store is empty (install ca-certificates) and {} is not set",
            super::options::CA_FILE_ENV
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("the TLS provider is unusable: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(config).into())
}

/// A readable reason when `e` is a failed TLS handshake, else `None`.
///
/// The client reports the handshake's error only as text (the debug form of
/// the rustls error inside an I/O error), so that text is what is matched.
pub(super) fn handshake_failure(e: &fred::error::Error) -> Option<String> {
    let details = e.details();
    if details.contains("InvalidCertificate") {
        let what = details.split_once("error: ").map_or(details, |(_, rest)| rest.trim_end_matches(" }"));
        Some(format!(
            "the server's certificate is not trusted ({what}); if a private CA issued it, set {} to that CA's PEM file",
            super::options::CA_FILE_ENV
        ))
    } else {
        None
    }
}

/// The certificates of a PEM file (other sections, such as keys, are skipped).
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |e: rustls::pki_types::pem::Error| format!("cannot read the CA file {}: {e}", path.display());
    let certs =
        CertificateDer::pem_file_iter(path).map_err(unreadable)?.collect::<Result<Vec<_>, _>>().map_err(unreadable)?;
    if certs.is_empty() {
        return Err(format!("the CA file {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("rrq-store-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = config(Some(&missing)).unwrap_err();
        assert!(err.contains("cannot read the CA file") && err.contains("missing.pem"), "{err}");

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = config(Some(&empty)).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");

        let broken = dir.join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
        let err = config(Some(&broken)).unwrap_err();
        assert!(err.contains("broken.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
