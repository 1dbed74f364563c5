//! Session tokens and password hashes. Tokens are `<10 alphanumerics>-<22 alphanumerics>`:
//! the first part is the row id, only the SHA-256 of the second is stored, and secrets are
//! compared in constant time.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_ID_LEN: usize = 10;
pub const TOKEN_SECRET_LEN: usize = 22;

/// A session token as issued to a client, split into its two parts.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionToken({}-***)", self.id)
    }
}

impl SessionToken {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self {
            id: Alphanumeric.sample_string(&mut rng, TOKEN_ID_LEN),
            secret: Alphanumeric.sample_string(&mut rng, TOKEN_SECRET_LEN),
        }
    }

    /// Splits a presented token; `None` when it does not have the session-token shape.
    pub fn parse(raw: &str) -> Option<Self> {
        let (id, secret) = raw.split_once('-')?;
        let shaped =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
        (shaped(id, TOKEN_ID_LEN) && shaped(secret, TOKEN_SECRET_LEN)).then(|| Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The full token, shown to the client once.
    pub fn reveal(&self) -> String {
        format!("{}-{}", self.id, self.secret)
    }
}

/// A random secret of `len` alphanumerics (provisioner keys, lease tokens).
pub fn random_secret(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// Hex SHA-256 of a secret: what is stored instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Constant-time equality of two presented strings (the daemon PSK).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Argon2id hash in PHC string format (memory-hard). CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> String {
    let salt =
        SaltString::encode_b64(random_secret(16).as_bytes()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// A valid hash of a password nobody knows: verified against when the user does not exist,
/// so a login takes as long whether or not the e-mail is registered.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_secret(32)))
}

/// Checks a password against a stored PHC hash. An empty or malformed hash never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_have_the_documented_shape() {
        let t = SessionToken::generate();
        let raw = t.reveal();
        assert_eq!(raw.len(), TOKEN_ID_LEN + 1 + TOKEN_SECRET_LEN);
        assert_eq!(SessionToken::parse(&raw), Some(t.clone()));
        assert!(!format!("{t:?}").contains(&t.secret));
        for bad in [
            "",
            "abc",
            "0123456789-short",
            "0123456789_abcdefghijklmnopqrstuv",
            "01234567!9-abcdefghijklmnopqrstuv",
        ] {
            assert!(SessionToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn secrets_match_only_their_hash() {
        let h = hash_secret("abc");
        assert!(secret_matches("abc", &h));
        assert!(!secret_matches("abd", &h));
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let h = hash_password("hunter22");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("hunter22", &h));
        assert!(!verify_password("hunter23", &h));
        assert!(!verify_password("hunter22", ""));
        assert!(!verify_password("x", dummy_password_hash()));
    }
}
