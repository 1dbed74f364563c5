//! Test harness: a fresh database per test (a copy of a migrated template: a SQLite file, or a
//! PostgreSQL database on `PROVQ_TEST_POSTGRES_URL`; see `database`), the real application on
//! port 0, and a small HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use provq::api::AppState;
use provq::config::Settings;
use provq::shutdown::Shutdown;
use provq::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod database;
pub use database::TestDatabase;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const OWNER_EMAIL: &str = "owner@example.com";
pub const OWNER_PASSWORD: &str = "correct-horse-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend: `mod name { fn sqlite(); fn postgres(); }`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($backend:ident: Backend) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn test_body($backend: Backend) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    test_body(Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    test_body(Backend::Postgres).await
                }
            }
        )*
    };
}

/// A plain HTTP client (installs the rustls provider reqwest needs first).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Settings for a test server: port 0, no metrics listener, the given database.
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.into(),
        database_max_connections: 10,
        prometheus: provq::config::PrometheusSettings {
            listen: String::new(),
        },
        ..Settings::default()
    }
}

/// A running server on a fresh database.
pub struct TestApp {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub base: String,
    /// The Prometheus listener, when the settings enable it.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    server: Option<tokio::task::JoinHandle<()>>,
    // Dropped last: the server must stop before its database goes away.
    pub database: TestDatabase,
    pub database_url: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a server after `configure` adjusted its settings.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,provq=info")),
            )
            .with_test_writer()
            .try_init();
        let (database, database_url) = TestDatabase::create(backend).await;
        let mut settings = test_settings(&database_url);
        configure(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("application starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let state = app.state().clone();
        let shutdown = Shutdown::new();
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run(token.cancelled_owned()).await.expect("server runs");
        });
        Self {
            backend,
            addr,
            base: format!("http://{addr}"),
            metrics_addr,
            state,
            http: http_client(),
            shutdown,
            server: Some(server),
            database,
            database_url,
        }
    }

    /// Stops the server and waits for it (graceful shutdown).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
        }
    }

    /// Sends a request to `/api/v2{path}` and returns the status and JSON body (`Null` if empty
    /// or not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v2{path}", self.base));
        if let Some(t) = token {
            req = req.header("Coder-Session-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Creates the first user (an owner) and returns a session token for it.
    pub async fn owner(&self) -> String {
        let (status, body) = self
            .post(
                "/users/first",
                None,
                json!({"email": OWNER_EMAIL, "username": "owner", "password": OWNER_PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.login(OWNER_EMAIL, OWNER_PASSWORD).await
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = self
            .post(
                "/users/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["session_token"].as_str().expect("token").to_string()
    }

    /// Creates a member named `username` (through the owner) and returns its session token.
    pub async fn member(&self, owner_token: &str, username: &str) -> String {
        let email = format!("{username}@example.com");
        let (status, body) = self
            .post(
                "/users",
                Some(owner_token),
                json!({"email": email, "username": username, "password": "member-pass-1"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.login(&email, "member-pass-1").await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub const PSK: &str = "test-psk-0123456789";
pub const DEFAULT_ORG: &str = "default";

/// Starts a server with a daemon PSK and returns it with an owner's token.
pub async fn spawn_queue(backend: Backend) -> (TestApp, String) {
    spawn_queue_with(backend, |_| {}).await
}

pub async fn spawn_queue_with(
    backend: Backend,
    configure: impl FnOnce(&mut Settings),
) -> (TestApp, String) {
    let app = TestApp::spawn_with(backend, |s| {
        s.provisioner.daemon_psk = PSK.into();
        configure(s);
    })
    .await;
    let owner = app.owner().await;
    (app, owner)
}

impl TestApp {
    /// Enqueues a job in the default organization and returns its JSON (asserting 201).
    pub async fn enqueue(&self, token: &str, body: Value) -> Value {
        let (status, job) = self
            .post(
                &format!("/organizations/{DEFAULT_ORG}/provisionerjobs"),
                Some(token),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        job
    }

    /// A worker API call with the PSK.
    pub async fn worker(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.worker_with(path, ("Coder-Provisioner-Daemon-PSK", PSK), body)
            .await
    }

    /// A worker API call with the given credential header.
    pub async fn worker_with(
        &self,
        path: &str,
        header: (&str, &str),
        body: Value,
    ) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/api/v2/provisionerd{path}", self.base))
            .header(header.0, header.1)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Acquires with the PSK as daemon `name` with `tags`, waiting up to `wait` seconds.
    pub async fn acquire(&self, name: &str, tags: Value, wait: i64) -> Option<(String, String)> {
        let (status, body) = self
            .worker(
                "/acquire",
                json!({"name": name, "tags": tags, "wait_seconds": wait}),
            )
            .await;
        match status {
            StatusCode::OK => Some((
                body["job"]["job_id"].as_str().unwrap().to_string(),
                body["job"]["lease_token"].as_str().unwrap().to_string(),
            )),
            StatusCode::NO_CONTENT => None,
            other => panic!("acquire answered {other}: {body}"),
        }
    }

    /// A job's JSON through the admin API.
    pub async fn job(&self, token: &str, id: &str) -> Value {
        let (status, job) = self
            .get(
                &format!("/organizations/{DEFAULT_ORG}/provisionerjobs/{id}"),
                Some(token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{job}");
        job
    }

    /// Waits until every daemon in `names` is registered. An acquire registers its daemon just
    /// before it claims and waits, so a long-polling daemon listed here is waiting (or about to).
    pub async fn until_daemons_listed(&self, token: &str, names: &[&str]) {
        eventually(
            Duration::from_secs(20),
            "the daemons registered",
            || async {
                let (status, daemons) = self
                    .get(
                        &format!("/organizations/{DEFAULT_ORG}/provisionerdaemons"),
                        Some(token),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{daemons}");
                let listed: Vec<&str> = daemons
                    .as_array()
                    .map(|d| d.iter().filter_map(|d| d["name"].as_str()).collect())
                    .unwrap_or_default();
                names.iter().all(|n| listed.contains(n))
            },
        )
        .await;
    }

    pub async fn status_of(&self, token: &str, id: &str) -> String {
        self.job(token, id).await["status"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Creates the first user (an owner) on the server at `server_url` and returns its token.
pub async fn owner_token_at(server_url: &str) -> String {
    let resp = http_client()
        .post(format!("{server_url}/api/v2/users/first"))
        .json(&json!({"email": OWNER_EMAIL, "username": "owner", "password": OWNER_PASSWORD}))
        .send()
        .await
        .expect("first user request");
    assert_eq!(resp.status(), StatusCode::CREATED, "first user");
    login_at(server_url).await
}

/// Logs the owner in on the server at `server_url`.
pub async fn login_at(server_url: &str) -> String {
    let body: Value = http_client()
        .post(format!("{server_url}/api/v2/users/login"))
        .json(&json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}))
        .send()
        .await
        .expect("login request")
        .json()
        .await
        .expect("login body");
    body["session_token"]
        .as_str()
        .expect("a session token")
        .to_string()
}

/// Asserts the Coder error shape and returns the body for further checks.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) -> &Value {
    assert_eq!(status, expected, "unexpected status; body: {body}");
    assert!(body["message"].is_string(), "error without message: {body}");
    if let Some(detail) = body.get("detail") {
        assert!(
            detail.is_string() && !detail.as_str().unwrap().is_empty(),
            "{body}"
        );
    }
    if let Some(v) = body.get("validations") {
        assert!(
            v.as_array().is_some_and(|a| !a.is_empty()),
            "empty validations must be omitted: {body}"
        );
    }
    body
}

/// The `field`s of a 400's validations.
pub fn validation_fields(body: &Value) -> Vec<String> {
    body["validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `check` is true or panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
