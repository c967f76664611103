//! The `file` source: data files on disk, as a `table` (the file is the
//! current state, one row per key) or a `log` (the file only grows; each new
//! line or row is an event).
//!
//! [`FileTracker`] is the synchronous part: it reads a file and turns what
//! changed into records. [`run`] watches the parent folders with notify, so
//! in-place writes, `mv tmp file` and editor saves are all seen, and also
//! polls file metadata as a safety net on filesystems without events.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, Health, SourceError};
use super::parse::{self, ParseError};
use crate::config::{FileSource, Format, Mode, SourceConfig};
use crate::record::{Fields, Record, RecordKind, Row, with_constants};
use crate::store::{Checkpoint, FileCheckpoint, LogCursor};

/// What we know of a file without reading it; a change means re-read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sig {
    len: u64,
    mtime: Option<std::time::SystemTime>,
    ino: u64,
    dev: u64,
}

fn sig(meta: &std::fs::Metadata) -> Sig {
    use std::os::unix::fs::MetadataExt;
    Sig {
        len: meta.len(),
        mtime: meta.modified().ok(),
        ino: meta.ino(),
        dev: meta.dev(),
    }
}

/// A new version of a table waiting to settle: its signature, when it was
/// first seen so, and how long it must stay put before it is read.
#[derive(Clone, Copy, Debug)]
struct Settle {
    sig: Sig,
    since: std::time::Instant,
    wait: Duration,
}

/// How long a table must stay put before a new version is read: a writer
/// caught between two rows leaves a file that parses but is not the table.
const QUIET: Duration = Duration::from_millis(200);
/// The same for a file whose last line has no newline yet.
const QUIET_TAIL: Duration = Duration::from_secs(1);
/// The longest wait, for a file that keeps changing.
const QUIET_MAX: Duration = Duration::from_secs(5);

/// A file read as a whole document (a table, an array log): which version
/// was last judged, the one waiting to settle, the last one refused.
#[derive(Debug, Default)]
struct Whole {
    /// The version last judged (compared or refused).
    sig: Option<Sig>,
    settle: Option<Settle>,
    /// The SHA-256 of the version last refused: reported once.
    refused: Option<[u8; 32]>,
}

impl Whole {
    /// The bytes of a new version once it is whole: it must have stayed
    /// put for a quiet interval (longer while its last line has no
    /// newline) and be read without changing. `None` until then, and for
    /// a version already judged or an empty file (an in-place write
    /// truncates first: an empty file is one being written).
    fn settled_read(&mut self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        let meta = regular_metadata(path)?;
        let s = sig(&meta);
        if self.sig == Some(s) {
            self.settle = None;
            return Ok(None);
        }
        let tail_done = meta.len() == 0 || last_byte(path, meta.len())? == b'\n';
        let need = if tail_done { QUIET } else { QUIET_TAIL };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok());
        let settled = match &self.settle {
            Some(st) if st.sig == s => st.since.elapsed() >= st.wait.max(need),
            _ => false,
        } || age.is_some_and(|a| a >= need);
        if !settled {
            self.settle = Some(match self.settle {
                Some(st) if st.sig == s => Settle {
                    wait: st.wait.max(need),
                    ..st
                },
                Some(st) => Settle {
                    sig: s,
                    since: std::time::Instant::now(),
                    wait: (st.wait * 2).clamp(need, QUIET_MAX),
                },
                None => Settle {
                    sig: s,
                    since: std::time::Instant::now(),
                    wait: need,
                },
            });
            return Ok(None);
        }
        let (bytes, after) = read_regular(path)?;
        if sig(&after) != s || bytes.len() as u64 != after.len() {
            // Written while being read: wait for it to settle again.
            self.settle = Some(Settle {
                sig: sig(&after),
                since: std::time::Instant::now(),
                wait: self.settle.map_or(QUIET, |st| (st.wait * 2).min(QUIET_MAX)),
            });
            return Ok(None);
        }
        self.settle = None;
        self.sig = Some(s);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            tracing::debug!(file = %path.display(), "the file is empty, as while it is being written; what was read before stands");
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Whether the version `bytes`, which does not parse, is reported: a
    /// version already refused is not, however often it is read.
    fn refuse(&mut self, bytes: &[u8]) -> bool {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(bytes).into();
        let first = self.refused != Some(hash);
        self.refused = Some(hash);
        first
    }
}

#[derive(Debug)]
enum FileState {
    Table {
        rows: HashMap<String, Row>,
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

/// How much of a log's beginning identifies it.
const PREFIX: u64 = 4096;
/// The most of a log read at once: a burst of appends is read in parts.
const MAX_READ: u64 = 64 << 20;

/// The SHA-256 of the first `len` bytes of `f`.
fn prefix_hash(f: &std::fs::File, len: u64) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0)?;
    Ok(sha2::Sha256::digest(&buf).into())
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
}

const GLOB_OPTS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

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
        }
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

    fn log_checkpoint(&mut self, path: &Path) {
        if let Some(FileState::Log {
            sig,
            offset,
            line,
            header,
            count,
            prefix,
            ..
        }) = self.files.get(path)
        {
            let (dev, ino) = sig.map_or((0, 0), |s| (s.dev, s.ino));
            self.pending.push(Checkpoint::Log {
                source: self.source.to_string(),
                file: path.to_path_buf(),
                cursor: LogCursor {
                    dev,
                    ino,
                    offset: *offset,
                    line: *line,
                    header: header.clone(),
                    count: *count,
                    prefix: *prefix,
                },
            });
        }
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
                    _ => HashMap::new(),
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

    /// A log seen for the first time: what is in it is history. Counts its
    /// lines in parts (for the keys of the lines to come), keeps its header
    /// and the hash of its beginning.
    fn log_baseline(&self, path: &Path) -> Result<FileState, SourceError> {
        use std::io::Read;
        let io = |e: std::io::Error| SourceError::io(&self.source, path, e);
        let format = self.format_of(path)?;
        let (mut f, meta) = open_regular(path).map_err(io)?;
        let (header, count) = (None, 0);
        // Only whole lines count; a half-written last line is read later.
        let (mut lines, mut end, mut pos) = (0usize, 0u64, 0u64);
        let mut first_line = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            let part = &buf[..n];
            if lines == 0 {
                let upto = memchr::memchr(b'\n', part).map_or(n, |i| i + 1);
                first_line.extend_from_slice(&part[..upto]);
            }
            lines += memchr::memchr_iter(b'\n', part).count();
            if let Some(i) = memchr::memrchr(b'\n', part) {
                end = pos + i as u64 + 1;
            }
            pos += n as u64;
        }
        let header = match format {
            Format::Csv | Format::Tsv if end > 0 => read_header(format, &first_line),
            _ => header,
        };
        let len = meta.len().min(PREFIX);
        Ok(FileState::Log {
            sig: Some(sig(&meta)),
            offset: end,
            line: lines,
            header,
            count,
            prefix: Some((len, prefix_hash(&f, len).map_err(io)?)),
            more: false,
        })
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

    /// What was appended to a log since the stored position, and no more:
    /// the file is known to be the same by its (device, inode) and a hash
    /// of its first bytes, and read from that position. A replaced,
    /// rewritten or truncated file is read from its beginning. Only whole
    /// lines count; a line that is not UTF-8 or does not parse is reported
    /// and skipped.
    fn read_log(
        &mut self,
        path: &Path,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Vec<SourceError>), SourceError> {
        use std::io::{Read, Seek};
        let io = |e: std::io::Error| SourceError::io(&self.source, path, e);
        let format = self.format_of(path)?;
        if matches!(format, Format::Json | Format::Yaml) {
            return self.read_items(path, format, now);
        }
        let (mut f, meta) = open_regular(path).map_err(io)?;
        let new_sig = sig(&meta);
        let stored_prefix = match self.files.get(path) {
            Some(FileState::Log { prefix, .. }) => *prefix,
            _ => None,
        };
        let rewritten = match stored_prefix {
            Some((len, hash)) if meta.len() >= len => prefix_hash(&f, len).map_err(io)? != hash,
            Some(_) => true,
            None => false,
        };
        let Some(FileState::Log {
            sig,
            offset,
            line,
            header,
            prefix,
            more,
            ..
        }) = self.files.get_mut(path)
        else {
            return Ok((vec![], vec![]));
        };
        let replaced = sig.is_some_and(|s| s.ino != new_sig.ino || s.dev != new_sig.dev);
        if replaced || rewritten || meta.len() < *offset {
            // Rotated, rewritten or truncated: start again from the beginning.
            *offset = 0;
            *line = 0;
            *header = None;
            *prefix = None;
        }
        *sig = Some(new_sig);
        f.seek(std::io::SeekFrom::Start(*offset)).map_err(io)?;
        let mut chunk = Vec::new();
        (&mut f)
            .take(MAX_READ)
            .read_to_end(&mut chunk)
            .map_err(io)?;
        *more = chunk.len() as u64 == MAX_READ;
        let Some(end) = memchr::memrchr(b'\n', &chunk).map(|i| i + 1) else {
            return Ok((vec![], vec![]));
        };
        let chunk = &chunk[..end];
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let (source, constants) = (self.source.clone(), self.constants.clone());
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let mut n = *line;
        for raw in chunk[..chunk.len() - 1].split(|&b| b == b'\n') {
            n += 1;
            let text = match std::str::from_utf8(raw) {
                Ok(t) => t,
                Err(e) => {
                    // Never fired: a line that is not text is not read as one.
                    errors.push(
                        parse_error(
                            &source,
                            path,
                            ParseError {
                                line: n,
                                message: format!(
                                    "not valid UTF-8 (byte {} of the line)",
                                    e.valid_up_to() + 1
                                ),
                            },
                        )
                        .skipped(),
                    );
                    continue;
                }
            };
            if matches!(format, Format::Csv | Format::Tsv) && header.is_none() {
                *header = read_header(format, format!("{text}\n").as_bytes());
                continue;
            }
            log_lines(
                format,
                text,
                n,
                header.as_deref().unwrap_or_default(),
                &file_name,
                &mut |fields, key| {
                    records.push(Record {
                        source: source.clone(),
                        key,
                        fields: with_constants(fields, &constants),
                        prev: None,
                        observed: now,
                        kind: RecordKind::Event,
                    })
                },
                &mut |e| errors.push(parse_error(&source, path, e).skipped()),
            );
        }
        *offset += end as u64;
        *line = n;
        if prefix.is_none_or(|(len, _)| len < PREFIX && meta.len() > len) {
            let len = meta.len().min(PREFIX);
            *prefix = Some((len, prefix_hash(&f, len).map_err(io)?));
        }
        Ok((records, errors))
    }

    /// Whether `path` is read as an array log (json, yaml).
    fn is_array(&self, path: &Path) -> bool {
        self.cfg.mode == Mode::Log
            && matches!(
                self.cfg.format.or_else(|| Format::from_path(path)),
                Some(Format::Json | Format::Yaml)
            )
    }

    /// A JSON or YAML array used as a log, read whole once it is whole
    /// ([`Whole::settled_read`]): its items are known by their id (or a
    /// hash of the item), so a rewrite, an `mv` save or a rolling window
    /// fires exactly the items not seen before. The first version read is
    /// history. Seen ids are kept in the store for `retention`.
    fn read_items(
        &mut self,
        path: &Path,
        format: Format,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Vec<SourceError>), SourceError> {
        let (source, constants) = (self.source.clone(), self.constants.clone());
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let Some(FileState::Items { whole, known }) = self.files.get_mut(path) else {
            return Ok((vec![], vec![]));
        };
        let Some(bytes) = whole
            .settled_read(path)
            .map_err(|e| SourceError::io(&source, path, e))?
        else {
            return Ok((vec![], vec![]));
        };
        let parsed = match parse::rows(format, &bytes) {
            Ok(p) => p,
            Err(e) if whole.refuse(&bytes) => return Err(parse_error(&source, path, e)),
            Err(_) => return Ok((vec![], vec![])),
        };
        whole.refused = None;
        let first = !*known;
        *known = true;
        let mut records = Vec::new();
        let mut write = Vec::new();
        for (_, fields) in parsed {
            let id = format!("{file_name}:{}", item_id(&fields, &self.cfg.id_field));
            match self.seen.get_mut(&id) {
                Some(t) => {
                    if now - *t >= REFRESH_SEEN {
                        *t = now;
                        write.push(id);
                    }
                }
                None => {
                    self.seen.insert(id.clone(), now);
                    write.push(id.clone());
                    if !first {
                        records.push(Record {
                            source: source.clone(),
                            key: id,
                            fields: with_constants(Row::new(fields), &constants),
                            prev: None,
                            observed: now,
                            kind: RecordKind::Event,
                        });
                    }
                }
            }
        }
        if first {
            tracing::info!(source = %source, file = %path.display(), items = write.len(), "first look at this array log: its items are history");
            // Known from now on, across restarts.
            let meta = std::fs::metadata(path).ok();
            self.pending.push(Checkpoint::Log {
                source: source.to_string(),
                file: path.to_path_buf(),
                cursor: LogCursor {
                    dev: meta.as_ref().map_or(0, |m| sig(m).dev),
                    ino: meta.as_ref().map_or(0, |m| sig(m).ino),
                    offset: 0,
                    line: 0,
                    header: None,
                    count: 0,
                    prefix: None,
                },
            });
        }
        let forget_before =
            now - chrono::Duration::from_std(self.cfg.retention).unwrap_or_default();
        self.seen.retain(|_, t| *t >= forget_before);
        self.pending.push(Checkpoint::Seen {
            source: source.to_string(),
            ids: write,
            at: now,
            forget_before,
            forget: Vec::new(),
        });
        Ok((records, vec![]))
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
        };
        let diff = parse::rows(format, &bytes).and_then(|parsed| {
            super::table::diff_table(rows, parsed, &key, mk)
                .map_err(|(line, message)| ParseError { line, message })
        });
        match diff {
            Ok(super::table::TableDiff {
                records,
                upsert,
                delete,
            }) => {
                whole.refused = None;
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
        table: &mut HashMap<String, Row>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Vec<SourceError>), SourceError> {
        let format = self.format_of(path)?;
        let bytes = std::fs::read(path).map_err(|e| SourceError::io(&self.source, path, e))?;
        let mk = |fields: Row, key: String, prev: Option<Row>, kind: RecordKind| Record {
            source: self.source.clone(),
            key,
            fields: with_constants(fields, &self.constants),
            prev,
            observed: now,
            kind,
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

/// The metadata of `path` when it is a regular file (through symlinks);
/// a FIFO, socket, device or folder is refused, never opened.
fn regular_metadata(path: &Path) -> std::io::Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta);
    }
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    };
    Err(std::io::Error::other(format!(
        "is {what}, not a regular file: only regular files are read"
    )))
}

/// Opens a regular file for reading without ever blocking on one that is
/// not (a FIFO swapped in after the check opens at once, and is refused).
fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    regular_metadata(path)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "is not a regular file: only regular files are read",
        ));
    }
    Ok((f, meta))
}

/// The whole of a regular file, and its metadata after reading.
fn read_regular(path: &Path) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read;
    let (mut f, meta) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    f.read_to_end(&mut bytes)?;
    Ok((bytes, f.metadata()?))
}

/// The last byte of a regular file `len` bytes long.
fn last_byte(path: &Path, len: u64) -> std::io::Result<u8> {
    use std::os::unix::fs::FileExt;
    let (f, _) = open_regular(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len - 1)?;
    Ok(b[0])
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

/// Names editors and tools use for temporary and backup files.
pub fn is_temp_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name == "4913"
        || [
            ".swp", ".swx", ".swo", ".tmp", ".bak", ".part", ".orig", ".new",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Quiet time after the last event before a file is read: editors and
/// `cp` write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a burst of events may delay reading.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Metadata poll, for filesystems that send no events.
const POLL: Duration = Duration::from_secs(5);

/// Whether a path is one of a source's files.
#[derive(Clone)]
pub struct PathMatcher {
    path: PathBuf,
    pattern: Option<glob::Pattern>,
}

impl PathMatcher {
    pub fn matches(&self, path: &Path) -> bool {
        if is_temp_name(path) {
            return false;
        }
        match &self.pattern {
            Some(p) => p.matches_path_with(path, GLOB_OPTS),
            None => path == self.path,
        }
    }

    /// The paths of ours that an event says changed; reads say nothing.
    fn relevant(&self, ev: notify::Event) -> Vec<PathBuf> {
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return Vec::new();
        }
        ev.paths.into_iter().filter(|p| self.matches(p)).collect()
    }
}

/// What the reader thread is asked to do.
enum Job {
    /// First look at every file.
    Start,
    /// Read these files, which events or timers say may have changed.
    Read(Vec<PathBuf>),
    /// Read the files whose metadata changed (for filesystems without
    /// events).
    Poll,
}

/// What a job read, for one batch.
#[derive(Default)]
struct Done {
    records: Vec<Record>,
    errors: Vec<SourceError>,
    health: Option<Health>,
    checkpoints: Vec<Checkpoint>,
    /// When to read again files waiting to settle (or with more to read).
    recheck: Option<(std::time::Instant, Vec<PathBuf>)>,
}

/// Watches one file source until `shutdown`. All reading happens on a
/// thread of the source's own: a read that blocks (a file on a stuck NFS
/// or FUSE mount) holds that thread alone, never the runtime's workers,
/// so `/healthz`, the other sources and shutdown go on; this task stops
/// waiting for it at shutdown.
pub async fn run(tracker: FileTracker, tx: mpsc::Sender<Batch>, shutdown: CancellationToken) {
    let name = tracker.name().to_string();
    let (ntx, mut nrx) = mpsc::unbounded_channel::<notify::Result<Vec<PathBuf>>>();
    // Events are sorted on the watcher's thread: the folder may be busy with
    // other files (the store's, say), and those need not wake this task.
    let matcher = tracker.matcher();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let msg = match res {
            Ok(ev) => {
                let ours = matcher.relevant(ev);
                if ours.is_empty() {
                    return;
                }
                Ok(ours)
            }
            Err(e) => Err(e),
        };
        let _ = ntx.send(msg);
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(source = %name, error = %e, "cannot watch files; falling back to polling every {}s", POLL.as_secs());
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        use notify::Watcher;
        for dir in tracker.watch_dirs() {
            if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                tracing::error!(source = %name, dir = %dir.display(), error = %e, "cannot watch folder; polling it every {}s", POLL.as_secs());
            }
        }
    }

    let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let spawned = std::thread::Builder::new()
        .name(format!("tocsin-file-{name}"))
        .spawn(move || reader(tracker, job_rx, done_tx));
    if let Err(e) = spawned {
        tracing::error!(source = %name, error = %e, "cannot start the source's reader thread");
        return;
    }
    let _ = jobs.send(Job::Start);
    let mut busy = true;
    let mut dirty: HashSet<PathBuf> = HashSet::new();
    let mut poll_due = false;
    let mut recheck: Option<(std::time::Instant, Vec<PathBuf>)> = None;
    let mut watching = watcher.is_some();
    let mut poll = tokio::time::interval(POLL);
    poll.tick().await;
    loop {
        let recheck_at = match &recheck {
            Some((t, _)) => tokio::time::Instant::from_std(*t),
            None => tokio::time::Instant::now() + POLL * 1000,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            done = done_rx.recv() => {
                let Some(done) = done else { break };
                busy = false;
                report(&done.errors);
                recheck = done.recheck;
                if !send(&tx, &name, done.records, done.checkpoints, done.health).await {
                    break;
                }
            }
            // Tables waiting to settle are looked at again when their quiet
            // interval is over.
            _ = tokio::time::sleep_until(recheck_at), if recheck.is_some() && !busy => {
                dirty.extend(recheck.take().map(|(_, paths)| paths).unwrap_or_default());
            }
            ev = nrx.recv(), if watching => {
                match ev {
                    Some(Ok(ours)) => dirty.extend(ours),
                    Some(Err(e)) => {
                        tracing::warn!(source = %name, error = %e, "file watch error");
                        continue;
                    }
                    None => {
                        tracing::warn!(source = %name, "file watch ended; polling every {}s", POLL.as_secs());
                        watching = false;
                        continue;
                    }
                }
                // Gather the burst of events an edit makes before reading:
                // read once our files have been quiet for a moment, or at the
                // latest after MAX_WAIT, so a busy log is still read.
                let latest = tokio::time::Instant::now() + MAX_WAIT;
                let debounce = tokio::time::sleep(DEBOUNCE);
                tokio::pin!(debounce);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = &mut debounce => break,
                        more = nrx.recv() => match more {
                            Some(Ok(ours)) => {
                                dirty.extend(ours);
                                debounce.as_mut().reset((tokio::time::Instant::now() + DEBOUNCE).min(latest));
                            }
                            Some(Err(_)) => {}
                            None => {
                                watching = false;
                                break;
                            }
                        },
                    }
                }
            }
            _ = poll.tick() => poll_due = true,
        }
        if busy {
            continue;
        }
        let job = if !dirty.is_empty() {
            let mut paths: Vec<PathBuf> = dirty.drain().collect();
            paths.sort();
            Job::Read(paths)
        } else if poll_due {
            poll_due = false;
            Job::Poll
        } else {
            continue;
        };
        if jobs.send(job).is_err() {
            break;
        }
        busy = true;
    }
    drop(watcher);
}

/// The source's reader thread: does each job and hands back what it read.
/// Ends when the task is gone.
fn reader(
    mut tracker: FileTracker,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    while let Ok(job) = jobs.recv() {
        let now = Utc::now();
        let mut d = Done::default();
        match job {
            Job::Start => {
                let files = tracker.current_files();
                if files.is_empty() {
                    tracing::warn!(
                        source = tracker.name(),
                        "no file matches yet; waiting for one to appear"
                    );
                }
                for path in files {
                    let (records, errors) = tracker.start(&path, now);
                    if !errors.is_empty()
                        && let Ok(m) = std::fs::metadata(&path)
                    {
                        tracker.refused_io.insert(path.clone(), sig(&m));
                    }
                    d.errors.extend(errors);
                    d.records.extend(records);
                }
                d.health = tracker.availability(now);
            }
            Job::Poll => {
                let changed: Vec<PathBuf> = tracker
                    .current_files()
                    .into_iter()
                    .filter(|p| tracker.changed_on_disk(p))
                    .collect();
                tracker.read_paths(changed, now, &mut d);
                match tracker.availability(now) {
                    Some(h @ Health::Missing { .. }) => d.health = Some(h),
                    Some(h) => {
                        d.health.get_or_insert(h);
                    }
                    None => {}
                }
            }
            Job::Read(paths) => {
                tracker.read_paths(paths, now, &mut d);
                // A file that went away starts the missing clock at once.
                if let Some(h @ Health::Missing { .. }) = tracker.availability(now) {
                    d.health = Some(h);
                }
            }
        }
        d.checkpoints = tracker.take_checkpoints();
        d.recheck = tracker.next_recheck();
        if done.send(d).is_err() {
            return;
        }
    }
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

/// Sends what was read, with where reading got to, as one batch.
async fn send(
    tx: &mpsc::Sender<Batch>,
    name: &str,
    records: Vec<Record>,
    checkpoints: Vec<Checkpoint>,
    health: Option<Health>,
) -> bool {
    if records.is_empty() && checkpoints.is_empty() && health.is_none() {
        return true;
    }
    tx.send(Batch {
        source: name.to_string(),
        records,
        checkpoints,
        health,
        restart: false,
    })
    .await
    .is_ok()
}

fn report(errors: &[SourceError]) {
    for e in errors {
        tracing::error!(source = %e.source, "{e}");
    }
}
