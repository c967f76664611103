//! The evidence ledger as a compliance team uses it: a daemon delivers,
//! fails and silences alerts from a table and a log; `tocsin audit` then
//! verifies, exports and shows them with the documents behind them, and
//! names the entry when one byte of the store is changed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use tocsin::record::hex;

const T: Duration = Duration::from_secs(15);

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The ledger as `audit export` writes it.
fn export(config: &Path) -> Vec<serde_json::Value> {
    let (code, text) = tocsin(config, &["audit", "export"]);
    assert_eq!(code, 0, "{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Runs SQL on the store, as someone with the file in hand would.
fn sql(store: &Path, statement: &str, params: impl rusqlite::Params) {
    let c = rusqlite::Connection::open(store).unwrap();
    c.execute(statement, params).unwrap();
}

#[test]
fn the_ledger_keeps_what_was_sent_failed_and_silenced_with_its_documents_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let hook = Receiver::start();
    // The webhook's first answer is final: that alert fails.
    hook.answers.lock().unwrap().push_back(400);
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
sources:
  - {{ name: tariffs, type: file, path: tariffs.csv, mode: table, key: [partner] }}
  - {{ name: news, type: file, path: news.jsonl, mode: log }}
channels:
  - {{ name: audit, type: file, path: alerts.jsonl }}
  - {{ name: hook, type: webhook, url: "{}", secret_env: HOOK_SECRET }}
evidence: {{ retention: 30d }}
"#,
            hook.url("/hook")
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        r#"rules:
  - { id: cn-high, source: tariffs, where: { partner: CN }, when: { field: rate_pct, above: 157 }, notify: [audit] }
  - { id: jp-high, source: tariffs, where: { partner: JP }, when: { field: rate_pct, above: 157 }, notify: [audit] }
  - { id: ec, source: news, when: { text: [title], any: ["export control*"] }, notify: [hook] }
"#,
    )
    .unwrap();
    let (csv1, csv2) = (
        "partner,rate_pct\nCN,100\nJP,100\n",
        "partner,rate_pct\nCN,160\nJP,170\n",
    );
    std::fs::write(p.join("tariffs.csv"), csv1).unwrap();
    std::fs::write(p.join("news.jsonl"), "").unwrap();
    let config = p.join("tocsin.yaml");
    // Before the daemon's first run there is no store to audit.
    let (code, text) = tocsin(&config, &["audit", "verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no store at"), "{text}");
    // A misspelt evidence key is named, with the right one.
    let typo = p.join("typo.yaml");
    std::fs::write(
        &typo,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("retention: 30d", "retension: 30d"),
    )
    .unwrap();
    let (code, text) = tocsin(&typo, &["check", "--offline"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("unknown key `retension` in evidence") && text.contains("retention"),
        "{text}"
    );
    let (code, text) = tocsin(
        &config,
        &[
            "silence",
            "add",
            "jp-high",
            "--for",
            "1h",
            "--reason",
            "audit test",
        ],
    );
    assert_eq!(code, 0, "{text}");

    let d = Daemon::start(&config, &[("HOOK_SECRET", "s3cret-for-tests")]);
    write_by_rename(&p.join("tariffs.csv"), csv2);
    let line = "{\"title\": \"New export controls on gallium\", \"id\": \"n1\"}\n";
    append(&p.join("news.jsonl"), line);
    let entries = wait_for(T, || {
        let e = export(&config);
        (e.len() >= 3).then_some(e)
    })
    .unwrap_or_else(|| panic!("3 entries expected: {}", d.log()));
    d.stop();

    // One entry per outcome, numbered from 1, each hash over the one before.
    let outcome = |rule: &str| {
        entries
            .iter()
            .find(|e| e["entry"]["notification"]["rule"] == rule)
            .unwrap_or_else(|| panic!("no entry of {rule}: {entries:?}"))
    };
    assert_eq!(outcome("cn-high")["entry"]["outcome"], "delivered");
    assert_eq!(outcome("jp-high")["entry"]["outcome"], "silenced");
    assert_eq!(outcome("ec")["entry"]["outcome"], "failed");
    assert!(
        (outcome("ec")["entry"]["detail"].as_str().unwrap()).contains("400"),
        "{entries:?}"
    );
    let mut prev = [0u8; 32];
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        // The entry as written is canonical (keys sorted, no spaces): read
        // and written again, it is the same bytes, which the hash covers.
        let bytes = serde_json::to_vec(&e["entry"]).unwrap();
        let mut h = Sha256::new();
        h.update(prev);
        h.update(&bytes);
        let hash = h.finalize();
        assert_eq!(e["hash"], hex(&hash), "entry {}", i + 1);
        prev.copy_from_slice(&hash);
    }
    // The documents: the table version and the log line, byte for byte.
    let cn = &outcome("cn-high")["entry"];
    assert_eq!(cn["document"], sha256(csv2.as_bytes()));
    assert_eq!(
        cn["notification"]["evidence"]["document_sha256"],
        sha256(csv2.as_bytes())
    );
    let ec = &outcome("ec")["entry"];
    assert_eq!(ec["document"], sha256(line.trim_end().as_bytes()));

    let (code, text) = tocsin(&config, &["audit", "verify"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("ledger intact: 3 entries, 2 documents checked"),
        "{text}"
    );
    let id = cn["notification"]["id"].as_str().unwrap();
    let (code, text) = tocsin(&config, &["audit", "show", id]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"outcome\": \"delivered\""), "{text}");
    assert!(
        text.contains(&format!(
            "document {} ({} bytes",
            sha256(csv2.as_bytes()),
            csv2.len()
        )),
        "{text}"
    );
    assert!(text.contains(csv2), "the table as read: {text}");
    let (code, text) = tocsin(&config, &["audit", "show", "nope"]);
    assert_eq!(code, 1);
    assert!(text.contains("no ledger entry `nope`"), "{text}");

    let (code, text) = tocsin(&config, &["audit", "export", "--format", "csv"]);
    assert_eq!(code, 0, "{text}");
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header = rows.headers().unwrap().clone();
    assert_eq!(&header[0], "seq");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let cn_row = rows.iter().find(|r| &r[col("rule")] == "cn-high").unwrap();
    assert_eq!(&cn_row[col("outcome")], "delivered");
    assert_eq!(&cn_row[col("document_sha256")], sha256(csv2.as_bytes()));
    assert!(
        cn_row[col("location")].ends_with("tariffs.csv:2"),
        "{cn_row:?}"
    );
    let (code, text) = tocsin(&config, &["audit", "export", "--since", "1h"]);
    assert_eq!((code, text.lines().count()), (0, 3), "{text}");

    // One byte of an entry: verify names that entry.
    let store = p.join("state.db");
    let seq = cn["seq"].as_i64().unwrap();
    sql(
        &store,
        "UPDATE ledger SET entry = replace(entry, '\"160\"', '\"150\"') WHERE seq = ?1",
        [seq],
    );
    let (code, text) = tocsin(&config, &["audit", "verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "the ledger is broken from entry {seq}: entry {seq} does not match its hash"
        )),
        "{text}"
    );
    sql(
        &store,
        "UPDATE ledger SET entry = replace(entry, '\"150\"', '\"160\"') WHERE seq = ?1",
        [seq],
    );
    assert_eq!(tocsin(&config, &["audit", "verify"]).0, 0);

    // One byte of a kept document: verify names the entry behind it.
    let c = rusqlite::Connection::open(&store).unwrap();
    let sha = ec["document"].as_str().unwrap();
    let mut data: Vec<u8> = c
        .query_row("SELECT data FROM documents WHERE sha256 = ?1", [sha], |r| {
            r.get(0)
        })
        .unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x20;
    c.execute(
        "UPDATE documents SET data = ?2 WHERE sha256 = ?1",
        rusqlite::params![sha, data],
    )
    .unwrap();
    drop(c);
    let seq = ec["seq"].as_i64().unwrap();
    let (code, text) = tocsin(&config, &["audit", "verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "the ledger is broken from entry {seq}: the document of entry {seq} ({sha}) was changed"
        )),
        "{text}"
    );
}
