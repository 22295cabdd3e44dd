use std::path::PathBuf;

/// What the signing keys accepted are, for error messages.
pub(crate) const SUPPORTED: &str = "supported: RSA (RS256), EC P-256 (ES256), EC P-384 (ES384) \
     and Ed25519 (EdDSA), as unencrypted PEM (PKCS#1, SEC1 or PKCS#8)";

/// Everything that can go wrong loading keys and certificates or generating them.
///
/// Messages say what is wrong and what to do. None of them ever carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("not a PEM file: {0}")]
    Pem(String),

    #[error("the PEM holds no private key (found {found}); expected a block like \"-----BEGIN PRIVATE KEY-----\"; {SUPPORTED}")]
    NoPrivateKey { found: String },

    #[error("unsupported signing key: {what}; {SUPPORTED}")]
    UnsupportedKey { what: String },

    #[error("the private key is encrypted; purser needs it unencrypted: run `openssl pkey -in KEY -out KEY.plain` and protect the file with mode 0600")]
    EncryptedKey,

    #[error("malformed {what}: {reason}")]
    InvalidKey { what: &'static str, reason: String },

    #[error("the PEM holds neither a public key nor a certificate (found {found}); expected \"PUBLIC KEY\" or \"CERTIFICATE\" blocks")]
    NoPublicKey { found: String },

    #[error("{0} is a private key: only public keys or certificates may be published; extract the public key with `openssl pkey -pubout`")]
    PrivateKeyNotAllowed(&'static str),

    #[error("no certificate in the PEM: expected one or more \"-----BEGIN CERTIFICATE-----\" blocks, leaf first")]
    NoCertificate,

    #[error("malformed certificate #{index} in the chain: {reason}")]
    InvalidCertificate { index: usize, reason: String },

    #[error("the certificate does not belong to the signing key (its public key differs); use the certificate made for this key, or make a new pair with `purser keygen`")]
    KeyCertMismatch,

    #[error("cannot generate a key or certificate: {0}")]
    Generate(String),

    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: Box<TokenError>,
    },

    /// A key, certificate or published-key file could not be read, or was refused (not a
    /// regular file, over [`crate::MAX_PEM_FILE_BYTES`], not UTF-8).
    #[error(transparent)]
    Read(#[from] purser_fs::ReadError),

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} already exists: remove it first or choose another output folder")]
    Exists { path: PathBuf },
}

impl TokenError {
    /// Prefixes the error with the file it came from.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> TokenError {
        TokenError::File {
            path: path.into(),
            source: Box::new(self),
        }
    }
}

pub(crate) fn invalid(what: &'static str, reason: impl std::fmt::Display) -> TokenError {
    TokenError::InvalidKey {
        what,
        reason: reason.to_string(),
    }
}
