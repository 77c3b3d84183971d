//! TLS with required client certificates, through rustls. The handshake
//! asks every client for a certificate but lets the chain check wait until
//! the first gRPC call: there [`authorize`] refuses a client without a
//! certificate, or with one its CA did not sign, with an `UNAUTHENTICATED`
//! status that says which, instead of a bare TLS alert. The handshake still
//! checks that the client holds the certificate's key. Handshakes that fail
//! anyway (not TLS, no common cipher) are counted as `tls_handshake`.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        WebPkiClientVerifier,
    },
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::{reject::Rejection, state::State};

/// A TLS handshake that takes longer is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The collector's TLS: its acceptor, and the verifier of client chains.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Accepts every client certificate at the handshake (the chain is checked
/// by [`authorize`]) but checks the handshake signatures, so a client must
/// hold the key of the certificate it shows.
#[derive(Debug)]
struct DeferredChainCheck(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for DeferredChainCheck {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl Tls {
    /// Loads the server's certificate chain and key, and the CA that signs
    /// the agents' certificates (all PEM).
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading the certificate {}", cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing the certificate {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the private key {}", key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(client_ca)
            .with_context(|| format!("reading the client CA {}", client_ca.display()))?
        {
            let ca =
                ca.with_context(|| format!("parsing the client CA {}", client_ca.display()))?;
            roots
                .add(ca)
                .with_context(|| format!("adding the client CA {}", client_ca.display()))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("building the client certificate verifier")?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions")?
            .with_client_cert_verifier(Arc::new(DeferredChainCheck(verifier.clone())))
            .with_single_cert(chain, key)
            .context("the certificate and key do not go together")?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            verifier,
        })
    }

    /// Accepts connections on `listener` and hands over those whose TLS
    /// handshake succeeds; failed handshakes are counted and logged.
    pub fn incoming(
        &self,
        listener: TcpListener,
        state: Arc<State>,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(128);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => handshake_failed(&state, peer, e.to_string()),
                        Err(_) => handshake_failed(&state, peer, "timed out".to_owned()),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }

    /// Lets a call through only from a client whose certificate chains to
    /// the CA; otherwise counts the refusal and says why.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn authorize(&self, state: &State, request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown peer".to_owned());
        let certs = request.peer_certs();
        let refusal = match certs.as_deref().and_then(|c| c.split_first()) {
            Some((end_entity, intermediates)) => {
                match self
                    .verifier
                    .verify_client_cert(end_entity, intermediates, UnixTime::now())
                {
                    Ok(_) => return Ok(request),
                    Err(e) => Rejection::BadClientCert {
                        detail: e.to_string(),
                    },
                }
            }
            None => Rejection::NoClientCert,
        };
        state.rejections.count(&refusal, &peer);
        Err(refusal.into())
    }
}

fn handshake_failed(state: &State, peer: SocketAddr, detail: String) {
    state
        .rejections
        .count(&Rejection::TlsHandshake { detail }, &peer.to_string());
}
