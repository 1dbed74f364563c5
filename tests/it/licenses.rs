//! Licenses (contract §4): upload rules, listing, deletion, who may do what.

use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;
use crate::license_keys::*;

/// Uploads `license` and asserts a 400 "Invalid license" whose detail mentions `detail`.
async fn assert_invalid(app: &TestApp, owner: &str, license: &str, detail: &str) {
    let (status, body) = app
        .post("/licenses", Some(owner), json!({"license": license}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Invalid license", "{body}");
    let got = body["detail"].as_str().unwrap_or_default();
    assert!(
        got.contains(detail),
        "detail {got:?} should mention {detail:?}"
    );
    let (_, list) = app.get("/licenses", Some(owner)).await;
    assert_eq!(list, json!([]), "a refused license is not stored");
}

backend_tests! {
    async fn an_added_license_answers_201_with_its_decoded_claims(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let spec = authority.spec(30).feature("user_limit", 7);
        let claims = spec.claims(Utc::now());
        let license = authority.sign_json(&serde_json::to_value(&claims).unwrap());
        let body = add_license(&app, &owner, &license).await;
        assert!(body["id"].is_i64(), "{body}");
        assert_eq!(body["uuid"], claims.jti.clone().unwrap().as_str(), "the jti is the uuid");
        assert!(body["uploaded_at"].is_string());
        assert_eq!(body["claims"]["features"]["user_limit"], 7);
        assert_eq!(body["claims"]["version"], 3);
        assert_eq!(body["claims"]["license_expires"], claims.license_expires.unwrap());
        assert!(body.get("jwt").is_none() && !body.to_string().contains(&license));
    }

    async fn licenses_are_listed_by_id_and_deleted_by_id(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let first = add_license(&app, &owner, &authority.license(&[("user_limit", 1)])).await;
        let second = add_license(&app, &owner, &authority.license(&[("user_limit", 2)])).await;
        let (status, list) = app.get("/licenses", Some(&owner)).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<_> = list.as_array().unwrap().iter().map(|l| l["id"].clone()).collect();
        assert_eq!(ids, [first["id"].clone(), second["id"].clone()]);
        assert_eq!(list[1]["claims"]["features"]["user_limit"], 2);

        let path = format!("/licenses/{}", first["id"]);
        let (status, body) = app.request(Method::DELETE, &path, Some(&owner), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, list) = app.get("/licenses", Some(&owner)).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["id"], second["id"]);
        let (status, body) = app.request(Method::DELETE, &path, Some(&owner), None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (status, body) = app.request(Method::DELETE, "/licenses/abc", Some(&owner), None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }

    async fn the_same_license_twice_is_a_409(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let license = authority.license(&[("multiple_organizations", 1)]);
        add_license(&app, &owner, &license).await;
        let (status, body) = app.post("/licenses", Some(&owner), json!({"license": license})).await;
        assert_error(status, &body, StatusCode::CONFLICT);
        let (_, list) = app.get("/licenses", Some(&owner)).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
    }

    async fn signature_key_and_algorithm_problems_are_invalid_licenses(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        // Signed by a key the server does not trust, under the trusted kid.
        let rogue = Authority::new();
        assert_invalid(&app, &owner, &rogue.license(&[]), "signature").await;
        // Signed with a kid the server does not know.
        let stranger = provq::domain::license::generate_key(Some("other-kid".into())).unwrap();
        let claims = authority.claims_json();
        let unknown = provq::domain::license::sign(&claims, "other-kid", &stranger.private_pem).unwrap();
        assert_invalid(&app, &owner, &unknown, "no key with ID \"other-kid\"").await;
        // HS256 with the public key as the secret: the classic algorithm confusion.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(KID.into());
        let secret = EncodingKey::from_secret(authority.key.public_key.as_bytes()).unwrap();
        let hs256 = encode(&header, &claims, &secret).unwrap();
        assert_invalid(&app, &owner, &hs256, "EdDSA").await;
        // Not a JWS at all, and a tampered payload.
        assert_invalid(&app, &owner, "not-a-license", "compact JWS").await;
        let good = authority.license(&[]);
        let parts: Vec<&str> = good.split('.').collect();
        let other = authority.license(&[("user_limit", 1000)]);
        let tampered = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert_invalid(&app, &owner, &tampered, "signature").await;
    }

    async fn claim_rules_are_enforced_at_upload(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let now = Utc::now().timestamp();
        let broken = |change: &dyn Fn(&mut Value)| {
            let mut claims = authority.claims_json();
            change(&mut claims);
            authority.sign_json(&claims)
        };
        let cases: Vec<(String, &str)> = vec![
            (broken(&|c| c["version"] = json!(2)), "version 3"),
            (broken(&|c| { c.as_object_mut().unwrap().remove("version"); }), "version 3"),
            (broken(&|c| { c.as_object_mut().unwrap().remove("iat"); }), "iat"),
            (broken(&|c| { c.as_object_mut().unwrap().remove("nbf"); }), "nbf"),
            (broken(&|c| { c.as_object_mut().unwrap().remove("exp"); }), "exp"),
            (broken(&|c| { c.as_object_mut().unwrap().remove("license_expires"); }), "license_expires"),
            (broken(&|c| c["account_id"] = json!("")), "account ID"),
            (broken(&|c| { c.as_object_mut().unwrap().remove("account_type"); }), "account type"),
            (broken(&|c| c["feature_set"] = json!("gold")), "feature_set"),
            (broken(&|c| { c["license_expires"] = json!(now - 7200); c["exp"] = json!(now - 3600); }), "expired"),
            (broken(&|c| {
                let far = now + Duration::days(5 * 365 + 2).num_seconds();
                c["license_expires"] = json!(far);
                c["exp"] = json!(far);
            }), "more than 5 years"),
        ];
        for (license, detail) in cases {
            assert_invalid(&app, &owner, &license, detail).await;
        }
        let (status, body) = app.post("/licenses", Some(&owner), json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(validation_fields(&body), ["license"]);
    }

    async fn a_license_starting_later_is_accepted_but_grants_nothing_yet(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let mut spec = authority.spec(90).feature("multiple_organizations", 1);
        spec.not_before = Utc::now() + Duration::days(2);
        spec.license_expires = spec.not_before + Duration::days(90);
        add_license(&app, &owner, &authority.sign(&spec)).await;
        let e = entitlements(&app, &owner).await;
        assert_eq!(entitlement_of(&e, "multiple_organizations"), "not_entitled");
        assert_eq!(e["has_license"], false);
    }

    async fn a_license_locked_to_another_deployment_is_refused(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let mut spec = authority.spec(90);
        spec.deployment_ids = vec!["some-other-deployment".into()];
        let (status, body) = app
            .post("/licenses", Some(&owner), json!({"license": authority.sign(&spec)}))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "License cannot be used on this deployment!");
        assert!(body["detail"].as_str().unwrap().contains("some-other-deployment"));
        let (_, info) = app.get("/buildinfo", None).await;
        spec.deployment_ids.push(info["deployment_id"].as_str().unwrap().to_string());
        add_license(&app, &owner, &authority.sign(&spec)).await;
    }

    async fn members_cannot_touch_licenses_but_may_read_entitlements(backend: Backend) {
        let (app, owner, authority) = spawn_licensed(backend).await;
        let added = add_license(&app, &owner, &authority.license(&[])).await;
        let member = app.member(&owner, "alice").await;
        let license = authority.license(&[("user_limit", 3)]);
        let (status, body) = app.post("/licenses", Some(&member), json!({"license": license})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        let (status, body) = app.get("/licenses", Some(&member)).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        let path = format!("/licenses/{}", added["id"]);
        let (status, body) = app.request(Method::DELETE, &path, Some(&member), None).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        let (status, body) = app.post("/licenses/refresh-entitlements", Some(&member), json!({})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN);
        entitlements(&app, &member).await;
        let (status, body) = app.get("/entitlements", None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        let (status, body) = app.get("/licenses", None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        let (_, list) = app.get("/licenses", Some(&owner)).await;
        assert_eq!(list.as_array().unwrap().len(), 1, "nothing changed");
    }
}

#[test]
fn an_untrusted_key_line_stops_the_start_naming_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_db, url) = TestDatabase::create(Backend::Sqlite).await;
        let mut settings = test_settings(&url);
        settings
            .licenses
            .keys
            .insert("short".into(), "c2hvcnQ=".into());
        let error = provq::startup::Application::build(settings)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("licenses.keys.short"), "{error}");
    });
}
