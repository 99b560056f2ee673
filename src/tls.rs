//! One TLS setup for every listener (rustls with the ring provider). With no
//! certificate configured, a self-signed one is generated into
//! `<data_dir>/tls/` at first start and reused afterwards.
//!
//! Reload (SIGHUP, `roles::run`): [`Tls::reload`] reads the certificate and
//! key again and swaps the server configuration; handshakes that start
//! afterwards use the new certificate, established sessions keep theirs.
//! A certificate that does not load leaves the old one in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::net::Conn;

pub struct Tls {
    /// The current server configuration; a reload replaces it. Each
    /// handshake clones the acceptor (an `Arc`) and never holds the lock.
    acceptor: RwLock<TlsAcceptor>,
    /// Where the certificate came from, for the start-up log.
    pub cert_path: PathBuf,
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs ring as the process-wide crypto provider (once; later calls are
/// harmless). Two providers compiled in would otherwise make rustls panic.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Tls {
    pub fn from_config(config: &Config) -> anyhow::Result<Tls> {
        let (acceptor, cert_path) = Self::build(config)?;
        Ok(Tls {
            acceptor: RwLock::new(acceptor),
            cert_path,
        })
    }

    /// Reads the certificate and key named by `config` again and uses them
    /// for every later handshake. On error the current ones stay.
    pub fn reload(&self, config: &Config) -> anyhow::Result<PathBuf> {
        let (acceptor, path) = Self::build(config)?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(path)
    }

    fn current(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn build(config: &Config) -> anyhow::Result<(TlsAcceptor, PathBuf)> {
        install_provider();
        let (cert_path, key_path) = if config.tls.cert.is_empty() {
            let dir = config.server.data_dir.join("tls");
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                generate_self_signed(&dir, &config.server.hostname)?;
            }
            (cert, key)
        } else {
            (
                config.data_path(&config.tls.cert, ""),
                config.data_path(&config.tls.key, ""),
            )
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .with_context(|| format!("reading certificate {}", cert_path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing certificate {}", cert_path.display()))?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .with_context(|| format!("reading key {}", key_path.display()))?;
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("certificate and key do not match")?;
        Ok((TlsAcceptor::from(Arc::new(server)), cert_path))
    }

    /// Runs the server side of a TLS handshake over any stream.
    pub async fn accept(&self, stream: Conn) -> std::io::Result<Conn> {
        let acceptor = self.current();
        let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })
            .and_then(|r| r);
        crate::metrics::tls_handshake(s.is_ok());
        Ok(Box::new(s?))
    }
}

fn generate_self_signed(dir: &Path, hostname: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![hostname.to_string()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    let cert = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    let key_path = dir.join("key.pem");
    write_private(&key_path, cert.signing_key.serialize_pem().as_bytes())?;
    crate::fsutil::write_durable(&dir.join("cert.pem"), cert.cert.pem().as_bytes())?;
    tracing::info!(path = %dir.display(), "generated a self-signed certificate");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(0o600);
    let mut f = opts.open(path)?;
    std::io::Write::write_all(&mut f, data)?;
    f.sync_all()?;
    Ok(())
}

/// A TLS client configuration for msgd's own hops to its stores (the mmp,
/// the mem): verified against the PEM CA file `ca_file` (relative to the
/// data folder), or not verified at all when `insecure` (labs and tests).
/// `missing` is the error when verification is wanted and no file given.
pub fn store_client_config(
    config: &Config,
    insecure: bool,
    ca_file: &str,
    missing: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    if ca_file.is_empty() {
        anyhow::bail!("{missing}");
    }
    let path = config.data_path(ca_file, "");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("reading {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("adding a certificate of {}", path.display()))?;
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Client side: accepts any server certificate, for opportunistic TLS
/// (RFC 7435: encryption without authentication) and explicit lab setups. The
/// handshake signatures are still checked, so the session key is bound
/// to whatever certificate the server showed.
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_path_buf();
        c
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_the_old_one_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        let tls = Tls::from_config(&c).unwrap();
        let first = tls.current().config().clone();

        // A second certificate elsewhere: the reload takes it.
        generate_self_signed(&dir.path().join("other"), "mx2.example").unwrap();
        c.tls.cert = "other/cert.pem".into();
        c.tls.key = "other/key.pem".into();
        assert_eq!(tls.reload(&c).unwrap(), dir.path().join("other/cert.pem"));
        let second = tls.current().config().clone();
        assert!(!Arc::ptr_eq(&first, &second));

        // A missing key: an error, and the second certificate stays.
        c.tls.key = "missing.pem".into();
        assert!(tls.reload(&c).is_err());
        assert!(Arc::ptr_eq(&second, tls.current().config()));
    }
}
