//! Handing jobs to daemons: tag matching, exactly-once under concurrency, wake-ups across
//! replicas, cancel races, daemon credentials and the daemon registry.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provq::entity::organization;
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::backend_tests;
use crate::helpers::*;

async fn second_organization(app: &TestApp) -> uuid::Uuid {
    let now = provq::domain::now();
    let org = organization::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set("second".into()),
        display_name: Set("Second".into()),
        description: Set(String::new()),
        icon: Set(String::new()),
        is_default: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(app.state.store.connection())
    .await
    .unwrap();
    org.id
}

backend_tests! {
    async fn tag_matching_follows_the_contract_table(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let (_, me) = app.get("/users/me", Some(&owner)).await;
        let owner_id = me["id"].as_str().unwrap().to_string();
        let member = app.member(&owner, "mo").await;
        // (job body, daemon acquire body, credential, runs?)
        let org = json!({"scope": "organization"});
        let cases: Vec<(Value, Value, bool)> = vec![
            (json!({}), json!({}), true),
            (json!({}), json!({"tags": {"os": "linux"}}), false),
            (json!({"tags": {"os": "linux"}}), json!({}), false),
            (json!({"tags": {"os": "linux"}}), json!({"tags": {"os": "linux"}}), true),
            (json!({"tags": {"os": "linux"}}), json!({"tags": {"os": "linux", "gpu": "yes"}}), true),
            (json!({"tags": {"os": "linux", "gpu": "yes"}}), json!({"tags": {"os": "linux"}}), false),
            (json!({"tags": org.clone()}), json!({"tags": org}), true),
            (json!({"provisioner": "echo"}), json!({}), false),
            (json!({"provisioner": "echo"}), json!({"provisioners": ["terraform", "echo"]}), true),
        ];
        for (i, (job, daemon, runs)) in cases.into_iter().enumerate() {
            let mut body = job.clone();
            body["type"] = json!("workspace_build");
            let id = app.enqueue(&owner, body).await["id"].as_str().unwrap().to_string();
            let mut acquire = daemon.clone();
            acquire["name"] = json!(format!("case-{i}"));
            acquire["wait_seconds"] = json!(0);
            let (status, got) = app.worker("/acquire", acquire).await;
            if runs {
                assert_eq!(status, StatusCode::OK, "case {i}: job {job} daemon {daemon}: {got}");
                assert_eq!(got["job"]["job_id"], id.as_str());
                app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": got["job"]["lease_token"]})).await;
            } else {
                assert_eq!(status, StatusCode::NO_CONTENT, "case {i}: job {job} daemon {daemon}: {got}");
                app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel"), Some(&owner), json!({})).await;
            }
        }

        // User scope: the owner tag is the initiator's id, and a daemon run with an owner's
        // session gets the owner's id; another user's scoped job is not its business.
        let mine = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"scope": "user"}})).await;
        assert_eq!(mine["tags"]["owner"], owner_id.as_str());
        let theirs = app.enqueue(&member, json!({"type": "workspace_build", "tags": {"scope": "user"}})).await;
        let session = ("Coder-Session-Token", owner.as_str());
        let (status, got) = app.worker_with("/acquire", session, json!({"name": "mine", "tags": {"scope": "user"}, "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["job"]["job_id"], mine["id"]);
        let (status, _) = app.worker_with("/acquire", session, json!({"name": "mine", "tags": {"scope": "user"}, "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "the member's job {} is not for the owner's daemon", theirs["id"]);
        // PSK daemons have no user to scope to.
        let (status, body) = app.worker("/acquire", json!({"name": "psk", "tags": {"scope": "user"}, "wait_seconds": 0})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);

        // Another organization's daemon never sees this organization's jobs.
        let other = second_organization(&app).await;
        let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let (status, _) = app.worker("/acquire", json!({"name": "elsewhere", "organization": other, "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, got) = app.worker("/acquire", json!({"name": "here", "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["job"]["job_id"], job["id"]);
    }

    async fn human_jobs_come_before_prebuild_jobs_then_oldest_first(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let p1 = app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await;
        let h1 = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let p2 = app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await;
        let h2 = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let mut order = Vec::new();
        while let Some((id, _)) = app.acquire("d", json!({}), 0).await {
            order.push(id);
        }
        let expected: Vec<String> = [h1, h2, p1, p2].iter().map(|j| j["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(order, expected);
    }

    async fn eight_long_polling_daemons_get_500_jobs_exactly_once(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let app = Arc::new(app);
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let total = 500;
        let mut daemons = Vec::new();
        for d in 0..8 {
            let (app, seen) = (app.clone(), seen.clone());
            daemons.push(tokio::spawn(async move {
                loop {
                    if seen.lock().await.len() >= total {
                        return;
                    }
                    if let Some((id, lease)) = app.acquire(&format!("daemon-{d}"), json!({}), 1).await {
                        let (status, _) = app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": lease})).await;
                        assert_eq!(status, StatusCode::NO_CONTENT);
                        seen.lock().await.push(id);
                    }
                }
            }));
        }
        let mut enqueued = HashSet::new();
        for _ in 0..total {
            let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
            enqueued.insert(job["id"].as_str().unwrap().to_string());
        }
        for d in daemons {
            tokio::time::timeout(Duration::from_secs(120), d).await.expect("drained in time").unwrap();
        }
        let seen = seen.lock().await;
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), total, "a job was acquired twice");
        assert_eq!(unique, enqueued, "a job was lost");
    }

    async fn simultaneous_acquires_share_claims_yet_each_daemon_gets_its_own_job(backend: Backend) {
        // 30 daemons of two kinds ask at once for 23 jobs: claims are batched per kind, and each
        // job must reach exactly one daemon of the right kind, under that daemon's name and lease.
        let (app, owner) = spawn_queue(backend).await;
        let app = Arc::new(app);
        let mut kind_of = HashMap::new();
        for i in 0..23 {
            let tags = if i < 8 { json!({"env": "a"}) } else { json!({}) };
            let job = app.enqueue(&owner, json!({"type": "workspace_build", "tags": tags})).await;
            kind_of.insert(job["id"].as_str().unwrap().to_string(), i < 8);
        }
        // 30: under the per-credential long-poll cap (32).
        let acquires: Vec<_> = (0..30)
            .map(|d| {
                let app = app.clone();
                tokio::spawn(async move {
                    let tags = if d % 2 == 0 { json!({"env": "a"}) } else { json!({}) };
                    let name = format!("batch-{d}");
                    (name.clone(), d % 2 == 0, app.acquire(&name, tags, 0).await)
                })
            })
            .collect();
        let mut got = HashMap::new();
        for a in acquires {
            let (name, tagged, claim) = a.await.unwrap();
            let Some((id, lease)) = claim else { continue };
            assert!(!kind_of[&id] || tagged, "tagged job {id} went to untagged daemon {name}");
            assert!(got.insert(id.clone(), (name, lease)).is_none(), "job {id} handed out twice");
        }
        // 15 untagged daemons for the 15 untagged jobs; 15 tagged daemons for the 8 tagged jobs
        // (an `env: a` daemon may not run untagged jobs).
        assert_eq!(got.len(), 23, "every job handed out: {got:?}");
        for (id, (name, lease)) in &got {
            assert_eq!(app.job(&owner, id).await["worker_name"], json!(name), "job {id}");
            let (status, body) = app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": lease})).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }

    async fn a_cancel_racing_an_acquire_never_leaves_a_job_both_running_and_finished(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        for _ in 0..40 {
            let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
            let cancel_path = format!("/organizations/default/provisionerjobs/{id}/cancel?expect_status=pending");
            let cancel = app.post(&cancel_path, Some(&owner), json!({}));
            let acquire = app.worker("/acquire", json!({"name": "racer", "wait_seconds": 0}));
            let ((cancel_status, _), (acquire_status, acquired)) = tokio::join!(cancel, acquire);
            let job = app.job(&owner, &id).await;
            match (cancel_status, acquire_status) {
                (StatusCode::OK, StatusCode::NO_CONTENT) => assert_eq!(job["status"], "canceled"),
                (StatusCode::PRECONDITION_FAILED, StatusCode::OK) => {
                    assert_eq!(job["status"], "running");
                    assert_eq!(acquired["job"]["job_id"], id.as_str());
                    app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": acquired["job"]["lease_token"]})).await;
                }
                other => panic!("impossible outcome {other:?}: {job}"),
            }
        }
    }

    async fn a_new_job_wakes_a_waiting_daemon_at_once(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let app = Arc::new(app);
        let waiter = {
            let app = app.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let got = app.acquire("sleeper", json!({}), 20).await;
                (got, started.elapsed())
            })
        };
        app.until_daemons_listed(&owner, &["sleeper"]).await;
        let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let (got, waited) = waiter.await.unwrap();
        assert_eq!(got.unwrap().0, job["id"].as_str().unwrap());
        assert!(waited < Duration::from_secs(4), "woken by the backup poll, not the wake-up: {waited:?}");
    }

    async fn a_report_with_nothing_left_runs_no_claim(backend: Backend) {
        // Issue 15.1: a daemon reporting its job when its kind has nothing left must not pay a
        // claim that finds nothing; the job that arrives while it waits costs one claim.
        let (app, owner) = spawn_queue(backend).await;
        let app = Arc::new(app);
        let claims = |app: &TestApp| app.state.store.claim_statements();
        let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (status, first) = app.worker("/acquire-jobs", json!({"name": "d", "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let lease = first["jobs"][0]["lease_token"].clone();
        let before = claims(&app);
        let reporter = {
            let (app, job) = (app.clone(), job.clone());
            tokio::spawn(async move {
                app.worker("/acquire-jobs", json!({"name": "d", "wait_seconds": 15, "report": {"job_id": job, "lease_token": lease}})).await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.status_of(&owner, &job).await != "succeeded" {
            assert!(Instant::now() < deadline, "the report was not committed before the wait");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(claims(&app) - before, 0, "the report ran no claim");
        let next = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (status, answer) = reporter.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["jobs"][0]["job_id"].as_str(), Some(next.as_str()));
        assert_eq!(claims(&app) - before, 1, "one claim for the one job");
    }

    async fn a_claim_put_back_wakes_a_waiting_daemon_at_once(backend: Backend) {
        use provq::domain::job::Provisioner;
        use provq::domain::tags::Tags;
        use provq::store::daemons::DaemonRegistration;
        use provq::store::jobs::Runnable;

        let (app, owner) = spawn_queue(backend).await;
        let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        // A daemon that never receives its claim (it went away while the batch ran) holds the
        // only job, so a daemon that asks now finds nothing and goes to sleep.
        let store = app.state.store.clone();
        let organization_id = store.default_organization_id().await.unwrap();
        let vanished = store
            .register_daemon(DaemonRegistration {
                organization_id,
                name: "vanished".into(),
                key_id: None,
                tags: Tags::untagged(),
                provisioners: vec![Provisioner::Terraform],
                version: String::new(),
            })
            .await
            .unwrap();
        let runnable = Runnable { organization_id, provisioners: vec![Provisioner::Terraform], tags: Tags::untagged() };
        let claim = app.state.claims.claim_job(vanished.id, &runnable).await.unwrap().expect("the job");
        let app = Arc::new(app);
        let waiter = {
            let app = app.clone();
            tokio::spawn(async move { app.acquire("sleeper", json!({}), 20).await })
        };
        eventually(Duration::from_secs(10), "the sleeper to wait", || async {
            app.state.wakeups.dispatcher().idle_waiters() == 1
        })
        .await;
        let put_back = Instant::now();
        app.state.claims.put_back(&claim).await;
        let got = waiter.await.unwrap();
        let waited = put_back.elapsed();
        assert_eq!(got.unwrap().0, job["id"].as_str().unwrap());
        assert!(waited < Duration::from_secs(2), "woken by the backup poll, not the put-back: {waited:?}");
    }

    async fn a_daemon_that_hangs_up_mid_long_poll_is_not_handed_a_job(backend: Backend) {
        // One long-poll per credential: a second acquire is refused while the ghost's is held.
        let (app, owner) = spawn_queue_with(backend, |s| s.limits.long_polls_per_credential = 1).await;
        let app = Arc::new(app);
        let ghost = {
            let app = app.clone();
            tokio::spawn(async move { app.acquire("ghost", json!({}), 20).await })
        };
        app.until_daemons_listed(&owner, &["ghost"]).await;
        ghost.abort();
        let _ = ghost.await;
        // Once the server has let go of the ghost's long-poll, nothing of it can take a job.
        eventually(Duration::from_secs(10), "the server to end the ghost's long-poll", || async {
            let (status, _) = app.worker("/acquire", json!({"name": "probe", "wait_seconds": 0})).await;
            status != StatusCode::TOO_MANY_REQUESTS
        })
        .await;
        let job = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let id = job["id"].as_str().unwrap();
        assert_eq!(app.status_of(&owner, id).await, "pending", "the job went to a daemon that had hung up");
        let (got, _) = app.acquire("live", json!({}), 0).await.unwrap();
        assert_eq!(got, id);
    }

    async fn bad_worker_input_and_credentials_are_refused(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let member = app.member(&owner, "wm").await;
        let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        for (body, field) in [
            (json!({}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "x".repeat(65)}), "name"),
            (json!({"name": "d", "wait_seconds": -1}), "wait_seconds"),
            (json!({"name": "d", "wait_seconds": 31}), "wait_seconds"),
            (json!({"name": "d", "provisioners": ["ansible"]}), "provisioners"),
            (json!({"name": "d", "tags": {"k\u{0}": "v"}}), "tags"),
            (json!({"name": "d", "organization": "nope"}), "organization"),
        ] {
            let (status, err) = app.worker("/acquire", body.clone()).await;
            assert_error(status, &err, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&err), [field], "{body}");
        }
        let (status, err) = app.worker("/acquire", json!({"name": "d", "wait_seconds": 1.0e30})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        for header in [("Coder-Provisioner-Daemon-PSK", "wrong"), ("Coder-Provisioner-Daemon-Key", "wrong"), ("Coder-Session-Token", member.as_str()), ("X-Nothing", "x")] {
            let (status, err) = app.worker_with("/acquire", header, json!({"name": "d", "wait_seconds": 0})).await;
            assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN, "{header:?}: {status} {err}");
            assert!(err["message"].is_string());
        }
        assert_eq!(app.status_of(&owner, &id).await, "pending", "refused daemons got nothing");
        let (_, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        let (status, err) = app.worker(&format!("/jobs/{id}/fail"), json!({"lease_token": lease, "error": ""})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, err) = app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": "wrong"})).await;
        assert_error(status, &err, StatusCode::CONFLICT);
        let (status, err) = app.worker(&format!("/jobs/{id}/complete"), json!({})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, err) = app.worker(&format!("/jobs/{}/complete", uuid::Uuid::new_v4()), json!({"lease_token": lease})).await;
        assert_error(status, &err, StatusCode::NOT_FOUND);
        let (status, err) = app.worker("/jobs/not-a-uuid/complete", json!({"lease_token": lease})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, err) = app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": [{"level": "loud", "output": "x"}]})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&err), ["logs[0].level"]);
        assert_eq!(app.status_of(&owner, &id).await, "running", "nothing changed");
    }

    async fn provisioner_keys_fix_organization_and_tags(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let path = "/organizations/default/provisionerkeys";
        let (status, created) = app.post(path, Some(&owner), json!({"name": "gpu-pool", "tags": {"gpu": "yes"}})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let key = created["key"].as_str().unwrap().to_string();
        let (status, err) = app.post(path, Some(&owner), json!({"name": "gpu-pool"})).await;
        assert_error(status, &err, StatusCode::CONFLICT);
        for bad in [json!({}), json!({"name": "psk"}), json!({"name": "bad name"})] {
            let (status, err) = app.post(path, Some(&owner), bad).await;
            assert_error(status, &err, StatusCode::BAD_REQUEST);
        }
        let (_, keys) = app.get(path, Some(&owner)).await;
        assert_eq!(keys.as_array().unwrap().len(), 1);
        assert_eq!(keys[0]["name"], "gpu-pool");
        assert_eq!(keys[0]["tags"], json!({"gpu": "yes", "scope": "organization", "owner": ""}));
        assert!(keys[0].get("key").is_none() && !keys.to_string().contains(&key));

        let plain = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let gpu = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"gpu": "yes"}})).await;
        let with_key = ("Coder-Provisioner-Daemon-Key", key.as_str());
        let (status, err) = app.worker_with("/acquire", with_key, json!({"name": "k", "tags": {"gpu": "yes"}, "wait_seconds": 0})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, got) = app.worker_with("/acquire", with_key, json!({"name": "k", "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["job"]["job_id"], gpu["id"], "the key's tags decide: {plain}");

        // A key of organization A cannot touch jobs of organization B.
        let other = second_organization(&app).await;
        let (_, other_key) = app.post(&format!("/organizations/{other}/provisionerkeys"), Some(&owner), json!({"name": "other"})).await;
        let other_key = other_key["key"].as_str().unwrap().to_string();
        let lease = got["job"]["lease_token"].as_str().unwrap();
        let gpu_id = gpu["id"].as_str().unwrap();
        let (status, err) = app.worker_with(&format!("/jobs/{gpu_id}/complete"), ("Coder-Provisioner-Daemon-Key", &other_key), json!({"lease_token": lease})).await;
        assert_error(status, &err, StatusCode::NOT_FOUND);
        assert_eq!(app.status_of(&owner, gpu_id).await, "running");

        let (status, _) = app.request(reqwest::Method::DELETE, &format!("{path}/gpu-pool"), Some(&owner), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app.request(reqwest::Method::DELETE, &format!("{path}/gpu-pool"), Some(&owner), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.worker_with("/acquire", with_key, json!({"name": "k", "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a deleted key no longer works");
    }

    async fn the_daemon_list_shows_status_and_jobs(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let first = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("worker-a", json!({}), 0).await.unwrap();
        app.worker(&format!("/jobs/{first}/complete"), json!({"lease_token": lease})).await;
        let second = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        app.acquire("worker-a", json!({}), 0).await.unwrap();
        assert!(app.acquire("worker-b", json!({"os": "mac"}), 0).await.is_none());
        let (status, daemons) = app.get("/organizations/default/provisionerdaemons", Some(&owner)).await;
        assert_eq!(status, StatusCode::OK);
        let daemons = daemons.as_array().unwrap();
        assert_eq!(daemons.len(), 2, "re-acquiring under one name reuses the daemon: {daemons:?}");
        let a = daemons.iter().find(|d| d["name"] == "worker-a").unwrap();
        assert_eq!(a["status"], "busy");
        assert_eq!(a["current_job"]["id"], second.as_str());
        assert_eq!(a["current_job"]["status"], "running");
        assert_eq!(a["previous_job"]["id"], first.as_str());
        assert_eq!(a["previous_job"]["status"], "succeeded");
        assert_eq!(a["key_name"], "psk");
        assert_eq!(a["provisioners"], json!(["terraform"]));
        let b = daemons.iter().find(|d| d["name"] == "worker-b").unwrap();
        assert_eq!(b["status"], "idle");
        assert_eq!(b["tags"], json!({"os": "mac", "scope": "organization", "owner": ""}));
        assert!(b.get("current_job").is_none());

        // A daemon not seen for stale_after_secs is offline.
        use provq::entity::provisioner_daemon;
        use sea_orm::{EntityTrait, sea_query::Expr};
        provisioner_daemon::Entity::update_many()
            .col_expr(provisioner_daemon::Column::LastSeenAt, Expr::value(provq::domain::now() - chrono::Duration::seconds(91)))
            .exec(app.state.store.connection())
            .await
            .unwrap();
        let (_, daemons) = app.get("/organizations/default/provisionerdaemons", Some(&owner)).await;
        assert!(daemons.as_array().unwrap().iter().all(|d| d["status"] == "offline"), "{daemons}");
    }
}

/// A replica holds one LISTEN connection for every topic (wake-ups and entitlements alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_listens_on_one_connection() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let (app, _owner) = spawn_queue(Backend::Postgres).await;
    let listeners = || async {
        let row = app
            .state
            .store
            .connection()
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT COUNT(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    };
    eventually(Duration::from_secs(10), "the replica to listen", || async {
        listeners().await > 0
    })
    .await;
    let query: String = app
        .state
        .store
        .connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "query")
        .unwrap();
    assert_eq!(listeners().await, 1, "one LISTEN connection: {query}");
    for channel in ["provq_jobs", "provq_job_events", "provq_entitlements"] {
        assert!(
            query.contains(channel),
            "{channel} is not listened on: {query}"
        );
    }
    // A lost connection is replaced (after the first backoff step, 1 s), still only one.
    let listener_pid = || async {
        app.state
            .store
            .connection()
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            ))
            .await
            .unwrap()
            .map(|row| row.try_get::<i32>("", "pid").unwrap())
    };
    let cut = listener_pid().await.unwrap();
    app.state
        .store
        .connection()
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_terminate_backend({cut})"),
        ))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the notifier to listen again",
        || async { listener_pid().await.is_some_and(|pid| pid != cut) },
    )
    .await;
    assert_eq!(listeners().await, 1);
}

/// Two `provq serve` replicas on one PostgreSQL: daemons wait on replica A, jobs arrive through
/// replica B, and LISTEN/NOTIFY wakes them well before the backup poll would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_queue_and_wake_each_other() {
    let (a, owner) = spawn_queue(Backend::Postgres).await;
    let mut settings = test_settings(&a.database_url);
    settings.provisioner.daemon_psk = PSK.into();
    let b = provq::startup::Application::build(settings).await.unwrap();
    let b_url = format!("http://{}", b.local_addr());
    let b_shutdown = provq::shutdown::Shutdown::new();
    tokio::spawn(b.run(b_shutdown.clone().cancelled_owned()));
    let a = Arc::new(a);
    let total = 40;
    let seen = Arc::new(Mutex::new(Vec::<(String, Duration)>::new()));
    let mut daemons = Vec::new();
    for d in 0..4 {
        let (a, seen) = (a.clone(), seen.clone());
        daemons.push(tokio::spawn(async move {
            while seen.lock().await.len() < total {
                let started = Instant::now();
                if let Some((id, lease)) = a.acquire(&format!("a-{d}"), json!({}), 2).await {
                    let waited = started.elapsed();
                    a.worker(
                        &format!("/jobs/{id}/complete"),
                        json!({"lease_token": lease}),
                    )
                    .await;
                    seen.lock().await.push((id, waited));
                }
            }
        }));
    }
    let names: Vec<String> = (0..4).map(|d| format!("a-{d}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    a.until_daemons_listed(&owner, &names).await;
    let http = http_client();
    let mut enqueued = HashSet::new();
    for _ in 0..total {
        let job: Value = http
            .post(format!(
                "{b_url}/api/v2/organizations/default/provisionerjobs"
            ))
            .header("Coder-Session-Token", &owner)
            .json(&json!({"type": "workspace_build"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        enqueued.insert(job["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for d in daemons {
        tokio::time::timeout(Duration::from_secs(60), d)
            .await
            .expect("drained")
            .unwrap();
    }
    b_shutdown.cancel();
    let seen = seen.lock().await;
    let ids: HashSet<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen.len(), total, "a job was handed out twice");
    assert_eq!(ids, enqueued);
    // Daemons wait with a 2 s long-poll and the backup poll is 5 s: any acquire that took the
    // whole poll would show as ≥ 2 s. Wake-ups arrive in milliseconds.
    let slow = seen
        .iter()
        .filter(|(_, w)| *w >= Duration::from_millis(1900))
        .count();
    assert!(
        slow < total / 4,
        "{slow} of {total} acquires were not woken by NOTIFY"
    );
}

/// SQLite batches claims in a task of its own; a caller that goes away while its batch runs
/// must not leave a job started that no daemon received: it goes back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_caller_went_away_goes_back_to_the_queue_on_sqlite() {
    use provq::domain::job::Provisioner;
    use provq::domain::tags::Tags;
    use provq::store::daemons::DaemonRegistration;
    use provq::store::jobs::Runnable;

    let (app, owner) = spawn_queue(Backend::Sqlite).await;
    for _ in 0..40 {
        app.enqueue(&owner, json!({"type": "workspace_build"}))
            .await;
    }
    let store = app.state.store.clone();
    let organization_id = store.default_organization_id().await.unwrap();
    let daemon = store
        .register_daemon(DaemonRegistration {
            organization_id,
            name: "impatient".into(),
            key_id: None,
            tags: Tags::untagged(),
            provisioners: vec![Provisioner::Terraform],
            version: String::new(),
        })
        .await
        .unwrap();
    let runnable = Runnable {
        organization_id,
        provisioners: vec![Provisioner::Terraform],
        tags: Tags::untagged(),
    };
    let mut delivered = HashSet::new();
    for i in 0..120u64 {
        let (claims, runnable) = (app.state.claims.clone(), runnable.clone());
        let claim = tokio::spawn(async move { claims.claim_job(daemon.id, &runnable).await });
        // Give up after 0–1.5 ms: before, during or after the batch's statement.
        tokio::time::sleep(Duration::from_micros((i % 4) * 500)).await;
        claim.abort();
        if let Ok(Ok(Some(c))) = claim.await {
            delivered.insert(c.job.id.to_string());
        }
    }
    // A claim that is waited for runs after every batch before it: from then on no abandoned
    // claim can start a job, and releases (right after their batch) only take jobs back.
    if let Some(c) = app
        .state
        .claims
        .claim_job(daemon.id, &runnable)
        .await
        .unwrap()
    {
        delivered.insert(c.job.id.to_string());
    }
    let running = || async {
        let (status, running) = app
            .get(
                "/organizations/default/provisionerjobs?status=running&limit=100",
                Some(&owner),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        running
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect::<HashSet<String>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while running().await != delivered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = running().await;
    assert_eq!(
        running, delivered,
        "running jobs are exactly the delivered claims"
    );
}
