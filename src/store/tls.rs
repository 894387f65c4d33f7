//! TLS of the PostgreSQL connections: every connector the service opens
//! (the pools, migrations, the start-up check, cancel requests) is built
//! here from its URL, which may carry libpq's `sslmode` and `sslrootcert`.
//!
//! | sslmode       | encrypted          | server certificate checked               |
//! |---------------|--------------------|------------------------------------------|
//! | (none)        | no (as before TLS support; libpq would `prefer`) | -          |
//! | `disable`     | no                 | -                                        |
//! | `prefer`      | if the server offers it | no; with `sslrootcert`, as `verify-ca` |
//! | `require`     | yes                | no; with `sslrootcert`, as `verify-ca` (libpq) |
//! | `verify-ca`   | yes                | chain to `sslrootcert`                   |
//! | `verify-full` | yes                | chain to `sslrootcert` and the host name |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` (the
//! machine's trust store). tokio-postgres parses neither `verify-*` nor
//! `sslrootcert`: both are taken out of the URL here and the rest is parsed
//! by tokio-postgres as before.

use std::{
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{
    Socket,
    config::SslMode as PgSslMode,
    tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream},
};

use crate::error::Error;

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, Error> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's "allow" (plaintext first) is not offered: it would
            // silently fall back to plaintext.
            other => {
                return Err(Error::Startup(format!(
                    "sslmode={other} in a database URL is not supported: use disable, prefer, require, \
                     verify-ca or verify-full"
                )));
            }
        })
    }
}

/// A database URL split into what tokio-postgres parses and the TLS
/// settings taken out of it.
#[derive(Debug, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?a=b&…`)
/// or a key/value string (`host=… sslmode=…`); returns the rest and them.
pub fn split_url(url: &str) -> Result<(String, TlsParams), Error> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, Error> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(value)?),
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, &percent_decode(v))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        // Key/value form; quoted values are left to tokio-postgres (a
        // quoted sslmode or sslrootcert is not recognised here).
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if take(k, v)? => {}
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    // No sslmode: plaintext, as the service always connected (libpq would
    // `prefer`; tokio-postgres without a TLS connector never encrypted).
    let mode = match (mode, &root_cert) {
        (Some(m), _) => m,
        (None, None) => SslMode::Disable,
        (None, Some(_)) => {
            return Err(Error::Startup(
                "sslrootcert without sslmode in a database URL: add sslmode=verify-full (or verify-ca)"
                    .into(),
            ));
        }
    };
    Ok((rest, TlsParams { mode, root_cert }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parsed configuration and the TLS connector of a database URL. Every
/// connection the service opens is made with these.
pub fn connector_for(url: &str) -> Result<(tokio_postgres::Config, PgTls), Error> {
    let (rest, params) = split_url(url)?;
    let mut cfg: tokio_postgres::Config =
        rest.parse().map_err(|e| Error::Startup(format!("invalid database URL: {e}")))?;
    cfg.ssl_mode(match params.mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    Ok((cfg, PgTls::new(&params)?))
}

/// Installs ring as the process's rustls provider (once; later calls are
/// no-ops). Every TLS configuration of the service uses it.
pub fn install_crypto_provider() {
    let _ = ring_provider().install_default();
}

// rustls 0.23.48 deprecates its ring provider for lacking post-quantum key
// exchange; aws-lc-rs has it but needs cmake and a long C build on 2 cores.
// Classical X25519/P-256 key exchange, as TLS has had so far.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(ring_provider()))
}

/// Reads every certificate of a PEM file (a CA bundle, a chain).
pub fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Startup(format!("cannot read {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Startup(format!("{what} {} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

/// A root store from a PEM file of CA certificates, or `system`.
pub fn root_store(path: &Path, what: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    if path == Path::new("system") {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(Error::Startup(format!("{what}=system: the machine's trust store is empty")));
        }
        return Ok(roots);
    }
    for cert in read_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| Error::Startup(format!("{what} {}: not a CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The TLS connector of one database URL (cheap to clone).
#[derive(Clone)]
pub struct PgTls {
    /// `None` with sslmode=disable.
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.config.is_some() { "PgTls(tls)" } else { "PgTls(off)" })
    }
}

impl PgTls {
    fn new(params: &TlsParams) -> Result<PgTls, Error> {
        let verifier: Arc<dyn ServerCertVerifier> = match (params.mode, &params.root_cert) {
            (SslMode::Disable, _) => return Ok(PgTls { config: None }),
            (SslMode::Prefer, None) | (SslMode::Require, None) => Arc::new(NoVerification(provider())),
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(Error::Startup(
                    "sslmode=verify-ca/verify-full needs sslrootcert=<PEM file of the CA> (or \
                     sslrootcert=system) in the database URL"
                        .into(),
                ));
            }
            (mode, Some(path)) => {
                let roots = Arc::new(root_store(path, "sslrootcert")?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| Error::Startup(format!("sslrootcert {}: {e}", path.display())))?;
                if mode == SslMode::VerifyFull { webpki } else { Arc::new(ChainOnly(webpki)) }
            }
        };
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(PgTls { config: Some(Arc::new(config)) })
    }
}

/// Checks the chain to the roots but not the name (sslmode=verify-ca).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Encrypts without checking who answers (sslmode=prefer/require without
/// sslrootcert, as libpq): protects against listening, not impersonation.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host {domain}: {e}")))?;
        Ok(PgTlsConnect { config: self.config.clone(), name })
    }
}

pub struct PgTlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let Some(config) = self.config else {
                return Err(io::Error::other("TLS is off (sslmode=disable)"));
            };
            let tls = tokio_rustls::TlsConnector::from(config).connect(self.name, stream).await?;
            Ok(PgTlsStream(Box::new(tls)))
        })
    }
}

/// A TLS connection to PostgreSQL (no channel binding: SCRAM is not bound
/// to the TLS session).
pub struct PgTlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for PgTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for PgTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// A TLS failure in a connect error, said plainly (the certificate was
/// refused, and why), or `None` when the error is not about TLS.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(describe(r));
        }
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        source = err.source();
    }
    None
}

fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "TLS: the server's certificate is not signed by a CA of sslrootcert ({e}): check sslrootcert"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "TLS: the server's certificate does not name the host of the URL ({e}): connect by a name \
             the certificate holds, or use sslmode=verify-ca"
        ),
        rustls::Error::InvalidCertificate(_) => format!("TLS: the server's certificate was refused ({e})"),
        _ => format!("TLS handshake failed ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_tls_parameters_out_of_urls() {
        let (rest, p) = split_url(
            "postgres://u:p@h:5/db?sslmode=verify-full&sslrootcert=/etc/ca%20x.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=a");
        assert_eq!(p, TlsParams { mode: SslMode::VerifyFull, root_cert: Some("/etc/ca x.pem".into()) });
        let (rest, p) = split_url("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!((rest.as_str(), p.mode, p.root_cert), ("postgres://h/db", SslMode::Disable, None));
        let (rest, p) = split_url("postgres://h/db").unwrap();
        assert_eq!(
            (rest.as_str(), p.mode),
            ("postgres://h/db", SslMode::Disable),
            "no sslmode: plaintext as before"
        );
        assert!(
            split_url("postgres://h/db?sslrootcert=/ca.pem").is_err(),
            "a root without a mode is ambiguous"
        );
        let (_, p) = split_url("postgres://h/db?sslmode=prefer").unwrap();
        assert_eq!(p.mode, SslMode::Prefer);
        let (rest, p) = split_url("host=h dbname=d sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!(p, TlsParams { mode: SslMode::VerifyCa, root_cert: Some("/ca.pem".into()) });
        assert!(split_url("postgres://h/db?sslmode=allow").is_err());
        assert!(split_url("postgres://h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn verification_needs_a_root() {
        let err = connector_for("postgres://h/db?sslmode=verify-full").err().unwrap();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        let err =
            connector_for("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent.pem").err().unwrap();
        assert!(err.to_string().contains("/nonexistent.pem"), "{err}");
        let (cfg, tls) = connector_for("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(cfg.get_ssl_mode(), PgSslMode::Require);
        assert!(tls.config.is_some());
        let (cfg, tls) = connector_for("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(cfg.get_ssl_mode(), PgSslMode::Disable);
        assert!(tls.config.is_none());
    }
}
