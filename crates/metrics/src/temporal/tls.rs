//! TLS material for the Temporal channel: PEM parsing with the messages of Go's
//! `tls.X509KeyPair` (what fly-autoscaler calls on `cert-data` / `key-data`), and the tonic TLS
//! configuration.
//!
//! Messages reproduced word for word from Go's `crypto/tls` (`X509KeyPair`): "tls: failed to find
//! any PEM data in certificate input", "tls: failed to find certificate PEM data in certificate
//! input, but did find a private key; PEM inputs may have been switched", "tls: failed to find
//! \"CERTIFICATE\" PEM block in certificate input after skipping PEM blocks of the following
//! types: [...]", "tls: failed to find any PEM data in key input", "tls: found a certificate
//! rather than a key in the PEM for the private key", "tls: failed to find PEM block with type
//! ending in \"PRIVATE KEY\" in key input after skipping PEM blocks of the following types:
//! [...]", "tls: failed to parse private key", "tls: private key does not match public key".
//! A certificate that does not parse gives "x509: malformed certificate" (Go's x509 parser has
//! several messages; this is its most common one). No message ever contains key material.

use base64::Engine as _;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;

/// One PEM block: its label (`CERTIFICATE`, `EC PRIVATE KEY`, …) and its decoded bytes.
pub(crate) struct PemBlock {
    pub(crate) label: String,
    pub(crate) der: Vec<u8>,
}

/// Every well-formed PEM block of `input`, in order. Like Go's `pem.Decode` in a loop, text
/// around blocks is ignored, and a block whose body is not valid base64 is skipped. Headers
/// (`Proc-Type: …`) make a block unusable here, as an encrypted key is.
pub(crate) fn pem_blocks(input: &str) -> Vec<PemBlock> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let body_and_more = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_and_more.find(&end_marker) else {
            rest = body_and_more;
            continue;
        };
        let body = &body_and_more[..end];
        rest = &body_and_more[end + end_marker.len()..];
        if label.contains('\n') || body.contains(':') {
            continue;
        }
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(compact) {
            out.push(PemBlock {
                label: label.to_owned(),
                der,
            });
        }
    }
    out
}

/// Go's `%v` of a `[]string`: `[A B]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// A client certificate chain and its key, checked as Go's `tls.X509KeyPair` checks them.
pub(crate) struct KeyPair {
    /// The PEM text of the chain, for tonic.
    pub(crate) cert_pem: String,
    /// The PEM text of the key, for tonic. Never shown.
    pub(crate) key_pem: String,
}

/// Checks a certificate chain and private key given as PEM text, with Go's messages.
///
/// # Errors
/// One of the messages in the module docs.
pub(crate) fn key_pair(cert_pem: &str, key_pem: &str) -> Result<KeyPair, String> {
    let mut certs = Vec::new();
    let mut skipped = Vec::new();
    for b in pem_blocks(cert_pem) {
        if b.label == "CERTIFICATE" {
            certs.push(CertificateDer::from(b.der));
        } else {
            skipped.push(b.label);
        }
    }
    if certs.is_empty() {
        if skipped.is_empty() {
            return Err("tls: failed to find any PEM data in certificate input".into());
        }
        if skipped.len() == 1 && skipped[0].ends_with("PRIVATE KEY") {
            return Err("tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched".into());
        }
        return Err(format!(
            "tls: failed to find \"CERTIFICATE\" PEM block in certificate input after skipping PEM blocks of the following types: {}",
            go_list(&skipped)
        ));
    }

    let mut skipped = Vec::new();
    let mut key = None;
    for b in pem_blocks(key_pem) {
        if b.label == "PRIVATE KEY" || b.label.ends_with(" PRIVATE KEY") {
            key = Some(b);
            break;
        }
        skipped.push(b.label);
    }
    let Some(key) = key else {
        if skipped.is_empty() {
            return Err("tls: failed to find any PEM data in key input".into());
        }
        if skipped.len() == 1 && skipped[0] == "CERTIFICATE" {
            return Err(
                "tls: found a certificate rather than a key in the PEM for the private key".into(),
            );
        }
        return Err(format!(
            "tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input after skipping PEM blocks of the following types: {}",
            go_list(&skipped)
        ));
    };

    // Go's parsePrivateKey tries PKCS #1, PKCS #8 and SEC 1 whatever the label says.
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let candidates = [
        PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.der.clone())),
        PrivateKeyDer::from(PrivatePkcs1KeyDer::from(key.der.clone())),
        PrivateKeyDer::from(PrivateSec1KeyDer::from(key.der.clone())),
    ];
    let signing = candidates
        .into_iter()
        .find_map(|k| provider.key_provider.load_private_key(k).ok())
        .ok_or_else(|| "tls: failed to parse private key".to_owned())?;
    match CertifiedKey::new(certs, signing).keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err("tls: private key does not match public key".into())
        }
        // The key type cannot report its public key: nothing to compare, as Go for unknown
        // key types in a certificate it does not check.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err("x509: malformed certificate".into()),
    }
    Ok(KeyPair {
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
    })
}

/// Checks that `ca_pem` holds at least one certificate that parses.
///
/// # Errors
/// A message naming what is missing.
pub(crate) fn ca_roots(ca_pem: &str) -> Result<(), String> {
    let blocks: Vec<_> = pem_blocks(ca_pem)
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .collect();
    if blocks.is_empty() {
        return Err("no CERTIFICATE PEM block in the CA certificates".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for b in blocks {
        roots
            .add(CertificateDer::from(b.der))
            .map_err(|e| format!("a CA certificate does not parse: {e}"))?;
    }
    Ok(())
}
