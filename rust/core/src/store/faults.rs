//! A wrapper that injects failures into any store, so every reliability
//! test runs against every backend: fail the Nth call of an operation,
//! truncate or corrupt what reads return, or slow calls down.
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
    counts: [AtomicUsize; 8],
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Vec<Fault>) -> Arc<Self> {
        Arc::new(FaultStore {
            inner,
            state: Arc::new(FaultState {
                faults: Mutex::new(faults),
                counts: Default::default(),
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

    async fn enter(&self, op: Op, key: &str) -> Result<()> {
        self.state.enter(op, &self.inner.uri(key)).await
    }

    fn damage(&self, data: Bytes) -> Bytes {
        self.state.damage(data)
    }
}

impl FaultState {
    fn faults(&self) -> Vec<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn enter(&self, op: Op, uri: &str) -> Result<()> {
        let n = self.counts[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
        for fault in self.faults() {
            match fault {
                Fault::Delay(d) => tokio::time::sleep(d).await,
                Fault::FailNth { op: o, nth } if o == op && nth == n => {
                    return Err(Error::backend(
                        uri,
                        format!("injected failure on {op:?} call {n}"),
                        true,
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `enter` for blocking callers (a delay sleeps the thread).
    fn enter_blocking(&self, op: Op, uri: &str) -> Result<()> {
        let n = self.counts[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
        for fault in self.faults() {
            match fault {
                Fault::Delay(d) => std::thread::sleep(d),
                Fault::FailNth { op: o, nth } if o == op && nth == n => {
                    return Err(Error::backend(
                        uri,
                        format!("injected failure on {op:?} call {n}"),
                        true,
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The faults for a read into caller memory of `bufs` from `offset`,
    /// after the inner store filled them: a truncation fails the read as a
    /// short object does on every backend, a flipped byte is flipped in
    /// place.
    fn damage_into(&self, uri: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        for fault in self.faults() {
            match fault {
                Fault::TruncateReads { keep } if total > keep => {
                    return Err(super::ranged::past_end(
                        uri,
                        offset,
                        total as u64,
                        offset + keep as u64,
                    ));
                }
                Fault::FlipByte { offset: at } if at < total => {
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

    fn damage(&self, data: Bytes) -> Bytes {
        let mut data = data;
        for fault in self.faults() {
            match fault {
                Fault::TruncateReads { keep } if data.len() > keep => data = data.slice(..keep),
                Fault::FlipByte { offset } if offset < data.len() => {
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
        self.enter(Op::Put, key).await?;
        self.inner.put(key, data, opts).await
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        let inner = self.inner.writer(key, opts).await?;
        Ok(Box::new(FaultWriter {
            inner,
            state: self.state.clone(),
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
        self.enter(Op::Get, key).await?;
        Ok(self.damage(self.inner.get_range(key, range).await?))
    }

    async fn get_range_view(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.enter(Op::Get, key).await?;
        Ok(self.damage(self.inner.get_range_view(key, range).await?))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.enter(Op::Get, key).await?;
        Ok(self.damage(self.inner.get(key).await?))
    }

    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        self.enter(Op::Get, key).await?;
        self.inner.read_into(key, offset, bufs).await?;
        self.state.damage_into(&self.inner.uri(key), offset, bufs)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.enter(Op::Head, key).await?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.enter(Op::List, prefix).await?;
        self.inner.list(prefix).await
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        self.enter(Op::List, prefix).await?;
        self.inner.list_dir(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.enter(Op::Delete, key).await?;
        self.inner.delete(key).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.enter(Op::PutIfAbsent, key).await?;
        self.inner.put_if_absent(key, data).await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        self.enter(Op::Get, from).await?;
        self.inner.copy(from, to).await
    }

    async fn record_crc32c(&self, key: &str, crc: u32) -> Result<bool> {
        self.enter(Op::Put, key).await?;
        self.inner.record_crc32c(key, crc).await
    }
}

struct FaultWriter {
    inner: Box<dyn ObjectWriter>,
    state: Arc<FaultState>,
    uri: String,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectWriter for FaultWriter {
    async fn write(&mut self, buf: Bytes) -> Result<()> {
        self.state.enter(Op::Write, &self.uri).await?;
        self.inner.write(buf).await
    }

    async fn write_with_crc(&mut self, buf: Bytes, crc32c: u32) -> Result<()> {
        self.state.enter(Op::Write, &self.uri).await?;
        self.inner.write_with_crc(buf, crc32c).await
    }

    async fn finish(self: Box<Self>) -> Result<ObjectMeta> {
        if let Err(e) = self.state.enter(Op::Finish, &self.uri).await {
            // An injected failure at finish behaves like a failed upload.
            self.inner.abort().await?;
            return Err(e);
        }
        self.inner.finish().await
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
        self.state.enter_blocking(Op::Write, &self.uri)?;
        self.inner_blocking()?.write_all_vectored(bufs)
    }

    fn reserve(&mut self, len: u64) -> Result<()> {
        self.inner_blocking()?.reserve(len)
    }
}

impl FaultWriter {
    fn inner_blocking(&mut self) -> Result<&mut dyn BlockingWrite> {
        let uri = self.uri.clone();
        self.inner
            .blocking()
            .ok_or_else(|| Error::invalid(format!("{uri}: the writer has no blocking form")))
    }
}
