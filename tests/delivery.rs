//! Delivery that cannot lie, with real servers on loopback: a redirect is
//! never counted as delivered, an answer is read up to a limit, a send has
//! an overall deadline, and one failing notification does not hold back
//! the others of its channel.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

/// A log source and a `hook` channel; `channel` is the channel's YAML.
fn setup(channel: &str, rules: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            "state: state.db\nrules: rules.yaml\nsources:\n  - {{ name: news, type: file, path: news.jsonl, mode: log }}\nchannels:\n  - {channel}\n"
        ),
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), rules).unwrap();
    std::fs::write(p.join("news.jsonl"), "").unwrap();
    Setup {
        config: p.join("tocsin.yaml"),
        log: p.join("news.jsonl"),
        dir: p,
        _dir: dir,
    }
}

const ONE_RULE: &str =
    "rules:\n  - { id: r, source: news, when: { field: title, exists: true }, notify: [hook] }\n";

#[test]
fn a_redirect_is_never_counted_as_delivered_and_names_its_location() {
    let r = Receiver::start();
    let s = setup(
        &format!(
            "{{ name: hook, type: webhook, url: \"{}\" }}",
            r.url("/hook")
        ),
        ONE_RULE,
    );
    for code in [301, 302, 303, 307, 308] {
        r.answers.lock().unwrap().push_back(code);
    }
    let d = Daemon::start(&s.config, &[]);
    for i in 0..5 {
        append(&s.log, &format!("{{\"title\": \"t{i}\"}}\n"));
    }
    let reqs = r.wait_requests(5, T);
    std::thread::sleep(Duration::from_millis(500));
    // Each POST once, none followed to /moved.
    assert_eq!(
        reqs.len(),
        5,
        "{:?}",
        reqs.iter().map(|q| &q.path).collect::<Vec<_>>()
    );
    assert!(reqs.iter().all(|q| q.path == "/hook"));
    let failed = wait_for(T, || {
        let t = tocsin(&s.config, &["alerts", "--failed"]).1;
        (t.matches("redirects to http://").count() >= 5).then_some(t)
    })
    .unwrap_or_else(|| panic!("{}", tocsin(&s.config, &["alerts", "--failed"]).1));
    for code in [301, 302, 303, 307, 308] {
        assert!(
            failed.contains(&format!(
                "HTTP {code}: the webhook URL redirects to http://{}/moved",
                r.addr
            )),
            "{failed}"
        );
    }
    assert!(
        !tocsin(&s.config, &["alerts", "--json"])
            .1
            .contains("\"outcome\":\"delivered\"")
    );
    d.stop();
}

/// A receiver that answers 200 with a 3 GB body, streamed until the client
/// hangs up.
fn huge_answer() -> (u16, std::thread::JoinHandle<u64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 65536];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3221225472\r\n\r\n");
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0u64;
        while sent < 3 << 30 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    (port, h)
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_huge_answer_is_read_up_to_a_limit() {
    let (port, server) = huge_answer();
    let s = setup(
        &format!("{{ name: hook, type: webhook, url: \"http://127.0.0.1:{port}/hook\" }}"),
        ONE_RULE,
    );
    let d = Daemon::start(&s.config, &[]);
    append(&s.log, "{\"title\": \"t\"}\n");
    d.wait_log("delivered: HTTP 200", T);
    let sent = server.join().unwrap();
    let rss = peak_rss_kb(d.child.id());
    assert!(sent < 1 << 30, "the daemon read {sent} bytes of the answer");
    assert!(rss < 100 * 1024, "peak RSS {rss} kB");
    d.stop();
}

#[test]
fn an_smtp_server_trickling_bytes_is_cut_off_at_the_deadline() {
    // One byte of its greeting a second.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                for b in b"220 slow.example ESMTP slow slow slow slow slow slow\r\n" {
                    if s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
    });
    let s = setup(
        &format!(
            "{{ name: hook, type: email, smtp: {{ host: 127.0.0.1, port: {port}, tls: none, timeout: 3s }}, from: a@example.org, to: [b@example.org] }}"
        ),
        ONE_RULE,
    );
    let d = Daemon::start(&s.config, &[]);
    let t = std::time::Instant::now();
    append(&s.log, "{\"title\": \"t\"}\n");
    d.wait_log(
        "no complete answer from the SMTP server within 3s (timeout)",
        T,
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    d.stop();
}

/// A payload the receiver rejects with 500 forever does not hold back the
/// next notifications of other keys beyond one retry interval, and each
/// key's notifications still go out in order.
#[test]
fn one_failing_notification_does_not_hold_its_channel() {
    let r = Receiver::start();
    let rules = "rules:\n  - { id: r, source: news, key: \"{{ k }}\", when: { field: n, above: 0 }, resolve: true, notify: [hook] }\n";
    let s = setup(
        &format!(
            "{{ name: hook, type: webhook, url: \"{}\" }}",
            r.url("/hook")
        ),
        rules,
    );
    *r.reject_key.lock().unwrap() = Some("bad".into());
    let d = Daemon::start(&s.config, &[]);
    // The bad key first, then 100 others; each of 10 keys fires then
    // resolves, so their order shows.
    let mut lines = String::from("{\"k\": \"bad\", \"n\": 1}\n");
    for i in 0..50 {
        lines.push_str(&format!(
            "{{\"k\": \"k{}\", \"n\": 1}}\n{{\"k\": \"k{}\", \"n\": 0}}\n",
            i, i
        ));
    }
    let t = std::time::Instant::now();
    append(&s.log, &lines);
    let reqs = wait_for(T, || {
        let r = r.requests.lock().unwrap();
        let others = r.iter().filter(|q| q.json()["key"] != "bad").count();
        (others >= 100).then(|| r.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} requests:\n{}",
            r.requests.lock().unwrap().len(),
            d.log()
        )
    });
    // The first retry comes after about 0.5 s: the others went out meanwhile.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    for i in 0..50 {
        let states: Vec<String> = reqs
            .iter()
            .map(|q| q.json())
            .filter(|v| v["key"] == format!("k{i}"))
            .map(|v| v["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["firing", "resolved"], "key k{i}");
    }
    let bad = reqs.iter().filter(|q| q.json()["key"] == "bad").count();
    assert!(
        (1..=4).contains(&bad),
        "the bad one is retried with backoff: {bad}"
    );
    d.stop();
    let _ = s.dir;
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem holding `dir` to its last byte.
fn fill(dir: &Path) -> PathBuf {
    let f = dir.join("filler");
    let mut w = std::fs::File::create(&f).unwrap();
    let chunk = vec![0u8; 4096];
    while w.write_all(&chunk).is_ok() {}
    let _ = w.sync_all();
    f
}

/// The store on a full disk: a send that went through is not sent again
/// because it could not be recorded, nothing is lost, and systemd's
/// watchdog keeps hearing from the daemon.
#[test]
fn a_full_disk_neither_repeats_sends_nor_starves_the_watchdog() {
    let r = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    let fs = match Tmpfs::mount(&p.join("store"), "4m") {
        Ok(fs) => fs,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs for the store (needs root): {e}");
            return;
        }
    };
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            "state: store/state.db\nrules: rules.yaml\nsources:\n  - {{ name: news, type: file, path: news.jsonl, mode: log }}\nchannels:\n  - {{ name: hook, type: webhook, url: \"{}\" }}\n",
            r.url("/hook")
        ),
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), ONE_RULE).unwrap();
    std::fs::write(p.join("news.jsonl"), "").unwrap();
    let sock = std::os::unix::net::UnixDatagram::bind(p.join("notify.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let d = Daemon::start(
        &p.join("tocsin.yaml"),
        &[
            ("NOTIFY_SOCKET", p.join("notify.sock").to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    append(&p.join("news.jsonl"), "{\"title\": \"before\"}\n");
    r.wait_requests(1, T);

    // A send in flight when the disk fills: it succeeds, its record fails.
    *r.delay.lock().unwrap() = Duration::from_millis(1500);
    append(&p.join("news.jsonl"), "{\"title\": \"in flight\"}\n");
    r.wait_requests(2, T);
    let filler = fill(&fs.0);
    // More events while full: they wait to be recorded.
    append(
        &p.join("news.jsonl"),
        "{\"title\": \"while full 1\"}\n{\"title\": \"while full 2\"}\n",
    );
    *r.delay.lock().unwrap() = Duration::ZERO;
    // Six seconds full: three watchdog intervals.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let mut pings = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "WATCHDOG=1")
        {
            pings.push(std::time::Instant::now());
        }
    }
    assert!(
        pings.len() >= 5
            && pings
                .windows(2)
                .all(|w| w[1] - w[0] < Duration::from_secs(2)),
        "watchdog pings while the store is full: {}\n{}",
        pings.len(),
        d.log()
    );
    assert_eq!(
        r.requests.lock().unwrap().len(),
        2,
        "no send repeated while full:\n{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("the send is recorded later, and not repeated"),
        "{}",
        d.log()
    );

    std::fs::remove_file(&filler).unwrap();
    let reqs = r.wait_requests(4, T);
    std::thread::sleep(Duration::from_millis(1500));
    let reqs2 = r.requests.lock().unwrap().clone();
    let mut ids: Vec<String> = reqs2
        .iter()
        .map(|q| q.json()["id"].as_str().unwrap().to_string())
        .collect();
    let titles: Vec<String> = reqs
        .iter()
        .map(|q| q.json()["fields"]["title"].as_str().unwrap().to_string())
        .collect();
    assert!(titles.contains(&"while full 2".to_string()), "{titles:?}");
    ids.sort();
    let total = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four notifications: {titles:?}");
    assert!(
        total - ids.len() <= 1,
        "at most one duplicate: {total} sends of 4"
    );
    d.stop();
    drop(fs);
}

/// One daemon per store: a second `run` exits 1 at once naming the first's
/// PID, while `check` and `alerts` work beside it; after a `kill -9` of the
/// first, a new one starts at once.
#[test]
fn a_second_daemon_on_the_same_store_is_refused_naming_the_first() {
    let r = Receiver::start();
    let s = setup(
        &format!(
            "{{ name: hook, type: webhook, url: \"{}\" }}",
            r.url("/hook")
        ),
        ONE_RULE,
    );
    let d = Daemon::start(&s.config, &[]);
    let t = std::time::Instant::now();
    let second = std::process::Command::new(BIN)
        .args(["run", "-c"])
        .arg(&s.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        err.contains(&format!(
            "another tocsin (PID {}) is running on the store",
            d.child.id()
        )),
        "{err}"
    );
    assert!(tocsin(&s.config, &["check"]).1.contains(": ok: "));
    assert!(tocsin(&s.config, &["alerts"]).1.contains("FIRING"));
    d.kill();
    let d = Daemon::start(&s.config, &[]);
    append(&s.log, "{\"title\": \"after\"}\n");
    r.wait_requests(1, T);
    d.stop();
}
