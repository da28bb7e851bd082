//! Azurite for the Rust tests: started on a free 127.0.0.1 port when
//! `S3DLIO_AZURITE` names the `azurite-blob` launcher (the Makefile's
//! `tools` target installs it), always torn down.
//!
//! `shared()` is one server per test binary: started by a thread that
//! lives as long as the process (the child gets SIGKILL when it goes, via
//! PR_SET_PDEATHSIG) and stopped by an `atexit` hook, which also removes
//! its data. `Azurite::start()` is a private server owned by a test; it is
//! killed and removed when dropped.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use s3dlio_core::store::azure::builder::{DEV_ACCOUNT, DEV_KEY};
use s3dlio_core::store::azure::{AzureOptions, AzureStore};
use s3dlio_core::store::StoreOptions;

/// The launcher, or `None` (with a skip line on stderr) when unset.
pub fn launcher() -> Option<PathBuf> {
    match std::env::var_os("S3DLIO_AZURITE") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.exists(),
                "S3DLIO_AZURITE={} does not exist: run `make tools`",
                p.display()
            );
            Some(p)
        }
        _ => {
            eprintln!("azure: skipped (S3DLIO_AZURITE is not set; `make test` sets it)");
            None
        }
    }
}

pub struct Azurite {
    launcher: PathBuf,
    pub port: u16,
    pub location: PathBuf,
    child: Option<Child>,
    /// Removed with the server; `None` for the shared one (atexit removes it).
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn spawn(launcher: &Path, port: u16, location: &Path) -> Child {
    let log = std::fs::File::create(location.join("azurite.log")).expect("azurite log");
    let mut cmd = Command::new(launcher);
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
        .arg(port.to_string())
        .arg("--location")
        .arg(location)
        .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("start azurite-blob")
}

impl Azurite {
    /// A private server; `None` when Azurite is not configured.
    pub fn start() -> Option<Azurite> {
        let launcher = launcher()?;
        let dir = scratch_dir();
        let location = dir.path().to_path_buf();
        let mut a = Azurite {
            launcher,
            port: 0,
            location,
            child: None,
            _dir: Some(dir),
        };
        a.boot(None);
        Some(a)
    }

    /// Start (again) on `port` or a fresh free one, and wait until it listens.
    fn boot(&mut self, port: Option<u16>) {
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let mut child = spawn(&self.launcher, port, &self.location);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.location.join("azurite.log"))
                        .unwrap_or_default();
                    if log.contains("EADDRINUSE") {
                        break; // lost the port race: try another
                    }
                    panic!("azurite-blob exited with {status}:\n{log}");
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("azurite-blob did not listen on 127.0.0.1:{port} within 60 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start azurite-blob on a free port");
    }

    /// SIGKILL: a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: Azurite saves its metadata and exits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data.
    pub fn restart(&mut self) {
        self.boot(Some(self.port));
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};\
             BlobEndpoint={};",
            self.endpoint()
        )
    }

    /// Store options pointing at this server (passed explicitly, so tests
    /// need not touch the process environment).
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            azure: AzureOptions {
                connection_string: Some(self.connection_string()),
                // A killed server is an error in about a second, not a minute.
                max_retries: Some(2),
                retry_timeout: Some(Duration::from_secs(3)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A new, empty container; returns its name.
    pub fn container(&self) -> String {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{}-{n}", std::process::id());
        let store = AzureStore::open(DEV_ACCOUNT, &name, &self.options().azure).expect("open");
        // Its own thread: callers may be inside a tokio runtime already.
        let created = std::thread::scope(|s| {
            s.spawn(|| s3dlio_core::runtime::block_on(store.create_container()))
                .join()
                .expect("create container thread")
        })
        .expect("runtime")
        .expect("create container");
        assert!(created, "container {name} already existed");
        name
    }

    /// `az://devstoreaccount1/<fresh container>`.
    pub fn fresh_uri(&self) -> String {
        format!("az://{DEV_ACCOUNT}/{}", self.container())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Scratch on the work disk next to the other test data.
fn scratch_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tempfile::Builder::new()
        .prefix("azurite-")
        .tempdir_in(base)
        .expect("azurite scratch dir")
}

/// What the atexit hook tears down.
static SHARED_STATE: Mutex<Option<(u32, PathBuf)>> = Mutex::new(None);

extern "C" fn stop_shared() {
    let state = SHARED_STATE.lock().map(|mut s| s.take()).unwrap_or(None);
    if let Some((pid, location)) = state {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(location);
    }
}

/// The server shared by every test of this binary, or `None` (skip).
pub fn shared() -> Option<Arc<SharedAzurite>> {
    static SHARED: OnceLock<Option<Arc<SharedAzurite>>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let launcher = launcher()?;
            let (tx, rx) = std::sync::mpsc::channel();
            // The owner thread never ends, so PDEATHSIG fires only when
            // the process does.
            std::thread::spawn(move || {
                let dir = scratch_dir().keep();
                let mut a = Azurite {
                    launcher,
                    port: 0,
                    location: dir.clone(),
                    child: None,
                    _dir: None,
                };
                a.boot(None);
                let pid = a.child.as_ref().map(|c| c.id()).unwrap_or(0);
                *SHARED_STATE.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, dir));
                unsafe {
                    libc::atexit(stop_shared);
                }
                let info = SharedAzurite {
                    port: a.port,
                    location: a.location.clone(),
                };
                // The child is reaped by the atexit hook, not by Drop.
                std::mem::forget(a);
                let _ = tx.send(info);
                loop {
                    std::thread::park();
                }
            });
            let info = rx.recv().expect("azurite owner thread");
            Some(Arc::new(info))
        })
        .clone()
}

/// A handle on the shared server (which nobody may stop).
pub struct SharedAzurite {
    pub port: u16,
    pub location: PathBuf,
}

impl SharedAzurite {
    fn as_view(&self) -> Azurite {
        Azurite {
            launcher: PathBuf::new(),
            port: self.port,
            location: self.location.clone(),
            child: None,
            _dir: None,
        }
    }

    pub fn options(&self) -> StoreOptions {
        self.as_view().options()
    }

    pub fn connection_string(&self) -> String {
        self.as_view().connection_string()
    }

    pub fn fresh_uri(&self) -> String {
        self.as_view().fresh_uri()
    }
}
