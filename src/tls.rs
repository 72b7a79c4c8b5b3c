//! TLS: the reloadable server configuration that terminates clients' FTPS
//! (control and data connections share one session cache, so data connections can resume
//! the control session), and the per-backend client configurations.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::{
    ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{BackendConfig, BackendTls, TlsConfig, TlsVersion};
use crate::pem::{load_certs, load_key, PemError};
use crate::tls_pinning::PinningVerifier;

/// Sessions kept for resumption: one per recent control connection is plenty.
const SESSION_CACHE_SIZE: usize = 4096;
/// How long a peer may take to complete a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("invalid TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("backend `{backend}`: {reason}")]
    Backend { backend: String, reason: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn versions(max: Option<TlsVersion>) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
    match max {
        Some(TlsVersion::V1_2) => ONLY_12,
        _ => BOTH,
    }
}

/// What makes data connections able to resume the control connection's session, and
/// survives a certificate reload.
#[derive(Clone)]
struct ServerResumption {
    /// TLS 1.2 session IDs.
    sessions: Arc<dyn StoresServerSessions>,
    /// Stateless tickets. TLS 1.3 resumption through the session cache is single-use, but
    /// FTPS clients (lftp with GnuTLS, for one) resume every data connection with the
    /// ticket of the control connection, so tickets must be reusable.
    tickets: Arc<dyn ProducesTickets>,
}

/// The server configurations for control and for data connections.
struct ServerConfigs {
    /// Control connections, data connections that the client reads (downloads, listings),
    /// and with `require_data_session_reuse` every data connection: TLS 1.3 tickets for
    /// the following data connections.
    control: Arc<ServerConfig>,
    /// Upload data connections: no TLS 1.3 tickets. An uploading client never reads them,
    /// and a socket closed with unread bytes sends a reset instead of a FIN, which a load
    /// balancer in between turns into a truncated upload.
    upload: Arc<ServerConfig>,
}

/// The ALPN protocol id of FTP (IANA "ftp").
pub const FTP_ALPN: &[u8] = b"ftp";

fn server_configs(
    cert: &Path,
    key: &Path,
    max_version: Option<TlsVersion>,
    resumption: &ServerResumption,
) -> Result<ServerConfigs, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(max_version))?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.session_storage = resumption.sessions.clone();
    config.ticketer = resumption.tickets.clone();
    // ALPACA: a client that offers ALPN without `ftp` is talking to the wrong protocol
    // (an HTTPS request replayed at port 21); rustls refuses it with no_application_protocol.
    config.alpn_protocols = vec![FTP_ALPN.to_vec()];
    let mut upload = config.clone();
    upload.send_tls13_tickets = 0;
    Ok(ServerConfigs {
        control: Arc::new(config),
        upload: Arc::new(upload),
    })
}

/// The client-facing TLS configuration; `reload` swaps the certificate without dropping
/// sessions, and keeps the session cache so data connections still resume.
pub struct ClientTls {
    cert: PathBuf,
    key: PathBuf,
    max_version: Option<TlsVersion>,
    resumption: ServerResumption,
    current: RwLock<ServerConfigs>,
}

impl ClientTls {
    /// `None` when `[tls]` is off.
    pub fn from_config(tls: &TlsConfig) -> Result<Option<ClientTls>, TlsError> {
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            return Ok(None);
        };
        let resumption = ServerResumption {
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            tickets: ring::Ticketer::new()?,
        };
        let current = server_configs(cert, key, tls.max_version, &resumption)?;
        Ok(Some(ClientTls {
            cert: cert.clone(),
            key: key.clone(),
            max_version: tls.max_version,
            resumption,
            current: RwLock::new(current),
        }))
    }

    /// For control connections (AUTH TLS, implicit FTPS).
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(current.control.clone())
    }

    /// For data connections after `PROT P`, with TLS 1.3 tickets or without (the session
    /// decides which: `Session::client_data_tls`).
    pub fn data_acceptor(&self, tickets: bool) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        if tickets {
            TlsAcceptor::from(current.control.clone())
        } else {
            TlsAcceptor::from(current.upload.clone())
        }
    }

    /// For a data connection whose handshake begins before its transfer command
    /// (data/early_tls.rs): the control configuration, its tickets issued through `gate`
    /// (the session's ticketer wrapped, so they still resume every data connection).
    pub fn early_data_acceptor(
        &self,
        gate: impl FnOnce(Arc<dyn ProducesTickets>) -> Arc<dyn ProducesTickets>,
    ) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let mut config = ServerConfig::clone(&current.control);
        config.ticketer = gate(config.ticketer.clone());
        TlsAcceptor::from(Arc::new(config))
    }

    /// Re-reads the certificate and key; on error the old ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_configs(&self.cert, &self.key, self.max_version, &self.resumption)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// TLS towards one backend: its client configuration and the name it is verified under.
pub struct BackendTlsConfig {
    pub mode: BackendTls,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl BackendTlsConfig {
    /// `None` when the backend is plain FTP.
    pub fn from_config(backend: &BackendConfig) -> Result<Option<BackendTlsConfig>, TlsError> {
        if backend.tls == BackendTls::None {
            return Ok(None);
        }
        let fail = |reason: String| TlsError::Backend {
            backend: backend.name.clone(),
            reason,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(backend.tls_max_version))?;
        let mut config = if backend.tls_verify {
            let pinned = match &backend.tls_ca_file {
                Some(path) => load_certs(path)?,
                None => Vec::new(),
            };
            let roots = root_store(backend.tls_ca_file.as_deref())?;
            let verifier = PinningVerifier::new(roots, pinned, provider())
                .map_err(|e| fail(format!("cannot build the certificate verifier: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
                .with_no_client_auth()
        };
        // As a client would: ALPN `ftp` (RFC 7301; servers hardened against ALPACA check
        // it), SNI from the server name (rustls sends it for DNS names, never for IPs).
        config.alpn_protocols = vec![FTP_ALPN.to_vec()];
        let name = match &backend.tls_server_name {
            Some(name) => name.clone(),
            None => host_of(&backend.address).to_string(),
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| fail(format!("invalid TLS server name \"{name}\": {e}")))?;
        Ok(Some(BackendTlsConfig {
            mode: backend.tls,
            config: Arc::new(config),
            server_name,
        }))
    }

    /// A connector for one session: its own resumption cache, so the session's data
    /// connections resume its control connection's TLS session and nobody else's (servers
    /// such as vsftpd with `require_ssl_reuse=YES` insist on that).
    pub fn session_connector(&self) -> SessionTls {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::in_memory_sessions(32);
        SessionTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: self.server_name.clone(),
        }
    }
}

/// The TLS client side of one session towards its backend.
#[derive(Clone)]
pub struct SessionTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl SessionTls {
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>> {
        let handshake = self.connector.connect(self.server_name.clone(), stream);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

/// Server-side handshake with a timeout (a peer that never sends a ClientHello must not
/// hold a session forever).
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> io::Result<tokio_rustls::server::TlsStream<S>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// The server name (SNI) the client asked for in its handshake (`routing.hosts`).
pub fn server_name<S>(stream: &tokio_rustls::server::TlsStream<S>) -> Option<String> {
    stream.get_ref().1.server_name().map(str::to_string)
}

fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    address
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(address)
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "cannot load a system CA certificate");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(roots)
}

/// `tls_verify = false`: any certificate is accepted (legacy self-signed servers), but the
/// handshake signatures are still checked so the session keys are genuine.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_come_from_addresses() {
        assert_eq!(host_of("ftp.internal:21"), "ftp.internal");
        assert_eq!(host_of("10.0.0.5:990"), "10.0.0.5");
        assert_eq!(host_of("[2001:db8::5]:21"), "2001:db8::5");
    }
}
