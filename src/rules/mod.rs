//! Rule files (`rules/*.yaml`): model and loading with positions. Checks that
//! need the daemon config (sources, channels) happen when rules are compiled
//! into the engine form, see [`crate::engine::compile`].

mod cut;
mod read;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostic, Diags, Pos, Severity as DiagSeverity, SourceFile};

pub use crate::notification::Severity;

#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub files: Vec<SourceFile>,
    pub lists: BTreeMap<String, ListDef>,
    pub rules: Vec<RuleDef>,
}

#[derive(Clone, Debug)]
pub struct ListDef {
    pub items: Vec<String>,
    pub file: usize,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub struct RuleDef {
    /// Index into [`RuleSet::files`].
    pub file: usize,
    pub pos: Pos,
    pub id: String,
    pub id_pos: Pos,
    pub title: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub sources: Vec<(String, Pos)>,
    /// `where:` and `when:` together; `None` matches every record.
    pub when: Option<Cond>,
    /// `absent` or `count`, taken out of `when` (which then says which
    /// records count).
    pub window: Option<Window>,
    pub for_: Duration,
    pub for_pos: Option<Pos>,
    pub repeat: Option<Duration>,
    pub resolve: Option<bool>,
    pub notify: Vec<(String, Pos)>,
    pub summary: Option<(String, Pos)>,
    pub body: Option<(String, Pos)>,
    pub key: Option<(String, Pos)>,
    /// The fields `where:` and `when:` name (`field:`, `text:`, `where`
    /// keys), where they are named, for checks against what a source
    /// produces.
    pub field_refs: Vec<(String, Pos)>,
}

/// Rule-wide conditions over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// No record for this long.
    Absent(Duration),
    /// At least `n` records within this long.
    Count { n: u32, within: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Above,
    Below,
    AtLeast,
    AtMost,
    Equals,
    NotEquals,
}

impl CmpOp {
    pub fn key(self) -> &'static str {
        match self {
            CmpOp::Above => "above",
            CmpOp::Below => "below",
            CmpOp::AtLeast => "at_least",
            CmpOp::AtMost => "at_most",
            CmpOp::Equals => "equals",
            CmpOp::NotEquals => "not_equals",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Items {
    Inline(Vec<String>),
    /// `$name`, resolved against `lists:`.
    List {
        name: String,
        pos: Pos,
    },
}

#[derive(Clone, Debug)]
pub enum Cond {
    Cmp {
        field: String,
        op: CmpOp,
        value: serde_json::Value,
    },
    In {
        field: String,
        items: Items,
        negate: bool,
    },
    Exists {
        field: String,
        want: bool,
    },
    Text {
        fields: Vec<String>,
        any: Option<Items>,
        all: Option<Items>,
        none: Option<Items>,
    },
    Regex {
        fields: Vec<String>,
        regex: regex::Regex,
    },
    Changed {
        field: String,
    },
    Delta {
        field: String,
        up: bool,
        amount: f64,
        percent: bool,
    },
    /// Only while reading: [`RuleDef::window`] holds these after.
    Absent {
        dur: Duration,
        pos: Pos,
    },
    Count {
        n: u32,
        within: Duration,
        pos: Pos,
    },
    /// A CEL expression, compiled at load.
    Expr(CelExpr),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

/// `{expr: "..."}`: the source, the compiled program, and the top-level
/// variables it reads (record fields, `prev`, `lists`).
#[derive(Clone)]
pub struct CelExpr {
    pub source: String,
    /// Where the expression is written.
    pub pos: Pos,
    pub program: std::sync::Arc<crate::expr::Program>,
    pub vars: Vec<String>,
}

impl std::fmt::Debug for CelExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CelExpr({:?})", self.source)
    }
}

/// The rules read from each file, by path, with the text they were read
/// from: a reload reads again only the files whose text changed (an edit
/// to one file of a folder of rules costs that file alone), and of a file
/// that changed, only the rules whose text changed (see [`cut`]).
///
/// The rules themselves are lent to the set that a load gives out, not
/// copied into it, and come back with [`RuleCache::keep`] once the set has
/// been compiled; a file whose rules have not come back is read again.
#[derive(Clone, Debug, Default)]
pub struct RuleCache {
    files: HashMap<PathBuf, Kept>,
    /// Per file cut apart (see [`cut`]): its rules, by the text of each.
    parts: HashMap<PathBuf, HashMap<Box<str>, Part>>,
}

/// One file as last read.
#[derive(Clone, Debug)]
struct Kept {
    src: SourceFile,
    lists: BTreeMap<String, ListDef>,
    /// `None` while lent out.
    rules: Option<Vec<RuleDef>>,
    diags: Vec<Diagnostic>,
}

impl RuleCache {
    /// Takes back the rules of a set that a load with this cache gave out.
    pub fn keep(&mut self, set: RuleSet) {
        // The rules are in the order of their files: each file's are cut
        // off the end (the first file's, or a single file's, are the list
        // itself, not copied).
        let mut rules = set.rules;
        for (idx, src) in set.files.iter().enumerate().rev() {
            let mut mine = rules.split_off(rules.partition_point(|r| r.file < idx));
            mine.iter_mut().for_each(|r| r.file = 0);
            if let Some(k) = self.files.get_mut(&src.path)
                && std::sync::Arc::ptr_eq(&k.src.text, &src.text)
                && k.rules.is_none()
            {
                k.rules = Some(mine);
            }
        }
    }
}

/// One rule of a file, as last read: its first line, where the rule is in
/// the file's rules (none when it has errors) and its messages.
#[derive(Clone, Debug)]
struct Part {
    line: usize,
    rule: Option<usize>,
    diags: Vec<Diagnostic>,
}

impl RuleSet {
    /// Loads a folder of `*.yaml`/`*.yml` files (sorted by name) or one file.
    /// Every problem comes back; the set holds the rules that did parse.
    pub fn load(path: &Path) -> (RuleSet, Vec<Diagnostic>) {
        RuleSet::load_with(path, None)
    }

    /// [`RuleSet::load`], with a `cache`: only the files whose text is not
    /// in it as it is now are read (and it then holds the files as read).
    pub fn load_with(path: &Path, cache: Option<&mut RuleCache>) -> (RuleSet, Vec<Diagnostic>) {
        let files = match rule_files(path) {
            Ok(f) => f,
            Err(e) => {
                let d = Diagnostic {
                    file: path.to_path_buf(),
                    pos: Pos::default(),
                    severity: DiagSeverity::Error,
                    message: e,
                    hint: Some(
                        "set `rules:` in the config to a folder of *.yaml files or one file".into(),
                    ),
                    line_text: None,
                };
                return (RuleSet::default(), vec![d]);
            }
        };
        let mut texts = Vec::new();
        let mut diags = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(t) => texts.push((f, t)),
                Err(e) => diags.push(Diagnostic {
                    file: f.clone(),
                    pos: Pos::default(),
                    severity: DiagSeverity::Error,
                    message: format!("cannot read the rules file: {e}"),
                    hint: None,
                    line_text: None,
                }),
            }
        }
        let (set, mut more) =
            RuleSet::parse_with(texts.iter().map(|(p, t)| (p.as_path(), t.as_str())), cache);
        diags.append(&mut more);
        (set, diags)
    }

    /// Parses rule files given as (path, text); cross-file checks included
    /// (duplicate ids, duplicate lists, unknown `$lists`).
    pub fn parse<'a>(
        files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> (RuleSet, Vec<Diagnostic>) {
        RuleSet::parse_with(files, None)
    }

    /// One file's rules and lists, as if it were the only file.
    fn parse_one(path: &Path, text: &str) -> (RuleSet, Vec<Diagnostic>) {
        let mut set = RuleSet::default();
        set.files.push(SourceFile::new(path, text));
        let src = set.files[0].clone();
        let mut d = Diags::new(&src);
        match crate::yaml::parse(text) {
            Ok(node) => read::file(0, &node, &mut set, &mut d),
            Err(e) => d.error(e.pos, e.message, None),
        }
        (set, d.out)
    }

    /// [`RuleSet::parse_one`], one rule at a time: a rule whose text
    /// `kept` holds is moved from `old` (the file's rules as last read),
    /// the others are read (and `kept` then holds the file as it is now).
    /// `None` when the file is not cut, or its head or one of its parts
    /// does not read as such: the whole file is read then, for the
    /// messages of the whole file.
    fn parse_parts(
        path: &Path,
        text: &str,
        kept: &mut HashMap<Box<str>, Part>,
        old: Vec<RuleDef>,
    ) -> Option<(RuleSet, Vec<Diagnostic>)> {
        let cut = cut::cut(text)?;
        let node = crate::yaml::parse(&cut.head).ok()?;
        let empty_rules = match &node.kind {
            crate::yaml::Kind::Map(m) => m
                .iter()
                .any(|(k, v)| k.as_str() == Some("rules") && v.is_null()),
            _ => false,
        };
        if !empty_rules {
            return None;
        }
        let mut set = RuleSet::default();
        let head = SourceFile::new(path, cut.head.as_str());
        let mut d = Diags::new(&head);
        read::file(0, &node, &mut set, &mut d);
        let mut out = d.out;
        set.files.push(SourceFile::new(path, text));
        set.rules.reserve(cut.parts.len());
        let mut old: Vec<Option<RuleDef>> = old.into_iter().map(Some).collect();
        let mut now: HashMap<Box<str>, Part> = HashMap::with_capacity(cut.parts.len());
        for (line, part) in cut.parts {
            // A rule read before is moved to its new line; a second rule of
            // the same text is read again.
            let moved = kept.get(part).and_then(|p| {
                let rule = match p.rule {
                    Some(i) => Some(old.get_mut(i)?.take()?),
                    None => None,
                };
                let by = line as isize - p.line as isize;
                let mut diags = p.diags.clone();
                diags
                    .iter_mut()
                    .for_each(|d| d.pos.line = moved(d.pos.line, by));
                Some((rule.map(|r| r.shifted(by)), diags))
            });
            let (rule, diags) = match moved {
                Some(m) => m,
                None => read_part(path, part, line)?,
            };
            let at = rule.is_some().then_some(set.rules.len());
            set.rules.extend(rule);
            out.extend(diags.iter().cloned());
            (now.entry(part.into())).or_insert(Part {
                line,
                rule: at,
                diags,
            });
        }
        *kept = now;
        Some((set, out))
    }

    /// [`RuleSet::parse`], with the files whose text `cache` holds taken
    /// from it, when there is a cache. Without one, nothing is kept, and
    /// each file's rules are moved into the set, not copied.
    pub fn parse_with<'a>(
        files: impl IntoIterator<Item = (&'a Path, &'a str)>,
        mut cache: Option<&mut RuleCache>,
    ) -> (RuleSet, Vec<Diagnostic>) {
        let mut set = RuleSet::default();
        let mut out: Vec<Diagnostic> = Vec::new();
        let mut read = std::collections::HashSet::new();
        for (path, text) in files {
            let (one, diags) = match cache.as_deref_mut() {
                None => RuleSet::parse_one(path, text),
                Some(cache) => {
                    read.insert(path.to_path_buf());
                    match cache.files.remove(path) {
                        Some(mut k) if *k.src.text == *text && k.rules.is_some() => {
                            let one = RuleSet {
                                files: vec![k.src.clone()],
                                lists: k.lists.clone(),
                                rules: k.rules.take().unwrap_or_default(),
                            };
                            let diags = k.diags.clone();
                            cache.files.insert(path.to_path_buf(), k);
                            (one, diags)
                        }
                        k => {
                            let old = k.and_then(|k| k.rules).unwrap_or_default();
                            let kept = cache.parts.entry(path.to_path_buf()).or_default();
                            let parts = RuleSet::parse_parts(path, text, kept, old);
                            let (one, diags) = parts.unwrap_or_else(|| {
                                kept.clear();
                                RuleSet::parse_one(path, text)
                            });
                            let k = Kept {
                                src: one.files[0].clone(),
                                lists: one.lists.clone(),
                                rules: None,
                                diags: diags.clone(),
                            };
                            cache.files.insert(path.to_path_buf(), k);
                            (one, diags)
                        }
                    }
                }
            };
            let idx = set.files.len();
            set.files.extend(one.files);
            out.extend(diags);
            // Lists are one namespace across files: the first holds.
            for (name, list) in one.lists {
                if let Some(prev) = set.lists.get(&name) {
                    let mut d = Diags::new(&set.files[idx]);
                    let first = &set.files[prev.file];
                    d.error(
                        list.pos,
                        format!("list `{name}` is already defined"),
                        Some(format!(
                            "first defined at {}:{}:{}",
                            first.path.display(),
                            prev.pos.line,
                            prev.pos.col
                        )),
                    );
                    out.append(&mut d.out);
                    continue;
                }
                set.lists.insert(name, ListDef { file: idx, ..list });
            }
            set.rules
                .extend(one.rules.into_iter().map(|r| RuleDef { file: idx, ..r }));
        }
        if let Some(cache) = cache {
            cache.files.retain(|p, _| read.contains(p));
            cache.parts.retain(|p, _| read.contains(p));
        }
        // Cross-file: rule ids are unique across all files.
        let mut seen: BTreeMap<&str, &RuleDef> = BTreeMap::new();
        for r in &set.rules {
            if r.id == crate::notification::UNHEALTHY_RULE {
                let mut d = Diags::new(&set.files[r.file]);
                d.error(
                    r.id_pos,
                    format!(
                        "rule id `{}` is reserved for tocsin's own alert about failing sources",
                        r.id
                    ),
                    Some("choose another id".into()),
                );
                out.append(&mut d.out);
            }
            if let Some(first) = seen.get(r.id.as_str()) {
                let mut d = Diags::new(&set.files[r.file]);
                d.error(
                    r.id_pos,
                    format!("rule id `{}` is already used", r.id),
                    Some(format!(
                        "first defined at {}:{}:{}; rule ids must be unique, since alert state hangs on them",
                        set.files[first.file].path.display(),
                        first.id_pos.line,
                        first.id_pos.col
                    )),
                );
                out.append(&mut d.out);
            } else {
                seen.insert(&r.id, r);
            }
        }
        // `$list` references resolve across files.
        for r in &set.rules {
            let mut d = Diags::new(&set.files[r.file]);
            if let Some(c) = &r.when {
                check_lists(c, &set.lists, &mut d);
            }
            out.append(&mut d.out);
        }
        (set, out)
    }

    pub fn list(&self, items: &Items) -> Vec<String> {
        match items {
            Items::Inline(v) => v.clone(),
            Items::List { name, .. } => self
                .lists
                .get(name)
                .map(|l| l.items.clone())
                .unwrap_or_default(),
        }
    }
}

/// One rule item of a file (`- …`, see [`cut`]) whose first line is
/// `line`, read on its own; `None` when it is not one list item.
fn read_part(path: &Path, part: &str, line: usize) -> Option<(Option<RuleDef>, Vec<Diagnostic>)> {
    let node = crate::yaml::parse(part).ok()?;
    let crate::yaml::Kind::Seq(items) = &node.kind else {
        return None;
    };
    let [item] = items.as_slice() else {
        return None;
    };
    let src = SourceFile::new(path, part);
    let mut d = Diags::new(&src);
    let by = line as isize - 1;
    let rule = read::rule(0, item, &mut d).map(|r| r.shifted(by));
    d.out
        .iter_mut()
        .for_each(|d| d.pos.line = moved(d.pos.line, by));
    Some((rule, d.out))
}

/// Line `line` moved `by` lines.
fn moved(line: usize, by: isize) -> usize {
    line.saturating_add_signed(by)
}

impl RuleDef {
    /// The rule with every position moved `by` lines: a rule read on its
    /// own put at its place in the file, or moved there by an edit above.
    fn shifted(mut self, by: isize) -> RuleDef {
        let shift = |p: &mut Pos| p.line = moved(p.line, by);
        shift(&mut self.pos);
        shift(&mut self.id_pos);
        if let Some(p) = &mut self.for_pos {
            shift(p);
        }
        let named = (self.sources.iter_mut())
            .chain(self.notify.iter_mut())
            .chain(self.field_refs.iter_mut())
            .chain(self.summary.iter_mut())
            .chain(self.body.iter_mut())
            .chain(self.key.iter_mut());
        named.for_each(|(_, p)| shift(p));
        if let Some(c) = &mut self.when {
            c.shift_lines(by);
        }
        self
    }
}

impl Cond {
    fn shift_lines(&mut self, by: isize) {
        let items = |i: &mut Items| {
            if let Items::List { pos, .. } = i {
                pos.line = moved(pos.line, by);
            }
        };
        match self {
            Cond::In { items: i, .. } => items(i),
            Cond::Text { any, all, none, .. } => {
                [any, all, none].into_iter().flatten().for_each(items)
            }
            Cond::Absent { pos, .. } | Cond::Count { pos, .. } => pos.line = moved(pos.line, by),
            Cond::Expr(e) => e.pos.line = moved(e.pos.line, by),
            Cond::All(v) | Cond::Any(v) => v.iter_mut().for_each(|c| c.shift_lines(by)),
            Cond::Not(c) => c.shift_lines(by),
            Cond::Cmp { .. }
            | Cond::Exists { .. }
            | Cond::Regex { .. }
            | Cond::Changed { .. }
            | Cond::Delta { .. } => {}
        }
    }
}

fn check_lists(c: &Cond, lists: &BTreeMap<String, ListDef>, d: &mut Diags) {
    let mut check = |items: &Items| {
        if let Items::List { name, pos } = items
            && !lists.contains_key(name)
        {
            let hint = crate::diag::closest(name, lists.keys().map(String::as_str))
                .map(|c| format!("did you mean `${c}`?"))
                .unwrap_or_else(|| format!("define it under `lists:` as `{name}: [..]`"));
            d.error(*pos, format!("unknown list `${name}`"), Some(hint));
        }
    };
    match c {
        Cond::In { items, .. } => check(items),
        Cond::Text { any, all, none, .. } => {
            for i in [any, all, none].into_iter().flatten() {
                check(i);
            }
        }
        Cond::Expr(e) => {
            for name in e.program.lists.iter().filter(|n| !lists.contains_key(*n)) {
                // `lists.cel-only` reads as `lists.cel - only`: such a name
                // is written `lists["cel-only"]`.
                let spelt = |c: &str| {
                    if c.chars().all(|x| x.is_alphanumeric() || x == '_') {
                        format!("lists.{c}")
                    } else {
                        format!("lists[\"{c}\"]")
                    }
                };
                let hint = crate::diag::closest(name, lists.keys().map(String::as_str))
                    .or_else(|| {
                        lists
                            .keys()
                            .find(|k| k.starts_with(&format!("{name}-")))
                            .map(String::as_str)
                    })
                    .map(|c| format!("did you mean `{}`?", spelt(c)))
                    .unwrap_or_else(|| format!("define it under `lists:` as `{name}: [..]`"));
                d.error(
                    e.pos,
                    format!("the expression reads an unknown list `lists.{name}`"),
                    Some(hint),
                );
            }
        }
        Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| check_lists(c, lists, d)),
        Cond::Not(c) => check_lists(c, lists, d),
        _ => {}
    }
}

/// `path` itself when it is a file, else the `*.yaml`/`*.yml` files of the
/// folder (not hidden ones), by name.
pub(crate) fn rule_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the rules path: {e}"))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list the rules folder: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(set: &RuleSet) -> Vec<(String, String)> {
        (set.rules.iter())
            .map(|r| {
                let file = set.files[r.file].path.display().to_string();
                (file, r.id.clone())
            })
            .collect()
    }

    /// What a parse gives, positions included, messages in file order.
    fn seen(set: &RuleSet, diags: &[Diagnostic]) -> (String, Vec<String>) {
        let mut d: Vec<(usize, usize, String)> = (diags.iter())
            .map(|d| {
                (
                    d.pos.line,
                    d.pos.col,
                    format!("{} | {:?}", d.headline(), d.line_text),
                )
            })
            .collect();
        d.sort();
        let shown = format!("{:?} {:?}", set.rules, set.lists);
        (shown, d.into_iter().map(|(.., t)| t).collect())
    }

    #[test]
    fn a_file_read_one_rule_at_a_time_reads_as_the_whole_file_through_edits() {
        let rule = |id: &str, above: u32| {
            format!(
                "  - id: {id}\n    source: s\n    when: {{ field: rate, above: {above} }}\n    notify: [out]\n"
            )
        };
        let base = format!(
            "# tariffs\nlists:\n  allies: [EU, JP]\nrules:\n{}  # a comment at the list's depth\n{}\n  - {{ id: c, source: s, when: {{ field: partner, in: $allies }}, notify: [out], summary: \"x\" }}\n{}",
            rule("a", 1),
            rule("b", 2),
            "  - id: d\n    source: s\n    when:\n      all:\n        - { text: [title], any: [\"export control*\", $allies] }\n        - { expr: \"rate > 3\" }\n        - { count: 2, within: 1h }\n    notify: [out]\n    body: |\n      - not an item\n      rate {{ rate }}\n"
        );
        let versions = [
            base.clone(),
            // One threshold edited.
            base.replace("above: 2", "above: 5"),
            // A line added above: the rules after it move down.
            base.replacen("rules:\n", "rules:\n\n  # new\n", 1),
            // And taken out again: the rules move up.
            base.clone(),
            // Problems inside a rule: an unknown key, a bad threshold, an
            // unknown list, and the same rule twice.
            format!(
                "{base}  - id: e\n    source: s\n    wen: {{ field: rate, above: x }}\n    notify: [out]\n  - id: f\n    source: s\n    when: {{ field: partner, in: $allie }}\n    notify: [out]\n{}{}",
                rule("g", 1),
                rule("g", 1)
            ),
            // A key after the rules, and rules at the key's own depth.
            "rules:\n- id: a\n  source: s\n  when: { field: rate, above: 1 }\n  notify: [out]\nlists:\n  allies: [UK]\nunknown: 1\n"
                .to_string(),
            // Read whole: an alias across rules, a syntax error, a flow
            // mapping closed at the list's depth, a flow list.
            format!(
                "{}  - &r {{ id: h, source: s, notify: [out] }}\n  - *r\n",
                base
            ),
            format!("{}  - {{ id: i, source: s, notify: [out]\n", base),
            "rules:\n  - {\n    id: j, source: s, notify: [out]\n  }\n".to_string(),
            "rules: [ { id: k, source: s, notify: [out] } ]\n".to_string(),
            base.clone(),
        ];
        let path = Path::new("r.yaml");
        let mut cache = RuleCache::default();
        for (n, text) in versions.iter().enumerate() {
            let (cached, cached_diags) =
                RuleSet::parse_with([(path, text.as_str())], Some(&mut cache));
            let (whole, whole_diags) = RuleSet::parse([(path, text.as_str())]);
            assert_eq!(
                seen(&cached, &cached_diags),
                seen(&whole, &whole_diags),
                "version {n}:\n{text}"
            );
            cache.keep(cached);
            // Versions 6 to 9 are read whole, the others rule by rule.
            let whole = (6..=9).contains(&n);
            assert_eq!(cache.parts[path].is_empty(), whole, "version {n}");
        }
        // The cut was taken: the base version's rules are kept one by one.
        assert_eq!(cache.parts[path].len(), 4);
    }

    #[test]
    fn a_cache_reads_again_only_the_files_that_changed_and_gives_the_same_set() {
        let a = "lists:\n  allies: [EU, JP]\nrules:\n  - { id: a1, source: s, when: { field: partner, in: $allies }, notify: [out] }\n";
        let b =
            "rules:\n  - { id: b1, source: s, when: { field: rate, above: 1 }, notify: [out] }\n";
        let b2 = "lists:\n  allies: [UK]\nrules:\n  - { id: b1, source: s, when: { field: rate, above: 2 }, notify: [out] }\n  - { id: a1, source: s, when: { field: rate, above: 3 }, notify: [out] }\n";
        let c =
            "rules:\n  - { id: c1, source: s, when: { field: rate, above: 1 }, notify: [out] }\n";
        let (pa, pb, pc) = (
            Path::new("a.yaml"),
            Path::new("b.yaml"),
            Path::new("c.yaml"),
        );
        let mut cache = RuleCache::default();
        let versions: [&[(&Path, &str)]; 4] = [
            &[(pa, a), (pb, b)],
            // b.yaml edited: a list and a rule id that a.yaml has already.
            &[(pa, a), (pb, b2)],
            // c.yaml added before b.yaml, which a.yaml's index no longer
            // follows.
            &[(pc, c), (pa, a), (pb, b)],
            // a.yaml gone.
            &[(pc, c), (pb, b)],
        ];
        for files in versions {
            let (cached, cached_diags) =
                RuleSet::parse_with(files.iter().copied(), Some(&mut cache));
            let (fresh, fresh_diags) = RuleSet::parse(files.iter().copied());
            assert_eq!(ids(&cached), ids(&fresh));
            let show = |d: &[Diagnostic]| d.iter().map(|d| d.headline()).collect::<Vec<_>>();
            assert_eq!(show(&cached_diags), show(&fresh_diags));
            assert_eq!(format!("{:?}", cached.lists), format!("{:?}", fresh.lists));
            assert_eq!(cache.files.len(), files.len(), "files gone are dropped");
            cache.keep(cached);
        }
        let (_, diags) = RuleSet::parse_with([(pa, a), (pb, b2)], Some(&mut cache));
        let text: Vec<String> = diags.iter().map(|d| d.headline()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("list `allies` is already defined")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("rule id `a1` is already used")),
            "{text:?}"
        );
    }
}
