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
            errors += stream_jsonl(path, &cfg.name, &cfg.fields, &mut engine, now, out)?;
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

/// Streams a JSONL log: each line is parsed for the fields the rules read
/// only; the whole record is built only when a rule needs it.
fn stream_jsonl(
    path: &Path,
    source: &str,
    constants: &crate::record::Fields,
    engine: &mut Engine,
    now: chrono::DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: cannot read: {e}", path.display());
            return Ok(1);
        }
    };
    let wanted = engine.wanted_fields(source);
    // Dotted names reach into nested objects: those take the full parse.
    let partial = !wanted.iter().any(|(n, _)| n.contains('.'));
    let source_name: Arc<str> = Arc::from(source);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut owned: Vec<Option<serde_json::Value>> = vec![None; engine.slot_count()];
    let mut notes = Vec::new();
    let mut line_out: Vec<u8> = Vec::with_capacity(4096);
    let mut n = 0usize;
    let mut errors = 0;
    let full = |line: &str, n: usize| -> Result<Record, crate::source::parse::ParseError> {
        let mut fields = crate::source::parse::json_line(line, n)?;
        for (k, v) in constants {
            if !fields.contains_key(k) {
                fields.insert(k.clone(), v.clone());
            }
        }
        Ok(Record {
            source: source_name.clone(),
            key: format!("{name}:{n}"),
            fields,
            prev: None,
            observed: now,
            kind: RecordKind::Event,
        })
    };
    let mut raw: Vec<u8> = Vec::with_capacity(4096);
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {}:{}: {e}", path.display(), n + 1);
                errors += 1;
                break;
            }
        }
        n += 1;
        let line = match std::str::from_utf8(&raw) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "error: {}:{n}: not valid UTF-8 (byte {} of the line); save the file as UTF-8",
                    path.display(),
                    e.valid_up_to() + 1
                );
                errors += 1;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let picked = partial && pick(line, &wanted, &mut owned).is_ok();
        if !picked {
            match full(line, n) {
                Ok(rec) => engine.observe(&rec, now, &mut notes),
                Err(e) => {
                    eprintln!("error: {}:{}: {}", path.display(), e.line, e.message);
                    errors += 1;
                }
            }
        } else {
            for (name, slot) in &wanted {
                if owned[*slot].is_none() {
                    owned[*slot] = constants.get(name).cloned();
                }
            }
            let refs: Vec<Option<&serde_json::Value>> = owned.iter().map(Option::as_ref).collect();
            let mut make = || full(line, n).expect("the line parsed once already");
            engine.observe_event(source, &refs, &mut make, now, &mut notes);
        }
        for note in notes.drain(..) {
            // Serialised whole into a reused buffer, then written once.
            line_out.clear();
            serde_json::to_writer(&mut line_out, &note)?;
            line_out.push(b'\n');
            out.write_all(&line_out)?;
        }
    }
    Ok(errors)
}

/// Parses a JSON object, keeping only the wanted fields (by slot).
fn pick(
    line: &str,
    wanted: &[(String, usize)],
    out: &mut [Option<serde_json::Value>],
) -> serde_json::Result<()> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Key<'de>(std::borrow::Cow<'de, str>);
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(std::borrow::Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(std::borrow::Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }

    struct Pick<'a> {
        wanted: &'a [(String, usize)],
        out: &'a mut [Option<serde_json::Value>],
    }
    impl<'de> DeserializeSeed<'de> for Pick<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(Key(k)) = map.next_key::<Key>()? {
                match self.wanted.iter().find(|(n, _)| *n == k) {
                    Some((_, slot)) => self.out[*slot] = Some(map.next_value()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    out.iter_mut().for_each(|v| *v = None);
    let mut de = serde_json::Deserializer::from_str(line);
    Pick { wanted, out }.deserialize(&mut de)?;
    de.end()
}
