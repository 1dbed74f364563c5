//! Job filters from flags and from `--search "initiator:prebuilds status:pending tag:k=v"`:
//! the same filters in one string, merged with the flags.

use super::ClientError;
use clap::Args;

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

/// Filters after merging flags and `--search` (the parser is shared with the web console).
pub use crate::domain::job_search::Filters;

pub fn tag_pair(raw: &str) -> Result<(String, String), ClientError> {
    crate::domain::job_search::tag_pair(raw).map_err(|e| ClientError::Usage(e.to_string()))
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
            f.apply_search(search)
                .map_err(|e| ClientError::Usage(e.to_string()))?;
        }
        f.check().map_err(|e| ClientError::Usage(e.to_string()))?;
        Ok(f)
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
