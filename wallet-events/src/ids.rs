//! Identifiers that clients make up, parsed once at the edge: a
//! [`UserId`] (both services take user ids in paths and bodies, and both
//! databases store them) and an [`IdempotencyKey`] (the wallet stores it
//! with the response it answered). Holding one means its rules held.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `user_id` columns are VARCHAR(100) in both databases.
pub const USER_ID_MAX_CHARS: usize = 100;
/// A regular expression (ECMA-262, for OpenAPI documents) that every user
/// id [`UserId::parse`] accepts matches: no control character, and at
/// least one character that is not white space. With `maxLength`
/// [`USER_ID_MAX_CHARS`] it describes exactly what the parser accepts.
pub const USER_ID_PATTERN: &str =
    r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x1F\x7F-\x9F\s][^\x00-\x1F\x7F-\x9F]*$";
/// Keys are client-made tokens (UUIDs, hashes); the bound keeps the index small.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 200;

/// Why a user id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user_id must be 1 to {USER_ID_MAX_CHARS} characters, not blank, without control characters"
)]
pub struct UserIdError;

/// A user's id: 1 to [`USER_ID_MAX_CHARS`] characters, not only white
/// space, and no control characters (PostgreSQL text cannot hold a NUL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Result<UserId, UserIdError> {
        let chars = text.chars().count();
        if text.trim().is_empty() || chars > USER_ID_MAX_CHARS || text.chars().any(char::is_control)
        {
            return Err(UserIdError);
        }
        Ok(UserId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        UserId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why an idempotency key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters")]
pub struct IdempotencyKeyError;

/// A client's `Idempotency-Key`: 1 to [`IDEMPOTENCY_KEY_MAX_CHARS`]
/// visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<IdempotencyKey, IdempotencyKeyError> {
        if text.is_empty()
            || text.len() > IDEMPOTENCY_KEY_MAX_CHARS
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(IdempotencyKeyError);
        }
        Ok(IdempotencyKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_column_and_refuse_control_characters() {
        assert_eq!(UserId::parse("alice").unwrap().as_str(), "alice");
        assert!(UserId::parse(&"é".repeat(USER_ID_MAX_CHARS)).is_ok());
        for bad in ["", "   ", "a\0b", "tab\there", "line\n", &"x".repeat(101)] {
            assert_eq!(UserId::parse(bad), Err(UserIdError), "{bad:?}");
        }
        assert!(serde_json::from_str::<UserId>(r#""a\u0000""#).is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("seed1-op42").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(200)).is_ok());
        for bad in ["", "with space", "ключ", &"k".repeat(201)] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyKeyError),
                "{bad:?}"
            );
        }
    }
}

#[cfg(test)]
mod pattern_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::unanchored;

    proptest! {
        /// What a fuzzer generates from the OpenAPI pattern is accepted.
        #[test]
        fn every_user_id_the_pattern_matches_parses(text in proptest::string::string_regex(unanchored(USER_ID_PATTERN)).unwrap()) {
            prop_assume!(text.chars().count() <= USER_ID_MAX_CHARS);
            prop_assert!(UserId::parse(&text).is_ok(), "{text:?}");
        }

        /// And nothing else: a string outside it is refused.
        #[test]
        fn a_control_character_or_only_spaces_is_refused(
            text in "[ \\t\u{3000}]{0,5}",
            control in "[\\x00-\\x1F\\x7F-\\x9F]",
        ) {
            let with_control = format!("a{control}b");
            prop_assert!(UserId::parse(&text).is_err(), "{:?}", text);
            prop_assert!(UserId::parse(&with_control).is_err(), "{:?}", with_control);
        }
    }
}
