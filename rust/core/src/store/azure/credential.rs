//! How requests to Azure Blob are authorized.
//!
//! The official `azure_storage_blob` crate only knows Entra ID tokens, so the
//! account-key case is our own [`SharedKeyPolicy`]: an `azure_core` pipeline
//! policy that signs every try of every request per the Shared Key spec
//! (<https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>).
//! SAS tokens need no policy: they ride in the URL query. Entra ID tokens use
//! the SDK's own bearer policy with a credential chosen by [`token_credential`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request, Url};
use azure_core::time::{to_rfc7231, OffsetDateTime};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::store::shared::{env_snapshot, EnvSnapshot, Shared};

/// What authorizes our requests. `Debug` never shows a secret.
#[derive(Clone)]
pub enum AzureCredential {
    /// Account name and decoded account key: signed by [`SharedKeyPolicy`].
    SharedKey(SharedKeyPolicy),
    /// A SAS token (without the leading `?`), appended to every URL.
    Sas(String),
    /// Entra ID: a bearer token from the SDK's credential types.
    Token(Arc<dyn TokenCredential>),
    /// No credential at all (public containers).
    Anonymous,
}

impl AzureCredential {
    /// A short, secret-free description for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            AzureCredential::SharedKey(_) => "account key",
            AzureCredential::Sas(_) => "SAS token",
            AzureCredential::Token(_) => "Entra ID token",
            AzureCredential::Anonymous => "anonymous access",
        }
    }
}

/// Equal when requests would be authorized the same way: the same key,
/// the same SAS, or the very same token credential (whose token cache is
/// then shared). What makes a configuration a cache key.
impl PartialEq for AzureCredential {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (AzureCredential::SharedKey(a), AzureCredential::SharedKey(b)) => {
                a.account == b.account && a.key == b.key
            }
            (AzureCredential::Sas(a), AzureCredential::Sas(b)) => a == b,
            (AzureCredential::Token(a), AzureCredential::Token(b)) => Arc::ptr_eq(a, b),
            (AzureCredential::Anonymous, AzureCredential::Anonymous) => true,
            _ => false,
        }
    }
}

impl Eq for AzureCredential {}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AzureCredential({})", self.kind())
    }
}

/// Signs requests with an account key. Added to the pipeline as a per-try
/// policy, so every retry is signed again with a fresh `x-ms-date`.
#[derive(Clone)]
pub struct SharedKeyPolicy {
    account: String,
    key: Arc<Vec<u8>>,
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    /// `key` is the base64 account key as the portal shows it. The error
    /// says what is wrong without echoing the key.
    pub fn new(account: &str, key: &str) -> Result<Self> {
        let decoded = BASE64.decode(key.trim()).map_err(|_| {
            Error::invalid(format!(
                "the account key for Azure storage account '{account}' is not valid base64"
            ))
        })?;
        if decoded.is_empty() {
            return Err(Error::invalid(format!(
                "the account key for Azure storage account '{account}' is empty"
            )));
        }
        Ok(SharedKeyPolicy {
            account: account.to_string(),
            key: Arc::new(decoded),
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// `SharedKey <account>:<signature>` for `string_to_sign`.
    pub fn authorization(&self, string_to_sign: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        };
        mac.update(string_to_sign.as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        format!("SharedKey {}:{signature}", self.account)
    }

    /// Add `x-ms-date` and `Authorization` to `request`.
    pub fn sign(&self, request: &mut Request, now: OffsetDateTime) {
        request.insert_header("x-ms-date", to_rfc7231(&now));
        let mut headers: BTreeMap<String, String> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().to_string()))
            .collect();
        if !headers.contains_key("content-length") {
            // reqwest adds Content-Length from the body; the signature must
            // cover the value it will send.
            if let Some(len) = request.body().len() {
                headers.insert("content-length".into(), len.to_string());
            }
        }
        let sts = string_to_sign(
            &self.account,
            request.method().as_ref(),
            request.url(),
            &headers,
        );
        request.insert_header("authorization", self.authorization(&sts));
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        self.sign(request, OffsetDateTime::now_utc());
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The Shared Key string to sign (service version 2015-02-21 and later).
/// `headers` maps lower-case header names to values.
pub fn string_to_sign(
    account: &str,
    method: &str,
    url: &Url,
    headers: &BTreeMap<String, String>,
) -> String {
    let get = |name: &str| headers.get(name).map(String::as_str).unwrap_or("");
    // A zero Content-Length is signed as the empty string since 2015-02-21.
    let content_length = match get("content-length") {
        "0" => "",
        other => other,
    };
    let mut out = String::with_capacity(256);
    for part in [
        method,
        get("content-encoding"),
        get("content-language"),
        content_length,
        get("content-md5"),
        get("content-type"),
        get("date"),
        get("if-modified-since"),
        get("if-match"),
        get("if-none-match"),
        get("if-unmodified-since"),
        get("range"),
    ] {
        out.push_str(part);
        out.push('\n');
    }
    // Canonicalized headers: every x-ms-* header, sorted (BTreeMap order),
    // leading whitespace of the value dropped, as Microsoft's JS SDK and
    // Azurite do.
    for (name, value) in headers.range("x-ms-".to_string()..) {
        if !name.starts_with("x-ms-") {
            break;
        }
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim_start());
        out.push('\n');
    }
    // Canonicalized resource: /account + the encoded path as sent, then
    // each query parameter (decoded, name lower-cased) sorted by name,
    // repeated values sorted and joined with commas.
    out.push('/');
    out.push_str(account);
    out.push_str(url.path());
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        params
            .entry(k.to_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (name, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

/// The Entra ID credential used when no key, connection string or SAS is
/// configured, in the order of the other SDKs' `DefaultAzureCredential`
/// where the Rust SDK has the pieces: a service principal from
/// `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`, workload
/// identity from `AZURE_FEDERATED_TOKEN_FILE`, else developer tools (Azure
/// CLI, azd) and then managed identity, the first that yields a token being
/// kept.
pub fn token_credential(env: &dyn Fn(&str) -> Option<String>) -> Result<Arc<dyn TokenCredential>> {
    let cred_err =
        |e: azure_core::Error| Error::invalid(format!("cannot set up Entra ID credential: {e}"));
    if let (Some(tenant), Some(client), Some(secret)) = (
        env("AZURE_TENANT_ID"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_CLIENT_SECRET"),
    ) {
        let cred =
            azure_identity::ClientSecretCredential::new(&tenant, client, Secret::new(secret), None)
                .map_err(cred_err)?;
        return Ok(cred);
    }
    if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        let cred = azure_identity::WorkloadIdentityCredential::new(None).map_err(cred_err)?;
        return Ok(cred);
    }
    let sources: Vec<Arc<dyn TokenCredential>> = vec![
        azure_identity::DeveloperToolsCredential::new(None).map_err(cred_err)?,
        azure_identity::ManagedIdentityCredential::new(None).map_err(cred_err)?,
    ];
    Ok(Arc::new(ChainedCredential {
        sources,
        chosen: AtomicUsize::new(usize::MAX),
    }))
}

/// Variables the credential types of `azure_identity` may read from the
/// process environment themselves (tenant, client, secrets, token files,
/// managed identity endpoints, authority host).
const IDENTITY_ENV_PREFIXES: &[&str] = &["AZURE_", "IDENTITY_", "MSI_", "IMDS_"];

/// The variables [`token_credential`] reads through `env`.
const TOKEN_ENV: &[&str] = &[
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// What decides which Entra ID credential [`token_credential`] builds: the
/// variables read through `env` and those the SDK reads itself. Holds
/// secrets: compared, never formatted.
#[derive(PartialEq, Eq)]
struct TokenKey {
    given: Vec<Option<String>>,
    process: EnvSnapshot,
}

static TOKEN_CREDENTIALS: Shared<TokenKey, Arc<dyn TokenCredential>> = Shared::new();

/// [`token_credential`], one per distinct environment and process: the
/// SDK's credentials cache their token and refresh it before it expires,
/// so sharing one keeps a token across stores instead of asking Entra ID
/// (or the CLI) again for every store opened.
pub fn shared_token_credential(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn TokenCredential>> {
    let key = TokenKey {
        given: TOKEN_ENV.iter().map(|name| env(name)).collect(),
        process: env_snapshot(IDENTITY_ENV_PREFIXES),
    };
    TOKEN_CREDENTIALS.get_or_try_insert(key, || token_credential(env))
}

/// Tries each source in turn and sticks with the first that works while
/// it keeps working.
struct ChainedCredential {
    sources: Vec<Arc<dyn TokenCredential>>,
    chosen: AtomicUsize,
}

impl fmt::Debug for ChainedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainedCredential").finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenCredential for ChainedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = self.chosen.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        if let Some(source) = self.sources.get(chosen) {
            match source.get_token(scopes, options.clone()).await {
                Ok(token) => return Ok(token),
                // The chain is shared by every store of the process (see
                // `shared_token_credential`): a source that stopped working
                // (a CLI signed out, an identity removed) is not the end,
                // the chain is tried again as a fresh one would be.
                Err(e) => failures.push(e.to_string()),
            }
        }
        for (i, source) in self.sources.iter().enumerate() {
            if i == chosen {
                continue;
            }
            match source.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    self.chosen.store(i, Ordering::Relaxed);
                    return Ok(token);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no Azure credential found: set AZURE_STORAGE_CONNECTION_STRING, \
                 AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, \
                 or sign in for Entra ID ({})",
                failures.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::Method;

    /// Azurite's well-known development key.
    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A Put Block request with a unicode/space blob name, a conditional
    /// header and several query parameters.
    fn put_block_request() -> (Url, BTreeMap<String, String>) {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/ctr/dir%20with%20space/%C3%BCn%C3%AFc%C3%B8d%C3%A9.bin\
             ?comp=block&blockid=AAAAAAAAAAAAAAAAAAAAAA%3D%3D&timeout=30",
        )
        .unwrap();
        let h = headers(&[
            ("content-length", "11"),
            ("content-type", "application/octet-stream"),
            ("if-none-match", "*"),
            ("x-ms-date", "Tue, 03 Mar 2026 10:00:00 GMT"),
            ("x-ms-version", "2025-11-05"),
            (
                "x-ms-client-request-id",
                "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            ),
            ("user-agent", "not-signed"),
        ]);
        (url, h)
    }

    #[test]
    fn string_to_sign_follows_the_spec() {
        let (url, mut h) = put_block_request();
        h.insert("range".into(), "bytes=0-10".into());
        h.insert("x-ms-meta-note".into(), "  leading spaces dropped".into());
        let sts = string_to_sign("devstoreaccount1", "PUT", &url, &h);
        let want = "PUT\n\n\n11\n\napplication/octet-stream\n\n\n\n*\n\nbytes=0-10\n\
            x-ms-client-request-id:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n\
            x-ms-date:Tue, 03 Mar 2026 10:00:00 GMT\n\
            x-ms-meta-note:leading spaces dropped\n\
            x-ms-version:2025-11-05\n\
            /devstoreaccount1/devstoreaccount1/ctr/dir%20with%20space/%C3%BCn%C3%AFc%C3%B8d%C3%A9.bin\n\
            blockid:AAAAAAAAAAAAAAAAAAAAAA==\n\
            comp:block\n\
            timeout:30";
        assert_eq!(sts, want);
    }

    #[test]
    fn zero_content_length_is_signed_empty() {
        let url = Url::parse("https://acct.blob.core.windows.net/ctr?restype=container").unwrap();
        let h = headers(&[("content-length", "0"), ("x-ms-version", "2025-11-05")]);
        let sts = string_to_sign("acct", "DELETE", &url, &h);
        assert!(sts.starts_with("DELETE\n\n\n\n"), "{sts:?}");
        assert!(sts.ends_with("/acct/ctr\nrestype:container"), "{sts:?}");
    }

    /// Expected signatures computed independently with the Python SDK's
    /// signer (azure-storage-blob 12.27.0,
    /// `azure.storage.blob._shared.authentication.SharedKeyCredentialPolicy`)
    /// on the same requests; docs/ARCHITECTURE.md has the script.
    #[test]
    fn signatures_match_an_independent_implementation() {
        let policy = SharedKeyPolicy::new("devstoreaccount1", DEV_KEY).unwrap();
        let (url, h) = put_block_request();
        let auth = policy.authorization(&string_to_sign("devstoreaccount1", "PUT", &url, &h));
        assert_eq!(
            auth,
            "SharedKey devstoreaccount1:PziYhCkd9YNveCy2mqGYNNn/uidwzpWvOiYCnii0mIc="
        );

        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/ctr\
             ?restype=container&comp=list&prefix=a%2Fb%20c&maxresults=5000",
        )
        .unwrap();
        let h = headers(&[
            ("x-ms-date", "Tue, 03 Mar 2026 10:00:00 GMT"),
            ("x-ms-version", "2025-11-05"),
        ]);
        let auth = policy.authorization(&string_to_sign("devstoreaccount1", "GET", &url, &h));
        assert_eq!(
            auth,
            "SharedKey devstoreaccount1:rkdvgtRytXGp7RGJN6Qm/Pd24upaESPHl6U4X73OodI="
        );
    }

    #[test]
    fn policy_signs_a_real_request_and_hides_the_key() {
        let policy = SharedKeyPolicy::new("devstoreaccount1", DEV_KEY).unwrap();
        let mut req = Request::new(
            Url::parse("http://127.0.0.1:1/devstoreaccount1/ctr/k").unwrap(),
            Method::Put,
        );
        req.insert_header("x-ms-version", "2025-11-05");
        req.set_body(azure_core::Bytes::from_static(b"hello"));
        let now = OffsetDateTime::from_unix_timestamp(1_772_532_000).unwrap();
        policy.sign(&mut req, now);
        let h = req.headers();
        let date = h.get_optional_str(&"x-ms-date".into()).unwrap();
        assert_eq!(date, "Tue, 03 Mar 2026 10:00:00 GMT");
        let mut map = headers(&[
            ("x-ms-date", date),
            ("x-ms-version", "2025-11-05"),
            ("content-length", "5"),
        ]);
        map.insert("content-length".into(), "5".into());
        let want =
            policy.authorization(&string_to_sign("devstoreaccount1", "PUT", req.url(), &map));
        assert_eq!(
            h.get_optional_str(&"authorization".into()),
            Some(want.as_str())
        );
        let shown = format!(
            "{policy:?} {:?}",
            AzureCredential::SharedKey(policy.clone())
        );
        assert!(
            !shown.contains(DEV_KEY) && !shown.contains("Eby8"),
            "{shown}"
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echo() {
        let err = SharedKeyPolicy::new("acct", "not base64 !!").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not valid base64") && !msg.contains("!!"),
            "{msg}"
        );
        assert!(SharedKeyPolicy::new("acct", "").is_err());
    }
}
