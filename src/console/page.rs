//! The page shell every console page shares (head, navigation, who is signed in, the paused
//! banner) and small pieces pages repeat (status badges, tags, dialogs).

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};
use poem::http::{StatusCode, header};
use poem::{IntoResponse, Response};

use super::session::Viewer;
use crate::domain::tags::{OWNER, SCOPE, SCOPE_ORGANIZATION};

/// The main navigation's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Jobs,
    Daemons,
    Licenses,
}

const SECTIONS: [(Nav, &str, &str); 4] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::Jobs, "/jobs", "Jobs"),
    (Nav::Daemons, "/daemons", "Daemons"),
    (Nav::Licenses, "/licenses", "Licenses"),
];

/// An HTML answer that no cache keeps (pages show one user's view of live data).
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut response = markup.into_response();
    response.set_status(status);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("valid"));
    response
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · provq" }
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare { (body) }
        }
    }
}

/// A page of the signed-in console.
pub fn shell(viewer: &Viewer, active: Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { "provq" }
                    nav aria-label="Main" {
                        @for (nav, href, name) in SECTIONS {
                            @if nav == active {
                                a href=(href) aria-current="page" { (name) }
                            } @else {
                                a href=(href) { (name) }
                            }
                        }
                    }
                    div.who {
                        span { (viewer.username()) }
                        span.role { @if viewer.is_owner() { "owner" } @else { "member" } }
                        form method="post" action="/signout" {
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                @if viewer.prebuilds_paused {
                    div.banner role="status" data-banner="prebuilds-paused" {
                        strong { "Prebuilds are paused." }
                        " New prebuild jobs are refused until they are resumed on the "
                        a href="/" { "overview" } "."
                    }
                }
                p.flash role="status" hidden data-flash {}
                main { (body) }
            }
        }
    }
}

/// How the API spells an enum value (`pending`, `workspace_build`).
pub fn api_name<T: poem_openapi::types::ToJSON>(value: &T) -> String {
    value
        .to_json()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A job status as a coloured badge.
pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge s-" (status) } { (status) } }
}

/// Whether a tag is one of the pair every organization-scoped job or daemon carries
/// (`scope=organization`, `owner=`), which says nothing on a page.
pub fn is_default_tag(key: &str, value: &str) -> bool {
    (key == SCOPE && value == SCOPE_ORGANIZATION) || (key == OWNER && value.is_empty())
}

/// Tags as `k=v` chips, leaving out the default pair.
pub fn tag_chips(tags: &BTreeMap<String, String>) -> Markup {
    let shown: Vec<(&String, &String)> =
        tags.iter().filter(|(k, v)| !is_default_tag(k, v)).collect();
    html! {
        @if shown.is_empty() {
            span.muted { "untagged" }
        }
        @for (k, v) in shown {
            code.tag { (k) "=" (v) }
        }
    }
}

/// A confirmation: a modal `role="dialog"` stating what will happen, with "Confirm" and "Keep".
/// The script opens it from a button whose `data-opens` names `id`, and runs `action` on
/// confirmation with the dialog's `data-*` attributes.
pub fn confirm_dialog(
    id: &str,
    title: &str,
    action: &str,
    data: &[(&str, &str)],
    text: Markup,
) -> Markup {
    let title_id = format!("{id}-title");
    html! {
        dialog #(id) role="dialog" aria-modal="true" aria-labelledby=(title_id) data-action=(action)
            data-args=(serde_json::to_string(&data.iter().cloned().collect::<BTreeMap<_, _>>()).unwrap_or_default()) {
            h2 #(title_id) { (title) }
            div data-dialog-text { (text) }
            p.error role="alert" hidden data-dialog-error {}
            div.actions {
                button.danger type="button" data-confirm { "Confirm" }
                button type="button" data-keep { "Keep" }
            }
        }
    }
}
