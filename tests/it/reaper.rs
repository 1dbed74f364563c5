//! The reaper: hung running jobs and stale pending jobs are failed with an explanation, once,
//! and their old leases are refused afterwards.

use chrono::Duration;
use provq::queue::reaper::Reaper;
use reqwest::StatusCode;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::*;

backend_tests! {
    async fn hung_and_stale_jobs_are_failed_with_an_explanation(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let running = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        let pending = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"nobody": "runs-this"}})).await["id"].as_str().unwrap().to_string();
        let settings = provq::config::ReaperSettings { interval_secs: 60, hung_after_secs: 300, pending_after_secs: 1800, max_jobs_per_run: 10, ..Default::default() };
        let reaper = Reaper::new(app.state.store.clone(), app.state.events.clone(), &settings);

        // Nothing is old enough yet.
        assert!(reaper.run_once(provq::domain::now()).await.unwrap().is_empty());
        // Six minutes later the running job is hung; the pending one is not stale yet.
        let reaped = reaper.run_once(provq::domain::now() + Duration::minutes(6)).await.unwrap();
        assert_eq!(reaped.len(), 1);
        let job = app.job(&owner, &running).await;
        assert_eq!(job["status"], "failed");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains("hung") && error.contains("5 minutes"), "{error}");
        let (_, logs) = app.get(&format!("/organizations/default/provisionerjobs/{running}/logs"), Some(&owner)).await;
        let last = logs.as_array().unwrap().last().unwrap();
        assert_eq!(last["log_level"], "error");
        assert_eq!(last["output"], error);

        // The daemon's lease is dead: late reports change nothing.
        let (status, body) = app.worker(&format!("/jobs/{running}/complete"), json!({"lease_token": lease})).await;
        assert_error(status, &body, StatusCode::CONFLICT);
        let (status, _) = app.worker(&format!("/jobs/{running}/update"), json!({"lease_token": lease})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(app.status_of(&owner, &running).await, "failed");

        // Half an hour on, the pending job is failed too; a second pass reaps nothing new.
        let later = provq::domain::now() + Duration::minutes(31);
        let reaped = reaper.run_once(later).await.unwrap();
        assert_eq!(reaped.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(), vec![pending.clone()]);
        let job = app.job(&owner, &pending).await;
        assert_eq!(job["status"], "failed");
        assert!(job["error"].as_str().unwrap().contains("pending for 30 minutes"), "{job}");
        assert!(reaper.run_once(later).await.unwrap().is_empty());
    }

    async fn daemons_not_seen_for_the_purge_time_are_removed(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        for name in ["gone", "fresh"] {
            assert!(app.acquire(name, json!({}), 0).await.is_none());
        }
        set_last_seen(&app, "gone", provq::domain::now() - Duration::days(8)).await;
        set_last_seen(&app, "fresh", provq::domain::now() - Duration::days(6)).await;
        let reaper = Reaper::new(app.state.store.clone(), app.state.events.clone(), &app.state.settings.reaper);
        assert_eq!(app.state.settings.reaper.daemon_purge_after_secs, 7 * 24 * 3600);
        assert_eq!(reaper.purge_daemons(provq::domain::now()).await.unwrap(), 1);
        assert_eq!(daemon_names(&app, &owner).await, vec!["fresh".to_string()]);
        assert_eq!(reaper.purge_daemons(provq::domain::now()).await.unwrap(), 0);
    }

    async fn registrations_past_the_cap_are_refused_until_old_daemons_are_purged(backend: Backend) {
        let (app, owner) = spawn_queue_with(backend, |s| s.limits.daemons_per_organization = 3).await;
        for name in ["d0", "d1", "d2"] {
            assert!(app.acquire(name, json!({}), 0).await.is_none());
        }
        let refused = |name: &'static str| {
            let app = &app;
            async move { app.worker("/acquire", json!({"name": name, "wait_seconds": 0})).await }
        };
        let (status, body) = refused("d3").await;
        assert_error(status, &body, StatusCode::CONFLICT);
        assert!(body["message"].as_str().unwrap().contains("limits.daemons_per_organization = 3"), "{body}");
        assert_eq!(validation_fields(&body), vec!["name"]);
        assert_eq!(daemon_names(&app, &owner).await.len(), 3, "nothing was registered");
        // Daemons already registered keep working.
        assert!(app.acquire("d1", json!({}), 0).await.is_none());
        // Once one is purged there is room again.
        set_last_seen(&app, "d0", provq::domain::now() - Duration::days(8)).await;
        let reaper = Reaper::new(app.state.store.clone(), app.state.events.clone(), &app.state.settings.reaper);
        assert_eq!(reaper.purge_daemons(provq::domain::now()).await.unwrap(), 1);
        assert!(app.acquire("d3", json!({}), 0).await.is_none());
        assert_eq!(daemon_names(&app, &owner).await, vec!["d1", "d2", "d3"]);
    }

    async fn a_heartbeat_keeps_a_job_from_being_reaped_and_runs_are_bounded(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        for _ in 0..3 {
            app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        }
        let settings = provq::config::ReaperSettings { interval_secs: 60, hung_after_secs: 60, pending_after_secs: 60, max_jobs_per_run: 2, ..Default::default() };
        let reaper = Reaper::new(app.state.store.clone(), app.state.events.clone(), &settings);
        let at = provq::domain::now() + Duration::seconds(90);
        assert_eq!(reaper.run_once(at).await.unwrap().len(), 2, "max_jobs_per_run bounds a pass");
        assert_eq!(reaper.run_once(at).await.unwrap().len(), 1);

        let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        let (status, _) = app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease})).await;
        assert_eq!(status, StatusCode::OK);
        assert!(reaper.run_once(provq::domain::now() + Duration::seconds(30)).await.unwrap().is_empty());
        assert_eq!(app.status_of(&owner, &id).await, "running");
    }
}

/// The reaper loop runs on its own with short settings (the configured interval is honoured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_loop_fails_a_hung_job_by_itself() {
    let (app, owner) = spawn_queue_with(Backend::Sqlite, |s| {
        s.reaper.interval_secs = 1;
        s.reaper.hung_after_secs = 1;
    })
    .await;
    let id = app
        .enqueue(&owner, json!({"type": "workspace_build"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.acquire("d", json!({}), 0).await.unwrap();
    let (app_ref, owner_ref, id_ref) = (&app, &owner, &id);
    eventually(
        std::time::Duration::from_secs(10),
        "the reaper to fail the job",
        || async move { app_ref.status_of(owner_ref, id_ref).await == "failed" },
    )
    .await;
}

async fn set_last_seen(app: &TestApp, name: &str, at: chrono::DateTime<chrono::Utc>) {
    use provq::entity::provisioner_daemon;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    provisioner_daemon::Entity::update_many()
        .col_expr(provisioner_daemon::Column::LastSeenAt, Expr::value(at))
        .filter(provisioner_daemon::Column::Name.eq(name))
        .exec(app.state.store.connection())
        .await
        .unwrap();
}

async fn daemon_names(app: &TestApp, owner: &str) -> Vec<String> {
    let (status, daemons) = app
        .get("/organizations/default/provisionerdaemons", Some(owner))
        .await;
    assert_eq!(status, StatusCode::OK, "{daemons}");
    let mut names: Vec<String> = daemons
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}
