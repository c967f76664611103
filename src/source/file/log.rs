//! Files read as logs: a CSV/TSV/JSONL log from where reading got to (the
//! file known to be the same by its inode and a hash of its first bytes),
//! and a JSON or YAML array whose items are known by their id.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::disk::{MAX_READ, PREFIX, open_regular, prefix_hash, sig};
use super::{FileState, FileTracker, REFRESH_SEEN, item_id, log_lines, parse_error, read_header};
use crate::config::{Format, Mode};
use crate::record::{Record, RecordKind, Row, with_constants};
use crate::source::batch::SourceError;
use crate::source::parse::{self, ParseError};
use crate::store::{Checkpoint, LogCursor};

impl FileTracker {
    pub(super) fn log_checkpoint(&mut self, path: &Path) {
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

    /// A log seen for the first time: what is in it is history. Counts its
    /// lines in parts (for the keys of the lines to come), keeps its header
    /// and the hash of its beginning.
    pub(super) fn log_baseline(&self, path: &Path) -> Result<FileState, SourceError> {
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

    /// What was appended to a log since the stored position, and no more:
    /// the file is known to be the same by its (device, inode) and a hash
    /// of its first bytes, and read from that position. A replaced,
    /// rewritten or truncated file is read from its beginning. Only whole
    /// lines count; a line that is not UTF-8 or does not parse is reported
    /// and skipped.
    pub(super) fn read_log(
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
        // Shared, not copied, by the documents of the lines read from it.
        let chunk = bytes::Bytes::from(chunk).slice(..end);
        let file: std::sync::Arc<Path> = std::sync::Arc::from(path);
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
                        doc: Some(crate::record::Document::file(
                            &file,
                            chunk.slice_ref(text.as_bytes()),
                        )),
                        line: n as u32,
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
    pub(super) fn is_array(&self, path: &Path) -> bool {
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
    pub(super) fn read_items(
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
                            doc: None,
                            line: 0,
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
}
