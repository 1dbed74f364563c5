//! The warnings and errors that come with entitlements: expiry ahead, a grace period running,
//! too many users, several replicas without high availability.

use chrono::{DateTime, Utc};

use super::entitlements::{
    EXTERNAL_PROVISIONER_DAEMONS, Entitlement, HIGH_AVAILABILITY, MULTIPLE_ORGANIZATIONS, Snapshot,
    USER_LIMIT, Usage, humanize,
};

/// Warn this many days before the licensed term ends (trials: [`TRIAL_WARNING_DAYS`]).
pub const WARNING_DAYS: i64 = 30;
pub const TRIAL_WARNING_DAYS: i64 = 7;

pub(super) fn add(
    snapshot: &mut Snapshot,
    terms: &[(DateTime<Utc>, DateTime<Utc>)],
    now: DateTime<Utc>,
    usage: Usage,
) {
    if let Some(days) = days_until_coverage_ends(terms, now) {
        let threshold = if snapshot.trial {
            TRIAL_WARNING_DAYS
        } else {
            WARNING_DAYS
        };
        if days > 0 && days < threshold {
            let unit = if days == 1 { "day" } else { "days" };
            snapshot
                .warnings
                .push(format!("Your license expires in {days} {unit}."));
        }
    }
    if usage.live_replicas > 1 {
        replicas(snapshot, usage.live_replicas);
    }
    if !snapshot.has_license {
        return;
    }
    let users = snapshot.feature(USER_LIMIT).clone();
    if let Some(limit) = users.limit {
        if usage.active_users > limit {
            snapshot.warnings.push(format!(
                "Your deployment has {} active users but is only licensed for {limit}.",
                usage.active_users
            ));
        } else if users.entitlement == Entitlement::GracePeriod {
            snapshot.warnings.push(format!(
                "Your deployment has {} active users but the license with the limit {limit} is expired.",
                usage.active_users
            ));
        }
    }
    for name in [MULTIPLE_ORGANIZATIONS, EXTERNAL_PROVISIONER_DAEMONS] {
        if snapshot.feature(name).entitlement == Entitlement::GracePeriod {
            snapshot.warnings.push(format!(
                "{} is enabled but your license for this feature is expired.",
                humanize(name)
            ));
        }
    }
}

fn replicas(snapshot: &mut Snapshot, live: u64) {
    match snapshot.feature(HIGH_AVAILABILITY).entitlement {
        Entitlement::NotEntitled if snapshot.has_license => snapshot.errors.push(format!(
            "You have {live} replicas but your license is not entitled to high availability. \
             Run a single replica or add a license with high_availability."
        )),
        Entitlement::NotEntitled => snapshot.errors.push(format!(
            "You have {live} replicas but high availability is a Premium feature. \
             Run a single replica or add a license with high_availability."
        )),
        Entitlement::GracePeriod => snapshot.warnings.push(format!(
            "You have {live} replicas but your license for high availability is expired. \
             Reduce to one replica or renew the license."
        )),
        Entitlement::Entitled => {}
    }
}

/// Whole days (rounded up) until the licensed coverage that includes `now` ends. Terms that
/// overlap or touch form one coverage, so a renewal uploaded ahead of time silences the
/// warning of the license it replaces.
fn days_until_coverage_ends(
    terms: &[(DateTime<Utc>, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Option<i64> {
    let mut terms: Vec<_> = terms.iter().filter(|(s, e)| s <= e).copied().collect();
    terms.sort();
    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (start, end) in terms {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let (_, end) = merged.into_iter().find(|(s, e)| *s <= now && now <= *e)?;
    let seconds = (end - now).num_seconds();
    Some((seconds + 86_399) / 86_400)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn coverage_merges_touching_terms_and_rounds_up() {
        let now = Utc::now();
        let d = Duration::days;
        assert_eq!(days_until_coverage_ends(&[], now), None);
        assert_eq!(
            days_until_coverage_ends(&[(now - d(1), now + d(3) - Duration::hours(1))], now),
            Some(3)
        );
        let renewal = [(now - d(10), now + d(5)), (now + d(5), now + d(100))];
        assert_eq!(days_until_coverage_ends(&renewal, now), Some(100));
        let future_only = [(now + d(1), now + d(5))];
        assert_eq!(days_until_coverage_ends(&future_only, now), None);
    }
}
