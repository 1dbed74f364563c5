//! The worker API daemons long-poll: acquire a job, report progress with logs, complete or
//! fail it. Every call after acquire proves itself with the job's lease token.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::daemon_auth::DaemonAuth;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::Validations;
use crate::domain::daemon::Liveness;
use crate::domain::job::{ErrorCode, Job, LogLevel, LogSource};
use crate::domain::limits::{self, check_chars, storable};
use crate::domain::registration::{DaemonRegistration, Registrant};
use crate::queue::acquire::{Ask, acquire, acquire_many};
use crate::store::jobs::{MAX_BATCH, Report, Runnable};
use crate::store::logs::NewLog;
use crate::wire::provisionerd::{
    AcquireJobsRequest, AcquireJobsResponse, AcquireRequest, AcquireResponse, AcquiredJob,
    CompleteJobRequest, FailJobRequest, LogLine, UpdateJobRequest, UpdateJobResponse,
};

pub struct ProvisionerdApi;

/// Most log lines one update may carry.
pub const MAX_LOGS_PER_UPDATE: usize = 10_000;

#[derive(ApiResponse)]
pub enum AcquireResult {
    /// A job for this daemon.
    #[oai(status = 200)]
    Job(Json<Box<AcquireResponse>>),
    /// No runnable job appeared within `wait_seconds`.
    #[oai(status = 204)]
    NoJob,
}

#[derive(ApiResponse)]
pub enum Done {
    #[oai(status = 204)]
    NoContent,
}

fn acquired(job: Job, lease_token: String) -> AcquiredJob {
    AcquiredJob {
        job_id: job.id,
        lease_token,
        job_type: job.job_type.as_str().to_string(),
        provisioner: job.provisioner.as_str().to_string(),
        organization_id: job.organization_id,
        initiator_id: job.initiator_id,
        input: job.input.into(),
        tags: job.tags.as_map().clone(),
        file_id: job.file_id,
        metadata: job.metadata.into(),
        created_at: job.created_at,
    }
}

fn parse_logs(v: &mut Validations, logs: Option<Vec<LogLine>>) -> Vec<NewLog> {
    let logs = logs.unwrap_or_default();
    if logs.len() > MAX_LOGS_PER_UPDATE {
        v.push(
            "logs",
            format!("at most {MAX_LOGS_PER_UPDATE} lines per update"),
        );
        return Vec::new();
    }
    let now = crate::domain::now();
    let mut out = Vec::with_capacity(logs.len());
    for (i, l) in logs.into_iter().enumerate() {
        let field = |f: &str| format!("logs[{i}].{f}");
        let level = v.required(&field("level"), l.level, |s| LogLevel::parse(&s));
        let source = v.check(
            &field("source"),
            LogSource::parse(l.source.as_deref().unwrap_or("provisioner")),
        );
        let stage = l.stage.unwrap_or_default();
        v.check(
            &field("stage"),
            check_chars(&stage, limits::MAX_LOG_STAGE_CHARS),
        );
        let Some(output) = l.output else {
            v.push(field("output"), "is required");
            continue;
        };
        if let (Some(level), Some(source)) = (level, source) {
            out.push(NewLog {
                created_at: l.created_at.unwrap_or(now),
                source,
                level,
                stage: storable(stage),
                output: storable(output),
            });
        }
    }
    out
}

fn required_lease(v: &mut Validations, lease: Option<String>) -> String {
    v.required("lease_token", lease, |l| {
        if l.is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(l)
        }
    })
    .unwrap_or_default()
}

/// A validated `error`/`error_code` pair of a failure report.
fn parse_failure(
    v: &mut Validations,
    prefix: &str,
    error: Option<String>,
    code: Option<String>,
) -> Option<(String, Option<ErrorCode>)> {
    let error = v.required(&format!("{prefix}error"), error, |e| {
        if e.trim().is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(storable(e))
        }
    });
    let code = match code.filter(|c| !c.is_empty()) {
        Some(c) => v.check(&format!("{prefix}error_code"), ErrorCode::parse(&c)),
        None => None,
    };
    error.map(|e| (e, code))
}

impl ProvisionerdApi {
    /// The daemon's registration and long-poll wait: looks up what the request names, then
    /// checks it ([`DaemonRegistration::from_request`]).
    async fn resolve_daemon(
        &self,
        state: &AppState,
        auth: &DaemonAuth,
        body: AcquireRequest,
    ) -> Result<(DaemonRegistration, Duration), ApiError> {
        let registrant = match auth {
            DaemonAuth::Key(key) => {
                let other_organization = match &body.organization {
                    Some(org) => {
                        let resolved = state.store.resolve_organization(org).await.ok();
                        resolved.map(|o| o.id) != Some(key.organization_id)
                    }
                    None => false,
                };
                Registrant::Key {
                    key_id: auth.key_id(),
                    organization_id: key.organization_id,
                    tags: key.tags.clone(),
                    other_organization,
                }
            }
            DaemonAuth::Psk | DaemonAuth::Owner(_) => {
                let organization = match &body.organization {
                    Some(ident) => match state.store.resolve_organization(ident).await {
                        Ok(o) => Ok(o.id),
                        Err(crate::store::StoreError::NotFound) => Err(ident.clone()),
                        Err(e) => return Err(e.into()),
                    },
                    None => Ok(state.store.default_organization_id().await?),
                };
                Registrant::Chooser {
                    key_id: auth.key_id(),
                    organization,
                    user: auth.user_id(),
                }
            }
        };
        Ok(DaemonRegistration::from_request(body, registrant)?)
    }
}

#[OpenApi(tag = "ApiTags::Provisionerd")]
impl ProvisionerdApi {
    /// Registers (or refreshes) the daemon and hands it the next job it may run, waiting up to
    /// `wait_seconds` for one. 204 when none came.
    #[oai(path = "/provisionerd/acquire", method = "post")]
    #[tracing::instrument(skip_all, fields(job_id))]
    async fn acquire(
        &self,
        Data(state): Data<&AppState>,
        auth: DaemonAuth,
        request: &poem::Request,
        body: Json<AcquireRequest>,
    ) -> Result<AcquireResult, ApiError> {
        let peer = request.remote_addr().as_socket_addr().copied();
        let (registration, wait) = self.resolve_daemon(state, &auth, body.0).await?;
        let runnable = Runnable {
            organization_id: registration.organization_id,
            provisioners: registration.provisioners.clone(),
            tags: registration.tags.clone(),
        };
        let daemon = state.store.register_daemon(registration).await?;
        let gone = state.connections.peer_closed(peer);
        let ask = Ask {
            daemon_id: daemon.id,
            daemon_name: &daemon.name,
            runnable: &runnable,
            max_jobs: 1,
            wait,
        };
        let claim = acquire(&state.claims, &state.shutdown, gone, &ask).await?;
        let Some(claim) = claim else {
            return Ok(AcquireResult::NoJob);
        };
        let job = acquired(claim.job, claim.lease_token);
        Ok(AcquireResult::Job(Json(Box::new(AcquireResponse {
            daemon_id: daemon.id,
            job,
        }))))
    }

    /// Marks the daemon offline at once: it is shutting down (same body as acquire).
    #[oai(path = "/provisionerd/deregister", method = "post")]
    async fn deregister(
        &self,
        Data(state): Data<&AppState>,
        auth: DaemonAuth,
        body: Json<AcquireRequest>,
    ) -> Result<Done, ApiError> {
        let (registration, _) = self.resolve_daemon(state, &auth, body.0).await?;
        let liveness = Liveness::now_secs(state.settings.provisioner.stale_after_secs);
        state
            .store
            .mark_daemon_offline(&registration, liveness)
            .await?;
        tracing::info!(daemon = %registration.name, "daemon deregistered");
        Ok(Done::NoContent)
    }

    /// Like `/provisionerd/acquire`, for daemons that run several jobs or want fewer round
    /// trips: reports the daemon's finished jobs (`report` and/or `reports`, optional) and hands
    /// out up to `max_jobs` jobs, in one transaction, waiting up to `wait_seconds` when there
    /// are none. Always 200; `jobs` is empty when none came. If one report's lease is not its
    /// job's current one, the call is a 409 (404 for another organization's job) and changes
    /// nothing: no report is applied and no job handed out.
    #[oai(path = "/provisionerd/acquire-jobs", method = "post")]
    #[tracing::instrument(skip_all, fields(job_id))]
    async fn acquire_jobs(
        &self,
        Data(state): Data<&AppState>,
        auth: DaemonAuth,
        request: &poem::Request,
        body: Json<AcquireJobsRequest>,
    ) -> Result<Json<AcquireJobsResponse>, ApiError> {
        let peer = request.remote_addr().as_socket_addr().copied();
        let AcquireJobsRequest {
            daemon,
            max_jobs,
            report,
            reports,
        } = body.0;
        let mut v = Validations::new();
        let max_jobs = max_jobs.unwrap_or(1);
        if !(1..=MAX_BATCH as i64).contains(&max_jobs) {
            v.push("max_jobs", format!("must be between 1 and {MAX_BATCH}"));
        }
        let listed = reports.unwrap_or_default();
        if listed.len() + usize::from(report.is_some()) > MAX_BATCH {
            v.push(
                "reports",
                format!("at most {MAX_BATCH} reports per call (`report` included)"),
            );
        }
        let named = report
            .map(|r| ("report.".to_string(), r))
            .into_iter()
            .chain(
                listed
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (format!("reports[{i}]."), r)),
            );
        let mut seen = std::collections::HashSet::new();
        let mut reports = Vec::new();
        for (prefix, r) in named {
            if !seen.insert(r.job_id) {
                v.push(format!("{prefix}job_id"), "reported twice in one call");
            }
            let lease = v
                .required(&format!("{prefix}lease_token"), r.lease_token, |l| {
                    if l.is_empty() {
                        Err("must not be empty".to_string())
                    } else {
                        Ok(l)
                    }
                })
                .unwrap_or_default();
            let error = if r.error.is_some() || r.error_code.is_some() {
                parse_failure(&mut v, &prefix, r.error, r.error_code)
            } else {
                None
            };
            reports.push(Report {
                job_id: r.job_id,
                organization: auth.key_organization(),
                lease_token: lease,
                error,
            });
        }
        v.finish()?;
        let (registration, wait) = self.resolve_daemon(state, &auth, daemon).await?;
        let runnable = Runnable {
            organization_id: registration.organization_id,
            provisioners: registration.provisioners.clone(),
            tags: registration.tags.clone(),
        };
        let daemon = state.store.register_daemon(registration).await?;
        let gone = state.connections.peer_closed(peer);
        let ask = Ask {
            daemon_id: daemon.id,
            daemon_name: &daemon.name,
            runnable: &runnable,
            max_jobs: max_jobs as usize,
            wait,
        };
        let (_, claimed) =
            acquire_many(&state.claims, &state.shutdown, gone, &ask, reports).await?;
        let jobs = claimed
            .claims
            .into_iter()
            .map(|claim| acquired(claim.job, claim.lease_token))
            .collect();
        Ok(Json(AcquireJobsResponse {
            daemon_id: daemon.id,
            jobs,
        }))
    }

    /// Heartbeat with optional logs; answers whether the job was canceled.
    #[oai(path = "/provisionerd/jobs/:job/update", method = "post")]
    #[tracing::instrument(skip_all, fields(job_id = %job.0))]
    async fn update(
        &self,
        Data(state): Data<&AppState>,
        auth: DaemonAuth,
        job: Path<Uuid>,
        body: Json<UpdateJobRequest>,
    ) -> Result<Json<UpdateJobResponse>, ApiError> {
        let body = body.0;
        let mut v = Validations::new();
        let lease = required_lease(&mut v, body.lease_token);
        let logs = parse_logs(&mut v, body.logs);
        v.finish()?;
        let beat = state
            .events
            .update(job.0, auth.key_organization(), &lease, logs)
            .await?;
        Ok(Json(UpdateJobResponse {
            canceled: beat.canceled,
            logs_overflowed: beat.logs_overflowed,
        }))
    }

    /// Finishes the job successfully (or as canceled, if it was being canceled).
    #[oai(path = "/provisionerd/jobs/:job/complete", method = "post")]
    #[tracing::instrument(skip_all, fields(job_id = %job.0))]
    async fn complete(
        &self,
        Data(state): Data<&AppState>,
        auth: DaemonAuth,
        job: Path<Uuid>,
        body: Json<CompleteJobRequest>,
    ) -> Result<Done, ApiError> {
        let mut v = Validations::new();
        let lease = required_lease(&mut v, body.0.lease_token);
        v.finish()?;
        state
            .events
            .finish(job.0, auth.key_organization(), &lease, None)
            .await?;
        Ok(Done::NoContent)
    }

    /// Fails the job with an error message (and an optional error code).
    #[oai(path = "/provisionerd/jobs/:job/fail", method = "post")]
    #[tracing::instrument(skip_all, fields(job_id = %job.0))]
    async fn fail(
        &self,
        Data(state): Data<&AppState>,
        auth: DaemonAuth,
        job: Path<Uuid>,
        body: Json<FailJobRequest>,
    ) -> Result<Done, ApiError> {
        let body = body.0;
        let mut v = Validations::new();
        let lease = required_lease(&mut v, body.lease_token);
        let failure = parse_failure(&mut v, "", body.error, body.error_code);
        v.finish()?;
        let failure = failure.expect("validated above");
        state
            .events
            .finish(job.0, auth.key_organization(), &lease, Some(failure))
            .await?;
        Ok(Done::NoContent)
    }
}
