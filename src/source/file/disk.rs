//! Files as the file source sees them: a signature that says whether a file
//! changed, reading a table whole once it has settled, opening only
//! regular files, the names of editors' temporary files, and which paths
//! are a source's.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What we know of a file without reading it; a change means re-read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sig {
    pub(super) len: u64,
    pub(super) mtime: Option<std::time::SystemTime>,
    pub(super) ino: u64,
    pub(super) dev: u64,
}

pub(super) fn sig(meta: &std::fs::Metadata) -> Sig {
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
pub(super) struct Settle {
    pub(super) sig: Sig,
    pub(super) since: std::time::Instant,
    pub(super) wait: Duration,
}

/// How long a table must stay put before a new version is read: a writer
/// caught between two rows leaves a file that parses but is not the table.
pub(super) const QUIET: Duration = Duration::from_millis(200);
/// The same for a file whose last line has no newline yet.
pub(super) const QUIET_TAIL: Duration = Duration::from_secs(1);
/// The longest wait, for a file that keeps changing.
pub(super) const QUIET_MAX: Duration = Duration::from_secs(5);

/// A file read as a whole document (a table, an array log): which version
/// was last judged, the one waiting to settle, the last one refused.
#[derive(Debug, Default)]
pub(super) struct Whole {
    /// The version last judged (compared or refused).
    pub(super) sig: Option<Sig>,
    pub(super) settle: Option<Settle>,
    /// The SHA-256 of the version last refused: reported once.
    pub(super) refused: Option<[u8; 32]>,
}

impl Whole {
    /// The bytes of a new version once it is whole: it must have stayed
    /// put for a quiet interval (longer while its last line has no
    /// newline) and be read without changing. `None` until then, and for
    /// a version already judged or an empty file (an in-place write
    /// truncates first: an empty file is one being written).
    pub(super) fn settled_read(&mut self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
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
    pub(super) fn refuse(&mut self, bytes: &[u8]) -> bool {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(bytes).into();
        let first = self.refused != Some(hash);
        self.refused = Some(hash);
        first
    }
}

/// How much of a log's beginning identifies it.
pub(super) const PREFIX: u64 = 4096;
/// The most of a log read at once: a burst of appends is read in parts.
pub(super) const MAX_READ: u64 = 64 << 20;

/// The SHA-256 of the first `len` bytes of `f`.
pub(super) fn prefix_hash(f: &std::fs::File, len: u64) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0)?;
    Ok(sha2::Sha256::digest(&buf).into())
}

pub(super) const GLOB_OPTS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// The metadata of `path` when it is a regular file (through symlinks);
/// a FIFO, socket, device or folder is refused, never opened.
pub(super) fn regular_metadata(path: &Path) -> std::io::Result<std::fs::Metadata> {
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
pub(super) fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
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
pub(super) fn read_regular(path: &Path) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read;
    let (mut f, meta) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    f.read_to_end(&mut bytes)?;
    Ok((bytes, f.metadata()?))
}

/// The last byte of a regular file `len` bytes long.
pub(super) fn last_byte(path: &Path, len: u64) -> std::io::Result<u8> {
    use std::os::unix::fs::FileExt;
    let (f, _) = open_regular(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len - 1)?;
    Ok(b[0])
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

/// Whether a path is one of a source's files.
#[derive(Clone)]
pub struct PathMatcher {
    pub(super) path: PathBuf,
    pub(super) pattern: Option<glob::Pattern>,
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
    pub(super) fn relevant(&self, ev: notify::Event) -> Vec<PathBuf> {
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return Vec::new();
        }
        ev.paths.into_iter().filter(|p| self.matches(p)).collect()
    }
}
