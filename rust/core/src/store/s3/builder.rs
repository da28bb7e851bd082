//! S3 configuration: explicit `storage_options` first, then the environment
//! (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION`, the standard
//! credential chain of aws-config), then defaults. One SDK client per
//! distinct configuration and process, built on first use and shared.

use std::fmt;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;

use crate::error::{Error, Result};
use crate::store::shared::{self, EnvSnapshot, Shared};

/// Region used when none is configured anywhere: SigV4 needs one, and
/// S3-compatible servers accept any.
const FALLBACK_REGION: &str = "us-east-1";

/// How bucket names go into request URLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// Path style for a custom endpoint (S3-compatible servers rarely have
    /// wildcard DNS), virtual-hosted style for AWS itself.
    #[default]
    Auto,
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

/// S3 settings a caller may pass as `storage_options`; unset fields come
/// from the environment. `Debug` never prints a secret.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct S3Options {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// A profile of `~/.aws/config` (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Send unsigned requests (public buckets).
    pub anonymous: bool,
    pub addressing: Addressing,
    /// Attempts per request, the first included (SDK default: 3, or
    /// `AWS_MAX_ATTEMPTS`). Also bounds resumes of a broken download body.
    pub max_attempts: Option<u32>,
    pub connect_timeout: Option<Duration>,
    /// Longest wait for a response or for more of a body.
    pub read_timeout: Option<Duration>,
    /// Override the caller's part size for multipart uploads (bytes).
    pub part_size: Option<usize>,
    /// Override the caller's upload concurrency; also the parallel ranged
    /// GETs of one large read.
    pub concurrency: Option<usize>,
    /// Override the caller's multipart threshold (bytes).
    pub multipart_threshold: Option<usize>,
    /// Objects larger than this are copied with UploadPartCopy instead of
    /// one CopyObject (bytes; default and ceiling: CopyObject's 5 GiB).
    pub multipart_copy_threshold: Option<u64>,
}

/// `storage_options` keys this backend understands (aliases included).
pub const S3_OPTION_KEYS: &[&str] = &[
    "endpoint_url",
    "region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "profile",
    "anonymous",
    "addressing_style",
    "force_path_style",
    "max_attempts",
    "connect_timeout",
    "read_timeout",
    "multipart_chunksize",
    "max_concurrency",
    "multipart_threshold",
    "multipart_copy_threshold",
];

impl S3Options {
    /// Apply one `storage_options` entry. `Ok(false)` when `key` is not an
    /// S3 option (the caller then tries others or reports it unknown).
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let text = || Some(value.to_string());
        match key {
            "endpoint_url" | "aws_endpoint_url" => {
                self.endpoint_url = Some(check_endpoint(value)?)
            }
            // `endpoint` is shared with Azure (a dict applies to one URI of
            // either kind): checked when an S3 store is opened, not here.
            "endpoint" => self.endpoint_url = Some(value.trim().trim_end_matches('/').to_string()),
            "region" | "region_name" | "aws_region" => self.region = text(),
            "aws_access_key_id" | "access_key_id" => self.access_key_id = text(),
            "aws_secret_access_key" | "secret_access_key" => self.secret_access_key = text(),
            "aws_session_token" | "session_token" => self.session_token = text(),
            "profile" | "profile_name" | "aws_profile" => self.profile = text(),
            "anonymous" | "anon" | "skip_signature" => self.anonymous = parse_bool(key, value)?,
            "addressing_style" => {
                self.addressing = match value.to_ascii_lowercase().as_str() {
                    "auto" => Addressing::Auto,
                    "path" => Addressing::Path,
                    "virtual" => Addressing::Virtual,
                    _ => {
                        return Err(Error::invalid(format!(
                        "storage option addressing_style must be 'auto', 'path' or 'virtual', got '{value}'"
                    )))
                    }
                }
            }
            "force_path_style" => {
                self.addressing = if parse_bool(key, value)? {
                    Addressing::Path
                } else {
                    Addressing::Virtual
                }
            }
            "max_attempts" => {
                let n = parse_count(key, value)?;
                self.max_attempts = Some(u32::try_from(n).unwrap_or(u32::MAX))
            }
            "connect_timeout" => self.connect_timeout = Some(parse_seconds(key, value)?),
            "read_timeout" => self.read_timeout = Some(parse_seconds(key, value)?),
            "multipart_chunksize" | "part_size" => self.part_size = Some(parse_count(key, value)?),
            "max_concurrency" | "concurrency" => self.concurrency = Some(parse_count(key, value)?),
            "multipart_threshold" => self.multipart_threshold = Some(parse_count(key, value)?),
            "multipart_copy_threshold" => {
                self.multipart_copy_threshold = Some(parse_count(key, value)? as u64)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Default connect timeout (the SDK's own default is 3.1 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default wait for a response once a request is sent (its body
/// included): long enough for a part upload on a slow link, short enough
/// that a server that never answers is reported.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);

impl S3Options {
    /// Connect and read timeouts: the `storage_options` given, else the
    /// defaults above.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (
            self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            self.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT),
        )
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Options")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("profile", &self.profile)
            .field("anonymous", &self.anonymous)
            .field("addressing", &self.addressing)
            .field("max_attempts", &self.max_attempts)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("multipart_copy_threshold", &self.multipart_copy_threshold)
            .finish()
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid(format!(
            "storage option {key} must be true or false, got '{v}'"
        ))),
    }
}

fn parse_count(key: &str, v: &str) -> Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 && key.contains("concurrency") => {
            crate::limits::threads(&format!("storage option {key}"), n as u64)
        }
        Ok(n) if n > 0 && (key.contains("chunksize") || key == "part_size") => {
            crate::limits::part_size(&format!("storage option {key}"), n as u64)
        }
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid(format!(
            "storage option {key} must be a positive integer, got '{v}'"
        ))),
    }
}

fn parse_seconds(key: &str, v: &str) -> Result<Duration> {
    match v.trim().parse::<f64>() {
        Ok(s) => crate::limits::seconds(&format!("storage option {key}"), s, false),
        _ => Err(Error::invalid(format!(
            "storage option {key} must be a positive number of seconds, got '{v}'"
        ))),
    }
}

fn check_endpoint(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match host {
        Some(h) if !h.is_empty() => Ok(url.to_string()),
        _ => Err(Error::invalid(format!(
            "S3 endpoint_url {} must start with http:// or https:// and name a host",
            crate::redact::show_bad_url(url)
        ))),
    }
}

/// What the SDK reads from the environment: every `AWS_*` variable (the
/// endpoint, region, credentials, profile and file locations, retries,
/// IMDS and container credential settings, ...) and `HOME` (where
/// `~/.aws` is). Part of the client's cache key, so a process that changes
/// any of them gets a fresh client, as it would without the cache.
const ENV_PREFIXES: &[&str] = &["AWS_", "HOME"];

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Options with the endpoint resolved from the environment, ready to build
/// a client from.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub options: S3Options,
    /// The endpoint actually used; `None` means AWS itself.
    pub endpoint: Option<String>,
    pub path_style: bool,
}

impl Resolved {
    pub fn new(options: &S3Options) -> Result<Self> {
        let endpoint = match &options.endpoint_url {
            Some(e) => Some(check_endpoint(e)?),
            None => env_nonempty("AWS_ENDPOINT_URL_S3")
                .or_else(|| env_nonempty("AWS_ENDPOINT_URL"))
                .map(|e| check_endpoint(&e))
                .transpose()?,
        };
        if options.access_key_id.is_some() != options.secret_access_key.is_some() {
            return Err(Error::invalid(
                "storage options aws_access_key_id and aws_secret_access_key must be given together",
            ));
        }
        if options.session_token.is_some() && options.access_key_id.is_none() {
            return Err(Error::invalid(
                "storage option aws_session_token needs aws_access_key_id and aws_secret_access_key",
            ));
        }
        let path_style = match options.addressing {
            Addressing::Path => true,
            Addressing::Virtual => false,
            Addressing::Auto => endpoint.is_some(),
        };
        Ok(Resolved {
            options: options.clone(),
            endpoint,
            path_style,
        })
    }

    /// The endpoint for messages: the URL without any user info, or a
    /// note that the SDK picks the AWS endpoint for the region.
    pub fn shown_endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => match e.split_once("://") {
                Some((scheme, rest)) => match rest.split_once('@') {
                    Some((_, host)) => format!("{scheme}://{host}"),
                    None => e.clone(),
                },
                None => e.clone(),
            },
            None => "(AWS, from the region)".to_string(),
        }
    }

    /// Secrets that must never reach a message.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [&self.options.secret_access_key, &self.options.session_token]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        out.extend(
            ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
                .iter()
                .filter_map(|v| env_nonempty(v)),
        );
        out.retain(|s| s.len() >= 4);
        out
    }

    /// Everything that decides how a client built from `self` behaves:
    /// the options, the endpoint, and the environment the SDK reads.
    fn client_key(&self) -> ClientKey {
        ClientKey {
            options: self.options.clone(),
            endpoint: self.endpoint.clone(),
            env: shared::env_snapshot(ENV_PREFIXES),
        }
    }
}

/// The cache key of an SDK client. It holds secrets (keys from options or
/// the environment), so it has no `Debug` and is never formatted.
#[derive(PartialEq, Eq)]
struct ClientKey {
    options: S3Options,
    endpoint: Option<String>,
    env: EnvSnapshot,
}

static CLIENTS: Shared<ClientKey, aws_sdk_s3::Client> = Shared::new();

/// The shared client for `cfg`, built on first use in this process (see
/// [`crate::store::shared`]). The SDK's credential providers refresh
/// their credentials themselves, so a long-lived client keeps working.
pub(crate) async fn client(cfg: &Resolved) -> Result<aws_sdk_s3::Client> {
    let key = cfg.client_key();
    if let Some(c) = CLIENTS.get(&key) {
        return Ok(c);
    }
    let built = build(cfg).await?;
    Ok(CLIENTS.insert(key, built))
}

async fn build(cfg: &Resolved) -> Result<aws_sdk_s3::Client> {
    let o = &cfg.options;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &o.profile {
        loader = loader.profile_name(profile);
    }
    let region = match &o.region {
        Some(r) => RegionProviderChain::first_try(Region::new(r.clone())),
        // A custom endpoint means no EC2 instance metadata to ask: skip
        // IMDS, whose timeouts would delay every first request.
        None if cfg.endpoint.is_some() => {
            let mut profile = aws_config::profile::ProfileFileRegionProvider::builder();
            if let Some(p) = &o.profile {
                profile = profile.profile_name(p);
            }
            RegionProviderChain::first_try(
                aws_config::environment::EnvironmentVariableRegionProvider::new(),
            )
            .or_else(profile.build())
        }
        None => RegionProviderChain::default_provider(),
    };
    loader = loader.region(region.or_else(Region::from_static(FALLBACK_REGION)));
    if o.anonymous {
        loader = loader.no_credentials();
    } else if let (Some(id), Some(secret)) = (&o.access_key_id, &o.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            o.session_token.clone(),
            None,
            "s3dlio-storage-options",
        ));
    }
    if let Some(n) = o.max_attempts {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(n.max(1)));
    }
    // Always set: the SDK has no read timeout by default, so a server that
    // accepts and never answers would hang a request forever.
    let (connect, read) = o.timeouts();
    loader = loader.timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(connect)
            .read_timeout(read)
            .build(),
    );
    if let Some(e) = &cfg.endpoint {
        loader = loader.endpoint_url(e);
    }
    let sdk = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(cfg.path_style)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(conf))
}

/// Max attempts the client was configured with (for our own body resumes).
pub(crate) fn attempts(cfg: &Resolved) -> u32 {
    cfg.options
        .max_attempts
        .or_else(|| env_nonempty("AWS_MAX_ATTEMPTS").and_then(|v| v.parse().ok()))
        .unwrap_or(3)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_reject() {
        let mut o = S3Options::default();
        assert!(o.set("endpoint_url", "http://127.0.0.1:9000/").unwrap());
        assert_eq!(o.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(o.set("force_path_style", "false").unwrap());
        assert_eq!(o.addressing, Addressing::Virtual);
        assert!(o.set("addressing_style", "path").unwrap());
        assert_eq!(o.addressing, Addressing::Path);
        assert!(o.set("max_attempts", "2").unwrap());
        assert!(o.set("connect_timeout", "0.5").unwrap());
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(500)));
        assert!(!o.set("colour", "red").unwrap());
        for (k, v) in [
            ("endpoint_url", "127.0.0.1:9000"),
            ("addressing_style", "sideways"),
            ("max_attempts", "0"),
            ("connect_timeout", "-1"),
            ("anonymous", "maybe"),
            ("multipart_chunksize", "8MB"),
        ] {
            let err = o.set(k, v).unwrap_err().to_string();
            assert!(err.contains(k) || err.contains(v), "{k}: {err}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut o = S3Options::default();
        o.set("aws_access_key_id", "AKIDEXAMPLE").unwrap();
        o.set("aws_secret_access_key", "very-secret-key").unwrap();
        o.set("aws_session_token", "very-secret-token").unwrap();
        let shown = format!("{o:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn custom_endpoint_means_path_style_and_keys_go_together() {
        let mut o = S3Options::default();
        o.set("endpoint_url", "http://localhost:1").unwrap();
        assert!(Resolved::new(&o).unwrap().path_style);
        o.set("addressing_style", "virtual").unwrap();
        assert!(!Resolved::new(&o).unwrap().path_style);
        o.set("aws_access_key_id", "id").unwrap();
        let err = Resolved::new(&o).unwrap_err().to_string();
        assert!(err.contains("aws_secret_access_key"), "{err}");
    }

    #[test]
    fn one_client_per_resolved_configuration() {
        let mut o = S3Options::default();
        o.set("endpoint_url", "http://127.0.0.1:9").unwrap();
        o.set("region", "us-east-1").unwrap();
        o.set("aws_access_key_id", "id").unwrap();
        o.set("aws_secret_access_key", "secret-for-the-cache-test")
            .unwrap();
        let cfg = Resolved::new(&o).unwrap();
        assert!(cfg.client_key() == Resolved::new(&o).unwrap().client_key());
        // Every option is part of the key, so a change is another client.
        for (k, v) in [
            ("endpoint_url", "http://127.0.0.1:10"),
            ("region", "eu-west-1"),
            ("aws_secret_access_key", "a-rotated-secret"),
            ("aws_session_token", "a-session-token"),
            ("addressing_style", "virtual"),
            ("max_attempts", "7"),
            ("connect_timeout", "1"),
            ("read_timeout", "5"),
            ("multipart_threshold", "12345"),
        ] {
            let mut changed = o.clone();
            changed.set(k, v).unwrap();
            let other = Resolved::new(&changed).unwrap().client_key();
            assert!(other != cfg.client_key(), "{k}");
        }
        // Built on first use (no request: the endpoint is never asked),
        // then served from the cache.
        let fresh = || Resolved::new(&o).unwrap();
        assert!(CLIENTS.get(&fresh().client_key()).is_none());
        crate::runtime::block_on(client(&fresh())).unwrap().unwrap();
        assert!(CLIENTS.get(&fresh().client_key()).is_some());
    }
}
