//! `/daemons`: each organization's daemons with their tags, provisioners, status, current job
//! and when they were last seen.

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{Response, handler};
use serde::Deserialize;

use super::error::PageError;
use super::page::{Nav, html_response, shell, status_badge, tag_chips};
use super::session::Viewer;
use super::time::time_el;
use crate::api::AppState;
use crate::api::daemon_auth::builtin_key_name;
use crate::domain::daemon::{DaemonView, Liveness};
use crate::domain::now;
use crate::domain::organization::Organization;

#[derive(Deserialize)]
pub struct DaemonsQuery {
    organization: Option<String>,
}

/// `GET /daemons`.
#[handler]
pub async fn page(
    viewer: Viewer,
    Query(q): Query<DaemonsQuery>,
    Data(state): Data<&AppState>,
) -> Result<Response, PageError> {
    viewer.require_owner("Daemons")?;
    let org = state
        .store
        .resolve_organization(q.organization.as_deref().unwrap_or("default"))
        .await?;
    let organizations = state.store.list_organizations(None).await?;
    let liveness = Liveness::now_secs(state.settings.provisioner.stale_after_secs);
    let daemons = state.store.list_daemons(org.id, liveness).await?;
    let body = render(&org, &organizations, &daemons);
    Ok(html_response(
        StatusCode::OK,
        shell(&viewer, Nav::Daemons, "Daemons", body),
    ))
}

fn render(org: &Organization, organizations: &[Organization], daemons: &[DaemonView]) -> Markup {
    let now = now();
    let count = |s: &str| daemons.iter().filter(|d| d.status.as_str() == s).count();
    html! {
        div.heading {
            h1 { "Daemons" }
            @if organizations.len() > 1 {
                nav.orgs aria-label="Organization" {
                    @for o in organizations {
                        a href={ "/daemons?organization=" (o.name) }
                            aria-current=[(o.id == org.id).then_some("page")] { (o.name) }
                    }
                }
            }
        }
        p.summary {
            strong { (daemons.len()) } @if daemons.len() == 1 { " daemon in " } @else { " daemons in " } (org.name) ": "
            (count("idle")) " idle, " (count("busy")) " busy, " (count("offline")) " offline"
        }
        table.daemons {
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Tags" }
                th scope="col" { "Provisioners" } th scope="col" { "Current job" }
                th scope="col" { "Key" } th scope="col" { "Version" } th scope="col" { "Last seen" }
            } }
            tbody {
                @for d in daemons {
                    tr data-daemon-id=(d.daemon.id) {
                        td { (d.daemon.name) }
                        td { (status_badge(d.status.as_str())) }
                        td { (tag_chips(d.daemon.tags.as_map())) }
                        td { (d.daemon.provisioner_names().join(", ")) }
                        td {
                            @if let Some(job) = &d.current_job {
                                a.mono href={ "/jobs/" (job.id) } { (job.id.to_string()[..8]) }
                                " " (status_badge(job.status.as_str()))
                            } @else { span.muted { "—" } }
                        }
                        td { (d.key_name.as_deref().or_else(|| builtin_key_name(d.daemon.key_id)).unwrap_or_default()) }
                        td { (d.daemon.version) }
                        td.nowrap { (time_el(d.daemon.last_seen_at, now)) }
                    }
                }
            }
        }
        @if daemons.is_empty() {
            p.empty { "No daemon has connected to " (org.name) " yet." }
        }
    }
}
