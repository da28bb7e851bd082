//! SDK failures as the crate's errors: every message names the URI, says
//! what was attempted, and never carries a secret.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// Where a failure happened, for its message.
pub(crate) struct Context<'a> {
    pub uri: &'a str,
    pub bucket: &'a str,
    /// The S3 operation, e.g. `GetObject`.
    pub op: &'a str,
    /// Values to blank out of any text a server or the SDK returns.
    pub secrets: &'a [String],
    /// The endpoint requests go to, for "could not reach" messages.
    pub endpoint: &'a str,
}

impl Context<'_> {
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets {
            out = out.replace(s.as_str(), "<redacted>");
        }
        out
    }
}

/// What a failed request told us, independent of the operation's type.
#[derive(Debug, Clone, Default)]
pub(crate) struct Failure {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// No response at all (connection refused, reset, DNS, timeout, auth).
    pub dispatch: Option<String>,
    pub timeout: bool,
    /// Failed before sending: no credentials could be resolved.
    pub no_credentials: bool,
}

/// An error and its sources, `: `-separated (the SDK's own display adds a
/// Debug dump that is no use to a user).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

impl Failure {
    pub fn of<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut f = Failure::default();
        match err {
            SdkError::ServiceError(ctx) => {
                f.status = Some(ctx.raw().status().as_u16());
                f.code = ctx.err().code().map(str::to_string);
                f.message = ctx.err().message().map(str::to_string);
            }
            SdkError::ResponseError(ctx) => {
                f.status = Some(ctx.raw().status().as_u16());
                f.dispatch = Some(chain(err));
            }
            SdkError::TimeoutError(_) => {
                f.timeout = true;
                f.dispatch = Some(chain(err));
            }
            SdkError::DispatchFailure(d) => {
                let text = chain(err);
                f.timeout = d.is_timeout();
                // Identity resolution fails before anything is sent and
                // surfaces as an unclassified dispatch failure.
                f.no_credentials = d.is_other() && text.contains("credential");
                f.dispatch = Some(text);
            }
            _ => f.dispatch = Some(chain(err)),
        }
        f
    }

    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    pub fn is_status(&self, status: u16) -> bool {
        self.status == Some(status)
    }

    /// Map to the crate's error.
    pub fn into_error(self, ctx: &Context<'_>) -> Error {
        let uri = ctx.uri.to_string();
        let detail = || {
            let mut parts = Vec::new();
            if let Some(c) = &self.code {
                parts.push(c.clone());
            }
            if let Some(s) = self.status {
                parts.push(format!("HTTP {s}"));
            }
            let mut text = parts.join(", ");
            if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
                text = format!("{text}: {m}");
            }
            ctx.redact(&text)
        };
        if let Some(dispatch) = &self.dispatch {
            if self.status.is_none() {
                let text = ctx.redact(dispatch);
                if self.no_credentials {
                    return Error::PermissionDenied {
                        uri,
                        reason: format!(
                            "{}: no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or storage_options): {text}",
                            ctx.op
                        ),
                    };
                }
                let what = if self.timeout { "timed out" } else { "failed" };
                return Error::backend(
                    uri,
                    format!(
                        "{} {what} after retries: the S3 endpoint {} could not be reached or dropped the connection: {text}",
                        ctx.op, ctx.endpoint
                    ),
                    true,
                );
            }
        }
        match (self.code(), self.status) {
            ("NoSuchBucket", _) => Error::NotFound {
                uri: format!("{uri} (bucket '{}' does not exist)", ctx.bucket),
            },
            ("NoSuchKey" | "NotFound" | "NoSuchUpload", _) | (_, Some(404)) => {
                Error::NotFound { uri }
            }
            (
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "AllAccessDisabled"
                | "AccountProblem"
                | "InvalidSecurity"
                | "RequestTimeTooSkewed",
                _,
            )
            | (_, Some(401 | 403)) => Error::PermissionDenied {
                uri,
                reason: format!(
                    "{} refused ({}); check the credentials and the bucket policy",
                    ctx.op,
                    detail()
                ),
            },
            ("InvalidRange", _) | (_, Some(416)) => Error::invalid(format!("{uri}: {}", detail())),
            ("InvalidBucketName" | "KeyTooLongError" | "InvalidArgument" | "EntityTooLarge", _) => {
                Error::invalid(format!(
                    "{uri}: {} rejected the request ({})",
                    ctx.op,
                    detail()
                ))
            }
            (code, status) => {
                let retryable = matches!(
                    code,
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "InternalError"
                        | "ServiceUnavailable"
                        | "RequestLimitExceeded"
                ) || status.is_some_and(|s| s >= 500 || s == 429);
                let after = if retryable { " after retries" } else { "" };
                Error::backend(
                    uri,
                    format!("{} failed{after} ({})", ctx.op, detail()),
                    retryable,
                )
            }
        }
    }
}
