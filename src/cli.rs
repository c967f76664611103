//! Command-line definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tocsin",
    version,
    about = "Alerting daemon: watches data files, evaluates rules, sends alerts"
)]
pub struct Cli {
    /// Config file [default: $TOCSIN_CONFIG, else /etc/tocsin/tocsin.yaml, else config/tocsin.yaml]
    #[arg(short, long, global = true, value_name = "CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// Silence a rule (RULE) or one of its keys (RULE:KEY) for a while:
    /// its notifications are recorded as silenced and not sent.
    Add {
        /// RULE or RULE:KEY
        #[arg(value_name = "RULE[:KEY]")]
        target: String,
        /// How long, e.g. 2h, 30m, 1d
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        for_: std::time::Duration,
        /// Why (shown in `silence list` and in the history)
        #[arg(long)]
        reason: String,
        /// Who [default: $USER]
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// The silences in force.
    List,
    /// End a silence now.
    Remove {
        /// The id `silence add` printed
        id: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the ledger's hash chain and every kept document: exit 0 when
    /// whole, 1 naming the first broken entry.
    Verify,
    /// The ledger's entries, oldest first, on stdout, for an auditor.
    Export {
        /// Only the entries of this last while, e.g. 30d [default: all]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// `jsonl`: each entry exactly as its hash covers it; `csv`: a row
        /// per entry, for a spreadsheet
        #[arg(long, value_enum, default_value = "jsonl")]
        format: AuditFormat,
    },
    /// One entry (by its number) or a notification's entries (by its id),
    /// and the document behind it.
    Show {
        /// An entry's number or a notification's id
        id: String,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AuditFormat {
    Jsonl,
    Csv,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground.
    Run {
        /// `json`: one JSON object per log line [default: the config's
        /// `log.format`, else lines for people]
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<crate::config::LogFormat>,
    },
    /// Validate the config and all rules; exit 0 when clean, 1 on problems.
    Check {
        /// Do not require the secrets (`*_env`, `*_file`) to be there:
        /// problems with them are warnings (building a package, say)
        #[arg(long)]
        offline: bool,
    },
    /// Feed files through a source's parsing and the rules; print the
    /// notifications that would be sent, as JSON lines. Sends and writes nothing.
    Eval {
        /// Rules file or folder [default: the config's `rules:`]
        #[arg(long, value_name = "PATH")]
        rules: Option<PathBuf>,
        /// The source whose parsing and rules apply
        #[arg(long, value_name = "NAME")]
        source: String,
        /// For each record, each rule and each condition: whether it held,
        /// and with which values (instead of the JSON lines)
        #[arg(long)]
        explain: bool,
        /// Data files
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rule unit tests with a simulated clock; exit 0 all pass, 1 a
    /// failure, 2 an unusable file.
    Test {
        /// Test files, or folders whose `*.yaml` files are all run (see
        /// "Rule tests" in the README)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// JSON Schema of the rules or config files, for editor completion.
    Schema {
        /// `rules`, `config` or `test` (rule-test files)
        #[arg(value_parser = ["rules", "config", "test"])]
        which: String,
    },
    /// Send a test notification through a channel and report the
    /// server's answer.
    SendTest {
        /// The channel's name in the config
        channel: String,
    },
    /// Silence rules during planned work; silences expire by themselves.
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// The evidence ledger: every notification sent, failed or silenced,
    /// hash-chained, with the documents behind them.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// An online, consistent copy of the store into FILE, while the daemon
    /// runs (SQLite's backup API); FILE is whole or not written.
    Backup {
        /// Where the copy goes
        file: std::path::PathBuf,
    },
    /// Copy a stopped store into an empty one: SQLite to PostgreSQL (to run
    /// instances in an HA group), or back.
    Migrate {
        /// The store to copy: `sqlite:///var/lib/tocsin/state.db` (or a
        /// path), or `postgres://user@host/database`
        #[arg(long, value_name = "URL")]
        from: String,
        /// The empty store to copy into, made when missing
        #[arg(long, value_name = "URL")]
        to: String,
        /// The PostgreSQL password, from this environment variable
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The PostgreSQL password, from this file
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Shell completion for bash, zsh or fish, on stdout (the Debian
    /// package installs them).
    Completions {
        /// `bash`, `zsh` or `fish` (also `elvish`, `powershell`)
        shell: clap_complete::Shell,
    },
    /// Man pages, `tocsin.1` and one per command (`tocsin-check.1` …),
    /// written into DIR.
    Man {
        /// The folder to write them to (made when missing)
        dir: PathBuf,
    },
    /// Alerts firing now, the delivery history and failed deliveries, from the store.
    Alerts {
        /// Only the alerts firing now
        #[arg(long)]
        firing: bool,
        /// Only the notifications that failed for good
        #[arg(long)]
        failed: bool,
        /// How far back the history goes
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// One JSON document, for scripts
        #[arg(long)]
        json: bool,
    },
}
