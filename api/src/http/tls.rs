//! Native TLS for the API (`[api.tls]`): the rustls server configuration built from a
//! PEM certificate chain and key, swapped in place when the files are re-read (SIGHUP),
//! so certificates rotate without a restart. Each handshake takes the configuration
//! current at that moment; connections already open keep theirs.
//!
//! rustls on the `ring` provider, HTTP/1.1 only (the API speaks HTTP/1.1 and WebSocket).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::conn::ConnStats;
use crate::config::connections::TlsConfig;

/// Why a certificate or key could not be used. Each names the config key to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} {path}: {what}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("api.tls: rustls refused the certificate and key ({0}); does the key belong to the certificate?")]
    Refused(#[source] rustls::Error),
}

/// The configured certificate files and the server configuration made from them.
pub struct TlsFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    stats: Arc<ConnStats>,
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Builds a server configuration from PEM files: the chain (leaf first) and its key.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_error = |key: &'static str, path: &Path, what: String| TlsError::Pem {
        key,
        path: path.to_owned(),
        what,
    };
    let cert_pem = read("api.tls.cert_path", cert_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            pem_error(
                "api.tls.cert_path",
                cert_path,
                format!("not a PEM certificate chain: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(pem_error(
            "api.tls.cert_path",
            cert_path,
            "holds no CERTIFICATE block".into(),
        ));
    }
    let key_pem = read("api.tls.key_path", key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_error(
            "api.tls.key_path",
            key_path,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Refused)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl TlsFiles {
    /// Loads the configured files; a problem stops start-up.
    pub fn load(cfg: &TlsConfig, stats: Arc<ConnStats>) -> Result<Self, TlsError> {
        let config = server_config(&cfg.cert_path, &cfg.key_path)?;
        Ok(Self {
            cert_path: cfg.cert_path.clone(),
            key_path: cfg.key_path.clone(),
            current: RwLock::new(config),
            stats,
        })
    }

    /// Re-reads the files. On success new handshakes use them; on failure the
    /// configuration in use stays (and the error says what to fix).
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.cert_path, &self.key_path) {
            Ok(config) => {
                *self.current.write() = config;
                self.stats.tls_reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.tls_reload_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// An acceptor on the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read()))
    }
}

/// Re-reads the certificate files on every SIGHUP, for as long as the runtime runs.
#[cfg(unix)]
pub fn reload_on_sighup(tls: Arc<TlsFiles>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(cert = %tls.cert_path.display(), "SIGHUP: TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS reload failed; still serving the previous certificate")
                }
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn reload_on_sighup(_tls: Arc<TlsFiles>) -> std::io::Result<()> {
    Ok(())
}
