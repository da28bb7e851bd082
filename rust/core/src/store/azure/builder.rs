//! Configuration of an Azure Blob store: which endpoint, which credential,
//! how hard to retry, from `storage_options` and the environment.
//!
//! Credentials are taken from the first source that has any, in this order:
//! 1. `storage_options` (`connection_string`, `account_key` with
//!    `account_name`, `sas_token`): what the caller passed wins;
//! 2. `AZURE_STORAGE_CONNECTION_STRING` (also `UseDevelopmentStorage=true`
//!    and explicit `BlobEndpoint=...`);
//! 3. `AZURE_STORAGE_ACCOUNT` (or `AZURE_STORAGE_ACCOUNT_NAME`) +
//!    `AZURE_STORAGE_KEY` (or `AZURE_STORAGE_ACCOUNT_KEY`);
//! 4. `AZURE_STORAGE_SAS_TOKEN`;
//! 5. otherwise an Entra ID token credential ([`super::credential::token_credential`],
//!    one per environment and process).

use std::fmt;
use std::time::Duration;

use azure_core::http::Url;

use super::credential::{shared_token_credential, AzureCredential, SharedKeyPolicy};
use crate::error::{Error, Result};

/// Azurite's well-known account and key (public, documented by Microsoft).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_BLOB_PORT: u16 = 10000;

/// Azure settings a caller may pass next to an `az://` URI. Anything left
/// unset comes from the environment. `Debug` never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AzureOptions {
    pub connection_string: Option<String>,
    /// Only checked against the account in the URI (which is authoritative).
    pub account_name: Option<String>,
    pub account_key: Option<String>,
    pub sas_token: Option<String>,
    /// Blob service endpoint, e.g. `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// Retries of one request after a 5xx, a timeout or a broken connection.
    pub max_retries: Option<u32>,
    /// Give up retrying one request after this long.
    pub retry_timeout: Option<Duration>,
    /// Longest time one attempt may take to connect, send its request
    /// (a whole block, for uploads) and see its reply begin, before it
    /// fails and is retried; unset, the SDK's own bounds (20 s to connect,
    /// 60 s per read). Set it above a block's upload time.
    pub read_timeout: Option<Duration>,
}

impl fmt::Debug for AzureOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| o.as_ref().map(|_| "<set>");
        f.debug_struct("AzureOptions")
            .field("connection_string", &set(&self.connection_string))
            .field("account_name", &self.account_name)
            .field("account_key", &set(&self.account_key))
            .field("sas_token", &set(&self.sas_token))
            .field("endpoint", &self.endpoint)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

impl AzureOptions {
    /// The `storage_options` keys this backend understands.
    pub const KEYS: &'static [&'static str] = &[
        "connection_string",
        "account_name",
        "account_key",
        "sas_token",
        "endpoint",
        "max_retries",
        "retry_timeout",
        "read_timeout",
    ];

    /// Set the storage option `key`; `Ok(false)` when `key` is not one of
    /// ours. Errors name the key, never the value of a secret.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let text = || Some(value.to_string());
        match key {
            "connection_string" => self.connection_string = text(),
            "account_name" => self.account_name = text(),
            "account_key" => self.account_key = text(),
            "sas_token" => self.sas_token = text(),
            "endpoint" => self.endpoint = text(),
            "max_retries" => {
                self.max_retries = Some(value.trim().parse().map_err(|_| {
                    Error::invalid(format!(
                        "storage option max_retries must be a whole number, got '{value}'"
                    ))
                })?)
            }
            "retry_timeout" => {
                let secs: f64 = value.trim().parse().map_err(|_| {
                    Error::invalid(format!(
                        "storage option retry_timeout must be seconds, got '{value}'"
                    ))
                })?;
                self.retry_timeout = Some(crate::limits::seconds(
                    "storage option retry_timeout",
                    secs,
                    true,
                )?);
            }
            "read_timeout" => {
                let secs: f64 = value.trim().parse().map_err(|_| {
                    Error::invalid(format!(
                        "storage option read_timeout must be seconds, got '{value}'"
                    ))
                })?;
                self.read_timeout = Some(crate::limits::seconds(
                    "storage option read_timeout",
                    secs,
                    false,
                )?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Everything needed to talk to one container. Two equal configurations
/// make clients that behave the same (the process-wide client cache's key,
/// `super::AzureStore::open`); `Debug` never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    /// `<endpoint>/<container>`, without any SAS query.
    pub container_url: Url,
    pub credential: AzureCredential,
    pub max_retries: u32,
    pub retry_timeout: Duration,
    /// See [`AzureOptions::read_timeout`].
    pub read_timeout: Option<Duration>,
    /// Entries per List Blobs page; `None` is the service's default (5000).
    /// Only tests set it, to make paging visible with a few blobs.
    pub list_page_size: Option<u32>,
}

/// Bounds of the SDK's exponential retry policy (200 ms doubling), ours to
/// state: five retries ride out a throttled or restarting service (about
/// 6 s of backoff), and a refused connection is reported in seconds, not
/// the 43 s that eight retries took; `retry_timeout` caps slow attempts.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// The parts of a connection string we use.
#[derive(Default, PartialEq, Eq)]
struct ConnectionString {
    account_name: Option<String>,
    account_key: Option<String>,
    sas: Option<String>,
    blob_endpoint: Option<String>,
    protocol: Option<String>,
    endpoint_suffix: Option<String>,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("account_name", &self.account_name)
            .field("blob_endpoint", &self.blob_endpoint)
            .finish_non_exhaustive()
    }
}

/// Parse `Key=Value;...`. `source` names where it came from for errors,
/// which never quote the string (it holds the key).
fn parse_connection_string(s: &str, source: &str) -> Result<ConnectionString> {
    let mut out = ConnectionString::default();
    let mut dev = false;
    let mut dev_proxy = None;
    for (i, entry) in s.split(';').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((k, v)) = entry.split_once('=') else {
            return Err(Error::invalid(format!(
                "{source}: entry {} is not Key=Value",
                i + 1
            )));
        };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "accountname" => out.account_name = Some(v),
            "accountkey" => out.account_key = Some(v),
            "sharedaccesssignature" => out.sas = Some(v),
            "blobendpoint" => out.blob_endpoint = Some(v),
            "defaultendpointsprotocol" => out.protocol = Some(v),
            "endpointsuffix" => out.endpoint_suffix = Some(v),
            "usedevelopmentstorage" => dev = v.eq_ignore_ascii_case("true"),
            "developmentstorageproxyuri" => dev_proxy = Some(v),
            // Queue/Table/File endpoints and the like do not concern blobs.
            _ => {}
        }
    }
    if dev {
        let host = match dev_proxy {
            Some(p) => {
                let u = Url::parse(&p).map_err(|e| {
                    Error::invalid(format!("{source}: DevelopmentStorageProxyUri: {e}"))
                })?;
                format!("{}://{}", u.scheme(), u.host_str().unwrap_or("127.0.0.1"))
            }
            None => "http://127.0.0.1".to_string(),
        };
        out.account_name.get_or_insert_with(|| DEV_ACCOUNT.into());
        out.account_key.get_or_insert_with(|| DEV_KEY.into());
        out.blob_endpoint
            .get_or_insert_with(|| format!("{host}:{DEV_BLOB_PORT}/{DEV_ACCOUNT}"));
    }
    if out.account_key.is_none() && out.sas.is_none() && out.blob_endpoint.is_none() {
        return Err(Error::invalid(format!(
            "{source}: has neither AccountKey, SharedAccessSignature nor BlobEndpoint"
        )));
    }
    Ok(out)
}

/// Where credentials were found, for messages.
struct Found {
    source: &'static str,
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    endpoint: Option<String>,
    protocol: Option<String>,
    suffix: Option<String>,
}

impl Found {
    fn from_connection_string(cs: ConnectionString, source: &'static str) -> Self {
        Found {
            source,
            account: cs.account_name,
            key: cs.account_key,
            sas: cs.sas,
            endpoint: cs.blob_endpoint,
            protocol: cs.protocol,
            suffix: cs.endpoint_suffix,
        }
    }

    fn plain(source: &'static str, account: Option<String>) -> Self {
        Found {
            source,
            account,
            key: None,
            sas: None,
            endpoint: None,
            protocol: None,
            suffix: None,
        }
    }
}

/// The first credential source that has anything, in the documented order.
fn find_credentials(
    opts: &AzureOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Found>> {
    if let Some(cs) = &opts.connection_string {
        let parsed = parse_connection_string(cs, "storage option connection_string")?;
        return Ok(Some(Found::from_connection_string(
            parsed,
            "storage option connection_string",
        )));
    }
    if let Some(key) = &opts.account_key {
        let mut f = Found::plain("storage option account_key", opts.account_name.clone());
        f.key = Some(key.clone());
        return Ok(Some(f));
    }
    if let Some(sas) = &opts.sas_token {
        let mut f = Found::plain("storage option sas_token", opts.account_name.clone());
        f.sas = Some(sas.clone());
        return Ok(Some(f));
    }
    let nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(cs) = nonempty("AZURE_STORAGE_CONNECTION_STRING") {
        let parsed = parse_connection_string(&cs, "AZURE_STORAGE_CONNECTION_STRING")?;
        return Ok(Some(Found::from_connection_string(
            parsed,
            "AZURE_STORAGE_CONNECTION_STRING",
        )));
    }
    let env_account =
        nonempty("AZURE_STORAGE_ACCOUNT").or_else(|| nonempty("AZURE_STORAGE_ACCOUNT_NAME"));
    if let Some(key) =
        nonempty("AZURE_STORAGE_KEY").or_else(|| nonempty("AZURE_STORAGE_ACCOUNT_KEY"))
    {
        let mut f = Found::plain("AZURE_STORAGE_KEY", env_account);
        f.key = Some(key);
        return Ok(Some(f));
    }
    if let Some(sas) = nonempty("AZURE_STORAGE_SAS_TOKEN") {
        let mut f = Found::plain("AZURE_STORAGE_SAS_TOKEN", env_account);
        f.sas = Some(sas);
        return Ok(Some(f));
    }
    Ok(None)
}

/// Resolve the store for `az://<account>/<container>/...`.
pub fn resolve(
    account: &str,
    container: &str,
    opts: &AzureOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AzureConfig> {
    let shown = format!("az://{account}/{container}");
    check_container_name(&shown, container)?;
    let found = find_credentials(opts, env)?;
    if let Some(f) = &found {
        if let Some(cred_account) = &f.account {
            if cred_account != account {
                return Err(Error::invalid(format!(
                    "{shown}: the credentials from {} are for storage account '{cred_account}', \
                     not '{account}'",
                    f.source
                )));
            }
        }
    }
    let endpoint = match (&opts.endpoint, &found) {
        (Some(e), _) => e.clone(),
        (None, Some(f)) if f.endpoint.is_some() => f.endpoint.clone().unwrap_or_default(),
        (None, f) => {
            let protocol = f
                .as_ref()
                .and_then(|f| f.protocol.clone())
                .unwrap_or_else(|| "https".into());
            let suffix = f
                .as_ref()
                .and_then(|f| f.suffix.clone())
                .unwrap_or_else(|| "core.windows.net".into());
            format!("{protocol}://{account}.blob.{suffix}")
        }
    };
    let container_url = container_url(&shown, &endpoint, container)?;
    let credential = match found {
        Some(Found { key: Some(key), .. }) => {
            AzureCredential::SharedKey(SharedKeyPolicy::new(account, &key)?)
        }
        Some(Found { sas: Some(sas), .. }) => {
            AzureCredential::Sas(sas.trim().trim_start_matches('?').to_string())
        }
        // A connection string with only an endpoint: public access.
        Some(_) => AzureCredential::Anonymous,
        None => {
            if container_url.scheme() != "https" {
                return Err(Error::invalid(format!(
                    "{shown}: endpoint {} is not https, so Entra ID tokens cannot be used; \
                     set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or \
                     AZURE_STORAGE_SAS_TOKEN",
                    display_url(&container_url)
                )));
            }
            AzureCredential::Token(shared_token_credential(env)?)
        }
    };
    Ok(AzureConfig {
        account: account.to_string(),
        container: container.to_string(),
        container_url,
        credential,
        max_retries: opts.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        retry_timeout: opts.retry_timeout.unwrap_or(DEFAULT_RETRY_TIMEOUT),
        read_timeout: opts.read_timeout,
        list_page_size: None,
    })
}

/// `<endpoint>/<container>`; the endpoint may carry a path (Azurite's
/// `/devstoreaccount1`) but no query.
fn container_url(shown: &str, endpoint: &str, container: &str) -> Result<Url> {
    let bad = |why: String| {
        Error::invalid(format!(
            "{shown}: blob endpoint {} {why}",
            crate::redact::show_bad_url(endpoint.trim())
        ))
    };
    let mut url = Url::parse(endpoint.trim()).map_err(|e| bad(format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(bad("must be an http(s) URL".to_string()));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = format!("{}/{container}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// Container names: 3-63 characters of lower-case letters, digits and
/// single hyphens, starting and ending with a letter or digit. Checked
/// here so a typo is a clear error instead of a 400 from the service.
fn check_container_name(shown: &str, name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok || name == "$root" {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{shown}: '{name}' is not a valid container name (3-63 lower-case letters, \
             digits and single hyphens)"
        )))
    }
}

/// A URL for messages: never its query, which may hold a SAS token.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn kind(cfg: &AzureConfig) -> &'static str {
        cfg.credential.kind()
    }

    #[test]
    fn development_storage_connection_string() {
        let env = env_of(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )]);
        let cfg = resolve(DEV_ACCOUNT, "ckpt", &AzureOptions::default(), &env).unwrap();
        assert_eq!(
            cfg.container_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/ckpt"
        );
        assert_eq!(kind(&cfg), "account key");
    }

    #[test]
    fn explicit_blob_endpoint_and_key() {
        let cs = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};\
             BlobEndpoint=http://127.0.0.1:41234/devstoreaccount1;"
        );
        let env = env_of(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]);
        let cfg = resolve(DEV_ACCOUNT, "ckpt", &AzureOptions::default(), &env).unwrap();
        assert_eq!(
            cfg.container_url.as_str(),
            "http://127.0.0.1:41234/devstoreaccount1/ckpt"
        );
        assert_eq!(kind(&cfg), "account key");
    }

    #[test]
    fn env_order_is_connection_string_then_key_then_sas_then_token() {
        let all = [
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            ),
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("AZURE_STORAGE_KEY", DEV_KEY),
            ("AZURE_STORAGE_SAS_TOKEN", "?sv=2025&sig=abc"),
        ];
        let opts = AzureOptions::default();
        let cfg = resolve(DEV_ACCOUNT, "ckpt", &opts, &env_of(&all)).unwrap();
        assert_eq!(cfg.container_url.port(), Some(10000));
        let cfg = resolve("acct", "ckpt", &opts, &env_of(&all[1..])).unwrap();
        assert_eq!(kind(&cfg), "account key");
        assert_eq!(
            cfg.container_url.as_str(),
            "https://acct.blob.core.windows.net/ckpt"
        );
        let cfg = resolve("acct", "ckpt", &opts, &env_of(&all[3..])).unwrap();
        match &cfg.credential {
            AzureCredential::Sas(s) => assert_eq!(s, "sv=2025&sig=abc"),
            other => panic!("{other:?}"),
        }
        let cfg = resolve("acct", "ckpt", &opts, &env_of(&[])).unwrap();
        assert_eq!(kind(&cfg), "Entra ID token");
    }

    #[test]
    fn storage_options_win_over_the_environment() {
        let env = env_of(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )]);
        let mut opts = AzureOptions::default();
        assert!(opts.set("sas_token", "sv=1&sig=x").unwrap());
        assert!(opts
            .set("endpoint", "http://127.0.0.1:9/devstoreaccount1")
            .unwrap());
        assert!(opts.set("max_retries", "2").unwrap());
        assert!(opts.set("retry_timeout", "0.5").unwrap());
        assert!(opts.set("read_timeout", "1.5").unwrap());
        assert!(!opts.set("direct_fallback", "true").unwrap());
        let cfg = resolve(DEV_ACCOUNT, "ckpt", &opts, &env).unwrap();
        assert_eq!(kind(&cfg), "SAS token");
        assert_eq!(cfg.container_url.port(), Some(9));
        assert_eq!(cfg.max_retries, 2);
        assert_eq!(cfg.retry_timeout, Duration::from_millis(500));
        assert_eq!(cfg.read_timeout, Some(Duration::from_millis(1500)));
        assert!(opts.set("max_retries", "many").is_err());
        assert!(opts.set("read_timeout", "0").is_err());
    }

    #[test]
    fn mismatched_account_and_bad_names_are_clear() {
        let env = env_of(&[
            ("AZURE_STORAGE_ACCOUNT", "other"),
            ("AZURE_STORAGE_KEY", DEV_KEY),
        ]);
        let msg = resolve("acct", "ckpt", &AzureOptions::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("'other'") && msg.contains("'acct'"), "{msg}");
        assert!(!msg.contains(DEV_KEY), "{msg}");
        let msg = resolve("acct", "Bad_Name", &AzureOptions::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a valid container name"), "{msg}");
    }

    #[test]
    fn http_endpoint_without_secret_cannot_use_tokens() {
        let mut opts = AzureOptions::default();
        opts.set("endpoint", "http://127.0.0.1:1/acct").unwrap();
        let msg = resolve("acct", "ckpt", &opts, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not https"), "{msg}");
    }

    #[test]
    fn malformed_connection_strings_never_echo_secrets() {
        let secret = "AccountKey=supersecret;garbage";
        let env = env_of(&[("AZURE_STORAGE_CONNECTION_STRING", secret)]);
        let msg = resolve("acct", "ckpt", &AzureOptions::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("entry 2 is not Key=Value"), "{msg}");
        assert!(!msg.contains("supersecret"), "{msg}");
        let mut opts = AzureOptions::default();
        opts.set("account_key", "supersecret").unwrap();
        let shown = format!("{opts:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
    }
}
