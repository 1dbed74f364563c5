//! The reaper: hung running jobs and stale pending jobs are failed with an explanation, once,
//! and their old leases are refused afterwards.

use chrono::Duration;
use provq::queue::Wakeups;
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
        let settings = provq::config::ReaperSettings { interval_secs: 60, hung_after_secs: 300, pending_after_secs: 1800, max_jobs_per_run: 10 };
        let reaper = Reaper::new(app.state.store.clone(), Wakeups::local(), app.state.metrics.clone(), &settings);

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

    async fn a_heartbeat_keeps_a_job_from_being_reaped_and_runs_are_bounded(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        for _ in 0..3 {
            app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        }
        let settings = provq::config::ReaperSettings { interval_secs: 60, hung_after_secs: 60, pending_after_secs: 60, max_jobs_per_run: 2 };
        let reaper = Reaper::new(app.state.store.clone(), Wakeups::local(), app.state.metrics.clone(), &settings);
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
