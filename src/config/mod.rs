//! The daemon config (`tocsin.yaml`): model, loading with positions, and
//! validation. Every problem in the file is reported in one pass.

pub mod read;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostic, Diags, Problems, SourceFile};
use crate::secret::SecretRef;
use crate::yaml;

#[derive(Clone, Debug)]
pub struct Config {
    /// The config file itself, and the folder relative paths resolve against.
    pub path: PathBuf,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub rules: PathBuf,
    pub http: Option<HttpConfig>,
    pub sources: Vec<SourceConfig>,
    pub channels: Vec<ChannelConfig>,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    /// Constant fields added to every record of this source.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug)]
pub enum SourceKind {
    File(FileSource),
}

impl SourceConfig {
    /// Event sources (log files, feeds) produce one-off records; table sources
    /// produce rows whose state persists until the row changes.
    pub fn is_event_source(&self) -> bool {
        match &self.kind {
            SourceKind::File(f) => f.mode == Mode::Log,
        }
    }

    pub fn key_fields(&self) -> &[String] {
        match &self.kind {
            SourceKind::File(f) => &f.key,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FileSource {
    /// Absolute path or glob pattern.
    pub path: PathBuf,
    /// `None`: inferred from each file's extension.
    pub format: Option<Format>,
    pub mode: Mode,
    pub key: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Tsv,
    Json,
    Jsonl,
    Yaml,
}

impl Format {
    pub const NAMES: [&'static str; 5] = ["csv", "tsv", "json", "jsonl", "yaml"];

    pub fn from_name(s: &str) -> Option<Format> {
        Some(match s.to_ascii_lowercase().as_str() {
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::Jsonl,
            "yaml" | "yml" => Format::Yaml,
            _ => return None,
        })
    }

    pub fn from_path(p: &Path) -> Option<Format> {
        Format::from_name(p.extension()?.to_str()?)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    Log,
}

#[derive(Clone, Debug)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Gather notifications and send one message per tick.
    pub digest: Option<crate::schedule::Schedule>,
    /// How long a notification may keep failing before it is marked failed.
    pub retry_budget: Duration,
}

#[derive(Clone, Debug)]
pub enum ChannelKind {
    Email(EmailChannel),
    Webhook(WebhookChannel),
    File { path: PathBuf },
    Log,
}

impl ChannelKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Email(_) => "email",
            ChannelKind::Webhook(_) => "webhook",
            ChannelKind::File { .. } => "file",
            ChannelKind::Log => "log",
        }
    }
}

#[derive(Clone, Debug)]
pub struct EmailChannel {
    pub smtp: SmtpConfig,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

#[derive(Clone, Debug)]
pub struct WebhookChannel {
    pub url: String,
    pub format: WebhookFormat,
    pub secret: Option<SecretRef>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum WebhookFormat {
    Json,
    Slack,
    /// A minijinja template over the payload; the body sent as is.
    Template {
        body: String,
        content_type: String,
    },
}

impl Config {
    /// Reads and validates a config file; every problem comes back at once.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Diagnostic {
                file: path.to_path_buf(),
                pos: Default::default(),
                severity: crate::diag::Severity::Error,
                message: format!("cannot read the config file: {e}"),
                hint: Some("pass the config with -c PATH or set TOCSIN_CONFIG".into()),
                line_text: None,
            }])
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        let src = SourceFile::new(path, text);
        let mut d = Diags::new(&src);
        let cfg = match yaml::parse(text) {
            Ok(node) => read::config(path, &node, &mut d),
            Err(e) => {
                d.error(e.pos, e.message, None);
                None
            }
        };
        match cfg {
            Some(c) if !d.has_errors() => Ok(c),
            _ => Err(Problems(d.out)),
        }
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// Default config path: `$TOCSIN_CONFIG`, else `/etc/tocsin/tocsin.yaml`,
/// else `config/tocsin.yaml` when run from a checkout.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TOCSIN_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let etc = PathBuf::from("/etc/tocsin/tocsin.yaml");
    if etc.exists() {
        return etc;
    }
    PathBuf::from("config/tocsin.yaml")
}

/// Whether `host` names this machine's loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}
