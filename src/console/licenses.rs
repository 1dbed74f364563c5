//! `/licenses`: what the licenses entitle this deployment to, with their warnings and errors
//! (anyone signed in, as `GET /entitlements`); the stored licenses and a form to paste a new one
//! (owners, as the API's `/licenses`). A license's token is never shown again, only its claims.

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::Data;
use poem::{Response, handler};
use serde_json::Value;

use super::error::PageError;
use super::page::{Nav, html_response, shell};
use super::session::Viewer;
use super::time::time_el;
use crate::api::AppState;
use crate::domain::license::LicenseRecord;
use crate::domain::license::{Entitlement, Snapshot, decode_claims_unverified, humanize};
use crate::domain::now;

/// `GET /licenses`.
#[handler]
pub async fn page(viewer: Viewer, Data(state): Data<&AppState>) -> Result<Response, PageError> {
    let snapshot = state.entitlements.current_for_display().await?;
    let licenses = if viewer.is_owner() {
        state.store.list_licenses().await?
    } else {
        Vec::new()
    };
    let body = render(&viewer, &snapshot, &licenses);
    Ok(html_response(
        StatusCode::OK,
        shell(&viewer, Nav::Licenses, "Licenses", body),
    ))
}

fn entitlement_name(e: Entitlement) -> &'static str {
    match e {
        Entitlement::Entitled => "entitled",
        Entitlement::GracePeriod => "grace period",
        Entitlement::NotEntitled => "not entitled",
    }
}

fn claim_time(claims: &Value, key: &str) -> Option<DateTime<Utc>> {
    claims[key]
        .as_i64()
        .and_then(|s| DateTime::from_timestamp(s, 0))
}

fn render(viewer: &Viewer, s: &Snapshot, licenses: &[LicenseRecord]) -> Markup {
    let now = now();
    html! {
        h1 { "Licenses" }
        @for e in &s.errors { p.errorbox role="alert" { (e) } }
        @for w in &s.warnings { p.warnbox role="status" { (w) } }
        p.summary {
            @if s.has_license { "Licensed" @if s.trial { " (trial)" } } @else { "No license: the free feature set." }
            " · computed " (time_el(s.refreshed_at, now))
        }
        h2 { "Entitlements" }
        table.features {
            thead { tr {
                th scope="col" { "Feature" } th scope="col" { "Entitlement" } th scope="col" { "Enabled" }
                th scope="col" { "Limit" } th scope="col" { "Actual" }
            } }
            tbody {
                @for (name, f) in &s.features {
                    tr {
                        td { (humanize(name)) }
                        td { span class={ "badge e-" (format!("{:?}", f.entitlement).to_lowercase()) } { (entitlement_name(f.entitlement)) } }
                        td { @if f.enabled { "yes" } @else { "no" } }
                        td.num { (f.limit.map(|l| l.to_string()).unwrap_or_default()) }
                        td.num { (f.actual.map(|a| a.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
        @if viewer.is_owner() {
            h2 { "Stored licenses" }
            @if licenses.is_empty() {
                p.empty { "No license has been added." }
            } @else {
                table.licenses {
                    thead { tr {
                        th scope="col" { "ID" } th scope="col" { "UUID" } th scope="col" { "Account" }
                        th scope="col" { "Uploaded" } th scope="col" { "Valid from" } th scope="col" { "Expires" }
                    } }
                    tbody {
                        @for l in licenses {
                            @let claims = decode_claims_unverified(&l.jwt).unwrap_or_default();
                            tr {
                                td.num { (l.id) }
                                td.mono { (l.uuid) }
                                td { (claims["account_id"].as_str().unwrap_or_default()) " "
                                     span.muted { (claims["account_type"].as_str().unwrap_or_default()) } }
                                td { (time_el(l.uploaded_at, now)) }
                                td { @if let Some(t) = claim_time(&claims, "nbf") { (time_el(t, now)) } }
                                td { @if let Some(t) = claim_time(&claims, "license_expires").or(claim_time(&claims, "exp")) { (time_el(t, now)) } }
                            }
                        }
                    }
                }
            }
            h2 { "Add a license" }
            form.license data-action="add-license" {
                label for="license" { "License" }
                textarea #license name="license" rows="4" spellcheck="false" autocomplete="off"
                    placeholder="Paste the license (a long token of three dot-separated parts)" {}
                p.error role="alert" hidden data-form-error {}
                button.primary type="submit" { "Add license" }
            }
        }
    }
}
