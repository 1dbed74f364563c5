//! The admin job list: filters, validation, tag-aware queue positions, available workers, and
//! the flood runbook with prebuilds paused.

use provq::domain::job::Provisioner;
use provq::domain::tags::Tags;
use provq::store::daemons::DaemonRegistration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;

const LIST: &str = "/organizations/default/provisionerjobs";

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_string()
}

/// Registers an online daemon with `tags` straight in the registry (no job is claimed).
async fn daemon(app: &TestApp, name: &str, tags: &[(&str, &str)]) -> String {
    let org = app.state.store.default_organization().await.unwrap().id;
    let tags = Tags::normalize(
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        None,
    )
    .unwrap();
    let d = app
        .state
        .store
        .register_daemon(DaemonRegistration {
            organization_id: org,
            name: name.into(),
            key_id: None,
            tags,
            provisioners: vec![Provisioner::Terraform],
            version: "test".into(),
        })
        .await
        .unwrap();
    d.id.to_string()
}

async fn take_offline(app: &TestApp, daemon_id: &str) {
    use provq::entity::provisioner_daemon;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    provisioner_daemon::Entity::update_many()
        .col_expr(
            provisioner_daemon::Column::LastSeenAt,
            Expr::value(provq::domain::now() - chrono::Duration::hours(1)),
        )
        .filter(provisioner_daemon::Column::Id.eq(uuid::Uuid::parse_str(daemon_id).unwrap()))
        .exec(app.state.store.connection())
        .await
        .unwrap();
}

async fn list(app: &TestApp, token: &str, query: &str) -> Value {
    let (status, body) = app.get(&format!("{LIST}?{query}"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

fn queue(list: &Value, job: &str) -> (i64, i64) {
    let j = list
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job)
        .unwrap();
    (
        j["queue_position"].as_i64().unwrap(),
        j["queue_size"].as_i64().unwrap(),
    )
}

backend_tests! {
    async fn each_filter_excludes_what_it_should(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let member = app.member(&owner, "ann").await;
        let linux = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux"}})).await;
        let mac = app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "mac"}})).await;
        let prebuild = app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds", "tags": {"os": "linux"}})).await;
        let by_member = app.enqueue(&member, json!({"type": "template_version_import"})).await;
        let (_, lease) = app.acquire("mac-runner", json!({"os": "mac"}), 0).await.unwrap();
        app.worker(&format!("/jobs/{}/complete", id(&mac)), json!({"lease_token": lease})).await;

        let all = list(&app, &owner, "").await;
        assert_eq!(ids(&all), [id(&by_member), id(&prebuild), id(&mac), id(&linux)], "newest first");
        assert_eq!(ids(&list(&app, &owner, "limit=2").await), [id(&by_member), id(&prebuild)]);
        assert_eq!(ids(&list(&app, &owner, &format!("ids={},{}", id(&linux), id(&mac))).await), [id(&mac), id(&linux)]);
        assert_eq!(ids(&list(&app, &owner, &format!("ids={}&ids={}", id(&linux), id(&mac))).await), [id(&mac), id(&linux)]);
        assert_eq!(ids(&list(&app, &owner, "status=succeeded").await), [id(&mac)]);
        assert_eq!(ids(&list(&app, &owner, "status=pending,succeeded").await).len(), 4);
        assert!(ids(&list(&app, &owner, "status=unknown").await).is_empty());
        let linux_tag = urlencode(r#"{"os":"linux"}"#);
        assert_eq!(ids(&list(&app, &owner, &format!("tags={linux_tag}")).await), [id(&prebuild), id(&linux)]);
        assert_eq!(ids(&list(&app, &owner, &format!("tags={}", urlencode("{}"))).await).len(), 4);
        let untagged = urlencode(r#"{"scope":"organization","owner":""}"#);
        assert_eq!(ids(&list(&app, &owner, &format!("tags={untagged}")).await), [id(&by_member)], "the untagged filter matches untagged jobs only");
        assert_eq!(ids(&list(&app, &owner, "initiator=prebuilds").await), [id(&prebuild)]);
        assert_eq!(ids(&list(&app, &owner, "initiator=ann").await), [id(&by_member)]);
        let (_, ann) = app.get("/users/ann", Some(&owner)).await;
        assert_eq!(ids(&list(&app, &owner, &format!("initiator={}", ann["id"].as_str().unwrap())).await), [id(&by_member)]);
        assert_eq!(ids(&list(&app, &owner, &format!("status=pending&initiator=owner&tags={linux_tag}")).await), [id(&linux)]);

        let (status, body) = app.get(LIST, Some(&member)).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }

    async fn every_bad_parameter_is_named_in_one_400(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        for (query, fields) in [
            ("limit=0", vec!["limit"]),
            ("limit=10001", vec!["limit"]),
            ("limit=ten", vec!["limit"]),
            ("ids=not-a-uuid", vec!["ids"]),
            ("status=done", vec!["status"]),
            ("tags=not-json", vec!["tags"]),
            ("tags=%5B%22a%22%5D", vec!["tags"]),
            ("tags=%7B%22a%22%3A1%7D", vec!["tags"]),
            ("initiator=nobody", vec!["initiator"]),
            ("colour=red", vec!["colour"]),
            ("limit=0&ids=x&status=done&tags=x&initiator=nobody", vec!["limit", "ids", "status", "tags", "initiator"]),
            // Unknown parameters are refused before any value is looked at (for every route
            // alike), so they come in a 400 of their own.
            ("limit=0&colour=red&shade=dark", vec!["colour", "shade"]),
            ("ids=", vec!["ids"]),
            ("status=,", vec!["status"]),
        ] {
            let (status, body) = app.get(&format!("{LIST}?{query}"), Some(&owner)).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&body), fields, "{query}: {body}");
        }
        let (status, _) = app.get(&format!("{LIST}?coder_session_token={owner}&limit=1"), None).await;
        assert_eq!(status, StatusCode::OK, "the token parameter is not an unknown parameter");
    }

    async fn queue_positions_are_fifo_for_one_daemon_with_humans_first(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let d = daemon(&app, "solo", &[]).await;
        let p1 = id(&app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await);
        let h1 = id(&app.enqueue(&owner, json!({"type": "workspace_build"})).await);
        let h2 = id(&app.enqueue(&owner, json!({"type": "workspace_build"})).await);
        let all = list(&app, &owner, "").await;
        assert_eq!(queue(&all, &h1), (1, 3));
        assert_eq!(queue(&all, &h2), (2, 3));
        assert_eq!(queue(&all, &p1), (3, 3), "the older prebuild job waits behind later human jobs");
        let single = app.job(&owner, &p1).await;
        assert_eq!((single["queue_position"].as_i64().unwrap(), single["queue_size"].as_i64().unwrap()), (3, 3));
        assert_eq!(single["available_workers"], json!([d]));

        // Positions move up as jobs leave the queue.
        app.post(&format!("{LIST}/{h1}/cancel"), Some(&owner), json!({})).await;
        let all = list(&app, &owner, "").await;
        assert_eq!(queue(&all, &h2), (1, 2));
        assert_eq!(queue(&all, &p1), (2, 2));
        assert_eq!(queue(&all, &h1), (0, 0), "not pending: 0/0");
        assert!(all.as_array().unwrap().iter().find(|j| j["id"] == h1.as_str()).unwrap().get("available_workers").is_none());
        let (got, _) = app.acquire("solo", json!({}), 0).await.unwrap();
        assert_eq!(got, h2);
        let all = list(&app, &owner, "").await;
        assert_eq!(queue(&all, &p1), (1, 1));
        assert_eq!(all.as_array().unwrap().iter().find(|j| j["id"] == h2.as_str()).unwrap()["worker_name"], "solo");
    }

    async fn the_best_position_and_the_largest_queue_win_across_daemons(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let broad = daemon(&app, "broad", &[("os", "linux"), ("gpu", "yes")]).await;
        let narrow = daemon(&app, "narrow", &[("os", "linux")]).await;
        let gpu1 = id(&app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux", "gpu": "yes"}})).await);
        let gpu2 = id(&app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux", "gpu": "yes"}})).await);
        let plain = id(&app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "linux"}})).await);
        let all = list(&app, &owner, "").await;
        // broad runs all three (gpu1, gpu2, plain); narrow runs only plain.
        assert_eq!(queue(&all, &gpu1), (1, 3));
        assert_eq!(queue(&all, &gpu2), (2, 3));
        assert_eq!(queue(&all, &plain), (1, 3), "best rank (narrow: 1st) and largest queue (broad: 3)");
        let plain_job = all.as_array().unwrap().iter().find(|j| j["id"] == plain.as_str()).unwrap();
        let mut workers: Vec<String> = plain_job["available_workers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        workers.sort();
        let mut expected = vec![broad.clone(), narrow.clone()];
        expected.sort();
        assert_eq!(workers, expected);

        // A job only an offline daemon can run: 0/0, but the daemon is still listed.
        let mac = daemon(&app, "mac", &[("os", "mac")]).await;
        take_offline(&app, &mac).await;
        let stuck = id(&app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "mac"}})).await);
        let all = list(&app, &owner, "").await;
        assert_eq!(queue(&all, &stuck), (0, 0));
        let stuck_job = all.as_array().unwrap().iter().find(|j| j["id"] == stuck.as_str()).unwrap();
        assert_eq!(stuck_job["available_workers"], json!([mac]));
        // Nobody at all: 0/0 and no workers.
        let nobody = id(&app.enqueue(&owner, json!({"type": "workspace_build", "tags": {"os": "plan9"}})).await);
        let all = list(&app, &owner, "").await;
        assert_eq!(queue(&all, &nobody), (0, 0));
        assert!(all.as_array().unwrap().iter().find(|j| j["id"] == nobody.as_str()).unwrap().get("available_workers").is_none());
    }

    async fn the_flood_runbook_works_through_the_api(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        daemon(&app, "runner", &[]).await;
        for _ in 0..300 {
            app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await;
        }
        let mut humans = Vec::new();
        for _ in 0..5 {
            humans.push(id(&app.enqueue(&owner, json!({"type": "workspace_build"})).await));
        }
        let (status, settings) = app.request(reqwest::Method::PUT, "/prebuilds/settings", Some(&owner), Some(json!({"reconciliation_paused": true}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(settings, json!({"reconciliation_paused": true}));
        let (_, settings) = app.get("/prebuilds/settings", Some(&owner)).await;
        assert_eq!(settings["reconciliation_paused"], true);
        let (status, body) = app.post(LIST, Some(&owner), json!({"type": "workspace_build", "initiator": "prebuilds"})).await;
        assert_error(status, &body, StatusCode::CONFLICT);

        let flood = list(&app, &owner, "status=pending&initiator=prebuilds&limit=1000").await;
        assert_eq!(flood.as_array().unwrap().len(), 300);
        assert!(flood.as_array().unwrap().iter().all(|j| j["queue_position"].as_i64().unwrap() > 5));
        let (status, canceled) = app.post(&format!("{LIST}/cancel"), Some(&owner), json!({"status": ["pending"], "initiator": "prebuilds"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(canceled["count"], 300);
        let pending = list(&app, &owner, "status=pending").await;
        let mut expected = humans.clone();
        expected.reverse();
        assert_eq!(ids(&pending), expected, "the human jobs are left");
        for (i, h) in humans.iter().enumerate() {
            assert_eq!(queue(&pending, h), (i as i64 + 1, 5), "humans keep their order");
        }
        let (next, _) = app.acquire("runner", json!({}), 0).await.unwrap();
        assert_eq!(next, humans[0]);

        app.request(reqwest::Method::PUT, "/prebuilds/settings", Some(&owner), Some(json!({"reconciliation_paused": false}))).await;
        app.enqueue(&owner, json!({"type": "workspace_build", "initiator": "prebuilds"})).await;

        let member = app.member(&owner, "pat").await;
        let (status, body) = app.get("/prebuilds/settings", Some(&member)).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        let (status, body) = app.request(reqwest::Method::PUT, "/prebuilds/settings", Some(&owner), Some(json!({}))).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .unwrap()
        .trim_start_matches("v=")
        .to_string()
}
