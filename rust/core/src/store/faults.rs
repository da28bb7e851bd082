//! A wrapper that injects failures into any store, so every reliability
//! test runs against every backend: fail the Nth call of an operation
//! (before it reaches the store, or after it succeeded there: a lost
//! reply), truncate or corrupt what reads return, or slow calls down.
//! Faults can be confined to keys containing a substring (a step's data
//! objects, say), and the wrapper counts the faults it injected.
//!
//! It forwards every method of the store and writer contracts, fast paths
//! included (`#[deny(clippy::missing_trait_methods)]` keeps it so): a
//! wrapper that let a default stand in for the inner store's override
//! would test a path users never take.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{BlockingWrite, DirListing, ObjectMeta, ObjectStore, ObjectWriter, PutOptions};
use crate::error::{Error, Result};

/// Operations a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Write,
    Finish,
    Get,
    Head,
    List,
    Delete,
    PutIfAbsent,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// The `nth` call (1-based, counted per operation) fails with a retryable backend error.
    FailNth { op: Op, nth: usize },
    /// The `nth` call reaches the store and succeeds there, then its caller
    /// gets a retryable backend error: a reply lost on the way back, so the
    /// caller cannot tell whether the operation happened.
    LoseReply { op: Op, nth: usize },
    /// Reads return at most `keep` bytes.
    TruncateReads { keep: usize },
    /// Reads return data with the byte at `offset` (relative to the read) inverted.
    FlipByte { offset: usize },
    /// Every call sleeps first.
    Delay(Duration),
}

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<FaultState>,
}

/// Shared with the writers the store hands out, so their calls count too.
#[derive(Debug, Default)]
struct FaultState {
    faults: Mutex<Vec<Fault>>,
    /// Faults apply only to keys containing this; `None`: every key.
    scope: Mutex<Option<String>>,
    counts: [AtomicUsize; 8],
    /// Faults injected since the store was made (never reset), so a test
    /// can report how many it tried.
    injected: AtomicUsize,
}

/// What `enter` decided for one call.
#[must_use]
enum Entry {
    /// Call the store and hand back what it says.
    Pass,
    /// Call the store, then fail with this error whatever it said.
    LoseReply(Error),
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Vec<Fault>) -> Arc<Self> {
        Arc::new(FaultStore {
            inner,
            state: Arc::new(FaultState {
                faults: Mutex::new(faults),
                ..Default::default()
            }),
        })
    }

    /// Replace the active faults and restart the call counts, so `FailNth`
    /// counts from now.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.state.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
        for c in &self.state.counts {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// Confine the faults to keys containing `part` (`None`: every key).
    /// Calls on other keys pass untouched and are not counted for `FailNth`.
    pub fn set_scope(&self, part: Option<&str>) {
        *self.state.scope.lock().unwrap_or_else(|p| p.into_inner()) = part.map(str::to_string);
    }

    /// Calls of `op` counted since the last `set_faults` (in scope only).
    pub fn calls(&self, op: Op) -> usize {
        self.state.counts[op as usize].load(Ordering::SeqCst)
    }

    /// Faults injected so far: failed or lost calls, delays slept, reads
    /// truncated or with a byte flipped.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    async fn enter(&self, op: Op, key: &str) -> Result<Entry> {
        self.state.enter(op, key, &self.inner.uri(key)).await
    }

    fn damage(&self, key: &str, data: Bytes) -> Bytes {
        self.state.damage(key, data)
    }

    /// The result of an operation that reached the inner store.
    fn settle<T>(entry: Entry, done: Result<T>) -> Result<T> {
        match entry {
            Entry::Pass => done,
            Entry::LoseReply(e) => done.and(Err(e)),
        }
    }
}

impl FaultState {
    fn faults(&self) -> Vec<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn in_scope(&self, key: &str) -> bool {
        match &*self.scope.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(part) => key.contains(part.as_str()),
            None => true,
        }
    }

    fn injected(&self) {
        self.injected.fetch_add(1, Ordering::SeqCst);
    }

    /// Count the call and decide its fate: `Err` fails it before it reaches
    /// the store. Delays are returned for the caller to sleep (async or not).
    fn decide(&self, op: Op, key: &str, uri: &str) -> (Vec<Duration>, Result<Entry>) {
        let mut delays = Vec::new();
        if !self.in_scope(key) {
            return (delays, Ok(Entry::Pass));
        }
        let n = self.counts[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
        let injected =
            |what: &str| Error::backend(uri, format!("injected {what} on {op:?} call {n}"), true);
        for fault in self.faults() {
            match fault {
                Fault::Delay(d) => {
                    self.injected();
                    delays.push(d);
                }
                Fault::FailNth { op: o, nth } if o == op && nth == n => {
                    self.injected();
                    return (delays, Err(injected("failure")));
                }
                Fault::LoseReply { op: o, nth } if o == op && nth == n => {
                    self.injected();
                    return (delays, Ok(Entry::LoseReply(injected("lost reply"))));
                }
                _ => {}
            }
        }
        (delays, Ok(Entry::Pass))
    }

    async fn enter(&self, op: Op, key: &str, uri: &str) -> Result<Entry> {
        let (delays, entry) = self.decide(op, key, uri);
        for d in delays {
            tokio::time::sleep(d).await;
        }
        entry
    }

    /// `enter` for blocking callers (a delay sleeps the thread).
    fn enter_blocking(&self, op: Op, key: &str, uri: &str) -> Result<Entry> {
        let (delays, entry) = self.decide(op, key, uri);
        for d in delays {
            std::thread::sleep(d);
        }
        entry
    }

    /// The faults for a read into caller memory of `bufs` from `offset`,
    /// after the inner store filled them: a truncation fails the read as a
    /// short object does on every backend, a flipped byte is flipped in
    /// place.
    fn damage_into(&self, key: &str, uri: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        if !self.in_scope(key) {
            return Ok(());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        for fault in self.faults() {
            match fault {
                Fault::TruncateReads { keep } if total > keep => {
                    self.injected();
                    return Err(super::ranged::past_end(
                        uri,
                        offset,
                        total as u64,
                        offset + keep as u64,
                    ));
                }
                Fault::FlipByte { offset: at } if at < total => {
                    self.injected();
                    let mut skip = at;
                    for buf in bufs.iter_mut() {
                        if skip < buf.len() {
                            buf[skip] ^= 0xff;
                            break;
                        }
                        skip -= buf.len();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn damage(&self, key: &str, data: Bytes) -> Bytes {
        if !self.in_scope(key) {
            return data;
        }
        let mut data = data;
        for fault in self.faults() {
            match fault {
                Fault::TruncateReads { keep } if data.len() > keep => {
                    self.injected();
                    data = data.slice(..keep);
                }
                Fault::FlipByte { offset } if offset < data.len() => {
                    self.injected();
                    let mut m = BytesMut::from(&data[..]);
                    m[offset] ^= 0xff;
                    data = m.freeze();
                }
                _ => {}
            }
        }
        data
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for FaultStore {
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta> {
        let entry = self.enter(Op::Put, key).await?;
        Self::settle(entry, self.inner.put(key, data, opts).await)
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        let inner = self.inner.writer(key, opts).await?;
        Ok(Box::new(FaultWriter {
            inner,
            state: self.state.clone(),
            key: key.to_string(),
            uri: self.inner.uri(key),
        }))
    }

    fn single_put_limit(&self, opts: &PutOptions) -> Option<u64> {
        self.inner.single_put_limit(opts)
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let entry = self.enter(Op::Get, key).await?;
        let data = Self::settle(entry, self.inner.get_range(key, range).await)?;
        Ok(self.damage(key, data))
    }

    async fn get_range_view(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let entry = self.enter(Op::Get, key).await?;
        let data = Self::settle(entry, self.inner.get_range_view(key, range).await)?;
        Ok(self.damage(key, data))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let entry = self.enter(Op::Get, key).await?;
        let data = Self::settle(entry, self.inner.get(key).await)?;
        Ok(self.damage(key, data))
    }

    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let entry = self.enter(Op::Get, key).await?;
        Self::settle(entry, self.inner.read_into(key, offset, bufs).await)?;
        self.state
            .damage_into(key, &self.inner.uri(key), offset, bufs)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let entry = self.enter(Op::Head, key).await?;
        Self::settle(entry, self.inner.head(key).await)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let entry = self.enter(Op::List, prefix).await?;
        Self::settle(entry, self.inner.list(prefix).await)
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let entry = self.enter(Op::List, prefix).await?;
        Self::settle(entry, self.inner.list_dir(prefix).await)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let entry = self.enter(Op::Delete, key).await?;
        Self::settle(entry, self.inner.delete(key).await)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let entry = self.enter(Op::PutIfAbsent, key).await?;
        Self::settle(entry, self.inner.put_if_absent(key, data).await)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        let entry = self.enter(Op::Get, from).await?;
        Self::settle(entry, self.inner.copy(from, to).await)
    }

    async fn record_crc32c(&self, key: &str, crc: u32) -> Result<bool> {
        let entry = self.enter(Op::Put, key).await?;
        Self::settle(entry, self.inner.record_crc32c(key, crc).await)
    }

    async fn copy_recording_crc32c(&self, from: &str, to: &str, crc: u32) -> Result<ObjectMeta> {
        let entry = self.enter(Op::Get, from).await?;
        Self::settle(entry, self.inner.copy_recording_crc32c(from, to, crc).await)
    }
}

struct FaultWriter {
    inner: Box<dyn ObjectWriter>,
    state: Arc<FaultState>,
    key: String,
    uri: String,
}

impl FaultWriter {
    fn inner_blocking(&mut self) -> Result<&mut dyn BlockingWrite> {
        let uri = self.uri.clone();
        self.inner
            .blocking()
            .ok_or_else(|| Error::invalid(format!("{uri}: the writer has no blocking form")))
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectWriter for FaultWriter {
    async fn write(&mut self, buf: Bytes) -> Result<()> {
        let entry = self.state.enter(Op::Write, &self.key, &self.uri).await?;
        FaultStore::settle(entry, self.inner.write(buf).await)
    }

    async fn write_with_crc(&mut self, buf: Bytes, crc32c: u32) -> Result<()> {
        let entry = self.state.enter(Op::Write, &self.key, &self.uri).await?;
        FaultStore::settle(entry, self.inner.write_with_crc(buf, crc32c).await)
    }

    async fn write_slice(&mut self, buf: &[u8]) -> Result<()> {
        let entry = self.state.enter(Op::Write, &self.key, &self.uri).await?;
        FaultStore::settle(entry, self.inner.write_slice(buf).await)
    }

    fn prefers_slices(&self) -> bool {
        self.inner.prefers_slices()
    }

    async fn finish(self: Box<Self>) -> Result<ObjectMeta> {
        match self.state.enter(Op::Finish, &self.key, &self.uri).await {
            Ok(entry) => FaultStore::settle(entry, self.inner.finish().await),
            Err(e) => {
                // An injected failure at finish behaves like a failed upload.
                self.inner.abort().await?;
                Err(e)
            }
        }
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }

    /// Blocking when the inner writer is: its writes are counted and
    /// failed as `Op::Write` like the async ones.
    fn blocking(&mut self) -> Option<&mut dyn BlockingWrite> {
        self.inner.blocking()?;
        Some(self)
    }
}

#[deny(clippy::missing_trait_methods)]
impl BlockingWrite for FaultWriter {
    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> Result<()> {
        let entry = self.state.enter_blocking(Op::Write, &self.key, &self.uri)?;
        FaultStore::settle(entry, self.inner_blocking()?.write_all_vectored(bufs))
    }

    fn reserve(&mut self, len: u64) -> Result<()> {
        self.inner_blocking()?.reserve(len)
    }
}
