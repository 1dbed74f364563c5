//! Every per-field limit of the API in one place, with the checks that enforce them. Each one
//! bounds what a single caller can make the server store, index or re-read for everyone (a
//! 10,000-key tag set is matched against every daemon; a 3,000-character tag value does not fit
//! a PostgreSQL index row). The README's limits table lists them; a value past a limit is a 400
//! validation naming the field, the same on both backends.

use std::collections::BTreeMap;

use super::tags::TagsError;

/// Tags a job, daemon, provisioner key or tag filter may carry (before `scope`/`owner` are
/// added by normalisation).
pub const MAX_TAGS: usize = 64;
/// Characters in a tag key.
pub const MAX_TAG_KEY_CHARS: usize = 128;
/// Characters in a tag value.
pub const MAX_TAG_VALUE_CHARS: usize = 256;
/// Bytes of a whole tag set as compact JSON. A pending job's canonical tags are part of an
/// index row, and PostgreSQL refuses index rows past about 2.7 kB; normalisation adds at most
/// about 60 bytes (`scope`, `owner`) to this.
pub const MAX_TAG_SET_BYTES: usize = 2048;
/// Characters in each name of a job's `metadata` (`template_version_name`, `template_name`,
/// `template_display_name`, `workspace_name`).
pub const MAX_METADATA_NAME_CHARS: usize = 128;
/// Characters in an icon URL (a job's `metadata.template_icon`, an organization's `icon`).
pub const MAX_ICON_CHARS: usize = 2048;
/// Bytes of a job's `input`, serialised as compact JSON.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Characters in a username or an organization or provisioner key name (Coder's name rule).
pub const MAX_NAME_CHARS: usize = 32;
/// Bytes of an organization's `display_name` (Coder counts bytes).
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;
/// Characters in an organization's `description`.
pub const MAX_DESCRIPTION_CHARS: usize = 128;
/// Characters in a user's full `name`.
pub const MAX_FULL_NAME_CHARS: usize = 128;
/// Characters in an e-mail address.
pub const MAX_EMAIL_CHARS: usize = 254;
/// Characters in a daemon's `name`.
pub const MAX_DAEMON_NAME_CHARS: usize = 64;
/// Characters in a log line's `stage`.
pub const MAX_LOG_STAGE_CHARS: usize = 256;
/// Bytes of a request's URI (path and query); longer ones are answered 414.
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// At most `max` characters.
pub fn check_chars(value: &str, max: usize) -> Result<(), LimitError> {
    let got = value.chars().count();
    if got > max {
        return Err(LimitError::Chars { max, got });
    }
    Ok(())
}

/// At most `max` bytes once serialised.
pub fn check_bytes(len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        return Err(LimitError::Bytes { max, got: len });
    }
    Ok(())
}

/// A value over one of the limits above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("must be at most {max} characters (got {got})")]
    Chars { max: usize, got: usize },
    #[error("must be at most {max} bytes serialised (got {got})")]
    Bytes { max: usize, got: usize },
}

/// The start of a possibly huge value, for an error message.
fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(32).collect();
    if s.len() < value.len() {
        s.push('…');
    }
    s.replace('\0', "\\0")
}

/// Tag count, key and value lengths, the size of the whole set, and no NUL (PostgreSQL cannot
/// store it, and it is never meaningful).
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), TagsError> {
    if tags.len() > MAX_TAGS {
        return Err(TagsError::TooMany(tags.len()));
    }
    for (k, v) in tags {
        if k.contains('\0') || v.contains('\0') {
            return Err(TagsError::Nul);
        }
        if k.chars().count() > MAX_TAG_KEY_CHARS {
            return Err(TagsError::KeyTooLong(shown(k)));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(TagsError::ValueTooLong(shown(k)));
        }
    }
    let size = serde_json::to_vec(tags).map_or(usize::MAX, |b| b.len());
    if size > MAX_TAG_SET_BYTES {
        return Err(TagsError::TooLarge(size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(String, String)]) -> BTreeMap<String, String> {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn tags_are_bounded_in_count_key_and_value() {
        let at_limit: Vec<_> = (0..MAX_TAGS)
            .map(|i| (format!("k{i}"), "v".repeat(20)))
            .collect();
        assert!(check_tags(&tags(&at_limit)).is_ok());
        let longest = tags(&[(
            "k".repeat(MAX_TAG_KEY_CHARS),
            "v".repeat(MAX_TAG_VALUE_CHARS),
        )]);
        assert!(check_tags(&longest).is_ok());
        let heavy: Vec<_> = (0..10)
            .map(|i| (format!("k{i}"), "v".repeat(250)))
            .collect();
        assert!(
            check_tags(&tags(&heavy))
                .unwrap_err()
                .to_string()
                .contains("2048 bytes")
        );
        let too_many: Vec<_> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(
            check_tags(&tags(&too_many))
                .unwrap_err()
                .to_string()
                .contains("at most 64")
        );
        let long_key = tags(&[("k".repeat(MAX_TAG_KEY_CHARS + 1), String::new())]);
        assert!(check_tags(&long_key).unwrap_err().to_string().contains("…"));
        let long_value = tags(&[("k".into(), "é".repeat(MAX_TAG_VALUE_CHARS + 1))]);
        assert!(check_tags(&long_value).is_err());
        assert!(check_tags(&tags(&[("a\0".into(), "b".into())])).is_err());
    }

    #[test]
    fn characters_not_bytes_unless_said() {
        assert!(check_chars(&"é".repeat(128), 128).is_ok());
        assert!(check_chars(&"é".repeat(129), 128).is_err());
        assert!(check_bytes(65_536, MAX_INPUT_BYTES).is_ok());
        assert!(check_bytes(65_537, MAX_INPUT_BYTES).is_err());
    }
}
