//! The stores the matrix runs on, each behind a `FaultStore`: memory,
//! file, direct (O_DIRECT), S3 (s3s-fs) and Azure (Azurite), the last two
//! real servers on 127.0.0.1 shared by this test binary.

use std::sync::Arc;

use s3dlio_core::store::faults::FaultStore;
use s3dlio_core::store::{open_store, Location, ObjectStore, PutOptions, StoreOptions};

use super::{azure_support, support};

pub struct Backend {
    pub name: &'static str,
    /// The base location, behind the fault wrapper.
    pub loc: Location,
    /// The same store without the wrapper: what is really stored.
    pub raw: Arc<dyn ObjectStore>,
    pub faults: Arc<FaultStore>,
    /// How this backend's objects are uploaded: small parts where the
    /// server takes them (Azure blocks), so uploads span several requests.
    pub put: PutOptions,
    _scratch: Option<tempfile::TempDir>,
}

impl Backend {
    fn new(name: &'static str, uri: &str, options: &StoreOptions, put: PutOptions) -> Backend {
        let Location { store, key } = open_store(uri, options).expect("open store");
        let faults = FaultStore::new(store.clone(), Vec::new());
        Backend {
            name,
            loc: Location {
                store: faults.clone() as Arc<dyn ObjectStore>,
                key,
            },
            raw: store,
            faults,
            put,
            _scratch: None,
        }
    }

    /// A fresh location under the base, still behind the wrapper.
    pub fn child(&self, name: &str) -> Location {
        Location {
            store: self.loc.store.clone(),
            key: self.loc.child(name),
        }
    }

    /// The URI every message about this backend's objects starts with.
    pub fn base_uri(&self) -> String {
        self.loc.uri()
    }
}

/// Scratch on the work disk: O_DIRECT is refused on tmpfs by older kernels.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir")
}

fn local(name: &'static str, scheme: &str) -> Backend {
    let dir = scratch();
    let mut b = Backend::new(
        name,
        &format!("{scheme}://{}/base", dir.path().display()),
        &StoreOptions::default(),
        PutOptions::default(),
    );
    b._scratch = Some(dir);
    b
}

pub fn memory() -> Backend {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Backend::new(
        "memory",
        &format!("memory://fault-matrix-{n}/base"),
        &StoreOptions::default(),
        PutOptions::default(),
    )
}

pub fn file() -> Backend {
    local("file", "file")
}

pub fn direct() -> Backend {
    local("direct", "direct")
}

/// `None` (the S3 support module says why) when no s3s-fs is configured.
pub fn s3() -> Option<Backend> {
    let server = support::s3::shared()?;
    let uri = format!(
        "s3://{}/{}",
        server.bucket,
        support::s3::fresh_prefix("fault-matrix")
    );
    Some(Backend::new(
        "s3",
        &uri,
        &support::s3::options_for(&server.endpoint),
        PutOptions::default(),
    ))
}

/// `None` when no Azurite is configured. Blocks of 64 KiB: the shards
/// (a few hundred KiB) go up as Put Block + Put Block List.
pub fn azure() -> Option<Backend> {
    let azurite = azure_support::shared()?;
    Some(Backend::new(
        "azure",
        &format!("{}/base", azurite.fresh_uri()),
        &azurite.options(),
        PutOptions {
            part_size: 64 << 10,
            multipart_threshold: 128 << 10,
            concurrency: 2,
            ..Default::default()
        },
    ))
}
