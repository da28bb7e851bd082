//! Reads many items, from many packed objects, straight into caller
//! buffers: adjacent items are coalesced into ranged reads of at most
//! `part_size` bytes, large items are split across them, and all of it runs
//! on `threads` worker threads at once. Each item's CRC32C is checked over
//! exactly the bytes handed to the caller. A one-frame zstd item is
//! fetched a part ahead and decoded straight into the caller's buffers; a
//! byte-grouped item is cut into its frames, decoded in parallel on the
//! cores the workers leave idle (`grouped_read`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::runtime::Runtime;

use super::grouped_read::{self, Lane, Spare};
use super::Grouping;
use crate::crc::{crc32c, crc32c_append, crc32c_combine};
use crate::error::{Error, Result};
use crate::format::pack_frame::FrameDecoder;
use crate::store::ObjectStore;

/// Where a run of an item's logical bytes goes.
pub enum Target<'a> {
    /// Into this caller buffer.
    Into(&'a mut [u8]),
    /// Read (and checksummed) but not kept.
    Skip(usize),
}

impl Target<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Target::Into(b) => b.len(),
            Target::Skip(n) => *n,
        }
    }
}

/// How an item's stored bytes encode its logical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Stored as they are.
    Plain,
    /// One zstd frame (torch's `stream.zstd`).
    Zstd,
    /// Byte-grouped, see [`Grouping`].
    Grouped(Grouping),
}

/// One item to read.
pub struct ItemRead<'a> {
    /// Key of the packed object in the store.
    pub key: String,
    /// Stored byte range of the item inside the object.
    pub offset: u64,
    pub length: u64,
    pub encoding: Encoding,
    /// CRC32C of the logical bytes, checked when given.
    pub crc32c: Option<u32>,
    /// Names the item in messages.
    pub label: String,
    /// The item's logical bytes, in order, exactly covered.
    pub targets: Vec<Target<'a>>,
}

#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Worker threads (ranged reads in flight at once).
    pub threads: usize,
    /// Largest single ranged read.
    pub part_size: usize,
    /// Unrequested bytes between two items that are still read (and
    /// dropped) to save a request.
    pub max_gap: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            threads: 8,
            part_size: 16 << 20,
            max_gap: 256 << 10,
        }
    }
}

enum Dst<'a> {
    Buf(&'a mut [u8]),
    Scratch(usize),
}

impl Dst<'_> {
    fn len(&self) -> usize {
        match self {
            Dst::Buf(b) => b.len(),
            Dst::Scratch(n) => *n,
        }
    }
}

/// A run of an object's bytes and the item (if any) it belongs to.
struct Piece<'a> {
    dst: Dst<'a>,
    item: Option<usize>,
    /// Offset of the piece inside the item's logical bytes.
    at: u64,
}

enum Job<'a> {
    /// One ranged read of a plain object, scattered into pieces.
    Plain {
        key: String,
        offset: u64,
        pieces: Vec<Piece<'a>>,
    },
    /// One zstd-frame item: fetched and decoded into its targets.
    Frame {
        item: usize,
        targets: Vec<Target<'a>>,
    },
    /// One byte-grouped item: its frames decoded in parallel.
    Grouped {
        item: usize,
        targets: Vec<Target<'a>>,
    },
}

/// The CRC32C of a run of an item's logical bytes.
pub(super) struct Checked {
    pub(super) item: usize,
    pub(super) at: u64,
    pub(super) len: u64,
    pub(super) crc: u32,
}

/// What is kept of an item once its buffers went into jobs.
struct ItemInfo {
    key: String,
    offset: u64,
    length: u64,
    size: u64,
    crc32c: Option<u32>,
    label: String,
    encoding: Encoding,
}

impl ItemInfo {
    fn what(&self, store: &dyn ObjectStore) -> String {
        format!("{} (item {})", store.uri(&self.key), self.label)
    }
}

/// Read every item of `items`. Blocking: call it from a plain thread (not
/// from inside the tokio runtime); it waits for all of its workers.
pub fn read_items(
    store: Arc<dyn ObjectStore>,
    items: Vec<ItemRead<'_>>,
    opts: &ReadOptions,
) -> Result<()> {
    if opts.part_size == 0 || opts.threads == 0 {
        return Err(Error::invalid(
            "read threads and part size must be positive",
        ));
    }
    let rt = crate::runtime::runtime()?;
    let (infos, jobs) = plan(store.as_ref(), items, opts)?;
    let jobs_count = jobs.len();
    let queue = Mutex::new(jobs.into_iter());
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let checked: Mutex<Vec<Checked>> = Mutex::new(Vec::new());
    let workers = opts.threads.min(jobs_count);
    let spare = Spare::new(workers);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut decoder: Option<FrameDecoder> = None;
                // Decoding threads' state, kept from item to item.
                let mut lanes: Vec<Lane> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                        break;
                    };
                    let ctx = Ctx {
                        rt: &rt,
                        store: &store,
                        infos: &infos,
                        opts,
                        spare: &spare,
                    };
                    match ctx.run(job, &mut decoder, &mut lanes) {
                        Ok(done) => checked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(done),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
                // Out of jobs: this core can decode another worker's frames.
                spare.give(1);
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    verify(
        store.as_ref(),
        &infos,
        checked.into_inner().unwrap_or_else(|p| p.into_inner()),
    )
}

/// Split items into jobs: compressed items one job each, plain items
/// coalesced in object order and cut at `part_size`.
fn plan<'a>(
    store: &dyn ObjectStore,
    items: Vec<ItemRead<'a>>,
    opts: &ReadOptions,
) -> Result<(Vec<ItemInfo>, Vec<Job<'a>>)> {
    let mut infos = Vec::with_capacity(items.len());
    let mut jobs = Vec::new();
    let mut plain = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let size: u64 = item.targets.iter().map(|t| t.len() as u64).sum();
        let info = ItemInfo {
            key: item.key,
            offset: item.offset,
            length: item.length,
            size,
            crc32c: item.crc32c,
            label: item.label,
            encoding: item.encoding,
        };
        if let Encoding::Grouped(g) = item.encoding {
            g.check(&info.what(store), size)?;
        }
        let compressed = item.encoding != Encoding::Plain;
        if !compressed && size != item.length {
            return Err(Error::invalid(format!(
                "{}: {} stored bytes but buffers for {size}",
                info.what(store),
                item.length
            )));
        }
        if let Encoding::Grouped(_) = item.encoding {
            jobs.push(Job::Grouped {
                item: index,
                targets: item.targets,
            });
        } else if compressed {
            jobs.push(Job::Frame {
                item: index,
                targets: item.targets,
            });
        } else {
            plain.push((index, item.targets));
        }
        infos.push(info);
    }
    plain.sort_by(|a, b| {
        let (x, y) = (&infos[a.0], &infos[b.0]);
        (&x.key, x.offset).cmp(&(&y.key, y.offset))
    });
    let mut run: Option<Run<'a>> = None;
    for (index, targets) in plain {
        let info = &infos[index];
        let joins = run.as_ref().is_some_and(|r| {
            r.key == info.key && info.offset >= r.end && info.offset - r.end <= opts.max_gap
        });
        if !joins {
            if let Some(r) = run.take() {
                jobs.push(r.into_job());
            }
            run = Some(Run::new(&info.key, info.offset));
        }
        let Some(r) = run.as_mut() else { continue };
        let gap = info.offset - r.end;
        if gap > 0 {
            r.add(Dst::Scratch(gap as usize), None, 0, opts, &mut jobs);
        }
        let mut at = 0u64;
        for target in targets {
            let len = target.len() as u64;
            let dst = match target {
                Target::Into(b) => Dst::Buf(b),
                Target::Skip(n) => Dst::Scratch(n),
            };
            r.add(dst, Some(index), at, opts, &mut jobs);
            at += len;
        }
    }
    if let Some(r) = run.take() {
        jobs.push(r.into_job());
    }
    Ok((infos, jobs))
}

/// A plain ranged read being assembled.
struct Run<'a> {
    key: String,
    offset: u64,
    end: u64,
    pieces: Vec<Piece<'a>>,
}

impl<'a> Run<'a> {
    fn new(key: &str, offset: u64) -> Self {
        Run {
            key: key.to_string(),
            offset,
            end: offset,
            pieces: Vec::new(),
        }
    }

    fn into_job(self) -> Job<'a> {
        Job::Plain {
            key: self.key,
            offset: self.offset,
            pieces: self.pieces,
        }
    }

    /// Append `dst`, starting a new job in `jobs` whenever this one is full.
    fn add(
        &mut self,
        mut dst: Dst<'a>,
        item: Option<usize>,
        mut at: u64,
        opts: &ReadOptions,
        jobs: &mut Vec<Job<'a>>,
    ) {
        while dst.len() > 0 {
            let filled = (self.end - self.offset) as usize;
            if filled >= opts.part_size {
                let next = Run::new(&self.key, self.end);
                jobs.push(std::mem::replace(self, next).into_job());
                continue;
            }
            let take = (opts.part_size - filled).min(dst.len());
            let (head, rest) = match dst {
                Dst::Buf(b) => {
                    let (h, t) = b.split_at_mut(take);
                    (Dst::Buf(h), Dst::Buf(t))
                }
                Dst::Scratch(n) => (Dst::Scratch(take), Dst::Scratch(n - take)),
            };
            self.pieces.push(Piece {
                dst: head,
                item,
                at,
            });
            self.end += take as u64;
            at += take as u64;
            dst = rest;
        }
    }
}

/// Caller buffers lent to a task on the runtime, which needs `'static`
/// borrows. Contract: whoever lends them waits for the task to end before
/// using or freeing the buffers again (see `Ctx::read_on_runtime`).
struct Lent(Vec<(*mut u8, usize)>);

// SAFETY: the pointers are exclusive borrows handed from the lender to the
// one task that uses them; the lender waits for it (see above).
unsafe impl Send for Lent {}

impl Lent {
    fn new(bufs: &mut [&mut [u8]]) -> Self {
        Lent(bufs.iter_mut().map(|b| (b.as_mut_ptr(), b.len())).collect())
    }

    /// # Safety
    /// Only while the lender waits, as the type's contract says.
    unsafe fn slices(&mut self) -> Vec<&'static mut [u8]> {
        self.0
            .iter()
            // SAFETY: each pair came from a live `&mut [u8]` the lender
            // does not use until the task holding these slices has ended.
            .map(|&(ptr, len)| unsafe { std::slice::from_raw_parts_mut(ptr, len) })
            .collect()
    }
}

/// What every job needs.
struct Ctx<'c> {
    rt: &'c Runtime,
    store: &'c Arc<dyn ObjectStore>,
    infos: &'c [ItemInfo],
    opts: &'c ReadOptions,
    spare: &'c Spare,
}

impl Ctx<'_> {
    fn run(
        &self,
        job: Job<'_>,
        decoder: &mut Option<FrameDecoder>,
        lanes: &mut Vec<Lane>,
    ) -> Result<Vec<Checked>> {
        match job {
            Job::Plain {
                key,
                offset,
                pieces,
            } => self.run_plain(&key, offset, pieces),
            Job::Frame { item, targets } => {
                if decoder.is_none() {
                    *decoder = Some(FrameDecoder::new(&self.store.uri(&self.infos[item].key))?);
                }
                match decoder.as_mut() {
                    Some(d) => self.run_frame(item, targets, d).map(|c| vec![c]),
                    None => Err(Error::invalid("no zstd decoder")),
                }
            }
            Job::Grouped { item, targets } => {
                let info = &self.infos[item];
                let Encoding::Grouped(grouping) = info.encoding else {
                    return Err(Error::invalid("a grouped job for an item not grouped"));
                };
                let what = info.what(self.store.as_ref());
                let read = grouped_read::Item {
                    rt: self.rt,
                    store: self.store,
                    key: &info.key,
                    what: &what,
                    index: item,
                    offset: info.offset,
                    length: info.length,
                    size: info.size,
                    grouping,
                };
                grouped_read::read(&read, targets, self.opts.part_size, self.spare, lanes)
            }
        }
    }

    fn run_plain(
        &self,
        key: &str,
        offset: u64,
        mut pieces: Vec<Piece<'_>>,
    ) -> Result<Vec<Checked>> {
        let mut scratch: Vec<Vec<u8>> = pieces
            .iter()
            .filter_map(|p| match p.dst {
                Dst::Scratch(n) => Some(vec![0u8; n]),
                Dst::Buf(_) => None,
            })
            .collect();
        let mut owners = Vec::with_capacity(pieces.len());
        let mut bufs: Vec<&mut [u8]> = Vec::with_capacity(pieces.len());
        let mut spare = scratch.iter_mut();
        for p in pieces.iter_mut() {
            owners.push((p.item, p.at));
            match &mut p.dst {
                Dst::Buf(b) => bufs.push(&mut **b),
                Dst::Scratch(_) => {
                    if let Some(s) = spare.next() {
                        bufs.push(s.as_mut_slice());
                    }
                }
            }
        }
        let read = if self.store.is_remote() {
            self.read_on_runtime(key, offset, &mut bufs)
        } else {
            self.rt
                .block_on(self.store.read_into(key, offset, &mut bufs))
        };
        if let Err(e) = read {
            return Err(self.short_read(key, offset, e));
        }
        let mut done = Vec::new();
        for (buf, (item, at)) in bufs.iter().zip(owners) {
            if let Some(item) = item {
                if self.infos[item].crc32c.is_some() {
                    done.push(Checked {
                        item,
                        at,
                        len: buf.len() as u64,
                        crc: crc32c(buf),
                    });
                }
            }
        }
        Ok(done)
    }

    /// `store.read_into` as a task on the runtime, this thread waiting for
    /// it. Polled from here (`block_on` of the read itself), every body
    /// chunk would cross threads twice (hyper's connection task hands a
    /// chunk over, the reader asks for the next one), each a futex wake-up
    /// and a context switch: on a loaded machine that was most of the
    /// client's CPU time. As a task, the read runs beside the connection
    /// task on one runtime worker, and this thread wakes once per job.
    fn read_on_runtime(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let lent = Lent::new(bufs);
        let store = self.store.clone();
        let owned_key = key.to_string();
        let task = self.rt.spawn(async move {
            let mut lent = lent;
            // SAFETY: `Lent`'s contract: this thread blocks on the task's
            // handle below and touches `bufs` only once the task has ended.
            let mut bufs = unsafe { lent.slices() };
            store.read_into(&owned_key, offset, &mut bufs).await
        });
        // The handle resolves only after the task's future is dropped
        // (done, panicked or cancelled), so the lent buffers are free again.
        match self.rt.block_on(task) {
            Ok(read) => read,
            Err(e) => Err(Error::backend(
                self.store.uri(key),
                format!("read task failed: {e}"),
                false,
            )),
        }
    }

    /// An object that ends before an item does is damage, not bad input.
    fn short_read(&self, key: &str, offset: u64, e: Error) -> Error {
        let label = self
            .infos
            .iter()
            .find(|i| i.key == key && i.offset <= offset && offset < i.offset + i.length.max(1))
            .map(|i| format!(" (item {})", i.label))
            .unwrap_or_default();
        truncated(&format!("{}{label}", self.store.uri(key)), e)
    }

    /// Fetch the item's frame in parts (one ahead) and decode it into its
    /// targets, checksumming what comes out.
    fn run_frame(
        &self,
        item: usize,
        mut targets: Vec<Target<'_>>,
        decoder: &mut FrameDecoder,
    ) -> Result<Checked> {
        let info = &self.infos[item];
        let what = info.what(self.store.as_ref());
        decoder.begin(&what)?;
        let mut windows = Windows::new(
            self.rt,
            self.store,
            &info.key,
            &what,
            info.offset..info.offset + info.length,
            self.opts.part_size as u64,
        );
        let mut out = Output::new(&mut targets);
        let mut crc = 0u32;
        let mut finished = false;
        while let Some(data) = windows.next()? {
            let mut used = 0;
            while used < data.len() {
                if finished {
                    return Err(Error::corrupt(
                        &what,
                        "bytes follow the end of the item's zstd frame",
                    ));
                }
                let d = self.decode_step(decoder, &what, &data[used..], &mut out, &mut crc)?;
                used += d.read;
                finished = d.finished;
            }
        }
        // Input ended: the frame may still hold buffered output, or be cut short.
        while !finished {
            let d = self.decode_step(decoder, &what, &[], &mut out, &mut crc)?;
            if d.written == 0 && !d.finished {
                return Err(Error::corrupt(&what, "the item's zstd frame is truncated"));
            }
            finished = d.finished;
        }
        if !out.exhausted() {
            return Err(Error::corrupt(
                &what,
                format!(
                    "decompresses to {} bytes, {} recorded",
                    out.produced, info.size
                ),
            ));
        }
        Ok(Checked {
            item,
            at: 0,
            len: info.size,
            crc,
        })
    }
}

impl Ctx<'_> {
    /// Decode from `input` into the next output buffer, checksumming what
    /// lands in the item's targets; output past the last target is damage.
    fn decode_step(
        &self,
        decoder: &mut FrameDecoder,
        what: &str,
        input: &[u8],
        out: &mut Output<'_, '_>,
        crc: &mut u32,
    ) -> Result<crate::format::pack_frame::Decoded> {
        let size = out.size;
        let (buf, past) = out.current();
        let d = decoder.decode(what, input, buf)?;
        if d.written > 0 {
            if past {
                return Err(Error::corrupt(
                    what,
                    format!("decompresses to more than the {size} bytes recorded"),
                ));
            }
            *crc = crc32c_append(*crc, &buf[..d.written]);
        }
        out.advance(d.written);
        Ok(d)
    }
}

/// An item's stored bytes in windows of at most `window` bytes, in order,
/// the next one fetched while the caller works on the current one.
pub(super) struct Windows<'c> {
    rt: &'c Runtime,
    store: &'c Arc<dyn ObjectStore>,
    key: &'c str,
    /// Names the item in errors.
    what: &'c str,
    /// Next stored offset to fetch, and where the item's bytes end.
    next: u64,
    end: u64,
    window: u64,
    ahead: Option<(u64, tokio::task::JoinHandle<Result<Bytes>>)>,
}

impl<'c> Windows<'c> {
    pub(super) fn new(
        rt: &'c Runtime,
        store: &'c Arc<dyn ObjectStore>,
        key: &'c str,
        what: &'c str,
        range: std::ops::Range<u64>,
        window: u64,
    ) -> Self {
        let mut w = Windows {
            rt,
            store,
            key,
            what,
            next: range.start,
            end: range.end,
            window,
            ahead: None,
        };
        w.fetch_ahead();
        w
    }

    fn fetch_ahead(&mut self) {
        if self.ahead.is_some() || self.next >= self.end {
            return;
        }
        let stop = (self.next + self.window).min(self.end);
        let range = self.next..stop;
        self.next = stop;
        let store = self.store.clone();
        let key = self.key.to_string();
        let want = range.end - range.start;
        let task = self
            .rt
            .spawn(async move { store.get_range_view(&key, range).await });
        self.ahead = Some((want, task));
    }

    /// The next window, `None` past the item's end; an object that ends
    /// first is damage to the item.
    pub(super) fn next(&mut self) -> Result<Option<Bytes>> {
        let Some((want, task)) = self.ahead.take() else {
            return Ok(None);
        };
        let data = self
            .rt
            .block_on(task)
            .map_err(|e| Error::backend(self.what, format!("read task failed: {e}"), false))?
            .map_err(|e| truncated(self.what, e))?;
        if data.len() as u64 != want {
            return Err(Error::corrupt(
                self.what,
                format!("truncated: read {} of {want} bytes", data.len()),
            ));
        }
        self.fetch_ahead();
        Ok(Some(data))
    }
}

/// A ranged read of an item's bytes refused as past the end: the object
/// ends before the item does (an empty or cut-short data file), which is
/// damage to `what`, not bad input.
fn truncated(what: &str, e: Error) -> Error {
    match e {
        Error::InvalidInput(reason) => Error::corrupt(what, format!("truncated: {reason}")),
        other => other,
    }
}

/// Walks an item's targets as decoded bytes arrive; skipped runs decode
/// into a small scratch buffer.
struct Output<'t, 'a> {
    targets: &'t mut [Target<'a>],
    index: usize,
    within: usize,
    scratch: Vec<u8>,
    probe: [u8; 1],
    produced: u64,
    /// Total bytes the targets hold.
    size: u64,
}

impl<'t, 'a> Output<'t, 'a> {
    fn new(targets: &'t mut [Target<'a>]) -> Self {
        let size = targets.iter().map(|t| t.len() as u64).sum();
        Output {
            size,
            targets,
            index: 0,
            within: 0,
            scratch: Vec::new(),
            probe: [0],
            produced: 0,
        }
    }

    fn settle(&mut self) {
        while self.index < self.targets.len() && self.within >= self.targets[self.index].len() {
            self.index += 1;
            self.within = 0;
        }
    }

    fn exhausted(&mut self) -> bool {
        self.settle();
        self.index >= self.targets.len()
    }

    /// The buffer the next output goes to, and whether it is a one-byte
    /// probe past the last target (where any output is damage).
    fn current(&mut self) -> (&mut [u8], bool) {
        self.settle();
        if self.index >= self.targets.len() {
            return (&mut self.probe[..], true);
        }
        let within = self.within;
        match &mut self.targets[self.index] {
            Target::Into(b) => (&mut b[within..], false),
            Target::Skip(n) => {
                let want = (*n - within).min(1 << 20);
                if self.scratch.len() < want {
                    self.scratch.resize(want, 0);
                }
                (&mut self.scratch[..want], false)
            }
        }
    }

    /// Account for `n` bytes decoded into the buffer `current` handed out.
    fn advance(&mut self, n: usize) {
        self.produced += n as u64;
        self.within += n;
    }
}

/// Join each item's checksummed runs and compare with what was recorded.
fn verify(store: &dyn ObjectStore, infos: &[ItemInfo], mut checked: Vec<Checked>) -> Result<()> {
    checked.sort_by_key(|c| (c.item, c.at));
    let mut runs = checked.into_iter().peekable();
    for (index, info) in infos.iter().enumerate() {
        let Some(expected) = info.crc32c else {
            continue;
        };
        let mut crc = 0u32;
        let mut covered = 0u64;
        while let Some(c) = runs.next_if(|c| c.item == index) {
            if c.at != covered {
                return Err(Error::invalid(format!(
                    "{}: internal error: checksummed runs do not tile the item",
                    info.what(store)
                )));
            }
            crc = crc32c_combine(crc, c.crc, c.len);
            covered += c.len;
        }
        if covered != info.size {
            return Err(Error::invalid(format!(
                "{}: internal error: checksummed {covered} of {} bytes",
                info.what(store),
                info.size
            )));
        }
        if crc != expected {
            return Err(Error::Integrity {
                uri: info.what(store),
                offset: info.offset,
                expected,
                actual: crc,
            });
        }
    }
    Ok(())
}
