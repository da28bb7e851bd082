//! What `PyCheckpointStore.save` does, for tests of the seed API: one
//! rank's shard, then finalize.

use std::time::Duration;

use s3dlio_core::checkpoint::CheckpointStore;
use s3dlio_core::Error;

pub async fn save(
    store: &CheckpointStore,
    step: u64,
    data: &[u8],
    overwrite: bool,
) -> Result<(), Error> {
    let w = store.writer(1, 0, overwrite)?;
    let shard = w.save_shard(step, data).await?;
    w.finalize(
        step,
        0,
        "test",
        Some(vec![shard]),
        serde_json::Value::Null,
        Duration::ZERO,
    )
    .await?;
    Ok(())
}
