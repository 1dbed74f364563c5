//! A typed client of the worker protocol (`/api/v2/provisionerd/…`): the calls a provisioner
//! daemon makes, with the request and answer types the server itself serves, so the daemon
//! runner and the benchmark cannot drift from the API. Old calls (acquire one job, complete,
//! fail) and new ones (report-and-acquire, acquire up to k) side by side.

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

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

impl Credential {
    fn header(&self) -> (&'static str, &str) {
        match self {
            Self::Key(k) => ("Coder-Provisioner-Daemon-Key", k),
            Self::Psk(k) => ("Coder-Provisioner-Daemon-PSK", k),
            Self::Session(t) => ("Coder-Session-Token", t),
        }
    }
}

/// A failed worker call.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No answer (connection refused, reset, timed out).
    #[error("no answer from the server: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered with an error (Coder's shape).
    #[error("{status}: {message}")]
    Api {
        status: StatusCode,
        message: String,
        detail: Option<String>,
    },
}

impl WorkerError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Transport(_) => None,
        }
    }
}

/// The worker calls against one server with one credential. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    http: reqwest::Client,
    /// `…/api/v2/provisionerd`.
    base: String,
    credential: Credential,
}

impl WorkerClient {
    /// `server` is the server's base URL (`http://host:port`). The HTTP client's timeout must
    /// exceed the longest `wait_seconds` asked for.
    pub fn new(http: reqwest::Client, server: &str, credential: Credential) -> Self {
        Self {
            http,
            base: format!("{}/api/v2/provisionerd", server.trim_end_matches('/')),
            credential,
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, WorkerError> {
        let (name, value) = self.credential.header();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(name, value)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return Ok(Some(resp.json().await?));
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        Err(WorkerError::Api {
            status,
            message: body["message"].as_str().unwrap_or_default().to_string(),
            detail: body["detail"].as_str().map(str::to_string),
        })
    }

    /// `POST /acquire`: one job, or `None` when none came within `wait_seconds`.
    pub async fn acquire(
        &self,
        request: &AcquireRequest,
    ) -> Result<Option<AcquireResponse>, WorkerError> {
        self.call("/acquire", request).await
    }

    /// `POST /acquire-jobs`: reports `request.report` (if any) and acquires up to
    /// `request.max_jobs` jobs in one call and one transaction.
    pub async fn acquire_jobs(
        &self,
        request: &AcquireJobsRequest,
    ) -> Result<AcquireJobsResponse, WorkerError> {
        let answer: Option<AcquireJobsResponse> = self.call("/acquire-jobs", request).await?;
        answer.ok_or_else(|| WorkerError::Api {
            status: StatusCode::NO_CONTENT,
            message: "acquire-jobs answered without a body".into(),
            detail: None,
        })
    }

    /// `POST /jobs/{id}/update`: a heartbeat with optional logs.
    pub async fn update(
        &self,
        job: Uuid,
        request: &UpdateJobRequest,
    ) -> Result<UpdateJobResponse, WorkerError> {
        let answer: Option<UpdateJobResponse> =
            self.call(&format!("/jobs/{job}/update"), request).await?;
        answer.ok_or_else(|| WorkerError::Api {
            status: StatusCode::NO_CONTENT,
            message: "update answered without a body".into(),
            detail: None,
        })
    }

    /// `POST /jobs/{id}/complete`.
    pub async fn complete(&self, job: Uuid, lease_token: &str) -> Result<(), WorkerError> {
        let request = CompleteJobRequest {
            lease_token: Some(lease_token.to_string()),
        };
        self.call::<_, serde_json::Value>(&format!("/jobs/{job}/complete"), &request)
            .await
            .map(|_| ())
    }

    /// `POST /jobs/{id}/fail`.
    pub async fn fail(&self, job: Uuid, request: &FailJobRequest) -> Result<(), WorkerError> {
        self.call::<_, serde_json::Value>(&format!("/jobs/{job}/fail"), request)
            .await
            .map(|_| ())
    }
}
