//! One log line and two metrics per request, labelled by route template
//! (`/api/v2/organizations/{organization}/provisionerjobs`, never the raw path), and an
//! `X-Request-Id` on every response so a user's report can be matched to the log line. Each
//! request runs in a `request` span carrying that id, so every line the request causes carries
//! it too (handlers about a job add a span with its `job_id`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use poem::PathPattern;
use poem::http::Method;
use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

use super::state::AppState;
use crate::domain::secrets::random_secret;

/// A path with every parameter segment (`:param0`, `{job}`) replaced by `{}`.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with(':') || seg.starts_with('{') {
                "{}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// poem-openapi names path parameters `:param0`, `:param1`…; the OpenAPI document has the real
/// names. Maps each route's shape to its documented template, built once.
pub(super) fn documented_routes() -> &'static HashMap<String, String> {
    static ROUTES: OnceLock<HashMap<String, String>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let spec: serde_json::Value =
            serde_json::from_str(&super::openapi_document()).unwrap_or_default();
        spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .keys()
                    .map(|p| {
                        let full = format!("/api/v2{p}");
                        (shape(&full), full)
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The route label: the documented template (`{organization}`), else the pattern with `{}`.
fn template(pattern: &str) -> String {
    let key = shape(pattern);
    documented_routes().get(&key).cloned().unwrap_or(key)
}

/// The `method` label: the standard methods by name, anything else (`BREW`, `FOO`) as `other`,
/// so a client cannot create series at will.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

pub async fn observe<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let state = req.data::<AppState>().cloned();
    let method = method_label(req.method());
    let request_id = random_secret(12);
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let result = next
        .call(req)
        .instrument(span.clone())
        .await
        .map(IntoResponse::into_response);
    let (status, pattern) = match &result {
        Ok(resp) => (resp.status(), resp.data::<PathPattern>().cloned()),
        Err(err) => (err.status(), err.data::<PathPattern>().cloned()),
    };
    let route = pattern
        .map(|p| template(&p.0))
        .unwrap_or_else(|| "unmatched".into());
    let elapsed = started.elapsed();
    if let Some(state) = &state {
        let code = status.as_u16().to_string();
        state
            .metrics
            .http_requests
            .with_label_values(&[method, &route, &code])
            .inc();
        state
            .metrics
            .http_duration
            .with_label_values(&[method, &route])
            .observe(elapsed.as_secs_f64());
    }
    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    span.in_scope(|| {
        if route == "/healthz" {
            tracing::debug!(%method, %route, status = status.as_u16(), duration_ms, request_id = %request_id, "request");
        } else {
            tracing::info!(%method, %route, status = status.as_u16(), duration_ms, request_id = %request_id, "request");
        }
    });
    let mut response = match result {
        Ok(resp) => resp,
        Err(err) => super::error::render_poem_error(err).instrument(span).await,
    };
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("X-Request-Id", value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_use_the_documented_parameter_names() {
        assert_eq!(
            super::template("/api/v2/organizations/:param0/provisionerjobs/:param1"),
            "/api/v2/organizations/{organization}/provisionerjobs/{job}"
        );
        assert_eq!(super::template("/healthz"), "/healthz");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        use poem::http::Method;
        assert_eq!(super::method_label(&Method::PATCH), "PATCH");
        assert_eq!(
            super::method_label(&Method::from_bytes(b"BREW").unwrap()),
            "other"
        );
    }
}
