//! High availability on PostgreSQL: real daemons sharing a store on the
//! real PostgreSQL server (a fresh database per test), killed with
//! SIGKILL and paused with SIGSTOP.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use tocsin::store::pg::ScratchDatabase as PgDatabase;

/// Two instances' configs, the same but for their HTTP port, on one
/// store, watching one log and one table (by the same absolute paths, as
/// two hosts would), sending to one webhook.
struct Pair {
    a: PathBuf,
    b: PathBuf,
    port_a: u16,
    port_b: u16,
    events: PathBuf,
    tariffs: PathBuf,
    _dir: tempfile::TempDir,
}

fn pair(db: &PgDatabase, hook: &Receiver, ha: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("data")).unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        r#"
rules:
  - { id: ev, source: events, when: { field: n, above: -100 }, notify: [out] }
  - { id: cn, source: tariffs, where: { partner: CN }, when: { field: rate_pct, above: 157 }, notify: [out] }
"#,
    )
    .unwrap();
    let events = p.join("data/events.jsonl");
    let tariffs = p.join("data/tariffs.csv");
    std::fs::write(&events, "").unwrap();
    std::fs::write(&tariffs, "partner,rate_pct\nCN,100\n").unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let mut configs = Vec::new();
    for (name, port) in [("a", port_a), ("b", port_b)] {
        std::fs::create_dir_all(p.join(name)).unwrap();
        let cfg = p.join(name).join("tocsin.yaml");
        std::fs::write(
            &cfg,
            format!(
                r#"
state: {url}
ha: {ha}
rules: {rules}
http: {{ listen: "127.0.0.1:{port}" }}
sources:
  - {{ name: events, type: file, path: {events}, mode: log }}
  - {{ name: tariffs, type: file, path: {tariffs}, key: [partner] }}
channels:
  - {{ name: out, type: webhook, url: "{hook}" }}
"#,
                url = db.url,
                hook = hook.url("/h"),
                rules = p.join("rules.yaml").display(),
                events = events.display(),
                tariffs = tariffs.display(),
            ),
        )
        .unwrap();
        configs.push(cfg);
    }
    let b = configs.pop().unwrap();
    let a = configs.pop().unwrap();
    Pair {
        a,
        b,
        port_a,
        port_b,
        events,
        tariffs,
        _dir: dir,
    }
}

fn health(port: u16) -> String {
    get(port, "/healthz").1
}

/// The webhook's requests for log events: event number → the ids it came
/// with (one per request).
fn events_received(hook: &Receiver) -> HashMap<i64, Vec<String>> {
    let mut out: HashMap<i64, Vec<String>> = HashMap::new();
    for r in hook.requests.lock().unwrap().iter() {
        let j = r.json();
        if j["rule"] != "ev" {
            continue;
        }
        let n = j["fields"]["n"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .or_else(|| j["fields"]["n"].as_i64())
            .unwrap();
        out.entry(n)
            .or_default()
            .push(r.header("webhook-id").unwrap().to_string());
    }
    out
}

/// A new log's lines are history until the leader has counted them:
/// appends one event at a time (numbered from -1 down) until one alerts.
fn warm_up(p: &Pair, hook: &Receiver) {
    for i in 1..=20 {
        append(&p.events, &format!("{{\"n\": {}}}\n", -i));
        if wait_for(Duration::from_secs(2), || {
            (!events_received(hook).is_empty()).then_some(())
        })
        .is_some()
        {
            return;
        }
    }
    panic!("no event ever alerted");
}

/// How many different notifications the webhook got (cheap: no JSON read,
/// so that waiting for them does not slow the receiver).
fn distinct_ids(hook: &Receiver) -> usize {
    hook.requests
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect::<HashSet<_>>()
        .len()
}

fn lines(from: i64, to: i64) -> String {
    (from..to).map(|i| format!("{{\"n\": {i}}}\n")).collect()
}

/// Every event in `range` arrived; an event that arrived more than once
/// came with the same id each time. Returns the repeats.
fn all_once_or_same_id(hook: &Receiver, range: std::ops::Range<i64>) -> usize {
    let got = events_received(hook);
    let missing: Vec<i64> = range.clone().filter(|n| !got.contains_key(n)).collect();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
    let mut repeats = 0;
    for n in range {
        let ids = &got[&n];
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "event {n} was sent as different notifications: {ids:?}"
        );
        repeats += ids.len() - 1;
    }
    repeats
}

fn started_after(d: &Daemon, from: usize, needle: &str, timeout: Duration) -> bool {
    wait_for(timeout, || {
        d.log()
            .get(from..)
            .is_some_and(|l| l.contains(needle))
            .then_some(())
    })
    .is_some()
}

#[test]
fn one_leader_and_a_leader_killed_mid_burst_loses_none_of_1000_events() {
    let db = PgDatabase::create("ha_kill");
    let hook = Receiver::start();
    // A lease of 5 s (the default is 10 s), renewed every second.
    let p = pair(&db, &hook, "{ renew: 1s, lease: 5s }");
    let a = Daemon::start_until(&p.a, &[], "leading");
    let b = Daemon::start_until(&p.b, &[], "standing by");
    assert_eq!(health(p.port_a), "leader\n");
    assert_eq!(health(p.port_b), "standby\n");
    let metrics = get(p.port_b, "/metrics").1;
    assert_eq!(sample(&metrics, "tocsin_ha_leader"), 0.0);
    assert!(sample(&get(p.port_a, "/metrics").1, "tocsin_ha_epoch") >= 1.0);
    warm_up(&p, &hook);
    let before = distinct_ids(&hook);

    // 1,000 events in ten appends; the leader is killed after the fifth,
    // once some of it has gone out.
    let mut killed = None;
    let mut a = Some(a);
    for chunk in 0..10 {
        append(&p.events, &lines(chunk * 100, (chunk + 1) * 100));
        if chunk == 4 {
            wait_for(Duration::from_secs(20), || {
                (distinct_ids(&hook) >= before + 200).then_some(())
            })
            .expect("deliveries under way");
            a.take().unwrap().kill();
            killed = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = killed.unwrap();
    let at_kill = distinct_ids(&hook) - before;
    assert!(at_kill < 1000, "the kill came after every delivery");
    b.wait_log("leading", Duration::from_secs(15));
    let took_over = killed.elapsed();
    // A dead leader sends nothing: a notification not seen before comes
    // from the new one.
    wait_for(Duration::from_secs(15), || {
        (distinct_ids(&hook) > before + at_kill).then_some(())
    })
    .unwrap_or_else(|| panic!("the new leader sent nothing; its log:\n{}", b.log()));
    let first = killed.elapsed();
    wait_for(Duration::from_secs(30), || {
        (distinct_ids(&hook) >= before + 1000).then_some(())
    })
    .unwrap_or_else(|| panic!("not all delivered; the standby's log:\n{}", b.log()));
    let all_in = killed.elapsed();
    let repeats = all_once_or_same_id(&hook, 0..1000);
    println!(
        "kill -9 of the leader: {at_kill} events delivered before, the standby led after {took_over:?}, sent its first after {first:?}, all 1000 were in after {all_in:?}, {repeats} repeated"
    );
    // The promise: a standby delivers within `ha.lease` + 5 s.
    assert!(
        first < Duration::from_secs(5 + 5),
        "first delivery {first:?} after the kill"
    );
    assert!(
        all_in < Duration::from_secs(15),
        "the new leader delivered everything {all_in:?} after the kill"
    );
    // Only sends not yet recorded at the kill may repeat.
    assert!(repeats <= 32, "{repeats} repeats");
    assert_eq!(health(p.port_b), "leader\n");
    let store = tocsin::store::Store::open(db.location()).unwrap();
    assert_eq!(store.outbox_counts().unwrap(), (0, 0));
    assert!(store.verify_ledger().unwrap().problems.is_empty());
    b.stop();
}

#[test]
fn a_leader_paused_past_its_lease_is_fenced_and_stands_by_when_it_wakes() {
    let db = PgDatabase::create("ha_stop");
    let hook = Receiver::start();
    let p = pair(&db, &hook, "{ renew: 1s, lease: 4s }");
    let a = Daemon::start_until(&p.a, &[], "leading");
    let b = Daemon::start_until(&p.b, &[], "standing by");
    warm_up(&p, &hook);

    a.signal("STOP");
    let paused = Instant::now();
    append(&p.events, &lines(0, 5));
    b.wait_log("leading", Duration::from_secs(10));
    wait_for(Duration::from_secs(10), || {
        ((0..5).all(|n| events_received(&hook).contains_key(&n))).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the new leader delivers what came while the old one was paused:\n{}",
            b.log()
        )
    });
    std::thread::sleep(Duration::from_secs(20).saturating_sub(paused.elapsed()));

    // Woken, the old leader finds its lease gone: it writes and sends
    // nothing more, and stands by.
    let before = a.log().len();
    a.signal("CONT");
    assert!(
        started_after(&a, before, "standing by", Duration::from_secs(10)),
        "the woken leader did not stand by:\n{}",
        a.log()
    );
    append(&p.events, &lines(5, 10));
    wait_for(Duration::from_secs(10), || {
        ((5..10).all(|n| events_received(&hook).contains_key(&n))).then_some(())
    })
    .expect("the new leader delivers after the old one woke");
    std::thread::sleep(Duration::from_secs(2));
    let woken = a.log()[before..].to_string();
    assert!(
        !woken.contains("delivered:"),
        "the fenced leader sent:\n{woken}"
    );
    assert_eq!(
        all_once_or_same_id(&hook, 0..10),
        0,
        "nothing was in flight"
    );
    assert_eq!(health(p.port_a), "standby\n");
    assert_eq!(health(p.port_b), "leader\n");
    let store = tocsin::store::Store::open(db.location()).unwrap();
    let lease = store.lease().unwrap();
    assert!(
        lease.holder.ends_with(&format!(":{}", b.child.id())),
        "{lease:?}"
    );
    drop(a);
    b.stop();
}

#[test]
fn a_table_edited_while_leadership_moves_alerts_exactly_once() {
    let db = PgDatabase::create("ha_table");
    let hook = Receiver::start();
    let p = pair(&db, &hook, "{ renew: 500ms, lease: 2s }");
    let a = Daemon::start_until(&p.a, &[], "leading");
    let b = Daemon::start_until(&p.b, &[], "standing by");
    // The leader has stored the table's first version (CN at 100).
    let store = tocsin::store::Store::open(db.location()).unwrap();
    wait_for(Duration::from_secs(10), || {
        (!store.checkpoints("tariffs").unwrap().is_empty()).then_some(())
    })
    .expect("the first version stored");
    // Edited, and the leader killed at once: it may or may not have read
    // and committed the edit.
    write_by_rename(&p.tariffs, "partner,rate_pct\nCN,200\n");
    std::thread::sleep(Duration::from_millis(30));
    a.kill();
    b.wait_log("leading", Duration::from_secs(10));
    let firing = || -> Vec<String> {
        hook.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.json()["rule"] == "cn")
            .map(|r| r.header("webhook-id").unwrap().to_string())
            .collect()
    };
    wait_for(Duration::from_secs(10), || {
        (!firing().is_empty()).then_some(())
    })
    .expect("the edit alerts");
    std::thread::sleep(Duration::from_secs(2));
    let ids: HashSet<String> = firing().into_iter().collect();
    assert_eq!(
        ids.len(),
        1,
        "one notification for the edit: {:?}",
        firing()
    );
    b.stop();
}

#[test]
fn commands_work_on_postgresql_and_migrate_copies_a_stopped_sqlite_store() {
    // A single daemon on SQLite makes a history and a ledger.
    let hook = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite_cfg = dir.path().join("tocsin.yaml");
    std::fs::write(dir.path().join("tariffs.csv"), "partner,rate_pct\nCN,100\n").unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - { id: cn, source: tariffs, when: { field: rate_pct, above: 157 }, notify: [out] }\n",
    )
    .unwrap();
    let config = |state: &str| {
        format!(
            "state: {state}\nrules: rules.yaml\nsources:\n  - {{ name: tariffs, type: file, path: tariffs.csv, key: [partner] }}\nchannels:\n  - {{ name: out, type: webhook, url: \"{}\" }}\n",
            hook.url("/h")
        )
    };
    std::fs::write(&sqlite_cfg, config("state.db")).unwrap();
    let d = Daemon::start(&sqlite_cfg, &[]);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,rate_pct\nCN,200\n",
    );
    hook.wait_requests(1, Duration::from_secs(10));
    let db_path = dir.path().join("state.db");
    let from = format!("sqlite://{}", db_path.display());
    let db = PgDatabase::create("ha_migrate");
    // Not while the daemon runs.
    let (code, out) = tocsin(&sqlite_cfg, &["migrate", "--from", &from, "--to", &db.url]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("another tocsin"), "{out}");
    d.stop();
    let (code, out) = tocsin(&sqlite_cfg, &["migrate", "--from", &from, "--to", &db.url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ledger 1"), "{out}");
    // Again: the target holds data now.
    let (code, out) = tocsin(&sqlite_cfg, &["migrate", "--from", &from, "--to", &db.url]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("holds data already"), "{out}");

    // The commands on the PostgreSQL store, as the daemons would use it.
    let pg_cfg = dir.path().join("pg.yaml");
    std::fs::write(&pg_cfg, config(&db.url)).unwrap();
    let (code, out) = tocsin(&pg_cfg, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ledger intact: 1 entries"), "{out}");
    let (code, out) = tocsin(&pg_cfg, &["alerts", "--json"]);
    assert_eq!(code, 0, "{out}");
    let alerts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(alerts["firing"][0]["rule"], "cn", "{alerts}");
    let (code, out) = tocsin(
        &pg_cfg,
        &["silence", "add", "cn", "--for", "1h", "--reason", "planned"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = tocsin(&pg_cfg, &["silence", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("planned"), "{out}");
    let (code, out) = tocsin(&pg_cfg, &["check"]);
    assert_eq!(code, 0, "{out}");

    // A daemon on the copy goes on from where the SQLite one stopped: the
    // table is unchanged, so nothing is sent again.
    let before = hook.requests.lock().unwrap().len();
    let d = Daemon::start_until(&pg_cfg, &[], "leading");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.requests.lock().unwrap().len(), before, "{}", d.log());
    d.stop();
}

#[test]
fn a_standby_reloads_on_sighup_and_refuses_a_bad_edit() {
    let db = PgDatabase::create("ha_reload");
    let hook = Receiver::start();
    let p = pair(&db, &hook, "{ renew: 1s, lease: 4s }");
    let _a = Daemon::start_until(&p.a, &[], "leading");
    let b = Daemon::start_until(&p.b, &[], "standing by");
    let rules = p.a.parent().unwrap().parent().unwrap().join("rules.yaml");
    let good = std::fs::read_to_string(&rules).unwrap();

    let before = b.log().len();
    write_by_rename(&rules, &good.replace("above: -100", "above: -50"));
    b.signal("HUP");
    assert!(
        started_after(
            &b,
            before,
            "reloaded: the config and rules are valid",
            Duration::from_secs(10)
        ),
        "{}",
        b.log()
    );
    let before = b.log().len();
    write_by_rename(&rules, &good.replace("when:", "whn:"));
    b.signal("HUP");
    assert!(
        started_after(&b, before, "reload refused", Duration::from_secs(10)),
        "{}",
        b.log()
    );
    assert!(
        b.log()[before..].contains("whn"),
        "the problem is named:\n{}",
        b.log()
    );
    assert_eq!(health(p.port_b), "standby\n");
}
