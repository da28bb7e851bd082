//! The commit protocol under injected failures: whatever fails, the
//! previous committed checkpoint stays readable and nothing half-written
//! becomes visible.

use std::sync::Arc;
use std::time::Duration;

use s3dlio_core::checkpoint::{CheckpointStore, Strategy};
use s3dlio_core::object::WriteOptions;
use s3dlio_core::store::faults::{Fault, FaultStore, Op};
use s3dlio_core::store::{open_store, Location, ObjectStore, StoreOptions};
use s3dlio_core::Error;

#[path = "support/seed.rs"]
mod seed;
use seed::save;

fn memory(name: &str) -> Location {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    open_store(
        &format!("memory://{name}-{n}/run"),
        &StoreOptions::default(),
    )
    .unwrap()
}

fn with_faults(loc: &Location) -> (Arc<FaultStore>, CheckpointStore) {
    let faults = FaultStore::new(loc.store.clone(), vec![]);
    let wrapped = Location {
        store: faults.clone() as Arc<dyn ObjectStore>,
        key: loc.key.clone(),
    };
    let store =
        CheckpointStore::at(wrapped, Strategy::Flat, WriteOptions::with_level(Some(3))).unwrap();
    (faults, store)
}

async fn latest(store: &CheckpointStore) -> Vec<u8> {
    let step = store
        .latest_step()
        .await
        .unwrap()
        .expect("a committed step");
    store.reader().read_shard(step, 0).await.unwrap().to_vec()
}

fn payload(seed: u8) -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_point_keeps_the_previous_checkpoint() {
    for (op, nth) in [
        (Op::Write, 1),
        (Op::Finish, 1),
        (Op::Put, 1),
        (Op::Put, 2),
        (Op::PutIfAbsent, 1),
    ] {
        let loc = memory("fail");
        let (faults, store) = with_faults(&loc);
        save(&store, 1, &payload(1), false).await.unwrap();
        faults.set_faults(vec![Fault::FailNth { op, nth }]);
        let err = save(&store, 2, &payload(2), false).await.unwrap_err();
        assert!(
            err.to_string().contains("injected failure"),
            "{op:?}: {err}"
        );
        faults.set_faults(vec![]);
        assert_eq!(
            latest(&store).await,
            payload(1),
            "{op:?}#{nth}: previous checkpoint lost"
        );
        assert_eq!(
            store.committed_steps().await.unwrap(),
            vec![1],
            "{op:?}: half save visible"
        );
        // A retry of the same step then succeeds.
        save(&store, 2, &payload(2), false).await.unwrap();
        assert_eq!(latest(&store).await, payload(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_overwrite_keeps_the_committed_generation() {
    let loc = memory("overwrite");
    let (faults, store) = with_faults(&loc);
    save(&store, 5, &payload(1), false).await.unwrap();
    let refused = save(&store, 5, &payload(2), false).await.unwrap_err();
    assert!(matches!(refused, Error::AlreadyExists { .. }), "{refused}");
    // Puts of an overwrite: the shard record, then the new manifest.
    faults.set_faults(vec![Fault::FailNth {
        op: Op::Put,
        nth: 2,
    }]);
    assert!(save(&store, 5, &payload(2), true).await.is_err());
    faults.set_faults(vec![]);
    assert_eq!(latest(&store).await, payload(1));
    save(&store, 5, &payload(3), true).await.unwrap();
    assert_eq!(latest(&store).await, payload(3));
    assert_eq!(store.manifest(5).await.unwrap().generation, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_reads_are_integrity_errors() {
    for fault in [
        Fault::FlipByte { offset: 100 },
        Fault::TruncateReads { keep: 1000 },
    ] {
        let loc = memory("damage");
        let (faults, store) = with_faults(&loc);
        save(&store, 1, &payload(4), false).await.unwrap();
        let manifest = store.manifest(1).await.unwrap();
        faults.set_faults(vec![fault.clone()]);
        let reader = store.reader();
        let err = match reader.open_shard(&manifest, 0).await {
            Ok(h) => h.reader.read_all(Some(h.meta.crc32c)).await.unwrap_err(),
            Err(e) => e,
        };
        assert!(
            matches!(err, Error::Integrity { .. } | Error::Corrupt { .. }),
            "{fault:?}: {err}"
        );
        assert!(err.to_string().contains("rank-00000-of-00001"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_names_missing_and_foreign_shards() {
    let loc = memory("finalize");
    let store = CheckpointStore::at(loc, Strategy::Hashed, WriteOptions::default()).unwrap();
    let w0 = store.writer(3, 0, false).unwrap();
    let s0 = w0.save_shard(9, b"zero").await.unwrap();
    let s2 = store
        .writer(3, 2, false)
        .unwrap()
        .save_shard(9, b"two")
        .await
        .unwrap();
    let err = w0
        .finalize(
            9,
            0,
            "t",
            Some(vec![s0.clone(), s2.clone()]),
            serde_json::Value::Null,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("missing shard for rank(s) 1 of world_size 3"),
        "{err}"
    );
    let mut wrong = s2.clone();
    wrong.step = 8;
    let err = w0
        .finalize(
            9,
            0,
            "t",
            Some(vec![s0.clone(), wrong]),
            serde_json::Value::Null,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("belongs to step 8"), "{err}");
    // Records stored by the ranks are found by polling when none are passed.
    let late = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store
                .writer(3, 1, false)
                .unwrap()
                .save_shard(9, b"one")
                .await
                .unwrap();
        }
    });
    let m = w0
        .finalize(
            9,
            0,
            "t",
            None,
            serde_json::Value::Null,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    late.await.unwrap();
    assert_eq!(m.shards.len(), 3);
    assert_eq!(&store.reader().read_shard(9, 1).await.unwrap()[..], b"one");
}

/// A store that refuses to list everything under the checkpoint base, the
/// way paging every shard key of every checkpoint on an object store would
/// be refused by a user's patience; one-level listings pass through.
#[derive(Debug)]
struct NoDeepListing {
    inner: Arc<dyn ObjectStore>,
    base: String,
}

#[async_trait::async_trait]
impl ObjectStore for NoDeepListing {
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }
    async fn put(
        &self,
        key: &str,
        data: bytes::Bytes,
        opts: &s3dlio_core::store::PutOptions,
    ) -> Result<s3dlio_core::store::ObjectMeta, Error> {
        self.inner.put(key, data, opts).await
    }
    async fn writer(
        &self,
        key: &str,
        opts: &s3dlio_core::store::PutOptions,
    ) -> Result<Box<dyn s3dlio_core::store::ObjectWriter>, Error> {
        self.inner.writer(key, opts).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, Error> {
        self.inner.get_range(key, range).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, Error> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<s3dlio_core::store::ObjectMeta, Error> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<s3dlio_core::store::ObjectMeta>, Error> {
        if prefix.trim_end_matches('/') == self.base {
            return Err(Error::invalid(format!("deep listing of {prefix}")));
        }
        self.inner.list(prefix).await
    }
    async fn list_dir(&self, prefix: &str) -> Result<s3dlio_core::store::DirListing, Error> {
        self.inner.list_dir(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.inner.delete(key).await
    }
    async fn put_if_absent(&self, key: &str, data: bytes::Bytes) -> Result<bool, Error> {
        self.inner.put_if_absent(key, data).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_steps_list_one_level_and_skip_uncommitted_steps() {
    let loc = memory("one-level");
    let guarded = Location {
        store: Arc::new(NoDeepListing {
            inner: loc.store.clone(),
            base: loc.key.clone(),
        }) as Arc<dyn ObjectStore>,
        key: loc.key.clone(),
    };
    let store = CheckpointStore::at(guarded, Strategy::Flat, WriteOptions::default()).unwrap();
    for step in [3, 10, 7] {
        save(&store, step, &payload(step as u8), false)
            .await
            .unwrap();
    }
    // A save that died before its marker, and something that is no step.
    store
        .writer(1, 0, false)
        .unwrap()
        .save_shard(12, b"orphan")
        .await
        .unwrap();
    loc.store
        .put(
            &format!("{}/notes/readme.txt", loc.key),
            bytes::Bytes::from_static(b"x"),
            &Default::default(),
        )
        .await
        .unwrap();

    assert_eq!(store.committed_steps().await.unwrap(), vec![3, 7, 10]);
    assert_eq!(store.latest_step().await.unwrap(), Some(10));
    assert_eq!(latest(&store).await, payload(10));
}
