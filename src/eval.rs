//! `tocsin eval`: one shot, no baseline, no stored state; every record is
//! new and goes through the rules in document order. Nothing is sent or
//! written. Also the benchmark entry point, so it streams line formats.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use crate::config::{Format, Mode, SourceKind};
use crate::engine::Engine;
use crate::record::{Record, RecordKind};
use crate::source::file::FileTracker;

/// Returns the number of input errors (bad lines, unreadable files).
pub fn run(
    loaded: crate::load::Loaded,
    source: &str,
    files: &[PathBuf],
    explain: bool,
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
    let rules = loaded.rules;
    let mut engine = Engine::new(loaded.compiled);
    let now = Utc::now();
    let mut notes = Vec::new();
    let mut errors = 0;
    let mut emit =
        |engine: &mut Engine, rec: &Record, out: &mut dyn Write| -> std::io::Result<()> {
            engine.observe(rec, now, &mut notes);
            if explain {
                let mut text = String::new();
                crate::explain::record(&rules, rec, &notes, &mut text);
                notes.clear();
                return out.write_all(text.as_bytes());
            }
            for n in notes.drain(..) {
                let mut line = Vec::with_capacity(1024);
                n.write_json_line(&mut line);
                out.write_all(&line)?;
            }
            Ok(())
        };
    let fcfg = match &cfg.kind {
        SourceKind::File(f) => f,
        SourceKind::Feed(_) | SourceKind::Http(_) => {
            // The FILE is the fetched document, parsed as the source would.
            for path in files {
                match polled_records(&cfg, path, now) {
                    Ok(records) => {
                        for rec in &records {
                            emit(&mut engine, rec, out)?;
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {}: {e}", path.display());
                        errors += 1;
                    }
                }
            }
            out.flush()?;
            return Ok(errors);
        }
    };
    let tracker = FileTracker::new(&cfg, fcfg);
    // A table's files are its successive versions: each is compared with
    // the one before it.
    let mut table = crate::rows::Table::default();
    for path in files {
        let format = fcfg.format.or_else(|| Format::from_path(path));
        if fcfg.mode == Mode::Log && format == Some(Format::Jsonl) && !explain {
            errors += stream_jsonl(path, &cfg.name, &cfg.fields, &mut engine, now, out)?;
            continue;
        }
        match tracker.read_whole(path, &mut table, now) {
            Ok((records, bad)) => {
                for e in &bad {
                    eprintln!("error: {e}");
                }
                errors += bad.len();
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

/// The records of a feed or http document read from a file, all new.
fn polled_records(
    cfg: &crate::config::SourceConfig,
    path: &Path,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Record>, String> {
    use crate::source::poll::{FeedTracker, HttpTracker};
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    match &cfg.kind {
        SourceKind::Feed(f) => {
            let items = crate::source::feed::parse(&bytes, None, &f.poll.url.base())?;
            let stored = crate::store::PollState {
                url: f.poll.url.identity(),
                item_ids: crate::store::ITEM_IDS,
                ..Default::default()
            };
            let mut t = FeedTracker::new(cfg, f, Some(&stored));
            Ok(t.items(items, now).0)
        }
        SourceKind::Http(h) => {
            let mut t = HttpTracker::new(cfg, h, Default::default());
            let ct = match Format::from_path(path) {
                Some(Format::Csv) => Some("text/csv"),
                Some(Format::Tsv) => Some("text/tab-separated-values"),
                _ => None,
            };
            Ok(t.document(&bytes, ct, now)?.0)
        }
        SourceKind::File(_) => Ok(Vec::new()),
    }
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
    let events = engine.events(source);
    // Dotted names reach into nested objects: those take the full parse.
    let partial = !wanted.iter().any(|(n, _)| n.contains('.'));
    let source_name: Arc<str> = Arc::from(source);
    let file_path: Arc<Path> = Arc::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let slots = engine.slot_count();
    // Values of the wanted fields by slot, reused line after line so their
    // strings keep their allocations; `present` says which this line had.
    let mut owned: Vec<Option<serde_json::Value>> = vec![None; slots];
    let mut present = vec![false; slots];
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
            fields: fields.into(),
            prev: None,
            observed: now,
            kind: RecordKind::Event,
            doc: Some(crate::record::Document::hashed(&file_path, line.as_bytes())),
            line: n as u32,
        })
    };
    let read = for_each_line(file, |raw| {
        n += 1;
        // The fast check (SIMD) says only yes or no; the standard one then
        // says where, for the message.
        let line = match simdutf8::basic::from_utf8(raw).map_err(|_| std::str::from_utf8(raw)) {
            Ok(l) => l,
            Err(Ok(l)) => l,
            Err(Err(e)) => {
                eprintln!(
                    "error: {}:{n}: not valid UTF-8 (byte {} of the line); save the file as UTF-8",
                    path.display(),
                    e.valid_up_to() + 1
                );
                errors += 1;
                return Ok(());
            }
        };
        if line.trim().is_empty() {
            return Ok(());
        }
        let picked = partial && pick(line, &wanted, &mut owned, &mut present).is_ok();
        if !picked {
            match full(line, n) {
                Ok(rec) => engine.observe(&rec, now, &mut notes),
                Err(e) => {
                    eprintln!("error: {}:{}: {}", path.display(), e.line, e.message);
                    errors += 1;
                }
            }
        } else {
            let mut stack: [Option<&serde_json::Value>; 32] = [None; 32];
            let mut heap: Vec<Option<&serde_json::Value>>;
            let refs: &mut [Option<&serde_json::Value>] = if slots <= stack.len() {
                &mut stack[..slots]
            } else {
                heap = vec![None; slots];
                &mut heap
            };
            for (name, slot) in &wanted {
                refs[*slot] = if present[*slot] {
                    owned[*slot].as_ref()
                } else {
                    constants.get(name)
                };
            }
            let mut make = || full(line, n).expect("the line parsed once already");
            engine.observe_event(&events, refs, &mut make, now, &mut notes);
        }
        for note in notes.drain(..) {
            // Serialised whole into a reused buffer, then written once.
            line_out.clear();
            note.write_json_line(&mut line_out);
            out.write_all(&line_out)?;
        }
        Ok(())
    });
    if let Err(e) = read {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
        eprintln!("error: {}:{}: {e}", path.display(), n + 1);
        errors += 1;
    }
    Ok(errors)
}

/// Calls `f` with each line (without its newline) of `input`, straight
/// from the read buffer when the line lies in it whole.
fn for_each_line(
    input: impl std::io::Read,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            if !partial.is_empty() {
                f(&partial)?;
            }
            return Ok(());
        }
        let mut pos = 0;
        for nl in memchr::memchr_iter(b'\n', buf) {
            if partial.is_empty() {
                f(&buf[pos..nl])?;
            } else {
                partial.extend_from_slice(&buf[pos..nl]);
                f(&partial)?;
                partial.clear();
            }
            pos = nl + 1;
        }
        partial.extend_from_slice(&buf[pos..]);
        let len = buf.len();
        reader.consume(len);
    }
}

/// Parses a JSON object, keeping only the wanted fields (by slot) in
/// `out`, reusing the strings already there; `present` marks those seen.
fn pick(
    line: &str,
    wanted: &[(String, usize)],
    out: &mut [Option<serde_json::Value>],
    present: &mut [bool],
) -> serde_json::Result<()> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

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

    /// One value into its slot; text goes into the slot's old string.
    struct Slot<'a>(&'a mut Option<Value>);
    impl<'de> DeserializeSeed<'de> for Slot<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Slot<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            match self.0 {
                Some(Value::String(s)) => {
                    s.clear();
                    s.push_str(v);
                }
                other => *other = Some(Value::String(v.to_string())),
            }
            Ok(())
        }
        fn visit_bool<E>(self, v: bool) -> Result<(), E> {
            *self.0 = Some(Value::Bool(v));
            Ok(())
        }
        fn visit_i64<E>(self, v: i64) -> Result<(), E> {
            *self.0 = Some(Value::from(v));
            Ok(())
        }
        fn visit_u64<E>(self, v: u64) -> Result<(), E> {
            *self.0 = Some(Value::from(v));
            Ok(())
        }
        fn visit_f64<E>(self, v: f64) -> Result<(), E> {
            *self.0 = Some(Value::from(v));
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            *self.0 = Some(Value::Null);
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
            *self.0 = Some(serde::Deserialize::deserialize(
                serde::de::value::SeqAccessDeserializer::new(seq),
            )?);
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
            *self.0 = Some(serde::Deserialize::deserialize(
                serde::de::value::MapAccessDeserializer::new(map),
            )?);
            Ok(())
        }
    }

    struct Pick<'a> {
        wanted: &'a [(String, usize)],
        out: &'a mut [Option<Value>],
        present: &'a mut [bool],
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
                match self.wanted.iter().find(|(n, _)| {
                    // Length and first byte first: most keys differ there,
                    // without a call to memcmp.
                    n.len() == k.len() && n.as_bytes().first() == k.as_bytes().first() && *n == k
                }) {
                    Some((_, slot)) => {
                        map.next_value_seed(Slot(&mut self.out[*slot]))?;
                        self.present[*slot] = true;
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    present.iter_mut().for_each(|p| *p = false);
    let mut de = serde_json::Deserializer::from_str(line);
    Pick {
        wanted,
        out,
        present,
    }
    .deserialize(&mut de)?;
    de.end()
}
