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
    pub state: crate::store::Location,
    /// How instances sharing a PostgreSQL store take turns.
    pub ha: HaConfig,
    pub rules: PathBuf,
    pub http: Option<HttpConfig>,
    pub sources: Vec<SourceConfig>,
    pub channels: Vec<ChannelConfig>,
    pub health: HealthConfig,
    pub log: LogConfig,
    pub evidence: EvidenceConfig,
}

/// `ha: { renew: 2s, lease: 10s }`: the leader of instances sharing a
/// PostgreSQL store renews its lease every `renew`; the lease is valid for
/// `lease`, after which a standby takes over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    pub renew: Duration,
    pub lease: Duration,
}

impl Default for HaConfig {
    fn default() -> HaConfig {
        HaConfig {
            renew: Duration::from_secs(2),
            lease: Duration::from_secs(10),
        }
    }
}

/// `evidence: { retention: 400d }`: how long the ledger keeps a document
/// after the last alert that named it.
#[derive(Clone, Debug)]
pub struct EvidenceConfig {
    pub retention: std::time::Duration,
}

impl Default for EvidenceConfig {
    fn default() -> EvidenceConfig {
        EvidenceConfig {
            retention: std::time::Duration::from_secs(400 * 86_400),
        }
    }
}

/// `log:`: the level (`RUST_LOG` wins) and format (`--log-format` wins).
#[derive(Clone, Debug, Default)]
pub struct LogConfig {
    pub level: Option<String>,
    pub format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: coloured on a terminal, without timestamps when
    /// the journal takes them.
    Human,
    /// One JSON object per line.
    Json,
}

/// `health: { notify: [...], missing_after: 10m }`: where
/// `source-unhealthy` alerts go, and how long a file source may have no
/// readable file before it is unhealthy.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub notify: Vec<String>,
    pub missing_after: std::time::Duration,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            notify: Vec::new(),
            missing_after: std::time::Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Asked for explicitly: a listener on an address that is not loopback.
    pub public: bool,
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    /// Constant fields added to every record of this source.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Consecutive failures after which the source counts as unhealthy.
    pub fail_after: u32,
}

#[derive(Clone, Debug)]
pub enum SourceKind {
    File(FileSource),
    Feed(FeedSource),
    Http(HttpSource),
}

impl SourceConfig {
    /// Event sources (log files, feeds) produce one-off records; table sources
    /// produce rows whose state persists until the row changes.
    pub fn is_event_source(&self) -> bool {
        match &self.kind {
            SourceKind::File(f) => f.mode == Mode::Log,
            SourceKind::Feed(_) => true,
            SourceKind::Http(_) => false,
        }
    }

    pub fn key_fields(&self) -> &[String] {
        match &self.kind {
            SourceKind::File(f) => &f.key,
            SourceKind::Feed(_) => &[],
            SourceKind::Http(h) => &h.key,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            SourceKind::File(_) => "file",
            SourceKind::Feed(_) => "feed",
            SourceKind::Http(_) => "http",
        }
    }

    /// How a polled source fetches, if it is one.
    pub fn poll(&self) -> Option<&Poll> {
        match &self.kind {
            SourceKind::File(_) => None,
            SourceKind::Feed(f) => Some(&f.poll),
            SourceKind::Http(h) => Some(&h.poll),
        }
    }
}

/// Where a polled source fetches from, and when and how.
#[derive(Clone, Debug)]
pub struct Poll {
    pub url: Location,
    pub schedule: crate::schedule::Schedule,
    /// Each poll is delayed by a random part of this, to spread load.
    pub jitter: Duration,
    pub connect_timeout: Duration,
    /// For the whole request, body included.
    pub timeout: Duration,
    /// Bodies longer than this are cut off and the poll fails.
    pub max_body: u64,
    /// Sent with each request (only to the source's own host).
    pub headers: Vec<(String, crate::secret::HeaderValue)>,
}

/// An `http(s)://` URL, or a file given as `file:///abs/path` or
/// `file:relative/path` (against the config's folder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Http(url::Url),
    File(PathBuf),
}

impl Location {
    /// What the store keeps to know the source polled this location
    /// before: the URL with its credentials masked, and a hash of the whole
    /// of it (so a changed token is a changed URL), never the credentials.
    pub fn identity(&self) -> String {
        use sha2::Digest;
        match self {
            Location::Http(u) => {
                let h = sha2::Sha256::digest(u.as_str().as_bytes());
                let hex = crate::record::hex(&h[..8]);
                format!("{} #{hex}", crate::secret::mask_url(u.as_str()))
            }
            Location::File(_) => self.to_string(),
        }
    }

    /// The URL relative links in a document resolve against.
    pub fn base(&self) -> String {
        match self {
            Location::Http(u) => u.to_string(),
            Location::File(p) => url::Url::from_file_path(p)
                .map(|u| u.to_string())
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Http(u) => write!(f, "{u}"),
            Location::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// `type: feed`: RSS, Atom or JSON Feed; each new item is one record.
#[derive(Clone, Debug)]
pub struct FeedSource {
    pub poll: Poll,
    /// On the first poll, alert on items published within this window
    /// (otherwise the first poll only records what is there).
    pub backfill: Option<Duration>,
    /// How long the id of an item gone from the feed is remembered.
    pub retention: Duration,
}

/// `type: http`: a JSON or CSV document polled and read as a table.
#[derive(Clone, Debug)]
pub struct HttpSource {
    pub poll: Poll,
    /// `None`: from the answer's Content-Type, else the URL's extension.
    pub format: Option<Format>,
    pub key: Vec<String>,
    /// JSON Pointer to the array of rows.
    pub items: Option<String>,
}

#[derive(Clone, Debug)]
pub struct FileSource {
    /// Absolute path or glob pattern.
    pub path: PathBuf,
    /// `None`: inferred from each file's extension.
    pub format: Option<Format>,
    pub mode: Mode,
    pub key: Vec<String>,
    /// Array logs (json, yaml): the field that identifies an item (else a
    /// hash of the item), and how long an item gone from the file is
    /// remembered.
    pub id_field: String,
    pub retention: std::time::Duration,
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
    pub headers: Vec<(String, crate::secret::HeaderValue)>,
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
    /// [`Config::load`] for commands that only need the config: every
    /// problem rendered (`file:line:col`) into the error.
    pub fn load_or_explain(path: &Path) -> anyhow::Result<Config> {
        Config::load(path).map_err(|p| anyhow::anyhow!("{}", crate::diag::render_all(&p.0)))
    }

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

/// Every secret the config refers to (its `*_env` and `*_file` keys, which
/// only ever name secrets) checked as `run` will resolve it: the variable
/// set and not empty, the file readable and not empty. Each problem is an
/// error at the key's value; `offline` (building a package, say) makes
/// them warnings.
pub fn verify_secrets(path: &Path, offline: bool) -> Vec<Diagnostic> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let src = SourceFile::new(path, text);
    let Ok(tree) = yaml::parse(&src.text) else {
        return vec![];
    };
    let mut found = Vec::new();
    secret_keys(&tree, &mut found);
    let mut out = Vec::new();
    for (key, value) in found {
        let Some(name) = value.as_str() else { continue };
        let reference = if key.ends_with("_env") {
            crate::secret::SecretRef::Env(name.to_string())
        } else {
            crate::secret::SecretRef::File(std::path::PathBuf::from(name))
        };
        if let Err(e) = reference.resolve() {
            out.push(Diagnostic {
                file: path.to_path_buf(),
                pos: value.pos(),
                severity: if offline {
                    crate::diag::Severity::Warning
                } else {
                    crate::diag::Severity::Error
                },
                message: format!("`{key}`: {e}"),
                hint: Some(if key.ends_with("_env") {
                    format!("set {name} in the daemon's environment (under systemd: `Environment=` or `EnvironmentFile=`), or use a `*_file`; `check --offline` only warns")
                } else {
                    "write the secret into the file (readable by the daemon), e.g. with `systemd-creds` or `install -m 600`; `check --offline` only warns".into()
                }),
                line_text: src.line(value.line).map(str::to_string),
            });
        }
    }
    out
}

fn secret_keys<'n>(n: &'n yaml::Node, out: &mut Vec<(String, &'n yaml::Node)>) {
    match &n.kind {
        yaml::Kind::Map(entries) => {
            for (k, v) in entries {
                match k.as_str() {
                    Some(key) if key.ends_with("_env") || key.ends_with("_file") => {
                        out.push((key.to_string(), v))
                    }
                    _ => secret_keys(v, out),
                }
            }
        }
        yaml::Kind::Seq(items) => items.iter().for_each(|i| secret_keys(i, out)),
        _ => {}
    }
}
