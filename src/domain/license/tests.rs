//! The merge rules of [`compute`], at chosen instants.

use chrono::{Duration, Utc};
use uuid::Uuid;

use super::entitlements::{
    EXTERNAL_PROVISIONER_DAEMONS, HIGH_AVAILABILITY, MULTIPLE_ORGANIZATIONS, USER_LIMIT,
};
use super::*;

fn stored(spec: &LicenseSpec, now: chrono::DateTime<Utc>) -> StoredLicense {
    StoredLicense {
        uuid: Uuid::new_v4(),
        verdict: spec.claims(now).validate(now),
    }
}

fn usage(users: i64) -> Usage {
    Usage {
        active_users: users,
        live_replicas: 1,
    }
}

#[test]
fn without_licenses_nothing_is_entitled_but_users_are_counted() {
    let now = Utc::now();
    let s = compute(now, &[], usage(3));
    assert!(!s.has_license);
    assert_eq!(s.features.len(), 4);
    assert!(s.features.values().all(|f| !f.usable() && !f.enabled));
    assert_eq!(s.feature(USER_LIMIT).actual, Some(3));
    assert!(s.warnings.is_empty() && s.errors.is_empty());
}

#[test]
fn two_licenses_keep_the_better_entry_per_feature_without_summing() {
    let now = Utc::now();
    let a = LicenseSpec::new(now, Duration::days(90)).feature(USER_LIMIT, 10);
    let b = LicenseSpec::new(now, Duration::days(90))
        .feature(USER_LIMIT, 20)
        .feature(MULTIPLE_ORGANIZATIONS, 1);
    let s = compute(now, &[stored(&a, now), stored(&b, now)], usage(1));
    let users = s.feature(USER_LIMIT);
    assert_eq!(
        users.limit,
        Some(20),
        "the higher limit wins, 10 + 20 is never 30"
    );
    assert_eq!(users.entitlement, Entitlement::Entitled);
    assert!(users.enabled);
    assert!(s.feature(MULTIPLE_ORGANIZATIONS).usable());
    assert!(!s.feature(HIGH_AVAILABILITY).usable());
}

#[test]
fn three_licenses_prefer_entitled_over_grace_over_a_higher_limit() {
    let now = Utc::now();
    let mut expired =
        LicenseSpec::new(now - Duration::days(60), Duration::days(50)).feature(USER_LIMIT, 100);
    expired.grace = Duration::days(30);
    let small = LicenseSpec::new(now, Duration::days(90)).feature(USER_LIMIT, 5);
    let mut premium = LicenseSpec::new(now, Duration::days(90));
    premium.feature_set = "premium".into();
    let s = compute(
        now,
        &[
            stored(&expired, now),
            stored(&small, now),
            stored(&premium, now),
        ],
        usage(2),
    );
    let users = s.feature(USER_LIMIT);
    assert_eq!(users.entitlement, Entitlement::Entitled);
    assert_eq!(users.limit, Some(5), "entitled with 5 beats grace with 100");
    for f in [
        MULTIPLE_ORGANIZATIONS,
        HIGH_AVAILABILITY,
        EXTERNAL_PROVISIONER_DAEMONS,
    ] {
        assert_eq!(s.feature(f).entitlement, Entitlement::Entitled, "{f}");
    }
}

#[test]
fn between_license_expires_and_exp_features_are_in_grace_with_warnings() {
    let now = Utc::now();
    let mut spec = LicenseSpec::new(now - Duration::days(40), Duration::days(30))
        .feature(MULTIPLE_ORGANIZATIONS, 1)
        .feature(USER_LIMIT, 10);
    spec.grace = Duration::days(30);
    let s = compute(now, &[stored(&spec, now)], usage(2));
    let orgs = s.feature(MULTIPLE_ORGANIZATIONS);
    assert_eq!(orgs.entitlement, Entitlement::GracePeriod);
    assert!(orgs.usable() && orgs.enabled);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.starts_with("Multiple Organizations is enabled"))
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("the limit 10 is expired"))
    );
}

#[test]
fn the_enterprise_set_excludes_multiple_organizations() {
    let now = Utc::now();
    let mut spec = LicenseSpec::new(now, Duration::days(90));
    spec.feature_set = "enterprise".into();
    let s = compute(now, &[stored(&spec, now)], usage(1));
    assert!(s.feature(HIGH_AVAILABILITY).usable());
    assert!(!s.feature(MULTIPLE_ORGANIZATIONS).usable());
    assert_eq!(s.feature(USER_LIMIT).limit, None);
}

#[test]
fn trials_warn_a_week_ahead_and_others_a_month_ahead() {
    let now = Utc::now();
    let spec = LicenseSpec::new(now, Duration::days(20));
    let s = compute(now, &[stored(&spec, now)], usage(1));
    assert!(!s.trial);
    assert_eq!(s.warnings, ["Your license expires in 20 days."]);
    let mut trial = LicenseSpec::new(now, Duration::days(20));
    trial.trial = true;
    let s = compute(now, &[stored(&trial, now)], usage(1));
    assert!(s.trial && s.has_license);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let mut trial = LicenseSpec::new(now, Duration::days(6));
    trial.trial = true;
    let s = compute(now, &[stored(&trial, now)], usage(1));
    assert_eq!(s.warnings, ["Your license expires in 6 days."]);
}

#[test]
fn exceeding_the_user_limit_warns() {
    let now = Utc::now();
    let spec = LicenseSpec::new(now, Duration::days(90)).feature(USER_LIMIT, 2);
    let s = compute(now, &[stored(&spec, now)], usage(3));
    assert_eq!(s.feature(USER_LIMIT).actual, Some(3));
    assert_eq!(
        s.warnings,
        ["Your deployment has 3 active users but is only licensed for 2."]
    );
    let s = compute(now, &[stored(&spec, now)], usage(2));
    assert!(s.warnings.is_empty());
}

#[test]
fn several_replicas_need_high_availability() {
    let now = Utc::now();
    let two = Usage {
        active_users: 1,
        live_replicas: 2,
    };
    let s = compute(now, &[], two);
    assert_eq!(s.errors.len(), 1);
    assert!(s.errors[0].contains("high availability is a Premium feature"));
    let ha = LicenseSpec::new(now, Duration::days(90)).feature(HIGH_AVAILABILITY, 1);
    let s = compute(now, &[stored(&ha, now)], two);
    assert!(s.errors.is_empty() && s.warnings.is_empty());
}

#[test]
fn a_future_license_grants_nothing_yet_and_an_invalid_one_is_an_error() {
    let now = Utc::now();
    let future = LicenseSpec::new(now + Duration::days(1), Duration::days(90))
        .feature(MULTIPLE_ORGANIZATIONS, 1);
    let broken = StoredLicense {
        uuid: Uuid::new_v4(),
        verdict: Err(LicenseError::UnknownKey("gone".into())),
    };
    let s = compute(now, &[stored(&future, now), broken], usage(1));
    assert!(!s.has_license);
    assert!(!s.feature(MULTIPLE_ORGANIZATIONS).usable());
    assert_eq!(s.errors.len(), 1);
    assert!(s.errors[0].contains("no key with ID \"gone\""));
    assert_eq!(s.refreshed_at, now);
}

#[test]
fn feature_names_read_well() {
    assert_eq!(humanize(MULTIPLE_ORGANIZATIONS), "Multiple Organizations");
    assert_eq!(humanize(USER_LIMIT), "User Limit");
}
