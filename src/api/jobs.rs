//! Admin job routes under `/organizations/{organization}/provisionerjobs`: enqueue, read, list,
//! cancel (one or by filter) and logs.

use std::collections::BTreeMap;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use super::ApiTags;
use super::access::{org_id_for_member, org_id_for_owner};
use super::auth::Caller;
use super::error::ApiError;
use super::job_views::{ProvisionerJob, ProvisionerJobInput, ProvisionerJobMetadata, present_all};
use super::state::AppState;
use super::users::Message;
use crate::domain::Validations;
use crate::domain::job::{Job, JobLog, JobStatus, JobType, Provisioner};
use crate::domain::job_query::{JobFilter, parse_list_query};
use crate::domain::limits::{
    MAX_ICON_CHARS, MAX_INPUT_BYTES, MAX_METADATA_NAME_CHARS, check_bytes, check_chars,
};
use crate::domain::tags::{Tags, parse_string_map};
use crate::store::jobs::NewJob;
use crate::wire::jobs::ProvisionerJobLog;

pub struct JobsApi;

/// Body of `POST …/provisionerjobs`.
#[derive(Object)]
pub struct EnqueueJobRequest {
    /// `template_version_import`, `workspace_build` or `template_version_dry_run`.
    #[oai(rename = "type")]
    job_type: Option<String>,
    /// `terraform` (default) or `echo`.
    provisioner: Option<String>,
    /// A JSON object of string values.
    tags: Option<Value>,
    input: Option<ProvisionerJobInput>,
    file_id: Option<Uuid>,
    metadata: Option<ProvisionerJobMetadata>,
    /// Who the job is for: an id or a username (owners only; default: the caller).
    initiator: Option<String>,
}

/// Body of `POST …/provisionerjobs/cancel`: the list filters, at least one. An empty list or
/// an empty `tags` object is refused (400): it would otherwise select every job.
#[derive(Object)]
pub struct CancelJobsRequest {
    /// Job ids; at least one when given.
    ids: Option<Vec<Uuid>>,
    /// Statuses; at least one when given.
    status: Option<Vec<String>>,
    /// A JSON object of string values, at least one.
    tags: Option<Value>,
    /// A user id or a username.
    initiator: Option<String>,
}

#[derive(Object)]
pub struct CancelJobsResponse {
    canceled: Vec<Uuid>,
    count: u64,
}

impl From<JobLog> for ProvisionerJobLog {
    fn from(l: JobLog) -> Self {
        Self {
            id: l.id,
            created_at: l.created_at,
            log_source: l.source.as_str().to_string(),
            log_level: l.level.as_str().to_string(),
            stage: l.stage,
            output: l.output,
        }
    }
}

#[derive(ApiResponse)]
pub enum JobCreated {
    #[oai(status = 201)]
    Created(Json<ProvisionerJob>),
}

/// Parses tags given by a client (job, daemon or key tags, or a filter) with the domain's one
/// reader ([`parse_string_map`]); anything else is a validation failure of `field`.
pub fn parse_tags(
    v: &mut Validations,
    field: &str,
    tags: Option<Value>,
) -> Option<BTreeMap<String, String>> {
    v.check(field, parse_string_map(tags?))
}

/// A job's `metadata` and `input` within their limits (one validation per field past one).
fn check_job_text(v: &mut Validations, input: &Value, metadata: &ProvisionerJobMetadata) {
    let names = [
        (
            "metadata.template_version_name",
            &metadata.template_version_name,
        ),
        ("metadata.template_name", &metadata.template_name),
        (
            "metadata.template_display_name",
            &metadata.template_display_name,
        ),
        ("metadata.workspace_name", &metadata.workspace_name),
    ];
    for (field, value) in names {
        v.check(field, check_chars(value, MAX_METADATA_NAME_CHARS));
    }
    v.check(
        "metadata.template_icon",
        check_chars(&metadata.template_icon, MAX_ICON_CHARS),
    );
    let size = serde_json::to_vec(input).map_or(usize::MAX, |b| b.len());
    v.check("input", check_bytes(size, MAX_INPUT_BYTES));
}

/// An initiator filter (list, bulk cancel): a well-formed id is taken as is, so an id of no
/// user matches nothing (as in Coder); a username must exist.
pub async fn initiator_filter(
    state: &AppState,
    v: &mut Validations,
    field: &str,
    raw: Option<String>,
) -> Result<Option<Uuid>, ApiError> {
    match raw.as_deref().map(Uuid::parse_str) {
        Some(Ok(id)) => Ok(Some(id)),
        _ => resolve_initiator(state, v, field, raw).await,
    }
}

/// Resolves an initiator given as an id or a username; unknown is a validation failure.
pub async fn resolve_initiator(
    state: &AppState,
    v: &mut Validations,
    field: &str,
    raw: Option<String>,
) -> Result<Option<Uuid>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    match state.store.resolve_user(&raw).await {
        Ok(user) => Ok(Some(user.id)),
        Err(crate::store::StoreError::NotFound) => {
            v.push(field, format!("no user with id or username \"{raw}\""));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl JobsApi {
    async fn one(
        &self,
        state: &AppState,
        organization_id: Uuid,
        job: Job,
    ) -> Result<ProvisionerJob, ApiError> {
        let mut all = present_all(state, organization_id, vec![job]).await?;
        Ok(all.pop().expect("one job in, one job out"))
    }
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Enqueues a job (owners, or members of the organization).
    #[oai(path = "/organizations/:organization/provisionerjobs", method = "post")]
    #[tracing::instrument(skip_all, fields(job_id))]
    async fn enqueue(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        body: Json<EnqueueJobRequest>,
    ) -> Result<JobCreated, ApiError> {
        let org = org_id_for_member(state, &caller, &organization.0).await?;
        let body = body.0;
        let mut v = Validations::new();
        let job_type = v.required("type", body.job_type, |t| JobType::parse(&t));
        let provisioner = v.check(
            "provisioner",
            Provisioner::parse(body.provisioner.as_deref().unwrap_or("terraform")),
        );
        let initiator = resolve_initiator(state, &mut v, "initiator", body.initiator).await?;
        let initiator = initiator.unwrap_or(caller.user.id);
        let tags = parse_tags(
            &mut v,
            "tags",
            body.tags
                .or_else(|| Some(Value::Object(Default::default()))),
        );
        let tags = tags.and_then(|t| v.check("tags", Tags::normalize(t, Some(initiator))));
        let input = serde_json::to_value(body.input.unwrap_or_default()).expect("serialisable");
        let metadata = body.metadata.unwrap_or_default();
        check_job_text(&mut v, &input, &metadata);
        v.finish()?;
        if initiator != caller.user.id && !caller.is_owner() {
            return Err(ApiError::forbidden()
                .with_detail("Only owners may enqueue jobs for another initiator."));
        }
        let (Some(job_type), Some(provisioner), Some(tags)) = (job_type, provisioner, tags) else {
            unreachable!("validated above");
        };
        let new = NewJob {
            organization_id: org,
            initiator_id: initiator,
            job_type,
            provisioner,
            tags,
            input,
            file_id: body.file_id.unwrap_or_else(Uuid::nil),
            metadata: serde_json::to_value(metadata).expect("serialisable"),
        };
        let job = state.events.enqueue(new).await?;
        Ok(JobCreated::Created(Json(self.one(state, org, job).await?)))
    }

    /// Jobs of the organization, newest first, filtered. Multi-valued parameters accept comma
    /// lists and repetition; every bad or unknown parameter is reported in one 400.
    #[oai(path = "/organizations/:organization/provisionerjobs", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        request: &poem::Request,
        organization: Path<String>,
        /// How many jobs at most (1–10000, default 50).
        #[oai(name = "limit")]
        _limit: Query<Option<String>>,
        /// Job ids (UUIDs), comma-separated or repeated.
        #[oai(name = "ids")]
        _ids: Query<Option<String>>,
        /// Statuses, comma-separated or repeated (`unknown` matches nothing).
        #[oai(name = "status")]
        _status: Query<Option<String>>,
        /// A JSON object: the job's tags must contain these (`{}` matches all).
        #[oai(name = "tags")]
        _tags: Query<Option<String>>,
        /// The initiator: a user id or a username (`prebuilds` for prebuild jobs).
        #[oai(name = "initiator")]
        _initiator: Query<Option<String>>,
    ) -> Result<Json<Vec<ProvisionerJob>>, ApiError> {
        let org = org_id_for_owner(state, &caller, &organization.0).await?;
        let raw = request.uri().query().unwrap_or_default();
        let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(raw) else {
            let mut v = Validations::new();
            v.push("query", "the query string is not valid URL encoding");
            return Err(v.into());
        };
        let (query, mut v) = parse_list_query(&pairs);
        let initiator = initiator_filter(state, &mut v, "initiator", query.initiator).await?;
        v.finish()?;
        let filter = JobFilter {
            ids: query.ids,
            statuses: query.statuses,
            tags: query.tags,
            initiator,
        };
        let jobs = state.store.list_jobs(org, &filter, query.limit).await?;
        Ok(Json(present_all(state, org, jobs).await?))
    }

    /// One job.
    #[oai(
        path = "/organizations/:organization/provisionerjobs/:job",
        method = "get"
    )]
    #[tracing::instrument(skip_all, fields(job_id = %job.0))]
    async fn get(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        job: Path<Uuid>,
    ) -> Result<Json<ProvisionerJob>, ApiError> {
        let org = org_id_for_owner(state, &caller, &organization.0).await?;
        let job = state.store.job(org, job.0).await?;
        Ok(Json(self.one(state, org, job).await?))
    }

    /// Cancels a job: pending → canceled at once, running → canceling.
    #[oai(
        path = "/organizations/:organization/provisionerjobs/:job/cancel",
        method = "post"
    )]
    #[tracing::instrument(skip_all, fields(job_id = %job.0))]
    async fn cancel(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        job: Path<Uuid>,
        /// Cancel only if the job is in this status (`pending` or `running`); 412 otherwise.
        expect_status: Query<Option<String>>,
    ) -> Result<Json<Message>, ApiError> {
        let org = org_id_for_owner(state, &caller, &organization.0).await?;
        let expect = match expect_status.0.as_deref() {
            None => None,
            Some("pending") => Some(JobStatus::Pending),
            Some("running") => Some(JobStatus::Running),
            Some(other) => {
                let mut v = Validations::new();
                v.push(
                    "expect_status",
                    format!("\"{other}\" must be \"pending\" or \"running\""),
                );
                return Err(v.into());
            }
        };
        state
            .events
            .cancel(org, job.0, expect, &caller.user.username)
            .await?;
        Ok(Json(Message {
            message: "Job has been marked as canceled...".into(),
        }))
    }

    /// Cancels every pending or running job matching the filters (at least one filter).
    #[oai(
        path = "/organizations/:organization/provisionerjobs/cancel",
        method = "post"
    )]
    async fn cancel_many(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        body: Json<CancelJobsRequest>,
    ) -> Result<Json<CancelJobsResponse>, ApiError> {
        let org = org_id_for_owner(state, &caller, &organization.0).await?;
        let body = body.0;
        let mut v = Validations::new();
        if body.ids.is_none()
            && body.status.is_none()
            && body.tags.is_none()
            && body.initiator.is_none()
        {
            v.push(
                "filters",
                "give at least one of ids, status, tags or initiator",
            );
        }
        let empty = "must not be empty: an empty filter would select every job";
        if body.ids.as_ref().is_some_and(Vec::is_empty) {
            v.push("ids", empty);
        }
        if body.status.as_ref().is_some_and(Vec::is_empty) {
            v.push("status", empty);
        }
        let statuses = body.status.map(|all| {
            all.iter()
                .filter_map(|s| v.check("status", JobStatus::parse(s)))
                .collect::<Vec<JobStatus>>()
        });
        let tags = parse_tags(&mut v, "tags", body.tags);
        if tags.as_ref().is_some_and(BTreeMap::is_empty) {
            v.push("tags", empty);
        }
        let initiator = initiator_filter(state, &mut v, "initiator", body.initiator).await?;
        v.finish()?;
        let filter = JobFilter {
            ids: body.ids,
            statuses,
            tags,
            initiator,
        };
        let canceled = state
            .events
            .cancel_many(org, &filter, &caller.user.username)
            .await?;
        Ok(Json(CancelJobsResponse {
            count: canceled.len() as u64,
            canceled,
        }))
    }

    /// Log lines with id greater than `after`, in id order. Add `follow` to stream them over a
    /// WebSocket until the job ends.
    #[oai(
        path = "/organizations/:organization/provisionerjobs/:job/logs",
        method = "get"
    )]
    #[tracing::instrument(skip_all, fields(job_id = %job.0))]
    async fn logs(
        &self,
        Data(state): Data<&AppState>,
        caller: Caller,
        organization: Path<String>,
        job: Path<Uuid>,
        after: Query<Option<i64>>,
        /// Upgrade to a WebSocket that streams lines until the job has finished.
        #[oai(name = "follow")]
        _follow: Query<Option<String>>,
    ) -> Result<Json<Vec<ProvisionerJobLog>>, ApiError> {
        let org = org_id_for_owner(state, &caller, &organization.0).await?;
        let job = state.store.job(org, job.0).await?;
        let logs = state.store.job_logs(job.id, after.0.unwrap_or(0)).await?;
        Ok(Json(logs.into_iter().map(Into::into).collect()))
    }
}
