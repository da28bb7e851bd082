//! Seed-API saves (what `PyCheckpointStore.save` runs: one shard, then
//! finalize) with a fault at every request position of every operation a
//! clean save makes, up to `MAX_NTH` per operation: the request failing
//! before it reaches the store, or succeeding there with its reply lost.
//!
//! After each faulted save, with the faults gone: every committed step
//! loads bit-exact (the faulted step holds the old data or the new, never
//! a mix; a step this save committed holds its data, and the error said
//! it had committed), and a clean save of the same step then succeeds.

use std::collections::BTreeMap;

use s3dlio_core::checkpoint::CheckpointStore;
use s3dlio_core::store::faults::{Fault, Op};
use s3dlio_core::Error;

use super::backends::Backend;
use super::tally::Tally;
use super::{block_on, checkpoint_store, payload, save, LEVELS};

/// Request positions tried per operation: the first few of each kind
/// cover every phase of a save (data, records, commit, cleanup).
const MAX_NTH: usize = 4;

const OPS: [Op; 8] = [
    Op::Put,
    Op::Write,
    Op::Finish,
    Op::PutIfAbsent,
    Op::Head,
    Op::List,
    Op::Get,
    Op::Delete,
];

/// Operations whose lost reply differs from a failure: the store changed.
fn mutates(op: Op) -> bool {
    matches!(
        op,
        Op::Put | Op::Write | Op::Finish | Op::PutIfAbsent | Op::Delete
    )
}

struct Model {
    store: CheckpointStore,
    /// What each committed step must load.
    steps: BTreeMap<u64, Vec<u8>>,
    next_step: u64,
    seed: u8,
}

impl Model {
    fn data(&mut self) -> Vec<u8> {
        self.seed = self.seed.wrapping_add(1);
        payload(300_000 + usize::from(self.seed) * 7, self.seed)
    }

    fn load(&self, step: u64) -> Result<Vec<u8>, Error> {
        block_on(self.store.reader().read_shard(step, 0)).map(|b| b.to_vec())
    }

    /// The committed steps are the ones the model knows, and `steps` of
    /// them (all when `None`) load exactly.
    fn check(&self, what: &str, steps: Option<&[u64]>) {
        let committed = block_on(self.store.committed_steps()).expect("list committed steps");
        let known: Vec<u64> = self.steps.keys().copied().collect();
        assert_eq!(committed, known, "{what}: committed steps");
        for (step, want) in &self.steps {
            if steps.is_some_and(|s| !s.contains(step)) {
                continue;
            }
            let got = self
                .load(*step)
                .unwrap_or_else(|e| panic!("{what}: step {step} no longer loads: {e}"));
            assert!(&got == want, "{what}: step {step} loads other bytes");
        }
    }
}

pub fn run(b: &Backend, tally: &mut Tally) {
    for level in LEVELS {
        let store = checkpoint_store(b, &format!("save-{}", level.unwrap_or(0)), level);
        let mut m = Model {
            store,
            steps: BTreeMap::new(),
            next_step: 2,
            seed: 0,
        };
        let first = m.data();
        block_on(save(&m.store, 1, &first, false)).expect("first save");
        m.steps.insert(1, first);
        for overwrite in [false, true] {
            let calls = clean_calls(b, &mut m, overwrite);
            for op in OPS {
                for nth in 1..=calls[op as usize].min(MAX_NTH) {
                    one_case(b, &mut m, tally, Fault::FailNth { op, nth }, overwrite);
                    if mutates(op) {
                        one_case(b, &mut m, tally, Fault::LoseReply { op, nth }, overwrite);
                    }
                }
            }
        }
        m.check(&format!("{} level {level:?}: at the end", b.name), None);
    }
}

/// Requests of each operation a clean save makes, by `op as usize`.
fn clean_calls(b: &Backend, m: &mut Model, overwrite: bool) -> [usize; 8] {
    let step = if overwrite { 1 } else { m.next_step };
    m.next_step += u64::from(!overwrite);
    let data = m.data();
    b.faults.set_faults(Vec::new());
    block_on(save(&m.store, step, &data, overwrite)).expect("clean save");
    m.steps.insert(step, data);
    let mut calls = [0; 8];
    for op in OPS {
        calls[op as usize] = b.faults.calls(op);
    }
    calls
}

fn one_case(b: &Backend, m: &mut Model, tally: &mut Tally, fault: Fault, overwrite: bool) {
    let step = if overwrite { 1 } else { m.next_step };
    m.next_step += u64::from(!overwrite);
    let what = format!(
        "{}: save of step {step} (overwrite={overwrite}) with {fault:?}",
        b.name
    );
    let old = m.steps.get(&step).cloned();
    let new = m.data();
    let before = b.faults.injected();
    b.faults.set_faults(vec![fault.clone()]);
    let result = block_on(save(&m.store, step, &new, overwrite));
    b.faults.set_faults(Vec::new());
    let fired = b.faults.injected() - before;
    assert_eq!(fired, 1, "{what}: the fault fired {fired} times");
    tally.cases += 1;
    tally.injected += fired;

    let committed = block_on(m.store.is_committed(step)).expect("is_committed");
    let loaded = if committed {
        Some(
            m.load(step)
                .unwrap_or_else(|e| panic!("{what}: committed step does not load: {e}")),
        )
    } else {
        None
    };
    match &result {
        Ok(()) => {
            tally.saves_ok += 1;
            let ok = loaded.as_ref() == Some(&new);
            tally.check(ok, || format!("{what}: saved data does not load"));
        }
        Err(e) => {
            tally.error(&what, e, &b.base_uri());
            let committed_by_this = loaded.as_ref() == Some(&new);
            if committed_by_this {
                // A caller told "failed" must also be told the step is
                // there, unless the commit's own reply was lost (then
                // nobody can know).
                let lost_commit = matches!(
                    fault,
                    Fault::LoseReply {
                        op: Op::PutIfAbsent,
                        ..
                    }
                );
                let says = lost_commit || e.to_string().contains("committed");
                tally.check(says, || {
                    format!("{what}: committed, but the error does not say so: {e}")
                });
                tally.committed_then_failed += 1;
            } else {
                let ok = loaded == old;
                tally.check(ok, || {
                    format!("{what}: after the failed save the step holds neither its old data nor the new")
                });
                tally.saves_failed += 1;
            }
        }
    }
    if let Some(bytes) = loaded {
        m.steps.insert(step, bytes);
    }
    // The faulted step was loaded above; the first one stands for the rest.
    m.check(&what, Some(&[1]));
    // The same save, clean, then goes through.
    let again = m.data();
    block_on(save(&m.store, step, &again, true))
        .unwrap_or_else(|e| panic!("{what}: a clean save afterwards failed: {e}"));
    let got = m.load(step);
    tally.check(got.as_ref().is_ok_and(|g| *g == again), || {
        format!(
            "{what}: the clean save afterwards does not load: {got:?}",
            got = got.map(|g| g.len())
        )
    });
    if overwrite {
        m.steps.insert(step, again);
    } else {
        // Every save lists the committed steps (the latest-step hint): a
        // few steps keep each case's requests the same.
        block_on(m.store.delete_checkpoint(step))
            .unwrap_or_else(|e| panic!("{what}: removing the step afterwards failed: {e}"));
        m.steps.remove(&step);
    }
}
