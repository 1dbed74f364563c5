//! `/`: per organization, the jobs by status, pending jobs no online daemon can run, the oldest
//! pending job's age, the last five minutes' throughput and the daemons by status; and the
//! prebuilds switch. The script refreshes the numbers from `GET …/queue` every few seconds.

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::Data;
use poem::{Response, handler};

use super::error::PageError;
use super::page::{Nav, confirm_dialog, html_response, shell};
use super::session::Viewer;
use super::time::duration_words;
use crate::api::AppState;
use crate::domain::daemon::Liveness;
use crate::domain::job::JobStatus;
use crate::domain::now;
use crate::domain::organization::Organization;
use crate::store::overview::QueueOverview;

/// How often the script re-reads the numbers (the issue asks for at most 5 s).
pub const REFRESH_MS: u64 = 4000;

/// `GET /`.
#[handler]
pub async fn page(viewer: Viewer, Data(state): Data<&AppState>) -> Result<Response, PageError> {
    // The organizations whose queue the API shows this user: all for owners, their own for
    // members.
    let mut organizations = state.store.list_organizations(None).await?;
    if !viewer.is_owner() {
        let mine = state
            .store
            .organization_ids_of(viewer.caller.user.id)
            .await?;
        organizations.retain(|o| mine.contains(&o.id));
    }
    let liveness = Liveness::now_secs(state.settings.provisioner.stale_after_secs);
    let mut sections = Vec::with_capacity(organizations.len());
    for org in organizations {
        let queue = state.store.queue_overview(org.id, liveness).await?;
        sections.push((org, queue));
    }
    let body = render(&viewer, &sections);
    Ok(html_response(
        StatusCode::OK,
        shell(&viewer, Nav::Overview, "Overview", body),
    ))
}

/// The statuses shown, in the order a job moves through them.
const STATUSES: [JobStatus; 6] = [
    JobStatus::Pending,
    JobStatus::Running,
    JobStatus::Canceling,
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Canceled,
];

fn render(viewer: &Viewer, sections: &[(Organization, QueueOverview)]) -> Markup {
    html! {
        div.heading {
            h1 { "Overview" }
            @if viewer.is_owner() { (prebuilds(viewer.prebuilds_paused)) }
        }
        @if !viewer.is_owner() {
            p.notice {
                "Your account is a member: you see the queue's numbers of your organizations; "
                "its jobs and daemons are visible to owners."
            }
        }
        @for (org, q) in sections {
            (org_section(org, q))
        }
    }
}

fn prebuilds(paused: bool) -> Markup {
    let (label, dialog, text) = if paused {
        (
            "Resume prebuilds",
            "resume-prebuilds",
            "Resume prebuilds? New prebuild jobs will be accepted again.",
        )
    } else {
        (
            "Pause prebuilds",
            "pause-prebuilds",
            "Pause prebuilds? New prebuild jobs will be refused until prebuilds are resumed; \
             jobs already queued stay queued.",
        )
    };
    let paused_after = (!paused).to_string();
    html! {
        div.prebuilds {
            span { "Prebuilds: " strong data-prebuilds=(if paused { "paused" } else { "running" }) {
                @if paused { "paused" } @else { "accepted" }
            } }
            button.danger[!paused] type="button" data-opens=(dialog) { (label) }
        }
        (confirm_dialog(dialog, label, "set-prebuilds", &[("paused", &paused_after)], html! { p { (text) } }))
    }
}

fn org_section(org: &Organization, q: &QueueOverview) -> Markup {
    let jobs_link = |status: &str| {
        let mut params = vec![("status".to_string(), status.to_string())];
        if !org.is_default {
            params.insert(0, ("organization".into(), org.name.clone()));
        }
        super::jobs::jobs_url(&params)
    };
    html! {
        section.org data-organization=(org.id)
            data-queue-url={ "/api/v2/organizations/" (org.id) "/queue" } data-refresh-ms=(REFRESH_MS) {
            h2 { (org.display_name) " " span.muted { (org.name) } }
            div.cards {
                @for s in STATUSES {
                    a.card href=(jobs_link(s.as_str())) {
                        span class={ "n s-" (s.as_str()) } data-count=(s.as_str()) { (q.jobs.get(&s).copied().unwrap_or(0)) }
                        span.label { (s.as_str()) }
                    }
                }
                a.card.alert href=(jobs_link("pending")) title="Pending jobs that no online daemon can run" {
                    span.n data-count="unmatched" { (q.pending_unmatched) }
                    span.label { "pending, no daemon" }
                }
            }
            div.facts {
                dl {
                    dt { "Oldest pending" }
                    dd data-stat="oldest" { (q.oldest_pending.map(|t| duration_words((now() - t).num_seconds())).unwrap_or_else(|| "—".into())) }
                    dt { "Enqueued, last 5 min" }
                    dd data-stat="enqueued" { (q.enqueued_recently) }
                    dt { "Finished, last 5 min" }
                    dd data-stat="finished" { (q.finished_recently) }
                }
                dl {
                    dt { a href={ "/daemons?organization=" (org.name) } { "Daemons idle" } }
                    dd data-daemons="idle" { (q.daemons.get("idle").copied().unwrap_or(0)) }
                    dt { "busy" } dd data-daemons="busy" { (q.daemons.get("busy").copied().unwrap_or(0)) }
                    dt { "offline" } dd data-daemons="offline" { (q.daemons.get("offline").copied().unwrap_or(0)) }
                }
            }
            p.updated.muted { "Updated " span data-updated { "now" } }
        }
    }
}
