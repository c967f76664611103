//! `tocsin alerts`: what fires now, what was delivered, what failed, read
//! from the store. A table for people by default, `--json` for scripts.

use std::io::Write;
use std::time::Duration;

use chrono::Utc;

use crate::notification::format_ts;
use crate::store::Store;

pub struct Options {
    pub firing: bool,
    pub failed: bool,
    pub since: Duration,
    pub json: bool,
}

pub fn run(store: &Store, o: &Options, out: &mut dyn Write) -> anyhow::Result<()> {
    let all = !o.firing && !o.failed;
    let firing = if all || o.firing {
        store.firing()?
    } else {
        vec![]
    };
    let failed = if all || o.failed {
        store.failed_notifications()?
    } else {
        vec![]
    };
    let since = Utc::now() - chrono::Duration::from_std(o.since).unwrap_or_default();
    let history = if all { store.history(since)? } else { vec![] };
    let (pending, _) = store.outbox_counts()?;
    if o.json {
        let doc = serde_json::json!({
            "firing": firing.iter().map(|(rule, key, since, last)| serde_json::json!({
                "rule": rule, "key": key, "since": format_ts(*since), "last_sent": last.map(format_ts),
            })).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(p, error)| serde_json::json!({
                "channel": p.channel, "error": error, "attempts": p.attempts + 1,
                "notification": p.notification,
            })).collect::<Vec<_>>(),
            "history": history.iter().map(|h| serde_json::json!({
                "at": format_ts(h.at), "channel": h.channel, "rule": h.rule, "key": h.key,
                "state": h.state, "outcome": h.outcome, "detail": h.detail, "id": h.id,
            })).collect::<Vec<_>>(),
            "pending": pending,
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    if all || o.firing {
        writeln!(out, "FIRING ({})", firing.len())?;
        for (rule, key, since, _) in &firing {
            writeln!(out, "  {:<20}  {rule}  {key}", format_ts(*since))?;
        }
    }
    if all || o.failed {
        writeln!(out, "FAILED ({})", failed.len())?;
        for (p, error) in &failed {
            let n = &p.notification;
            writeln!(
                out,
                "  {:<20}  {}  {}  {}  {}: {error}",
                format_ts(n.at),
                p.channel,
                n.rule,
                n.key,
                n.state.as_str()
            )?;
        }
    }
    if all {
        writeln!(
            out,
            "HISTORY since {} ({})",
            format_ts(since),
            history.len()
        )?;
        for h in &history {
            writeln!(
                out,
                "  {:<20}  {:<9}  {}  {}  {}  {}  {}",
                format_ts(h.at),
                h.outcome,
                h.channel,
                h.rule,
                h.key,
                h.state,
                h.detail
            )?;
        }
        writeln!(out, "{pending} waiting in the outbox")?;
    }
    Ok(())
}
