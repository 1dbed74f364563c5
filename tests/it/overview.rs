//! `GET /organizations/{organization}/queue`: the queue at a glance behind `provq status` and the
//! console's overview.

use reqwest::StatusCode;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::*;

const QUEUE: &str = "/organizations/default/queue";

backend_tests! {
    async fn queue_overview_counts_jobs_daemons_and_unmatched_pending_jobs(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;

        let (status, empty) = app.get(QUEUE, Some(&owner)).await;
        assert_eq!(status, StatusCode::OK, "{empty}");
        assert_eq!(empty["organization"]["name"], "first-organization");
        assert!(empty["organization"]["id"].is_string(), "{empty}");
        assert_eq!(
            empty["jobs"],
            json!({"pending": 0, "running": 0, "succeeded": 0, "canceling": 0, "canceled": 0, "failed": 0})
        );
        assert_eq!(empty["oldest_pending_age_seconds"], serde_json::Value::Null, "{empty}");
        assert_eq!(empty["pending_unmatched"], 0);
        assert_eq!(empty["daemons"], json!({"idle": 0, "busy": 0, "offline": 0}));
        assert_eq!(empty["prebuilds_paused"], false);

        // One job an untagged daemon takes, one it could take, one only a `k=v` daemon runs,
        // and one that is canceled while pending.
        for _ in 0..2 {
            app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        }
        app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"k": "v"}})).await;
        let doomed = app.enqueue(&owner, json!({"type": "workspace_build"})).await;
        let (status, body) = app
            .post(
                &format!("/organizations/default/provisionerjobs/{}/cancel", doomed["id"].as_str().unwrap()),
                Some(&owner),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(app.acquire("runner-1", json!({}), 0).await.is_some());
        app.request(
            reqwest::Method::PUT,
            "/prebuilds/settings",
            Some(&owner),
            Some(json!({"reconciliation_paused": true})),
        )
        .await;

        let (status, o) = app.get(QUEUE, Some(&owner)).await;
        assert_eq!(status, StatusCode::OK, "{o}");
        assert_eq!(
            o["jobs"],
            json!({"pending": 2, "running": 1, "succeeded": 0, "canceling": 0, "canceled": 1, "failed": 0}),
            "{o}"
        );
        assert_eq!(o["pending_unmatched"], 1, "only the k=v job lacks a daemon: {o}");
        assert!(o["oldest_pending_age_seconds"].as_i64().is_some_and(|s| (0..60).contains(&s)), "{o}");
        assert_eq!(o["enqueued_last_5m"], 4, "{o}");
        assert_eq!(o["finished_last_5m"], 1, "{o}");
        assert_eq!(o["daemons"], json!({"idle": 0, "busy": 1, "offline": 0}), "{o}");
        assert_eq!(o["prebuilds_paused"], true);

        // Members of the organization read it too; others see nothing, as for unknown orgs.
        let member = app.member(&owner, "alice").await;
        let (status, body) = app.get(QUEUE, Some(&member)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = app.get("/organizations/nosuchorg/queue", Some(&owner)).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (status, body) = app.get(QUEUE, None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
    }
}
