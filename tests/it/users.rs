//! Users and authentication (contract §2).

use chrono::Duration;
use provq::domain::secrets::hash_secret;
use provq::entity::api_key;
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::*;

backend_tests! {
    async fn first_user_status_is_404_until_created_then_200(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, body) = app.get("/users/first", None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        app.owner().await;
        let (status, _) = app.get("/users/first", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn the_first_user_is_an_owner_and_can_be_created_only_once(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, body) = app
            .post("/users/first", None, json!({"email": "A@Example.com", "username": "admin", "password": "secret-1", "name": "Ada Admin"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let user_id = body["user_id"].as_str().unwrap().to_string();
        let org_id = body["organization_id"].as_str().unwrap().to_string();
        assert_eq!(body.as_object().unwrap().len(), 2, "only user_id and organization_id: {body}");

        let token = app.login("a@example.com", "secret-1").await;
        let (status, me) = app.get("/users/me", Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["id"], user_id.as_str());
        assert_eq!(me["username"], "admin");
        assert_eq!(me["email"], "a@example.com");
        assert_eq!(me["name"], "Ada Admin");
        assert_eq!(me["status"], "active");
        assert_eq!(me["roles"], json!([{"name": "owner", "display_name": "Owner"}]));
        assert_eq!(me["organization_ids"], json!([org_id]));
        assert!(me["created_at"].is_string());

        let (status, body) = app
            .post("/users/first", None, json!({"email": "b@example.com", "username": "second", "password": "secret-2"}))
            .await;
        assert_error(status, &body, StatusCode::CONFLICT);
        let (status, _) = app.post("/users/login", None, json!({"email": "b@example.com", "password": "secret-2"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the refused user must not exist");
    }

    async fn racing_first_user_requests_create_exactly_one_owner(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let attempts = (0..6).map(|i| {
            app.post("/users/first", None, json!({"email": format!("u{i}@example.com"), "username": format!("u{i}"), "password": "secret-12"}))
        });
        let results = futures_util::future::join_all(attempts).await;
        let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
        let conflicts = results.iter().filter(|(s, _)| *s == StatusCode::CONFLICT).count();
        assert_eq!((created, conflicts), (1, 5), "{results:?}");
    }

    async fn bad_user_input_is_a_400_naming_each_field(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, body) = app.post("/users/first", None, json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "Validation failed.");
        assert_eq!(validation_fields(&body), ["email", "username", "password"]);

        let (status, body) = app
            .post("/users/first", None, json!({"email": "not-an-email", "username": "-bad-", "password": "123", "name": " padded "}))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["email", "username", "password", "name"]);

        let resp = app.http.post(format!("{}/api/v2/users/first", app.base))
            .header("content-type", "application/json")
            .body("{not json").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["message"], "Request body must be valid JSON.");
        assert!(body["detail"].is_string());

        let (status, body) = app.post("/users/first", None, json!({"email": 5})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        // Nothing was created by any of these.
        let (status, _) = app.get("/users/first", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    async fn login_refuses_wrong_credentials_and_system_users(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.owner().await;
        for (email, password) in [
            (OWNER_EMAIL, "wrong-password"),
            ("nobody@example.com", OWNER_PASSWORD),
            ("prebuilds@system", ""),
            ("prebuilds@system", "anything"),
        ] {
            let (status, body) = app.post("/users/login", None, json!({"email": email, "password": password})).await;
            assert_error(status, &body, StatusCode::UNAUTHORIZED);
        }
        let (status, body) = app.post("/users/login", None, json!({"email": OWNER_EMAIL})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["password"]);
    }

    async fn a_token_is_accepted_in_header_cookie_and_query(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let token = app.owner().await;
        let url = format!("{}/api/v2/users/me", app.base);
        let header = app.http.get(&url).header("Coder-Session-Token", &token).send().await.unwrap();
        let cookie = app.http.get(&url).header("Cookie", format!("coder_session_token={token}")).send().await.unwrap();
        let query = app.http.get(format!("{url}?coder_session_token={token}")).send().await.unwrap();
        for resp in [header, cookie, query] {
            assert_eq!(resp.status(), StatusCode::OK);
        }
    }

    async fn missing_malformed_unknown_and_expired_tokens_are_401(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let token = app.owner().await;
        let (status, body) = app.get("/users/me", None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        let (status, body) = app.get("/users/me", Some("garbage")).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        let (status, body) = app.get("/users/me", Some("abcdefghij-abcdefghijklmnopqrstuv")).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        let (id, _) = token.split_once('-').unwrap();
        let forged = format!("{id}-{}", "x".repeat(22));
        let (status, body) = app.get("/users/me", Some(&forged)).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);

        app.state.store.set_session_expiry(id, provq::domain::now() - Duration::seconds(1)).await.unwrap();
        let (status, body) = app.get("/users/me", Some(&token)).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        assert_eq!(body["message"], "API key expired.");
    }

    async fn tokens_are_stored_hashed_and_their_expiry_slides(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let token = app.owner().await;
        let (id, secret) = token.split_once('-').unwrap();
        assert_eq!(id.len(), 10);
        assert_eq!(secret.len(), 22);
        let db = app.state.store.connection();
        let row = api_key::Entity::find_by_id(id.to_string()).one(db).await.unwrap().unwrap();
        assert_eq!(row.hashed_secret, hash_secret(secret));
        assert_ne!(row.hashed_secret, secret);
        let created = row.created_at;
        assert_eq!(row.expires_at - row.last_used, Duration::hours(24));

        // An hour of inactivity later, a request moves the expiry forward again.
        let now = provq::domain::now();
        let mut active: api_key::ActiveModel = row.into();
        active.last_used = Set(now - Duration::hours(1));
        active.expires_at = Set(now + Duration::hours(23));
        active.update(db).await.unwrap();
        let (status, _) = app.get("/users/me", Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        let row = api_key::Entity::find_by_id(id.to_string()).one(db).await.unwrap().unwrap();
        assert!(row.expires_at >= now + Duration::hours(24) - Duration::minutes(1), "{row:?}");
        assert_eq!(row.created_at, created);
    }

    async fn logout_ends_the_session(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let token = app.owner().await;
        let (status, _) = app.request(Method::POST, "/users/logout", Some(&token), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = app.get("/users/me", Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    async fn owners_create_members_and_members_cannot(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let owner = app.owner().await;
        let (_, me) = app.get("/users/me", Some(&owner)).await;
        let (status, body) = app
            .post("/users", Some(&owner), json!({"email": "m@example.com", "username": "member1", "password": "member-pass"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["roles"], json!([{"name": "member", "display_name": "Member"}]));
        assert_eq!(body["organization_ids"], me["organization_ids"]);

        let member = app.login("m@example.com", "member-pass").await;
        let (status, body) = app
            .post("/users", Some(&member), json!({"email": "x@example.com", "username": "x", "password": "member-pass"}))
            .await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        let (status, _) = app.post("/users/login", None, json!({"email": "x@example.com", "password": "member-pass"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a refused create changes nothing");

        let (status, body) = app
            .post("/users", Some(&owner), json!({"email": "other@example.com", "username": "member1", "password": "member-pass"}))
            .await;
        assert_error(status, &body, StatusCode::CONFLICT);
        assert_eq!(validation_fields(&body), ["username"]);
        let (status, body) = app
            .post("/users", Some(&owner), json!({"email": "M@example.com", "username": "member2", "password": "member-pass"}))
            .await;
        assert_error(status, &body, StatusCode::CONFLICT);
        assert_eq!(validation_fields(&body), ["email"]);
        let (status, body) = app.post("/users", None, json!({})).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
    }

    async fn users_are_found_by_id_username_or_me(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let owner = app.owner().await;
        let member = app.member(&owner, "bob").await;
        let (_, bob) = app.get("/users/me", Some(&member)).await;
        let id = bob["id"].as_str().unwrap();
        for path in [format!("/users/{id}"), "/users/bob".to_string()] {
            let (status, body) = app.get(&path, Some(&owner)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, bob);
        }
        let (status, body) = app.get("/users/bob", Some(&member)).await;
        assert_eq!((status, &body), (StatusCode::OK, &bob), "members read themselves");
        let (status, body) = app.get("/users/nobody", Some(&owner)).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        assert_eq!(body["message"], "Resource not found or you do not have access to this resource");
        let (status, body) = app.get("/users/prebuilds", Some(&owner)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["id"], "c42fdf75-3097-471c-8c33-fb52454d81c0");
    }

    async fn a_member_reads_only_itself_as_in_coders_rbac(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let owner = app.owner().await;
        let member = app.member(&owner, "bob").await;
        app.member(&owner, "carol").await;
        let (_, me) = app.get("/users/me", Some(&owner)).await;
        let owner_id = me["id"].as_str().unwrap().to_string();
        // The owner and another member of the same organization are not the member's to read:
        // 404 as if they did not exist, so neither e-mail addresses nor organization ids leak.
        for path in [
            "/users/owner".to_string(),
            format!("/users/{owner_id}"),
            "/users/carol".to_string(),
            "/users/prebuilds".to_string(),
        ] {
            let (status, body) = app.get(&path, Some(&member)).await;
            assert_error(status, &body, StatusCode::NOT_FOUND);
            assert!(!body.to_string().contains(OWNER_EMAIL), "{body}");
        }
        let (status, bob) = app.get("/users/me", Some(&member)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bob["email"], "bob@example.com");
    }
}
