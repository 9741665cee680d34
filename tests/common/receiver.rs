//! A small HTTP/1.1 server run by a test (a `std::net` listener, a thread per
//! connection, one request per connection): the receiver of webhook events and
//! the external authentication hook. It records every request and answers what
//! the test's function says, optionally after a delay (a hanging endpoint).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got: lower-case header names.
#[derive(Clone, Debug)]
pub struct Req {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Req {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// What the receiver answers to one request.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Waits this long before answering.
    pub delay: Duration,
}

impl Answer {
    /// `status` with an empty body, at once.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// `status` with a JSON body, at once.
    pub fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }
}

type Answering = dyn Fn(usize, &Req) -> Answer + Send + Sync;

/// An HTTP/1.1 receiver; stops accepting when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Answers every request with `status`.
    pub fn start(addr: &str, status: u16) -> Receiver {
        Self::start_with(addr, &[], status)
    }

    /// Answers the first requests with `first`, in order, then with `then`.
    pub fn start_with(addr: &str, first: &[u16], then: u16) -> Receiver {
        let first = first.to_vec();
        Self::serve(addr, move |n, _| {
            Answer::status(first.get(n).copied().unwrap_or(then))
        })
    }

    /// Answers request number `n` (0-based, in arrival order) `r` with
    /// `answer(n, r)`.
    pub fn serve(
        addr: &str,
        answer: impl Fn(usize, &Req) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        let l = TcpListener::bind(addr).expect("bind receiver");
        let addr = l.local_addr().expect("receiver addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        let answer: Arc<Answering> = Arc::new(answer);
        let count = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let (g, answer, count) = (g.clone(), answer.clone(), count.clone());
                std::thread::spawn(move || serve_one(s, &g, &*answer, &count));
            }
        });
        Receiver { addr, got, stop }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Req> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) until `pred` holds for the requests received.
    pub fn wait(&self, limit: Duration, what: &str, pred: impl Fn(&[Req]) -> bool) -> Vec<Req> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.requests();
            if pred(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "no {what}; got {r:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_one(s: TcpStream, got: &Mutex<Vec<Req>>, answer: &Answering, count: &AtomicUsize) {
    let Some(req) = read_request(&s) else { return };
    let n = count.fetch_add(1, Ordering::SeqCst);
    let a = answer(n, &req);
    got.lock().unwrap().push(req);
    std::thread::sleep(a.delay);
    let mut s = s;
    let _ = write!(
        s,
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.status,
        a.body.len()
    );
    let _ = s.write_all(&a.body);
}

fn read_request(s: &TcpStream) -> Option<Req> {
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        path,
        headers,
        body,
    })
}

/// A loopback port nothing listens on (bound, then released): connections to
/// it are refused.
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HMAC-SHA256 hex of `body` with the secret file's key, computed by Python (an
/// implementation independent of the server's).
pub fn python_hmac(dir: &Path, secret_file: &Path, body: &[u8]) -> String {
    let b = dir.join("body.json");
    std::fs::write(&b, body).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(
            "import hmac,hashlib,sys\n\
             k=open(sys.argv[1],'rb').read().strip()\n\
             print(hmac.new(k,open(sys.argv[2],'rb').read(),hashlib.sha256).hexdigest())",
        )
        .arg(secret_file)
        .arg(&b);
    let (code, out, err) = super::run_for(&mut cmd, Duration::from_secs(30));
    assert_eq!(code, Some(0), "python hmac: {err}");
    out.trim().to_owned()
}
