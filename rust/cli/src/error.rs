//! Failures of a command and the exit code each one means.

use std::fmt;

/// Everything went well.
pub const EXIT_OK: i32 = 0;
/// Data did not match its CRC32C or could not be decoded.
pub const EXIT_INTEGRITY: i32 = 1;
/// Usage error, bad input, not found or any other failure.
pub const EXIT_FAILURE: i32 = 2;

/// A failed command: the message for stderr and the exit code.
#[derive(Debug, Clone)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn failure(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_FAILURE,
            message: s3dlio_core::redact::redact(&message.into()).into_owned(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Exit code of a core error: only bad data is an integrity failure;
/// a missing object or an unreachable store is not.
pub fn exit_code(err: &s3dlio_core::Error) -> i32 {
    match err {
        s3dlio_core::Error::Integrity { .. } | s3dlio_core::Error::Corrupt { .. } => EXIT_INTEGRITY,
        _ => EXIT_FAILURE,
    }
}

impl From<s3dlio_core::Error> for CliError {
    fn from(err: s3dlio_core::Error) -> Self {
        CliError {
            code: exit_code(&err),
            message: err.redacted(),
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;
