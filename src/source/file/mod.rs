//! The `file` source: data files on disk, as a `table` (the file is the
//! current state, one row per key) or a `log` (the file only grows; each new
//! line or row is an event).
//!
//! [`FileTracker`] is the synchronous part: it reads a file and turns what
//! changed into records. [`run`] watches the parent folders with notify, so
//! in-place writes, `mv tmp file` and editor saves are all seen, and also
//! polls file metadata as a safety net on filesystems without events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

mod disk;
mod log;
pub mod watch;

use disk::{GLOB_OPTS, Sig, Whole, regular_metadata, sig};
pub use disk::{PathMatcher, is_temp_name};

use super::batch::{Health, SourceError};
use super::parse::{self, ParseError};
use crate::config::{FileSource, Format, Mode, SourceConfig};
use crate::record::{Fields, Record, RecordKind, Row, with_constants};
use crate::rows::Table;
use crate::store::{Checkpoint, FileCheckpoint};

#[derive(Debug)]
enum FileState {
    Table {
        rows: Table,
        whole: Whole,
    },
    /// A JSON or YAML array used as a log: items are known by their id.
    Items {
        whole: Whole,
        /// False until a version has parsed: its items are history.
        known: bool,
    },
    Log {
        sig: Option<Sig>,
        offset: u64,
        line: usize,
        header: Option<Vec<String>>,
        /// Rows already seen, for whole-document formats (json, yaml).
        count: usize,
        /// The length and SHA-256 of the file's first bytes when last read:
        /// the same file, not rewritten, has the same.
        prefix: Option<(u64, [u8; 32])>,
        /// The last read stopped at [`MAX_READ`]: read on at once.
        more: bool,
    },
}

/// Seen ids are written again at most this often while they stay in the
/// file, so their retention clock keeps running without a write per read.
const REFRESH_SEEN: chrono::Duration = chrono::Duration::days(1);

/// The identity of an array log item: its `id_field` as text when it has
/// one, else a hash of the item.
fn item_id(fields: &Fields, id_field: &str) -> String {
    use sha2::Digest;
    match fields.get(id_field).and_then(crate::record::as_text) {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let json = serde_json::to_vec(fields).unwrap_or_default();
            super::table::hash_id(&sha2::Sha256::digest(&json))
        }
    }
}

pub struct FileTracker {
    source: Arc<str>,
    cfg: FileSource,
    constants: Fields,
    files: HashMap<PathBuf, FileState>,
    pattern: Option<glob::Pattern>,
    /// What the store says was read before this run, per file.
    stored: HashMap<PathBuf, FileCheckpoint>,
    /// What was read since the last `take_checkpoints`, for the store.
    pending: Vec<Checkpoint>,
    /// Files that could not be read (not regular, unreadable), as they
    /// were then: not tried again until they change.
    refused_io: HashMap<PathBuf, Sig>,
    /// Items of array logs seen (`file:id`), with when each was last
    /// written to the store.
    seen: HashMap<String, DateTime<Utc>>,
    /// Since when no readable file has been there.
    missing_since: Option<DateTime<Utc>>,
    /// Where the parts of a large table version go as they are made; with
    /// none, a version is handed back whole.
    parts: Option<Parts>,
}

/// The rows of a table version that changed, in records at a time.
const PART: usize = 8192;

/// How a reader thread hands on the parts of a large table version as it
/// makes them (a first version of a million rows is a million records):
/// each part holds one of a few permits until the daemon has committed it,
/// so the reader makes the next part only once there is room for it, and a
/// version is never held as records all at once.
///
/// A part commits the records it holds with its rows in the store: after
/// a crash half-way, the store holds the rows committed so far, and the
/// next start alerts exactly the rest.
#[derive(Clone)]
pub(crate) struct Parts {
    done: tokio::sync::mpsc::UnboundedSender<Done>,
    permits: Arc<tokio::sync::Semaphore>,
    rt: tokio::runtime::Handle,
}

impl Parts {
    /// Parts in flight at once: one committing, one waiting.
    const IN_FLIGHT: usize = 2;

    pub(crate) fn new(done: tokio::sync::mpsc::UnboundedSender<Done>) -> Parts {
        Parts {
            done,
            permits: Arc::new(tokio::sync::Semaphore::new(Self::IN_FLIGHT)),
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Sends one part, once there is room for it. If the source's task is
    /// gone (a reload or a stop), the part is dropped: its rows were not
    /// committed, and the next read of the file alerts them.
    fn send(&self, source: &str, file: &Path, part: super::table::TableDiff) {
        let Ok(held) = self.rt.block_on(self.permits.clone().acquire_owned()) else {
            return;
        };
        let _ = self.done.send(Done {
            records: part.records,
            checkpoints: vec![Checkpoint::Table {
                source: source.to_string(),
                file: file.to_path_buf(),
                upsert: part.upsert,
                delete: part.delete,
            }],
            held: Some(held),
            ..Done::default()
        });
    }
}

impl FileTracker {
    pub fn new(source: &SourceConfig, cfg: &FileSource) -> FileTracker {
        let p = cfg.path.to_string_lossy();
        let pattern = if p.contains(['*', '?', '[']) {
            glob::Pattern::new(&p).ok()
        } else {
            None
        };
        FileTracker {
            source: Arc::from(source.name.as_str()),
            cfg: cfg.clone(),
            constants: source.fields.clone(),
            files: HashMap::new(),
            pattern,
            stored: HashMap::new(),
            pending: Vec::new(),
            refused_io: HashMap::new(),
            seen: HashMap::new(),
            missing_since: None,
            parts: None,
        }
    }

    /// Hands the parts of large table versions to `parts` as they are made
    /// (see [`Parts`]).
    pub(crate) fn with_parts(mut self, parts: Parts) -> FileTracker {
        self.parts = Some(parts);
        self
    }

    /// Starts from what an earlier run read: tables compare with their
    /// stored rows, logs go on from their stored position.
    pub fn with_checkpoints(mut self, stored: HashMap<PathBuf, FileCheckpoint>) -> FileTracker {
        self.stored = stored;
        self
    }

    /// Whether the source has a readable file: `Missing` (with since when)
    /// while it has none, `Ok` once when one is back, else nothing new.
    fn availability(&mut self, now: DateTime<Utc>) -> Option<Health> {
        let files = self.current_files();
        if files.iter().any(|p| regular_metadata(p).is_ok()) {
            return self.missing_since.take().map(|_| Health::Ok);
        }
        let path = &self.cfg.path;
        let reason = match (&self.pattern, files.first()) {
            (Some(_), None) => format!("no file matches {}", path.display()),
            (Some(_), Some(p)) | (None, Some(p)) => match regular_metadata(p) {
                Err(e) => format!("{}: {e}", p.display()),
                Ok(_) => String::new(),
            },
            (None, None) => format!("{} does not exist", path.display()),
        };
        let since = *self.missing_since.get_or_insert(now);
        Some(Health::Missing { since, reason })
    }

    /// The array log items seen in earlier runs.
    pub fn with_seen(mut self, seen: HashMap<String, DateTime<Utc>>) -> FileTracker {
        self.seen = seen;
        self
    }

    /// What was read since the last call, to commit with the records.
    pub fn take_checkpoints(&mut self) -> Vec<Checkpoint> {
        std::mem::take(&mut self.pending)
    }

    pub fn name(&self) -> &str {
        &self.source
    }

    /// Folders to watch: the parent of the path, or of the glob's fixed part.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dir = self.cfg.path.clone();
        if self.pattern.is_some() {
            while dir.to_string_lossy().contains(['*', '?', '[']) {
                if !dir.pop() {
                    break;
                }
            }
            return vec![dir];
        }
        dir.pop();
        vec![dir]
    }

    /// Whether a path seen in a folder event is one of ours. Temp and
    /// backup files of editors never match: they are not our names.
    pub fn matches(&self, path: &Path) -> bool {
        self.matcher().matches(path)
    }

    /// What `matches` needs, to hand to the watcher's own thread.
    pub fn matcher(&self) -> PathMatcher {
        PathMatcher {
            path: self.cfg.path.clone(),
            pattern: self.pattern.clone(),
        }
    }

    /// The files that exist now.
    pub fn current_files(&self) -> Vec<PathBuf> {
        match &self.pattern {
            Some(_) => {
                // Anything there but folders: a FIFO or a symlink loop is
                // refused with its reason when read, not passed over.
                let mut v: Vec<PathBuf> =
                    glob::glob_with(&self.cfg.path.to_string_lossy(), GLOB_OPTS)
                        .map(|it| {
                            it.filter_map(Result::ok)
                                .filter(|p| !p.is_dir() && !is_temp_name(p))
                                .collect()
                        })
                        .unwrap_or_default();
                v.sort();
                v
            }
            None => {
                if std::fs::symlink_metadata(&self.cfg.path).is_ok() && !self.cfg.path.is_dir() {
                    vec![self.cfg.path.clone()]
                } else {
                    vec![]
                }
            }
        }
    }

    fn format_of(&self, path: &Path) -> Result<Format, SourceError> {
        self.cfg
            .format
            .or_else(|| Format::from_path(path))
            .ok_or_else(|| SourceError {
                source: self.source.to_string(),
                file: Some(path.to_path_buf()),
                line: 0,
                message: "cannot tell the format from the extension; set `format:` on the source"
                    .into(),
                skipped: false,
            })
    }

    fn error(&self, path: &Path, e: ParseError) -> SourceError {
        parse_error(&self.source, path, e)
    }

    /// First look at a file. Tables: every row is new. Logs: lines already
    /// there are history, not news; reading starts at the end.
    pub fn start(&mut self, path: &Path, now: DateTime<Utc>) -> (Vec<Record>, Vec<SourceError>) {
        let stored = self.stored.remove(path);
        match (self.cfg.mode, stored) {
            (Mode::Table, stored) => {
                let rows = match stored {
                    Some(FileCheckpoint::Table(rows)) => rows,
                    _ => Table::default(),
                };
                self.files.insert(
                    path.to_path_buf(),
                    FileState::Table {
                        rows,
                        whole: Whole::default(),
                    },
                );
                match self.refresh(path, now) {
                    Ok(r) => r,
                    Err(e) => (vec![], vec![e]),
                }
            }
            (Mode::Log, stored) if self.is_array(path) => {
                let known = matches!(stored, Some(FileCheckpoint::Log(_)));
                self.files.insert(
                    path.to_path_buf(),
                    FileState::Items {
                        whole: Whole::default(),
                        known,
                    },
                );
                match self.refresh(path, now) {
                    Ok(r) => r,
                    Err(e) => (vec![], vec![e]),
                }
            }
            (Mode::Log, Some(FileCheckpoint::Log(c))) => {
                // Go on from where the last run stopped: lines written while
                // the daemon was down are news. A different or shorter file
                // is read from its beginning (refresh sees to that).
                let sig = Sig {
                    len: c.offset,
                    mtime: None,
                    ino: c.ino,
                    dev: c.dev,
                };
                self.files.insert(
                    path.to_path_buf(),
                    FileState::Log {
                        sig: Some(sig),
                        offset: c.offset,
                        line: c.line,
                        header: c.header,
                        count: c.count,
                        prefix: c.prefix,
                        more: false,
                    },
                );
                match self.refresh(path, now) {
                    Ok(r) => r,
                    Err(e) => (vec![], vec![e]),
                }
            }
            (Mode::Log, _) => {
                let state = match self.log_baseline(path) {
                    Ok(s) => s,
                    Err(e) => return (vec![], vec![e]),
                };
                self.files.insert(path.to_path_buf(), state);
                self.log_checkpoint(path);
                (vec![], vec![])
            }
        }
    }

    /// Whether the file's metadata differ from what was last read.
    pub fn changed_on_disk(&self, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let now = Some(sig(&meta));
        if self.refused_io.get(path).is_some_and(|s| Some(*s) == now) {
            return false;
        }
        match self.files.get(path) {
            Some(FileState::Table { whole, .. }) | Some(FileState::Items { whole, .. }) => {
                whole.sig != now
            }
            Some(FileState::Log { sig, .. }) => *sig != now,
            None => true,
        }
    }

    /// Re-reads a file and returns the records its change implies, plus
    /// errors for bad lines of a log (the good lines still count). A table
    /// that does not parse is refused whole and its previous rows stand.
    pub fn refresh(
        &mut self,
        path: &Path,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Vec<SourceError>), SourceError> {
        let known = self.files.contains_key(path);
        let out = self.read_changes(path, now)?;
        if known && self.cfg.mode == Mode::Log {
            self.log_checkpoint(path);
        }
        Ok(out)
    }

    fn read_changes(
        &mut self,
        path: &Path,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Vec<SourceError>), SourceError> {
        if !self.files.contains_key(path) {
            return Ok(self.start(path, now));
        }
        if self.cfg.mode == Mode::Table {
            return self.read_table(path, now);
        }
        self.read_log(path, now)
    }

    /// When a table waiting to settle, or a log with more to read, is to be
    /// looked at again.
    pub fn next_recheck(&self) -> Option<(std::time::Instant, Vec<PathBuf>)> {
        let due: Vec<(std::time::Instant, &PathBuf)> = self
            .files
            .iter()
            .filter_map(|(p, f)| match f {
                FileState::Table { whole, .. } | FileState::Items { whole, .. } => {
                    whole.settle.map(|st| (st.since + st.wait, p))
                }
                FileState::Log { more: true, .. } => Some((std::time::Instant::now(), p)),
                _ => None,
            })
            .collect();
        let at = due.iter().map(|(t, _)| *t).min()?;
        Some((at, due.into_iter().map(|(_, p)| p.clone()).collect()))
    }

    /// A table's new version, once it is whole ([`Whole::settled_read`]),
    /// compared with the previous one; it must parse with unique keys, else
    /// it is refused (once) and nothing is compared.
    fn read_table(
        &mut self,
        path: &Path,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Vec<SourceError>), SourceError> {
        let format = self.format_of(path)?;
        let (source, key, constants) = (
            self.source.clone(),
            self.cfg.key.clone(),
            self.constants.clone(),
        );
        let glob = self.pattern.is_some();
        let Some(FileState::Table { rows, whole }) = self.files.get_mut(path) else {
            return Ok((vec![], vec![]));
        };
        let Some(bytes) = whole
            .settled_read(path)
            .map_err(|e| SourceError::io(&source, path, e))?
        else {
            return Ok((vec![], vec![]));
        };
        // A glob is one table per file: its keys start with the file's name.
        let file_prefix = glob.then(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        });
        // The version read, for the evidence of its alerts (its bytes are
        // shared with the parser, not copied).
        let bytes = bytes::Bytes::from(bytes);
        let doc = crate::record::Document::file(&Arc::from(path), bytes.clone());
        let mk = |fields: Row, key: String, prev: Option<Row>, kind: RecordKind| Record {
            source: source.clone(),
            key: match &file_prefix {
                Some(f) => format!("{f}|{key}"),
                None => key,
            },
            fields: with_constants(fields, &constants),
            prev,
            observed: now,
            kind,
            doc: Some(doc.clone()),
            line: 0,
        };
        // Every part but the last is sent on as soon as the next one is
        // made; the last goes with this read's batch.
        let parts = self.parts.clone();
        let chunk = if parts.is_some() { PART } else { usize::MAX };
        let mut last: Option<super::table::TableDiff> = None;
        // Room for the rows made at once, not grown to as they come: a
        // table grown row by row leaves the smaller tables it outgrew free
        // but held by the allocator.
        let lines = match format {
            Format::Csv | Format::Tsv | Format::Jsonl => memchr::memchr_iter(b'\n', &bytes).count(),
            _ => 0,
        };
        let diff = super::table::diff_each(
            rows,
            &key,
            mk,
            |row| parse::each_row(format, &bytes, row),
            lines,
            chunk,
            &mut |part| {
                let Some(mut before) = last.take() else {
                    last = Some(part);
                    return;
                };
                match &parts {
                    Some(p) => {
                        p.send(&source, path, before);
                        last = Some(part);
                    }
                    None => {
                        before.extend(part);
                        last = Some(before);
                    }
                }
            },
        );
        match diff {
            Ok(()) => {
                whole.refused = None;
                let super::table::TableDiff {
                    records,
                    upsert,
                    delete,
                } = last.unwrap_or_default();
                if !upsert.is_empty() || !delete.is_empty() {
                    self.pending.push(Checkpoint::Table {
                        source: source.to_string(),
                        file: path.to_path_buf(),
                        upsert,
                        delete,
                    });
                }
                Ok((records, vec![]))
            }
            Err(e) if whole.refuse(&bytes) => Err(parse_error(&source, path, e)),
            Err(_) => Ok((vec![], vec![])),
        }
    }

    /// Reads a whole file as `tocsin eval` does, without a baseline. A
    /// table is compared with `table`, the rows of the version before it
    /// (empty for the first: every row is new), which becomes this one; a
    /// log gives every line or item, a bad line reported and skipped.
    pub fn read_whole(
        &self,
        path: &Path,
        table: &mut Table,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Vec<SourceError>), SourceError> {
        let format = self.format_of(path)?;
        let bytes = std::fs::read(path).map_err(|e| SourceError::io(&self.source, path, e))?;
        let bytes = bytes::Bytes::from(bytes);
        let doc = crate::record::Document::file(&Arc::from(path), bytes.clone());
        let mk = |fields: Row, key: String, prev: Option<Row>, kind: RecordKind| Record {
            source: self.source.clone(),
            key,
            fields: with_constants(fields, &self.constants),
            prev,
            observed: now,
            kind,
            doc: Some(doc.clone()),
            line: 0,
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if self.cfg.mode == Mode::Table || matches!(format, Format::Json | Format::Yaml) {
            let rows = parse::rows(format, &bytes).map_err(|e| self.error(path, e))?;
            if self.cfg.mode == Mode::Log {
                let records = rows
                    .into_iter()
                    .map(|(_, f)| {
                        let id = format!("{file_name}:{}", item_id(&f, &self.cfg.id_field));
                        mk(Row::new(f), id, None, RecordKind::Event)
                    })
                    .collect();
                return Ok((records, vec![]));
            }
            let diff = super::table::diff_table(table, rows, &self.cfg.key, mk)
                .map_err(|(line, message)| self.error(path, ParseError { line, message }))?;
            return Ok((diff.records, vec![]));
        }
        let mut errors = Vec::new();
        let text = match parse::text(&bytes) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(e) => {
                errors.push(self.error(path, e).skipped());
                String::from_utf8_lossy(&bytes)
            }
        };
        let mut body: &str = &text;
        let mut first_line = 1;
        let mut header = Vec::new();
        if matches!(format, Format::Csv | Format::Tsv) {
            let (h, rest) = body.split_once('\n').unwrap_or((body, ""));
            header = read_header(format, format!("{h}\n").as_bytes()).unwrap_or_default();
            body = rest;
            first_line += 1;
        }
        let mut records = Vec::new();
        log_lines(
            format,
            body,
            first_line,
            &header,
            &file_name,
            &mut |fields, key| records.push(mk(fields, key, None, RecordKind::Event)),
            &mut |e| errors.push(self.error(path, e).skipped()),
        );
        Ok((records, errors))
    }
}

/// The lines of a log from `first_line` on, each parsed alone so that a bad
/// line costs only itself: records go to `record` with their key
/// (`file:line`), bad lines to `bad`.
fn log_lines(
    format: Format,
    body: &str,
    first_line: usize,
    header: &[String],
    file_name: &str,
    record: &mut dyn FnMut(Row, String),
    bad: &mut dyn FnMut(ParseError),
) {
    for (i, l) in body.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let n = first_line + i;
        if format == Format::Jsonl {
            match parse::json_line(l, n) {
                Ok(f) => record(Row::new(f), format!("{file_name}:{n}")),
                Err(e) => bad(e),
            }
            continue;
        }
        match parse::delimited(format, &format!("{l}\n"), Some(header), n) {
            Ok(rows) => {
                for (n, f) in rows {
                    record(Row::new(f), format!("{file_name}:{n}"));
                }
            }
            Err(e) => bad(e),
        }
    }
}

fn parse_error(source: &str, path: &Path, e: ParseError) -> SourceError {
    SourceError {
        source: source.to_string(),
        file: Some(path.to_path_buf()),
        line: e.line,
        message: e.message,
        skipped: false,
    }
}

fn read_header(format: Format, bytes: &[u8]) -> Option<Vec<String>> {
    let first = bytes.split(|&b| b == b'\n').next()?;
    let t = parse::text(first).ok()?;
    if t.trim().is_empty() {
        return None;
    }
    let mut r = csv::ReaderBuilder::new()
        .delimiter(if format == Format::Tsv { b'\t' } else { b',' })
        .has_headers(false)
        .from_reader(t.as_bytes());
    let rec = r.records().next()?.ok()?;
    Some(rec.iter().map(|s| s.trim().to_string()).collect())
}

/// What a job read, for one batch.
#[derive(Default)]
pub(crate) struct Done {
    records: Vec<Record>,
    errors: Vec<SourceError>,
    health: Option<Health>,
    checkpoints: Vec<Checkpoint>,
    /// When to read again files waiting to settle (or with more to read).
    recheck: Option<(std::time::Instant, Vec<PathBuf>)>,
    /// The permit a part of a large table version holds until it is
    /// committed (see [`Parts`]); more of the same job follow a part.
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl FileTracker {
    /// Reads `paths` into `d`. A file refused whole is a failure of the
    /// source; a read that went through is a success (bad lines of a log
    /// are not counted).
    fn read_paths(&mut self, paths: Vec<PathBuf>, now: DateTime<Utc>, d: &mut Done) {
        for p in paths {
            if std::fs::symlink_metadata(&p).is_err() {
                // Gone (or mid-rename). Its rows stand until it returns: a
                // file briefly missing during an editor save resolves nothing.
                continue;
            }
            match self.refresh(&p, now) {
                Ok((records, errors)) => {
                    d.errors.extend(errors);
                    d.records.extend(records);
                    // A version still settling, or refused before, is not
                    // a success.
                    let judged_ok = match self.files.get(&p) {
                        Some(FileState::Table { whole, .. } | FileState::Items { whole, .. }) => {
                            whole.settle.is_none() && whole.refused.is_none()
                        }
                        _ => true,
                    };
                    if judged_ok {
                        d.health.get_or_insert(Health::Ok);
                    }
                }
                Err(e) => {
                    // Not read again until it changes.
                    if let Ok(m) = std::fs::metadata(&p) {
                        self.refused_io.insert(p.clone(), sig(&m));
                    }
                    d.health = Some(Health::Failed(e.to_string()));
                    d.errors.push(e);
                }
            }
        }
    }
}
