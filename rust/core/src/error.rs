//! One error type for every backend, so callers (Python, CLI) map failures
//! the same way whatever the store.

use std::fmt;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure names the object it is about (`uri`), never a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {uri}")]
    NotFound { uri: String },

    #[error("already exists: {uri}")]
    AlreadyExists { uri: String },

    #[error("permission denied: {uri}: {reason}")]
    PermissionDenied { uri: String, reason: String },

    #[error(
        "integrity check failed for {uri} at byte {offset}: expected CRC32C {expected:08x}, got {actual:08x}"
    )]
    Integrity {
        uri: String,
        offset: u64,
        expected: u32,
        actual: u32,
    },

    /// Stored bytes that cannot be decoded (truncated, bad frame, bad trailer).
    #[error("corrupt object {uri}: {reason}")]
    Corrupt { uri: String, reason: String },

    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error("{uri}: {reason}")]
    Backend {
        uri: String,
        reason: String,
        retryable: bool,
    },
}

impl Error {
    // Every constructor scrubs credentials: messages echo user input
    // (endpoints, connection strings) that may carry them.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::InvalidInput(scrub(msg.to_string()))
    }

    pub fn corrupt(uri: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Corrupt {
            uri: scrub(uri.into()),
            reason: scrub(reason.to_string()),
        }
    }

    pub fn backend(uri: impl Into<String>, reason: impl fmt::Display, retryable: bool) -> Self {
        Error::Backend {
            uri: scrub(uri.into()),
            reason: scrub(reason.to_string()),
            retryable,
        }
    }

    /// The message with any credential in it redacted: what every
    /// boundary (Python, CLI, logs) shows.
    pub fn redacted(&self) -> String {
        scrub(self.to_string())
    }

    /// Map an OS error on `uri` to the matching variant.
    pub fn from_io(uri: impl Into<String>, err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let uri = uri.into();
        match err.kind() {
            NotFound => Error::NotFound { uri },
            AlreadyExists => Error::AlreadyExists { uri },
            PermissionDenied => Error::PermissionDenied {
                uri,
                reason: err.to_string(),
            },
            Interrupted | TimedOut | WouldBlock => Error::backend(uri, err, true),
            _ => Error::backend(uri, err, false),
        }
    }

    /// The same error with its free-text reason rewritten (Backend and
    /// PermissionDenied carry one; other variants are returned as they are).
    pub fn map_reason(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            Error::Backend {
                uri,
                reason,
                retryable,
            } => Error::Backend {
                uri,
                reason: f(&reason),
                retryable,
            },
            Error::PermissionDenied { uri, reason } => Error::PermissionDenied {
                uri,
                reason: f(&reason),
            },
            other => other,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

fn scrub(text: String) -> String {
    match crate::redact::redact(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    }
}
