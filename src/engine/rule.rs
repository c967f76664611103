//! Compiled rules: per source, the rules over it, the field slots they read
//! and the guards that let most of them be skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rustc_hash::FxHashMap;

use super::condition::Expr;
use super::state::KeyState;
use super::text::PhraseSet;
use crate::notification::Severity;

/// The rules of one source, with the field slots they read and the guards
/// that let most rules be skipped without evaluating them.
#[derive(Debug)]
pub struct SourcePlan {
    pub rules: Vec<usize>,
    pub slots: Vec<usize>,
    /// Per position in `rules`: whether the rule sits behind a guard.
    pub guarded: Vec<bool>,
    /// Per position: which child of the rule's `all` the guard is (the
    /// whole condition: `usize::MAX`); a record let through by value needs
    /// no second look at it.
    pub guard_at: Vec<Option<usize>>,
    pub guards: Vec<Guard>,
    /// Per position: the rule needs one of its phrases found.
    pub text_guarded: Vec<bool>,
    /// Phrase id → positions of the rules it lets through.
    pub phrase_rules: Vec<Vec<usize>>,
    /// Text slots the phrase guards read.
    pub text_guard_slots: Vec<usize>,
    /// Positions of rules behind no guard.
    pub unguarded: Vec<usize>,
    /// Some rule has a `key:` template (events then share state).
    pub keyed: bool,
}

/// Rules (by position in the plan) that can only hold when a field has one
/// of a few values.
#[derive(Debug)]
pub struct Guard {
    pub slot: usize,
    /// Lowercased value → positions of the rules it lets through.
    pub values: FxHashMap<String, Vec<usize>>,
    /// Every position behind this guard.
    pub all: Vec<usize>,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub title: Arc<str>,
    pub severity: Severity,
    pub labels: Arc<BTreeMap<String, String>>,
    pub expr: Option<Expr>,
    pub for_: Duration,
    pub repeat: Option<Duration>,
    pub resolve: Option<bool>,
    pub notify: Arc<[String]>,
    /// Template names in [`Compiled::env`].
    pub summary: Option<String>,
    pub body: Option<String>,
    pub key: Option<String>,
    /// The condition in words, for the default body.
    pub condition: String,
    /// Fields compared as numbers, shown in the default summary.
    pub shown_fields: Vec<String>,
    /// Reads feeds alone: the default summary is the item's title.
    pub feed: bool,
    /// The first two lines of the default body, firing and resolved.
    pub heads: [String; 2],
    /// `absent: D`: fires when no record passing `expr` came for D.
    pub absent: Option<Duration>,
    /// `count: N, within: D`: fires while N records passing `expr` came
    /// within D.
    pub count: Option<(u32, Duration)>,
    /// The one key of an `absent` rule without `key:` (its sources).
    pub absent_key: Arc<str>,
    /// A `key:` template that only names a field (`{{ partner }}`): read
    /// directly, without rendering.
    pub key_field: Option<String>,
    /// Evaluations of its expression and renderings of its templates that
    /// ran past their budget, since the last [`Engine::take_over_budget`].
    /// Counted where the rule is at hand (rendering included), so shared.
    pub over_budget: std::sync::atomic::AtomicU64,
}

impl Rule {
    pub(super) fn keeps_snapshot(&self) -> bool {
        self.for_ > Duration::zero() || self.repeat.is_some() || self.absent.is_some()
    }

    /// Whether time passing can do anything to its keys (they have
    /// deadlines in the queue of [`keys`]).
    pub(super) fn timed(&self) -> bool {
        self.keeps_snapshot() || self.count.is_some()
    }

    /// When a key of this rule next needs a visit from `tick`, if ever.
    pub fn deadline(&self, st: &KeyState) -> Option<DateTime<Utc>> {
        let rule = self;
        let remind = || {
            rule.repeat
                .map(|rep| st.last_sent.unwrap_or(st.since).get() + rep)
        };
        if let Some((n, within)) = rule.count {
            // Firing: when the window next loses a record and falls under N.
            // Not firing: when it has lost them all and the key is forgotten;
            // records leaving before then change nothing a record would not
            // (each record prunes the window first), so they are not visited.
            let leaving = if st.firing {
                st.window
                    .len()
                    .checked_sub(n as usize)
                    .and_then(|i| st.window.get(i))
            } else {
                st.window.last()
            };
            let drop = leaving.map(|t| t + within);
            let remind = if st.firing { remind() } else { None };
            match (drop, remind) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else if let Some(a) = rule.absent {
            if st.firing {
                remind()
            } else {
                Some(st.seen() + a)
            }
        } else if !rule.keeps_snapshot() {
            None
        } else if !st.firing {
            Some(st.since.get() + rule.for_)
        } else {
            remind()
        }
    }
}

/// Rules in engine form. Built once per load; shared read-only.
pub struct Compiled {
    pub rules: Vec<Rule>,
    /// Per source: its rules and how to evaluate them.
    pub plans: FxHashMap<String, Arc<SourcePlan>>,
    pub slot_names: Vec<String>,
    /// Field slot of each text slot.
    pub text_slots: Vec<usize>,
    pub phrases: PhraseSet,
    pub env: minijinja::Environment<'static>,
    /// The SHA-256 of the rule files compiled, for the evidence of alerts.
    pub rules_sha256: String,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("rules", &self.rules.len())
            .field("phrases", &self.phrases.len())
            .finish()
    }
}
