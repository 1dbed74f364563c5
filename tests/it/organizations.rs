//! Organizations (contract §3): reading, the name rules, the default organization, deletion
//! blockers, members versus owners, and the `multiple_organizations` gate.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;
use crate::license_keys::*;

const PREMIUM: &str = "Multiple Organizations is a Premium feature. Contact sales!";

/// A server with a license granting multiple organizations, and an owner's token.
async fn spawn_multi_org(backend: Backend) -> (TestApp, String, Authority) {
    let (app, owner, authority) = spawn_licensed(backend).await;
    add_license(
        &app,
        &owner,
        &authority.license(&[("multiple_organizations", 1)]),
    )
    .await;
    (app, owner, authority)
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, org) = app.post("/organizations", Some(token), body).await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    org
}

async fn patch(app: &TestApp, token: &str, org: &str, body: Value) -> (StatusCode, Value) {
    app.request(
        Method::PATCH,
        &format!("/organizations/{org}"),
        Some(token),
        Some(body),
    )
    .await
}

async fn delete(app: &TestApp, token: &str, org: &str) -> (StatusCode, Value) {
    app.request(
        Method::DELETE,
        &format!("/organizations/{org}"),
        Some(token),
        None,
    )
    .await
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

backend_tests! {
    async fn the_default_organization_resolves_by_id_name_and_keyword(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let owner = app.owner().await;
        let (status, org) = app.get("/organizations/default", Some(&owner)).await;
        assert_eq!(status, StatusCode::OK, "{org}");
        assert_eq!(org["name"], "first-organization");
        assert_eq!(org["display_name"], "First Organization");
        assert_eq!(org["is_default"], true);
        let keys: Vec<&String> = org.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8, "{org}");
        for field in ["id", "name", "display_name", "description", "icon", "created_at", "updated_at", "is_default"] {
            assert!(org.get(field).is_some(), "{field} missing: {org}");
        }
        for ident in [org["id"].as_str().unwrap(), "first-organization"] {
            let (status, same) = app.get(&format!("/organizations/{ident}"), Some(&owner)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(same, org);
        }
        let (status, body) = app.get("/organizations/nope", Some(&owner)).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (status, body) = app.get("/organizations", None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
    }

    async fn changes_need_the_multiple_organizations_entitlement(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let refused = [
            app.post("/organizations", Some(&owner), json!({"name": "acme"})).await,
            patch(&app, &owner, "default", json!({"display_name": "Renamed"})).await,
            delete(&app, &owner, "default").await,
        ];
        for (status, body) in refused {
            assert_error(status, &body, StatusCode::FORBIDDEN);
            assert_eq!(body["message"], PREMIUM);
        }
        let (_, list) = app.get("/organizations", Some(&owner)).await;
        assert_eq!(names(&list), ["first-organization"], "a 403 changes nothing");

        let license = add_license(&app, &owner, &authority.license(&[("multiple_organizations", 1)])).await;
        create(&app, &owner, json!({"name": "acme"})).await;

        let path = format!("/licenses/{}", license["id"]);
        let (status, _) = app.request(Method::DELETE, &path, Some(&owner), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = app.post("/organizations", Some(&owner), json!({"name": "globex"})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        assert_eq!(body["message"], PREMIUM);
        let (status, body) = patch(&app, &owner, "acme", json!({"display_name": "Acme"})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        // Reading needs no license.
        let (status, _) = app.get("/organizations/acme", Some(&owner)).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn creating_applies_the_name_rules(backend: Backend) {
        let (app, owner, _) = spawn_multi_org(backend).await;
        for bad in [json!({}), json!({"name": ""}), json!({"name": "a--b"}), json!({"name": "-a"}),
                    json!({"name": "new"}), json!({"name": "create"}), json!({"name": "x".repeat(33)}),
                    json!({"name": "a b"})] {
            let (status, body) = app.post("/organizations", Some(&owner), bad.clone()).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST);
            assert_eq!(body["message"], "Validation failed.", "{bad}");
            assert_eq!(validation_fields(&body), ["name"], "{bad}");
        }
        for bad_display in [" padded", "x".repeat(65).as_str()] {
            let (status, body) = app.post("/organizations", Some(&owner), json!({"name": "ok", "display_name": bad_display})).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST);
            assert_eq!(validation_fields(&body), ["display_name"]);
        }
        for reserved in ["default", "Default"] {
            let (status, body) = app.post("/organizations", Some(&owner), json!({"name": reserved})).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST);
            assert_eq!(body["message"], "Organization name \"default\" is reserved.");
        }
        let org = create(&app, &owner, json!({"name": "acme", "description": "Rockets", "icon": "/icon/acme.svg"})).await;
        assert_eq!(org["display_name"], "acme", "display_name defaults to the name");
        assert_eq!(org["description"], "Rockets");
        assert_eq!(org["icon"], "/icon/acme.svg");
        assert_eq!(org["is_default"], false);
        let org = create(&app, &owner, json!({"name": "x".repeat(32), "display_name": "X".repeat(64)})).await;
        assert_eq!(org["display_name"], "X".repeat(64));
        for taken in ["acme", "ACME", "first-organization"] {
            let (status, body) = app.post("/organizations", Some(&owner), json!({"name": taken})).await;
            assert_error(status, &body, StatusCode::CONFLICT);
            assert_eq!(body["message"], "Organization already exists with that name.");
        }
        let (_, list) = app.get("/organizations", Some(&owner)).await;
        assert_eq!(names(&list), ["acme", "first-organization", "x".repeat(32).as_str()], "ordered by name");
    }

    async fn the_creator_becomes_a_member_and_members_see_only_theirs(backend: Backend) {
        let (app, owner, _) = spawn_multi_org(backend).await;
        let member = app.member(&owner, "alice").await;
        let zeta = create(&app, &owner, json!({"name": "zeta"})).await;
        create(&app, &owner, json!({"name": "beta"})).await;
        let (_, me) = app.get("/users/me", Some(&owner)).await;
        assert!(me["organization_ids"].as_array().unwrap().contains(&zeta["id"]), "{me}");

        let (_, list) = app.get("/organizations", Some(&owner)).await;
        assert_eq!(names(&list), ["beta", "first-organization", "zeta"]);
        let (status, list) = app.get("/organizations", Some(&member)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&list), ["first-organization"]);
        let (status, body) = app.get("/organizations/zeta", Some(&member)).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (status, _) = app.get("/organizations/default", Some(&member)).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn members_cannot_change_organizations(backend: Backend) {
        let (app, owner, _) = spawn_multi_org(backend).await;
        let member = app.member(&owner, "alice").await;
        create(&app, &owner, json!({"name": "zeta"})).await;
        let (status, body) = app.post("/organizations", Some(&member), json!({"name": "mine"})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        let (status, body) = patch(&app, &member, "default", json!({"display_name": "Mine"})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        let (status, body) = delete(&app, &member, "zeta").await;
        assert_error(status, &body, StatusCode::NOT_FOUND, );
        let (status, body) = patch(&app, &member, "zeta", json!({"display_name": "Mine"})).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (_, list) = app.get("/organizations", Some(&owner)).await;
        assert_eq!(names(&list), ["first-organization", "zeta"]);
        let (_, org) = app.get("/organizations/default", Some(&owner)).await;
        assert_eq!(org["display_name"], "First Organization");
    }

    async fn patching_renames_and_redescribes(backend: Backend) {
        let (app, owner, _) = spawn_multi_org(backend).await;
        let acme = create(&app, &owner, json!({"name": "acme"})).await;
        create(&app, &owner, json!({"name": "globex"})).await;
        let (status, org) = patch(&app, &owner, "acme", json!({"name": "acme-corp", "display_name": "Acme Corp", "description": "d", "icon": "i"})).await;
        assert_eq!(status, StatusCode::OK, "{org}");
        assert_eq!(org["id"], acme["id"]);
        assert_eq!((org["name"].as_str(), org["display_name"].as_str()), (Some("acme-corp"), Some("Acme Corp")));
        assert_eq!((org["description"].as_str(), org["icon"].as_str()), (Some("d"), Some("i")));
        assert_ne!(org["updated_at"], acme["updated_at"]);
        let (status, _) = app.get("/organizations/acme", Some(&owner)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the old name is gone");

        let (status, body) = patch(&app, &owner, "acme-corp", json!({"name": "globex"})).await;
        assert_error(status, &body, StatusCode::CONFLICT);
        assert_eq!(validation_fields(&body), ["name"]);
        let (status, body) = patch(&app, &owner, "acme-corp", json!({"name": "default"})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "Organization name \"default\" is reserved.");
        let (status, body) = patch(&app, &owner, "acme-corp", json!({"name": "new", "display_name": " x"})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["name", "display_name"]);
        let (_, same) = app.get("/organizations/acme-corp", Some(&owner)).await;
        assert_eq!(same, org, "a 4xx changes nothing");

        // The default organization can be renamed and is still `default`.
        let (status, renamed) = patch(&app, &owner, "default", json!({"name": "main"})).await;
        assert_eq!(status, StatusCode::OK, "{renamed}");
        let (_, default) = app.get("/organizations/default", Some(&owner)).await;
        assert_eq!(default["name"], "main");
        assert_eq!(default["is_default"], true);
    }

    async fn deleting_refuses_the_default_and_blocked_organizations(backend: Backend) {
        let (app, owner, _) = spawn_multi_org(backend).await;
        let (_, default) = app.get("/organizations/default", Some(&owner)).await;
        for ident in ["default", default["id"].as_str().unwrap()] {
            let (status, body) = delete(&app, &owner, ident).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST);
            assert_eq!(body["message"], "Default organization cannot be deleted.");
        }
        create(&app, &owner, json!({"name": "acme"})).await;
        let jobs = "/organizations/acme/provisionerjobs";
        let mut job_ids = Vec::new();
        for _ in 0..2 {
            let (status, job) = app.post(jobs, Some(&owner), json!({"type": "workspace_build"})).await;
            assert_eq!(status, StatusCode::CREATED, "{job}");
            job_ids.push(job["id"].as_str().unwrap().to_string());
        }
        let (status, key) = app.post("/organizations/acme/provisionerkeys", Some(&owner), json!({"name": "k"})).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");

        let (status, body) = delete(&app, &owner, "acme").await;
        assert_error(status, &body, StatusCode::CONFLICT);
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("2 unfinished provisioner jobs and 1 provisioner key"), "{detail}");

        for id in &job_ids {
            let (status, body) = app.post(&format!("{jobs}/{id}/cancel"), Some(&owner), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (status, body) = delete(&app, &owner, "acme").await;
        assert_error(status, &body, StatusCode::CONFLICT);
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("has 1 provisioner key;"), "{detail}");
        let (status, _) = app.request(Method::DELETE, "/organizations/acme/provisionerkeys/k", Some(&owner), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let (status, body) = delete(&app, &owner, "acme").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"message": "Organization has been deleted."}));
        let (status, _) = app.get("/organizations/acme", Some(&owner)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = delete(&app, &owner, "acme").await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (_, me) = app.get("/users/me", Some(&owner)).await;
        assert_eq!(me["organization_ids"].as_array().unwrap().len(), 1, "{me}");
    }
}
