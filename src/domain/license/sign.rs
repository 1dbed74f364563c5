//! Minting licenses, for operators who run their own license authority (`provq licenses keygen`
//! and `provq licenses sign`). The tests mint their licenses with this same code.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;
use uuid::Uuid;

use super::{Claims, LICENSE_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot gather randomness for a key: {0}")]
    Random(String),
    #[error("cannot encode the private key: {0}")]
    Encode(String),
    #[error(
        "the signing key is not a PKCS#8 PEM Ed25519 private key (as `provq licenses keygen` writes it): {0}"
    )]
    BadKey(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A fresh signing key: the private half as PKCS#8 PEM, the public half as `[licenses.keys]`
/// expects it (base64 of the raw 32 bytes).
pub struct GeneratedKey {
    pub kid: String,
    pub private_pem: String,
    pub public_key: String,
}

impl GeneratedKey {
    /// The line to put under `[licenses.keys]` in the server's configuration.
    pub fn config_line(&self) -> String {
        format!("\"{}\" = \"{}\"", self.kid, self.public_key)
    }
}

/// Generates an Ed25519 key pair from the operating system's randomness. Without a `kid`, one
/// is made up (`provq-` and 8 random hex digits).
pub fn generate_key(kid: Option<String>) -> Result<GeneratedKey, SignError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SignError::Encode(e.to_string()))?
        .to_string();
    let kid = kid.unwrap_or_else(|| format!("provq-{}", &Uuid::new_v4().simple().to_string()[..8]));
    Ok(GeneratedKey {
        kid,
        private_pem,
        public_key: STANDARD.encode(key.verifying_key().to_bytes()),
    })
}

/// What a license grants and for how long; [`LicenseSpec::claims`] turns it into version 3
/// claims.
#[derive(Debug, Clone)]
pub struct LicenseSpec {
    pub account_type: String,
    pub account_id: String,
    pub features: BTreeMap<String, i64>,
    /// `""`, `enterprise` or `premium`.
    pub feature_set: String,
    pub trial: bool,
    pub deployment_ids: Vec<String>,
    pub not_before: DateTime<Utc>,
    /// End of the paid term.
    pub license_expires: DateTime<Utc>,
    /// How long features keep working (with warnings) after the term.
    pub grace: Duration,
}

impl LicenseSpec {
    /// A license starting at `now` for `term`, without grace, features or deployment lock.
    pub fn new(now: DateTime<Utc>, term: Duration) -> Self {
        Self {
            account_type: "provq".into(),
            account_id: "self-signed".into(),
            features: BTreeMap::new(),
            feature_set: String::new(),
            trial: false,
            deployment_ids: Vec::new(),
            not_before: now,
            license_expires: now + term,
            grace: Duration::zero(),
        }
    }

    pub fn feature(mut self, name: &str, value: i64) -> Self {
        self.features.insert(name.to_string(), value);
        self
    }

    /// The claims, issued at `issued_at`, with a random UUID as `jti`.
    pub fn claims(&self, issued_at: DateTime<Utc>) -> Claims {
        Claims {
            jti: Some(Uuid::new_v4().to_string()),
            iat: Some(issued_at.timestamp()),
            nbf: Some(self.not_before.timestamp()),
            exp: Some((self.license_expires + self.grace).timestamp()),
            license_expires: Some(self.license_expires.timestamp()),
            account_type: self.account_type.clone(),
            account_id: self.account_id.clone(),
            deployment_ids: self.deployment_ids.clone(),
            trial: self.trial,
            feature_set: self.feature_set.clone(),
            version: Some(LICENSE_VERSION),
            features: self.features.clone(),
            ..Claims::default()
        }
    }
}

/// Signs any claims (usually [`Claims`]) as a compact JWS with EdDSA and header `kid`.
pub fn sign(claims: &impl Serialize, kid: &str, private_pem: &str) -> Result<String, SignError> {
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes())
        .map_err(|e| SignError::BadKey(e.to_string()))?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    encode(&header, claims, &key).map_err(|e| SignError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::{LicenseError, LicenseKeys};
    use super::*;

    fn keys_for(generated: &GeneratedKey) -> LicenseKeys {
        let config = BTreeMap::from([(generated.kid.clone(), generated.public_key.clone())]);
        LicenseKeys::from_config(&config).unwrap()
    }

    #[test]
    fn a_signed_license_verifies_with_the_printed_public_key() {
        let key = generate_key(Some("k1".into())).unwrap();
        assert!(key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(key.config_line().starts_with("\"k1\" = \""));
        let now = Utc::now();
        let spec = LicenseSpec::new(now, Duration::days(30)).feature("user_limit", 5);
        let token = sign(&spec.claims(now), &key.kid, &key.private_pem).unwrap();
        let license = keys_for(&key).verify(&token, now).unwrap();
        assert_eq!(license.features["user_limit"], 5);
        assert_eq!(license.expires, license.license_expires);
    }

    #[test]
    fn another_key_or_an_unknown_kid_is_refused() {
        let trusted = generate_key(Some("k1".into())).unwrap();
        let rogue = generate_key(Some("k1".into())).unwrap();
        let now = Utc::now();
        let claims = LicenseSpec::new(now, Duration::days(1)).claims(now);
        let forged = sign(&claims, "k1", &rogue.private_pem).unwrap();
        assert_eq!(
            keys_for(&trusted).verify(&forged, now).unwrap_err(),
            LicenseError::BadSignature
        );
        let unknown = sign(&claims, "k2", &trusted.private_pem).unwrap();
        assert_eq!(
            keys_for(&trusted).verify(&unknown, now).unwrap_err(),
            LicenseError::UnknownKey("k2".into())
        );
    }

    #[test]
    fn bad_key_lines_name_the_kid() {
        let config = BTreeMap::from([("k".to_string(), "c2hvcnQ=".to_string())]);
        let e = LicenseKeys::from_config(&config).unwrap_err();
        assert_eq!(e.kid, "k");
        assert!(e.to_string().contains("licenses.keys.k"));
    }
}
