//! `tocsin silence add|list|remove`: silences in the store. The daemon
//! reads them when it records notifications, so they apply at once and
//! expire by themselves.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::cli::SilenceCommand;
use crate::store::{Silence, Store};

pub fn run(
    config_path: &Path,
    cmd: &SilenceCommand,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let config = crate::config::Config::load_or_explain(config_path)?;
    let now = Utc::now();
    match cmd {
        SilenceCommand::Add {
            target,
            for_,
            reason,
            by,
        } => {
            let (rule, key) = match target.split_once(':') {
                Some((r, k)) => (r, Some(k)),
                None => (target.as_str(), None),
            };
            known_rule(&config, rule)?;
            let ends = now + chrono::Duration::from_std(*for_)?;
            let by = by
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let mut store = Store::open(&config.state)?;
            let s = store.add_silence(rule, key, reason, &by, now, ends)?;
            writeln!(out, "silence {} added: {}", s.id, describe(&s))?;
        }
        SilenceCommand::List => {
            if !config.state.exists() {
                writeln!(out, "no silences")?;
                return Ok(());
            }
            let silences = Store::open(&config.state)?.silences(now)?;
            if silences.is_empty() {
                writeln!(out, "no silences")?;
            }
            for s in &silences {
                writeln!(out, "{:>4}  {}", s.id, describe(s))?;
            }
        }
        SilenceCommand::Remove { id } => {
            let mut store = Store::open(&config.state)?;
            if !store.remove_silence(*id)? {
                anyhow::bail!("no silence {id} (see `tocsin silence list`)");
            }
            writeln!(out, "silence {id} removed")?;
        }
    }
    Ok(())
}

fn describe(s: &Silence) -> String {
    let target = match &s.key {
        Some(k) => format!("rule {} key {k}", s.rule),
        None => format!("rule {} (every key)", s.rule),
    };
    format!(
        "{target} until {} ({} left), by {}: {}",
        ts(s.ends_at),
        humantime::format_duration(std::time::Duration::from_secs(
            (s.ends_at - Utc::now()).num_seconds().max(0) as u64
        )),
        s.by,
        s.reason
    )
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A silence for a rule that does not exist would silence nothing: refused,
/// with the nearest id. The rules are read as the daemon reads them; when
/// they do not load, any id is taken.
fn known_rule(config: &crate::config::Config, rule: &str) -> anyhow::Result<()> {
    if rule == crate::notification::UNHEALTHY_RULE {
        return Ok(());
    }
    let (set, _) = crate::rules::RuleSet::load(&config.rules);
    let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
    if ids.is_empty() || ids.contains(&rule) {
        return Ok(());
    }
    let hint = crate::diag::did_you_mean(rule, ids.iter().copied())
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    anyhow::bail!(
        "no rule `{rule}` in {}{hint}; write RULE or RULE:KEY with a rule id",
        config.rules.display()
    )
}
