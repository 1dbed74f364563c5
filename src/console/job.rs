//! `/jobs/{id}`: every field of one job, its timeline, its error, where it stands in the queue
//! and why it waits, its logs (followed live until it ends) and a cancel button that cancels only
//! if the job is still in the status the page showed.

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Response, handler};
use uuid::Uuid;

use super::error::PageError;
use super::jobs::{jobs_url, usernames};
use super::page::{
    Nav, api_name, confirm_dialog, html_response, is_default_tag, shell, status_badge, tag_chips,
};
use super::session::Viewer;
use super::time::{exact, time_el};
use crate::api::AppState;
use crate::api::job_views::{ProvisionerJob, ProvisionerJobStatus as S, present_all};
use crate::domain::daemon::{DaemonStatus, DaemonView, Liveness};
use crate::domain::job::Job;
use crate::domain::now;
use crate::domain::organization::Organization;

/// `GET /jobs/{id}`.
#[handler]
pub async fn page(
    viewer: Viewer,
    Path(raw): Path<String>,
    Data(state): Data<&AppState>,
) -> Result<Response, PageError> {
    viewer.require_owner("Jobs")?;
    let id = Uuid::parse_str(&raw).map_err(|_| {
        PageError::new(
            StatusCode::NOT_FOUND,
            format!("Invalid job id \"{raw}\": expected a UUID."),
        )
    })?;
    let row = state.store.job_by_id(id).await?;
    let org = state
        .store
        .resolve_organization(&row.organization_id.to_string())
        .await?;
    let liveness = Liveness::now_secs(state.settings.provisioner.stale_after_secs);
    let daemons = state.store.list_daemons(org.id, liveness).await?;
    let job = present_all(state, org.id, vec![row.clone()])
        .await?
        .pop()
        .expect("one job in, one out");
    let initiator = usernames(state, std::iter::once(job.initiator_id))
        .await?
        .remove(&job.initiator_id)
        .unwrap_or_default();
    let view = JobView {
        org,
        row,
        job,
        initiator,
        daemons,
    };
    let title = format!("Job {}", &view.job.id.to_string()[..8]);
    Ok(html_response(
        StatusCode::OK,
        shell(&viewer, Nav::Jobs, &title, render(&viewer, &view)),
    ))
}

struct JobView {
    org: Organization,
    row: Job,
    job: ProvisionerJob,
    initiator: String,
    daemons: Vec<DaemonView>,
}

fn render(viewer: &Viewer, v: &JobView) -> Markup {
    let j = &v.job;
    let status = api_name(&j.status);
    let cancelable = matches!(j.status, S::Pending | S::Running);
    let api = format!(
        "/api/v2/organizations/{}/provisionerjobs/{}",
        v.org.id, j.id
    );
    html! {
        div.heading {
            h1 { "Job " span.mono { (j.id) } }
            span data-job-status=(status) { (status_badge(&status)) }
            @if viewer.is_owner() && cancelable {
                button.danger type="button" data-opens="cancel-job" { "Cancel job" }
            }
        }
        @if viewer.is_owner() && cancelable {
            (confirm_dialog("cancel-job", "Cancel job", "cancel-job",
                &[("url", &format!("{api}/cancel")), ("expect_status", &status)],
                html! {
                    p {
                        "This cancels job " code { (&j.id.to_string()[..8]) } ", which is " strong { (status) } ". "
                        @if j.status == S::Pending {
                            "It is canceled at once and never runs."
                        } @else {
                            "Its daemon " (j.worker_name) " is told to stop; the job ends as canceled."
                        }
                        " If its status has changed meanwhile, nothing is canceled."
                    }
                }))
        }
        @if let Some(error) = &j.error {
            div.errorbox role="alert" {
                strong { "Error" @if let Some(code) = &j.error_code { " (" (code) ")" } ": " }
                (error)
            }
        }
        @if j.started_at.is_some() { (logs(v, &api)) }
        div.columns {
            section {
                h2 { "Timeline" }
                (timeline(j))
                @if j.status == S::Pending {
                    h2 { "Queue" }
                    (waiting(v))
                }
            }
            section {
                h2 { "Fields" }
                (fields(v))
            }
        }
        @if j.started_at.is_none() { (logs(v, &api)) }
    }
}

/// The log view; the script fills it from the API's WebSocket follow.
fn logs(v: &JobView, api: &str) -> Markup {
    html! {
        h2 { "Logs" }
        pre.logs role="log" aria-live="polite" aria-label="Job logs" tabindex="0"
            data-logs-url={ (api) "/logs" } data-job-url=(api)
            data-finished=(v.job.completed_at.is_some()) {}
        @if v.job.logs_overflowed {
            p.warn { "The logs overflowed their size limit: later lines were dropped." }
        }
    }
}

fn timeline(j: &ProvisionerJob) -> Markup {
    let now = now();
    let outcome = match j.status {
        S::Succeeded => "Succeeded",
        S::Failed => "Failed",
        S::Canceled => "Canceled",
        _ => "Finished",
    };
    html! {
        ol.timeline {
            li.done { span.step { "Created" } (time_el(j.created_at, now)) }
            @match j.started_at {
                Some(t) => li.done {
                    span.step { "Started" } (time_el(t, now))
                    @if !j.worker_name.is_empty() { " on " (j.worker_name) }
                },
                None if j.completed_at.is_none() => li.todo { span.step { "Started" } span.muted { "not yet" } },
                None => {},
            }
            @if let Some(t) = j.canceled_at {
                li.done { span.step { "Cancel requested" } (time_el(t, now)) }
            }
            @match j.completed_at {
                Some(t) => li.done { span.step { (outcome) } (time_el(t, now))
                    @if let Some(s) = j.started_at { " after " (super::time::duration_words((t - s).num_seconds())) } },
                None => li.todo { span.step { "Finished" } span.muted { "not yet" } },
            }
        }
    }
}

/// Why a pending job waits: no online daemon matches it, or who could run it and where it
/// stands.
fn waiting(v: &JobView) -> Markup {
    let tags = v.row.tags.as_map();
    let capable: Vec<&DaemonView> = v
        .daemons
        .iter()
        .filter(|d| d.daemon.can_run(&v.row.tags, v.row.provisioner))
        .collect();
    let online: Vec<&&DaemonView> = capable
        .iter()
        .filter(|d| d.status != DaemonStatus::Offline)
        .collect();
    let tag_text: Vec<String> = tags
        .iter()
        .filter(|(k, val)| !is_default_tag(k, val))
        .map(|(k, val)| format!("{k}={val}"))
        .collect();
    html! {
        @if online.is_empty() {
            p.warn data-why="unmatched" {
                @if tag_text.is_empty() {
                    "No online untagged daemon"
                } @else {
                    "No online daemon matches tags " code { (tag_text.join(" ")) }
                }
                " with provisioner " code { (v.row.provisioner) } "."
                @if !capable.is_empty() {
                    " Offline daemons that could run it: "
                    @for (i, d) in capable.iter().enumerate() {
                        @if i > 0 { ", " } (d.daemon.name)
                    } "."
                }
            }
        } @else {
            p data-why="queued" {
                "Position " strong { (v.job.queue_position) } " of " (v.job.queue_size)
                " in the queue of the daemons that can run it: "
                @for (i, d) in online.iter().enumerate() {
                    @if i > 0 { ", " }
                    (d.daemon.name) " (" (d.status.as_str()) ")"
                } "."
            }
        }
    }
}

fn fields(v: &JobView) -> Markup {
    let j = &v.job;
    let now = now();
    let input = serde_json::to_value(&j.input).unwrap_or_default();
    // Only what was set: empty names say nothing.
    let mut metadata = serde_json::to_value(&j.metadata).unwrap_or_default();
    if let Some(m) = metadata.as_object_mut() {
        m.retain(|_, v| v.as_str() != Some(""));
    }
    let by_initiator = jobs_url(&[("initiator".to_string(), v.initiator.clone())]);
    html! {
        table.fields {
            tbody {
                tr { th scope="row" { "ID" } td.mono { (j.id) } }
                tr { th scope="row" { "Status" } td { (api_name(&j.status)) } }
                tr { th scope="row" { "Type" } td { (api_name(&j.job_type)) } }
                tr { th scope="row" { "Provisioner" } td { (v.row.provisioner) } }
                tr { th scope="row" { "Organization" } td { (v.org.name) } }
                tr { th scope="row" { "Initiator" } td { a href=(by_initiator) { (v.initiator) } } }
                tr { th scope="row" { "Tags" } td { (tag_chips(&j.tags)) } }
                tr { th scope="row" { "Worker" } td {
                    @if j.worker_name.is_empty() { span.muted { "—" } } @else { a href="/daemons" { (j.worker_name) } }
                } }
                tr { th scope="row" { "Queue" } td {
                    @if j.queue_size > 0 { "position " (j.queue_position) " of " (j.queue_size) } @else { span.muted { "—" } }
                } }
                @for (name, at) in [("Created", Some(j.created_at)), ("Started", j.started_at), ("Canceled", j.canceled_at), ("Completed", j.completed_at)] {
                    tr { th scope="row" { (name) } td {
                        @if let Some(t) = at { (exact(t)) " · " (time_el(t, now)) } @else { span.muted { "—" } }
                    } }
                }
                tr { th scope="row" { "Error" } td { (j.error.clone().unwrap_or_default()) } }
                tr { th scope="row" { "Error code" } td { (j.error_code.clone().unwrap_or_default()) } }
                tr { th scope="row" { "File ID" } td.mono { (j.file_id) } }
                tr { th scope="row" { "Input" } td { code.json { (input) } } }
                tr { th scope="row" { "Metadata" } td { code.json { (metadata) } } }
                tr { th scope="row" { "Logs overflowed" } td { (j.logs_overflowed) } }
            }
        }
    }
}
