//! [`TestPki`]: a fresh test CA and certificates signed by it, for servers and clients that
//! speak TLS in tests (etcd with client-certificate authentication, a fake gRPC frontend, a
//! TLS-terminating proxy).

use std::path::{Path, PathBuf};

/// A test CA and certificates signed by it, made fresh by [`TestPki::new`]: ECDSA P-256, PEM.
///
/// `Debug` prints no key material.
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate: give it to clients as their trust root and to servers as the CA of
    /// client certificates.
    pub ca_pem: String,
    /// A server certificate for `localhost` and `127.0.0.1`, signed by the CA. It allows both
    /// server and client authentication: etcd's gRPC gateway dials its own server with the
    /// server's certificate.
    pub server_cert_pem: String,
    /// Its key.
    pub server_key_pem: String,
    /// A client certificate (CN `fleetscale-test-client`), signed by the CA.
    pub client_cert_pem: String,
    /// Its key.
    pub client_key_pem: String,
    /// A second CA that signed nothing the servers trust.
    pub other_ca_pem: String,
    /// A client certificate (CN `fleetscale-other-client`) signed by the other CA: a server
    /// demanding client certificates of the first CA must refuse it.
    pub other_client_cert_pem: String,
    /// Its key.
    pub other_client_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestPki { .. }")
    }
}

impl TestPki {
    /// Generates both CAs and the certificates.
    ///
    /// # Errors
    /// When `rcgen` fails (as an I/O error of kind `Other`, message `rcgen: …`).
    pub fn new() -> std::io::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| std::io::Error::other(format!("rcgen: {e}"));
        let ca = |cn: &str| -> std::io::Result<(String, Issuer<'static, KeyPair>)> {
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate().map_err(err)?;
            let cert = p.self_signed(&key).map_err(err)?;
            Ok((cert.pem(), Issuer::new(p, key)))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>,
                    names: Vec<String>,
                    cn: &str,
                    usages: Vec<ExtendedKeyUsagePurpose>|
         -> std::io::Result<(String, String)> {
            let mut p = CertificateParams::new(names).map_err(err)?;
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = usages;
            let key = KeyPair::generate().map_err(err)?;
            let cert = p.signed_by(&key, issuer).map_err(err)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let client = || vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (ca_pem, issuer) = ca("fleetscale test CA")?;
        let (other_ca_pem, other_issuer) = ca("fleetscale untrusted CA")?;
        let (server_cert_pem, server_key_pem) = leaf(
            &issuer,
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        let (client_cert_pem, client_key_pem) =
            leaf(&issuer, Vec::new(), "fleetscale-test-client", client())?;
        let (other_client_cert_pem, other_client_key_pem) = leaf(
            &other_issuer,
            Vec::new(),
            "fleetscale-other-client",
            client(),
        )?;
        Ok(TestPki {
            ca_pem,
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
            other_ca_pem,
            other_client_cert_pem,
            other_client_key_pem,
        })
    }

    /// Writes the CAs, the server's and the client's PEM files into `dir` (for a server
    /// process that reads its TLS material from files).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, dir: &Path) -> std::io::Result<PkiFiles> {
        let put = |name: &str, pem: &str| -> std::io::Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, pem)?;
            Ok(p)
        };
        Ok(PkiFiles {
            ca: put("ca.pem", &self.ca_pem)?,
            server_cert: put("server.pem", &self.server_cert_pem)?,
            server_key: put("server-key.pem", &self.server_key_pem)?,
            client_cert: put("client.pem", &self.client_cert_pem)?,
            client_key: put("client-key.pem", &self.client_key_pem)?,
            other_ca: put("other-ca.pem", &self.other_ca_pem)?,
        })
    }

    /// Server TLS with the server certificate; `mutual` demands a client certificate signed by
    /// the CA.
    pub fn server_tls(&self, mutual: bool) -> ServerTls {
        ServerTls {
            cert_pem: self.server_cert_pem.clone(),
            key_pem: self.server_key_pem.clone(),
            client_ca_pem: mutual.then(|| self.ca_pem.clone()),
        }
    }
}

/// Paths of the PEM files [`TestPki::write`] wrote.
#[derive(Clone, Debug)]
pub struct PkiFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// The client certificate.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// The untrusted CA.
    pub other_ca: PathBuf,
}

/// The TLS settings of a test server: its certificate and key, and the CA its clients'
/// certificates must be signed by, if it demands them.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server certificate chain (PEM).
    pub cert_pem: String,
    /// Its key (PEM).
    pub key_pem: String,
    /// When set, a client certificate signed by this CA is required.
    pub client_ca_pem: Option<String>,
}
