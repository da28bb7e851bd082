//! The S3 multipart protocol behind the shared streaming writer.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::client::BucketClient;
use crate::error::Result;
use crate::store::upload::{MultipartTarget, UploadedPart};
use crate::store::ObjectMeta;

/// One object being uploaded.
pub(crate) struct S3Target {
    client: Arc<BucketClient>,
    key: String,
}

impl S3Target {
    pub fn new(client: Arc<BucketClient>, key: &str) -> Self {
        S3Target {
            client,
            key: key.to_string(),
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
            .put_object(&self.key, chunks, crc32c, false)
            .await?;
        Ok(meta)
    }

    async fn start(&self) -> Result<String> {
        self.client.create_multipart(&self.key).await
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
        let etag = self
            .client
            .complete_multipart(&self.key, upload_id, parts)
            .await?;
        let mut meta = ObjectMeta::new(&self.key, size);
        meta.etag = etag;
        meta.crc32c = Some(crc32c);
        Ok(meta)
    }

    async fn abort(&self, upload_id: &str) -> Result<()> {
        self.client.abort_multipart(&self.key, upload_id).await
    }
}
