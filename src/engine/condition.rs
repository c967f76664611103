//! Compiled conditions and their evaluation against one record. Field names
//! are interned to slots at compile time, so a record's fields are looked up
//! once per record, not once per rule.

use rustc_hash::FxHashSet;
use std::sync::Arc;

use serde_json::Value;

use super::text::PhraseRef;
use crate::record::{Fields, as_number, as_text, is_present, lookup_from};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumOp {
    Above,
    Below,
    AtLeast,
    AtMost,
}

#[derive(Debug)]
pub enum Expr {
    /// A CEL expression: its program, the record fields it reads by slot,
    /// whether it reads `prev`, and `lists` when it reads them.
    Cel {
        program: Arc<crate::expr::Program>,
        fields: Vec<(String, usize)>,
        prev: bool,
        lists: Option<cel::Value>,
    },
    Num {
        slot: usize,
        op: NumOp,
        x: f64,
    },
    Eq {
        slot: usize,
        num: Option<f64>,
        text: String,
        negate: bool,
    },
    /// Items lowercased; `set` holds the same for long lists. Items are
    /// text: `007` is not `7`.
    In {
        slot: usize,
        lower: Vec<String>,
        set: Option<FxHashSet<String>>,
        negate: bool,
    },
    Exists {
        slot: usize,
        want: bool,
    },
    Text(TextCond),
    Regex {
        slots: Vec<usize>,
        re: regex::Regex,
    },
    Changed {
        slot: usize,
        name: String,
    },
    Delta {
        slot: usize,
        name: String,
        up: bool,
        amount: f64,
        percent: bool,
    },
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug)]
pub struct TextCond {
    /// Indices into the engine's text slots (not field slots).
    pub tslots: Vec<usize>,
    pub any: Vec<PhraseRef>,
    pub all: Vec<PhraseRef>,
    pub none: Vec<PhraseRef>,
}

/// What evaluation needs beyond the expression: the record's field values by
/// slot, its previous row, and the text matches of this record.
pub struct EvalCtx<'a> {
    pub vals: &'a [Option<&'a Value>],
    pub prev: Option<&'a Fields>,
    /// Per slot: the position its field was last found at in a row.
    pub at: &'a [u8],
    pub text: &'a mut dyn TextHits,
    /// Counts comparisons of numbers against text that is not a number.
    pub non_numeric: &'a mut u64,
    /// Counts expressions that failed to evaluate or gave no boolean.
    pub expr_errors: &'a mut u64,
    /// Counts, for the rule at hand, expressions that ran past their budget.
    pub over_budget: &'a std::sync::atomic::AtomicU64,
}

/// A field's value for CEL: text that reads as a number (`"157%"`,
/// `"1,250.5"`) is a number, as everywhere else in rules.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Float(i as f64),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => match crate::record::parse_number(s) {
            Some(x) => cel::Value::Float(x),
            None => cel::Value::String(Arc::new(s.clone())),
        },
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => map_to_cel(m),
    }
}

pub fn map_to_cel(m: &Fields) -> cel::Value {
    let map: std::collections::HashMap<String, cel::Value> =
        m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
    cel::Value::from(map)
}

pub trait TextHits {
    /// Whether phrase `p` occurs in text slot `tslot` of the current record.
    fn hit(&mut self, tslot: usize, p: PhraseRef) -> bool;
    fn text(&self, slot: usize) -> Option<std::borrow::Cow<'_, str>>;
}

impl Expr {
    /// Evaluates all but child `skip` of an `all` (known to hold); for
    /// `usize::MAX` the whole condition is known to hold.
    pub fn eval_but(&self, skip: usize, cx: &mut EvalCtx) -> bool {
        match self {
            _ if skip == usize::MAX => true,
            Expr::All(v) => v.iter().enumerate().all(|(i, e)| i == skip || e.eval(cx)),
            _ => self.eval(cx),
        }
    }

    pub fn eval(&self, cx: &mut EvalCtx) -> bool {
        match self {
            Expr::Cel {
                program,
                fields,
                prev,
                lists,
            } => {
                let mut ctx = crate::expr::context();
                for (name, slot) in fields {
                    if let Some(v) = cx.vals[*slot] {
                        ctx.add_variable_from_value(name.as_str(), to_cel(v));
                    }
                }
                if *prev {
                    // No previous row: an empty map, so `has(prev.x)` is
                    // false and `prev.x` an error (the expression does not hold).
                    let p = cx.prev.map(map_to_cel).unwrap_or_else(|| {
                        cel::Value::from(std::collections::HashMap::<String, cel::Value>::new())
                    });
                    ctx.add_variable_from_value("prev", p);
                }
                if let Some(l) = lists {
                    ctx.add_variable_from_value("lists", l.clone());
                }
                match program.execute(&ctx) {
                    Ok(cel::Value::Bool(b)) => b,
                    // Past its budget: does not hold, counted for the rule.
                    Err(crate::expr::Failure::Budget) => {
                        cx.over_budget
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        false
                    }
                    // Not a boolean, a missing field, a type error: does
                    // not hold, counted.
                    _ => {
                        *cx.expr_errors += 1;
                        false
                    }
                }
            }
            Expr::Num { slot, op, x } => {
                let Some(v) = cx.vals[*slot] else {
                    return false;
                };
                let Some(n) = as_number(v) else {
                    if !v.is_null() {
                        *cx.non_numeric += 1;
                    }
                    return false;
                };
                match op {
                    NumOp::Above => n > *x,
                    NumOp::Below => n < *x,
                    NumOp::AtLeast => n >= *x,
                    NumOp::AtMost => n <= *x,
                }
            }
            Expr::Eq {
                slot,
                num,
                text,
                negate,
            } => {
                let Some(v) = cx.vals[*slot] else {
                    return false;
                };
                eq_value(v, *num, text) != *negate
            }
            Expr::In {
                slot,
                lower,
                set,
                negate,
            } => {
                let Some(v) = cx.vals[*slot] else {
                    return false;
                };
                let found = match v {
                    Value::Array(items) => items.iter().any(|i| in_set(i, lower, set.as_ref())),
                    _ => in_set(v, lower, set.as_ref()),
                };
                found != *negate
            }
            Expr::Exists { slot, want } => is_present(cx.vals[*slot]) == *want,
            Expr::Text(t) => {
                let any_ok = t.any.is_empty()
                    || t.any
                        .iter()
                        .any(|p| t.tslots.iter().any(|&s| cx.text.hit(s, *p)));
                any_ok
                    && t.all
                        .iter()
                        .all(|p| t.tslots.iter().any(|&s| cx.text.hit(s, *p)))
                    && !t
                        .none
                        .iter()
                        .any(|p| t.tslots.iter().any(|&s| cx.text.hit(s, *p)))
            }
            Expr::Regex { slots, re } => slots
                .iter()
                .any(|&s| cx.text.text(s).is_some_and(|t| re.is_match(&t))),
            Expr::Changed { slot, name } => {
                let Some(prev) = cx.prev else { return false };
                let old = lookup_from(prev, name, cx.at[*slot]);
                let new = cx.vals[*slot];
                match (old, new) {
                    (Some(a), Some(b)) => match (as_number(a), as_number(b)) {
                        (Some(x), Some(y)) => x != y,
                        _ => a != b,
                    },
                    (None, None) => false,
                    _ => true,
                }
            }
            Expr::Delta {
                slot,
                name,
                up,
                amount,
                percent,
            } => {
                let Some(prev) = cx.prev else { return false };
                let (Some(old), Some(new)) = (
                    lookup_from(prev, name, cx.at[*slot]).and_then(as_number),
                    cx.vals[*slot].and_then(as_number),
                ) else {
                    return false;
                };
                let diff = if *up { new - old } else { old - new };
                if *percent {
                    old != 0.0 && diff / old.abs() * 100.0 >= *amount
                } else {
                    diff >= *amount
                }
            }
            Expr::All(v) => v.iter().all(|e| e.eval(cx)),
            Expr::Any(v) => v.iter().any(|e| e.eval(cx)),
            Expr::Not(e) => !e.eval(cx),
        }
    }
}

/// `equals`: as numbers when the rule wrote a number (`num`) and the value
/// reads as one, else as text, ignoring case (`text` is lowercased).
pub fn eq_value(v: &Value, num: Option<f64>, text: &str) -> bool {
    if let Some(x) = num
        && let Some(n) = as_number(v)
    {
        return x == n;
    }
    as_text(v).is_some_and(|t| eq_lower(&t, text))
}

/// `t`, trimmed, equals `lower` (already trimmed and lowercased), ignoring
/// case; allocates only for non-ASCII text.
pub fn eq_lower(t: &str, lower: &str) -> bool {
    let t = t.trim();
    if t.is_ascii() {
        t.eq_ignore_ascii_case(lower)
    } else {
        t.to_lowercase() == lower
    }
}

/// Trimmed and lowercased, borrowed when already so (the common case).
pub fn lower_trim(t: &str) -> std::borrow::Cow<'_, str> {
    let t = t.trim();
    if is_lower(t) {
        std::borrow::Cow::Borrowed(t)
    } else {
        std::borrow::Cow::Owned(t.to_lowercase())
    }
}

/// Whether `t` is lowercase as it stands: ASCII with no capital letter.
pub fn is_lower(t: &str) -> bool {
    !t.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80)
}

/// `in`: the value's text is one of the items (lowercased), ignoring case.
pub fn in_set(v: &Value, lower: &[String], set: Option<&FxHashSet<String>>) -> bool {
    let Some(t) = as_text(v) else { return false };
    match set {
        Some(s) => s.contains(lower_trim(&t).as_ref()),
        None => lower.iter().any(|i| eq_lower(&t, i)),
    }
}
