//! The response envelope of every JSON endpoint of both services, as the
//! original design's clients expect it: `{"success","data","message"}`,
//! plus a stable `code` on errors.

use serde::{Deserialize, Serialize};

/// Every JSON answer of both services: `success` with `data`, or not with
/// a `message` for people and a `code` for programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    /// The answer; null on an error.
    pub data: Option<T>,
    /// What went wrong, for people; null on success.
    pub message: Option<String>,
    /// What went wrong, for programs (stable); absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self {
        Self {
            success: true,
            data: Some(data),
            message: None,
            code: None,
        }
    }

    pub fn error(code: &str, message: String) -> Self {
        Self {
            success: false,
            data: None,
            message: Some(message),
            code: Some(code.to_owned()),
        }
    }
}
