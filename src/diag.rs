//! User-facing diagnostics: `file:line:col: error: …`, the offending line with a
//! caret, and a hint saying what to write instead. Config, rules and test files
//! all report through this type so analysts see one format everywhere.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a file, 1-based. Line 0 means "the file as a whole".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
    /// Width of the caret run under the offending text.
    pub len: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize, len: usize) -> Self {
        Pos { line, col, len }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in one file.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Pos,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
    /// The offending source line, captured when the diagnostic is made so
    /// rendering needs no file access.
    pub line_text: Option<String>,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The first line alone, as logged by the daemon.
    pub fn headline(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut s = if self.pos.line > 0 {
            format!(
                "{}:{}:{}: {sev}: {}",
                self.file.display(),
                self.pos.line,
                self.pos.col,
                self.message
            )
        } else {
            format!("{}: {sev}: {}", self.file.display(), self.message)
        };
        if let Some(h) = &self.hint {
            s.push_str(" (hint: ");
            s.push_str(h);
            s.push(')');
        }
        s
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.pos.line > 0 {
            writeln!(
                f,
                "{}:{}:{}: {sev}: {}",
                self.file.display(),
                self.pos.line,
                self.pos.col,
                self.message
            )?;
        } else {
            writeln!(f, "{}: {sev}: {}", self.file.display(), self.message)?;
        }
        if let Some(text) = &self.line_text {
            let num = self.pos.line.to_string();
            let pad = " ".repeat(num.len());
            let mut col = self.pos.col.max(1);
            // A long line is shown around the column, its cut ends marked.
            const WIDTH: usize = 160;
            let chars: Vec<char> = text.chars().collect();
            let (start, end) = if chars.len() <= WIDTH {
                (0, chars.len())
            } else {
                let start = col.saturating_sub(WIDTH / 2).min(chars.len() - WIDTH);
                (start, start + WIDTH)
            };
            let shown: String = chars[start..end].iter().collect();
            let (open, close) = (
                if start > 0 { "…" } else { "" },
                if end < chars.len() { "…" } else { "" },
            );
            writeln!(f, " {num} | {open}{shown}{close}")?;
            col = col - start + usize::from(start > 0);
            // Carets line up by characters; tabs are kept so terminals align.
            let lead: String = chars[start..end]
                .iter()
                .chain(std::iter::repeat(&' '))
                .take(col - 1 - usize::from(start > 0))
                .map(|&c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let lead = if start > 0 { format!(" {lead}") } else { lead };
            let width = self.pos.len.clamp(1, WIDTH);
            writeln!(f, " {pad} | {lead}{}", "^".repeat(width))?;
        }
        if let Some(h) = &self.hint {
            writeln!(f, "   = hint: {h}")?;
        }
        Ok(())
    }
}

/// The text of one file being checked, so diagnostics can quote its lines.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
    /// Where each line starts, found once: quoting a line costs a look-up,
    /// however many problems a large file has.
    starts: Arc<[usize]>,
}

impl SourceFile {
    pub fn new(path: &Path, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let starts = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1))
            .collect();
        SourceFile {
            path: path.to_path_buf(),
            text,
            starts,
        }
    }

    pub fn line(&self, line: usize) -> Option<&str> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        let end = self.starts.get(line).map_or(self.text.len(), |&e| e - 1);
        if start >= self.text.len() {
            return None;
        }
        Some(self.text[start..end].trim_end_matches('\r'))
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Diags<'a> {
    pub src: &'a SourceFile,
    pub out: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub fn new(src: &'a SourceFile) -> Self {
        Diags {
            src,
            out: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, pos, message.into(), hint);
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, pos, message.into(), hint);
    }

    fn push(&mut self, severity: Severity, pos: Pos, message: String, hint: Option<String>) {
        let line_text = self.src.line(pos.line).map(str::to_string);
        self.out.push(Diagnostic {
            file: self.src.path.clone(),
            pos,
            severity,
            message,
            hint,
            line_text,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.out.iter().any(Diagnostic::is_error)
    }
}

/// The candidate closest to `word`, when one is close enough to suggest.
pub fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let w = word.to_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&w, &c.to_lowercase());
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// "did you mean `x`?" among `candidates`, when one is close enough.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// Errors of a whole load: every problem of every file, in one pass.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_all(.0))]
pub struct Problems(pub Vec<Diagnostic>);

pub fn render_all(diags: &[Diagnostic]) -> String {
    let mut s = String::new();
    for d in diags {
        s.push_str(&d.to_string());
    }
    s
}
