//! The request edge: what every request must pass before any handler runs, checked in one
//! place against what the served OpenAPI document declares for its operation (the table is
//! built from that document at start, so a new route is covered without a line here).
//!
//! - A URI longer than [`MAX_URI_BYTES`] is answered 414.
//! - Path parameters must be valid UTF-8 once percent-decoded, without NUL, and of their
//!   declared format: `Invalid job id "070b5157": expected a UUID`, naming the parameter by
//!   its documented name.
//! - Query parameters must be declared by the operation (or be the session token); their
//!   values must decode to UTF-8 without NUL (contract §2: an unknown parameter is a 400 that
//!   changes nothing, on every route).
//! - JSON bodies must not contain NUL (`\u0000`) anywhere: PostgreSQL cannot store it in text or
//!   jsonb and SQLite can, so refusing it here answers the same on both backends. The worker
//!   routes that carry a process's output (log lines, the failure message) are the exception:
//!   their handlers replace NUL with U+FFFD, as log lines always were.
//!
//! Requests that match no documented operation pass through to the router (404 or 405 there).

use std::collections::BTreeSet;
use std::sync::Arc;

use poem::http::{Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::payload::Json;
use serde_json::Value;

use super::auth::SESSION_COOKIE;
use super::error::{ApiError, ErrorBody};
use crate::domain::Validations;
use crate::domain::limits::MAX_URI_BYTES;

/// Operations whose handlers replace NUL in the body instead of refusing it.
const NUL_REPLACED: &[(&str, &str)] = &[
    ("POST", "/api/v2/provisionerd/jobs/{job}/update"),
    ("POST", "/api/v2/provisionerd/jobs/{job}/fail"),
];

/// Routes outside the OpenAPI document; they take no query parameters.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/api/v2/openapi.json"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Format {
    Text,
    Uuid,
    Integer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param { name: String, format: Format },
}

/// One documented operation: where it is and which query parameters it takes.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    template: String,
    segments: Vec<Segment>,
    query: BTreeSet<String>,
    nul_replaced: bool,
    /// The JSON schema of the body, `$ref`s resolved, to name a field holding NUL.
    body: Value,
}

impl Operation {
    /// How well `path` fits: `None` if not at all, else the number of literal segments (so
    /// `…/provisionerjobs/cancel` beats `…/provisionerjobs/{job}`).
    fn fit(&self, segments: &[&str]) -> Option<usize> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut literals = 0;
        for (raw, segment) in segments.iter().zip(&self.segments) {
            match segment {
                Segment::Literal(l) if l == raw => literals += 1,
                Segment::Literal(_) => return None,
                Segment::Param { .. } => {}
            }
        }
        Some(literals)
    }
}

/// Every documented operation; built once from the OpenAPI document.
#[derive(Debug, Default)]
pub struct Operations(Vec<Operation>);

impl Operations {
    /// Reads the operations of `spec` (the OpenAPI document as served), whose paths are
    /// relative to its first server URL.
    pub fn from_spec(spec: &str) -> Self {
        let doc: Value = serde_json::from_str(spec).unwrap_or_default();
        let prefix = doc["servers"][0]["url"].as_str().unwrap_or_default();
        let mut ops = Vec::new();
        for (path, methods) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in methods.as_object().into_iter().flatten() {
                let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                    continue;
                };
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let mut op_ = operation(method, &format!("{prefix}{path}"), &params);
                let content = op["requestBody"]["content"].as_object();
                if let Some(schema) = content.and_then(|c| c.values().next()) {
                    op_.body = resolve(&doc, &schema["schema"], 0);
                }
                ops.push(op_);
            }
        }
        for (method, path) in UNDOCUMENTED {
            let method = Method::from_bytes(method.as_bytes()).expect("a valid method");
            ops.push(operation(method, path, &[]));
        }
        Self(ops)
    }

    fn find(&self, method: &Method, segments: &[&str]) -> Option<&Operation> {
        self.0
            .iter()
            .filter(|op| op.method == method)
            .filter_map(|op| op.fit(segments).map(|fit| (fit, op)))
            .max_by_key(|(fit, _)| *fit)
            .map(|(_, op)| op)
    }
}

/// `schema` with every `$ref` replaced by the component it names (bounded, for cycles).
fn resolve(doc: &Value, schema: &Value, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(name) = schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
        return resolve(doc, &doc["components"]["schemas"][name], depth + 1);
    }
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve(doc, v, depth + 1)))
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve(doc, v, depth + 1)).collect())
        }
        other => other.clone(),
    }
}

fn operation(method: Method, template: &str, params: &[Value]) -> Operation {
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name && p["in"] == "path")
    };
    let segments = split(template)
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    let schema = param(name).map(|p| &p["schema"]);
                    let format = match schema.map(|s| (s["type"].as_str(), s["format"].as_str())) {
                        Some((_, Some("uuid"))) => Format::Uuid,
                        Some((Some("integer"), _)) => Format::Integer,
                        _ => Format::Text,
                    };
                    Segment::Param {
                        name: name.to_string(),
                        format,
                    }
                }
                None => Segment::Literal(s.to_string()),
            },
        )
        .collect();
    let query = params
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let nul_replaced = NUL_REPLACED
        .iter()
        .any(|(m, t)| *m == method.as_str() && *t == template);
    Operation {
        method,
        template: template.to_string(),
        segments,
        query,
        nul_replaced,
        body: Value::Null,
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.trim_start_matches('/').split('/')
}

/// The middleware; one per server.
pub struct EdgeGuard {
    operations: Arc<Operations>,
}

impl EdgeGuard {
    pub fn new(operations: Operations) -> Self {
        Self {
            operations: Arc::new(operations),
        }
    }
}

impl<E: Endpoint> Middleware<E> for EdgeGuard {
    type Output = EdgeGuardEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeGuardEndpoint {
            inner,
            operations: self.operations.clone(),
        }
    }
}

pub struct EdgeGuardEndpoint<E> {
    inner: E,
    operations: Arc<Operations>,
}

impl<E: Endpoint> Endpoint for EdgeGuardEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > MAX_URI_BYTES {
            return Ok(uri_too_long(uri_len));
        }
        let segments: Vec<&str> = split(req.uri().path()).collect();
        if let Some(op) = self.operations.find(req.method(), &segments) {
            if let Err(e) = check_path(op, &segments) {
                return Ok(e.into_response());
            }
            if let Err(e) = check_query(op, req.uri().query()) {
                return Ok(e.into_response());
            }
            if !op.nul_replaced
                && let Err(e) = check_body(&mut req, &op.body).await
            {
                return Ok(e.into_response());
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// Percent-decodes `raw` (with `+` as a space in queries), refusing bytes that are not UTF-8.
fn percent_decode(raw: &str, plus_is_space: bool) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A value as shown in a message: short, with NUL visible.
fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(64).collect();
    if s.len() < value.len() {
        s.push('…');
    }
    s.replace('\0', "\\0")
}

fn check_path(op: &Operation, segments: &[&str]) -> Result<(), ApiError> {
    let mut v = Validations::new();
    let mut message = None;
    for (raw, segment) in segments.iter().zip(&op.segments) {
        let Segment::Param { name, format } = segment else {
            continue;
        };
        let problem = match percent_decode(raw, false) {
            None => Some((
                format!("Invalid {name} \"{}\": not valid UTF-8.", shown(raw)),
                "must be valid UTF-8 once percent-decoded".to_string(),
            )),
            Some(value) if value.contains('\0') => Some((
                format!("Invalid {name} \"{}\": NUL is not allowed.", shown(&value)),
                "must not contain NUL characters".to_string(),
            )),
            Some(value) => match format {
                Format::Uuid if uuid::Uuid::parse_str(&value).is_err() => Some((
                    format!("Invalid {name} id \"{}\": expected a UUID", shown(&value)),
                    format!("\"{}\" is not a UUID", shown(&value)),
                )),
                Format::Integer if value.parse::<i64>().is_err() => Some((
                    format!("Invalid {name} \"{}\": expected an integer", shown(&value)),
                    format!("\"{}\" is not an integer", shown(&value)),
                )),
                _ => None,
            },
        };
        if let Some((m, detail)) = problem {
            message.get_or_insert(m);
            v.push(name.clone(), detail);
        }
    }
    match message {
        None => Ok(()),
        Some(m) => Err(ApiError::BadRequest(Json(
            ErrorBody::new(m).with_validations(v),
        ))),
    }
}

fn check_query(op: &Operation, query: Option<&str>) -> Result<(), ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(());
    };
    let mut v = Validations::new();
    let mut seen_unknown = BTreeSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(key) = percent_decode(raw_key, true) else {
            v.push(
                "query",
                "parameter names must be valid UTF-8 once percent-decoded",
            );
            continue;
        };
        if !op.query.contains(&key) && key != SESSION_COOKIE {
            if seen_unknown.insert(key.clone()) {
                v.push(shown(&key), unknown_detail(op));
            }
            continue;
        }
        match percent_decode(raw_value, true) {
            None => v.push(key, "must be valid UTF-8 once percent-decoded"),
            Some(value) if value.contains('\0') || key.contains('\0') => {
                v.push(shown(&key), "must not contain NUL characters")
            }
            Some(_) => {}
        }
    }
    if v.is_empty() {
        return Ok(());
    }
    Err(ApiError::BadRequest(Json(
        ErrorBody::new("Invalid query parameters.").with_validations(v),
    )))
}

fn unknown_detail(op: &Operation) -> String {
    if op.query.is_empty() {
        format!(
            "unknown query parameter: {} {} takes none",
            op.method, op.template
        )
    } else {
        let known: Vec<&str> = op.query.iter().map(String::as_str).collect();
        format!(
            "unknown query parameter: this route takes {}",
            known.join(", ")
        )
    }
}

/// Refuses a JSON body with NUL in any string or key; the body is put back for the handler.
async fn check_body(req: &mut Request, schema: &Value) -> Result<(), ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let body = req.take_body();
    let bytes = body
        .into_bytes()
        .await
        .map_err(|_| ApiError::bad_request("The request body could not be read."))?;
    let suspicious = bytes.windows(6).any(|w| w == b"\\u0000");
    let found = if suspicious {
        serde_json::from_slice::<Value>(&bytes)
            .map(|value| {
                let mut paths = Vec::new();
                find_nul(&value, schema, "", &mut paths);
                paths
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    req.set_body(Body::from_bytes(bytes));
    if found.is_empty() {
        return Ok(());
    }
    let mut v = Validations::new();
    for path in found {
        v.push(path, "must not contain NUL characters");
    }
    Err(ApiError::validation(v))
}

/// The fields (`metadata.template_name`, `logs[0].output`) holding NUL. Fields are what the
/// `schema` names; a map or free-form value (`tags`) is one field, whatever its keys.
fn find_nul(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    let named = schema["properties"].as_object();
    match value {
        Value::String(s) if s.contains('\0') => out.push(field_name(at)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_nul(item, &schema["items"], &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(_) if named.is_none() && !at.is_empty() && contains_nul(value) => {
            out.push(field_name(at));
        }
        Value::Object(map) => {
            for (k, item) in map {
                if k.contains('\0') {
                    out.push(field_name(at));
                    continue;
                }
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let child = named.and_then(|n| n.get(k)).unwrap_or(&Value::Null);
                find_nul(item, child, &path, out);
            }
        }
        _ => {}
    }
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn field_name(at: &str) -> String {
    if at.is_empty() {
        "body".into()
    } else {
        at.to_string()
    }
}

fn uri_too_long(len: usize) -> Response {
    let body = ErrorBody::new("Request URI too long.").with_detail(format!(
        "The path and query are {len} bytes; at most {MAX_URI_BYTES} are accepted. Send long \
         filters in a request body where the route takes one."
    ));
    let mut response = Json(body).into_response();
    response.set_status(StatusCode::URI_TOO_LONG);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Operations {
        Operations::from_spec(&crate::api::openapi_document())
    }

    #[test]
    fn the_table_comes_from_the_document() {
        let ops = ops();
        let find = |m: Method, p: &str| {
            let segments: Vec<&str> = split(p).collect();
            ops.find(&m, &segments).map(|o| o.template.clone())
        };
        assert_eq!(
            find(
                Method::POST,
                "/api/v2/organizations/default/provisionerjobs/cancel"
            )
            .as_deref(),
            Some("/api/v2/organizations/{organization}/provisionerjobs/cancel")
        );
        assert_eq!(
            find(
                Method::POST,
                "/api/v2/organizations/x/provisionerjobs/abc/cancel"
            )
            .as_deref(),
            Some("/api/v2/organizations/{organization}/provisionerjobs/{job}/cancel")
        );
        assert_eq!(find(Method::GET, "/api/v2/nope"), None);
        let list = ops
            .0
            .iter()
            .find(|o| o.template == "/api/v2/organizations/{organization}/provisionerjobs")
            .unwrap();
        assert!(list.query.contains("initiator"));
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%00", false).unwrap(), "\0");
        assert_eq!(percent_decode("%FF", false), None);
        assert_eq!(percent_decode("%F", false), None);
        assert_eq!(percent_decode("%zz", false), None);
    }

    #[test]
    fn nul_is_found_with_its_field_path() {
        let value: Value = serde_json::from_str(
            r#"{"metadata":{"template_name":"\u0000"},"logs":[{"output":"ok"},{"output":"a\u0000"}],"tags":{"k\u0000":"v"}}"#,
        )
        .unwrap();
        let schema = serde_json::json!({"properties": {
            "metadata": {"properties": {"template_name": {"type": "string"}}},
            "logs": {"items": {"properties": {"output": {"type": "string"}}}},
            "tags": {},
        }});
        let mut out = Vec::new();
        find_nul(&value, &schema, "", &mut out);
        assert_eq!(out, ["logs[1].output", "metadata.template_name", "tags"]);
        let value: Value = serde_json::from_str(r#"{"tags":{"os":"a\u0000"}}"#).unwrap();
        let mut out = Vec::new();
        find_nul(&value, &schema, "", &mut out);
        assert_eq!(out, ["tags"], "a map's keys are data, not field names");
    }
}
