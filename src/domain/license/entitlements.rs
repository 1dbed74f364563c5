//! Entitlements: what the valid licenses grant, merged per feature, with the warnings and errors
//! an operator should see. Pure: the caller supplies the verified licenses, the usage figures and
//! the time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{FeatureSet, License, LicenseError, warnings};

pub const MULTIPLE_ORGANIZATIONS: &str = "multiple_organizations";
pub const USER_LIMIT: &str = "user_limit";
pub const HIGH_AVAILABILITY: &str = "high_availability";
pub const EXTERNAL_PROVISIONER_DAEMONS: &str = "external_provisioner_daemons";

/// Every feature provq reports; licenses may name others, which are ignored (they belong to a
/// newer or older product version).
pub const FEATURES: [&str; 4] = [
    EXTERNAL_PROVISIONER_DAEMONS,
    HIGH_AVAILABILITY,
    MULTIPLE_ORGANIZATIONS,
    USER_LIMIT,
];

/// `multiple_organizations` → `Multiple Organizations`, for messages.
pub fn humanize(feature: &str) -> String {
    feature
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Declared worst to best, so the derived order is the merge order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entitlement {
    NotEntitled,
    GracePeriod,
    Entitled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub entitlement: Entitlement,
    pub enabled: bool,
    pub limit: Option<i64>,
    pub actual: Option<i64>,
}

impl Feature {
    pub const NOT_ENTITLED: Feature = Feature {
        entitlement: Entitlement::NotEntitled,
        enabled: false,
        limit: None,
        actual: None,
    };

    /// Entitled or in its grace period: gated routes let the request through.
    pub fn usable(&self) -> bool {
        self.entitlement != Entitlement::NotEntitled
    }

    /// The merge rule for two licenses granting one feature: the better entitlement wins, then
    /// the higher limit (any limit beats none), then enabled. Limits are never summed: two
    /// licenses for 10 users do not make 20.
    fn better_than(&self, other: &Feature) -> bool {
        (self.entitlement, self.limit, self.enabled)
            > (other.entitlement, other.limit, other.enabled)
    }
}

/// Figures the entitlements depend on besides the licenses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Active users, system users excluded.
    pub active_users: i64,
    /// Replicas that heartbeated recently.
    pub live_replicas: u64,
}

/// A stored license and what verifying it said.
#[derive(Debug, Clone)]
pub struct StoredLicense {
    pub uuid: Uuid,
    pub verdict: Result<License, LicenseError>,
}

/// What `GET /entitlements` shows; every replica serves its own, recomputed on changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub features: BTreeMap<String, Feature>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    pub has_license: bool,
    pub trial: bool,
    pub require_telemetry: bool,
    pub refreshed_at: DateTime<Utc>,
    /// The replica count this snapshot was computed with (so a change can trigger a recompute).
    #[serde(skip)]
    pub live_replicas: u64,
}

impl Snapshot {
    pub fn feature(&self, name: &str) -> &Feature {
        self.features.get(name).unwrap_or(&Feature::NOT_ENTITLED)
    }

    fn offer(&mut self, name: &str, candidate: Feature) {
        let current = self
            .features
            .entry(name.to_string())
            .or_insert(Feature::NOT_ENTITLED);
        if candidate.better_than(current) {
            *current = candidate;
        }
    }
}

/// The features a feature set grants without listing them (as in Coder: Enterprise is
/// everything but the Premium-only multiple organizations; limits are never implied).
fn implied_features(set: FeatureSet) -> &'static [&'static str] {
    match set {
        FeatureSet::None => &[],
        FeatureSet::Enterprise => &[HIGH_AVAILABILITY, EXTERNAL_PROVISIONER_DAEMONS],
        FeatureSet::Premium => &[
            HIGH_AVAILABILITY,
            EXTERNAL_PROVISIONER_DAEMONS,
            MULTIPLE_ORGANIZATIONS,
        ],
    }
}

/// Merges every license into one snapshot at `now`.
pub fn compute(now: DateTime<Utc>, licenses: &[StoredLicense], usage: Usage) -> Snapshot {
    let mut snapshot = Snapshot {
        features: FEATURES
            .iter()
            .map(|f| (f.to_string(), Feature::NOT_ENTITLED))
            .collect(),
        warnings: Vec::new(),
        errors: Vec::new(),
        has_license: false,
        trial: false,
        require_telemetry: false,
        refreshed_at: now,
        live_replicas: usage.live_replicas,
    };
    let mut terms = Vec::new();
    for stored in licenses {
        let license = match &stored.verdict {
            Ok(license) => license,
            // Past its grace period: simply gone, as if deleted.
            Err(LicenseError::Expired(_)) => continue,
            Err(e) => {
                snapshot.errors.push(format!(
                    "Invalid license ({}) parsing claims: {e}",
                    stored.uuid
                ));
                continue;
            }
        };
        // A license whose term has not started grants nothing yet, but its term still counts
        // for the expiry warning (a renewal uploaded early silences it).
        terms.push((license.not_before, license.license_expires));
        if !license.has_started(now) {
            continue;
        }
        apply(&mut snapshot, license, now);
    }
    snapshot
        .features
        .get_mut(USER_LIMIT)
        .expect("every feature is present")
        .actual = Some(usage.active_users);
    warnings::add(&mut snapshot, &terms, now, usage);
    for feature in snapshot.features.values_mut() {
        if !feature.usable() {
            feature.enabled = false;
        }
    }
    snapshot
}

fn apply(snapshot: &mut Snapshot, license: &License, now: DateTime<Utc>) {
    snapshot.has_license = true;
    snapshot.trial |= license.trial;
    snapshot.require_telemetry |= license.require_telemetry;
    let entitlement = if license.in_grace_period(now) {
        Entitlement::GracePeriod
    } else {
        Entitlement::Entitled
    };
    let granted = |limit| Feature {
        entitlement,
        enabled: true,
        limit,
        actual: None,
    };
    for name in implied_features(license.feature_set) {
        snapshot.offer(name, granted(None));
    }
    for (name, &value) in &license.features {
        // Unknown names and non-positive values grant nothing (as in Coder).
        if !FEATURES.contains(&name.as_str()) || value <= 0 {
            continue;
        }
        let limit = (name == USER_LIMIT).then_some(value);
        snapshot.offer(name, granted(limit));
    }
}
