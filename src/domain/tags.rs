//! Tags: string→string maps that decide which daemon may run which job.

use std::collections::BTreeMap;

use uuid::Uuid;

pub const SCOPE: &str = "scope";
pub const OWNER: &str = "owner";
pub const SCOPE_ORGANIZATION: &str = "organization";
pub const SCOPE_USER: &str = "user";

/// Normalised tags: always carry `scope` and `owner`. Ordered, so the JSON form is canonical.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(BTreeMap<String, String>);

impl Tags {
    /// Normalises raw tags: no `scope` → `scope=organization`; `scope=user` → `owner` = `user`
    /// (the initiator, or for daemons the authenticating user); any other scope →
    /// `scope=organization, owner=""`. Within the limits of [`check_tags`] (no NUL either).
    pub fn normalize(raw: BTreeMap<String, String>, user: Option<Uuid>) -> Result<Self, TagsError> {
        check_tags(&raw)?;
        let mut tags = raw;
        let scope = tags.get(SCOPE).cloned().unwrap_or_default();
        if scope == SCOPE_USER {
            let user = user.ok_or(TagsError::UserScopeWithoutUser)?;
            tags.insert(OWNER.into(), user.to_string());
        } else {
            tags.insert(SCOPE.into(), SCOPE_ORGANIZATION.into());
            tags.insert(OWNER.into(), String::new());
        }
        Ok(Self(tags))
    }

    /// The tags of a job or daemon with no tags at all.
    pub fn untagged() -> Self {
        Self::normalize(BTreeMap::new(), None).expect("empty tags normalise")
    }

    /// Tags as stored (already normalised), e.g. read back from the database.
    pub fn from_stored(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    pub fn is_untagged(&self) -> bool {
        *self == Self::untagged()
    }

    /// Whether a daemon with tags `daemon` may run a job with these tags: the job's tags are a
    /// subset of the daemon's, except that an untagged job only runs on an untagged daemon.
    pub fn satisfied_by(&self, daemon: &Tags) -> bool {
        if self.is_untagged() {
            return daemon.is_untagged();
        }
        self.0.iter().all(|(k, v)| daemon.0.get(k) == Some(v))
    }

    /// The canonical keys ([`Tags::key`]) of every tag set of a job a daemon with these tags
    /// may run, if there are at most `limit`; `None` when there are more. Job tags always hold
    /// `scope` and `owner` ([`Tags::normalize`]), so a runnable set is the daemon's `scope` and
    /// `owner` plus a subset of its other tags: a daemon with one tag of its own runs one tag
    /// set, and a claim can then look at that set's jobs alone instead of stepping over every
    /// other set's jobs ahead of them.
    pub fn runnable_keys(&self, limit: usize) -> Option<Vec<String>> {
        let (Some(scope), Some(owner)) = (self.0.get(SCOPE), self.0.get(OWNER)) else {
            return None;
        };
        let extras: Vec<(&String, &String)> = self
            .0
            .iter()
            .filter(|(k, _)| k.as_str() != SCOPE && k.as_str() != OWNER)
            .collect();
        if extras.len() > 8 {
            return None;
        }
        let mut keys = Vec::new();
        for mask in 0u32..(1 << extras.len()) {
            let mut set = BTreeMap::from([
                (SCOPE.to_string(), scope.clone()),
                (OWNER.to_string(), owner.clone()),
            ]);
            for (i, (k, v)) in extras.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    set.insert((*k).clone(), (*v).clone());
                }
            }
            let job = Self(set);
            if job.satisfied_by(self) {
                keys.push(job.key());
                if keys.len() > limit {
                    return None;
                }
            }
        }
        Some(keys)
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn owner(&self) -> &str {
        self.0.get(OWNER).map(String::as_str).unwrap_or_default()
    }

    /// Canonical text of the tags (compact JSON, sorted keys): equal tag sets, equal keys.
    pub fn key(&self) -> String {
        serde_json::to_string(&self.0).expect("a string map serialises")
    }

    /// Tags read back from their canonical text ([`Tags::key`]).
    pub fn from_key(key: &str) -> Result<Self, TagsError> {
        Self::from_stored_json(json(key)?)
    }

    /// Tags read back from the database (a JSON object of strings, normalised when written).
    pub fn from_stored_json(value: serde_json::Value) -> Result<Self, TagsError> {
        string_map(value).map(Self)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("a string map serialises")
    }
}

pub use super::limits::check_tags;

/// Why tags given by a client were refused. Each message is a validation's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagsError {
    #[error("must be a JSON object: {0}")]
    NotJson(String),
    #[error("must be an object of string values, not {0}")]
    NotAnObject(serde_json::Value),
    #[error("the value of \"{key}\" must be a string, not {value}")]
    NotAString {
        key: String,
        value: serde_json::Value,
    },
    #[error("at most {max} tags are allowed (got {0})", max = super::limits::MAX_TAGS)]
    TooMany(usize),
    #[error("tag keys and values must not contain NUL characters")]
    Nul,
    /// The key, shortened for the message.
    #[error(
        "the tag key \"{0}\" is longer than {max} characters",
        max = super::limits::MAX_TAG_KEY_CHARS
    )]
    KeyTooLong(String),
    /// The key whose value is too long, shortened for the message.
    #[error(
        "the value of \"{0}\" is longer than {max} characters",
        max = super::limits::MAX_TAG_VALUE_CHARS
    )]
    ValueTooLong(String),
    #[error(
        "the tags must be at most {max} bytes as JSON (got {0})",
        max = super::limits::MAX_TAG_SET_BYTES
    )]
    TooLarge(usize),
    #[error("scope \"user\" needs an authenticated user")]
    UserScopeWithoutUser,
}

/// The one reader of "a JSON object of strings": its shape only (stored tags were checked
/// when written).
fn string_map(value: serde_json::Value) -> Result<BTreeMap<String, String>, TagsError> {
    let serde_json::Value::Object(map) = value else {
        return Err(TagsError::NotAnObject(value));
    };
    map.into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => Ok((key, s)),
            value => Err(TagsError::NotAString { key, value }),
        })
        .collect()
}

fn json(raw: &str) -> Result<serde_json::Value, TagsError> {
    serde_json::from_str(raw).map_err(|e| TagsError::NotJson(e.to_string()))
}

/// Tags a client sends (of a job, a daemon, a key, or a list filter): a JSON object of strings
/// within the tag limits.
pub fn parse_string_map(value: serde_json::Value) -> Result<BTreeMap<String, String>, TagsError> {
    let tags = string_map(value)?;
    check_tags(&tags)?;
    Ok(tags)
}

/// [`parse_string_map`] of JSON text (a query parameter).
pub fn parse_string_map_text(raw: &str) -> Result<BTreeMap<String, String>, TagsError> {
    parse_string_map(json(raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)], user: Option<Uuid>) -> Tags {
        Tags::normalize(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            user,
        )
        .unwrap()
    }

    #[test]
    fn normalisation_fills_scope_and_owner() {
        let u = Uuid::new_v4();
        assert_eq!(tags(&[], None), Tags::untagged());
        let t = tags(&[("scope", "user")], Some(u));
        assert_eq!(t.owner(), u.to_string());
        let t = tags(
            &[("scope", "weird"), ("owner", "x"), ("os", "linux")],
            Some(u),
        );
        assert_eq!(t.as_map()["scope"], "organization");
        assert_eq!(t.owner(), "");
        assert_eq!(t.as_map()["os"], "linux");
        assert!(Tags::normalize([("scope".into(), "user".into())].into(), None).is_err());
        assert!(Tags::normalize([("a\0".into(), "b".into())].into(), None).is_err());
        assert!(Tags::normalize([("a".into(), "\0".into())].into(), None).is_err());
    }

    #[test]
    fn runnable_keys_are_every_set_the_daemon_runs() {
        let u = Uuid::new_v4();
        let key = |t: Tags| t.key();
        // One tag set each.
        for daemon in [
            Tags::untagged(),
            tags(&[("os", "linux")], None),
            tags(&[("scope", "user")], Some(u)),
        ] {
            assert_eq!(
                daemon.runnable_keys(1),
                Some(vec![daemon.key()]),
                "{daemon:?}"
            );
        }
        // A user's daemon with a tag of its own also runs the user's untagged jobs.
        let user_linux = tags(&[("scope", "user"), ("os", "linux")], Some(u));
        let mut both = user_linux.runnable_keys(4).unwrap();
        both.sort();
        let mut want = vec![key(tags(&[("scope", "user")], Some(u))), user_linux.key()];
        want.sort();
        assert_eq!(both, want);
        assert_eq!(user_linux.runnable_keys(1), None, "more than the limit");
        // Two tags of its own: each alone and both (the untagged set is not run).
        let linux_gpu = tags(&[("os", "linux"), ("gpu", "yes")], None);
        let keys = linux_gpu.runnable_keys(8).unwrap();
        assert_eq!(keys.len(), 3);
        for k in &keys {
            assert!(Tags::from_key(k).unwrap().satisfied_by(&linux_gpu));
        }
        assert!(!keys.contains(&Tags::untagged().key()));
    }

    #[test]
    fn matching_table() {
        let u = Uuid::new_v4();
        let other = Uuid::new_v4();
        let untagged = Tags::untagged();
        let linux = tags(&[("os", "linux")], None);
        let linux_gpu = tags(&[("os", "linux"), ("gpu", "yes")], None);
        let mine = tags(&[("scope", "user")], Some(u));
        let theirs = tags(&[("scope", "user")], Some(other));
        let cases = [
            // (job, daemon, runs?)
            (&untagged, &untagged, true),
            (&untagged, &linux, false),
            (&linux, &untagged, false),
            (&linux, &linux, true),
            (&linux, &linux_gpu, true),
            (&linux_gpu, &linux, false),
            (&mine, &mine, true),
            (&mine, &theirs, false),
            (&mine, &untagged, false),
            (&untagged, &mine, false),
        ];
        for (job, daemon, expected) in cases {
            assert_eq!(
                job.satisfied_by(daemon),
                expected,
                "job {job:?} daemon {daemon:?}"
            );
        }
    }
}
