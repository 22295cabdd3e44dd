//! Public keys as JWKs, and the JWKS document.

use data_encoding::{BASE64, BASE64URL_NOPAD};
use purser_core::Signer;
use serde_json::{json, Map, Value};

use crate::cert::{parse_certificate, public_key_of_cert};
use crate::error::TokenError;
use crate::key::{pem_blocks, KeyParams, PublicKey};
use crate::kid::{key_id, KeyIdMode};

/// The JWK of a public key: `kty`, the key's parameters (EC coordinates full length), `kid` of
/// the mode, `alg`, `use: "sig"`, and `x5c` (standard base64 DER, leaf first) when `chain` is
/// not empty.
pub fn jwk_of(key: &PublicKey, mode: KeyIdMode, chain: &[Vec<u8>]) -> Value {
    let b64 = |b: &[u8]| Value::String(BASE64URL_NOPAD.encode(b));
    let mut m = Map::new();
    match key.params() {
        KeyParams::Rsa { n, e } => {
            m.insert("kty".into(), "RSA".into());
            m.insert("n".into(), b64(&n));
            m.insert("e".into(), b64(&e));
        }
        KeyParams::Ec { crv, x, y } => {
            m.insert("kty".into(), "EC".into());
            m.insert("crv".into(), crv.into());
            m.insert("x".into(), b64(&x));
            m.insert("y".into(), b64(&y));
        }
        KeyParams::Okp { crv, x } => {
            m.insert("kty".into(), "OKP".into());
            m.insert("crv".into(), crv.into());
            m.insert("x".into(), b64(&x));
        }
    }
    m.insert("kid".into(), key_id(key, mode).into());
    m.insert("alg".into(), key.alg().as_str().into());
    m.insert("use".into(), "sig".into());
    if !chain.is_empty() {
        let x5c: Vec<Value> = chain.iter().map(|c| BASE64.encode(c).into()).collect();
        m.insert("x5c".into(), Value::Array(x5c));
    }
    Value::Object(m)
}

/// The JWK of a `token.publish_keys` entry: PEM text holding either a public key (`PUBLIC KEY`,
/// or PKCS#1 `RSA PUBLIC KEY`) or a certificate chain (`CERTIFICATE` blocks, leaf first; the JWK
/// then carries `x5c`). Private keys are refused, so that they are never published by mistake.
pub fn public_jwk_from_pem(pem_text: &str, mode: KeyIdMode) -> Result<Value, TokenError> {
    let blocks = pem_blocks(pem_text)?;
    if let Some(b) = blocks.iter().find(|b| b.tag().contains("PRIVATE KEY")) {
        let what = if b.tag() == "ENCRYPTED PRIVATE KEY" {
            "an encrypted private key"
        } else {
            "the PEM block"
        };
        return Err(TokenError::PrivateKeyNotAllowed(what));
    }
    let certs: Vec<&pem::Pem> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
    if !certs.is_empty() {
        let chain: Vec<Vec<u8>> = certs.iter().map(|b| b.contents().to_vec()).collect();
        let leaf = parse_certificate(&chain[0], 0)?;
        let key = public_key_of_cert(&leaf)?;
        for (i, der) in chain.iter().enumerate().skip(1) {
            parse_certificate(der, i)?;
        }
        return Ok(jwk_of(&key, mode, &chain));
    }
    for b in &blocks {
        if let Some(key) = PublicKey::from_pem_block(b)? {
            return Ok(jwk_of(&key, mode, &[]));
        }
    }
    Err(TokenError::NoPublicKey {
        found: blocks
            .iter()
            .map(|b| format!("{:?}", b.tag()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Reads a `token.publish_keys` file; errors name the file.
pub fn public_jwk_from_file(path: &std::path::Path, mode: KeyIdMode) -> Result<Value, TokenError> {
    let text = purser_fs::read_text(path, crate::MAX_PEM_FILE_BYTES)?;
    public_jwk_from_pem(&text, mode).map_err(|e| e.in_file(path))
}

/// The JWKS document `{"keys": [...]}`: the active signer's key first, then `extra` (keys being
/// rotated in or out). An extra key with the same `kid` as one already listed is left out, so
/// publishing the active certificate again does no harm.
pub fn jwks_document(signer: &dyn Signer, extra: &[Value]) -> Value {
    let mut keys = vec![signer.public_jwk()];
    for k in extra {
        let kid = k.get("kid");
        if kid.is_some() && keys.iter().any(|seen| seen.get("kid") == kid) {
            continue;
        }
        keys.push(k.clone());
    }
    json!({ "keys": keys })
}
