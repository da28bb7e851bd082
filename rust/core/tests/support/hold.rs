//! A TCP proxy that runs a hook just before it forwards the `nth` GET
//! request (counted over all connections), then passes everything through
//! unchanged: "something happened on the server between two requests of
//! one read", made deterministic. The hook runs on the proxy's thread
//! while that request waits, so the hook's effect is complete before the
//! server sees it.

// Included by several test crates; each uses only some of its fields.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Box<dyn FnMut() + Send>;

pub struct HoldProxy {
    pub endpoint: String,
    pub port: u16,
    /// Whether the hook ran.
    pub fired: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl HoldProxy {
    pub fn start(upstream_port: u16, nth: usize, hook: impl FnMut() + Send + 'static) -> HoldProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let gets = Arc::new(AtomicUsize::new(0));
        let fired = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let hook: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(Some(Box::new(hook))));
        let (gets2, fired2, stop2) = (gets, fired.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (gets, fired, hook) = (gets2.clone(), fired2.clone(), hook.clone());
                std::thread::spawn(move || serve(client, upstream_port, nth, gets, fired, hook));
            }
        });
        HoldProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            fired,
            stop,
        }
    }
}

impl Drop for HoldProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    nth: usize,
    gets: Arc<AtomicUsize>,
    fired: Arc<AtomicBool>,
    hook: Arc<Mutex<Option<Hook>>>,
) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let (Ok(mut c_write), Ok(mut u_read)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    // Server -> client, untouched.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut u_read, &mut c_write);
        let _ = c_write.shutdown(Shutdown::Write);
    });
    // Client -> server: count GETs (request heads arrive whole; reads send
    // no bodies), run the hook before the nth goes on.
    let (mut c_read, mut u_write) = (client, upstream);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match c_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let new_gets = buf[..n].windows(4).filter(|w| w == b"GET ").count();
        if new_gets > 0 {
            let before = gets.fetch_add(new_gets, Ordering::SeqCst);
            if before < nth && before + new_gets >= nth {
                let taken = hook.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(mut run) = taken {
                    run();
                    fired.store(true, Ordering::SeqCst);
                }
            }
        }
        if u_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = u_write.shutdown(Shutdown::Write);
}
