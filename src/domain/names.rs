//! Names, e-mail addresses and passwords: the rules users meet when they create accounts and
//! organizations. Each type can only be built by parsing, so holding one proves it is valid.

use std::fmt;

use super::limits::{MAX_EMAIL_CHARS, MAX_FULL_NAME_CHARS, MAX_NAME_CHARS};

/// Words that would collide with route segments such as `/users/me`.
const RESERVED_USERNAMES: &[&str] = &["me"];

/// Why a name, address, password or text field was refused. Each message is a validation's
/// `detail` (the password's is also the whole error message, as in Coder).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must be alphanumeric with single hyphens in between (no leading or trailing hyphen)")]
    NotAName,
    #[error("\"{0}\" is reserved")]
    ReservedUsername(String),
    #[error("\"{0}\" is a reserved name")]
    ReservedName(String),
    #[error("must be a valid email address")]
    NotAnEmail,
    #[error(transparent)]
    Limit(#[from] super::limits::LimitError),
    #[error("must not have leading or trailing white space")]
    Padded,
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("Password must be at least 6 characters.")]
    PasswordTooShort,
    #[error("Password must be at most 64 characters.")]
    PasswordTooLong,
    #[error("must be at most {max} bytes (got {got})")]
    TooManyBytes { max: usize, got: usize },
    #[error("must not start or end with a blank")]
    BlankEnds,
    #[error("must not contain a line feed")]
    LineFeed,
}

/// Checks Coder's name rule: 1–32 ASCII alphanumerics in groups joined by single hyphens.
pub(crate) fn check_name(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    if value.len() > MAX_NAME_CHARS {
        return Err(NameError::TooLong {
            max: MAX_NAME_CHARS,
        });
    }
    let valid = value
        .split('-')
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()));
    if !valid {
        return Err(NameError::NotAName);
    }
    Ok(())
}

/// A username: Coder's name rule, not a reserved route word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(value: String) -> Result<Self, NameError> {
        check_name(&value)?;
        if RESERVED_USERNAMES.contains(&value.to_ascii_lowercase().as_str()) {
            return Err(NameError::ReservedUsername(value));
        }
        Ok(Self(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, lower-cased so that logins are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(value: String) -> Result<Self, NameError> {
        let value = value.trim().to_ascii_lowercase();
        let Some((local, domain)) = value.split_once('@') else {
            return Err(NameError::NotAnEmail);
        };
        let ok = !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && value.chars().count() <= MAX_EMAIL_CHARS
            && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(NameError::NotAnEmail);
        }
        Ok(Self(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A human-readable full name: optional, at most 128 characters, no surrounding blanks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FullName(String);

impl FullName {
    pub fn parse(value: String) -> Result<Self, NameError> {
        super::limits::check_chars(&value, MAX_FULL_NAME_CHARS)?;
        if value.trim() != value {
            return Err(NameError::Padded);
        }
        if value.chars().any(char::is_control) {
            return Err(NameError::ControlCharacters);
        }
        Ok(Self(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 6–64 characters. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn parse(value: String) -> Result<Self, NameError> {
        let len = value.chars().count();
        if len < 6 {
            return Err(NameError::PasswordTooShort);
        }
        if len > 64 {
            return Err(NameError::PasswordTooLong);
        }
        Ok(Self(value))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_name_rule() {
        for ok in ["a", "alice", "a-b-c", "A1", &"x".repeat(32)] {
            assert!(Username::parse(ok.into()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "a b",
            "é",
            "me",
            "ME",
            &"x".repeat(33),
        ] {
            assert!(Username::parse(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(Email::parse("A@B.io".into()).unwrap().as_str(), "a@b.io");
        for bad in ["", "a", "@b", "a@", "a@b@c", "a b@c", "a@.c"] {
            assert!(Email::parse(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_have_bounds_and_hide_in_debug() {
        assert!(Password::parse("12345".into()).is_err());
        let p = Password::parse("secret1".into()).unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
        assert!(Password::parse("x".repeat(65)).is_err());
    }
}
