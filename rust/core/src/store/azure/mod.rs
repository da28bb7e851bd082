//! `az://<account>/<container>/<key>`: Azure Blob Storage (and Azurite)
//! through the official `azure_storage_blob` crate.
//!
//! - `builder.rs`: endpoint, credential and retry settings from
//!   `storage_options` and the environment;
//! - `credential.rs`: our Shared Key signing policy, SAS, Entra ID;
//! - `client.rs`: one SDK request per method, errors mapped to ours;
//! - `deadline.rs`: the `read_timeout` bound on each request's reply;
//! - `writer.rs`: streaming block uploads, through the shared multipart
//!   engine (`store/upload.rs`);
//! - here: the `ObjectStore` contract, including parallel ranged reads.
//!
//! The store root is the container: keys are blob names. Containers are
//! never created implicitly; a missing one is `NotFound` naming it.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::Etag;
use bytes::Bytes;
use futures::StreamExt;

use super::ranged::{self, check_version, Cursor, Opened, RangedGet};
use super::shared::Shared;
use super::{DirListing, ObjectMeta, ObjectStore, ObjectWriter, PutOptions};
use crate::error::{Error, Result};

pub mod builder;
pub mod client;
pub mod credential;
mod deadline;
pub mod writer;

pub use builder::{AzureConfig, AzureOptions};
use client::AzureClient;

/// Clients of `open`, by resolved configuration.
static CLIENTS: Shared<AzureConfig, Arc<AzureClient>> = Shared::new();

/// Size of one ranged GET of a large read.
const READ_PART: u64 = 8 << 20;
/// Ranged GETs in flight for one read.
const READ_CONCURRENCY: usize = 8;

#[derive(Debug, Clone)]
pub struct AzureStore {
    client: Arc<AzureClient>,
}

impl AzureStore {
    pub fn new(config: AzureConfig) -> Self {
        AzureStore {
            client: Arc::new(AzureClient::new(config)),
        }
    }

    /// The store for `az://<account>/<container>`, configured from
    /// `options` and the process environment. The client (and so its
    /// connection pool) is the one an earlier open built for an equal
    /// resolved configuration in this process, if any (see
    /// `store/shared.rs`): any change of options or environment
    /// resolves to another configuration and so another client.
    pub fn open(account: &str, container: &str, options: &AzureOptions) -> Result<Self> {
        let env = |name: &str| std::env::var(name).ok();
        Self::open_in(account, container, options, &env)
    }

    /// [`AzureStore::open`] with the environment given (tests).
    fn open_in(
        account: &str,
        container: &str,
        options: &AzureOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let config = builder::resolve(account, container, options, env)?;
        let client = CLIENTS.get_or_try_insert::<Error>(config.clone(), || {
            Ok(Arc::new(AzureClient::new(config)))
        })?;
        Ok(AzureStore { client })
    }

    /// Create this store's container; `false` when it already existed.
    /// For set-up by tests and benchmarks: the store itself never creates one.
    pub async fn create_container(&self) -> Result<bool> {
        self.client.create_container().await
    }

    fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() || key.ends_with('/') {
            return Err(Error::invalid(format!(
                "{}: a blob name must not be empty or end with '/'",
                self.client.uri(key)
            )));
        }
        Ok(())
    }
}

/// Azure's side of the shared ranged-read driver: ranged Get Blob pinned
/// with `If-Match`; a body that breaks off is fetched again (whole piece),
/// up to the configured retries.
struct Reads<'a>(&'a AzureStore);

#[async_trait]
impl RangedGet for Reads<'_> {
    type Body = client::RangeResponse;

    fn uri(&self, key: &str) -> String {
        self.0.client.uri(key)
    }

    fn piece_size(&self) -> u64 {
        READ_PART
    }

    fn concurrency(&self) -> usize {
        READ_CONCURRENCY
    }

    async fn size(&self, key: &str) -> Result<u64> {
        Ok(self.0.client.head(key).await?.size)
    }

    async fn open(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<Option<Opened<Self::Body>>> {
        let pin = version.map(Etag::from);
        let Some(r) = self.0.client.get_range(key, range, pin).await? else {
            return Ok(None);
        };
        let got = r.etag.as_ref().map(|e| e.to_string());
        check_version(&self.uri(key), version, got.as_deref())?;
        Ok(Some(Opened {
            total: r.total,
            version: r.etag.as_ref().map(|e| e.to_string()),
            body: r,
        }))
    }

    async fn fill(
        &self,
        key: &str,
        start: u64,
        dst: &mut [&mut [u8]],
        first: Option<Opened<Self::Body>>,
        version: Option<&str>,
    ) -> Result<()> {
        let client = &self.0.client;
        let len: u64 = dst.iter().map(|b| b.len() as u64).sum();
        let range = start..start + len;
        let max = client.config().max_retries;
        let mut attempt = 0u32;
        let mut response = first.map(|o| o.body);
        loop {
            let r = match response.take() {
                Some(r) => r,
                None => self
                    .open(key, range.clone(), version)
                    .await?
                    .map(|o| o.body)
                    .ok_or_else(|| {
                        Error::backend(
                            client.uri(key),
                            format!("bytes {}..{} are no longer there", range.start, range.end),
                            false,
                        )
                    })?,
            };
            let failure = if r.len != len {
                format!("got {} bytes instead of {len}", r.len)
            } else {
                match collect_into(r.body, dst).await {
                    Ok(n) if n as u64 == len => return Ok(()),
                    Ok(n) => format!("body ended after {n} of {len} bytes"),
                    Err(e) => e,
                }
            };
            if attempt >= max {
                return Err(Error::backend(
                    client.uri(key),
                    format!(
                        "reading bytes {}..{} failed after {attempt} retries: {failure}",
                        range.start, range.end
                    ),
                    true,
                ));
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

/// Copy a body into `dst` (buffers filled in order); the byte count, or
/// why the body broke off (a body longer than `dst` is one such reason).
async fn collect_into(
    mut body: azure_core::http::AsyncResponseBody,
    dst: &mut [&mut [u8]],
) -> std::result::Result<usize, String> {
    let mut cursor = Cursor::at(dst, 0);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| client::redacted_chain(&e))?;
        if !cursor.put(dst, &chunk) {
            return Err("the body is longer than the range asked for".into());
        }
    }
    Ok(cursor.got)
}

/// 100 ms, 200 ms, 400 ms ... capped at 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

#[async_trait]
impl ObjectStore for AzureStore {
    fn uri(&self, key: &str) -> String {
        self.client.uri(key)
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta> {
        self.check_key(key)?;
        if data.len() < opts.multipart_threshold.max(1) {
            return self
                .client
                .put_blob(key, data, false, opts.plain)
                .await?
                .ok_or_else(|| Error::backend(self.uri(key), "unconditional put refused", false));
        }
        let mut w = self.writer(key, opts).await?;
        w.write(data).await?;
        w.finish().await
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        self.check_key(key)?;
        writer::block_writer(self.client.clone(), key, opts)
    }

    /// The first ranged GET learns the blob's size (Content-Range) and
    /// version (ETag); the rest of a large range follows in parallel
    /// pieces pinned to that version (see [`super::ranged`]), each written
    /// straight into its part of the destination buffer.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        ranged::get_range(&Reads(self), key, range).await
    }

    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        ranged::read_exact(&Reads(self), key, offset, bufs).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_range(key, 0..u64::MAX).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.client.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = self.client.list(prefix).await?;
        // The service sorts too, but by its own collation; ours is bytes.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let mut out = self.client.list_dir(prefix).await?;
        out.prefixes.sort();
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client.delete(key).await
    }

    /// Copy Blob: server-side, metadata (the CRC32C) included.
    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        self.check_key(to)?;
        self.client.copy(from, to).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.check_key(key)?;
        Ok(self
            .client
            .put_blob(key, data, true, false)
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::builder::{DEV_ACCOUNT, DEV_KEY};
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn open(options: &AzureOptions, env: &dyn Fn(&str) -> Option<String>) -> AzureStore {
        AzureStore::open_in(DEV_ACCOUNT, "shared-clients", options, env).unwrap()
    }

    #[test]
    fn equal_configurations_share_one_client() {
        // A port nothing listens on: opening makes no request.
        let endpoint = "http://127.0.0.1:9/devstoreaccount1";
        let mut opts = AzureOptions::default();
        opts.set("endpoint", endpoint).unwrap();
        opts.set("account_key", DEV_KEY).unwrap();
        let no_env = env_of(&[]);
        let first = open(&opts, &no_env);
        assert!(Arc::ptr_eq(&first.client, &open(&opts, &no_env).client));

        // Every option that changes behaviour is another client.
        for (key, value) in [
            ("max_retries", "1"),
            ("retry_timeout", "3"),
            ("read_timeout", "4"),
            ("endpoint", "http://127.0.0.1:10/devstoreaccount1"),
            ("sas_token", "sv=1&sig=x"),
        ] {
            let mut changed = opts.clone();
            changed.set(key, value).unwrap();
            if key == "sas_token" {
                changed.account_key = None;
            }
            let other = open(&changed, &no_env);
            assert!(!Arc::ptr_eq(&first.client, &other.client), "{key}");
            assert!(Arc::ptr_eq(&other.client, &open(&changed, &no_env).client));
        }
        let other_container =
            AzureStore::open_in(DEV_ACCOUNT, "shared-clients-2", &opts, &no_env).unwrap();
        assert!(!Arc::ptr_eq(&first.client, &other_container.client));
    }

    #[test]
    fn a_changed_environment_is_another_client() {
        let cs = |port: u16, key: &str| {
            format!(
                "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={key};\
                 BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
            )
        };
        let opts = AzureOptions::default();
        let first_cs = cs(11, DEV_KEY);
        let first_env = env_of(&[("AZURE_STORAGE_CONNECTION_STRING", &first_cs)]);
        let first = open(&opts, &first_env);
        assert!(Arc::ptr_eq(&first.client, &open(&opts, &first_env).client));
        // Another key (a rotated credential) in the same variable.
        let rotated_cs = cs(11, "cm90YXRlZC1rZXk=");
        let rotated = open(
            &opts,
            &env_of(&[("AZURE_STORAGE_CONNECTION_STRING", &rotated_cs)]),
        );
        assert!(!Arc::ptr_eq(&first.client, &rotated.client));
        // Another endpoint.
        let moved_cs = cs(12, DEV_KEY);
        let moved = open(
            &opts,
            &env_of(&[("AZURE_STORAGE_CONNECTION_STRING", &moved_cs)]),
        );
        assert!(!Arc::ptr_eq(&first.client, &moved.client));
        // The same settings given as options resolve to the same
        // configuration: the key is what was resolved, not where from.
        let mut same = AzureOptions::default();
        same.set("endpoint", &format!("http://127.0.0.1:11/{DEV_ACCOUNT}"))
            .unwrap();
        same.set("account_key", DEV_KEY).unwrap();
        let from_options = open(&same, &env_of(&[]));
        assert!(Arc::ptr_eq(&first.client, &from_options.client));
    }

    #[test]
    fn entra_credentials_are_shared_per_environment() {
        let mut opts = AzureOptions::default();
        opts.set("endpoint", "https://127.0.0.1:9/devstoreaccount1")
            .unwrap();
        let one = env_of(&[
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "secret-one"),
        ]);
        let a = open(&opts, &one);
        let b = open(&opts, &one);
        assert!(Arc::ptr_eq(&a.client, &b.client));
        let two = env_of(&[
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "secret-two"),
        ]);
        let c = open(&opts, &two);
        assert!(!Arc::ptr_eq(&a.client, &c.client));
        assert_ne!(a.client.config().credential, c.client.config().credential);
    }
}
