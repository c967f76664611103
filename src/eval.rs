//! `tocsin eval`: one shot, no baseline, no stored state; every record is
//! new and goes through the rules in document order. Nothing is sent or
//! written. Also the benchmark entry point, so it streams line formats.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use crate::config::{Format, Mode, SourceKind};
use crate::engine::Engine;
use crate::record::{Record, RecordKind};
use crate::source::file::FileTracker;

/// Returns the number of input errors (bad lines, unreadable files).
pub fn run(
    loaded: crate::daemon::Loaded,
    source: &str,
    files: &[PathBuf],
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let cfg = loaded.config.source(source).cloned().ok_or_else(|| {
        let names: Vec<&str> = loaded
            .config
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        anyhow::anyhow!(
            "no source named `{source}` in the config (it defines: {})",
            names.join(", ")
        )
    })?;
    let mut engine = Engine::new(loaded.compiled);
    let now = Utc::now();
    let mut notes = Vec::new();
    let mut errors = 0;
    let SourceKind::File(fcfg) = &cfg.kind;
    let tracker = FileTracker::new(&cfg, fcfg);
    let mut emit =
        |engine: &mut Engine, rec: &Record, out: &mut dyn Write| -> std::io::Result<()> {
            engine.observe(rec, now, &mut notes);
            for n in notes.drain(..) {
                serde_json::to_writer(&mut *out, &n)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        };
    for path in files {
        let format = fcfg.format.or_else(|| Format::from_path(path));
        if fcfg.mode == Mode::Log && format == Some(Format::Jsonl) {
            errors += stream_jsonl(path, &cfg.name, &cfg.fields, now, |rec| {
                emit(&mut engine, &rec, out)
            })?;
            continue;
        }
        match tracker.read_all(path, now) {
            Ok(records) => {
                for rec in &records {
                    emit(&mut engine, rec, out)?;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                errors += 1;
            }
        }
    }
    out.flush()?;
    Ok(errors)
}

fn stream_jsonl(
    path: &Path,
    source: &str,
    constants: &crate::record::Fields,
    now: chrono::DateTime<Utc>,
    mut f: impl FnMut(Record) -> std::io::Result<()>,
) -> anyhow::Result<usize> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: cannot read: {e}", path.display());
            return Ok(1);
        }
    };
    let source: Arc<str> = Arc::from(source);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut n = 0usize;
    let mut errors = 0;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {}:{}: {e}", path.display(), n + 1);
                errors += 1;
                break;
            }
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        match crate::source::parse::json_line(&line, n) {
            Ok(mut fields) => {
                for (k, v) in constants {
                    if !fields.contains_key(k) {
                        fields.insert(k.clone(), v.clone());
                    }
                }
                f(Record {
                    source: source.clone(),
                    key: format!("{name}:{n}"),
                    fields,
                    prev: None,
                    observed: now,
                    kind: RecordKind::Event,
                })?;
            }
            Err(e) => {
                eprintln!("error: {}:{e}", path.display());
                errors += 1;
            }
        }
    }
    Ok(errors)
}
