//! What an organization may be called and described as. Requests become [`NewOrganization`] or
//! [`OrganizationPatch`] at the edge, so the store only ever sees checked values.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Validations;
use super::limits::{MAX_DESCRIPTION_CHARS, MAX_DISPLAY_NAME_BYTES, MAX_ICON_CHARS};
use super::names::{NameError, check_name};

/// The path keyword that always means the default organization; no organization may take it
/// as its name, or `/organizations/default` would be ambiguous.
pub const DEFAULT_KEYWORD: &str = "default";

/// Names that would read as actions in a UI or a URL (as in Coder).
const RESERVED_NAMES: &[&str] = &["new", "create"];

/// A checked organization name: Coder's name rule, not `new`/`create`, not `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationName(String);

impl OrganizationName {
    pub fn parse(value: String) -> Result<Self, NameError> {
        check_name(&value)?;
        let lower = value.to_ascii_lowercase();
        if RESERVED_NAMES.contains(&lower.as_str()) || lower == DEFAULT_KEYWORD {
            return Err(NameError::ReservedName(value));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `value` is the `default` keyword, which gets its own message (as in Coder).
pub fn is_default_keyword(value: &str) -> bool {
    value.eq_ignore_ascii_case(DEFAULT_KEYWORD)
}

/// Coder's display-name rule (`DisplayNameValid` in codersdk/name.go): empty is fine (create
/// then uses the name); otherwise at most 64 bytes, no blank at either end and no line feed
/// anywhere. Blanks are what Go's `\s` means (space, `\t`, `\n`, `\f`, `\r`), so inner
/// control characters such as "k\r\rm" pass, as Coder's `TestTemplateDisplayNameValid` says.
pub fn check_display_name(value: String) -> Result<String, NameError> {
    if value.is_empty() {
        return Ok(value);
    }
    if value.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(NameError::TooManyBytes {
            max: MAX_DISPLAY_NAME_BYTES,
            got: value.len(),
        });
    }
    let blank = |c: Option<char>| matches!(c, Some(' ' | '\t' | '\n' | '\x0C' | '\r'));
    if blank(value.chars().next()) || blank(value.chars().last()) {
        return Err(NameError::BlankEnds);
    }
    if value.contains('\n') {
        return Err(NameError::LineFeed);
    }
    Ok(value)
}

fn check_len(max: usize) -> impl Fn(String) -> Result<String, NameError> {
    move |value| {
        if value.chars().count() > max {
            Err(NameError::TooLong { max })
        } else {
            Ok(value)
        }
    }
}

/// Why a create or patch body was refused (`api::error` answers each with a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrganizationInputError {
    /// The name is the `default` keyword.
    #[error("Organization name \"{DEFAULT_KEYWORD}\" is reserved.")]
    ReservedDefault,
    /// One or more field rules failed.
    #[error("Validation failed.")]
    Invalid(Validations),
}

/// A checked `POST /organizations` body; `display_name` already defaulted to the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrganization {
    pub name: OrganizationName,
    pub display_name: String,
    pub description: String,
    pub icon: String,
}

/// A checked `PATCH /organizations/{organization}` body; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganizationPatch {
    pub name: Option<OrganizationName>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub icon: Option<String>,
}

/// The raw fields of a create or patch body.
#[derive(Debug, Clone, Default)]
pub struct OrganizationFields {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub icon: Option<String>,
}

impl OrganizationFields {
    /// For create: `name` is required; an empty `display_name` becomes the name.
    pub fn into_new(self) -> Result<NewOrganization, OrganizationInputError> {
        if self.name.as_deref().is_some_and(is_default_keyword) {
            return Err(OrganizationInputError::ReservedDefault);
        }
        let mut v = Validations::new();
        let name = v.required("name", self.name, OrganizationName::parse);
        let display_name = v.check(
            "display_name",
            check_display_name(self.display_name.unwrap_or_default()),
        );
        let description = v.check(
            "description",
            check_len(MAX_DESCRIPTION_CHARS)(self.description.unwrap_or_default()),
        );
        let icon = v.check(
            "icon",
            check_len(MAX_ICON_CHARS)(self.icon.unwrap_or_default()),
        );
        v.finish().map_err(OrganizationInputError::Invalid)?;
        let (Some(name), Some(display_name), Some(description), Some(icon)) =
            (name, display_name, description, icon)
        else {
            unreachable!("finish() returned Ok, so every field parsed");
        };
        let display_name = if display_name.is_empty() {
            name.as_str().to_string()
        } else {
            display_name
        };
        Ok(NewOrganization {
            name,
            display_name,
            description,
            icon,
        })
    }

    /// For patch: every field optional. As in Coder, an empty `name` or `display_name` means
    /// "unchanged"; `description` and `icon` may be cleared with "".
    pub fn into_patch(self) -> Result<OrganizationPatch, OrganizationInputError> {
        if self.name.as_deref().is_some_and(is_default_keyword) {
            return Err(OrganizationInputError::ReservedDefault);
        }
        let mut v = Validations::new();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let patch = OrganizationPatch {
            name: non_empty(self.name).and_then(|n| v.check("name", OrganizationName::parse(n))),
            display_name: non_empty(self.display_name)
                .and_then(|d| v.check("display_name", check_display_name(d))),
            description: self
                .description
                .and_then(|d| v.check("description", check_len(MAX_DESCRIPTION_CHARS)(d))),
            icon: self
                .icon
                .and_then(|i| v.check("icon", check_len(MAX_ICON_CHARS)(i))),
        };
        v.finish().map_err(OrganizationInputError::Invalid)?;
        Ok(patch)
    }
}

/// An organization, as read from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub icon: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(name: &str) -> OrganizationFields {
        OrganizationFields {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_the_rule_and_skip_reserved_words() {
        for ok in ["a", "acme", "team-42", "A1", &"x".repeat(32)] {
            assert!(OrganizationName::parse(ok.into()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "a b",
            "é",
            "new",
            "Create",
            &"x".repeat(33),
        ] {
            assert!(OrganizationName::parse(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_is_reserved_with_its_own_error() {
        assert_eq!(
            fields("default").into_new(),
            Err(OrganizationInputError::ReservedDefault)
        );
        assert_eq!(
            fields("Default").into_patch(),
            Err(OrganizationInputError::ReservedDefault)
        );
    }

    #[test]
    fn display_name_defaults_to_the_name_and_is_checked() {
        let new = fields("acme").into_new().unwrap();
        assert_eq!(new.display_name, "acme");
        let mut f = fields("acme");
        f.display_name = Some(" padded".into());
        f.description = Some("d".repeat(129));
        let Err(OrganizationInputError::Invalid(v)) = f.into_new() else {
            panic!("expected validations")
        };
        let names: Vec<_> = v.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(names, ["display_name", "description"]);
        let mut f = fields("acme");
        f.display_name = Some("x".repeat(65));
        assert!(f.into_new().is_err());
    }

    #[test]
    fn display_names_follow_coders_rule() {
        // Cases of Coder's `TestTemplateDisplayNameValid`.
        let valid = [
            "",
            "1",
            "1 2",
            "123       456",
            "<b> </b>",
            "!!!!1 ?????",
            "k\r\rm",
            "BANANAS_wow",
            "-a1b2c3d4e5f6g7h8i9j0k",
            &"1".repeat(64),
        ];
        for ok in valid {
            assert!(check_display_name(ok.into()).is_ok(), "{ok:?}");
        }
        let invalid = [
            " ", "\t", "\r\r", "\t1 ", " a", "\ra ", "1 ", "aa\r", "\x0Ca1", "a1\t", "a\nb",
        ];
        for bad in invalid {
            assert!(check_display_name(bad.into()).is_err(), "{bad:?}");
        }
        assert!(check_display_name("1".repeat(65)).is_err());
        // Bytes, as Go's len counts: 33 two-byte characters are 66 bytes.
        assert!(check_display_name("é".repeat(33)).is_err());
    }

    #[test]
    fn a_missing_name_is_a_validation() {
        let Err(OrganizationInputError::Invalid(v)) = OrganizationFields::default().into_new()
        else {
            panic!("expected validations")
        };
        assert_eq!(v.0[0].field, "name");
    }

    #[test]
    fn empty_patch_fields_mean_unchanged() {
        let patch = OrganizationFields {
            name: Some(String::new()),
            display_name: Some(String::new()),
            description: Some(String::new()),
            icon: None,
        }
        .into_patch()
        .unwrap();
        assert_eq!(patch.name, None);
        assert_eq!(patch.display_name, None);
        assert_eq!(patch.description.as_deref(), Some(""));
        assert!(fields("a--b").into_patch().is_err());
    }
}
