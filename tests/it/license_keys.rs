//! A license authority for tests: a key pair the test server trusts, and licenses minted with
//! the library code `provq licenses sign` uses.

use chrono::{Duration, Utc};
use provq::config::Settings;
use provq::domain::license::{GeneratedKey, LicenseSpec, generate_key, sign};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

pub const KID: &str = "test-authority";

pub struct Authority {
    pub key: GeneratedKey,
}

impl Authority {
    pub fn new() -> Self {
        Self {
            key: generate_key(Some(KID.into())).expect("key pair"),
        }
    }

    /// Makes a server trust this authority's key.
    pub fn trust(&self, settings: &mut Settings) {
        settings
            .licenses
            .keys
            .insert(self.key.kid.clone(), self.key.public_key.clone());
    }

    /// A license starting now for `days`.
    pub fn spec(&self, days: i64) -> LicenseSpec {
        LicenseSpec::new(Utc::now(), Duration::days(days))
    }

    /// Signs a spec (issued now).
    pub fn sign(&self, spec: &LicenseSpec) -> String {
        sign(
            &spec.claims(Utc::now()),
            &self.key.kid,
            &self.key.private_pem,
        )
        .expect("signed")
    }

    /// Signs arbitrary claims, for licenses that break a rule on purpose.
    pub fn sign_json(&self, claims: &Value) -> String {
        sign(claims, &self.key.kid, &self.key.private_pem).expect("signed")
    }

    /// The claims of a valid 90-day license as JSON, to be broken by a test.
    pub fn claims_json(&self) -> Value {
        serde_json::to_value(self.spec(90).claims(Utc::now())).unwrap()
    }

    /// A 90-day license granting `features`.
    pub fn license(&self, features: &[(&str, i64)]) -> String {
        let spec = features.iter().fold(self.spec(90), |spec, (name, value)| {
            spec.feature(name, *value)
        });
        self.sign(&spec)
    }
}

/// A server trusting a fresh authority, with an owner's token.
pub async fn spawn_licensed(backend: Backend) -> (TestApp, String, Authority) {
    let authority = Authority::new();
    let app = TestApp::spawn_with(backend, |s| authority.trust(s)).await;
    let owner = app.owner().await;
    (app, owner, authority)
}

/// Adds a license and returns its JSON (asserting 201).
pub async fn add_license(app: &TestApp, token: &str, license: &str) -> Value {
    let (status, body) = app
        .post("/licenses", Some(token), json!({"license": license}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// `GET /entitlements` (asserting 200).
pub async fn entitlements(app: &TestApp, token: &str) -> Value {
    let (status, body) = app.get("/entitlements", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The `entitlement` of one feature.
pub fn entitlement_of(entitlements: &Value, feature: &str) -> String {
    entitlements["features"][feature]["entitlement"]
        .as_str()
        .unwrap_or_else(|| panic!("no {feature} in {entitlements}"))
        .to_string()
}
