//! TLS for TURN over TCP (`turns:`, RFC 8656 section 3.1): the certificate chain and key
//! from PEM files (`--cert`, `--pkey`, coturn's names), rustls with the ring provider,
//! TLS 1.2 and 1.3 only, ALPN `stun.turn` and `stun.nat-discovery` (RFC 7443; a client
//! that offers no ALPN is served too), the same certificate whatever the SNI. The
//! configuration is re-read on SIGHUP: new connections get the new certificate.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// ALPN protocol ids of RFC 7443.
pub const ALPN: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// The TLS configuration new connections take; replaced on reload.
pub type Shared = Arc<Mutex<Arc<rustls::ServerConfig>>>;

/// A server configuration from the PEM files `cert` (the chain, leaf first) and `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read --cert {} (it must be readable by the user xturn runs as, for reloads)", cert.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--cert {}: bad PEM", cert.display()))?;
    if chain.is_empty() {
        bail!("--cert {}: no CERTIFICATE in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "--pkey {}: no private key read from it (it must be readable by the user \
                 xturn runs as, for reloads: e.g. group xturn, mode 0640)",
            key.display()
        )
    })?;
    // ring rather than aws-lc-rs (rustls's default, which wants cmake to build): ring's
    // provider has no post-quantum key exchange, hence rustls's deprecation note; clients
    // (browsers included) agree X25519 or P-256 with it.
    #[allow(deprecated, reason = "ring: no post-quantum key exchange, see above")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("--cert and --pkey do not make a usable certificate and key")?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("xturn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let none = dir.join("none.pem");
        let e = server_config(&none, &none).unwrap_err();
        assert!(format!("{e:#}").contains("--cert"), "{e:#}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = server_config(&junk, &junk).unwrap_err();
        assert!(format!("{e:#}").contains("no CERTIFICATE"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
