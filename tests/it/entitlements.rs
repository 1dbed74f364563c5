//! Entitlements (contract §4): the merged snapshot, warnings, the forced refresh and its
//! throttle, and replicas sharing one PostgreSQL database.

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use provq::store::licenses::NewLicense;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;
use crate::license_keys::*;

fn feature<'a>(e: &'a Value, name: &str) -> &'a Value {
    &e["features"][name]
}

backend_tests! {
    async fn without_a_license_nothing_is_entitled_and_users_are_counted(backend: Backend) {
        let (app, owner, _) = spawn_licensed(backend).await;
        let e = entitlements(&app, &owner).await;
        for name in ["multiple_organizations", "user_limit", "high_availability", "external_provisioner_daemons"] {
            assert_eq!(feature(&e, name)["entitlement"], "not_entitled", "{name}: {e}");
            assert_eq!(feature(&e, name)["enabled"], false, "{name}: {e}");
        }
        assert_eq!(feature(&e, "user_limit")["actual"], 1, "the owner; the prebuilds system user is no seat");
        assert!(feature(&e, "user_limit").get("limit").is_none());
        assert_eq!(e["has_license"], false);
        assert_eq!(e["trial"], false);
        assert_eq!(e["require_telemetry"], false);
        assert_eq!(e["warnings"], json!([]));
        assert_eq!(e["errors"], json!([]));
        assert!(e["refreshed_at"].is_string());
    }

    async fn two_and_three_licenses_merge_per_feature_without_summing(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        add_license(&app, &owner, &authority.license(&[("user_limit", 10)])).await;
        add_license(&app, &owner, &authority.license(&[("user_limit", 20), ("multiple_organizations", 1)])).await;
        let e = entitlements(&app, &owner).await;
        assert_eq!(feature(&e, "user_limit")["limit"], 20, "{e}");
        assert_eq!(feature(&e, "user_limit")["entitlement"], "entitled");
        assert_eq!(feature(&e, "user_limit")["enabled"], true);
        assert_eq!(feature(&e, "multiple_organizations")["entitlement"], "entitled");
        assert_eq!(feature(&e, "high_availability")["entitlement"], "not_entitled");
        assert_eq!(e["has_license"], true);

        // A third license in its grace period with a higher limit loses to the entitled one,
        // but its Enterprise set adds the features the others lack.
        let mut old = authority.spec(30).feature("user_limit", 500);
        old.not_before = Utc::now() - Duration::days(40);
        old.license_expires = Utc::now() - Duration::days(10);
        old.grace = Duration::days(30);
        old.feature_set = "enterprise".into();
        add_license(&app, &owner, &authority.sign(&old)).await;
        let e = entitlements(&app, &owner).await;
        assert_eq!(feature(&e, "user_limit")["limit"], 20, "{e}");
        assert_eq!(feature(&e, "user_limit")["entitlement"], "entitled");
        assert_eq!(feature(&e, "high_availability")["entitlement"], "grace_period");
        assert_eq!(feature(&e, "external_provisioner_daemons")["entitlement"], "grace_period");
        assert_eq!(feature(&e, "multiple_organizations")["entitlement"], "entitled");
    }

    async fn a_license_between_its_term_and_exp_is_in_its_grace_period(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let mut spec = authority.spec(30).feature("multiple_organizations", 1).feature("user_limit", 5);
        spec.not_before = Utc::now() - Duration::days(31);
        spec.license_expires = Utc::now() - Duration::days(1);
        spec.grace = Duration::days(14);
        add_license(&app, &owner, &authority.sign(&spec)).await;
        let e = entitlements(&app, &owner).await;
        assert_eq!(feature(&e, "multiple_organizations")["entitlement"], "grace_period", "{e}");
        assert_eq!(feature(&e, "multiple_organizations")["enabled"], true);
        assert_eq!(feature(&e, "user_limit")["entitlement"], "grace_period");
        let warnings = e["warnings"].to_string();
        assert!(warnings.contains("Multiple Organizations is enabled but your license for this feature is expired."), "{warnings}");
        assert!(warnings.contains("the license with the limit 5 is expired"), "{warnings}");
        // Grace still lets gated routes through.
        let (status, body) = app.post("/organizations", Some(&owner), json!({"name": "graceful"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn a_trial_is_flagged_and_warned_about_in_its_last_week(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let mut spec = authority.spec(5).feature("multiple_organizations", 1);
        spec.trial = true;
        add_license(&app, &owner, &authority.sign(&spec)).await;
        let e = entitlements(&app, &owner).await;
        assert_eq!(e["trial"], true);
        assert_eq!(e["warnings"], json!(["Your license expires in 5 days."]), "{e}");
    }

    async fn a_license_ending_within_30_days_warns(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        add_license(&app, &owner, &authority.sign(&authority.spec(12))).await;
        let e = entitlements(&app, &owner).await;
        assert_eq!(e["warnings"], json!(["Your license expires in 12 days."]), "{e}");
        assert_eq!(e["trial"], false);
    }

    async fn more_active_users_than_the_limit_warn(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        app.member(&owner, "alice").await;
        app.member(&owner, "bob").await;
        add_license(&app, &owner, &authority.license(&[("user_limit", 2)])).await;
        let e = entitlements(&app, &owner).await;
        assert_eq!(feature(&e, "user_limit")["limit"], 2);
        assert_eq!(feature(&e, "user_limit")["actual"], 3);
        assert_eq!(
            e["warnings"],
            json!(["Your deployment has 3 active users but is only licensed for 2."]),
            "{e}"
        );
    }

    async fn a_replica_counts_itself_and_stale_rows_are_neither_live_nor_kept(backend: Backend) {
        let (app, _owner, _) = spawn_licensed(backend).await;
        let store = &app.state.store;
        let live = || store.live_replica_count(Utc::now() - provq::entitlements::LIVE_WINDOW);
        assert_eq!(live().await.unwrap(), 1, "this server heartbeats");
        let gone = uuid::Uuid::new_v4();
        store.heartbeat_replica(gone, "gone", Utc::now() - Duration::days(2)).await.unwrap();
        assert_eq!(live().await.unwrap(), 1, "a stale row is not live");
        assert_eq!(store.prune_replicas(Utc::now() - Duration::days(1)).await.unwrap(), 1);
        app.state.entitlements.beat().await.unwrap();
        assert_eq!(app.state.entitlements.current().live_replicas, 1);
        assert!(app.state.entitlements.current().errors.is_empty());
    }

    async fn a_forced_refresh_recomputes_and_is_throttled_for_a_minute(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        // Shown once, so the snapshot knows the owner (a changed user count recomputes it).
        entitlements(&app, &owner).await;
        // A license written behind the server's back is not served until a refresh.
        let spec = authority.spec(90).feature("multiple_organizations", 1);
        app.state
            .store
            .insert_license(NewLicense {
                uuid: uuid::Uuid::new_v4(),
                jwt: authority.sign(&spec),
                exp: spec.license_expires,
            })
            .await
            .unwrap();
        let e = entitlements(&app, &owner).await;
        assert_eq!(entitlement_of(&e, "multiple_organizations"), "not_entitled");

        let url = format!("{}/api/v2/licenses/refresh-entitlements", app.base);
        let refresh = || app.http.post(&url).header("Coder-Session-Token", &owner).send();
        let first = refresh().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.json::<Value>().await.unwrap(), json!({"message": "Entitlements updated"}));
        let e = entitlements(&app, &owner).await;
        assert_eq!(entitlement_of(&e, "multiple_organizations"), "entitled");

        let second = refresh().await.unwrap();
        assert_eq!(second.status(), StatusCode::BAD_REQUEST);
        let retry_after: u64 = second.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let body: Value = second.json().await.unwrap();
        assert_error(StatusCode::BAD_REQUEST, &body, StatusCode::BAD_REQUEST);
    }
}

/// Two replicas on one PostgreSQL database: a license added through one changes what the other
/// serves (NOTIFY), and two live replicas without high availability are an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_licenses_and_count_each_other() {
    let (a, owner, authority) = spawn_licensed(Backend::Postgres).await;
    let mut settings = test_settings(&a.database_url);
    authority.trust(&mut settings);
    let b = provq::startup::Application::build(settings).await.unwrap();
    let b_state = b.state().clone();
    let b_shutdown = provq::shutdown::Shutdown::new();
    let b_server = tokio::spawn(b.run(b_shutdown.clone().cancelled_owned()));
    let b_sees = |feature: &'static str, want: &'static str| {
        let state = b_state.clone();
        move || {
            let state = state.clone();
            async move {
                format!(
                    "{:?}",
                    state.entitlements.current().feature(feature).entitlement
                ) == want
            }
        }
    };
    // The period refresh is 10 minutes away: only the notification can make this quick.
    add_license(
        &a,
        &owner,
        &authority.license(&[("multiple_organizations", 1)]),
    )
    .await;
    eventually(
        StdDuration::from_secs(10),
        "replica B to see the license",
        b_sees("multiple_organizations", "Entitled"),
    )
    .await;

    // A learns about B (from B's heartbeat row) on its next refresh.
    let (status, body) = a
        .post("/licenses/refresh-entitlements", Some(&owner), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let e = entitlements(&a, &owner).await;
    assert!(
        e["errors"].to_string().contains("You have 2 replicas"),
        "{e}"
    );

    // With high availability licensed, the error goes away on both replicas.
    add_license(&a, &owner, &authority.license(&[("high_availability", 1)])).await;
    assert_eq!(entitlements(&a, &owner).await["errors"], json!([]));
    eventually(
        StdDuration::from_secs(10),
        "replica B to see high availability",
        b_sees("high_availability", "Entitled"),
    )
    .await;
    assert!(b_state.entitlements.current().errors.is_empty());

    // A stopped replica is no longer counted.
    b_shutdown.cancel();
    let _ = tokio::time::timeout(StdDuration::from_secs(15), b_server).await;
    let live = a
        .state
        .store
        .live_replica_count(Utc::now() - provq::entitlements::LIVE_WINDOW)
        .await
        .unwrap();
    assert_eq!(live, 1);
}
