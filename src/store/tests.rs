//! The store on both backends: a batch committed whole and read back after
//! reopening, the outbox's order and outcomes, a clear error for an unusable
//! path; and the notification other stores' tests queue.

use super::*;
use crate::notification::AlertState;
use crate::rules::Severity;
use testing::Backend;

pub(super) fn note(id: &str, channels: &[&str]) -> Notification {
    Notification {
        id: id.into(),
        rule: "r".into(),
        title: "t".into(),
        severity: Severity::Critical,
        state: AlertState::Firing,
        key: "k".into(),
        summary: "s".into(),
        body: "b".into(),
        source: "src".into(),
        labels: Default::default(),
        fields: serde_json::from_str(r#"{"rate_pct": "160"}"#).unwrap(),
        prev: None,
        link: None,
        started_at: Utc::now(),
        at: Utc::now(),
        evidence: Default::default(),
        notify: channels
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .into(),
    }
}

#[test]
fn a_batch_commits_whole_and_survives_reopening() {
    for b in Backend::all() {
        commits_whole(&b);
    }
}

fn commits_whole(b: &Backend) {
    let now = Utc::now();
    {
        let mut s = b.open();
        let st = KeyState {
            firing: true,
            last_sent: Some(now.into()),
            window: crate::engine::Times::from(vec![now]),
            ..KeyState::inactive(now)
        };
        let rows: Row = serde_json::from_str(r#"{"partner": "CN"}"#).unwrap();
        s.commit(
            &[("r".into(), "k".into(), Some(st))],
            &[
                Checkpoint::Table {
                    source: "t".into(),
                    file: "/d/t.csv".into(),
                    upsert: vec![("CN".into(), rows)],
                    delete: vec![],
                },
                Checkpoint::Log {
                    source: "l".into(),
                    file: "/d/l.jsonl".into(),
                    cursor: LogCursor {
                        dev: 1,
                        ino: 2,
                        offset: 30,
                        line: 3,
                        header: Some(vec!["a".into()]),
                        count: 0,
                        prefix: Some((30, [7; 32])),
                    },
                },
            ],
            &[note("n1", &["mail", "hook"]), note("n2", &["mail"])],
            &[],
            now,
        )
        .unwrap();
    }
    let mut s = b.open();
    let states = s.states().unwrap();
    assert_eq!(states.len(), 1);
    assert!(states[0].2.firing);
    let t = s.checkpoints("t").unwrap();
    assert!(
        matches!(&t[Path::new("/d/t.csv")], FileCheckpoint::Table(rows) if rows.get("CN").is_some_and(|r| r["partner"] == "CN"))
    );
    let l = s.checkpoints("l").unwrap();
    assert!(
        matches!(&l[Path::new("/d/l.jsonl")], FileCheckpoint::Log(c) if c.offset == 30 && c.header.as_deref() == Some(&["a".to_string()][..]) && c.prefix == Some((30, [7; 32])))
    );
    assert_eq!(s.outbox_counts().unwrap(), (3, 0));
    let due = |s: &Store, ch: &str| match s.next_due(ch, now).unwrap() {
        Next::Ready(p) => Some(*p),
        _ => None,
    };
    let p = due(&s, "mail").unwrap();
    assert_eq!(p.notification.id, "n1", "in creation order");
    s.delivered(&p, "250 OK", now).unwrap();
    assert_eq!(due(&s, "mail").unwrap().notification.id, "n2");
    let h = due(&s, "hook").unwrap();
    s.failed(&h, "HTTP 400", now).unwrap();
    assert!(matches!(s.next_due("hook", now).unwrap(), Next::Empty));
    assert_eq!(s.outbox_counts().unwrap(), (1, 1));
    s.commit(&[("r".into(), "k".into(), None)], &[], &[], &[], now)
        .unwrap();
    assert!(s.states().unwrap().is_empty());
}

#[test]
fn due_gives_the_first_of_each_key_and_record_takes_mixed_outcomes_at_once() {
    for b in Backend::all() {
        due_and_record(&mut b.open());
    }
}

fn due_and_record(s: &mut Store) {
    let now = Utc::now();
    let mut notes = vec![note("a1", &["hook"]), note("a2", &["hook"])];
    for (id, key) in [("b1", "kb"), ("c1", "kc"), ("d1", "kd")] {
        let mut n = note(id, &["hook"]);
        n.key = key.into();
        notes.push(n);
    }
    s.commit(&[], &[], &notes, &[], now).unwrap();
    let ids = |v: &[Pending]| {
        v.iter()
            .map(|p| p.notification.id.clone())
            .collect::<Vec<_>>()
    };
    // a2 waits behind a1, its key's first; the limit holds.
    assert_eq!(
        ids(&s.due("hook", now, 10).unwrap()),
        ["a1", "b1", "c1", "d1"]
    );
    assert_eq!(ids(&s.due("hook", now, 2).unwrap()), ["a1", "b1"]);
    let due = s.due("hook", now, 10).unwrap();
    let later = now + chrono::Duration::minutes(5);
    s.record([
        (&due[0], &Outcome::Delivered("200".into(), now)),
        (&due[1], &Outcome::Retry("503".into(), later)),
        (&due[2], &Outcome::Failed("400".into(), now)),
    ])
    .unwrap();
    // a2 is its key's first now; b1 waits for its retry; c1 failed.
    assert_eq!(ids(&s.due("hook", now, 10).unwrap()), ["a2", "d1"]);
    assert_eq!(ids(&s.due("hook", later, 10).unwrap()), ["a2", "b1", "d1"]);
    assert_eq!(s.outbox_counts().unwrap(), (3, 1));
    let outcomes: Vec<String> = s
        .history(now - chrono::Duration::hours(1))
        .unwrap()
        .into_iter()
        .map(|h| h.outcome)
        .collect();
    assert_eq!(outcomes, ["delivered", "failed"]);
    assert_eq!(s.ledger(None).unwrap().len(), 2);
}

#[test]
fn an_unusable_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let e = Store::open(dir.path().join("file/state.db")).err().unwrap();
    assert!(e.to_string().contains("file/state.db"), "{e}");
}
