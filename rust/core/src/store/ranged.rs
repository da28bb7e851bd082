//! The parallel ranged-read driver shared by the cloud backends (S3,
//! Azure): one read is cut into pieces of [`RangedGet::piece_size`] bytes
//! fetched [`RangedGet::concurrency`] at a time, each body copied straight
//! into its slice of the caller's memory.
//!
//! The first piece is opened alone: its response says how large the object
//! is and which version (ETag) answered. Every later piece, and every
//! resumed body, is pinned to that version (`If-Match`), so an object
//! overwritten during the read is an error, never a mix of two versions.
//!
//! A backend supplies the wire calls ([`RangedGet`]); this module owns the
//! clipping rules of `get_range`, the one error for bytes past the end, the
//! piece layout and the concurrency.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::check_range;
use crate::error::{Error, Result};

/// A ranged GET's response: the body still to read and what it covers.
pub(crate) struct Opened<B> {
    pub body: B,
    /// Size of the whole object.
    pub total: u64,
    /// The version that answered (ETag), when the server names one.
    pub version: Option<String>,
}

/// The wire calls of one cloud backend's ranged reads.
#[async_trait]
pub(crate) trait RangedGet: Send + Sync {
    type Body: Send;
    /// The URI of `key`, for messages.
    fn uri(&self, key: &str) -> String;
    /// Bytes per ranged GET.
    fn piece_size(&self) -> u64;
    /// Ranged GETs in flight for one read.
    fn concurrency(&self) -> usize;
    /// The object's size (for empty reads and reads past the end).
    async fn size(&self, key: &str) -> Result<u64>;
    /// Send a GET of the non-empty `range`, pinned to `version` when
    /// given; `Ok(None)` when the range starts at or past the end.
    async fn open(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<Option<Opened<Self::Body>>>;
    /// Fill `dst` (in order) with the object's bytes from `start`: from
    /// `first`'s body when given, else from GETs of its own, all pinned to
    /// `version`; a body that breaks off is retried or resumed.
    async fn fill(
        &self,
        key: &str,
        start: u64,
        dst: &mut [&mut [u8]],
        first: Option<Opened<Self::Body>>,
        version: Option<&str>,
    ) -> Result<()>;
}

/// The error for a read that wants bytes past the end of the object: the
/// same on every backend (`InvalidInput`), for `read_into` and
/// `get_range_into` alike.
pub(crate) fn past_end(uri: &str, offset: u64, len: u64, size: u64) -> Error {
    Error::invalid(format!(
        "{uri}: wanted bytes {offset}..{} but the object ends at {size}",
        offset + len
    ))
}

/// A later response must come from the version the first one saw. Servers
/// that honour `If-Match` refuse a changed object themselves (HTTP 412);
/// this catches the ones that ignore the header.
pub(crate) fn check_version(uri: &str, pinned: Option<&str>, got: Option<&str>) -> Result<()> {
    match (pinned, got) {
        (Some(want), Some(got)) if want != got => Err(Error::backend(
            uri,
            format!("the object changed while it was being read (version {want} became {got})"),
            false,
        )),
        _ => Ok(()),
    }
}

/// `ObjectStore::get_range`: bytes `range` of `key`, clipped to its end.
pub(crate) async fn get_range<S: RangedGet>(
    src: &S,
    key: &str,
    range: Range<u64>,
) -> Result<Bytes> {
    let uri = src.uri(key);
    if range.start > range.end {
        check_range(&uri, &range, u64::MAX)?;
    }
    if range.start == range.end {
        // Nothing to fetch, but the object must exist and the start must
        // lie inside it, as on every backend.
        check_range(&uri, &range, src.size(key).await?)?;
        return Ok(Bytes::new());
    }
    let first_end = range.end.min(range.start.saturating_add(src.piece_size()));
    let Some(first) = src.open(key, range.start..first_end, None).await? else {
        check_range(&uri, &range, src.size(key).await?)?;
        return Ok(Bytes::new());
    };
    let end = range.end.min(first.total.max(range.start));
    let len = usize::try_from(end - range.start).map_err(|_| {
        Error::invalid(format!(
            "{uri}: a {}-byte read does not fit in memory",
            end - range.start
        ))
    })?;
    let mut buf = vec![0u8; len];
    if len > 0 {
        fill_pieces(src, key, range.start, &mut [buf.as_mut_slice()], first).await?;
    }
    Ok(Bytes::from(buf))
}

/// `ObjectStore::read_into` / `get_range_into`: fill `bufs` with exactly
/// the bytes of `key` from `offset` on.
pub(crate) async fn read_exact<S: RangedGet>(
    src: &S,
    key: &str,
    offset: u64,
    bufs: &mut [&mut [u8]],
) -> Result<()> {
    let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
    if total == 0 {
        return Ok(());
    }
    let first_len = total.min(src.piece_size());
    let first = match src.open(key, offset..offset + first_len, None).await? {
        Some(first) => first,
        None => {
            let size = src.size(key).await?;
            return Err(past_end(&src.uri(key), offset, total, size));
        }
    };
    if first.total < offset + total {
        return Err(past_end(&src.uri(key), offset, total, first.total));
    }
    fill_pieces(src, key, offset, bufs, first).await
}

/// Fill `bufs` from `offset` in pieces, the first from `first`, every
/// piece pinned to the version `first` saw.
async fn fill_pieces<S: RangedGet>(
    src: &S,
    key: &str,
    offset: u64,
    bufs: &mut [&mut [u8]],
    first: Opened<S::Body>,
) -> Result<()> {
    let version = first.version.clone();
    let mut first = Some(first);
    let mut pieces = split_pieces(bufs, src.piece_size() as usize);
    let mut at = offset;
    // Futures built up front (not in a stream closure): a closure that
    // borrows the buffers trips the Send check of async trait methods.
    let reads = pieces
        .iter_mut()
        .map(|piece| {
            let start = at;
            at += piece.iter().map(|b| b.len() as u64).sum::<u64>();
            let (opened, version) = (first.take(), version.as_deref());
            src.fill(key, start, piece, opened, version)
        })
        .collect::<Vec<_>>();
    stream::iter(reads)
        .buffer_unordered(src.concurrency().max(1))
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// `bufs` cut into consecutive runs of `size` bytes (the last one
/// shorter), each run a list of slices of them; empty buffers are dropped.
pub(crate) fn split_pieces<'a>(bufs: &'a mut [&mut [u8]], size: usize) -> Vec<Vec<&'a mut [u8]>> {
    let mut pieces: Vec<Vec<&'a mut [u8]>> = vec![Vec::new()];
    let mut room = size.max(1);
    for buf in bufs.iter_mut() {
        let mut rest: &'a mut [u8] = buf;
        while !rest.is_empty() {
            if room == 0 {
                pieces.push(Vec::new());
                room = size.max(1);
            }
            let take = room.min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
            room -= head.len();
            if let Some(last) = pieces.last_mut() {
                last.push(head);
            }
            rest = tail;
        }
    }
    pieces
}

/// Where the next body byte goes in a list of buffers filled in order.
pub(crate) struct Cursor {
    index: usize,
    within: usize,
    /// Bytes placed so far.
    pub got: usize,
}

impl Cursor {
    /// A cursor at byte `got` of `dst`.
    pub fn at(dst: &[&mut [u8]], got: usize) -> Cursor {
        let (mut index, mut within) = (0usize, got);
        while index < dst.len() && within >= dst[index].len() {
            within -= dst[index].len();
            index += 1;
        }
        Cursor { index, within, got }
    }

    /// Copy `chunk` into `dst` from the cursor on; `false` when it does
    /// not fit (the body is longer than asked for).
    pub fn put(&mut self, dst: &mut [&mut [u8]], mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            while self.index < dst.len() && self.within == dst[self.index].len() {
                self.index += 1;
                self.within = 0;
            }
            let Some(buf) = dst.get_mut(self.index) else {
                return false;
            };
            let n = (buf.len() - self.within).min(chunk.len());
            buf[self.within..self.within + n].copy_from_slice(&chunk[..n]);
            self.within += n;
            self.got += n;
            chunk = &chunk[n..];
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn pieces_cut_buffers_at_the_size() {
        let mut owned = [vec![0u8; 5], vec![], vec![0u8; 7], vec![0u8; 1]];
        let mut bufs: Vec<&mut [u8]> = owned.iter_mut().map(|v| v.as_mut_slice()).collect();
        let lens: Vec<Vec<usize>> = split_pieces(&mut bufs, 4)
            .iter()
            .map(|p| p.iter().map(|b| b.len()).collect())
            .collect();
        assert_eq!(lens, vec![vec![4], vec![1, 3], vec![4], vec![1]]);
    }

    #[test]
    fn a_cursor_scatters_chunks_and_refuses_extra_bytes() {
        let mut owned = [vec![0u8; 2], vec![], vec![0u8; 3]];
        let mut dst: Vec<&mut [u8]> = owned.iter_mut().map(|v| v.as_mut_slice()).collect();
        let mut c = Cursor::at(&dst, 1);
        assert!(c.put(&mut dst, b"abcd"));
        assert_eq!(c.got, 5);
        assert!(!c.put(&mut dst, b"e"));
        assert_eq!(owned.concat(), b"\0abcd");
    }

    /// An object in memory whose content is replaced (a new version) right
    /// after the first GET, as a concurrent writer would.
    struct Overwritten {
        versions: Mutex<Vec<(String, Vec<u8>)>>,
        gets: AtomicUsize,
    }

    #[async_trait]
    impl RangedGet for Overwritten {
        type Body = Vec<u8>;
        fn uri(&self, key: &str) -> String {
            format!("mem:///{key}")
        }
        fn piece_size(&self) -> u64 {
            4
        }
        fn concurrency(&self) -> usize {
            1
        }
        async fn size(&self, _key: &str) -> Result<u64> {
            Ok(self.versions.lock().unwrap()[0].1.len() as u64)
        }
        async fn open(
            &self,
            key: &str,
            range: Range<u64>,
            version: Option<&str>,
        ) -> Result<Option<Opened<Vec<u8>>>> {
            let mut versions = self.versions.lock().unwrap();
            if self.gets.fetch_add(1, Ordering::SeqCst) == 1 && versions.len() > 1 {
                versions.remove(0);
            }
            let (etag, data) = versions[0].clone();
            if version.is_some_and(|v| v != etag) {
                return Err(Error::backend(
                    self.uri(key),
                    "412 precondition failed",
                    false,
                ));
            }
            let end = (range.end as usize).min(data.len());
            Ok(Some(Opened {
                body: data[range.start as usize..end].to_vec(),
                total: data.len() as u64,
                version: Some(etag),
            }))
        }
        async fn fill(
            &self,
            key: &str,
            start: u64,
            dst: &mut [&mut [u8]],
            first: Option<Opened<Vec<u8>>>,
            version: Option<&str>,
        ) -> Result<()> {
            let len: usize = dst.iter().map(|b| b.len()).sum();
            let opened = match first {
                Some(o) => o,
                None => self
                    .open(key, start..start + len as u64, version)
                    .await?
                    .expect("inside the object"),
            };
            let mut cursor = Cursor::at(dst, 0);
            assert!(cursor.put(dst, &opened.body));
            Ok(())
        }
    }

    fn overwritten() -> Overwritten {
        Overwritten {
            versions: Mutex::new(vec![
                ("v1".into(), b"aaaaaaaaaaaa".to_vec()),
                ("v2".into(), b"bbbbbbbbbbbb".to_vec()),
            ]),
            gets: AtomicUsize::new(0),
        }
    }

    #[tokio::test]
    async fn an_object_overwritten_between_pieces_is_an_error() {
        let src = overwritten();
        let err = get_range(&src, "k", 0..12).await.unwrap_err();
        assert!(err.to_string().contains("412"), "{err}");
        let src = overwritten();
        let mut dst = vec![0u8; 12];
        let err = read_exact(&src, "k", 0, &mut [dst.as_mut_slice()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("412"), "{err}");
    }

    #[tokio::test]
    async fn reads_past_the_end_are_invalid_input() {
        let src = overwritten();
        let mut dst = vec![0u8; 8];
        let err = read_exact(&src, "k", 8, &mut [dst.as_mut_slice()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(err
            .to_string()
            .contains("wanted bytes 8..16 but the object ends at 12"));
        // get_range clips instead.
        let src = overwritten();
        assert_eq!(&get_range(&src, "k", 10..100).await.unwrap()[..], b"aa");
    }
}
