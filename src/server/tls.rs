//! TLS for the public listener (rustls), with certificates swapped in place.
//!
//! The server config asks [`ReloadingCert`] for the certificate on every handshake, so a reload
//! (SIGHUP, or the files changing on disk) affects new handshakes only: established connections
//! keep the session they negotiated and are never dropped. A new pair that fails to load is
//! logged and counted, and the old one stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of (cert, key) when last loaded.
    stamp: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

/// Loads a PEM chain and key into a signing-ready pair. Errors name the file and the reason.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block found",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no usable private key: {e}", key_file.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let pair = CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))?;
    Ok(pair)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, String> {
        let pair = load_pair(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            stamp: RwLock::new((mtime(cert_file), mtime(key_file))),
        }))
    }

    /// Re-reads the files. Ok(true) when a new pair is in service.
    pub fn reload(&self) -> Result<bool, String> {
        let stamp = (mtime(&self.cert_file), mtime(&self.key_file));
        let pair = load_pair(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = stamp;
        Ok(true)
    }

    /// Whether either file's modification time moved since the last load.
    pub fn changed_on_disk(&self) -> bool {
        let now = (mtime(&self.cert_file), mtime(&self.key_file));
        *self.stamp.read().unwrap_or_else(|e| e.into_inner()) != now
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The rustls server config: ALPN `h2` (when enabled) then `http/1.1`.
pub fn server_config(cert: Arc<ReloadingCert>, http2: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(cfg)
}

/// Reloads on SIGHUP and, every `check` (if non-zero), when the files changed. Runs forever.
pub async fn watch(
    cert: Arc<ReloadingCert>,
    check: Duration,
    metrics: Arc<crate::observe::metrics::Metrics>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate reload by file change only");
            None
        }
    };
    let mut tick = tokio::time::interval(if check.is_zero() {
        Duration::from_secs(3600)
    } else {
        check
    });
    tick.tick().await;
    loop {
        let why = tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => {
                if check.is_zero() || !cert.changed_on_disk() {
                    continue;
                }
                "files changed"
            }
        };
        let reloaded = {
            let cert = Arc::clone(&cert);
            tokio::task::spawn_blocking(move || cert.reload())
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        };
        match reloaded {
            Ok(_) => {
                crate::observe::metrics::Metrics::count_outcome(&metrics.tls_reloads, "ok");
                tracing::info!(trigger = why, "TLS certificate reloaded");
            }
            Err(e) => {
                crate::observe::metrics::Metrics::count_outcome(&metrics.tls_reloads, "error");
                tracing::error!(trigger = why, error = %e, "TLS certificate reload failed; keeping the current one");
            }
        }
    }
}

/// A client config that trusts exactly the certificate in `cert_file` (its first, end-entity
/// certificate): what `probe` uses to check this server's own TLS listener on loopback, where
/// the certificate's names cannot match `127.0.0.1`. Pinning the exact certificate is stricter
/// than a name check.
pub fn pinned_client_config(cert_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let cert = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?
        .next()
        .ok_or_else(|| format!("{}: no certificate", cert_file.display()))?
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one in tls.cert_file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
