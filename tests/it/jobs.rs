//! Job lifecycle over HTTP: enqueue, the JSON shape, every status transition and every refused
//! one, cancellation and bad input.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;

fn import() -> Value {
    json!({"type": "template_version_import"})
}

backend_tests! {
    async fn an_enqueued_job_has_coders_json_shape(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let (_, me) = app.get("/users/me", Some(&owner)).await;
        let template = uuid::Uuid::new_v4();
        let job = app.enqueue(&owner, json!({
            "type": "workspace_build",
            "tags": {"os": "linux"},
            "input": {"workspace_build_id": template},
            "metadata": {"template_name": "docker", "template_version_name": "v1", "template_display_name": "Docker", "template_icon": "/icon.svg", "template_id": template, "workspace_name": "dev"}
        })).await;
        let obj = job.as_object().unwrap();
        for omitted in ["started_at", "completed_at", "canceled_at", "error", "error_code", "worker_id", "available_workers"] {
            assert!(!obj.contains_key(omitted), "{omitted} must be omitted: {job}");
        }
        uuid::Uuid::parse_str(job["id"].as_str().unwrap()).unwrap();
        assert_eq!(job["status"], "pending");
        assert_eq!(job["type"], "workspace_build");
        assert_eq!(job["worker_name"], "");
        assert_eq!(job["tags"], json!({"os": "linux", "scope": "organization", "owner": ""}));
        assert_eq!(job["initiator_id"], me["id"]);
        assert_eq!(job["organization_id"], me["organization_ids"][0]);
        assert_eq!(job["input"], json!({"workspace_build_id": template}));
        assert_eq!(job["metadata"]["template_name"], "docker");
        assert_eq!(job["metadata"]["workspace_name"], "dev");
        assert!(job["metadata"].get("workspace_id").is_none());
        assert_eq!(job["file_id"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(job["logs_overflowed"], false);
        assert_eq!(job["queue_position"], 0);
        assert_eq!(job["queue_size"], 0);
        assert!(job["created_at"].is_string());
        assert_eq!(app.job(&owner, job["id"].as_str().unwrap()).await, job);

        // Defaults: no tags → untagged; empty metadata strings are present.
        let plain = app.enqueue(&owner, import()).await;
        assert_eq!(plain["tags"], json!({"scope": "organization", "owner": ""}));
        assert_eq!(plain["metadata"]["template_name"], "");
        assert_eq!(plain["input"], json!({}));
    }

    async fn a_job_succeeds_through_acquire_update_and_complete(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, import()).await["id"].as_str().unwrap().to_string();
        let (status, body) = app.worker("/acquire", json!({"name": "d1", "wait_seconds": 0})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["job"]["job_id"], id.as_str());
        assert_eq!(body["job"]["type"], "template_version_import");
        assert_eq!(body["job"]["provisioner"], "terraform");
        let lease = body["job"]["lease_token"].as_str().unwrap().to_string();
        let job = app.job(&owner, &id).await;
        assert_eq!(job["status"], "running");
        assert_eq!(job["worker_id"], body["daemon_id"]);
        assert_eq!(job["worker_name"], "d1");
        assert!(job["started_at"].is_string());

        let (status, beat) = app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": [{"level": "info", "stage": "Planning", "output": "hello"}]})).await;
        assert_eq!(status, StatusCode::OK, "{beat}");
        assert_eq!(beat, json!({"canceled": false, "logs_overflowed": false}));
        let (status, _) = app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": lease})).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let job = app.job(&owner, &id).await;
        assert_eq!(job["status"], "succeeded");
        assert!(job["completed_at"].is_string());

        // Refused afterwards: the lease no longer holds anything.
        for path in ["update", "complete"] {
            let (status, body) = app.worker(&format!("/jobs/{id}/{path}"), json!({"lease_token": lease})).await;
            assert_error(status, &body, StatusCode::CONFLICT);
        }
        let (status, body) = app.worker(&format!("/jobs/{id}/fail"), json!({"lease_token": lease, "error": "late"})).await;
        assert_error(status, &body, StatusCode::CONFLICT);
        assert_eq!(app.status_of(&owner, &id).await, "succeeded");
        let (status, body) = app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel"), Some(&owner), json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "Job has already completed!");
    }

    async fn a_failed_job_keeps_its_error_and_code(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, import()).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d1", json!({}), 0).await.unwrap();
        let (status, body) = app.worker(&format!("/jobs/{id}/fail"), json!({"lease_token": lease, "error": "terraform exited 1", "error_code": "REQUIRED_TEMPLATE_VARIABLES"})).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let job = app.job(&owner, &id).await;
        assert_eq!(job["status"], "failed");
        assert_eq!(job["error"], "terraform exited 1");
        assert_eq!(job["error_code"], "REQUIRED_TEMPLATE_VARIABLES");
        let (status, _) = app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": lease})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(app.status_of(&owner, &id).await, "failed");
    }

    async fn canceling_a_pending_job_ends_it_and_it_is_never_handed_out(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, import()).await["id"].as_str().unwrap().to_string();
        let (status, body) = app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel"), Some(&owner), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["message"], "Job has been marked as canceled...");
        let job = app.job(&owner, &id).await;
        assert_eq!(job["status"], "canceled");
        assert!(job["canceled_at"].is_string() && job["completed_at"].is_string());
        assert!(app.acquire("d1", json!({}), 0).await.is_none());
        let (status, body) = app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel"), Some(&owner), json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "Job has already been marked as canceled!");
    }

    async fn canceling_a_running_job_tells_its_daemon_which_then_finishes_it(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        for finish in ["complete", "fail"] {
            let id = app.enqueue(&owner, import()).await["id"].as_str().unwrap().to_string();
            let (_, lease) = app.acquire("d1", json!({}), 0).await.unwrap();
            let (status, body) = app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel?expect_status=pending"), Some(&owner), json!({})).await;
            assert_error(status, &body, StatusCode::PRECONDITION_FAILED);
            assert_eq!(app.status_of(&owner, &id).await, "running", "a refused cancel changes nothing");
            let (status, _) = app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel?expect_status=running"), Some(&owner), json!({})).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(app.status_of(&owner, &id).await, "canceling");
            let (status, body) = app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel"), Some(&owner), json!({})).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST);
            assert_eq!(body["message"], "Job has already been marked as canceled!");
            let (_, beat) = app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease})).await;
            assert_eq!(beat["canceled"], true);
            let body = if finish == "fail" { json!({"lease_token": lease, "error": "canceled by user"}) } else { json!({"lease_token": lease}) };
            let (status, _) = app.worker(&format!("/jobs/{id}/{finish}"), body).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            let expected = if finish == "fail" { "failed" } else { "canceled" };
            assert_eq!(app.status_of(&owner, &id).await, expected);
        }
    }

    async fn bulk_cancel_cancels_every_pending_or_running_match(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let mut prebuild = Vec::new();
        for _ in 0..3 {
            prebuild.push(app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await["id"].as_str().unwrap().to_string());
        }
        let human = app.enqueue(&owner, import()).await["id"].as_str().unwrap().to_string();
        let done = app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds", "tags": {"x": "1"}})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d1", json!({"x": "1"}), 0).await.unwrap();
        app.worker(&format!("/jobs/{done}/complete"), json!({"lease_token": lease})).await;

        let (status, body) = app.post("/organizations/default/provisionerjobs/cancel", Some(&owner), json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        let (status, body) = app.post("/organizations/default/provisionerjobs/cancel", Some(&owner), json!({"initiator": "prebuilds", "status": ["pending"]})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["count"], 3);
        let mut canceled: Vec<String> = body["canceled"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        canceled.sort();
        prebuild.sort();
        assert_eq!(canceled, prebuild);
        for id in &prebuild {
            assert_eq!(app.status_of(&owner, id).await, "canceled");
        }
        assert_eq!(app.status_of(&owner, &human).await, "pending");
        assert_eq!(app.status_of(&owner, &done).await, "succeeded");
        let (status, body) = app.post("/organizations/default/provisionerjobs/cancel", Some(&owner), json!({"initiator": "nobody"})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["initiator"]);
        let (_, body) = app.post("/organizations/default/provisionerjobs/cancel", Some(&owner), json!({"ids": [human]})).await;
        assert_eq!(body["count"], 1);
    }

    async fn bad_enqueue_input_is_a_4xx_and_creates_nothing(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let path = "/organizations/default/provisionerjobs";
        let cases = [
            (json!({}), "type"),
            (json!({"type": "build"}), "type"),
            (json!({"type": "workspace_build", "provisioner": "ansible"}), "provisioner"),
            (json!({"type": "workspace_build", "tags": {"a\u{0}": "b"}}), "tags"),
            (json!({"type": "workspace_build", "tags": {"a": "b\u{0}"}}), "tags"),
            (json!({"type": "workspace_build", "initiator": "nobody"}), "initiator"),
        ];
        for (body, field) in cases {
            let (status, err) = app.post(path, Some(&owner), body.clone()).await;
            assert_error(status, &err, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&err), [field], "{body}");
        }
        let (status, err) = app.post(path, Some(&owner), json!({"type": "workspace_build", "file_id": "not-a-uuid"})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, err) = app.post(path, Some(&owner), json!({"type": "workspace_build", "tags": {"a": 1}})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, err) = app.post(path, None, import()).await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED);
        let (status, err) = app.post("/organizations/nope/provisionerjobs", Some(&owner), import()).await;
        assert_error(status, &err, StatusCode::NOT_FOUND);
        let (status, err) = app.get("/organizations/default/provisionerjobs/not-a-uuid", Some(&owner)).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, err) = app.get(&format!("/organizations/default/provisionerjobs/{}", uuid::Uuid::new_v4()), Some(&owner)).await;
        assert_error(status, &err, StatusCode::NOT_FOUND);
        let (status, err) = app.post(&format!("/organizations/default/provisionerjobs/{}/cancel?expect_status=done", uuid::Uuid::new_v4()), Some(&owner), json!({})).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        // Nothing was enqueued by any of the above.
        assert!(app.acquire("d1", json!({}), 0).await.is_none());
    }

    async fn members_enqueue_in_their_organization_but_cannot_administer(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let member = app.member(&owner, "mia").await;
        let job = app.enqueue(&member, import()).await;
        let id = job["id"].as_str().unwrap();
        let (_, me) = app.get("/users/me", Some(&member)).await;
        assert_eq!(job["initiator_id"], me["id"]);
        for path in [format!("/organizations/default/provisionerjobs/{id}"), "/organizations/default/provisionerdaemons".into(), "/organizations/default/provisionerkeys".into()] {
            let (status, body) = app.get(&path, Some(&member)).await;
            assert_error(status, &body, StatusCode::NOT_FOUND);
        }
        let (status, body) = app.post(&format!("/organizations/default/provisionerjobs/{id}/cancel"), Some(&member), json!({})).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (status, body) = app.post("/organizations/default/provisionerjobs", Some(&member), json!({"type": "workspace_build", "initiator": "prebuilds"})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        assert_eq!(app.status_of(&owner, id).await, "pending");
    }
}
