//! A test PKI generated with `rcgen`: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, a client certificate, and a second CA that nothing trusts with a client
//! certificate of its own.
//!
//! The test harnesses of `fleetscale-etcd` and `fleetscale-metrics` (feature `test-harness`)
//! both include this file with `#[path]`, each adding its own constructor and helpers to the
//! type. It cannot live in `fleetscale-core::testing`, which both already use: `rcgen` needs a
//! newer Rust than core's `rust-version`; and backends do not depend on each other.

/// A test CA and certificates signed by it, made fresh by `TestPki::new`. `Debug` shows no
/// key.
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate (PEM): give it to clients as their trust root.
    pub ca_pem: String,
    /// A server certificate for `localhost` and `127.0.0.1`, signed by the CA, usable for
    /// server and client authentication (etcd's gateway dials its own server with it).
    pub server_cert_pem: String,
    /// Its key.
    pub server_key_pem: String,
    /// A client certificate (CN `fleetscale-test-client`), signed by the CA.
    pub client_cert_pem: String,
    /// Its key.
    pub client_key_pem: String,
    /// A second CA that signed nothing the servers trust.
    pub other_ca_pem: String,
    /// A client certificate (CN `fleetscale-other-client`) signed by the other CA.
    pub other_client_cert_pem: String,
    /// Its key.
    pub other_client_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestPki { .. }")
    }
}

/// Generates the CAs and certificates (ECDSA P-256).
pub(crate) fn generate() -> Result<TestPki, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |cn: &str| -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok((cert.pem(), Issuer::new(p, key)))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>,
                names: Vec<String>,
                cn: &str,
                usages: Vec<ExtendedKeyUsagePurpose>|
     -> Result<(String, String), rcgen::Error> {
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = usages;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let client = || vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (ca_pem, ca_issuer) = ca("fleetscale test CA")?;
    let (other_ca_pem, other_issuer) = ca("fleetscale untrusted CA")?;
    let (server_cert_pem, server_key_pem) = leaf(
        &ca_issuer,
        vec!["localhost".into(), "127.0.0.1".into()],
        "localhost",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client_cert_pem, client_key_pem) =
        leaf(&ca_issuer, Vec::new(), "fleetscale-test-client", client())?;
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
