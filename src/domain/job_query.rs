//! The query string of the job list: `limit`, `ids`, `status`, `tags`, `initiator`. Every bad
//! parameter becomes its own validation, so one 400 reports them all. A list parameter given
//! without a value (`?ids=`, `?status=,`) is bad, never "no filter". Unknown parameters are
//! refused before this runs, for every route alike (`api::edges`).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::Validations;
use super::job::JobStatus;
use super::tags::parse_string_map_text;

/// An `ids` value that is not a UUID.
#[derive(Debug, thiserror::Error)]
#[error("\"{0}\" is not a valid UUID")]
struct NotAUuid(String);

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 10_000;

/// A parsed list query. `initiator` is still raw: resolving a username needs the database.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListQuery {
    pub limit: u64,
    /// `None`: no filter. Never `Some` of an empty list.
    pub ids: Option<Vec<Uuid>>,
    /// `None`: no filter. Never `Some` of an empty list.
    pub statuses: Option<Vec<JobStatus>>,
    pub tags: Option<BTreeMap<String, String>>,
    pub initiator: Option<String>,
}

/// Which jobs (of one organization) a list or a bulk cancel selects. `None` parts do not filter; an empty list
/// matches no job (it never widens a selection to everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub ids: Option<Vec<Uuid>>,
    pub statuses: Option<Vec<JobStatus>>,
    /// The job's tags must contain these (an exactly untagged filter matches untagged jobs).
    pub tags: Option<BTreeMap<String, String>>,
    pub initiator: Option<Uuid>,
}

/// Values of a multi-valued parameter: repeated, comma-separated, or both.
fn split_values<'a>(values: &[&'a str]) -> impl Iterator<Item = &'a str> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Parses `pairs` (the decoded query string) and returns the query with every failure found.
pub fn parse_list_query(pairs: &[(String, String)]) -> (ListQuery, Validations) {
    let mut v = Validations::new();
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let values = |key: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let single = |v: &mut Validations, key: &str| -> Option<String> {
        let all = values(key);
        if all.len() > 1 {
            v.push(key, "given more than once");
            return None;
        }
        all.first().map(|s| s.to_string())
    };

    if let Some(raw) = single(&mut v, "limit") {
        match raw.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => q.limit = n,
            _ => v.push(
                "limit",
                format!("\"{raw}\" must be an integer from 1 to {MAX_LIMIT}"),
            ),
        }
    }
    q.ids = list(&mut v, "ids", &values("ids"), |raw| {
        Uuid::parse_str(raw).map_err(|_| NotAUuid(raw.to_string()))
    });
    q.statuses = list(&mut v, "status", &values("status"), JobStatus::parse);
    if let Some(raw) = single(&mut v, "tags") {
        q.tags = v.check("tags", parse_string_map_text(&raw));
    }
    if let Some(raw) = single(&mut v, "initiator") {
        let raw = raw.trim().to_string();
        if raw.is_empty() {
            v.push("initiator", "must be a user id or username");
        } else {
            q.initiator = Some(raw);
        }
    }
    (q, v)
}

/// A multi-valued parameter: `None` when absent, else every value parsed. Present without any
/// value is a validation: an empty list selects nothing, so it is never taken as "all".
fn list<T, E: std::fmt::Display>(
    v: &mut Validations,
    key: &str,
    raw: &[&str],
    parse: impl Fn(&str) -> Result<T, E>,
) -> Option<Vec<T>> {
    if raw.is_empty() {
        return None;
    }
    let values: Vec<&str> = split_values(raw).collect();
    if values.is_empty() {
        v.push(
            key,
            "must not be empty: give at least one value or leave it out",
        );
        return None;
    }
    let parsed: Vec<T> = values
        .into_iter()
        .filter_map(|raw| v.check(key, parse(raw)))
        .collect();
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> (ListQuery, Vec<String>) {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap();
        let (query, v) = parse_list_query(&pairs);
        (query, v.0.into_iter().map(|v| v.field).collect())
    }

    #[test]
    fn defaults_and_lists() {
        let (q, errors) = parse("");
        assert!(errors.is_empty());
        assert_eq!(q.limit, 50);
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let (q, errors) = parse(&format!(
            "ids={a},{b}&status=pending&status=running,unknown&limit=10000"
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(q.ids.unwrap(), [a, b]);
        assert_eq!(
            q.statuses.unwrap(),
            [JobStatus::Pending, JobStatus::Running, JobStatus::Unknown]
        );
        assert_eq!(q.limit, 10_000);
    }

    #[test]
    fn every_bad_parameter_is_reported() {
        let (_, errors) =
            parse("limit=0&ids=nope&status=done&tags=%7Bbad&initiator=&coder_session_token=x");
        assert_eq!(errors, ["limit", "ids", "status", "tags", "initiator"]);
        let (_, errors) = parse("limit=10001&tags=%5B1%5D");
        assert_eq!(errors, ["limit", "tags"]);
        let (_, errors) = parse("tags=%7B%22a%22%3A1%7D&limit=x&limit=2");
        assert_eq!(errors, ["limit", "tags"]);
    }

    #[test]
    fn a_list_without_values_is_refused_not_taken_as_all() {
        for q in [
            "ids=",
            "ids=,",
            "status=",
            "status=%20,",
            "ids=&status=pending",
        ] {
            let (query, errors) = parse(q);
            assert!(!errors.is_empty(), "{q}");
            assert_eq!(query.ids, None, "{q}");
        }
        let (q, errors) = parse("status=pending");
        assert!(errors.is_empty());
        assert_eq!(q.ids, None);
    }

    #[test]
    fn tag_filters_are_string_maps() {
        let (q, errors) = parse("tags=%7B%22os%22%3A%22linux%22%7D");
        assert!(errors.is_empty());
        assert_eq!(q.tags.unwrap()["os"], "linux");
    }
}
