//! Test harness: real servers on loopback port 0 (an SMTP server and an
//! HTTP receiver that speak the real protocols), the daemon as the built
//! binary, and file writes the way editors and `mv` make them.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const BIN: &str = env!("CARGO_BIN_EXE_tocsin");

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `tocsin ARGS -c CONFIG`: its exit code, and stdout then stderr.
pub fn tocsin(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Runs `cmd` and asserts that it succeeded (its stderr the message).
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A port on loopback that nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------- files

/// Writes a temp file beside `path`, then renames it over `path` (what
/// `mv` and most editors do).
pub fn write_by_rename(path: &Path, content: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Truncates and rewrites `path` in place (what `>` in a shell does).
pub fn write_in_place(path: &Path, content: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

pub fn append(path: &Path, content: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
}

/// The complete JSON lines of a file channel's output so far (a line
/// being written as we read is left for the next look).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

// ---------------------------------------------------------------- HTTP

/// GET over plain TCP: the status code and the body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The value of one sample in a Prometheus text exposition (0 when absent).
pub fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------- daemon

/// The daemon as a child process, its log in a file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_until(config, env, "tocsin started")
    }

    /// Starts the daemon and waits until its log says `needle`.
    pub fn start_until(config: &Path, env: &[(&str, &str)], needle: &str) -> Daemon {
        let log = config.with_file_name("daemon.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = std::fs::File::create(log.with_file_name("daemon.stdout")).unwrap();
        let child = cmd.stdout(out).stderr(f).spawn().unwrap();
        let d = Daemon { child, log };
        d.wait_log(needle, Duration::from_secs(20));
        // Let the file watches settle before a test edits files.
        std::thread::sleep(Duration::from_millis(300));
        d
    }

    /// What the daemon wrote to stdout (it logs to stderr).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_file_name("daemon.stdout")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let ok = wait_for(timeout, || self.log().contains(needle).then_some(())).is_some();
        assert!(ok, "daemon log never said {needle:?}:\n{}", self.log());
        ok
    }

    pub fn stop(mut self) -> String {
        unsafe_kill(self.child.id(), "TERM");
        let _ = self.child.wait();
        self.log()
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, sig: &str) {
        unsafe_kill(self.child.id(), sig);
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

// ---------------------------------------------------------------- SMTP

#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    /// Header lines of the message (unfolded), before the blank line.
    pub fn headers(&self) -> Vec<(String, String)> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut out: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = out.last_mut() {
                    last.1.push_str(line); // unfolding removes only the CRLF
                }
            } else if let Some((k, v)) = line.split_once(':') {
                out.push((k.to_string(), v.trim().to_string()));
            }
        }
        out
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

/// A small SMTP server speaking RFC 5321 over real TCP: EHLO/HELO, MAIL,
/// RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT.
pub struct SmtpServer {
    pub addr: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    _rt: tokio::runtime::Runtime,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        SmtpServer::start_on(0)
    }

    /// On a given port (0: any), e.g. to come back where a stopped one was.
    pub fn start_on(port: u16) -> SmtpServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind(("127.0.0.1", port))).unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m = mails.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let m = m.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(sock, m).await;
                });
            }
        });
        SmtpServer {
            addr,
            mails,
            _rt: rt,
        }
    }

    pub fn wait_mails(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        wait_for(timeout, || {
            let m = self.mails.lock().unwrap();
            (m.len() >= n).then(|| m.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} mails, got {}",
                self.mails.lock().unwrap().len()
            )
        })
    }
}

async fn smtp_session(
    sock: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 localhost test SMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n")
                .await?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 localhost\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_string();
            to.clear();
            w.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(cmd[8..].trim().to_string());
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            mails.lock().unwrap().push(Mail {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            w.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 OK\r\n").await?;
        } else {
            w.write_all(b"502 command not implemented\r\n").await?;
        }
    }
}

// ---------------------------------------------------------------- HTTP

/// A one-thread runtime for an in-process server, and its listener on
/// 127.0.0.1:0.
fn loopback() -> (tokio::runtime::Runtime, TcpListener, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    (rt, listener, addr)
}

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// An HTTP receiver on 127.0.0.1:0 that records every request and answers
/// with the statuses queued in `answers` (200 once they run out); a 3xx
/// comes with `Location: /moved`. A JSON payload whose `key` is
/// `reject_key` is answered 500, always.
pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub answers: Arc<Mutex<std::collections::VecDeque<u16>>>,
    pub reject_key: Arc<Mutex<Option<String>>>,
    /// How long each answer waits.
    pub delay: Arc<Mutex<Duration>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start() -> Receiver {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode, Uri};
        let (rt, listener, addr) = loopback();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let answers: Arc<Mutex<std::collections::VecDeque<u16>>> = Arc::default();
        let reject_key: Arc<Mutex<Option<String>>> = Arc::default();
        let delay: Arc<Mutex<Duration>> = Arc::default();
        let (reqs, ans, reject, wait) = (
            requests.clone(),
            answers.clone(),
            reject_key.clone(),
            delay.clone(),
        );
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (reqs, ans, reject, wait) =
                (reqs.clone(), ans.clone(), reject.clone(), wait.clone());
            async move {
                let key = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["key"].as_str().map(str::to_string));
                reqs.lock().unwrap().push(Request {
                    path: uri.path().to_string(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect(),
                    body: body.to_vec(),
                });
                let rejected = key.is_some() && *reject.lock().unwrap() == key;
                let code = if rejected {
                    500
                } else {
                    ans.lock().unwrap().pop_front().unwrap_or(200)
                };
                let pause = *wait.lock().unwrap();
                tokio::time::sleep(pause).await;
                let mut h = HeaderMap::new();
                if (300..400).contains(&code) {
                    h.insert("location", "/moved".parse().unwrap());
                }
                (StatusCode::from_u16(code).unwrap(), h, "ok")
            }
        };
        let app = axum::Router::new().fallback(handler);
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            requests,
            answers,
            reject_key,
            delay,
            _rt: rt,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Request> {
        wait_for(timeout, || {
            let r = self.requests.lock().unwrap();
            (r.len() >= n).then(|| r.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} requests, got {}",
                self.requests.lock().unwrap().len()
            )
        })
    }
}

pub fn write_bytes_in_place(path: &Path, content: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(content).unwrap();
}

// ---------------------------------------------------------------- feeds

/// What the feed server serves at `/feed`, and what it saw.
#[derive(Default)]
pub struct Served {
    pub body: Vec<u8>,
    pub content_type: String,
    /// Sent as ETag; a request with a matching If-None-Match gets 304.
    pub etag: Option<String>,
    /// Statuses to answer before serving the body again.
    pub fail: std::collections::VecDeque<u16>,
    /// Requests to `/feed`: their If-None-Match.
    pub hits: Vec<Option<String>>,
    pub not_modified: usize,
}

impl Served {
    /// Serves a new version of the document, with a new ETag.
    pub fn set(&mut self, body: &str) {
        self.body = body.as_bytes().to_vec();
        self.etag = Some(format!("\"v{}\"", self.hits.len() + 1000 * self.body.len()));
    }
}

/// An HTTP server on 127.0.0.1:0 for polled sources: `/feed` serves
/// [`Served`] with ETags and 304s; `/big` streams 3 MiB without a length;
/// `/hang` never answers; `/loop` redirects to itself.
pub struct FeedServer {
    pub addr: SocketAddr,
    pub served: Arc<Mutex<Served>>,
    _rt: tokio::runtime::Runtime,
}

impl FeedServer {
    pub fn start() -> FeedServer {
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::{IntoResponse, Response};
        let (rt, listener, addr) = loopback();
        let served: Arc<Mutex<Served>> = Arc::default();
        let s = served.clone();
        let feed = move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                let mut st = s.lock().unwrap();
                let inm = headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                st.hits.push(inm.clone());
                if let Some(code) = st.fail.pop_front() {
                    return StatusCode::from_u16(code).unwrap().into_response();
                }
                if inm.is_some() && inm == st.etag {
                    st.not_modified += 1;
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                let mut r: Response = st.body.clone().into_response();
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, st.content_type.parse().unwrap());
                if let Some(e) = &st.etag {
                    h.insert(header::ETAG, e.parse().unwrap());
                }
                r
            }
        };
        let big = || async {
            let chunks = (0..48).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]));
            axum::body::Body::from_stream(futures_util::stream::iter(chunks))
        };
        let hang = || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late"
        };
        let redirect = || async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) };
        let app = axum::Router::new()
            .route("/feed", axum::routing::get(feed))
            .route("/big", axum::routing::get(big))
            .route("/hang", axum::routing::get(hang))
            .route("/loop", axum::routing::get(redirect));
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FeedServer {
            addr,
            served,
            _rt: rt,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.served.lock().unwrap().hits.len()
    }

    /// Waits until the server has seen `n` more requests to `/feed`.
    pub fn wait_hits(&self, n: usize, timeout: Duration) {
        let target = self.hits() + n;
        wait_for(timeout, || (self.hits() >= target).then_some(()))
            .unwrap_or_else(|| panic!("the feed was not polled {n} more times"));
    }
}
