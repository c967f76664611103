//! `tocsin schema rules|config|test`: JSON Schema of the files, for editor
//! completion (yaml-language-server's `# yaml-language-server: $schema=`).
//! The types below mirror the files' shape only to describe it; the files
//! are read by `config` and `rules`, which report problems with positions.
#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// A duration: a number and a unit, such as `30s`, `10m`, `48h`, `7d`, `1h 30m`.
type Duration = String;

/// The daemon config (`tocsin.yaml`). Relative paths resolve against its folder.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The store: an SQLite file, created with its folder on first run
    /// (default `/var/lib/tocsin/state.db`), or `postgres://user@host/database`
    /// for instances sharing one store (high availability).
    state: Option<String>,
    /// The PostgreSQL store's password, from this environment variable.
    state_password_env: Option<String>,
    /// The PostgreSQL store's password, from this file.
    state_password_file: Option<String>,
    /// Certificates (PEM) of the authorities trusted for the PostgreSQL
    /// server's certificate, beside the system's. TLS is used unless the
    /// server is on this machine (or `sslmode=disable`, for loopback only).
    state_ca: Option<String>,
    /// How instances sharing a PostgreSQL store take turns leading.
    ha: Option<Ha>,
    /// A folder of `*.yaml` rule files, or one file.
    rules: String,
    /// `/healthz` and `/metrics`; no listener when omitted.
    http: Option<Http>,
    /// Log level and format.
    log: Option<Log>,
    sources: Option<Vec<Source>>,
    channels: Option<Vec<Channel>>,
    /// Where `source-unhealthy` alerts go.
    health: Option<Health>,
    /// How long the documents behind alerts are kept for the ledger.
    evidence: Option<Evidence>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Ha {
    /// How often the leader renews its lease (default 2s); at most half of `lease`.
    renew: Option<Duration>,
    /// How long a lease is valid (default 10s): a standby takes over after it.
    lease: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Evidence {
    /// How long a document no alert has named since is kept (default 400d).
    retention: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Log {
    /// error, warn, info (default), debug, trace, or a filter such as
    /// `info,tocsin=debug`; `RUST_LOG` wins.
    level: Option<String>,
    /// `human` (default) or `json` (one object per line); `--log-format` wins.
    format: Option<LogFormatName>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum LogFormatName {
    Human,
    Json,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Http {
    /// Address and port, e.g. `127.0.0.1:9187`. An address that is not
    /// loopback needs `public: true`.
    listen: String,
    /// Listen on a non-loopback address on purpose (default false).
    public: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Health {
    /// Channel names.
    notify: Vec<String>,
    /// How long a file source may have no readable file before it is unhealthy (default 10m).
    missing_after: Option<Duration>,
}

/// A source turns the outside world into records.
#[derive(JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Source {
    /// A data file on disk (a path or a glob).
    File(FileSource),
    /// RSS 0.9x/1.0/2.0, Atom 0.3/1.0 or JSON Feed 1.x; each new item is one record.
    Feed(FeedSource),
    /// A JSON or CSV document polled on a schedule, read as a table.
    Http(HttpSource),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct FileSource {
    /// Used by rules' `source:`.
    name: String,
    /// A path or a glob (`data/*.csv`).
    path: String,
    /// Inferred from the extension when omitted.
    format: Option<FileFormat>,
    /// `table`: the file is the current state, one row per key. `log`: each new line is an event.
    mode: Option<Mode>,
    /// Required for tables: the columns that identify a row.
    key: Option<StringOrList>,
    /// Array logs (json, yaml): the field that identifies an item (default `id`; else a hash of the item).
    id_field: Option<String>,
    /// Array logs: how long an item gone from the file is remembered (default 90d).
    retention: Option<Duration>,
    /// Constant fields added to every record.
    fields: Option<BTreeMap<String, serde_json::Value>>,
    /// Failures in a row before `source-unhealthy` fires (default 3).
    fail_after: Option<u32>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct FeedSource {
    name: String,
    /// `http(s)://`, `file:///absolute/path`, or `file:relative/path`.
    url: String,
    /// Poll interval; or `schedule:`.
    every: Option<Duration>,
    /// 5-field cron, e.g. `*/10 * * * *`; or `every:`.
    schedule: Option<String>,
    /// IANA time zone of `schedule` (default UTC).
    timezone: Option<String>,
    /// Each poll is delayed by a random part of this.
    jitter: Option<Duration>,
    /// Default 10s.
    connect_timeout: Option<Duration>,
    /// The whole request; default 30s.
    timeout: Option<Duration>,
    /// Bytes, or a size such as `10MiB` (default).
    max_body: Option<StringOrNumber>,
    /// Sent with each request; `Name_env: VAR` or `Name_file: /path` takes the value from a secret.
    headers: Option<BTreeMap<String, String>>,
    /// First poll only: alert on items published within this window.
    backfill: Option<Duration>,
    /// How long an item gone from the feed is remembered (default 90d).
    retention: Option<Duration>,
    fields: Option<BTreeMap<String, serde_json::Value>>,
    fail_after: Option<u32>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HttpSource {
    name: String,
    url: String,
    every: Option<Duration>,
    schedule: Option<String>,
    timezone: Option<String>,
    jitter: Option<Duration>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    max_body: Option<StringOrNumber>,
    /// Sent with each request; `Name_env: VAR` or `Name_file: /path` takes the value from a secret.
    headers: Option<BTreeMap<String, String>>,
    /// The fields that identify a row.
    key: StringOrList,
    /// JSON Pointer to the array of rows, e.g. `/data/rates`.
    items: Option<String>,
    /// Else from Content-Type, else the URL's extension, else json.
    format: Option<HttpFormat>,
    fields: Option<BTreeMap<String, serde_json::Value>>,
    fail_after: Option<u32>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum FileFormat {
    Csv,
    Tsv,
    Json,
    Jsonl,
    Yaml,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum HttpFormat {
    Json,
    Csv,
    Tsv,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Table,
    Log,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    List(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum StringOrNumber {
    Text(String),
    Number(u64),
}

/// Where notifications go.
#[derive(JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Channel {
    Email(EmailChannel),
    /// Signed per the Standard Webhooks spec when a secret is set.
    Webhook(WebhookChannel),
    /// Appends one JSON line per notification (the webhook payload).
    File(FileChannel),
    /// One line per notification in the daemon's log.
    Log(LogChannel),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct EmailChannel {
    name: String,
    smtp: Smtp,
    /// `Name <address>` or an address.
    from: String,
    to: StringOrList,
    digest: Option<Digest>,
    /// How long a notification may keep failing before it is marked failed (default 24h).
    retry_budget: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Smtp {
    host: String,
    port: Option<u16>,
    /// `none` is for loopback hosts only.
    tls: Option<SmtpTls>,
    username: Option<String>,
    /// The environment variable holding the password.
    password_env: Option<String>,
    /// The file holding the password (e.g. a systemd credential).
    password_file: Option<String>,
    timeout: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum SmtpTls {
    Starttls,
    Tls,
    None,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct WebhookChannel {
    name: String,
    url: String,
    format: Option<WebhookFormat>,
    /// With `format: template`: a minijinja template over the payload.
    body: Option<String>,
    content_type: Option<String>,
    /// The environment variable holding the signing secret.
    secret_env: Option<String>,
    /// The file holding the signing secret.
    secret_file: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    timeout: Option<Duration>,
    digest: Option<Digest>,
    retry_budget: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum WebhookFormat {
    Json,
    Slack,
    Template,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct FileChannel {
    name: String,
    path: String,
    digest: Option<Digest>,
    retry_budget: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct LogChannel {
    name: String,
    digest: Option<Digest>,
    retry_budget: Option<Duration>,
}

/// One message per tick of a schedule, nothing when there is nothing.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Digest {
    /// 5-field cron, e.g. `0 8 * * MON-FRI`.
    schedule: Option<String>,
    timezone: Option<String>,
    every: Option<Duration>,
}

/// A rules file (`rules/*.yaml`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    /// Named lists, used as `$name` in `in:` and `text:` conditions.
    lists: Option<BTreeMap<String, Vec<String>>>,
    rules: Option<Vec<Rule>>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// Unique and stable: state and deduplication hang on it.
    id: String,
    title: Option<String>,
    severity: Option<Severity>,
    labels: Option<BTreeMap<String, String>>,
    /// One source name or a list.
    source: StringOrList,
    /// Field equality filters, e.g. `{ partner: CN }`.
    #[serde(rename = "where")]
    where_: Option<BTreeMap<String, serde_json::Value>>,
    when: Option<Condition>,
    /// Must hold this long before it fires.
    #[serde(rename = "for")]
    for_: Option<Duration>,
    /// Remind while still firing.
    repeat: Option<Duration>,
    /// Notify when it stops holding (default true for tables).
    resolve: Option<bool>,
    /// Channel names.
    notify: Option<StringOrList>,
    /// A minijinja template over the record's fields, `rule`, `key`, `prev`, …
    summary: Option<String>,
    body: Option<String>,
    /// A template: records of one key share one alert.
    key: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Severity {
    Info,
    Warning,
    Critical,
}

/// One condition; several in one mapping must all hold.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Condition {
    /// The field compared (`a.b` reaches into nested objects).
    field: Option<String>,
    above: Option<StringOrNumber2>,
    below: Option<StringOrNumber2>,
    at_least: Option<StringOrNumber2>,
    at_most: Option<StringOrNumber2>,
    equals: Option<serde_json::Value>,
    not_equals: Option<serde_json::Value>,
    /// A list, or `$name` of a list.
    #[serde(rename = "in")]
    in_: Option<Items>,
    not_in: Option<Items>,
    exists: Option<bool>,
    changed: Option<bool>,
    /// A number, or a percentage such as `"10%"`.
    increased_by: Option<StringOrNumber2>,
    decreased_by: Option<StringOrNumber2>,
    /// Text fields the phrases are looked for in.
    text: Option<StringOrList>,
    any: Option<ItemsOrConditions>,
    all: Option<ItemsOrConditions>,
    none: Option<Items>,
    regex: Option<String>,
    /// No record for this long.
    absent: Option<Duration>,
    /// At least this many records within `within`.
    count: Option<u32>,
    within: Option<Duration>,
    not: Option<Box<Condition>>,
    /// A CEL expression over the record, `prev` and `lists`.
    expr: Option<String>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum StringOrNumber2 {
    Number(f64),
    Text(String),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum Items {
    List(Vec<serde_json::Value>),
    /// `$name` of a list.
    Name(String),
}

/// Phrases (with `text:`) or conditions (alone).
#[derive(JsonSchema)]
#[serde(untagged)]
enum ItemsOrConditions {
    Conditions(Vec<Condition>),
    Items(Items),
}

/// A rule-test file (`tocsin test`): the rules under test, the sources
/// they read, and tests of steps on a simulated clock.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The rule files under test, relative to this file.
    rules: StringOrList,
    /// A config to take the sources from, relative to this file.
    config: Option<String>,
    /// Sources defined here, or in place of the config's of the same name:
    /// only what shapes records is read (no paths or URLs needed).
    sources: Option<Vec<TestSource>>,
    tests: Vec<Test>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct TestSource {
    /// The source's name, as the rules name it.
    name: String,
    #[serde(rename = "type")]
    kind: Option<TestSourceType>,
    /// A file source: `table` (with a `key`) or `log`.
    mode: Option<Mode>,
    /// The fields that identify a table row.
    key: Option<StringOrList>,
    /// Constant fields added to every record.
    fields: Option<BTreeMap<String, serde_json::Value>>,
    /// Accepted and not read, so that a config's source can be copied.
    path: Option<String>,
    url: Option<String>,
    every: Option<Duration>,
    schedule: Option<String>,
    timezone: Option<String>,
    format: Option<String>,
    items: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum TestSourceType {
    File,
    Feed,
    Http,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Test {
    name: String,
    steps: Vec<Step>,
}

/// The clock moves to `at`, then `records` go through `source`; `expect`
/// lists exactly the step's notifications, in any order.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Step {
    /// An RFC 3339 time, such as `2026-04-01T00:00:00Z`; required on the
    /// first step, else the clock stays where it was.
    at: Option<String>,
    source: Option<String>,
    /// For a table, the whole table; for a log or feed, one event each.
    records: Option<Vec<BTreeMap<String, serde_json::Value>>>,
    /// `[]` for none.
    expect: Vec<Expected>,
}

/// An expected notification: matched on the payload fields it names.
#[derive(JsonSchema)]
struct Expected {
    rule: Option<String>,
    key: Option<String>,
    state: Option<ExpectedState>,
    summary: Option<String>,
    fields: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum ExpectedState {
    Firing,
    Resolved,
}

/// The JSON Schema of `rules`, `config` or rule-`test` files, pretty-printed.
pub fn schema(which: &str) -> Option<String> {
    let s = match which {
        "rules" => schemars::schema_for!(RulesFile),
        "config" => schemars::schema_for!(ConfigFile),
        "test" => schemars::schema_for!(TestFile),
        _ => return None,
    };
    serde_json::to_string_pretty(&s).ok()
}
