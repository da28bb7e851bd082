//! A byte-grouped item read frame by frame. Its stored zstd frames are cut
//! apart by their headers alone (`format::zstd_frames`), and the frames of
//! each fetched window are decoded at once, on as many threads as the
//! read has to spare, each straight into its part of the caller's buffers
//! (planes stored raw are merged from the stored bytes, see
//! `format::raw_planes`). One large tensor then decodes on every core the
//! read is not otherwise using, not on one thread: a restore of a few
//! large compressed tensors was bound by one core per tensor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::Runtime;

use super::reader::{Checked, Target, Windows};
use super::Grouping;
use crate::crc::crc32c;
use crate::error::{Error, Result};
use crate::format::grouped;
use crate::format::zstd_frames::{frame_end, FrameEnd, Spans};
use crate::store::ObjectStore;

/// Frames decoded in one batch at most (the window bounds it first).
const MAX_BATCH: usize = 64;

/// Threads a read may add to its workers' decoding: the cores its workers
/// leave idle. Workers that run out of jobs give theirs back.
pub(super) struct Spare(AtomicUsize);

impl Spare {
    pub(super) fn new(workers: usize) -> Self {
        Spare(AtomicUsize::new(cores().saturating_sub(workers)))
    }

    #[cfg(test)]
    fn exactly(n: usize) -> Self {
        Spare(AtomicUsize::new(n))
    }

    /// Up to `want` threads, taken from what is spare.
    fn take(&self, want: usize) -> usize {
        let mut have = self.0.load(Ordering::Relaxed);
        loop {
            let got = have.min(want);
            if got == 0 {
                return 0;
            }
            match self
                .0
                .compare_exchange(have, have - got, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return got,
                Err(now) => have = now,
            }
        }
    }

    pub(super) fn give(&self, n: usize) {
        self.0.fetch_add(n, Ordering::AcqRel);
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One decoding thread's state, kept by a worker from item to item.
pub(super) struct Lane {
    dctx: zstd::bulk::Decompressor<'static>,
    /// Planes decoded between the stored frame and the merge.
    scratch: Vec<u8>,
    /// Logical bytes of a frame whose part of the buffers is not one slice.
    merged: Vec<u8>,
}

impl Lane {
    fn new(what: &str) -> Result<Self> {
        let dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| Error::backend(what, format!("cannot make a zstd decoder: {e}"), false))?;
        Ok(Lane {
            dctx,
            scratch: Vec::new(),
            merged: Vec::new(),
        })
    }
}

/// How one stored zstd frame run decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One zstd frame of the item's bytes (before or after the grouped run).
    Plain,
    /// A byte-grouped data frame: a zstd frame per plane, and one for the
    /// bytes after the last whole element.
    Grouped,
}

/// One frame of an item, in logical bytes.
#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    /// Offset in the item's logical bytes.
    at: u64,
    len: usize,
}

impl Frame {
    /// zstd frames stored for it.
    fn zstd_frames(&self, width: usize) -> usize {
        match self.kind {
            Kind::Plain => 1,
            Kind::Grouped => width + usize::from(!self.len.is_multiple_of(width)),
        }
    }
}

/// The item's frames, as the pack writer lays them out (see [`Grouping`]).
fn layout(g: &Grouping, size: u64, what: &str) -> Result<Vec<Frame>> {
    let too_big = || Error::invalid(format!("{what}: a frame too large for this machine"));
    let mut frames = Vec::new();
    if g.start > 0 {
        let len = usize::try_from(g.start).map_err(|_| too_big())?;
        frames.push(Frame {
            kind: Kind::Plain,
            at: 0,
            len,
        });
    }
    let end = g.start + g.length;
    let mut at = g.start;
    while at < end {
        let len = (end - at).min(g.frame as u64) as usize;
        frames.push(Frame {
            kind: Kind::Grouped,
            at,
            len,
        });
        at += len as u64;
    }
    if size > end {
        let len = usize::try_from(size - end).map_err(|_| too_big())?;
        frames.push(Frame {
            kind: Kind::Plain,
            at: end,
            len,
        });
    }
    Ok(frames)
}

/// Cut the item's buffers at its frames' logical bounds (which tile them).
fn cut<'a>(targets: Vec<Target<'a>>, frames: &[Frame]) -> Vec<Vec<Target<'a>>> {
    let mut rest = targets.into_iter();
    let mut current = rest.next();
    let mut outs = Vec::with_capacity(frames.len());
    for frame in frames {
        let mut need = frame.len;
        let mut out = Vec::new();
        while need > 0 {
            let Some(target) = current.take() else { break };
            let n = target.len();
            if n <= need {
                if n > 0 {
                    out.push(target);
                }
                need -= n;
                current = rest.next();
                continue;
            }
            let (head, tail) = match target {
                Target::Into(b) => {
                    let (h, t) = b.split_at_mut(need);
                    (Target::Into(h), Target::Into(t))
                }
                Target::Skip(n) => (Target::Skip(need), Target::Skip(n - need)),
            };
            out.push(head);
            current = Some(tail);
            need = 0;
        }
        outs.push(out);
    }
    outs
}

/// The item's stored bytes, fetched a window ahead and handed out as
/// whole frames.
struct Stored<'c> {
    windows: Windows<'c>,
    what: &'c str,
    /// Fetched bytes not yet handed out, in order.
    parts: VecDeque<Bytes>,
}

impl<'c> Stored<'c> {
    /// Length of the next `count` zstd frames, if the bytes at hand hold them.
    fn measure(&self, count: usize) -> Result<Option<usize>> {
        let spans: Vec<&[u8]> = self.parts.iter().map(|b| &b[..]).collect();
        let have: usize = spans.iter().map(|s| s.len()).sum();
        let mut len = 0;
        for _ in 0..count {
            match frame_end(&Spans(&spans), len) {
                FrameEnd::At(n) => len += n,
                FrameEnd::Short => return Ok(None),
                FrameEnd::Bad => {
                    return Err(Error::corrupt(
                        self.what,
                        "damaged: no zstd frame where the next frame of the item begins",
                    ))
                }
            }
        }
        Ok((len <= have).then_some(len))
    }

    /// The stored bytes of the next frame run of `count` zstd frames;
    /// `None` when they are not at hand and `wait` is false.
    fn take(&mut self, count: usize, wait: bool) -> Result<Option<Bytes>> {
        loop {
            if let Some(len) = self.measure(count)? {
                return Ok(Some(self.split(len)));
            }
            if !wait {
                return Ok(None);
            }
            match self.windows.next()? {
                Some(w) => self.parts.push_back(w),
                None => {
                    return Err(Error::corrupt(
                        self.what,
                        "truncated: the item's stored bytes end inside a frame",
                    ))
                }
            }
        }
    }

    /// The first `len` bytes at hand: a slice of one window, or copied
    /// together when a frame straddles two.
    fn split(&mut self, len: usize) -> Bytes {
        if let Some(first) = self.parts.front_mut() {
            if first.len() >= len {
                let out = first.split_to(len);
                if first.is_empty() {
                    self.parts.pop_front();
                }
                return out;
            }
        }
        let mut joined = Vec::with_capacity(len);
        while joined.len() < len {
            let Some(mut part) = self.parts.pop_front() else {
                break;
            };
            let take = (len - joined.len()).min(part.len());
            joined.extend_from_slice(&part.split_to(take));
            if !part.is_empty() {
                self.parts.push_front(part);
            }
        }
        Bytes::from(joined)
    }

    /// Every stored byte went into a frame.
    fn finish(&mut self) -> Result<()> {
        let left = self.parts.iter().any(|p| !p.is_empty()) || self.windows.next()?.is_some();
        if left {
            return Err(Error::corrupt(
                self.what,
                "bytes follow the end of the item's last frame",
            ));
        }
        Ok(())
    }
}

/// What reading one grouped item needs.
pub(super) struct Item<'c> {
    pub rt: &'c Runtime,
    pub store: &'c Arc<dyn ObjectStore>,
    pub key: &'c str,
    /// Names the item in errors.
    pub what: &'c str,
    pub index: usize,
    pub offset: u64,
    pub length: u64,
    pub size: u64,
    pub grouping: Grouping,
}

/// Read and decode the grouped item into `targets` (its logical bytes in
/// order); returns the CRC32C of each frame's logical bytes.
pub(super) fn read(
    item: &Item<'_>,
    targets: Vec<Target<'_>>,
    part_size: usize,
    spare: &Spare,
    lanes: &mut Vec<Lane>,
) -> Result<Vec<Checked>> {
    let g = item.grouping;
    let frames = layout(&g, item.size, item.what)?;
    let mut outs = cut(targets, &frames);
    // A window holds several data frames, so a batch has work for
    // several threads; twice the frame as a floor for frames that
    // straddle windows.
    let frame_stored = (g.frame + g.frame / 64 + (64 << 10)) as u64;
    let window = (part_size as u64).max(frame_stored * cores().clamp(2, 8) as u64);
    let mut stored = Stored {
        windows: Windows::new(
            item.rt,
            item.store,
            item.key,
            item.what,
            item.offset..item.offset + item.length,
            window,
        ),
        what: item.what,
        parts: VecDeque::new(),
    };
    if lanes.is_empty() {
        lanes.push(Lane::new(item.what)?);
    }
    let mut checked = Vec::with_capacity(frames.len());
    let mut done = 0;
    while done < frames.len() {
        // The first frame of a batch may wait for a window; the others
        // are what that window already holds.
        let mut batch = Vec::new();
        while done + batch.len() < frames.len() && batch.len() < MAX_BATCH {
            let frame = &frames[done + batch.len()];
            match stored.take(frame.zstd_frames(g.width), batch.is_empty())? {
                Some(raw) => batch.push(raw),
                None => break,
            }
        }
        let span = done..done + batch.len();
        let crcs = decode_batch(
            item,
            &frames[span.clone()],
            &mut outs[span],
            &batch,
            spare,
            lanes,
        )?;
        checked.extend(frames[done..].iter().zip(crcs).map(|(f, crc)| Checked {
            item: item.index,
            at: f.at,
            len: f.len as u64,
            crc,
        }));
        done += batch.len();
    }
    stored.finish()?;
    Ok(checked)
}

/// Decode a batch of frames, on spare threads when there are any; the
/// CRC32C of each frame's logical bytes, in order.
fn decode_batch(
    item: &Item<'_>,
    frames: &[Frame],
    outs: &mut [Vec<Target<'_>>],
    raws: &[Bytes],
    spare: &Spare,
    lanes: &mut Vec<Lane>,
) -> Result<Vec<u32>> {
    let width = item.grouping.width;
    let extra = spare.take(frames.len().saturating_sub(1));
    let result = (|| {
        while lanes.len() < 1 + extra {
            lanes.push(Lane::new(item.what)?);
        }
        // Frame i goes to lane i % lanes: frames are of one size, so each
        // lane gets an even share.
        let count = 1 + extra;
        let mut shares: Vec<Vec<_>> = (0..count).map(|_| Vec::new()).collect();
        for (i, ((frame, out), raw)) in frames.iter().zip(outs.iter_mut()).zip(raws).enumerate() {
            shares[i % count].push((i, frame, out, raw));
        }
        let mut crcs = vec![0u32; frames.len()];
        let run = |lane: &mut Lane, share: Vec<(usize, &Frame, &mut Vec<Target<'_>>, &Bytes)>| {
            share
                .into_iter()
                .map(|(i, frame, out, raw)| {
                    decode(lane, frame, width, raw, out)
                        .map(|crc| (i, crc))
                        .map_err(|why| {
                            Error::corrupt(
                                item.what,
                                format!("frame at logical byte {}: {why}", frame.at),
                            )
                        })
                })
                .collect::<Result<Vec<_>>>()
        };
        let run = &run;
        let mut shares = shares.into_iter();
        let mine = shares.next().unwrap_or_default();
        let (first, others) = lanes.split_at_mut(1);
        let results: Vec<Result<Vec<(usize, u32)>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = others
                .iter_mut()
                .zip(shares)
                .map(|(lane, share)| scope.spawn(move || run(lane, share)))
                .collect();
            let mut results = vec![run(&mut first[0], mine)];
            for handle in handles {
                results.push(handle.join().unwrap_or_else(|_| {
                    Err(Error::backend(
                        item.what,
                        "a decoding thread panicked",
                        false,
                    ))
                }));
            }
            results
        });
        for result in results {
            for (i, crc) in result? {
                crcs[i] = crc;
            }
        }
        Ok(crcs)
    })();
    spare.give(extra);
    result
}

/// Decode one frame into its part of the buffers; the CRC32C of its
/// logical bytes, or why it does not decode.
fn decode(
    lane: &mut Lane,
    frame: &Frame,
    width: usize,
    raw: &[u8],
    out: &mut [Target<'_>],
) -> std::result::Result<u32, String> {
    let len = frame.len;
    if let [Target::Into(dst)] = out {
        return decode_into(lane, frame.kind, width, raw, dst);
    }
    let mut merged = std::mem::take(&mut lane.merged);
    merged.resize(len, 0);
    let crc = decode_into(lane, frame.kind, width, raw, &mut merged[..len]);
    let mut at = 0;
    for target in out.iter_mut() {
        let n = target.len();
        if let Target::Into(b) = target {
            b.copy_from_slice(&merged[at..at + n]);
        }
        at += n;
    }
    lane.merged = merged;
    crc
}

fn decode_into(
    lane: &mut Lane,
    kind: Kind,
    width: usize,
    raw: &[u8],
    dst: &mut [u8],
) -> std::result::Result<u32, String> {
    let len = dst.len();
    match kind {
        Kind::Grouped => {
            match grouped::decompress(&mut lane.dctx, raw, width, &mut lane.scratch, dst) {
                Ok((n, Some(crc))) if n == len => Ok(crc),
                Ok((n, _)) => Err(format!("decompresses to {n} bytes, {len} recorded")),
                Err(e) => Err(format!("does not decode: {e}")),
            }
        }
        Kind::Plain => match lane.dctx.decompress_to_buffer(raw, dst) {
            Ok(n) if n == len => Ok(crc32c(dst)),
            Ok(n) => Err(format!("decompresses to {n} bytes, {len} recorded")),
            Err(e) => Err(format!("does not decode: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{GroupRequest, PackOptions, PackWriter, GROUP_FRAME};
    use crate::runtime::runtime;
    use crate::store::memory::MemoryStore;
    use crate::test_rng::fp32_weights;

    fn put(store: &Arc<dyn ObjectStore>, key: &str, data: Vec<u8>) {
        let rt = runtime().expect("runtime");
        rt.block_on(store.put(key, Bytes::from(data), &Default::default()))
            .expect("put");
    }

    fn stored<'c>(
        rt: &'c Runtime,
        store: &'c Arc<dyn ObjectStore>,
        key: &'c str,
        end: u64,
        window: u64,
    ) -> Stored<'c> {
        Stored {
            windows: Windows::new(rt, store, key, key, 0..end, window),
            what: key,
            parts: VecDeque::new(),
        }
    }

    #[test]
    fn frames_are_cut_where_zstd_cuts_them_whatever_the_windows() {
        let rt = runtime().expect("runtime");
        let store: Arc<dyn ObjectStore> = MemoryStore::new();
        let frames: Vec<Vec<u8>> = (0..7)
            .map(|k| {
                let data = fp32_weights(1000 * k + 10, k as u32);
                zstd::bulk::compress(&data, 1 + k as i32).expect("compress")
            })
            .collect();
        let all = frames.concat();
        put(&store, "f", all.clone());
        for window in [1, 7, 100, 4096, all.len() as u64] {
            let mut s = stored(&rt, &store, "f", all.len() as u64, window);
            for (k, frame) in frames.iter().enumerate() {
                let got = s.take(1, true).expect("take").expect("frame");
                assert_eq!(&got[..], &frame[..], "window {window}, frame {k}");
            }
            s.finish().expect("all bytes used");
        }
        // Two frames taken as one run, and nothing taken without waiting
        // before a window arrived.
        let mut s = stored(&rt, &store, "f", all.len() as u64, 64);
        assert!(s.take(1, false).expect("take").is_none());
        let two = s.take(2, true).expect("take").expect("run");
        assert_eq!(&two[..], &all[..frames[0].len() + frames[1].len()]);
        // Cut short, and bytes after the last frame.
        put(&store, "cut", all[..all.len() - 5].to_vec());
        let mut s = stored(&rt, &store, "cut", all.len() as u64 - 5, 100);
        let err = (0..frames.len())
            .map(|_| s.take(1, true))
            .find_map(|r| r.err())
            .expect("truncated");
        assert!(err.to_string().contains("end inside a frame"), "{err}");
        let mut s = stored(&rt, &store, "f", frames[0].len() as u64 + 3, 100);
        s.take(1, true).expect("first frame");
        let err = s.finish().expect_err("bytes follow");
        assert!(err.to_string().contains("bytes follow"), "{err}");
    }

    #[test]
    fn frames_of_one_item_decode_on_spare_threads() {
        let rt = runtime().expect("runtime");
        let store: Arc<dyn ObjectStore> = MemoryStore::new();
        let head = vec![7u8; 1001];
        let floats = fp32_weights(GROUP_FRAME * 5 / 4 + 3, 11);
        let whole = [&head[..], &floats[..]].concat();
        let placed = rt
            .block_on(async {
                let opts = PackOptions {
                    level: Some(1),
                    ..Default::default()
                };
                let mut w = PackWriter::open(&store, "g", opts).await?;
                let segs = vec![Bytes::from(head.clone()), Bytes::from(floats.clone())];
                let placed = w
                    .write_item(
                        segs,
                        Some(GroupRequest {
                            segment: 1,
                            width: 4,
                        }),
                    )
                    .await?;
                w.finish().await?;
                Ok::<_, Error>(placed)
            })
            .expect("write");
        let grouping = placed.grouping.expect("grouped");
        let item = Item {
            rt: &rt,
            store: &store,
            key: "g",
            what: "g (item w)",
            index: 0,
            offset: placed.offset,
            length: placed.length,
            size: placed.size,
            grouping,
        };
        let spare = Spare::exactly(3);
        let mut lanes = Vec::new();
        let mut out = vec![0u8; whole.len()];
        let (a, rest) = out.split_at_mut(500);
        let (b, c) = rest.split_at_mut(GROUP_FRAME);
        let targets = vec![
            Target::Into(a),
            Target::Into(b),
            Target::Skip(0),
            Target::Into(c),
        ];
        let checked = read(&item, targets, 1 << 20, &spare, &mut lanes).expect("read");
        assert!(out == whole);
        // Seven frames (the header, six data frames) in batches of several:
        // more than one thread decoded, and the spare ones were given back.
        assert!(lanes.len() > 1, "{} lanes", lanes.len());
        assert_eq!(spare.take(usize::MAX), 3);
        let mut crc = 0;
        let mut at = 0;
        for c in &checked {
            assert_eq!(c.at, at);
            crc = crate::crc::crc32c_combine(crc, c.crc, c.len);
            at += c.len;
        }
        assert_eq!(Some(crc), placed.crc32c);
    }

    #[test]
    fn layout_tiles_the_item() {
        let g = Grouping {
            start: 10,
            length: 100,
            width: 4,
            frame: 32,
        };
        let frames = layout(&g, 120, "x").expect("layout");
        let lens: Vec<(Kind, u64, usize)> = frames.iter().map(|f| (f.kind, f.at, f.len)).collect();
        assert_eq!(
            lens,
            vec![
                (Kind::Plain, 0, 10),
                (Kind::Grouped, 10, 32),
                (Kind::Grouped, 42, 32),
                (Kind::Grouped, 74, 32),
                (Kind::Grouped, 106, 4),
                (Kind::Plain, 110, 10),
            ]
        );
        assert_eq!(frames[4].zstd_frames(4), 4);
        let odd = Frame {
            kind: Kind::Grouped,
            at: 0,
            len: 6,
        };
        assert_eq!(odd.zstd_frames(4), 5);
    }

    #[test]
    fn cut_splits_buffers_at_frame_bounds() {
        let frames = [
            Frame {
                kind: Kind::Plain,
                at: 0,
                len: 3,
            },
            Frame {
                kind: Kind::Grouped,
                at: 3,
                len: 8,
            },
        ];
        let mut a = [0u8; 5];
        let mut b = [0u8; 2];
        let targets = vec![Target::Into(&mut a), Target::Skip(4), Target::Into(&mut b)];
        let outs = cut(targets, &frames);
        let shape: Vec<Vec<(bool, usize)>> = outs
            .iter()
            .map(|o| {
                o.iter()
                    .map(|t| (matches!(t, Target::Into(_)), t.len()))
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            vec![vec![(true, 3)], vec![(true, 2), (false, 4), (true, 2)]]
        );
    }
}
