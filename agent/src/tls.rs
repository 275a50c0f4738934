//! The one TLS stack of vigil: rustls with the ring provider, for every client (OTLP gRPC
//! and HTTP, Alertmanager, `vigil reload`) and the status endpoint.
//!
//! Certificates and keys are PEM files named in the config; each build reads them again
//! and returns a [`Fingerprint`] of the settings and the bytes read, so a reload can tell
//! whether a client or the server has to be rebuilt (certificate rotation) without
//! comparing configs. Errors name the config field, the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::WebPkiServerVerifier,
};
use sha2::{Digest, Sha256};

use crate::config::{TlsClientConfig, TlsServerConfig};

/// Why a TLS client or server could not be set up; the text names the field and file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// What a TLS setting was built from: its settings and the bytes of every file read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// A rustls config and what it was built from.
pub struct Loaded<C> {
    pub config: C,
    pub fingerprint: Fingerprint,
    /// Client configs without a client certificate: set when a server asks for one.
    pub cert_asked: ClientCertAsked,
}

/// Whether a server asked for a client certificate none is configured for. A TLS 1.3
/// server refuses the missing certificate only after the handshake, which the client sees
/// as a closed connection; this says what really happened.
#[derive(Debug, Clone, Default)]
pub struct ClientCertAsked(Arc<AtomicBool>);

impl ClientCertAsked {
    /// Whether a server asked since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// No client certificate, remembering when a server asks for one.
#[derive(Debug)]
struct NoClientCert(ClientCertAsked);

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.0.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// The crypto provider of every TLS connection vigil makes or accepts.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the files of one config section, hashing what it read.
struct Files {
    section: &'static str,
    hash: Sha256,
}

impl Files {
    fn new(section: &'static str, settings: &impl std::fmt::Debug) -> Self {
        let mut hash = Sha256::new();
        hash.update(format!("{settings:?}").as_bytes());
        Files { section, hash }
    }

    fn error(&self, field: &str, path: &Path, problem: impl std::fmt::Display) -> TlsError {
        TlsError(format!(
            "{}.{field}: {} {problem}",
            self.section,
            path.display()
        ))
    }

    fn read(&mut self, field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
        let bytes = std::fs::read(path)
            .map_err(|e| self.error(field, path, format!("cannot be read: {e}")))?;
        self.hash.update((bytes.len() as u64).to_le_bytes());
        self.hash.update(&bytes);
        Ok(bytes)
    }

    fn certs(
        &mut self,
        field: &str,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let bytes = self.read(field, path)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(field, path, format!("is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.error(
                field,
                path,
                "holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)",
            ));
        }
        Ok(certs)
    }

    fn key(&mut self, field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        let bytes = self.read(field, path)?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            self.error(
                field,
                path,
                format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
            )
        })
    }

    fn roots(&mut self, field: &str, path: &Path) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certs(field, path)? {
            roots.add(cert).map_err(|e| {
                self.error(
                    field,
                    path,
                    format!("holds a certificate that cannot be a trust anchor: {e}"),
                )
            })?;
        }
        Ok(roots)
    }

    fn fingerprint(self) -> Fingerprint {
        Fingerprint(self.hash.finalize().into())
    }
}

/// The CA certificates of the operating system (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
fn system_roots(section: &str) -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsError(format!(
            "{section}: no system CA certificates found{}; install the ca-certificates package or set {section}.ca_file",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        )));
    }
    Ok(roots)
}

/// The client side of `settings` (the section it came from names it in errors): the
/// system roots or `ca_file`, a client certificate when set, `alpn` offered. With
/// `insecure_skip_verify` it warns, at every call.
pub fn client_config(
    section: &'static str,
    settings: &TlsClientConfig,
    alpn: &[&[u8]],
) -> Result<Loaded<ClientConfig>, TlsError> {
    let provider = provider();
    let mut files = Files::new(section, settings);
    let verifier: Arc<dyn ServerCertVerifier> = if settings.insecure_skip_verify {
        tracing::warn!(
            "{section}.insecure_skip_verify = true: the server's certificate is NOT checked, so anyone on the network path can read and change what is sent; set {section}.ca_file instead"
        );
        Arc::new(AnyServerCertificate(provider.clone()))
    } else {
        let roots = match &settings.ca_file {
            Some(path) => files.roots("ca_file", path)?,
            None => system_roots(section)?,
        };
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError(format!("{section}: cannot check server certificates: {e}")))?
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("{section}: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cert_asked = ClientCertAsked::default();
    let mut config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = files.certs("cert_file", cert_file)?;
            let key = files.key("key_file", key_file)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| key_mismatch(section, cert_file, key_file, e))?
        }
        _ => builder.with_client_cert_resolver(Arc::new(NoClientCert(cert_asked.clone()))),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        config,
        fingerprint: files.fingerprint(),
        cert_asked,
    })
}

fn key_mismatch(section: &str, cert: &Path, key: &Path, error: rustls::Error) -> TlsError {
    TlsError(format!(
        "{section}: the key in {} does not fit the certificate in {} ({error})",
        key.display(),
        cert.display()
    ))
}

/// A client for plain `http://` only: it trusts no certificate at all (reqwest with
/// rustls needs a TLS config even when it never uses it).
pub fn plain_client_config() -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// The one way vigil builds an HTTP client: `tls` (or, without it, the plain-http
/// config rustls needs anyway), vigil's user agent, and `timeout` for connecting and for
/// each request. The error says what failed.
pub fn http_client(
    tls: Option<ClientConfig>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, String> {
    let tls = match tls {
        Some(tls) => tls,
        None => plain_client_config().map_err(|e| e.to_string())?,
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            format!(
                "cannot build the HTTP client: {}",
                crate::export::error_chain(&e)
            )
        })
}

/// How `vigil reload` checks the agent's endpoint: the system roots (if any) plus every
/// certificate in `[http.tls] cert_file` (its chain up to a root, or a self-signed one).
pub fn agent_client_config(settings: &TlsServerConfig) -> Result<ClientConfig, TlsError> {
    let section = "http.tls";
    let mut files = Files::new(section, settings);
    let mut roots = system_roots(section).unwrap_or_else(|_| RootCertStore::empty());
    for cert in files.certs("cert_file", &settings.cert_file)? {
        // A leaf that is no valid anchor is fine as long as another one of the file is.
        let _ = roots.add(cert);
    }
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| {
            TlsError(format!(
                "{section}: cannot check the agent's certificate: {e}"
            ))
        })?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("{section}: {e}")))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth())
}

/// The server side of `[http.tls]`: its certificate and key, client certificates required
/// when `client_ca_file` is set. Offers HTTP/1.1.
pub fn server_config(settings: &TlsServerConfig) -> Result<Loaded<ServerConfig>, TlsError> {
    let section = "http.tls";
    let provider = provider();
    let mut files = Files::new(section, settings);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("{section}: {e}")))?;
    let builder = match &settings.client_ca_file {
        Some(path) => {
            let roots = files.roots("client_ca_file", path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    files.error(
                        "client_ca_file",
                        path,
                        format!("cannot check client certificates: {e}"),
                    )
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let certs = files.certs("cert_file", &settings.cert_file)?;
    let key = files.key("key_file", &settings.key_file)?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| key_mismatch(section, &settings.cert_file, &settings.key_file, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        config,
        fingerprint: files.fingerprint(),
        cert_asked: ClientCertAsked::default(),
    })
}

/// A connector for tonic that speaks TLS with `config` (HTTP/2 offered by ALPN) over TCP.
pub fn grpc_connector(
    config: ClientConfig,
    connect_timeout: Duration,
) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http2()
        .wrap_connector(tcp)
}

/// `insecure_skip_verify`: any certificate is accepted; the handshake's signatures are
/// still checked, so the connection is encrypted, only not authenticated.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

/// What to do about a failed request whose error text (with its causes) shows a failed
/// TLS check, naming the `section` to fix; None when it is no TLS problem. `cert_asked`
/// (of the client's config) tells a refused missing client certificate from a closed
/// connection.
pub fn hint(section: &str, error_text: &str, cert_asked: &ClientCertAsked) -> Option<String> {
    let has = |needle: &str| error_text.contains(needle);
    // A TLS 1.3 server asks for the client certificate before the client checks the
    // server's: a refused server certificate comes first.
    let asked = cert_asked.take();
    if has("invalid peer certificate") {
        Some(format!(
            "the server's certificate was refused: if it is issued by a private CA, set {section}.ca_file to that CA's PEM file; check also that the URL's host is named in the certificate and that it has not expired"
        ))
    } else if asked || has("CertificateRequired") || has("certificate required") {
        Some(format!(
            "the server asked for a client certificate and none was presented: set {section}.cert_file and {section}.key_file"
        ))
    } else if has("received fatal alert") {
        Some(format!(
            "the server refused the TLS handshake: check {section}.cert_file and {section}.key_file (is the client certificate issued by a CA the server trusts?)"
        ))
    } else {
        None
    }
}

/// The status endpoint's TLS config in use; a reload swaps it when `[http.tls]` or its
/// files changed, and every connection accepted afterwards uses the new one.
pub struct ServerTls {
    current: arc_swap::ArcSwap<ServerConfig>,
    fingerprint: std::sync::Mutex<Fingerprint>,
}

impl ServerTls {
    /// Reads the files of `settings` now.
    pub fn load(settings: &TlsServerConfig) -> Result<Self, TlsError> {
        let loaded = server_config(settings)?;
        Ok(ServerTls {
            current: arc_swap::ArcSwap::from_pointee(loaded.config),
            fingerprint: std::sync::Mutex::new(loaded.fingerprint),
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files of `settings` again and uses them if anything differs; true if it
    /// switched. Unusable files change nothing (the error says why).
    pub fn reload(&self, settings: &TlsServerConfig) -> Result<bool, TlsError> {
        use crate::sync::LockExt;
        let loaded = server_config(settings)?;
        let mut fingerprint = self.fingerprint.locked();
        if *fingerprint == loaded.fingerprint {
            return Ok(false);
        }
        self.current.store(Arc::new(loaded.config));
        *fingerprint = loaded.fingerprint;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use vigil_testkit::certs::TestCa;

    use super::*;

    fn settings(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> TlsClientConfig {
        TlsClientConfig {
            ca_file: ca,
            cert_file: cert,
            key_file: key,
            insecure_skip_verify: false,
        }
    }

    fn error(result: Result<Loaded<ClientConfig>, TlsError>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_missing_or_invalid_file_is_named_with_its_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let text = error(client_config(
            "export.otlp.tls",
            &settings(Some(missing.clone()), None, None),
            &[],
        ));
        assert!(text.starts_with("export.otlp.tls.ca_file: "), "{text}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
        assert!(text.contains("cannot be read"), "{text}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let text = error(client_config(
            "export.otlp.tls",
            &settings(Some(garbage), None, None),
            &[],
        ));
        assert!(text.contains("holds no PEM certificate"), "{text}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("unit CA").unwrap();
        let ca_file = ca.write(&dir.path().join("ca.crt")).unwrap();
        let one = ca
            .client_cert("one")
            .unwrap()
            .write(dir.path(), "one")
            .unwrap();
        let two = ca
            .client_cert("two")
            .unwrap()
            .write(dir.path(), "two")
            .unwrap();
        let text = error(client_config(
            "export.alertmanager.tls",
            &settings(Some(ca_file.clone()), Some(one.cert.clone()), Some(two.key)),
            &[],
        ));
        assert!(text.contains("does not fit the certificate"), "{text}");
        assert!(text.starts_with("export.alertmanager.tls"), "{text}");
        // A key file holding a certificate instead.
        let text = error(client_config(
            "export.otlp.tls",
            &settings(
                Some(ca_file.clone()),
                Some(one.cert.clone()),
                Some(one.cert.clone()),
            ),
            &[],
        ));
        assert!(text.starts_with("export.otlp.tls.key_file: "), "{text}");
        assert!(text.contains("no usable PEM private key"), "{text}");
        assert!(
            client_config(
                "export.otlp.tls",
                &settings(Some(ca_file), Some(one.cert), Some(one.key)),
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn the_fingerprint_changes_with_the_file_contents_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        TestCa::new("first").unwrap().write(&path).unwrap();
        let tls = settings(Some(path.clone()), None, None);
        let first = client_config("export.otlp.tls", &tls, &[])
            .unwrap()
            .fingerprint;
        let again = client_config("export.otlp.tls", &tls, &[])
            .unwrap()
            .fingerprint;
        assert_eq!(first, again);
        TestCa::new("second").unwrap().write(&path).unwrap();
        let rotated = client_config("export.otlp.tls", &tls, &[])
            .unwrap()
            .fingerprint;
        assert_ne!(first, rotated);
    }

    #[test]
    fn the_server_needs_its_certificate_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("unit CA").unwrap();
        let files = ca
            .server_cert()
            .unwrap()
            .write(dir.path(), "server")
            .unwrap();
        let mut tls = TlsServerConfig {
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            client_ca_file: None,
        };
        assert!(server_config(&tls).is_ok());
        tls.client_ca_file = Some(dir.path().join("absent.crt"));
        let text = match server_config(&tls) {
            Ok(_) => panic!("a missing client CA file must fail"),
            Err(e) => e.to_string(),
        };
        assert!(text.starts_with("http.tls.client_ca_file: "), "{text}");
    }

    #[test]
    fn hints_name_the_setting_to_fix() {
        let none = ClientCertAsked::default();
        let unknown = "error sending request: invalid peer certificate: UnknownIssuer";
        let text = hint("export.otlp.tls", unknown, &none).unwrap();
        assert!(text.contains("export.otlp.tls.ca_file"), "{text}");
        let no_client_cert = "connection error: received fatal alert: CertificateRequired";
        let text = hint("export.otlp.tls", no_client_cert, &none).unwrap();
        assert!(text.contains("export.otlp.tls.cert_file"), "{text}");
        assert_eq!(hint("export.otlp.tls", "connection refused", &none), None);
        let asked = ClientCertAsked::default();
        asked.0.store(true, Ordering::Relaxed);
        let closed = "gRPC Unknown: transport error: broken pipe";
        let text = hint("export.otlp.tls", closed, &asked).unwrap();
        assert!(text.contains("asked for a client certificate"), "{text}");
        asked.0.store(true, Ordering::Relaxed);
        let text = hint("export.otlp.tls", unknown, &asked).unwrap();
        assert!(
            text.contains("export.otlp.tls.ca_file"),
            "the server check failed first: {text}"
        );
        assert_eq!(hint("export.otlp.tls", closed, &asked), None, "told once");
    }
}
