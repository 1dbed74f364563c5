//! A daemon's registration: what it says about itself when it acquires (or deregisters),
//! checked once. The request becomes a [`DaemonRegistration`] and a long-poll wait, or every
//! validation that failed; past this point the type is the proof.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::Validations;
use super::job::Provisioner;
use super::limits::{self, storable};
use super::tags::{Tags, parse_string_map};
use crate::wire::provisionerd::AcquireRequest;

/// Longest long-poll a daemon may ask for.
pub const MAX_WAIT_SECONDS: i64 = 30;
/// The long-poll of a request that names none.
pub const DEFAULT_WAIT_SECONDS: i64 = 10;

/// What a daemon says about itself when it acquires.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonRegistration {
    pub organization_id: Uuid,
    pub name: String,
    pub key_id: Option<Uuid>,
    pub tags: Tags,
    pub provisioners: Vec<Provisioner>,
    pub version: String,
}

/// Who the daemon authenticated as, with what the server looked up for it (the domain cannot
/// look anything up).
#[derive(Debug, Clone)]
pub enum Registrant {
    /// A provisioner key: the organization and tags are the key's.
    Key {
        key_id: Uuid,
        organization_id: Uuid,
        tags: Tags,
        /// The request named an organization that is not the key's.
        other_organization: bool,
    },
    /// The pre-shared key or an owner's session: the request chooses the organization (the
    /// default one when it names none) and the tags.
    Chooser {
        key_id: Uuid,
        /// The organization, or `Err(ident)` when the request named one that does not exist.
        organization: Result<Uuid, String>,
        /// The owner acting (user-scoped tags need one).
        user: Option<Uuid>,
    },
}

impl DaemonRegistration {
    /// The registration and the long-poll wait of `request`, or every failed validation.
    pub fn from_request(
        request: AcquireRequest,
        registrant: Registrant,
    ) -> Result<(Self, Duration), Validations> {
        let mut v = Validations::new();
        let name = v.required("name", request.name, parse_name);
        let provisioners = parse_provisioners(&mut v, request.provisioners);
        let wait = parse_wait(&mut v, request.wait_seconds);
        let (key_id, organization_id, tags) = match registrant {
            Registrant::Key {
                key_id,
                organization_id,
                tags,
                other_organization,
            } => {
                if request.tags.is_some() {
                    v.push(
                        "tags",
                        "a provisioner key's tags are fixed; do not send tags with it",
                    );
                }
                if other_organization {
                    v.push(
                        "organization",
                        "the provisioner key belongs to another organization",
                    );
                }
                (key_id, Some(organization_id), Some(tags))
            }
            Registrant::Chooser {
                key_id,
                organization,
                user,
            } => {
                let organization = match organization {
                    Ok(id) => Some(id),
                    Err(ident) => {
                        v.push("organization", format!("no organization \"{ident}\""));
                        None
                    }
                };
                let raw = request.tags.unwrap_or_else(|| serde_json::json!({}));
                let tags = v.check("tags", parse_string_map(raw)).and_then(
                    |t: BTreeMap<String, String>| v.check("tags", Tags::normalize(t, user)),
                );
                (key_id, organization, tags)
            }
        };
        match (name, organization_id, tags, wait) {
            (Some(name), Some(organization_id), Some(tags), Some(wait)) if v.is_empty() => Ok((
                Self {
                    organization_id,
                    name,
                    key_id: Some(key_id),
                    tags,
                    provisioners,
                    version: request.version.map(storable).unwrap_or_default(),
                },
                wait,
            )),
            _ => Err(v),
        }
    }
}

/// A daemon name that is empty, too long or holds control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 1–64 characters without control characters")]
pub struct BadDaemonName;

fn parse_name(name: String) -> Result<String, BadDaemonName> {
    let len = name.chars().count();
    if (1..=limits::MAX_DAEMON_NAME_CHARS).contains(&len) && !name.chars().any(char::is_control) {
        Ok(name)
    } else {
        Err(BadDaemonName)
    }
}

/// The provisioners asked for (`["terraform"]` when none are named); each bad one is a
/// validation of its own.
fn parse_provisioners(v: &mut Validations, requested: Option<Vec<String>>) -> Vec<Provisioner> {
    let requested = requested.unwrap_or_else(|| vec!["terraform".into()]);
    if requested.is_empty() {
        v.push("provisioners", "give at least one provisioner");
    }
    requested
        .iter()
        .filter_map(|p| v.check("provisioners", Provisioner::parse(p)))
        .collect()
}

fn parse_wait(v: &mut Validations, seconds: Option<i64>) -> Option<Duration> {
    let seconds = seconds.unwrap_or(DEFAULT_WAIT_SECONDS);
    if (0..=MAX_WAIT_SECONDS).contains(&seconds) {
        Some(Duration::from_secs(seconds as u64))
    } else {
        v.push(
            "wait_seconds",
            format!("must be between 0 and {MAX_WAIT_SECONDS}"),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chooser() -> Registrant {
        Registrant::Chooser {
            key_id: Uuid::nil(),
            organization: Ok(Uuid::nil()),
            user: None,
        }
    }

    fn fields(v: Validations) -> Vec<String> {
        v.0.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn a_named_request_takes_the_defaults() {
        let (reg, wait) =
            DaemonRegistration::from_request(AcquireRequest::named("d1"), chooser()).unwrap();
        assert_eq!(reg.name, "d1");
        assert_eq!(reg.provisioners, [Provisioner::Terraform]);
        assert_eq!(reg.tags, Tags::untagged());
        assert_eq!(reg.key_id, Some(Uuid::nil()));
        assert_eq!(wait, Duration::from_secs(10));
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let request = AcquireRequest {
            name: Some(String::new()),
            provisioners: Some(vec!["nope".into()]),
            tags: Some(serde_json::json!({"os": 1})),
            organization: Some("ghost".into()),
            version: None,
            wait_seconds: Some(31),
        };
        let registrant = Registrant::Chooser {
            key_id: Uuid::nil(),
            organization: Err("ghost".into()),
            user: None,
        };
        let v = DaemonRegistration::from_request(request, registrant).unwrap_err();
        assert_eq!(
            fields(v),
            [
                "name",
                "provisioners",
                "wait_seconds",
                "organization",
                "tags"
            ]
        );
    }

    #[test]
    fn a_key_fixes_organization_and_tags() {
        let key = |other_organization| Registrant::Key {
            key_id: Uuid::nil(),
            organization_id: Uuid::nil(),
            tags: Tags::untagged(),
            other_organization,
        };
        let mut request = AcquireRequest::named("d1");
        request.tags = Some(serde_json::json!({}));
        let v = DaemonRegistration::from_request(request, key(true)).unwrap_err();
        assert_eq!(fields(v), ["tags", "organization"]);
        assert!(DaemonRegistration::from_request(AcquireRequest::named("d1"), key(false)).is_ok());
    }

    #[test]
    fn a_nul_in_the_version_is_stored_replaced() {
        let mut request = AcquireRequest::named("d1");
        request.version = Some("1\u{0}2".into());
        let (reg, _) = DaemonRegistration::from_request(request, chooser()).unwrap();
        assert_eq!(reg.version, "1\u{FFFD}2");
    }
}
