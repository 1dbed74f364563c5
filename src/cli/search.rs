//! Job filters from flags and from `--search "initiator:prebuilds status:pending tag:k=v"`:
//! the same filters in one string, merged with the flags.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::{Value, json};

use super::ClientError;

/// The list filters, shared by `jobs list` and `jobs cancel`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Statuses (repeatable or comma-separated): pending, running, succeeded, canceling,
    /// canceled, failed.
    #[arg(short = 's', long = "status", value_delimiter = ',')]
    pub status: Vec<String>,
    /// Initiator: a username or a user id (`prebuilds` for prebuild jobs).
    #[arg(short = 'i', long)]
    pub initiator: Option<String>,
    /// A tag the jobs must have, `key=value` (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Job ids (repeatable or comma-separated).
    #[arg(long = "id", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// The same filters in one string: `initiator:NAME status:S[,S] tag:k=v id:UUID`.
    #[arg(long)]
    pub search: Option<String>,
}

/// Filters after merging flags and `--search`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub statuses: Vec<String>,
    pub initiator: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub ids: Vec<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
            && self.initiator.is_none()
            && self.tags.is_empty()
            && self.ids.is_empty()
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

    /// Statuses and ids checked here, so a typo is a usage error before any request.
    fn check(self) -> Result<Self, ClientError> {
        for s in &self.statuses {
            crate::domain::job::JobStatus::parse(s).map_err(ClientError::Usage)?;
        }
        for id in &self.ids {
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(ClientError::Usage(format!(
                    "\"{id}\" is not a job id (a UUID)"
                )));
            }
        }
        Ok(self)
    }
}

pub fn tag_pair(raw: &str) -> Result<(String, String), ClientError> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ClientError::Usage(format!(
            "tag \"{raw}\" must look like key=value"
        ))),
    }
}

impl FilterArgs {
    pub fn filters(&self) -> Result<Filters, ClientError> {
        let mut f = Filters {
            statuses: self.status.clone(),
            initiator: self.initiator.clone(),
            ids: self.ids.clone(),
            ..Default::default()
        };
        for t in &self.tags {
            let (k, v) = tag_pair(t)?;
            f.tags.insert(k, v);
        }
        if let Some(search) = &self.search {
            for term in search.split_whitespace() {
                let Some((key, value)) = term.split_once(':') else {
                    return Err(ClientError::Usage(format!(
                        "search term \"{term}\" must look like key:value (initiator:, status:, tag:, id:)"
                    )));
                };
                match key {
                    "initiator" if f.initiator.as_deref().is_some_and(|i| i != value) => {
                        return Err(ClientError::Usage("two different initiators given".into()));
                    }
                    "initiator" => f.initiator = Some(value.to_string()),
                    "status" => f.statuses.extend(
                        value
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                    ),
                    "tag" => {
                        let (k, v) = tag_pair(value)?;
                        f.tags.insert(k, v);
                    }
                    "id" => f.ids.extend(
                        value
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                    ),
                    other => {
                        return Err(ClientError::Usage(format!(
                            "unknown search key \"{other}\" (use initiator:, status:, tag:, id:)"
                        )));
                    }
                }
            }
        }
        f.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(search: &str) -> FilterArgs {
        FilterArgs {
            search: Some(search.into()),
            ..Default::default()
        }
    }

    #[test]
    fn search_terms_become_filters() {
        let f = args("initiator:prebuilds status:pending,running tag:os=linux id:5b0b6a3e-59c4-4f5f-9d6c-0d3a1c3f1a2b")
            .filters()
            .unwrap();
        assert_eq!(f.initiator.as_deref(), Some("prebuilds"));
        assert_eq!(f.statuses, ["pending", "running"]);
        assert_eq!(f.tags["os"], "linux");
        assert_eq!(f.ids, ["5b0b6a3e-59c4-4f5f-9d6c-0d3a1c3f1a2b"]);
        assert!(!f.is_empty());
    }

    #[test]
    fn bad_terms_are_usage_errors() {
        for bad in [
            "prebuilds",
            "color:red",
            "tag:novalue",
            "tag:=x",
            "status:bogus",
            "id:nope",
        ] {
            assert!(
                matches!(args(bad).filters(), Err(ClientError::Usage(_))),
                "{bad}"
            );
        }
        let mut a = args("initiator:a");
        a.initiator = Some("b".into());
        assert!(a.filters().is_err());
    }
}
