//! A real S3 server for the tests: `s3s-fs` (its path in `S3DLIO_S3S_FS`,
//! which `make test` sets) on a free 127.0.0.1 port with fixed test
//! credentials and a scratch data directory, always torn down.
//!
//! - [`S3Server::start`]: a server owned by one test (killed on drop).
//! - [`shared`]: one server per test process for the conformance suite,
//!   killed at exit (an `atexit` hook, with the parent-death signal as the
//!   backstop when the process dies abnormally).

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use s3dlio_core::store::s3::S3Options;
use s3dlio_core::store::StoreOptions;

pub const ACCESS_KEY: &str = "s3dlio-test-access-key";
pub const SECRET_KEY: &str = "s3dlio-test-secret-key-do-not-leak";
pub const REGION: &str = "us-east-1";

/// The server binary, or `None` (after printing why the S3 tests skip).
pub fn binary() -> Option<PathBuf> {
    match std::env::var_os("S3DLIO_S3S_FS").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        Some(p) => panic!(
            "S3DLIO_S3S_FS={} does not exist; run `make tools` (or unset it to skip S3)",
            p.display()
        ),
        None => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| {
                // Straight to fd 2: the test harness captures eprintln!.
                let _ = std::io::stderr().write_all(
                    b"SKIP s3: S3DLIO_S3S_FS is not set (`make test` sets it); S3 backend not tested\n",
                );
            });
            None
        }
    }
}

/// Scratch space on the work disk, next to the build.
pub fn scratch_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn spawn(bin: &Path, data: &Path, port: u16) -> Child {
    let mut cmd = Command::new(bin);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it only sets a flag of the child.
    unsafe {
        cmd.pre_exec(|| {
            // Killed when the thread that spawned it ends: never outlives us.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("start s3s-fs")
}

/// Wait until the server accepts connections; `false` if it exited.
fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("s3s-fs did not start listening on 127.0.0.1:{port} within 15 s");
}

/// Start on a free port (a few tries: another process may take the port
/// between our probe and the server's bind).
fn launch(bin: &Path, data: &Path) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(bin, data, port);
        if wait_ready(&mut child, port) {
            return (child, port);
        }
    }
    panic!("s3s-fs failed to start 5 times");
}

/// Options that reach a server at `endpoint` with the test credentials.
pub fn options_for(endpoint: &str) -> StoreOptions {
    StoreOptions {
        s3: S3Options {
            endpoint_url: Some(endpoint.to_string()),
            region: Some(REGION.to_string()),
            access_key_id: Some(ACCESS_KEY.to_string()),
            secret_access_key: Some(SECRET_KEY.to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Create `bucket` through the S3 API (from any context: it runs on a
/// thread of its own with its own runtime).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    let endpoint = endpoint.to_string();
    let name = bucket.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let creds =
                aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
            let conf = aws_sdk_s3::config::Builder::new()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new(REGION))
                .credentials_provider(creds)
                .endpoint_url(&endpoint)
                .force_path_style(true)
                .build();
            aws_sdk_s3::Client::from_conf(conf)
                .create_bucket()
                .bucket(&name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        })
    })
    .join()
    .expect("bucket thread")
    .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
}

/// A server owned by one test.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub endpoint: String,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl S3Server {
    /// `None` when S3 is not configured for this run.
    pub fn start() -> Option<S3Server> {
        let dir = tempfile::tempdir_in(scratch_root()).expect("scratch");
        let data = dir.path().to_path_buf();
        let mut s = S3Server::start_in(&data)?;
        s._dir = Some(dir);
        Some(s)
    }

    /// A server on an existing data directory (a restart after a crash).
    pub fn start_in(data: &Path) -> Option<S3Server> {
        let bin = binary()?;
        let (child, port) = launch(&bin, data);
        Some(S3Server {
            child: Some(child),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
            _dir: None,
        })
    }

    pub fn options(&self) -> StoreOptions {
        options_for(&self.endpoint)
    }

    pub fn create_bucket(&self, bucket: &str) {
        create_bucket(&self.endpoint, bucket)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Multipart uploads whose parts still sit in the data directory.
    pub fn pending_upload_files(&self) -> Vec<String> {
        std::fs::read_dir(&self.data)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload_id-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The process-wide server of the conformance suite.
pub struct Shared {
    pub endpoint: String,
    pub bucket: &'static str,
}

static SHARED_PID: AtomicUsize = AtomicUsize::new(0);
static SHARED_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn stop_shared() {
    let pid = SHARED_PID.load(Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    if let Some(dir) = SHARED_DIR.lock().ok().and_then(|mut d| d.take()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Start the shared server on first use; `None` when S3 is not configured.
pub fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let bin = binary()?;
            let dir = tempfile::tempdir_in(scratch_root())
                .expect("scratch")
                .keep();
            *SHARED_DIR.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.clone());
            // The keeper thread lives as long as the server, so the
            // parent-death signal fires only when this process dies.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("s3s-fs-keeper".into())
                .spawn(move || {
                    let (mut child, port) = launch(&bin, &dir);
                    SHARED_PID.store(child.id() as usize, Ordering::SeqCst);
                    let _ = tx.send(port);
                    let _ = child.wait();
                })
                .expect("keeper thread");
            let port = rx.recv().expect("s3s-fs started");
            // SAFETY: registering a plain extern "C" fn.
            unsafe {
                libc::atexit(stop_shared);
            }
            let endpoint = format!("http://127.0.0.1:{port}");
            create_bucket(&endpoint, "conformance");
            Some(Shared {
                endpoint,
                bucket: "conformance",
            })
        })
        .as_ref()
}

/// A fresh key prefix, unique in this process.
pub fn fresh_prefix(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// What a [`FaultProxy`] does to connections.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Close the first connection that has carried this many bytes back to
    /// the client (a body broken mid-stream); later ones pass through.
    CutOnceAfter(usize),
    /// Answer the first `n` connections with `503 SlowDown` and close them.
    Throttle(usize),
}

/// A TCP proxy in front of a server that injects one kind of fault.
pub struct FaultProxy {
    pub endpoint: String,
    /// How many times the fault fired.
    pub fired: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    port: u16,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let fired = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (fired2, stop2) = (fired.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let fired = fired2.clone();
                std::thread::spawn(move || serve(client, upstream_port, fault, fired));
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            fired,
            stop,
            port,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut client: TcpStream, upstream_port: u16, fault: Fault, fired: Arc<AtomicUsize>) {
    if let Fault::Throttle(n) = fault {
        if fired.fetch_add(1, Ordering::SeqCst) < n {
            // Read the request head, then refuse it as S3 does when throttling.
            let mut head = [0u8; 4096];
            let _ = client.read(&mut head);
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let resp = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(resp.as_bytes());
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
        fired.fetch_sub(1, Ordering::SeqCst);
    }
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let (mut c_read, mut u_write) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    // Client -> server, untouched.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(std::net::Shutdown::Write);
    });
    // Server -> client, possibly cut.
    let mut u_read = upstream;
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0usize;
    let cut_at = match fault {
        Fault::CutOnceAfter(n) => Some(n),
        Fault::Throttle(_) => None,
    };
    loop {
        let n = match u_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(limit) = cut_at {
            if sent + n >= limit
                && fired
                    .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let _ = client.write_all(&buf[..limit - sent]);
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = u_read.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}
