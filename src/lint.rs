//! Warnings for `tocsin check` (exit 0): things that are valid but likely
//! mistakes. Lists no rule uses, rules that notify no channel, fields a
//! rule reads that the header of its table file does not have, and data
//! paths that match no file.

use std::collections::BTreeSet;

use crate::config::{Format, Mode, SourceKind};
use crate::diag::{Diagnostic, Severity, did_you_mean};
use crate::load::Loaded;
use crate::rules::{Cond, Items};

pub fn warnings(l: &Loaded) -> Vec<Diagnostic> {
    let set = &l.rules;
    let mut out = Vec::new();
    let mut headers = std::collections::HashMap::new();
    let warn = |file: usize, pos: crate::diag::Pos, message: String, hint: Option<String>| {
        let src = &set.files[file];
        Diagnostic {
            file: src.path.to_path_buf(),
            pos,
            severity: Severity::Warning,
            message,
            hint,
            line_text: src.line(pos.line).map(str::to_string),
        }
    };

    let mut used = BTreeSet::new();
    for def in &set.rules {
        if let Some(c) = &def.when {
            lists_in(c, &mut used);
        }
    }
    for (name, list) in &set.lists {
        if !used.contains(name.as_str()) && !used.contains("*") {
            out.push(warn(
                list.file,
                list.pos,
                format!("list `{name}` is not used by any rule"),
                Some(format!(
                    "refer to it as `${name}` in an `in:` or a `text:` condition, or as `lists.{name}` in an `expr:`, or remove it"
                )),
            ));
        }
    }

    out.extend(missing_files(&l.config));

    for def in &set.rules {
        if def.notify.is_empty() {
            out.push(warn(
                def.file,
                def.id_pos,
                format!(
                    "rule `{}` notifies no channel: its alerts are recorded and sent nowhere",
                    def.id
                ),
                Some("add `notify: [channel, ...]`".into()),
            ));
        }
        let mut fields = BTreeSet::new();
        if let Some(c) = &def.when {
            fields_in(c, &mut fields);
        }
        for (source, _) in &def.sources {
            let Some(cfg) = l.config.source(source) else {
                continue;
            };
            let SourceKind::File(f) = &cfg.kind else {
                continue;
            };
            if f.mode != Mode::Table {
                continue;
            }
            // Read once per source, not once per rule.
            let header = headers
                .entry(source.as_str())
                .or_insert_with(|| header_of(&f.path, f.format));
            let Some(header) = header.as_ref() else {
                continue;
            };
            for field in &fields {
                let top = field.split('.').next().unwrap_or(field);
                if header.iter().any(|h| h == field || h == top) || cfg.fields.contains_key(top) {
                    continue;
                }
                let hint = did_you_mean(field, header.iter().map(String::as_str))
                    .unwrap_or_else(|| format!("its columns are: {}", header.join(", ")));
                out.push(warn(
                    def.file,
                    def.id_pos,
                    format!(
                        "rule `{}` reads `{field}`, but {} has no such column",
                        def.id,
                        f.path.display()
                    ),
                    Some(hint),
                ));
            }
        }
    }
    out
}

/// File sources whose path or glob matches no file now, at their `path:`.
fn missing_files(config: &crate::config::Config) -> Vec<Diagnostic> {
    let Ok(text) = std::fs::read_to_string(&config.path) else {
        return vec![];
    };
    let src = crate::diag::SourceFile::new(&config.path, text);
    let tree = crate::yaml::parse(&src.text).ok();
    let path_node = |name: &str| -> Option<crate::diag::Pos> {
        let crate::yaml::Kind::Map(top) = &tree.as_ref()?.kind else {
            return None;
        };
        let (_, sources) = top.iter().find(|(k, _)| k.as_str() == Some("sources"))?;
        let crate::yaml::Kind::Seq(items) = &sources.kind else {
            return None;
        };
        items.iter().find_map(|s| {
            let crate::yaml::Kind::Map(m) = &s.kind else {
                return None;
            };
            let named = m
                .iter()
                .any(|(k, v)| k.as_str() == Some("name") && v.as_str() == Some(name));
            named
                .then(|| m.iter().find(|(k, _)| k.as_str() == Some("path")))
                .flatten()
                .map(|(_, v)| v.pos())
        })
    };
    let mut out = Vec::new();
    for s in &config.sources {
        let SourceKind::File(f) = &s.kind else {
            continue;
        };
        let p = f.path.to_string_lossy();
        let matched = if p.contains(['*', '?', '[']) {
            glob::glob(&p).is_ok_and(|mut it| it.next().is_some())
        } else {
            std::fs::symlink_metadata(&f.path).is_ok()
        };
        if matched {
            continue;
        }
        let pos = path_node(&s.name).unwrap_or_default();
        out.push(Diagnostic {
            file: config.path.clone(),
            pos,
            severity: Severity::Warning,
            message: format!(
                "source `{}`: {} matches no file now",
                s.name,
                f.path.display()
            ),
            hint: Some("the source waits for the file to appear (and is unhealthy after `health.missing_after`); check the path, which is relative to the config file's folder".into()),
            line_text: src.line(pos.line).map(str::to_string),
        });
    }
    out
}

/// The header of a CSV/TSV table file that exists (not a glob).
fn header_of(path: &std::path::Path, format: Option<Format>) -> Option<Vec<String>> {
    let format = format.or_else(|| Format::from_path(path))?;
    let delim = match format {
        Format::Csv => b',',
        Format::Tsv => b'\t',
        _ => return None,
    };
    if path.to_string_lossy().contains(['*', '?', '[']) {
        return None;
    }
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delim)
        .from_path(path)
        .ok()?;
    let h = r.headers().ok()?;
    Some(h.iter().map(|s| s.trim().to_string()).collect())
}

fn lists_in<'a>(c: &'a Cond, out: &mut BTreeSet<&'a str>) {
    let mut item = |i: &'a Option<Items>| {
        if let Some(Items::List { name, .. }) = i {
            out.insert(name.as_str());
        }
    };
    match c {
        Cond::In {
            items: Items::List { name, .. },
            ..
        } => {
            out.insert(name.as_str());
        }
        Cond::Text { any, all, none, .. } => {
            item(any);
            item(all);
            item(none);
        }
        Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| lists_in(c, out)),
        Cond::Not(c) => lists_in(c, out),
        Cond::Expr(e) => {
            out.extend(e.program.lists.iter().map(String::as_str));
            if e.program.any_list {
                out.insert("*");
            }
        }
        _ => {}
    }
}

fn fields_in<'a>(c: &'a Cond, out: &mut BTreeSet<&'a str>) {
    match c {
        Cond::Cmp { field, .. }
        | Cond::In { field, .. }
        | Cond::Exists { field, .. }
        | Cond::Changed { field }
        | Cond::Delta { field, .. } => {
            out.insert(field.as_str());
        }
        Cond::Text { fields, .. } | Cond::Regex { fields, .. } => {
            out.extend(fields.iter().map(String::as_str));
        }
        Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| fields_in(c, out)),
        Cond::Not(c) => fields_in(c, out),
        Cond::Expr(e) => out.extend(
            e.vars
                .iter()
                .filter(|v| *v != "prev" && *v != "lists")
                .map(String::as_str),
        ),
        Cond::Absent { .. } | Cond::Count { .. } => {}
    }
}
