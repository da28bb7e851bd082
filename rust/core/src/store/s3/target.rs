//! The S3 multipart protocol behind the shared streaming writer.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::client::BucketClient;
use crate::error::{Error, Result};
use crate::store::upload::{MultipartTarget, UploadedPart};
use crate::store::{ObjectMeta, PutOptions};

/// One object being uploaded.
pub(crate) struct S3Target {
    client: Arc<BucketClient>,
    key: String,
    /// Mark the object plain in its user metadata (`PutOptions::plain`).
    plain: bool,
    /// The CRC32C the caller declared for the bytes (`PutOptions::crc32c`).
    declared_crc32c: Option<u32>,
}

impl S3Target {
    pub fn new(client: Arc<BucketClient>, key: &str, opts: &PutOptions) -> Self {
        S3Target {
            client,
            key: key.to_string(),
            plain: opts.plain,
            declared_crc32c: opts.crc32c,
        }
    }
}

#[async_trait]
impl MultipartTarget for S3Target {
    fn uri(&self) -> String {
        self.client.uri(&self.key)
    }

    async fn put_whole(&self, data: Bytes, crc32c: u32) -> Result<ObjectMeta> {
        self.put_chunks(vec![data], crc32c).await
    }

    async fn put_chunks(&self, chunks: Vec<Bytes>, crc32c: u32) -> Result<ObjectMeta> {
        let (_, meta) = self
            .client
            .put_object(&self.key, chunks, crc32c, false, self.plain)
            .await?;
        Ok(meta)
    }

    async fn start(&self) -> Result<String> {
        self.client
            .create_multipart(&self.key, self.plain, self.declared_crc32c)
            .await
    }

    async fn put_part(
        &self,
        upload_id: &str,
        number: u32,
        data: Bytes,
        crc32c: u32,
    ) -> Result<UploadedPart> {
        self.client
            .upload_part(&self.key, upload_id, number, data, crc32c)
            .await
    }

    async fn complete(
        &self,
        upload_id: &str,
        parts: &[UploadedPart],
        size: u64,
        crc32c: u32,
    ) -> Result<ObjectMeta> {
        // The metadata recorded at creation must not name other bytes
        // than those sent; the engine aborts the upload on this error.
        if self.plain && self.declared_crc32c.is_some_and(|d| d != crc32c) {
            return Err(Error::invalid(format!(
                "{}: the bytes written do not match the CRC32C declared for them",
                self.uri()
            )));
        }
        let etag = self
            .client
            .complete_multipart(&self.key, upload_id, parts)
            .await?;
        let mut meta = ObjectMeta::new(&self.key, size);
        meta.etag = etag;
        meta.crc32c = Some(crc32c);
        meta.plain = self.plain;
        Ok(meta)
    }

    async fn abort(&self, upload_id: &str) -> Result<()> {
        self.client.abort_multipart(&self.key, upload_id).await
    }
}
