//! Process-level contract: health, build info, OpenAPI, routing errors, the schema and seed.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use reqwest::StatusCode;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::*;

backend_tests! {
    async fn healthz_answers_ok_without_auth(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let resp = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), "OK");
    }

    async fn the_deployment_id_is_made_once_per_database(backend: Backend) {
        let mut app = TestApp::spawn(backend).await;
        let (status, info) = app.get("/buildinfo", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
        let id = info["deployment_id"].as_str().unwrap().to_string();
        uuid::Uuid::parse_str(&id).unwrap();
        app.stop().await;

        // A restart on the same database keeps it (and migrating again is a no-op).
        let settings = test_settings(&app.database_url);
        let again = provq::startup::Application::build(settings).await.unwrap();
        assert_eq!(again.state().store.deployment_id().await.unwrap().to_string(), id);
    }

    async fn unknown_api_routes_answer_route_not_found(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, body) = app.get("/no/such/route", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"message": "Route not found."}));
    }

    async fn the_openapi_document_and_swagger_are_served(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, spec) = app.get("/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
        for path in ["/users/first", "/users/login", "/users", "/users/{user}", "/buildinfo"] {
            assert!(spec["paths"][path].is_object(), "missing {path}");
        }
        let resp = app.http.get(format!("{}/swagger", app.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.text().await.unwrap().contains("swagger"));
    }

    async fn concurrent_requests_never_see_a_locked_database(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let owner = app.owner().await;
        let creates = (0..25).map(|i| {
            app.post("/users", Some(&owner), json!({"email": format!("c{i}@example.com"), "username": format!("c{i}"), "password": "member-pass"}))
        });
        let reads = (0..25).map(|_| app.post("/users/login", None, json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD})));
        let (created, logged_in) = tokio::join!(
            futures_util::future::join_all(creates),
            futures_util::future::join_all(reads)
        );
        assert!(created.iter().all(|(s, _)| *s == StatusCode::CREATED), "{created:?}");
        assert!(logged_in.iter().all(|(s, _)| *s == StatusCode::CREATED), "{logged_in:?}");
    }

    async fn migrations_can_be_reverted_and_reapplied(backend: Backend) {
        let mut app = TestApp::spawn(backend).await;
        app.stop().await;
        let store = provq::store::Store::connect(&test_settings(&app.database_url)).await.unwrap();
        let db = store.connection();
        let all = Migrator::migrations().len();
        assert_eq!(Migrator::get_applied_migrations(db).await.unwrap().len(), all);
        Migrator::down(db, None).await.unwrap();
        assert_eq!(Migrator::get_pending_migrations(db).await.unwrap().len(), all);
        Migrator::up(db, None).await.unwrap();
        assert!(Migrator::get_pending_migrations(db).await.unwrap().is_empty());
        let org = store.default_organization().await.unwrap();
        assert_eq!(org.name, "first-organization");
        assert_eq!(org.display_name, "First Organization");
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_a_busy_timeout() {
    use sea_orm::{ConnectionTrait, Statement};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let db = app.state.store.connection();
    let row = |sql: &str| {
        let stmt = Statement::from_string(db.get_database_backend(), sql);
        async move { db.query_one_raw(stmt).await.unwrap().unwrap() }
    };
    let mode: String = row("PRAGMA journal_mode")
        .await
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(mode, "wal");
    let timeout: i64 = row("PRAGMA busy_timeout")
        .await
        .try_get_by_index(0)
        .unwrap();
    assert!(timeout >= 5000, "{timeout}");
    let _ = Duration::from_millis(0);
}

/// The served OpenAPI document is committed, so a contract change shows up in review. Set
/// `UPDATE_SNAPSHOTS=1` to accept a deliberate change.
#[test]
fn the_openapi_document_matches_its_snapshot() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    let current = provq::api::openapi_document();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some()
        || !path.exists() && std::env::var_os("CI").is_none()
    {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed =
        std::fs::read_to_string(&path).expect("tests/snapshots/openapi.json is committed");
    assert!(
        committed.trim() == current.trim(),
        "the OpenAPI document changed; review it and run with UPDATE_SNAPSHOTS=1 to accept"
    );
}

// The served document passes a real validator (`openapi-spec-validator` from PyPI, which
// `.ci/run` installs). Without it on PATH the test says so and passes, except under CI.
backend_tests! {
    async fn the_served_openapi_document_passes_openapi_spec_validator(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let text = app.http.get(format!("{}/api/v2/openapi.json", app.base)).send().await.unwrap().text().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, &text).unwrap();
        let run = std::process::Command::new("openapi-spec-validator").arg(&file).output();
        let out = match run {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
                eprintln!("openapi-spec-validator is not installed (pip install openapi-spec-validator); not validated");
                return;
            }
            Err(e) => panic!("cannot run openapi-spec-validator: {e}"),
        };
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the served OpenAPI document is invalid:\n{report}");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        for scheme in ["CoderSessionToken", "CoderSessionTokenCookie", "CoderSessionTokenQuery", "ProvisionerDaemonKey", "ProvisionerDaemonPSK"] {
            assert_eq!(doc["components"]["securitySchemes"][scheme]["type"], "apiKey", "{scheme}");
        }
    }
}
