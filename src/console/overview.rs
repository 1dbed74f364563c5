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
use crate::domain::job::JobStatus;
use crate::entity::organization;
use crate::store::console::QueueOverview;

/// How often the script re-reads the numbers (the issue asks for at most 5 s).
pub const REFRESH_MS: u64 = 4000;

/// `GET /`.
#[handler]
pub async fn page(viewer: Viewer, Data(state): Data<&AppState>) -> Result<Response, PageError> {
    let mut sections = Vec::new();
    if viewer.is_owner() {
        let stale = chrono::Duration::seconds(state.settings.provisioner.stale_after_secs as i64);
        for org in state.store.all_organizations().await? {
            let queue = state.store.console_overview(org.id, stale).await?;
            sections.push((org, queue));
        }
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

fn render(viewer: &Viewer, sections: &[(organization::Model, QueueOverview)]) -> Markup {
    html! {
        div.heading {
            h1 { "Overview" }
            @if viewer.is_owner() { (prebuilds(viewer.prebuilds_paused)) }
        }
        @if !viewer.is_owner() {
            p.notice {
                "The queue's numbers, jobs and daemons are visible to owners; your account is a member. "
                "The " a href="/licenses" { "licenses page" } " shows what this deployment is entitled to."
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

fn org_section(org: &organization::Model, q: &QueueOverview) -> Markup {
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
                        span class={ "n s-" (s.as_str()) } data-count=(s.as_str()) { (q.count(s)) }
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
                    dd data-stat="oldest" { (q.oldest_pending_age_seconds.map(duration_words).unwrap_or_else(|| "—".into())) }
                    dt { "Enqueued, last 5 min" }
                    dd data-stat="enqueued" { (q.enqueued_last_5m) }
                    dt { "Finished, last 5 min" }
                    dd data-stat="finished" { (q.finished_last_5m) }
                }
                dl {
                    dt { a href={ "/daemons?organization=" (org.name) } { "Daemons idle" } }
                    dd data-daemons="idle" { (q.daemons.idle) }
                    dt { "busy" } dd data-daemons="busy" { (q.daemons.busy) }
                    dt { "offline" } dd data-daemons="offline" { (q.daemons.offline) }
                }
            }
            p.updated.muted { "Updated " span data-updated { "now" } }
        }
    }
}
