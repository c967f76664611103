//! Polled sources against a real HTTP server on loopback: new feed items
//! fire once; the same feed polled again, a restart, or an item whose text
//! changes under the same id send nothing; 304s are not parsed; a failing
//! feed raises one `source-unhealthy` alert and resolves it; size limits,
//! timeouts and redirect loops end a poll with a clear log line.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, FeedServer, append, read_jsonl, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

fn rss(items: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Trade news</title><link>https://news.example.org/</link><description>d</description>",
    );
    for (guid, title) in items {
        s.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>/n/{guid}</link></item>"
        ));
    }
    s + "</channel></rss>"
}

fn setup(dir: &Path, sources: &str, rules: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    let cfg = dir.join("tocsin.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state: state.db\nrules: rules.yaml\nsources:\n{sources}\nchannels:\n  - {{ name: audit, type: file, path: alerts.jsonl }}\nhealth: {{ notify: [audit] }}\n"
        ),
    )
    .unwrap();
    cfg
}

const EXPORT_RULE: &str = r#"
rules:
  - id: export-controls
    title: Statement on export controls
    source: news
    when: { text: [title, summary], any: ["export control*"] }
    notify: [audit]
"#;

fn alerts(dir: &Path, rule: &str) -> Vec<Value> {
    read_jsonl(&dir.join("alerts.jsonl"))
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
}

#[test]
fn new_items_fire_once_across_polls_edits_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start();
    {
        let mut s = server.served.lock().unwrap();
        s.content_type = "application/rss+xml".into();
        s.set(&rss(&[("a", "Export controls on gallium")]));
    }
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: news, type: feed, url: \"{}\", every: 1s, fields: {{ country: JP }} }}",
            server.url("/feed")
        ),
        EXPORT_RULE,
    );
    let env = [("RUST_LOG", "info,tocsin=debug")];
    let d = Daemon::start(&cfg, &env);
    // The first poll records what is there and alerts on none.
    d.wait_log("first poll of this feed", T);
    server.wait_hits(2, T);
    assert!(alerts(dir.path(), "export-controls").is_empty());

    // A new matching item and a new other one: one alert.
    let version = rss(&[
        ("c", "Trade fair calendar"),
        ("b", "New export controls on rare earths"),
        ("a", "Export controls on gallium"),
    ]);
    server.served.lock().unwrap().set(&version);
    let etag = server.served.lock().unwrap().etag.clone();
    let got = wait_for(T, || {
        let a = alerts(dir.path(), "export-controls");
        (!a.is_empty()).then_some(a)
    })
    .expect("an alert for the new item");
    assert_eq!(got[0]["key"], "b");
    assert_eq!(got[0]["fields"]["country"], "JP");
    // Relative links resolve against the feed's URL; the payload's `link`
    // is the item's.
    assert_eq!(got[0]["link"], server.url("/n/b"));
    // Evidence: the feed's URL, the server's answer and the hash of the
    // document as served.
    let e = &got[0]["evidence"];
    assert_eq!(e["url"], server.url("/feed"));
    assert_eq!(e["http"]["status"], 200);
    assert_eq!(e["http"]["etag"].as_str(), etag.as_deref());
    assert_eq!(
        e["document_sha256"],
        tocsin::record::sha256_hex(version.as_bytes())
    );
    assert!(e["location"].is_null() && e["read_at"].is_string(), "{e}");

    // Unchanged: answered 304, counted and not parsed.
    server.wait_hits(3, T);
    let nm = server.served.lock().unwrap().not_modified;
    assert!(nm >= 2, "304s answered: {nm}");
    d.wait_log("not modified; nothing to parse", T);
    // Same ids with new text: nothing.
    server.served.lock().unwrap().set(&rss(&[
        ("c", "Trade fair calendar"),
        ("b", "New export controls on rare earths (corrected)"),
        ("a", "Export controls on gallium, updated"),
    ]));
    server.wait_hits(3, T);
    let log = d.stop();
    assert_eq!(alerts(dir.path(), "export-controls").len(), 1, "{log}");

    // After a restart, old items send nothing; a new one fires.
    let d = Daemon::start(&cfg, &env);
    server.wait_hits(3, T);
    assert_eq!(alerts(dir.path(), "export-controls").len(), 1);
    server.served.lock().unwrap().set(&rss(&[
        ("d", "Export controls review"),
        ("c", "Trade fair calendar"),
        ("b", "New export controls on rare earths (corrected)"),
        ("a", "Export controls on gallium, updated"),
    ]));
    wait_for(T, || {
        (alerts(dir.path(), "export-controls").len() == 2).then_some(())
    })
    .expect("the item after the restart");
    server.wait_hits(2, T);
    let log = d.stop();
    let keys: Vec<Value> = alerts(dir.path(), "export-controls")
        .iter()
        .map(|a| a["key"].clone())
        .collect();
    assert_eq!(keys, ["b", "d"], "{log}");
    assert!(!log.contains("first poll of this feed"), "{log}");
}

#[test]
fn backfill_alerts_on_recent_items_of_the_first_poll() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start();
    let now = chrono::Utc::now();
    let old = (now - chrono::Duration::days(30)).to_rfc2822();
    let recent = (now - chrono::Duration::hours(2)).to_rfc2822();
    server.served.lock().unwrap().set(&format!(
        "<rss version=\"2.0\"><channel><title>t</title>\
         <item><guid>old</guid><title>Export controls, last month</title><pubDate>{old}</pubDate></item>\
         <item><guid>new</guid><title>Export controls, today</title><pubDate>{recent}</pubDate></item>\
         </channel></rss>"
    ));
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: news, type: feed, url: \"{}\", every: 1h, backfill: 1d }}",
            server.url("/feed")
        ),
        EXPORT_RULE,
    );
    let d = Daemon::start(&cfg, &[]);
    let got = wait_for(T, || {
        let a = alerts(dir.path(), "export-controls");
        (!a.is_empty()).then_some(a)
    })
    .expect("the recent item");
    std::thread::sleep(Duration::from_millis(500));
    d.stop();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["key"], "new");
}

#[test]
fn a_failing_feed_raises_one_unhealthy_alert_and_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start();
    {
        let mut s = server.served.lock().unwrap();
        s.set(&rss(&[("a", "Trade fair")]));
        s.fail.extend([500, 500, 500, 500]);
    }
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: news, type: feed, url: \"{}\", every: 1s }}",
            server.url("/feed")
        ),
        EXPORT_RULE,
    );
    let d = Daemon::start(&cfg, &[]);
    let got = wait_for(T, || {
        let a = alerts(dir.path(), "source-unhealthy");
        (a.len() >= 2).then_some(a)
    })
    .expect("firing, then resolved");
    server.wait_hits(2, T);
    let log = d.stop();
    let got_now = alerts(dir.path(), "source-unhealthy");
    assert_eq!(got_now.len(), 2, "{log}");
    assert_eq!(got[0]["state"], "firing");
    assert_eq!(got[0]["key"], "news");
    assert!(
        got[0]["summary"].as_str().unwrap().contains("3 failures"),
        "{}",
        got[0]
    );
    assert!(got[0]["fields"]["error"].as_str().unwrap().contains("500"));
    assert_eq!(got[1]["state"], "resolved");
    assert!(log.contains("the server answered 500"), "{log}");
    assert!(log.contains("source recovered"), "{log}");
}

#[test]
fn size_limits_timeouts_and_redirect_loops_end_a_poll_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start();
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: big, type: feed, url: \"{}\", every: 1h, max_body: 1MiB }}\n  - {{ name: slow, type: feed, url: \"{}\", every: 1h, timeout: 1s }}\n  - {{ name: loop, type: feed, url: \"{}\", every: 1h }}",
            server.url("/big"),
            server.url("/hang"),
            server.url("/loop")
        ),
        "rules: []\n",
    );
    let d = Daemon::start(&cfg, &[]);
    d.wait_log("larger than the limit of 1048576 bytes and was cut off", T);
    d.wait_log("(timeout)", T);
    d.wait_log("stopped following redirects", T);
    let log = d.stop();
    for name in ["big", "slow", "loop"] {
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains(&format!("source={name}"))),
            "{name}: {log}"
        );
    }
}

#[test]
fn an_http_json_table_fires_and_resolves_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start();
    let doc = |cn: u32| {
        format!(
            r#"{{"data": {{"rates": [{{"partner": "CN", "rate_pct": {cn}}}, {{"partner": "JP", "rate_pct": 10}}]}}}}"#
        )
    };
    {
        let mut s = server.served.lock().unwrap();
        s.content_type = "application/json".into();
        s.set(&doc(150));
    }
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: rates, type: http, url: \"{}\", every: 1s, key: [partner], items: /data/rates }}",
            server.url("/feed")
        ),
        "rules:\n  - { id: cn-high, title: CN rate high, source: rates, where: { partner: CN }, when: { field: rate_pct, above: 157 }, notify: [audit] }\n",
    );
    let d = Daemon::start(&cfg, &[]);
    server.wait_hits(2, T);
    server.served.lock().unwrap().set(&doc(160));
    wait_for(T, || {
        (alerts(dir.path(), "cn-high").len() == 1).then_some(())
    })
    .expect("firing");
    server.served.lock().unwrap().set(&doc(150));
    wait_for(T, || {
        (alerts(dir.path(), "cn-high").len() == 2).then_some(())
    })
    .expect("resolved");
    d.stop();
    let got = alerts(dir.path(), "cn-high");
    assert_eq!(got[0]["state"], "firing");
    assert_eq!(got[0]["key"], "CN");
    let e = &got[0]["evidence"];
    assert_eq!(e["url"], server.url("/feed"));
    assert_eq!(e["http"]["status"], 200);
    assert_eq!(
        e["document_sha256"],
        tocsin::record::sha256_hex(doc(160).as_bytes())
    );
    assert!(e["rules_sha256"].is_string(), "{e}");
    assert_eq!(got[0]["prev"]["rate_pct"], 150);
    assert_eq!(got[1]["state"], "resolved");
}

#[test]
fn a_quiet_feed_fires_absent_and_a_new_item_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start();
    server
        .served
        .lock()
        .unwrap()
        .set(&rss(&[("a", "Trade fair")]));
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: news, type: feed, url: \"{}\", every: 1s }}",
            server.url("/feed")
        ),
        "rules:\n  - { id: news-quiet, title: No news, source: news, when: { absent: 2s }, notify: [audit] }\n",
    );
    let d = Daemon::start(&cfg, &[]);
    let got = wait_for(T, || {
        let a = alerts(dir.path(), "news-quiet");
        (!a.is_empty()).then_some(a)
    })
    .expect("firing after 2s without items");
    assert_eq!(got[0]["state"], "firing");
    assert_eq!(got[0]["key"], "news");
    server
        .served
        .lock()
        .unwrap()
        .set(&rss(&[("b", "Export news"), ("a", "Trade fair")]));
    let got = wait_for(T, || {
        let a = alerts(dir.path(), "news-quiet");
        (a.len() >= 2).then_some(a)
    })
    .expect("resolved by the new item");
    d.stop();
    assert_eq!(got[1]["state"], "resolved");
    assert_eq!(got[1]["fields"]["id"], "b");
}

/// An RSS 0.92 document without guids, from `(title, link, description)`.
fn rss_without_guids(items: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?>\n<rss version=\"0.92\">\n<channel>\n<title>Customs notices</title>\n<link>https://customs.example.org/</link>\n<description>Notices</description>\n",
    );
    for (title, link, description) in items {
        s.push_str("<item>");
        for (k, v) in [
            ("title", title),
            ("link", link),
            ("description", description),
        ] {
            if !v.is_empty() {
                s.push_str(&format!("<{k}>{v}</{k}>"));
            }
        }
        s.push_str("</item>\n");
    }
    s + "</channel>\n</rss>\n"
}

/// `v` in a set order.
fn sorted(mut v: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    v.sort_by_key(|(t, s)| format!("{t}{s}"));
    v
}

/// What fired, as (title, summary) pairs in the order sent.
fn fired(dir: &Path) -> Vec<(Value, Value)> {
    alerts(dir, "export-controls")
        .iter()
        .map(|a| (a["fields"]["title"].clone(), a["fields"]["summary"].clone()))
        .collect()
}

#[test]
fn items_without_guid_keep_their_ids_across_the_upgrade() {
    // A store an earlier version wrote after one poll of `feed.xml`: eight
    // items without guids known under five ids (two share a link, three
    // have only a description).
    let fixture = Path::new("tests/fixtures/store-earlier");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join("state.db"), dir.path().join("state.db")).unwrap();
    let server = FeedServer::start();
    let before = std::fs::read_to_string(fixture.join("feed.xml")).unwrap();
    {
        let mut s = server.served.lock().unwrap();
        s.content_type = "application/rss+xml".into();
        s.set(&before);
    }
    // The same feed, now served by this test's server.
    rusqlite::Connection::open(dir.path().join("state.db"))
        .unwrap()
        .execute(
            "UPDATE poll_state SET url = ?1, etag = NULL, last_modified = NULL",
            [server.url("/feed")],
        )
        .unwrap();
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: notices, type: feed, url: \"{}\", every: 1s }}",
            server.url("/feed")
        ),
        &EXPORT_RULE.replace("source: news", "source: notices"),
    );
    let d = Daemon::start(&cfg, &[("RUST_LOG", "info")]);
    server.wait_hits(3, T);
    let log = d.stop();
    // No alert storm: every item is known, under its new id.
    assert!(fired(dir.path()).is_empty(), "{log}");
    assert!(!log.contains("first poll of this feed"), "{log}");

    // New items of each kind: each alerts once, old ones do not.
    const NOTICE_C: (&str, &str, &str) = (
        "Export controls: notice C",
        "https://customs.example.org/notices/c",
        "",
    );
    const DIGEST_3: (&str, &str, &str) = (
        "Export controls: weekly digest 3",
        "https://customs.example.org/news",
        "",
    );
    const NOTICE_4: (&str, &str, &str) = ("", "", "Export controls notice 4: antimony");
    let items = |extra: &[(&'static str, &'static str, &'static str)]| {
        let mut all = extra.to_vec();
        all.extend([
            (
                "Export controls: notice A",
                "https://customs.example.org/notices/a",
                "",
            ),
            (
                "Export controls: notice B",
                "https://customs.example.org/notices/b",
                "",
            ),
            (
                "Export controls: weekly digest 1",
                "https://customs.example.org/news",
                "",
            ),
            (
                "Export controls: weekly digest 2",
                "https://customs.example.org/news",
                "",
            ),
            ("", "", "Export controls notice 1: gallium"),
            ("", "", "Export controls notice 2: germanium"),
            ("", "", "Export controls notice 3: graphite"),
            ("Export controls: title only", "", ""),
        ]);
        rss_without_guids(&all)
    };
    // The fixture is this document.
    assert_eq!(items(&[]), before);
    let d = Daemon::start(&cfg, &[]);
    server.wait_hits(2, T);
    server
        .served
        .lock()
        .unwrap()
        .set(&items(&[NOTICE_C, DIGEST_3, NOTICE_4]));
    wait_for(T, || (fired(dir.path()).len() >= 3).then_some(())).expect("three new items");
    server.wait_hits(2, T);
    let log = d.stop();
    assert_eq!(
        sorted(fired(dir.path())),
        sorted(vec![
            (Value::Null, "Export controls notice 4: antimony".into()),
            ("Export controls: notice C".into(), Value::Null),
            ("Export controls: weekly digest 3".into(), Value::Null),
        ]),
        "{log}"
    );

    // Across a restart: the same document sends nothing, two more items
    // without guid (one sharing the link, one with only a description) two
    // alerts.
    let d = Daemon::start(&cfg, &[]);
    server.wait_hits(2, T);
    assert_eq!(fired(dir.path()).len(), 3);
    server.served.lock().unwrap().set(&items(&[
        (
            "Export controls: weekly digest 4",
            "https://customs.example.org/news",
            "",
        ),
        ("", "", "Export controls notice 5: tungsten"),
        NOTICE_C,
        DIGEST_3,
        NOTICE_4,
    ]));
    wait_for(T, || (fired(dir.path()).len() >= 5).then_some(())).expect("two new items");
    server.wait_hits(2, T);
    let log = d.stop();
    let got = fired(dir.path());
    assert_eq!(got.len(), 5, "{log}");
    assert_eq!(
        sorted(got[3..].to_vec()),
        sorted(vec![
            (Value::Null, "Export controls notice 5: tungsten".into()),
            ("Export controls: weekly digest 4".into(), Value::Null),
        ]),
        "{log}"
    );
}

#[test]
fn a_panic_in_the_feed_reader_fails_the_poll_and_polling_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start();
    server
        .served
        .lock()
        .unwrap()
        .set(&rss(&[("a", "Trade fair")]));
    let cfg = setup(
        dir.path(),
        &format!(
            "  - {{ name: news, type: feed, url: \"{}\", every: 1s }}",
            server.url("/feed")
        ),
        EXPORT_RULE,
    );
    // The reader (in debug builds) panics on a document with this text, as
    // a dependency's bug would.
    let d = Daemon::start(&cfg, &[("TOCSIN_FEED_PANIC_ON", "poison-pill")]);
    server.wait_hits(1, T);
    server
        .served
        .lock()
        .unwrap()
        .set(&rss(&[("p", "poison-pill"), ("a", "Trade fair")]));
    let unhealthy = wait_for(T, || {
        let a = alerts(dir.path(), "source-unhealthy");
        (!a.is_empty()).then_some(a)
    })
    .expect("the source unhealthy after three failed polls");
    assert!(
        unhealthy[0]["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("the feed reader failed on this document"),
        "{}",
        unhealthy[0]
    );
    // Polling went on: the next document is read, the source recovers and
    // its new item alerts.
    server
        .served
        .lock()
        .unwrap()
        .set(&rss(&[("b", "New export controls"), ("a", "Trade fair")]));
    wait_for(T, || {
        (alerts(dir.path(), "source-unhealthy").len() == 2
            && alerts(dir.path(), "export-controls").len() == 1)
            .then_some(())
    })
    .expect("recovered, and the new item alerted");
    let log = d.stop();
    assert!(log.contains("injected by TOCSIN_FEED_PANIC_ON"), "{log}");
    assert_eq!(
        alerts(dir.path(), "source-unhealthy")[1]["state"],
        "resolved"
    );
    assert_eq!(alerts(dir.path(), "export-controls")[0]["key"], "b");
}

#[test]
fn the_evidence_of_table_log_feed_and_http_alerts_says_where_what_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let (d0, feed_server, rates_server) = (dir.path(), FeedServer::start(), FeedServer::start());
    // Dated, so that the first poll's backfill takes the items.
    let feed_doc = rss(&[("x", "Trade fair"), ("y", "New EXPORT-CONTROLS on gallium")]).replace(
        "</title><link>",
        "</title><pubDate>Sat, 05 Dec 2026 10:00:00 GMT</pubDate><link>",
    );
    let rates_doc = r#"{"rates": [{"partner": "CN", "rate_pct": 160}]}"#;
    let rates_before = r#"{"rates": [{"partner": "CN", "rate_pct": 150}]}"#;
    for (server, ct, body) in [
        (&feed_server, "application/rss+xml", feed_doc.as_str()),
        (&rates_server, "application/json", rates_before),
    ] {
        let mut s = server.served.lock().unwrap();
        s.content_type = ct.into();
        s.set(body);
    }
    let feed_etag = feed_server.served.lock().unwrap().etag.clone();
    let table = "partner,rate_pct\nJP,100\nCN,160\n";
    std::fs::write(d0.join("tariffs.csv"), table).unwrap();
    let line = r#"{"title": "Minister on export controls, HS 8505"}"#;
    std::fs::write(d0.join("wire.jsonl"), "").unwrap();
    let cfg = setup(
        d0,
        &format!(
            "  - {{ name: tariffs, type: file, path: tariffs.csv, key: [partner] }}
  - {{ name: wire, type: file, path: wire.jsonl, mode: log }}
  - {{ name: news, type: feed, url: \"{}\", every: 1s, backfill: 100000d }}
  - {{ name: rates, type: http, url: \"{}\", every: 1s, key: [partner], items: /rates }}",
            feed_server.url("/feed"),
            rates_server.url("/feed")
        ),
        "rules:
  - { id: table, source: tariffs, when: { field: rate_pct, above: 157 }, notify: [audit] }
  - { id: log, source: wire, when: { text: [title], regex: \"HS [0-9]{4}\" }, notify: [audit] }
  - { id: feed, source: news, when: { text: [title], any: [\"export control*\"] }, notify: [audit] }
  - { id: http, source: rates, when: { field: rate_pct, above: 157 }, notify: [audit] }
",
    );
    let d = Daemon::start(&cfg, &[]);
    d.wait_log("tocsin started", T);
    append(
        &d0.join("wire.jsonl"),
        &format!("{{\"title\": \"weather\"}}\n{line}\n"),
    );
    // The http table's first version is its baseline; the next one alerts.
    rates_server.wait_hits(2, T);
    rates_server.served.lock().unwrap().set(rates_doc);
    let rates_etag = rates_server.served.lock().unwrap().etag.clone();
    let rules = ["table", "log", "feed", "http"];
    let all = wait_for(T, || {
        let a = read_jsonl(&d0.join("alerts.jsonl"));
        rules
            .iter()
            .all(|r| a.iter().any(|x| x["rule"] == *r))
            .then_some(a)
    })
    .unwrap_or_else(|| {
        panic!(
            "an alert of each rule, got {:?}\n{}",
            read_jsonl(&d0.join("alerts.jsonl")),
            d.log()
        )
    });
    d.stop();
    let of = |rule: &str| -> Value {
        let a = all
            .iter()
            .find(|a| a["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} alert"));
        a["evidence"].clone()
    };
    let sha = |b: &[u8]| Value::from(tocsin::record::sha256_hex(b));
    let rules_sha = sha(&[
        d0.join("rules.yaml").to_string_lossy().as_bytes(),
        &[0],
        std::fs::read(d0.join("rules.yaml")).unwrap().as_slice(),
        &[0],
    ]
    .concat());
    let http = |etag: &Option<String>| json!({"status": 200, "etag": etag, "last_modified": null});
    let expect = [
        (
            "table",
            json!({"location": format!("{}:3", d0.join("tariffs.csv").display()), "url": null,
                   "document_sha256": sha(table.as_bytes()), "http": null, "matched": []}),
        ),
        (
            "log",
            json!({"location": format!("{}:2", d0.join("wire.jsonl").display()), "url": null,
                   "document_sha256": sha(line.as_bytes()), "http": null,
                   "matched": [{"field": "title", "regex": "HS [0-9]{4}", "text": "HS 8505"}]}),
        ),
        (
            "feed",
            json!({"location": null, "url": feed_server.url("/feed"),
                   "document_sha256": sha(feed_doc.as_bytes()), "http": http(&feed_etag),
                   "matched": [{"field": "title", "phrase": "export control*", "text": "EXPORT-CONTROLS"}]}),
        ),
        (
            "http",
            json!({"location": null, "url": rates_server.url("/feed"),
                   "document_sha256": sha(rates_doc.as_bytes()), "http": http(&rates_etag),
                   "matched": []}),
        ),
    ];
    for (rule, want) in expect {
        let mut e = of(rule);
        let read_at = e["read_at"].take();
        let at = chrono::DateTime::parse_from_rfc3339(read_at.as_str().unwrap_or_default())
            .unwrap_or_else(|_| panic!("{rule}: read_at {read_at}"));
        assert!(
            (chrono::Utc::now() - at.to_utc()).num_seconds() < 60,
            "{rule}: {at}"
        );
        assert_eq!(e["rules_sha256"].take(), rules_sha, "{rule}");
        let obj = e.as_object_mut().unwrap();
        for key in ["read_at", "rules_sha256"] {
            obj.remove(key);
        }
        assert_eq!(e, want, "{rule}");
    }
}
