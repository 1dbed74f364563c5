//! Licenses and entitlements, as in Coder: a license is a compact JWS signed with Ed25519
//! (`alg: EdDSA`) whose header `kid` names a trusted key from `[licenses.keys]`; its claims say
//! which features it grants until when. Entitlements merge every valid license per feature.
//!
//! - [`claims`]: the claims and the rules a license must meet.
//! - [`verify`]: the trusted keys and signature verification.
//! - [`sign`]: key generation and minting (the `provq licenses keygen|sign` commands, and tests).
//! - [`entitlements`]: the per-feature merge and the snapshot `GET /entitlements` serves.

pub mod claims;
pub mod entitlements;
pub mod sign;
pub mod verify;
mod warnings;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

pub use claims::{Claims, FeatureSet, LICENSE_VERSION, License, MAX_TERM};
pub use entitlements::{Entitlement, Feature, Snapshot, StoredLicense, Usage, compute, humanize};
pub use sign::{GeneratedKey, LicenseSpec, SignError, generate_key, sign};
pub use verify::{KeyConfigError, LicenseKeys, decode_claims_unverified};

/// An uploaded license, as read from the database (its claims are not checked here).
#[derive(Debug, Clone, PartialEq)]
pub struct LicenseRecord {
    pub id: i32,
    pub uuid: uuid::Uuid,
    pub jwt: String,
    pub uploaded_at: DateTime<Utc>,
    pub exp: DateTime<Utc>,
}

/// Why a license was refused. Each message is what the operator reads in the 400's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("license is not a valid compact JWS: {0}")]
    Malformed(String),
    #[error("license must be signed with EdDSA (Ed25519), not {0}")]
    WrongAlgorithm(String),
    #[error("JOSE header must contain kid")]
    MissingKeyId,
    #[error("no key with ID {0:?} in [licenses.keys]")]
    UnknownKey(String),
    #[error("signature does not match the key named by kid")]
    BadSignature,
    #[error("license claims cannot be read: {0}")]
    BadClaims(String),
    #[error("license must be version 3")]
    Version,
    #[error("license has invalid or missing iat (issued at) claim")]
    MissingIssuedAt,
    #[error("license has invalid or missing nbf (not before) claim")]
    MissingNotBefore,
    #[error("license has invalid or missing license_expires claim")]
    MissingLicenseExpires,
    #[error("license_expires is more than 5 years away")]
    TermTooLong,
    #[error("license has invalid or missing exp (expires at) claim")]
    MissingExp,
    #[error("license expired at {}", .0.to_rfc3339())]
    Expired(DateTime<Utc>),
    #[error("license nbf (not before) is after its exp (expires at)")]
    StartsAfterEnd,
    #[error("license must contain valid account type")]
    MissingAccountType,
    #[error("license must contain valid account ID")]
    MissingAccountId,
    #[error("unknown feature_set {0:?} (expected \"\", \"enterprise\" or \"premium\")")]
    UnknownFeatureSet(String),
}
