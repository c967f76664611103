//! Walks the YAML tree of a config file into [`Config`], reporting every
//! problem with its position.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::diag::{Diags, Pos, did_you_mean};
use crate::secret::SecretRef;
use crate::store::Location as StoreLocation;
use crate::yaml::read::{describe, duration, entries, number, required, string, strings};
use crate::yaml::{Kind, MapReader, Node};

mod channel;
use channel::{channel, headers, timeout};

pub fn config(path: &Path, node: &Node, d: &mut Diags) -> Option<Config> {
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut m = MapReader::new(node, "config", d)?;
    let resolve = |p: &str| -> PathBuf { dir.join(p) };

    let state = m
        .get("state")
        .and_then(|n| Some((n.pos(), string(n, "state", d)?)));
    let state_password = channel::secret(
        &mut m,
        "state_password",
        "state_password_env",
        "state_password_file",
        d,
    );
    let ca = m
        .get("state_ca")
        .and_then(|n| string(n, "state_ca", d))
        .map(|f| resolve(&f));
    let state = self::state(state, state_password, ca, &resolve, d);
    let ha = m.get("ha").and_then(|n| ha(n, d)).unwrap_or_default();
    let rules = required(
        &mut m,
        "rules",
        "add `rules: rules/` (a folder of *.yaml files, or one file)",
        d,
    )
    .and_then(|n| string(n, "rules", d))
    .map(|s| resolve(&s));
    let http = m.get("http").and_then(|n| http(n, d));
    let log = m.get("log").and_then(|n| log(n, d)).unwrap_or_default();

    let mut sources = Vec::new();
    if let Some(list) = m.get("sources") {
        for item in seq(list, "sources", d) {
            if let Some(s) = source(item, &dir, d) {
                if sources.iter().any(|o: &SourceConfig| o.name == s.name) {
                    d.error(
                        item.pos(),
                        format!("source `{}` is defined twice", s.name),
                        Some("give each source its own name".into()),
                    );
                }
                sources.push(s);
            }
        }
    }
    let mut channels = Vec::new();
    if let Some(list) = m.get("channels") {
        for item in seq(list, "channels", d) {
            if let Some(c) = channel(item, &dir, d) {
                if channels.iter().any(|o: &ChannelConfig| o.name == c.name) {
                    d.error(
                        item.pos(),
                        format!("channel `{}` is defined twice", c.name),
                        Some("give each channel its own name".into()),
                    );
                }
                channels.push(c);
            }
        }
    }
    let health = m
        .get("health")
        .and_then(|n| health(n, &channels, d))
        .unwrap_or_default();
    let evidence = m
        .get("evidence")
        .and_then(|n| evidence(n, d))
        .unwrap_or_default();
    m.finish(d);
    Some(Config {
        path: path.to_path_buf(),
        dir,
        state,
        ha,
        rules: rules?,
        http,
        sources,
        channels,
        health,
        log,
        evidence,
    })
}

/// `state:`: an SQLite file (relative to the config's folder), or a
/// PostgreSQL URL without its password, which comes from
/// `state_password_env`/`state_password_file`; its server's certificate
/// checked against the system's roots and `state_ca`.
fn state(
    written: Option<(Pos, String)>,
    password: Option<SecretRef>,
    ca: Option<PathBuf>,
    resolve: &dyn Fn(&str) -> PathBuf,
    d: &mut Diags,
) -> StoreLocation {
    let Some((pos, s)) = written else {
        return StoreLocation::File(PathBuf::from("/var/lib/tocsin/state.db"));
    };
    if !StoreLocation::is_postgres_url(&s) {
        if password.is_some() || ca.is_some() {
            d.error(
                pos,
                "`state_password_env`/`state_password_file`/`state_ca` is set, but `state:` is an SQLite file, which has no password nor certificate",
                Some("remove it, or write `state: postgres://user@host/database`".into()),
            );
        }
        return StoreLocation::File(resolve(&s));
    }
    match url::Url::parse(&s) {
        Ok(u) if u.password().is_some() => d.error(
            pos,
            "the password may not be written in `state:` in clear",
            Some("remove it from the URL, and write `state_password_env: VAR` or `state_password_file: /path`".into()),
        ),
        Ok(_) => match s.parse::<tokio_postgres::Config>() {
            Err(e) => d.error(
                pos,
                format!("`{s}` is not a PostgreSQL URL: {e}"),
                Some("write `state: postgres://user@host:5432/database`".into()),
            ),
            Ok(c) if c.get_ssl_mode() == tokio_postgres::config::SslMode::Disable
                && !crate::store::pg::loopback(&c) =>
            {
                d.error(
                    pos,
                    "`sslmode=disable` sends the store's password and data in clear to another machine",
                    Some("remove `sslmode=disable` (TLS is the default for a server on another machine; `state_ca: /path/ca.pem` trusts a private authority), or keep the database on loopback".into()),
                )
            }
            Ok(_) => {}
        },
        Err(e) => d.error(
            pos,
            format!("`{s}` is not a PostgreSQL URL: {e}"),
            Some("write `state: postgres://user@host:5432/database`".into()),
        ),
    }
    StoreLocation::Postgres {
        url: s,
        password,
        ca,
    }
}

/// `ha: { renew: 2s, lease: 10s }`.
fn ha(n: &Node, d: &mut Diags) -> Option<HaConfig> {
    let mut m = MapReader::new(n, "ha", d)?;
    let default = HaConfig::default();
    let renew = m
        .get("renew")
        .and_then(|n| duration(n, "renew", d))
        .unwrap_or(default.renew);
    let lease = m
        .get("lease")
        .and_then(|n| duration(n, "lease", d))
        .unwrap_or(default.lease);
    if renew.is_zero() || renew * 2 > lease {
        d.error(
            n.pos(),
            format!(
                "`ha.renew` ({}) must be at most half of `ha.lease` ({}): a leader must renew at least twice before its lease runs out",
                humantime::format_duration(renew),
                humantime::format_duration(lease)
            ),
            Some("keep the defaults, `renew: 2s` and `lease: 10s`".into()),
        );
    }
    m.finish(d);
    Some(HaConfig { renew, lease })
}

/// `evidence: { retention: 400d }`.
fn evidence(n: &Node, d: &mut Diags) -> Option<EvidenceConfig> {
    let mut m = MapReader::new(n, "evidence", d)?;
    let retention = m
        .get("retention")
        .and_then(|n| duration(n, "retention", d))
        .unwrap_or(EvidenceConfig::default().retention);
    m.finish(d);
    Some(EvidenceConfig { retention })
}

/// `log: { level: info, format: json }`.
fn log(n: &Node, d: &mut Diags) -> Option<LogConfig> {
    let mut m = MapReader::new(n, "log", d)?;
    let level = m.get("level").and_then(|n| {
        let text = string(n, "level", d)?;
        match tracing_subscriber::EnvFilter::try_new(&text) {
            Ok(_) => Some(text),
            Err(e) => {
                d.error(
                    n.pos(),
                    format!("`{text}` is not a log level or filter: {e}"),
                    Some(
                        "write one of error, warn, info, debug, trace (or `info,tocsin=debug`)"
                            .into(),
                    ),
                );
                None
            }
        }
    });
    let format = m
        .get("format")
        .and_then(|n| one_of(n, "log format", &["human", "json"], d))
        .map(|f| match f {
            "json" => LogFormat::Json,
            _ => LogFormat::Human,
        });
    m.finish(d);
    Some(LogConfig { level, format })
}

fn seq<'n>(n: &'n Node, what: &str, d: &mut Diags) -> &'n [Node] {
    match &n.kind {
        Kind::Seq(items) => items,
        Kind::Null => &[],
        _ => {
            d.error(
                n.pos(),
                format!(
                    "`{what}` must be a list (items starting with `- `), found {}",
                    n.type_name()
                ),
                None,
            );
            &[]
        }
    }
}

fn http(n: &Node, d: &mut Diags) -> Option<HttpConfig> {
    let mut m = MapReader::new(n, "http", d)?;
    let listen = required(&mut m, "listen", "write `listen: 127.0.0.1:9187`", d);
    let public = m
        .get("public")
        .and_then(|n| crate::yaml::read::boolean(n, "`public`", d))
        .unwrap_or(false);
    m.finish(d);
    let listen = listen?;
    let text = string(listen, "listen", d)?;
    match text.parse::<std::net::SocketAddr>() {
        Ok(addr) if !addr.ip().is_loopback() && !public => {
            d.error(
                listen.pos(),
                format!(
                    "`{text}` is not a loopback address: /healthz and /metrics would be open to the network"
                ),
                Some(format!(
                    "write `127.0.0.1:{}`, or add `public: true` to listen on `{text}` on purpose",
                    addr.port()
                )),
            );
            None
        }
        Ok(listen) => Some(HttpConfig { listen, public }),
        Err(_) => {
            d.error(
                listen.pos(),
                format!("`{text}` is not an address and port"),
                Some("write `127.0.0.1:9187`".into()),
            );
            None
        }
    }
}

/// `health: { notify: [channel, ...], missing_after: 10m }`.
fn health(n: &Node, channels: &[ChannelConfig], d: &mut Diags) -> Option<HealthConfig> {
    let mut m = MapReader::new(n, "health", d)?;
    let notify = required(
        &mut m,
        "notify",
        "write `notify: [channel, ...]`: where `source-unhealthy` alerts go",
        d,
    )
    .map(|n| strings(n, "a channel name", d))
    .unwrap_or_default();
    let missing_after = m
        .get("missing_after")
        .and_then(|n| duration(n, "missing_after", d))
        .unwrap_or(HealthConfig::default().missing_after);
    m.finish(d);
    for (c, pos) in &notify {
        if !channels.iter().any(|ch| &ch.name == c) {
            let hint = did_you_mean(c, channels.iter().map(|ch| ch.name.as_str()))
                .unwrap_or_else(|| "name a channel defined under `channels:`".into());
            d.error(*pos, format!("unknown channel `{c}`"), Some(hint));
        }
    }
    Some(HealthConfig {
        notify: notify.into_iter().map(|(c, _)| c).collect(),
        missing_after,
    })
}

fn name(m: &mut MapReader, what: &str, d: &mut Diags) -> Option<String> {
    let n = required(
        m,
        "name",
        &format!("give the {what} a `name:`, used by rules to refer to it"),
        d,
    )?;
    let s = string(n, "name", d)?;
    if s.is_empty() || !s.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)) {
        d.error(
            n.pos(),
            format!("`{s}` is not a valid {what} name"),
            Some("use letters, digits, `-`, `_` and `.`".into()),
        );
    }
    Some(s)
}

fn one_of<'a>(n: &Node, what: &str, choices: &[&'a str], d: &mut Diags) -> Option<&'a str> {
    let s = string(n, what, d)?;
    if let Some(c) = choices.iter().find(|c| c.eq_ignore_ascii_case(&s)) {
        return Some(c);
    }
    let hint = did_you_mean(&s, choices.iter().copied())
        .unwrap_or_else(|| format!("write one of: {}", choices.join(", ")));
    d.error(n.pos(), format!("unknown {what} `{s}`"), Some(hint));
    None
}

const SOURCE_TYPES: [&str; 3] = ["file", "feed", "http"];
const FILE_KEYS: [&str; 6] = ["path", "format", "mode", "key", "id_field", "retention"];
const POLL_KEYS: [&str; 8] = [
    "url",
    "every",
    "schedule",
    "timezone",
    "jitter",
    "connect_timeout",
    "timeout",
    "headers",
];

fn source(n: &Node, dir: &Path, d: &mut Diags) -> Option<SourceConfig> {
    let mut m = MapReader::new(n, "source", d)?;
    let name = name(&mut m, "source", d);
    let ty = required(
        &mut m,
        "type",
        "write `type:` with one of: file, feed, http",
        d,
    )
    .and_then(|t| one_of(t, "source type", &SOURCE_TYPES, d));
    let mut fields = serde_json::Map::new();
    if let Some(f) = m.get("fields") {
        for (k, v) in entries(f, "fields", d) {
            if let Some(k) = string(k, "a field name", d) {
                fields.insert(k, v.to_json());
            }
        }
    }
    let fail_after = match m.get("fail_after") {
        Some(n) => match number(n, "fail_after", d) {
            Some(v) if v >= 1.0 && v.fract() == 0.0 => v as u32,
            Some(_) => {
                d.error(
                    n.pos(),
                    "`fail_after` must be a whole number of at least 1",
                    Some("write e.g. `fail_after: 3`".into()),
                );
                DEFAULT_FAIL_AFTER
            }
            None => DEFAULT_FAIL_AFTER,
        },
        None => DEFAULT_FAIL_AFTER,
    };
    let kind = match ty {
        Some("file") => file_source(&mut m, dir, d).map(SourceKind::File),
        Some("feed") => feed_source(&mut m, dir, d).map(SourceKind::Feed),
        Some("http") => http_source(&mut m, dir, d).map(SourceKind::Http),
        _ => {
            m.allow(&FILE_KEYS);
            m.allow(&POLL_KEYS);
            m.allow(&["max_body", "backfill", "retention", "items"]);
            None
        }
    };
    m.finish(d);
    Some(SourceConfig {
        name: name?,
        kind: kind?,
        fields,
        fail_after,
    })
}

/// How long an item gone from an array log is remembered (as feed items).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Failures in a row before a source is reported unhealthy.
pub const DEFAULT_FAIL_AFTER: u32 = 3;

fn feed_source(m: &mut MapReader, dir: &Path, d: &mut Diags) -> Option<FeedSource> {
    let poll = poll(m, dir, "https://www.meti.go.jp/english/press/rss.xml", d);
    let backfill = m.get("backfill").and_then(|n| duration(n, "backfill", d));
    let retention = m
        .get("retention")
        .and_then(|n| duration(n, "retention", d))
        .unwrap_or(Duration::from_secs(90 * 86400));
    Some(FeedSource {
        poll: poll?,
        backfill,
        retention,
    })
}

fn http_source(m: &mut MapReader, dir: &Path, d: &mut Diags) -> Option<HttpSource> {
    let poll = poll(m, dir, "https://example.org/rates.json", d);
    let format = m
        .get("format")
        .and_then(|n| one_of(n, "format", &["json", "csv", "tsv"], d))
        .and_then(Format::from_name);
    let key_node = m.get("key");
    let key: Vec<String> = key_node
        .map(|n| strings(n, "key", d).into_iter().map(|(s, _)| s).collect())
        .unwrap_or_default();
    if key.is_empty() {
        let pos = key_node
            .map(Node::pos)
            .unwrap_or(Pos::new(m.node.line, m.node.col, 1));
        d.error(
            pos,
            "an `http` source is read as a table and needs a `key`: the fields that identify a row",
            Some("add e.g. `key: [partner]`".into()),
        );
    }
    let items = m.get("items").and_then(|n| {
        let p = string(n, "items", d)?;
        if !p.is_empty() && !p.starts_with('/') {
            d.error(
                n.pos(),
                format!("`{p}` is not a JSON Pointer"),
                Some(format!("a JSON Pointer starts with `/`: write `/{p}`")),
            );
        }
        Some(p)
    });
    Some(HttpSource {
        poll: poll?,
        format,
        key,
        items,
    })
}

/// The keys every polled source shares: where, when, and limits.
fn poll(m: &mut MapReader, dir: &Path, example: &str, d: &mut Diags) -> Option<Poll> {
    let url = required(
        m,
        "url",
        &format!("write the address to poll, e.g. `url: {example}` (or `file:///path`)"),
        d,
    )
    .and_then(|n| location(n, dir, d));
    let at = Pos::new(m.node.line, m.node.col, 1);
    let schedule = schedule(m, at, "a polled source", "every: 10m", d);
    let jitter = m
        .get("jitter")
        .and_then(|n| duration(n, "jitter", d))
        .unwrap_or_default();
    let connect_timeout = m
        .get("connect_timeout")
        .and_then(|n| duration(n, "connect_timeout", d))
        .unwrap_or(Duration::from_secs(10));
    let timeout = timeout(m, Duration::from_secs(30), d);
    let max_body = m
        .get("max_body")
        .and_then(|n| size(n, "max_body", d))
        .unwrap_or(10 << 20);
    let headers = m.get("headers").map(|h| headers(h, d)).unwrap_or_default();
    Some(Poll {
        url: url?,
        schedule: schedule?,
        jitter,
        connect_timeout,
        timeout,
        max_body,
        headers,
    })
}

fn location(n: &Node, dir: &Path, d: &mut Diags) -> Option<Location> {
    let text = string(n, "url", d)?;
    let bad = |d: &mut Diags, why: String| {
        d.error(
            n.pos(),
            why,
            Some("write an `http://` or `https://` URL, or `file:///absolute/path` (`file:relative/path` resolves against the config's folder)".into()),
        );
        None
    };
    if let Some(rest) = text.strip_prefix("file:") {
        let path = match rest.strip_prefix("//") {
            Some(abs) if abs.starts_with('/') => PathBuf::from(abs),
            Some(_) => {
                return bad(
                    d,
                    format!("`{text}` names a host; a file URL is `file:///absolute/path`"),
                );
            }
            None => dir.join(rest),
        };
        return Some(Location::File(path));
    }
    match url::Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Some(Location::Http(u))
        }
        Ok(u) => bad(
            d,
            format!("`{text}`: the `{}` scheme is not supported", u.scheme()),
        ),
        Err(e) => bad(d, format!("`{text}` is not a URL: {e}")),
    }
}

/// `10MiB`, `512KiB`, `1MB`, or a number of bytes.
fn size(n: &Node, what: &str, d: &mut Diags) -> Option<u64> {
    let text = n.scalar_text().unwrap_or_default();
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => 0,
    };
    match num.parse::<f64>() {
        Ok(v) if mult > 0 && v > 0.0 => Some((v * mult as f64) as u64),
        _ => {
            d.error(
                n.pos(),
                format!("{what} is not a size: {}", describe(n)),
                Some("write a number of bytes or a size such as `10MiB` or `512KiB`".into()),
            );
            None
        }
    }
}

/// `every: DURATION`, or `schedule:` (5-field cron) with an optional
/// `timezone:` (default UTC). `at` is where to report a missing schedule.
fn schedule(
    m: &mut MapReader,
    at: Pos,
    what: &str,
    example: &str,
    d: &mut Diags,
) -> Option<crate::schedule::Schedule> {
    let every_node = m.get("every");
    let every = every_node.and_then(|e| duration(e, "every", d));
    if let (Some(e), Some(n)) = (every, every_node)
        && e.is_zero()
    {
        d.error(
            n.pos(),
            "`every` must be longer than zero",
            Some("write e.g. `every: 10m`".into()),
        );
    }
    let tz = match m.get("timezone") {
        Some(t) => {
            let name = string(t, "timezone", d).unwrap_or_default();
            match name.parse::<chrono_tz::Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    let hint = crate::diag::did_you_mean(
                        &name,
                        chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()),
                    )
                    .unwrap_or_else(|| {
                        "write an IANA zone such as `Europe/Brussels`, `Asia/Tokyo` or `UTC`".into()
                    });
                    d.error(t.pos(), format!("unknown time zone `{name}`"), Some(hint));
                    // Go on with UTC so the schedule is checked too.
                    chrono_tz::UTC
                }
            }
        }
        None => chrono_tz::UTC,
    };
    let schedule = m.get("schedule");
    match (schedule, every) {
        (Some(s), None) => {
            let expr = string(s, "schedule", d)?;
            match crate::schedule::Schedule::cron(&expr, tz) {
                Ok(sched) => Some(sched),
                Err(e) => {
                    d.error(s.pos(), format!("`{expr}` is not a 5-field cron schedule: {e}"), Some("write minute hour day-of-month month day-of-week, e.g. `0 8 * * MON-FRI`".into()));
                    None
                }
            }
        }
        (None, Some(e)) => Some(crate::schedule::Schedule::Every(e)),
        (Some(s), Some(_)) => {
            d.error(
                s.pos(),
                format!("{what} has either `schedule:` or `every:`, not both"),
                None,
            );
            None
        }
        (None, None) => {
            d.error(
                at,
                format!("{what} needs a `schedule:` (5-field cron) or `every:`"),
                Some(format!("write `{example}`, or e.g. `schedule: \"0 8 * * MON-FRI\"` with `timezone: Europe/Brussels`")),
            );
            None
        }
    }
}

fn file_source(m: &mut MapReader, dir: &Path, d: &mut Diags) -> Option<FileSource> {
    let path_node = required(
        m,
        "path",
        "write the data file's path, e.g. `path: data/tariffs.csv` (a glob such as `data/*.csv` works too)",
        d,
    );
    let path = path_node
        .and_then(|n| string(n, "path", d))
        .map(|p| dir.join(p));
    let format = m
        .get("format")
        .and_then(|n| one_of(n, "format", &Format::NAMES, d))
        .and_then(Format::from_name);
    if let (Some(p), None, Some(pn)) = (&path, format, path_node)
        && Format::from_path(p).is_none()
    {
        d.error(
            pn.pos(),
            format!(
                "cannot tell the format of `{}` from its extension",
                p.display()
            ),
            Some(format!(
                "add `format:` with one of: {}",
                Format::NAMES.join(", ")
            )),
        );
    }
    let mode = match m.get("mode") {
        Some(n) => match one_of(n, "mode", &["table", "log"], d) {
            Some("log") => Mode::Log,
            Some(_) => Mode::Table,
            None => Mode::Table,
        },
        None => Mode::Table,
    };
    let key_node = m.get("key");
    let key: Vec<String> = key_node
        .map(|n| strings(n, "key", d).into_iter().map(|(s, _)| s).collect())
        .unwrap_or_default();
    if mode == Mode::Table && key.is_empty() {
        let pos = key_node
            .map(Node::pos)
            .unwrap_or(Pos::new(m.node.line, m.node.col, 1));
        d.error(
            pos,
            "a `table` source needs a `key`: the columns that identify a row",
            Some(
                "add e.g. `key: [partner, product]`, or `mode: log` if each line is a new event"
                    .into(),
            ),
        );
    }
    let id_field = m
        .get("id_field")
        .and_then(|n| string(n, "id_field", d))
        .unwrap_or_else(|| "id".into());
    let retention = m
        .get("retention")
        .and_then(|n| duration(n, "retention", d))
        .unwrap_or(DEFAULT_RETENTION);
    Some(FileSource {
        path: path?,
        format,
        mode,
        key,
        id_field,
        retention,
    })
}
