//! The job filters written as one string, `initiator:prebuilds status:pending,running tag:os=linux
//! id:UUID`: the syntax of the CLI's `--search` and of the console's search box, parsed in one
//! place so both read a search the same way.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Job filters as a client states them (names and strings, not yet resolved or validated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub statuses: Vec<String>,
    pub initiator: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub ids: Vec<String>,
}

/// Why a search (or a `--tag`) could not be read. Each message is what the user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("tag \"{0}\" must look like key=value")]
    NotATagPair(String),
    #[error("search term \"{0}\" must look like key:value (initiator:, status:, tag:, id:)")]
    NotATerm(String),
    #[error("two different initiators given")]
    TwoInitiators,
    #[error("unknown search key \"{0}\" (use initiator:, status:, tag:, id:)")]
    UnknownKey(String),
    #[error(transparent)]
    Status(#[from] super::job::UnknownName),
    #[error("\"{0}\" is not a job id (a UUID)")]
    NotAJobId(String),
}

/// Splits `key=value`; the key must not be empty.
pub fn tag_pair(raw: &str) -> Result<(String, String), SearchError> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(SearchError::NotATagPair(raw.to_string())),
    }
}

fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
            && self.initiator.is_none()
            && self.tags.is_empty()
            && self.ids.is_empty()
    }

    /// Adds the terms of a search string to these filters. A second, different initiator is an
    /// error rather than a silent override.
    pub fn apply_search(&mut self, search: &str) -> Result<(), SearchError> {
        for term in search.split_whitespace() {
            let Some((key, value)) = term.split_once(':') else {
                return Err(SearchError::NotATerm(term.to_string()));
            };
            match key {
                "initiator" if self.initiator.as_deref().is_some_and(|i| i != value) => {
                    return Err(SearchError::TwoInitiators);
                }
                "initiator" => self.initiator = Some(value.to_string()),
                "status" => self.statuses.extend(list(value)),
                "tag" => {
                    let (k, v) = tag_pair(value)?;
                    self.tags.insert(k, v);
                }
                "id" => self.ids.extend(list(value)),
                other => return Err(SearchError::UnknownKey(other.to_string())),
            }
        }
        Ok(())
    }

    /// The filters in words, for a confirmation: `status pending, initiator prebuilds`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.statuses.is_empty() {
            parts.push(format!("status {}", self.statuses.join(" or ")));
        }
        if let Some(i) = &self.initiator {
            parts.push(format!("initiator {i}"));
        }
        for (k, v) in &self.tags {
            parts.push(format!("tag {k}={v}"));
        }
        if !self.ids.is_empty() {
            parts.push(format!("id {}", self.ids.join(" or ")));
        }
        parts.join(", ")
    }

    /// Statuses and ids checked before any request, so a typo is reported as the client's
    /// mistake at once.
    pub fn check(&self) -> Result<(), SearchError> {
        for s in &self.statuses {
            crate::domain::job::JobStatus::parse(s)?;
        }
        for id in &self.ids {
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(SearchError::NotAJobId(id.clone()));
            }
        }
        Ok(())
    }

    /// The filters written back in the search syntax (what a search box shows).
    pub fn to_search(&self) -> String {
        let mut terms = Vec::new();
        if let Some(i) = &self.initiator {
            terms.push(format!("initiator:{i}"));
        }
        if !self.statuses.is_empty() {
            terms.push(format!("status:{}", self.statuses.join(",")));
        }
        for (k, v) in &self.tags {
            terms.push(format!("tag:{k}={v}"));
        }
        if !self.ids.is_empty() {
            terms.push(format!("id:{}", self.ids.join(",")));
        }
        terms.join(" ")
    }

    /// Query parameters of `GET …/provisionerjobs`.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if !self.statuses.is_empty() {
            q.push(("status".into(), self.statuses.join(",")));
        }
        if let Some(i) = &self.initiator {
            q.push(("initiator".into(), i.clone()));
        }
        if !self.tags.is_empty() {
            q.push(("tags".into(), json!(self.tags).to_string()));
        }
        if !self.ids.is_empty() {
            q.push(("ids".into(), self.ids.join(",")));
        }
        q
    }

    /// Body of `POST …/provisionerjobs/cancel`.
    pub fn cancel_body(&self) -> Value {
        let mut body = json!({});
        if !self.statuses.is_empty() {
            body["status"] = json!(self.statuses);
        }
        if let Some(i) = &self.initiator {
            body["initiator"] = json!(i);
        }
        if !self.tags.is_empty() {
            body["tags"] = json!(self.tags);
        }
        if !self.ids.is_empty() {
            body["ids"] = json!(self.ids);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(s: &str) -> Result<Filters, SearchError> {
        let mut f = Filters::default();
        f.apply_search(s).map(|()| f)
    }

    #[test]
    fn search_terms_become_filters_and_back() {
        let f = search("initiator:prebuilds status:pending,running tag:os=linux id:abc").unwrap();
        assert_eq!(f.initiator.as_deref(), Some("prebuilds"));
        assert_eq!(f.statuses, ["pending", "running"]);
        assert_eq!(f.tags["os"], "linux");
        assert_eq!(f.ids, ["abc"]);
        assert_eq!(search(&f.to_search()).unwrap(), f);
        assert_eq!(
            f.to_search(),
            "initiator:prebuilds status:pending,running tag:os=linux id:abc"
        );
    }

    #[test]
    fn bad_terms_are_errors() {
        for bad in [
            "prebuilds",
            "color:red",
            "tag:novalue",
            "tag:=x",
            "initiator:a initiator:b",
        ] {
            assert!(search(bad).is_err(), "{bad}");
        }
    }
}
