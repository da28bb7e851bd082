//! The streaming multipart writer shared by the cloud backends: S3 (parts
//! of a multipart upload, `s3/target.rs`) and Azure (staged blocks and a
//! block list, `azure/writer.rs`). A backend supplies the wire calls
//! ([`MultipartTarget`]: whole-object PUT, start, part, complete, abort);
//! this module does the buffering, the parallel part uploads, the CRC32C
//! of every part and the cleanup on every failure path.
//!
//! Memory: until `multipart_threshold` bytes have arrived the object is
//! buffered for a single PUT; after that at most `concurrency` parts are in
//! flight plus one being filled. A writer therefore holds at most
//! `max(multipart_threshold, (concurrency + 1) * part_size)` bytes, whatever
//! the object size (part sizes grow for objects too large for
//! `max_parts` parts of the configured size, see [`UploadLimits::part_size_of`]).

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::{ObjectMeta, ObjectWriter, PutOptions};
use crate::crc::{crc32c, crc32c_append, crc32c_combine};
use crate::error::{Error, Result};

/// One part that reached the server.
#[derive(Debug, Clone)]
pub(crate) struct UploadedPart {
    /// 1-based, in object order.
    pub number: u32,
    /// What the backend needs to name the part when completing (ETag, block id).
    pub tag: String,
    pub size: u64,
    pub crc32c: u32,
}

/// The wire calls of one object's upload.
#[async_trait]
pub(crate) trait MultipartTarget: Send + Sync + 'static {
    /// The object's URI, for messages.
    fn uri(&self) -> String;
    /// The whole object in one request (it is below the multipart threshold).
    async fn put_whole(&self, data: Bytes, crc32c: u32) -> Result<ObjectMeta>;
    /// The same, from the buffers the writer was handed, in order. Targets
    /// that can send several buffers as one body override this to skip
    /// joining them (a copy of the whole object).
    async fn put_chunks(&self, chunks: Vec<Bytes>, crc32c: u32) -> Result<ObjectMeta> {
        let mut joined = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
        for c in &chunks {
            joined.extend_from_slice(c);
        }
        self.put_whole(joined.freeze(), crc32c).await
    }
    /// Begin a multipart upload; returns its id.
    async fn start(&self) -> Result<String>;
    async fn put_part(
        &self,
        upload_id: &str,
        number: u32,
        data: Bytes,
        crc32c: u32,
    ) -> Result<UploadedPart>;
    /// Make the object visible from `parts` (sorted); `crc32c` and `size`
    /// describe the whole object.
    async fn complete(
        &self,
        upload_id: &str,
        parts: &[UploadedPart],
        size: u64,
        crc32c: u32,
    ) -> Result<ObjectMeta>;
    /// Discard the upload and every part sent so far.
    async fn abort(&self, upload_id: &str) -> Result<()>;
}

/// Sizes a backend imposes on top of the caller's [`PutOptions`].
#[derive(Debug, Clone)]
pub(crate) struct UploadLimits {
    pub part_size: usize,
    pub concurrency: usize,
    pub multipart_threshold: usize,
    /// Parts one upload may have (S3: 10,000; Azure: 50,000 blocks).
    pub max_parts: u32,
    /// The largest part the service takes (S3: 5 GiB; Azure: 4000 MiB):
    /// growing part sizes stop there.
    pub max_part_size: usize,
}

/// Parts uploaded at the configured size before part sizes start doubling;
/// with `max_parts = 10_000` that covers 10 doublings (8 MiB parts: ~8 TB).
const PARTS_PER_DOUBLING: u32 = 1000;

impl UploadLimits {
    pub fn new(opts: &PutOptions, min_part: usize, max_parts: u32, max_part_size: usize) -> Self {
        UploadLimits {
            part_size: opts.part_size.max(min_part).max(1),
            concurrency: opts.concurrency.max(1),
            multipart_threshold: opts.multipart_threshold.max(1),
            max_parts,
            max_part_size,
        }
    }

    /// Size of part `number`: the configured size for the first
    /// [`PARTS_PER_DOUBLING`] parts, then doubling every as many parts, so
    /// an object of unknown size never runs out of part numbers.
    pub fn part_size_of(&self, number: u32) -> usize {
        let doublings = ((number.saturating_sub(1)) / PARTS_PER_DOUBLING).min(20);
        let grown = self.part_size.saturating_mul(1 << doublings);
        if doublings == 0 {
            grown
        } else {
            grown.min(self.max_part_size.max(self.part_size))
        }
    }
}

/// A writer that has not failed, finished or aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Failed,
    Closed,
}

/// Streaming upload with bounded memory; nothing is visible before `finish`.
pub(crate) struct MultipartWriter {
    target: Arc<dyn MultipartTarget>,
    limits: UploadLimits,
    /// Bytes not yet cut into a part, in order.
    pending: VecDeque<Bytes>,
    pending_len: usize,
    /// The CRC32C the caller gave with each pending buffer (`None`: not
    /// given), kept while the object may still go up in one PUT, whose
    /// checksum is then combined from them instead of read again.
    pending_crcs: Vec<Option<u32>>,
    /// Set once the multipart upload has started.
    upload_id: Option<String>,
    in_flight: JoinSet<Result<UploadedPart>>,
    done: Vec<UploadedPart>,
    next_part: u32,
    state: State,
    /// Where `Drop` sends the abort of an unfinished upload.
    runtime: Option<tokio::runtime::Handle>,
}

impl MultipartWriter {
    pub fn new(target: Arc<dyn MultipartTarget>, limits: UploadLimits) -> Self {
        MultipartWriter {
            target,
            limits,
            pending: VecDeque::new(),
            pending_len: 0,
            pending_crcs: Vec::new(),
            upload_id: None,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            next_part: 1,
            state: State::Open,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn check_open(&self) -> Result<()> {
        match self.state {
            State::Open => Ok(()),
            State::Failed => Err(Error::invalid(format!(
                "{}: the upload failed earlier and was aborted",
                self.target.uri()
            ))),
            State::Closed => Err(Error::invalid(format!(
                "{}: writer already finished or aborted",
                self.target.uri()
            ))),
        }
    }

    /// Take exactly `n` pending bytes (or all of them when fewer), without
    /// copying when one buffer holds them.
    fn take_pending(&mut self, n: usize) -> Bytes {
        let n = n.min(self.pending_len);
        self.pending_len -= n;
        if let Some(front) = self.pending.front_mut() {
            if front.len() >= n {
                let out = front.split_to(n);
                if front.is_empty() {
                    self.pending.pop_front();
                }
                return out;
            }
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(mut front) = self.pending.pop_front() else {
                break;
            };
            let want = n - out.len();
            if front.len() > want {
                out.extend_from_slice(&front.split_to(want));
                self.pending.push_front(front);
            } else {
                out.extend_from_slice(&front);
            }
        }
        out.freeze()
    }

    /// Start the multipart upload once enough bytes have arrived, then send
    /// every full part.
    async fn flush_full_parts(&mut self) -> Result<()> {
        if self.upload_id.is_none() {
            if self.pending_len < self.limits.multipart_threshold {
                return Ok(());
            }
            self.upload_id = Some(self.target.start().await?);
            // Parts are cut anywhere: each computes its own checksum.
            self.pending_crcs = Vec::new();
        }
        while self.pending_len >= self.limits.part_size_of(self.next_part) {
            let part = self.take_pending(self.limits.part_size_of(self.next_part));
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Upload `data` as the next part once a slot is free.
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        let number = self.next_part;
        if number > self.limits.max_parts {
            return Err(Error::invalid(format!(
                "{}: the object needs more than {} parts; use a larger part size",
                self.target.uri(),
                self.limits.max_parts
            )));
        }
        while self.in_flight.len() >= self.limits.concurrency {
            self.reap_one().await?;
        }
        let Some(upload_id) = self.upload_id.clone() else {
            return Err(Error::invalid("part sent before the upload started"));
        };
        let target = self.target.clone();
        self.next_part += 1;
        self.in_flight.spawn(async move {
            let crc = crc32c(&data);
            target
                .put_part(&upload_id, number, data, crc)
                .await
                .map_err(|e| part_error(e, number))
        });
        Ok(())
    }

    /// Wait for one in-flight part.
    async fn reap_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(Ok(part))) => {
                self.done.push(part);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(Error::backend(
                self.target.uri(),
                format!("part upload task failed: {join}"),
                false,
            )),
            None => Ok(()),
        }
    }

    /// After a failure: let the parts in flight end, abort the upload,
    /// return `err` (with the abort's failure appended when that failed too).
    async fn fail(&mut self, err: Error) -> Error {
        self.state = State::Failed;
        self.pending.clear();
        self.pending_len = 0;
        settle(&mut self.in_flight).await;
        if let Some(id) = self.upload_id.take() {
            if let Err(abort_err) = self.target.abort(&id).await {
                return append_reason(
                    err,
                    &format!("; aborting the upload also failed: {abort_err}"),
                );
            }
        }
        err
    }

    async fn push(&mut self, buf: Bytes, crc32c: Option<u32>) -> Result<()> {
        self.check_open()?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.upload_id.is_none() {
            self.pending_crcs.push(crc32c);
        }
        self.pending_len += buf.len();
        self.pending.push_back(buf);
        match self.flush_full_parts().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn finish_inner(&mut self) -> Result<ObjectMeta> {
        if self.upload_id.is_none() {
            let chunks: Vec<Bytes> = std::mem::take(&mut self.pending).into();
            self.pending_len = 0;
            let known = std::mem::take(&mut self.pending_crcs);
            let crc = chunks.iter().enumerate().fold(0u32, |crc, (i, c)| {
                match known.get(i).copied().flatten() {
                    Some(k) => crc32c_combine(crc, k, c.len() as u64),
                    None => crc32c_append(crc, c),
                }
            });
            return self.target.put_chunks(chunks, crc).await;
        }
        self.flush_full_parts().await?;
        if self.pending_len > 0 || self.next_part == 1 {
            let last = self.take_pending(self.pending_len);
            self.send_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        self.done.sort_by_key(|p| p.number);
        let mut size = 0u64;
        let mut crc = 0u32;
        for p in &self.done {
            crc = crc32c_combine(crc, p.crc32c, p.size);
            size += p.size;
        }
        let id = self.upload_id.clone().unwrap_or_default();
        let meta = self.target.complete(&id, &self.done, size, crc).await?;
        self.upload_id = None;
        Ok(meta)
    }
}

/// Wait for every part in flight to end, whatever its outcome. Parts are
/// not cancelled: a request cancelled after its body was sent may still
/// land on the server after the abort and leave an orphaned part (S3 warns
/// of exactly this), while waiting is bounded by `concurrency` parts and
/// their retries.
async fn settle(in_flight: &mut JoinSet<Result<UploadedPart>>) {
    while in_flight.join_next().await.is_some() {}
}

/// Name the part in a part's error.
fn part_error(err: Error, number: u32) -> Error {
    let prefix = format!("part {number}: ");
    match err {
        Error::NotFound { uri } => Error::NotFound {
            uri: format!("{uri} ({prefix}upload no longer exists)"),
        },
        Error::InvalidInput(m) => Error::InvalidInput(format!("{prefix}{m}")),
        other => other.map_reason(|reason| format!("{prefix}{reason}")),
    }
}

fn append_reason(err: Error, extra: &str) -> Error {
    err.map_reason(|reason| format!("{reason}{extra}"))
}

#[async_trait]
impl ObjectWriter for MultipartWriter {
    async fn write(&mut self, buf: Bytes) -> Result<()> {
        self.push(buf, None).await
    }

    async fn write_with_crc(&mut self, buf: Bytes, crc32c: u32) -> Result<()> {
        self.push(buf, Some(crc32c)).await
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta> {
        self.check_open()?;
        match self.finish_inner().await {
            Ok(meta) => {
                self.state = State::Closed;
                Ok(meta)
            }
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.state = State::Closed;
        self.pending.clear();
        self.pending_len = 0;
        settle(&mut self.in_flight).await;
        match self.upload_id.take() {
            Some(id) => self.target.abort(&id).await,
            None => Ok(()),
        }
    }
}

impl Drop for MultipartWriter {
    fn drop(&mut self) {
        // Dropped mid-upload (an error path, a cancelled task, a Python
        // object collected without close): the parts must not linger as an
        // orphaned upload. A task on the runtime the writer was created on
        // lets the parts in flight end, then aborts. If the process exits
        // before it runs, the upload stays behind until the bucket's
        // lifecycle rule (AbortIncompleteMultipartUpload) removes it.
        if let Some(id) = self.upload_id.take() {
            let mut in_flight = std::mem::take(&mut self.in_flight);
            match &self.runtime {
                Some(rt) => {
                    let target = self.target.clone();
                    rt.spawn(async move {
                        settle(&mut in_flight).await;
                        let _ = target.abort(&id).await;
                    });
                }
                None => in_flight.abort_all(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A target that records calls and can fail one part.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        parts: Mutex<Vec<(u32, Bytes)>>,
        whole: Mutex<Option<Bytes>>,
        whole_crc: Mutex<Option<u32>>,
        fail_part: Option<u32>,
        in_flight: std::sync::atomic::AtomicUsize,
        max_in_flight: std::sync::atomic::AtomicUsize,
    }

    impl Recorder {
        fn log(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
    }

    #[async_trait]
    impl MultipartTarget for Recorder {
        fn uri(&self) -> String {
            "test://bucket/key".into()
        }
        async fn put_whole(&self, data: Bytes, crc: u32) -> Result<ObjectMeta> {
            self.log(format!("put {}", data.len()));
            *self.whole.lock().unwrap() = Some(data.clone());
            *self.whole_crc.lock().unwrap() = Some(crc);
            Ok(ObjectMeta::new("key", data.len() as u64))
        }
        async fn start(&self) -> Result<String> {
            self.log("start".into());
            Ok("u1".into())
        }
        async fn put_part(&self, _id: &str, n: u32, data: Bytes, crc: u32) -> Result<UploadedPart> {
            use std::sync::atomic::Ordering::SeqCst;
            assert_eq!(crc, crc32c(&data));
            if self.fail_part == Some(n) {
                return Err(Error::backend("test://bucket/key", "boom", true));
            }
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.max_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, SeqCst);
            self.parts.lock().unwrap().push((n, data.clone()));
            Ok(UploadedPart {
                number: n,
                tag: format!("etag-{n}"),
                size: data.len() as u64,
                crc32c: crc,
            })
        }
        async fn complete(
            &self,
            _id: &str,
            parts: &[UploadedPart],
            size: u64,
            crc: u32,
        ) -> Result<ObjectMeta> {
            let numbers: Vec<u32> = parts.iter().map(|p| p.number).collect();
            assert_eq!(numbers, (1..=parts.len() as u32).collect::<Vec<_>>());
            self.log(format!("complete {} {size}", parts.len()));
            let mut meta = ObjectMeta::new("key", size);
            meta.crc32c = Some(crc);
            Ok(meta)
        }
        async fn abort(&self, id: &str) -> Result<()> {
            self.log(format!("abort {id}"));
            Ok(())
        }
    }

    fn limits(part: usize, threshold: usize) -> UploadLimits {
        UploadLimits {
            part_size: part,
            concurrency: 3,
            multipart_threshold: threshold,
            max_parts: 10_000,
            max_part_size: 5 << 30,
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_objects_are_one_put() {
        let rec = Arc::new(Recorder::default());
        let mut w = Box::new(MultipartWriter::new(rec.clone(), limits(100, 1000)));
        for piece in data(999).chunks(77) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        w.finish().await.unwrap();
        assert_eq!(*rec.calls.lock().unwrap(), ["put 999"]);
        assert_eq!(rec.whole.lock().unwrap().as_deref(), Some(&data(999)[..]));
        assert_eq!(*rec.whole_crc.lock().unwrap(), Some(crc32c(&data(999))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_put_combines_the_crcs_it_was_given() {
        let rec = Arc::new(Recorder::default());
        let mut w = Box::new(MultipartWriter::new(rec.clone(), limits(100, 1000)));
        let src = data(300);
        let (a, b) = src.split_at(120);
        // A CRC the caller vouches for is used as given, not recomputed
        // (here deliberately not the bytes' own, to show it).
        let given = crc32c(a) ^ 1;
        w.write_with_crc(Bytes::copy_from_slice(a), given)
            .await
            .unwrap();
        w.write(Bytes::copy_from_slice(b)).await.unwrap();
        w.finish().await.unwrap();
        let expected = crc32c_combine(given, crc32c(b), b.len() as u64);
        assert_eq!(*rec.whole_crc.lock().unwrap(), Some(expected));
        // Once parts are cut, every part is checksummed from its bytes.
        let rec = Arc::new(Recorder::default());
        let mut w = Box::new(MultipartWriter::new(rec.clone(), limits(100, 150)));
        for piece in src.chunks(70) {
            w.write_with_crc(Bytes::copy_from_slice(piece), 0)
                .await
                .unwrap();
        }
        w.finish().await.unwrap();
        assert_eq!(rec.parts.lock().unwrap().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_objects_are_parts_in_order_with_crc() {
        let rec = Arc::new(Recorder::default());
        let src = data(1234);
        let mut w = Box::new(MultipartWriter::new(rec.clone(), limits(100, 250)));
        for piece in src.chunks(33) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let meta = w.finish().await.unwrap();
        assert_eq!(meta.size, 1234);
        assert_eq!(meta.crc32c, Some(crc32c(&src)));
        let mut parts = rec.parts.lock().unwrap().clone();
        parts.sort_by_key(|p| p.0);
        assert_eq!(parts.len(), 13);
        assert!(parts[..12].iter().all(|p| p.1.len() == 100));
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.1.to_vec()).collect();
        assert_eq!(joined, src);
        // Parts overlap, never more than `concurrency` at once.
        let max = rec.max_in_flight.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(max, 3, "parts in flight at once");
        let calls = rec.calls.lock().unwrap();
        assert_eq!(calls.first().map(String::as_str), Some("start"));
        assert_eq!(calls.last().map(String::as_str), Some("complete 13 1234"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_part_aborts_and_names_the_part() {
        let rec = Arc::new(Recorder {
            fail_part: Some(2),
            ..Default::default()
        });
        let mut w = Box::new(MultipartWriter::new(rec.clone(), limits(100, 100)));
        let mut err = None;
        for piece in data(2000).chunks(100) {
            if let Err(e) = w.write(Bytes::copy_from_slice(piece)).await {
                err = Some(e);
                break;
            }
        }
        let err = match err {
            Some(e) => e,
            None => w.finish().await.unwrap_err(),
        };
        assert!(err.to_string().contains("part 2"), "{err}");
        assert!(rec.calls.lock().unwrap().contains(&"abort u1".to_string()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_mid_upload_aborts() {
        let rec = Arc::new(Recorder::default());
        let mut w = Box::new(MultipartWriter::new(rec.clone(), limits(100, 100)));
        w.write(Bytes::from(data(450))).await.unwrap();
        drop(w);
        for _ in 0..100 {
            if rec.calls.lock().unwrap().contains(&"abort u1".to_string()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no abort after drop: {:?}", rec.calls.lock().unwrap());
    }

    #[test]
    fn part_sizes_grow_past_the_part_limit() {
        let l = limits(8 << 20, 8 << 20);
        assert_eq!(l.part_size_of(1), 8 << 20);
        assert_eq!(l.part_size_of(1000), 8 << 20);
        assert_eq!(l.part_size_of(1001), 16 << 20);
        let total: u64 = (1..=10_000).map(|n| l.part_size_of(n) as u64).sum();
        assert!(
            total > 5 << 40,
            "10,000 parts cover a 5 TiB object: {total}"
        );
    }
}
