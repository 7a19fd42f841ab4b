//! TLS client settings shared by scrapes and exporters, and the rustls config built from them.

use serde::Deserialize;
use std::sync::Arc;

/// Prometheus `tls_config` / collector `tls` settings for an outgoing connection.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// CA bundle (PEM) to verify the server with, instead of the bundled web roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Server name to verify, when it differs from the host in the URL.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Skip certificate verification. Never the default.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Collector spelling: plaintext connection (gRPC exporters).
    #[serde(default)]
    pub insecure: bool,
    /// Prometheus spelling, accepted and checked for sanity only.
    #[serde(default)]
    pub min_version: Option<String>,
}

impl TlsClientConfig {
    /// Builds a rustls client config (ALPN is left to the HTTP connector).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &self.ca_file {
                Some(path) => {
                    let pem =
                        std::fs::read(path).map_err(|e| format!("reading ca_file {path}: {e}"))?;
                    let mut added = 0;
                    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                        let cert = cert.map_err(|e| format!("ca_file {path}: {e}"))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("ca_file {path}: {e}"))?;
                        added += 1;
                    }
                    if added == 0 {
                        return Err(format!("ca_file {path} holds no PEM certificate"));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots)
        };
        let cfg = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => {
                let certs: Result<Vec<_>, _> = rustls_pemfile::certs(
                    &mut std::fs::read(c)
                        .map_err(|e| format!("reading cert_file {c}: {e}"))?
                        .as_slice(),
                )
                .collect();
                let certs = certs.map_err(|e| format!("cert_file {c}: {e}"))?;
                let key = rustls_pemfile::private_key(
                    &mut std::fs::read(k)
                        .map_err(|e| format!("reading key_file {k}: {e}"))?
                        .as_slice(),
                )
                .map_err(|e| format!("key_file {k}: {e}"))?
                .ok_or_else(|| format!("key_file {k} holds no private key"))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("cert_file and key_file must be set together".into()),
        };
        Ok(cfg)
    }
}

/// Verifier for `insecure_skip_verify`: accepts any certificate, still checks signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
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
