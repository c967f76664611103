//! `tocsin audit verify|export|show`: the evidence ledger, read from the
//! store (see [`crate::store`] for how it is kept). Read-only: it works
//! beside a running daemon.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::cli::{AuditCommand, AuditFormat};
use crate::store::Store;

pub fn run(config_path: &Path, cmd: &AuditCommand, out: &mut impl Write) -> anyhow::Result<()> {
    let config = crate::config::Config::load_or_explain(config_path)?;
    if !config.state.exists() {
        anyhow::bail!(
            "no store at {} yet: the daemon creates it on its first run",
            config.state.display()
        );
    }
    let store = Store::open(&config.state)?;
    match cmd {
        AuditCommand::Verify => verify(&store, out),
        AuditCommand::Export { since, format } => {
            let since = since
                .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() - d))
                .transpose()?;
            match format {
                AuditFormat::Jsonl => jsonl(&store, since, out),
                AuditFormat::Csv => csv(&store, since, out),
            }
        }
        AuditCommand::Show { id } => show(&store, id, out),
    }
}

fn verify(store: &Store, out: &mut impl Write) -> anyhow::Result<()> {
    let v = store.verify_ledger()?;
    let head = v.head.as_deref().unwrap_or("none (no entries yet)");
    if v.problems.is_empty() {
        writeln!(
            out,
            "ledger intact: {} entries, {} documents checked; last hash {head}",
            v.entries, v.documents
        )?;
        return Ok(());
    }
    for (_, problem) in &v.problems {
        writeln!(out, "{problem}")?;
    }
    writeln!(
        out,
        "{} entries, {} documents checked; last hash {head}",
        v.entries, v.documents
    )?;
    let (seq, first) = &v.problems[0];
    anyhow::bail!(
        "the ledger is broken from entry {seq}: {first} ({} problem{} in all)",
        v.problems.len(),
        if v.problems.len() == 1 { "" } else { "s" }
    )
}

/// One JSON object per line: the entry exactly as its hash covers it,
/// with its number and hash.
fn jsonl(store: &Store, since: Option<DateTime<Utc>>, out: &mut impl Write) -> anyhow::Result<()> {
    store.each_entry(since, |e| {
        // The entry's own bytes, not parsed and written again: they are
        // what the hash covers.
        writeln!(
            out,
            r#"{{"seq":{},"hash":"{}","entry":{}}}"#,
            e.seq, e.hash, e.entry
        )
    })?;
    Ok(())
}

/// A spreadsheet's view: one row per entry, the notification's essentials.
fn csv(store: &Store, since: Option<DateTime<Utc>>, out: &mut impl Write) -> anyhow::Result<()> {
    let mut w = ::csv::Writer::from_writer(out);
    w.write_record([
        "seq",
        "at",
        "outcome",
        "channel",
        "rule",
        "key",
        "state",
        "summary",
        "notification_id",
        "location",
        "url",
        "document_sha256",
        "detail",
        "hash",
    ])?;
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    store.each_entry(since, |e| {
        let v = e.value();
        let n = &v["notification"];
        let document = match &v["documents"] {
            Value::Null => text(&n["evidence"]["document_sha256"]),
            list => text(list),
        };
        w.write_record([
            e.seq.to_string(),
            text(&v["at"]),
            text(&v["outcome"]),
            text(&v["channel"]),
            text(&n["rule"]),
            text(&n["key"]),
            text(&n["state"]),
            text(&n["summary"]),
            text(&n["id"]),
            text(&n["evidence"]["location"]),
            text(&n["evidence"]["url"]),
            document,
            text(&v["detail"]),
            e.hash,
        ])
        .map_err(std::io::Error::from)
    })?;
    w.flush()?;
    Ok(())
}

fn show(store: &Store, id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let entries = store.ledger_entries_of(id)?;
    if entries.is_empty() {
        anyhow::bail!(
            "no ledger entry `{id}`: give an entry's number or a notification's id (both in `tocsin audit export`)"
        );
    }
    let mut shown: Vec<String> = Vec::new();
    for e in &entries {
        let v = e.value();
        writeln!(out, "entry {} (hash {})", e.seq, e.hash)?;
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        let sha = v["document"]
            .as_str()
            .or(v["notification"]["evidence"]["document_sha256"].as_str());
        let Some(sha) = sha.filter(|s| !shown.iter().any(|k| k == s)) else {
            continue;
        };
        shown.push(sha.to_string());
        match store.document(sha)? {
            Some(doc) => {
                writeln!(
                    out,
                    "document {sha} ({} bytes, kept since {}):",
                    doc.bytes.len(),
                    doc.kept_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )?;
                out.write_all(&doc.bytes)?;
                if !doc.bytes.ends_with(b"\n") {
                    writeln!(out)?;
                }
            }
            None => writeln!(
                out,
                "document {sha}: not kept (dropped after `evidence.retention`, or read before the store kept documents)"
            )?,
        }
    }
    Ok(())
}
