//! The claims of a license (as in Coder's version 3 licenses) and the rules a license must meet
//! to be accepted. Time is a parameter, so every rule is testable at any instant.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::LicenseError;

/// The only license format provq understands.
pub const LICENSE_VERSION: u64 = 3;

/// How far ahead a license term may end (as in Coder: 5 × 365 days), so a leaked signing key
/// cannot mint a license that outlives any plausible rotation.
pub const MAX_TERM: Duration = Duration::days(5 * 365);

/// The claims as they appear in the token. Everything is optional here so that a missing claim
/// is reported by name by [`Claims::validate`] instead of as a JSON error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<i64>,
    /// End of the grace period: the token is worthless afterwards.
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<i64>,
    /// End of the paid term and start of the grace period.
    #[serde(default, deserialize_with = "numeric_date")]
    pub license_expires: Option<i64>,
    #[serde(default)]
    pub account_type: String,
    #[serde(default)]
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployment_ids: Vec<String>,
    #[serde(default)]
    pub trial: bool,
    #[serde(default)]
    pub feature_set: String,
    /// Legacy spelling of `feature_set = "enterprise"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_features: bool,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub features: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_telemetry: bool,
}

/// JWT numeric dates may be written as floats; provq keeps whole seconds.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.map(|secs| secs.floor() as i64))
}

/// Which bundle of features a license grants besides its explicit `features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSet {
    /// Only the features listed in `features`.
    None,
    /// Everything except the Premium-only features (as in Coder).
    Enterprise,
    /// Everything.
    Premium,
}

/// A license whose signature and claims passed every rule (except, possibly, `nbf`: a license
/// for a term that has not started yet is accepted and simply grants nothing until then).
#[derive(Debug, Clone, PartialEq)]
pub struct License {
    /// `jti` when it is a UUID (Coder's licenses carry one).
    pub id: Option<Uuid>,
    pub issued_at: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub license_expires: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub account_type: String,
    pub account_id: String,
    pub deployment_ids: Vec<String>,
    pub trial: bool,
    pub feature_set: FeatureSet,
    pub features: BTreeMap<String, i64>,
    pub require_telemetry: bool,
}

fn date(secs: Option<i64>, missing: LicenseError) -> Result<DateTime<Utc>, LicenseError> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or(missing)
}

impl Claims {
    /// Checks every claim rule at `now` (Coder's order, so the first problem is reported).
    pub fn validate(self, now: DateTime<Utc>) -> Result<License, LicenseError> {
        if self.version != Some(LICENSE_VERSION) {
            return Err(LicenseError::Version);
        }
        let issued_at = date(self.iat, LicenseError::MissingIssuedAt)?;
        let not_before = date(self.nbf, LicenseError::MissingNotBefore)?;
        let license_expires = date(self.license_expires, LicenseError::MissingLicenseExpires)?;
        if license_expires > now + MAX_TERM {
            return Err(LicenseError::TermTooLong);
        }
        let expires = date(self.exp, LicenseError::MissingExp)?;
        if expires <= now {
            return Err(LicenseError::Expired(expires));
        }
        if not_before > expires {
            return Err(LicenseError::StartsAfterEnd);
        }
        if self.account_type.is_empty() {
            return Err(LicenseError::MissingAccountType);
        }
        if self.account_id.is_empty() {
            return Err(LicenseError::MissingAccountId);
        }
        let feature_set = match self.feature_set.to_ascii_lowercase().as_str() {
            "" if self.all_features => FeatureSet::Enterprise,
            "" => FeatureSet::None,
            "enterprise" => FeatureSet::Enterprise,
            "premium" => FeatureSet::Premium,
            _ => return Err(LicenseError::UnknownFeatureSet(self.feature_set)),
        };
        Ok(License {
            id: self.jti.as_deref().and_then(|j| Uuid::parse_str(j).ok()),
            issued_at,
            not_before,
            license_expires,
            expires,
            account_type: self.account_type,
            account_id: self.account_id,
            deployment_ids: self.deployment_ids,
            trial: self.trial,
            feature_set,
            features: self.features,
            require_telemetry: self.require_telemetry,
        })
    }
}

impl License {
    /// Whether the license may be used on the deployment `deployment_id` (an empty list means
    /// any deployment).
    pub fn allows_deployment(&self, deployment_id: &str) -> bool {
        self.deployment_ids.is_empty() || self.deployment_ids.iter().any(|d| d == deployment_id)
    }

    /// Whether the term has started.
    pub fn has_started(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now
    }

    /// Whether `now` lies after the paid term but before the end of grace.
    pub fn in_grace_period(&self, now: DateTime<Utc>) -> bool {
        now > self.license_expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(now: DateTime<Utc>) -> Claims {
        let at = now.timestamp();
        Claims {
            iat: Some(at),
            nbf: Some(at),
            license_expires: Some(at + 86_400),
            exp: Some(at + 2 * 86_400),
            account_type: "provq".into(),
            account_id: "acme".into(),
            version: Some(3),
            ..Claims::default()
        }
    }

    #[test]
    fn a_complete_license_passes_and_reads_its_dates() {
        let now = Utc::now();
        let l = valid(now).validate(now).unwrap();
        assert_eq!(l.feature_set, FeatureSet::None);
        assert!(l.has_started(now));
        assert!(!l.in_grace_period(now));
        assert!(l.in_grace_period(now + Duration::hours(25)));
        assert!(l.allows_deployment("anything"));
    }

    #[test]
    fn each_rule_names_its_claim() {
        let now = Utc::now();
        type Break = fn(&mut Claims);
        let cases: Vec<(Break, LicenseError)> = vec![
            (|c| c.version = Some(2), LicenseError::Version),
            (|c| c.version = None, LicenseError::Version),
            (|c| c.iat = None, LicenseError::MissingIssuedAt),
            (|c| c.nbf = None, LicenseError::MissingNotBefore),
            (
                |c| c.license_expires = None,
                LicenseError::MissingLicenseExpires,
            ),
            (|c| c.exp = None, LicenseError::MissingExp),
            (|c| c.account_type.clear(), LicenseError::MissingAccountType),
            (|c| c.account_id.clear(), LicenseError::MissingAccountId),
            (
                |c| c.feature_set = "gold".into(),
                LicenseError::UnknownFeatureSet("gold".into()),
            ),
        ];
        for (change, expected) in cases {
            let mut c = valid(now);
            change(&mut c);
            assert_eq!(c.validate(now).unwrap_err(), expected);
        }
    }

    #[test]
    fn expiry_term_and_start_are_checked_against_now() {
        let now = Utc::now();
        let mut c = valid(now);
        c.exp = Some(now.timestamp() - 1);
        assert!(matches!(c.validate(now), Err(LicenseError::Expired(_))));
        let mut c = valid(now);
        c.license_expires = Some((now + MAX_TERM + Duration::days(1)).timestamp());
        assert_eq!(c.validate(now).unwrap_err(), LicenseError::TermTooLong);
        let mut c = valid(now);
        c.nbf = Some(now.timestamp() + 3600);
        let future = c.validate(now).expect("a future nbf is accepted");
        assert!(!future.has_started(now));
    }

    #[test]
    fn legacy_all_features_means_enterprise_and_jti_becomes_the_id() {
        let now = Utc::now();
        let mut c = valid(now);
        c.all_features = true;
        let id = Uuid::new_v4();
        c.jti = Some(id.to_string());
        let l = c.validate(now).unwrap();
        assert_eq!(l.feature_set, FeatureSet::Enterprise);
        assert_eq!(l.id, Some(id));
        let mut c = valid(now);
        c.deployment_ids = vec!["d1".into()];
        let l = c.validate(now).unwrap();
        assert!(l.allows_deployment("d1") && !l.allows_deployment("d2"));
    }
}
