//! What S3 and Azure tests of the plain mark (`ObjectMeta::plain`) share.

use bytes::Bytes;
use s3dlio_core::object::{put_object, WriteOptions};
use s3dlio_core::store::{Location, PutOptions};

/// Writes `data` compressed (`small.zst`) and by a raw store `put`
/// (`raw.bin`) through `at`, and checks that neither is marked plain: only
/// bytes the codec stored as they are get the mark.
pub async fn only_codec_plain_writes_are_marked(at: impl Fn(&str) -> Location, data: &[u8]) {
    put_object(&at("small.zst"), data, &WriteOptions::with_level(Some(3)))
        .await
        .unwrap();
    let raw = at("raw.bin");
    raw.store
        .put(
            &raw.key,
            Bytes::copy_from_slice(data),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert!(!raw.store.head("small.zst").await.unwrap().plain);
    assert!(!raw.store.head("raw.bin").await.unwrap().plain, "unknown");
}
