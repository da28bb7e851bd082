//! Scrub credentials out of text before it becomes a message.
//!
//! Users hand us secrets inside strings we may echo: a SAS `sig=` in an
//! endpoint or a connection string's `BlobEndpoint`, `user:password@` in an
//! endpoint URL, an `AccountKey=` in a malformed connection string. Every
//! error message passes through [`redact`] (the `Error` constructors, the
//! Python mapping, the CLI), so a secret inside any input never reaches a
//! message, a log line or `--json` output.

use std::borrow::Cow;

/// Shown in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Query / connection-string keys whose values are secrets (lower case).
const SECRET_KEYS: &[&str] = &[
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "accountkey",
    "sharedaccesssignature",
    "password",
    "pwd",
    "aws_secret_access_key",
    "secret_access_key",
    "aws_session_token",
    "session_token",
    "client_secret",
    "access_token",
];

/// `text` with URL user info and the values of secret-bearing keys
/// replaced by [`REDACTED`]. Borrowed when there is nothing to scrub.
pub fn redact(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    let has_userinfo = text.contains("://") && text.contains('@');
    let has_key = SECRET_KEYS.iter().any(|k| lower.contains(k));
    if !has_userinfo && !has_key {
        return Cow::Borrowed(text);
    }
    let scrubbed = redact_keys(&redact_userinfo(text));
    if scrubbed == text {
        // A key's name inside a word ("design=") or a URL without user info.
        return Cow::Borrowed(text);
    }
    Cow::Owned(scrubbed)
}

/// How a malformed URL a user gave is shown in an error. With `://` the
/// text is shown (user info and secret keys are scrubbed by [`redact`]);
/// without it nothing tells a host from a credential (`name:password`
/// typed without `//`), so only its length is shown.
pub fn show_bad_url(text: &str) -> String {
    if text.contains("://") {
        format!("'{}'", redact(text))
    } else {
        format!(
            "of {} characters without '://' (not shown)",
            text.chars().count()
        )
    }
}

/// Characters that end a URL authority or a key's value.
fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '<' | '>' | ')' | ']' | '}' | ',')
}

/// `scheme://user:pw@host` -> `scheme://<redacted>@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let auth_end = rest
            .find(|c: char| ends_value(c) || matches!(c, '/' | '?' | '#'))
            .unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        if let Some(at) = authority.rfind('@') {
            out.push_str(REDACTED);
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &rest[auth_end..];
    }
    out.push_str(rest);
    out
}

/// `…sig=SECRET&…`, `AccountKey=SECRET;…` -> the value redacted.
fn redact_keys(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        let at_boundary = i == 0 || !is_key_char(bytes[i - 1]);
        let value_start = at_boundary
            .then(|| {
                SECRET_KEYS
                    .iter()
                    .filter(|k| lower[i..].starts_with(*k))
                    .find_map(|k| separator_end(bytes, i + k.len()))
            })
            .flatten();
        let Some(value_start) = value_start else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        // A value may be quoted (`"password": "x"`) or bare.
        let mut v = value_start;
        while v < text.len() && matches!(bytes[v], b' ' | b'"' | b'\'') {
            v += 1;
        }
        let value_end = text[v..]
            .find(|c: char| ends_value(c) || matches!(c, '&' | ';'))
            .map_or(text.len(), |e| v + e);
        out.push_str(&text[copied..v]);
        out.push_str(REDACTED);
        copied = value_end;
        i = value_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a key's value starts, when `at` (just past a key's name) holds
/// its separator: `=` or `:`, also after the quote that closes a quoted
/// key (`"password": "x"` in JSON).
fn separator_end(bytes: &[u8], at: usize) -> Option<usize> {
    let at = match bytes.get(at) {
        Some(b'"' | b'\'') => at + 1,
        _ => at,
    };
    matches!(bytes.get(at), Some(b'=' | b':')).then_some(at + 1)
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_every_shape_are_scrubbed() {
        for (input, secret) in [
            ("bad endpoint 'http://user:hunter2@host:9/x'", "hunter2"),
            (
                "https://acct.blob/ctr?sv=2020&sig=S3CRETsig%2B&se=1",
                "S3CRETsig",
            ),
            (
                "BlobEndpoint=http://h/x?sig=AbC123;AccountKey=Zm9vYmFy==;",
                "AbC123",
            ),
            ("AccountKey=Zm9vYmFy==;AccountName=a", "Zm9vYmFy"),
            ("SharedAccessSignature=sv=1&sig=QQQ", "QQQ"),
            ("{\"password\": \"pw-secret\"}", "pw-secret"),
            ("X-Amz-Signature=deadbeef&X-Amz-Date=1", "deadbeef"),
        ] {
            let out = redact(input);
            assert!(!out.contains(secret), "{input} -> {out}");
            assert!(out.contains(REDACTED), "{input} -> {out}");
        }
        let plain = "not found: s3://bkt/run/step-1 (design=3)";
        assert!(matches!(redact(plain), Cow::Borrowed(_)));
        assert_eq!(redact("http://host:9/a@b"), "http://host:9/a@b");
        assert_eq!(redact("designation=1"), "designation=1");
        assert!(!show_bad_url("nonsense:hunter2?sig=x").contains("hunter2"));
        assert!(show_bad_url("ftp://h/x").contains("ftp://h/x"));
    }
}
