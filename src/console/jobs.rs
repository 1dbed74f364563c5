//! `/jobs`: the job list with the list endpoint's filters as query parameters (`status`,
//! `initiator`, `tags`, `ids`, `limit`; plus `organization` and the paging cursor `before`), a
//! search box in the CLI's `--search` syntax, and a bulk cancel of everything the filter matches.

use std::collections::HashMap;

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{Request, Response, handler};
use uuid::Uuid;

use super::error::PageError;
use super::page::{Nav, api_name, confirm_dialog, html_response, shell, status_badge, tag_chips};
use super::session::{Viewer, see_other};
use super::time::time_el;
use crate::api::AppState;
use crate::api::job_views::{ProvisionerJob, present_all};
use crate::api::jobs::resolve_initiator;
use crate::domain::Validations;
use crate::domain::job_query::JobFilter;
use crate::domain::job_query::parse_list_query;
use crate::domain::job_search::{Filters, SearchError};
use crate::domain::now;
use crate::domain::organization::Organization;
use crate::store::console::JobCursor;

/// Rows on one page at most, whatever `limit` asks: keeps a page small; `before` pages on.
pub const MAX_ROWS: u64 = 200;

/// Parameters of the console that the list endpoint does not have.
const CONSOLE_PARAMS: [&str; 3] = ["organization", "before", "search"];

/// A request's query resolved into a filter.
struct Selection {
    organization: Organization,
    /// The list parameters as given, for links that keep the filter.
    list_params: Vec<(String, String)>,
    /// The filter as the operator wrote it (search box text, dialog text, cancel body).
    filters: Filters,
    filter: JobFilter,
    limit: u64,
    before: Option<Uuid>,
}

fn query_pairs(req: &Request) -> Result<Vec<(String, String)>, PageError> {
    serde_urlencoded::from_str(req.uri().query().unwrap_or_default())
        .map_err(|_| PageError::bad_request("The query string is not valid URL encoding."))
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `/jobs?…` with these parameters.
pub fn jobs_url(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        "/jobs".into()
    } else {
        format!(
            "/jobs?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    }
}

/// Resolves the query: `Err(Ok(validations))` for bad filters, `Err(Err(page))` otherwise.
async fn select(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<Result<Selection, (Organization, Validations)>, PageError> {
    let organization = state
        .store
        .resolve_organization(first(pairs, "organization").unwrap_or("default"))
        .await?;
    let list_params: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !CONSOLE_PARAMS.contains(&k.as_str()))
        .cloned()
        .collect();
    let (query, mut v) = parse_list_query(&list_params);
    let before = first(pairs, "before").and_then(|raw| {
        let id = Uuid::parse_str(raw).ok();
        if id.is_none() {
            v.push("before", format!("\"{raw}\" is not a valid job id"));
        }
        id
    });
    let initiator = resolve_initiator(state, &mut v, "initiator", query.initiator.clone()).await?;
    if !v.is_empty() {
        return Ok(Err((organization, v)));
    }
    let filters = Filters {
        statuses: query
            .statuses
            .iter()
            .flatten()
            .map(|s| s.as_str().to_string())
            .collect(),
        initiator: query.initiator.clone(),
        tags: query.tags.clone().unwrap_or_default(),
        ids: query.ids.iter().flatten().map(Uuid::to_string).collect(),
    };
    Ok(Ok(Selection {
        organization,
        list_params,
        filters,
        filter: JobFilter {
            ids: query.ids,
            statuses: query.statuses,
            tags: query.tags,
            initiator,
        },
        limit: query.limit.min(MAX_ROWS),
        before,
    }))
}

/// The search box's text as list parameters, or why it cannot be.
fn search_redirect(pairs: &[(String, String)], search: &str) -> Result<String, SearchError> {
    let mut filters = Filters::default();
    filters.apply_search(search)?;
    let mut params = filters.query();
    if let Some(org) = first(pairs, "organization") {
        params.insert(0, ("organization".into(), org.into()));
    }
    if let Some(limit) = first(pairs, "limit") {
        params.push(("limit".into(), limit.into()));
    }
    Ok(jobs_url(&params))
}

/// `GET /jobs`.
#[handler]
pub async fn page(
    viewer: Viewer,
    req: &Request,
    Data(state): Data<&AppState>,
) -> Result<Response, PageError> {
    viewer.require_owner("Jobs")?;
    let pairs = query_pairs(req)?;
    let mut errors = Validations::new();
    let search = first(&pairs, "search").map(str::to_string);
    if let Some(search) = &search {
        match search_redirect(&pairs, search) {
            Ok(url) => return Ok(see_other(&url)),
            Err(e) => errors.push("search", e.to_string()),
        }
    }
    let organizations = state.store.list_organizations(None).await?;
    let selection = if errors.is_empty() {
        select(state, &pairs).await?
    } else {
        let org = state
            .store
            .resolve_organization(first(&pairs, "organization").unwrap_or("default"))
            .await?;
        Err((org, errors))
    };
    let (selection, errors) = match selection {
        Ok(s) => (s, Validations::new()),
        Err((org, v)) => {
            let view = JobsView {
                organization: org,
                organizations,
                search_text: search.unwrap_or_default(),
                errors: v,
                listing: None,
            };
            let body = render(&viewer, &view);
            return Ok(html_response(StatusCode::BAD_REQUEST, body));
        }
    };
    let listing = list(state, &selection).await?;
    let view = JobsView {
        search_text: selection.filters.to_search(),
        organization: selection.organization.clone(),
        organizations,
        errors,
        listing: Some((selection, listing)),
    };
    Ok(html_response(StatusCode::OK, render(&viewer, &view)))
}

/// `GET /jobs/count?…`: how many jobs the filter matches and how many a bulk cancel would
/// cancel now (the confirmation re-reads this when it opens).
#[handler]
pub async fn count(
    viewer: Viewer,
    req: &Request,
    Data(state): Data<&AppState>,
) -> Result<Json<serde_json::Value>, PageError> {
    viewer.require_owner("Jobs")?;
    let pairs = query_pairs(req)?;
    let selection = select(state, &pairs)
        .await?
        .map_err(|(_, v)| PageError::bad_request(describe(&v)))?;
    let (matching, cancelable) = state
        .store
        .count_jobs(selection.organization.id, &selection.filter)
        .await?;
    Ok(Json(
        serde_json::json!({"matching": matching, "cancelable": cancelable}),
    ))
}

fn describe(v: &Validations) -> String {
    v.0.iter()
        .map(|e| format!("{}: {}", e.field, e.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One page of rows and what the filter matches in all.
struct Listing {
    jobs: Vec<ProvisionerJob>,
    usernames: HashMap<Uuid, String>,
    more: bool,
    matching: u64,
    cancelable: u64,
}

async fn list(state: &AppState, s: &Selection) -> Result<Listing, PageError> {
    let org = s.organization.id;
    let cursor = match s.before {
        Some(id) => Some(JobCursor::from(&state.store.job(org, id).await.map_err(
            |_| PageError::bad_request("The job to page from (before) does not exist."),
        )?)),
        None => None,
    };
    let mut rows = state
        .store
        .jobs_page(org, &s.filter, cursor, s.limit + 1)
        .await?;
    let more = rows.len() as u64 > s.limit;
    rows.truncate(s.limit as usize);
    let (matching, cancelable) = state.store.count_jobs(org, &s.filter).await?;
    let jobs = present_all(state, org, rows).await?;
    let usernames = usernames(state, jobs.iter().map(|j| j.initiator_id)).await?;
    Ok(Listing {
        jobs,
        usernames,
        more,
        matching,
        cancelable,
    })
}

/// Usernames of the given users (each looked up once).
pub async fn usernames(
    state: &AppState,
    ids: impl Iterator<Item = Uuid>,
) -> Result<HashMap<Uuid, String>, PageError> {
    let mut names = HashMap::new();
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(e) = names.entry(id) {
            let name = match state.store.user_by_id(id).await {
                Ok(u) => u.username,
                Err(crate::store::StoreError::NotFound) => id.to_string(),
                Err(e) => return Err(e.into()),
            };
            e.insert(name);
        }
    }
    Ok(names)
}

struct JobsView {
    organization: Organization,
    organizations: Vec<Organization>,
    search_text: String,
    errors: Validations,
    listing: Option<(Selection, Listing)>,
}

fn org_param(view: &JobsView) -> Vec<(String, String)> {
    if view.organization.is_default {
        Vec::new()
    } else {
        vec![("organization".into(), view.organization.name.clone())]
    }
}

fn render(viewer: &Viewer, view: &JobsView) -> Markup {
    let body = html! {
        div.heading {
            h1 { "Jobs" }
            @if view.organizations.len() > 1 {
                nav.orgs aria-label="Organization" {
                    @for o in &view.organizations {
                        @let params = if o.is_default { vec![] } else { vec![("organization".to_string(), o.name.clone())] };
                        @if o.id == view.organization.id {
                            a href=(jobs_url(&params)) aria-current="page" { (o.name) }
                        } @else {
                            a href=(jobs_url(&params)) { (o.name) }
                        }
                    }
                }
            }
        }
        form.search method="get" action="/jobs" role="search" {
            @if !view.organization.is_default {
                input type="hidden" name="organization" value=(view.organization.name);
            }
            label for="search" { "Search" }
            input #search name="search" type="search" value=(view.search_text)
                placeholder="initiator:prebuilds status:pending tag:os=linux" spellcheck="false";
            button type="submit" { "Apply" }
            @if !view.search_text.is_empty() {
                a.clear href=(jobs_url(&org_param(view))) { "Clear" }
            }
        }
        @if !view.errors.is_empty() {
            ul.error role="alert" {
                @for e in &view.errors.0 { li { code { (e.field) } ": " (e.detail) } }
            }
        }
        @if let Some((selection, listing)) = &view.listing {
            (listing_markup(viewer, view, selection, listing))
        }
    };
    shell(viewer, Nav::Jobs, "Jobs", body)
}

fn listing_markup(viewer: &Viewer, view: &JobsView, s: &Selection, l: &Listing) -> Markup {
    let mut base = org_param(view);
    base.extend(s.list_params.iter().cloned());
    let older = l.jobs.last().filter(|_| l.more).map(|last| {
        let mut p = base.clone();
        p.push(("before".into(), last.id.to_string()));
        jobs_url(&p)
    });
    let now = now();
    let count_url = format!(
        "/jobs/count?{}",
        serde_urlencoded::to_string(&base).unwrap_or_default()
    );
    let body = s.filters.cancel_body().to_string();
    let can_bulk = viewer.is_owner() && !s.filters.is_empty();
    html! {
        div.toolbar {
            p.summary data-matching=(l.matching) {
                strong { (l.matching) } @if l.matching == 1 { " job matches" } @else { " jobs match" }
                @if l.matching as usize > l.jobs.len() { " · showing " (l.jobs.len()) }
                @if s.before.is_some() { " · older page" }
            }
            @if can_bulk {
                button.danger type="button" data-opens="cancel-matching" disabled[l.cancelable == 0] {
                    "Cancel matching jobs"
                }
            } @else if viewer.is_owner() {
                span.muted { "Filter the list to cancel jobs in bulk." }
            }
        }
        @if can_bulk {
            (confirm_dialog("cancel-matching", "Cancel matching jobs", "cancel-matching",
                &[("organization", &view.organization.name), ("body", &body), ("count_url", &count_url)],
                html! {
                    p {
                        "This cancels " strong data-dialog-count { (l.cancelable) }
                        " pending or running jobs matching " code { (s.filters.to_search()) }
                        " in " (view.organization.name) ". Pending jobs are canceled at once; running jobs are told to stop."
                    }
                }))
        }
        table.jobs {
            thead { tr {
                th scope="col" { "Created" } th scope="col" { "ID" } th scope="col" { "Type" }
                th scope="col" { "Status" } th scope="col" { "Queue" } th scope="col" { "Tags" }
                th scope="col" { "Initiator" } th scope="col" { "Worker" }
            } }
            tbody {
                @for j in &l.jobs {
                    tr data-job-id=(j.id) {
                        td.nowrap { (time_el(j.created_at, now)) }
                        td { a.mono href={ "/jobs/" (j.id) } title=(j.id) { (j.id.to_string()[..8]) } }
                        td { (api_name(&j.job_type)) }
                        td { (status_badge(&api_name(&j.status))) }
                        td.num { (queue_cell(j)) }
                        td { (tag_chips(&j.tags)) }
                        td { (l.usernames.get(&j.initiator_id).cloned().unwrap_or_default()) }
                        td { @if j.worker_name.is_empty() { span.muted { "—" } } @else { (j.worker_name) } }
                    }
                }
            }
        }
        @if l.jobs.is_empty() {
            p.empty { "No jobs match." }
        }
        nav.pager aria-label="Pages" {
            @if s.before.is_some() { a href=(jobs_url(&base)) { "← Newest" } }
            @if let Some(href) = older { a href=(href) rel="next" { "Older →" } }
        }
    }
}

fn queue_cell(j: &ProvisionerJob) -> Markup {
    use crate::api::job_views::ProvisionerJobStatus as S;
    html! {
        @if j.status != S::Pending {
            span.muted { "—" }
        } @else if j.queue_size == 0 {
            span.warn title="No online daemon can run this job" { "no daemon" }
        } @else {
            (j.queue_position) " / " (j.queue_size)
        }
    }
}
