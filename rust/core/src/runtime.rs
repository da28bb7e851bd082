//! The one tokio runtime of a process, created on first use and rebuilt in
//! a child after `fork()` (the parent's worker threads do not exist there).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::runtime::{Builder, Runtime};

use crate::error::{Error, Result};

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The runtime of this process.
pub fn runtime() -> Result<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    if let Some((_, inherited)) = slot.take() {
        // Dropping the parent's runtime in the child would wait for worker
        // threads that were not copied by fork(); leak it instead.
        std::mem::forget(inherited);
    }
    let rt = Arc::new(
        Builder::new_multi_thread()
            .enable_all()
            .thread_name("s3dlio")
            .build()
            .map_err(|e| Error::backend("runtime", format!("cannot start tokio: {e}"), false))?,
    );
    *slot = Some((pid, rt.clone()));
    Ok(rt)
}

/// Run `fut` to completion on the process runtime from synchronous code.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(fut))
}
