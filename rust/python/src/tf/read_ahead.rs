//! A plain file read as a queue of pieces fetched ahead of TensorFlow.
//!
//! TF reads a checkpoint's data file front to back, one tensor per call,
//! each call waiting for its bytes before the next is made. Fetched one
//! window at a time, the store sat idle while TF copied and checked a
//! window, and each window's parallel requests started and ended together
//! (S3 and Azure restores ran at about half the raw-HTTP rate). Here
//! `depth` pieces are in flight past the one TF reads, and every piece TF
//! moves past is replaced by the next one at once, so the store always has
//! `depth` requests running, like the ceiling's steady threads.
//!
//! Fetching ahead stops at bytes TF has already read: TF 2.21 reads the
//! tensors of more than 16M elements last, from its pool threads, through
//! the same file, so after the smaller ones it goes back to the file's
//! start, and reading on past such a tensor would fetch the smaller ones'
//! bytes again (a third of the data file in a test of one 64 MiB and one
//! 24 MiB tensor). And the pool threads take the big tensors in no fixed
//! order: a read elsewhere parks the queue rather than dropping it, and a
//! read that lands in the parked queue takes it back, so pieces fetched
//! ahead into the next big tensor are still there when its turn comes.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use s3dlio_core::runtime::{block_on, runtime};
use s3dlio_core::store::{ObjectStore, ObjectStoreExt};
use s3dlio_core::{Error, Result};
use tokio::task::JoinHandle;

use super::status::OpResult;

/// Bytes per piece, one ranged request (an O_DIRECT read on direct://).
/// Pieces end on multiples of it, so all but a run's first start aligned.
const PIECE: u64 = 8 << 20;

pub struct ReadAhead {
    store: Arc<dyn ObjectStore>,
    key: String,
    uri: String,
    size: u64,
    depth: usize,
    /// Contiguous pieces in file order: at most one TF has moved past
    /// (a read may reach back a little), the one it reads, those in flight.
    pieces: VecDeque<Piece>,
    /// The queue before the last jump, still fetching.
    parked: VecDeque<Piece>,
    /// The ranges TF has been served, sorted and merged.
    served: Vec<Range<u64>>,
    /// Buffers of dropped pieces, reused: on this kind of machine a fresh
    /// 8 MiB buffer costs 2,048 page faults before a byte lands in it.
    spare: Vec<Vec<u8>>,
}

struct Piece {
    start: u64,
    end: u64,
    state: State,
}

enum State {
    InFlight(JoinHandle<Result<Vec<u8>>>),
    Ready(Vec<u8>),
}

impl ReadAhead {
    /// Reads of `key` (`size` bytes, stored as they are) with `depth`
    /// pieces fetched ahead of the one read.
    pub fn new(store: Arc<dyn ObjectStore>, key: &str, uri: &str, size: u64, depth: usize) -> Self {
        ReadAhead {
            store,
            key: key.to_string(),
            uri: uri.to_string(),
            size,
            depth: depth.max(1),
            pieces: VecDeque::new(),
            parked: VecDeque::new(),
            served: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// The bytes from `pos` (inside the file) to the end of the piece that
    /// holds it or to `read_end`, whichever is first: the caller copies all
    /// of them. `arrived(start, bytes)` hears each piece once, when the
    /// first read reaches it: in file order while TF reads in file order.
    /// A read outside the queue takes back the parked one if that holds
    /// it, or else parks this one and starts a new one there.
    pub fn bytes_at(
        &mut self,
        pos: u64,
        read_end: u64,
        arrived: &mut dyn FnMut(u64, &[u8]) -> OpResult<()>,
    ) -> OpResult<&[u8]> {
        let limit = self.ahead_limit(read_end);
        if !holds(&self.pieces, pos) {
            std::mem::swap(&mut self.pieces, &mut self.parked);
            if !holds(&self.pieces, pos) {
                self.clear();
                let end = self.piece_end(pos).min(limit);
                self.launch(pos, end)?;
            }
        }
        let mut at = self
            .pieces
            .iter()
            .position(|p| pos < p.end)
            .unwrap_or_default();
        while at > 1 {
            self.drop_front();
            at -= 1;
        }
        while self.pieces.len() - at - 1 < self.depth {
            let from = self.pieces.back().map_or(limit, |p| p.end);
            if from >= limit {
                break;
            }
            let end = self.piece_end(from).min(limit);
            self.launch(from, end)?;
        }
        if let Err(e) = self.settle(at, arrived) {
            // A failed piece is fetched again by the next read, not kept.
            self.clear();
            return Err(e);
        }
        let piece = &self.pieces[at];
        let until = piece.end.min(read_end);
        mark_served(&mut self.served, pos..until);
        match &piece.state {
            State::Ready(data) => {
                let from = (pos - piece.start) as usize;
                Ok(&data[from..from + (until - pos) as usize])
            }
            State::InFlight(_) => Err(Error::backend(&self.uri, "piece not fetched", false).into()),
        }
    }

    /// Where fetching stops for a read ending at `read_end`: the first
    /// byte from there on that TF has already been served, or the file's end.
    fn ahead_limit(&self, read_end: u64) -> u64 {
        self.served
            .iter()
            .find(|r| r.end > read_end)
            .map_or(self.size, |r| r.start.max(read_end))
    }

    fn piece_end(&self, from: u64) -> u64 {
        ((from / PIECE + 1) * PIECE).min(self.size)
    }

    /// Start fetching `start..end` into a spare buffer.
    fn launch(&mut self, start: u64, end: u64) -> OpResult<()> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.resize((end - start) as usize, 0);
        let store = self.store.clone();
        let key = self.key.clone();
        let task = runtime()?.spawn(async move {
            store.get_range_into(&key, start, &mut buf).await?;
            Ok(buf)
        });
        self.pieces.push_back(Piece {
            start,
            end,
            state: State::InFlight(task),
        });
        Ok(())
    }

    /// Wait for piece `at` if it is still in flight.
    fn settle(
        &mut self,
        at: usize,
        arrived: &mut dyn FnMut(u64, &[u8]) -> OpResult<()>,
    ) -> OpResult<()> {
        let piece = &mut self.pieces[at];
        let State::InFlight(task) = &mut piece.state else {
            return Ok(());
        };
        let data = block_on(task)?.map_err(|e| {
            Error::backend(&self.uri, format!("read-ahead task failed: {e}"), false)
        })??;
        arrived(piece.start, &data)?;
        piece.state = State::Ready(data);
        Ok(())
    }

    fn drop_front(&mut self) {
        if let Some(piece) = self.pieces.pop_front() {
            self.retire(piece);
        }
    }

    /// Drop every piece of the queue: in-flight fetches are cancelled.
    fn clear(&mut self) {
        while let Some(piece) = self.pieces.pop_front() {
            self.retire(piece);
        }
    }

    fn retire(&mut self, piece: Piece) {
        match piece.state {
            State::InFlight(task) => task.abort(),
            State::Ready(buf) => {
                if self.spare.len() <= self.depth {
                    self.spare.push(buf);
                }
            }
        }
    }
}

/// Whether `pos` lies in one of the contiguous `pieces`.
fn holds(pieces: &VecDeque<Piece>, pos: u64) -> bool {
    pieces.front().is_some_and(|p| p.start <= pos) && pieces.back().is_some_and(|p| pos < p.end)
}

/// Add `range` to the sorted, merged ranges in `served`.
fn mark_served(served: &mut Vec<Range<u64>>, range: Range<u64>) {
    let at = served.partition_point(|r| r.end < range.start);
    let mut merged = range;
    while at < served.len() && served[at].start <= merged.end {
        let r = served.remove(at);
        merged = merged.start.min(r.start)..merged.end.max(r.end);
    }
    served.insert(at, merged);
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.clear();
        std::mem::swap(&mut self.pieces, &mut self.parked);
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::mark_served;

    #[test]
    fn served_ranges_stay_sorted_and_merged() {
        let mut served = Vec::new();
        for r in [10..20, 30..40, 20..25, 0..5, 50..60, 35..52, 5..10] {
            mark_served(&mut served, r);
        }
        assert_eq!(served, vec![0..25, 30..60]);
        mark_served(&mut served, 25..30);
        assert_eq!(served, vec![0..60]);
    }
}
