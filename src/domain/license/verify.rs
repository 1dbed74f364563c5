//! Checking a license token: the trusted keys from `[licenses.keys]`, the JWS signature (with
//! the `jsonwebtoken` crate) and then the claim rules.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

use super::{Claims, License, LicenseError};

/// Why a configured key cannot be used; names the kid so the operator can fix the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`licenses.keys.{kid}`: {reason}")]
pub struct KeyConfigError {
    pub kid: String,
    pub reason: String,
}

/// The trusted signing keys, by kid.
#[derive(Clone, Default)]
pub struct LicenseKeys {
    keys: BTreeMap<String, DecodingKey>,
}

impl std::fmt::Debug for LicenseKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

impl LicenseKeys {
    /// Reads `kid → base64 (standard alphabet) of the raw 32-byte Ed25519 public key`.
    pub fn from_config(config: &BTreeMap<String, String>) -> Result<Self, KeyConfigError> {
        let mut keys = BTreeMap::new();
        for (kid, encoded) in config {
            let error = |reason: &str| KeyConfigError {
                kid: kid.clone(),
                reason: reason.to_string(),
            };
            let raw = STANDARD
                .decode(encoded.trim())
                .map_err(|_| error("not valid base64 (standard alphabet)"))?;
            let raw: [u8; 32] = raw.try_into().map_err(|_| {
                error("must be the raw 32-byte Ed25519 public key (as `provq licenses keygen` prints it)")
            })?;
            ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .map_err(|_| error("not a valid Ed25519 public key"))?;
            // `from_ed_der` wants the raw key, not SPKI DER (see stack notes).
            keys.insert(kid.clone(), DecodingKey::from_ed_der(&raw));
        }
        Ok(Self { keys })
    }

    /// Verifies the signature and every claim rule at `now`. A future `nbf` is accepted (as in
    /// Coder): operators upload next year's license before this year's ends.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<License, LicenseError> {
        self.verify_signature(token)?.validate(now)
    }

    /// Checks the header and the signature; returns the claims unchecked.
    fn verify_signature(&self, token: &str) -> Result<Claims, LicenseError> {
        let token = token.trim();
        let header = decode_header(token).map_err(|e| LicenseError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(LicenseError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(LicenseError::MissingKeyId)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| LicenseError::UnknownKey(kid.clone()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time and claim rules are ours (with an injectable clock); the crate checks the
        // signature and the algorithm only.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data =
            decode::<serde_json::Value>(token, key, &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => LicenseError::BadSignature,
                _ => LicenseError::Malformed(e.to_string()),
            })?;
        serde_json::from_value(data.claims).map_err(|e| LicenseError::BadClaims(e.to_string()))
    }
}

/// The payload of a stored token, decoded without verification, for display: operators should
/// see every stored license, also one signed by a key no longer trusted. The token itself is
/// never shown again (it is a bearer credential).
pub fn decode_claims_unverified(token: &str) -> Option<serde_json::Value> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}
