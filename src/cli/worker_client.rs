//! A typed client of the worker protocol (`/api/v2/provisionerd/…`): the calls a provisioner
//! daemon makes, with the request and answer types the server itself serves ([`crate::wire`]),
//! so the daemon runner and the benchmark cannot drift from the API. Old calls (acquire one
//! job, complete, fail) and new ones (report-and-acquire, acquire up to k) side by side. Built on
//! the CLI's [`Client`], so errors are [`ClientError`]s with the server's message, validations
//! and `Retry-After`.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::client::{ApiFailure, Client, ClientError};
pub use crate::wire::provisionerd::{
    AcquireJobsRequest, AcquireJobsResponse, AcquireRequest, AcquireResponse, AcquiredJob,
    CompleteJobRequest, FailJobRequest, JobReport, LogLine, UpdateJobRequest, UpdateJobResponse,
};

/// How a daemon authenticates (contract §6).
#[derive(Debug, Clone)]
pub enum Credential {
    /// A provisioner key: organization and tags come from the key.
    Key(String),
    /// The deployment's pre-shared key.
    Psk(String),
    /// An owner's session token.
    Session(String),
}

/// The worker calls against one server with one credential. Cheap to clone.
#[derive(Clone)]
pub struct WorkerClient {
    client: Client,
}

impl WorkerClient {
    /// `server` is the server's base URL (`http://host:port`). The HTTP client's timeout must
    /// exceed the longest `wait_seconds` asked for.
    pub fn new(http: reqwest::Client, server: &str, credential: Credential) -> Self {
        let client = Client::over(http, server);
        Self::from_client(match credential {
            Credential::Key(k) => client.with_credential("Coder-Provisioner-Daemon-Key", k),
            Credential::Psk(k) => client.with_credential("Coder-Provisioner-Daemon-PSK", k),
            Credential::Session(t) => client.with_token(t),
        })
    }

    /// Worker calls through `client`, with its credential.
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// `POST /provisionerd{path}`: `None` for a 204.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, ClientError> {
        let (status, text) = self
            .client
            .raw(Method::POST, &format!("/provisionerd{path}"), Some(body))
            .await?;
        if status == StatusCode::NO_CONTENT || text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| unexpected(status, format!("unexpected response: {e}")))
    }

    /// A call whose success always has a body.
    async fn call_for<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(path, body)
            .await?
            .ok_or_else(|| unexpected(StatusCode::NO_CONTENT, format!("{path} had no body")))
    }

    /// `POST /acquire`: one job, or `None` when none came within `wait_seconds`.
    pub async fn acquire(
        &self,
        request: &AcquireRequest,
    ) -> Result<Option<AcquireResponse>, ClientError> {
        self.call("/acquire", request).await
    }

    /// `POST /acquire-jobs`: reports `request.report` (if any) and acquires up to
    /// `request.max_jobs` jobs in one call and one transaction.
    pub async fn acquire_jobs(
        &self,
        request: &AcquireJobsRequest,
    ) -> Result<AcquireJobsResponse, ClientError> {
        self.call_for("/acquire-jobs", request).await
    }

    /// `POST /deregister`: the daemon is going away (listed offline at once).
    pub async fn deregister(&self, request: &AcquireRequest) -> Result<(), ClientError> {
        self.call::<_, serde_json::Value>("/deregister", request)
            .await
            .map(|_| ())
    }

    /// `POST /jobs/{id}/update`: a heartbeat with optional logs.
    pub async fn update(
        &self,
        job: Uuid,
        request: &UpdateJobRequest,
    ) -> Result<UpdateJobResponse, ClientError> {
        self.call_for(&format!("/jobs/{job}/update"), request).await
    }

    /// `POST /jobs/{id}/complete`.
    pub async fn complete(&self, job: Uuid, lease_token: &str) -> Result<(), ClientError> {
        let request = CompleteJobRequest {
            lease_token: Some(lease_token.to_string()),
        };
        self.call::<_, serde_json::Value>(&format!("/jobs/{job}/complete"), &request)
            .await
            .map(|_| ())
    }

    /// `POST /jobs/{id}/fail`.
    pub async fn fail(&self, job: Uuid, request: &FailJobRequest) -> Result<(), ClientError> {
        self.call::<_, serde_json::Value>(&format!("/jobs/{job}/fail"), request)
            .await
            .map(|_| ())
    }

    /// `complete` when `error` is `None`, else `fail` with it: the report of a finished job
    /// sent on its own.
    pub async fn finish(
        &self,
        job: Uuid,
        lease_token: &str,
        error: Option<&str>,
    ) -> Result<(), ClientError> {
        match error {
            None => self.complete(job, lease_token).await,
            Some(error) => {
                let request = FailJobRequest {
                    lease_token: Some(lease_token.to_string()),
                    error: Some(error.to_string()),
                    error_code: None,
                };
                self.fail(job, &request).await
            }
        }
    }
}

fn unexpected(status: StatusCode, message: String) -> ClientError {
    ClientError::Api(ApiFailure {
        status,
        message,
        detail: None,
        validations: Vec::new(),
        retry_after: None,
        session_hint: false,
    })
}
