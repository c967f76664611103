//! The source's layout as README and `src/lib.rs` describe it: no `unsafe`
//! anywhere, and no file that imports a module importing it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code as the crate sees it: comments and the unit tests at its
/// end left out.
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    (text.lines())
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file under `src/`: `store::pg` for
/// `src/store/pg.rs`, `store` for `src/store/mod.rs`, empty for the roots.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// Per module (file), the other modules (files) its code names through
/// `crate::` or `super::`; a module's own parents are left out, as a file
/// below them is declared by them.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let texts: BTreeMap<String, String> = (files.iter())
        .map(|f| {
            (
                module_of(src, f),
                code(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    // The longest leading part of `path` that is a module of its own file.
    let resolve = |path: &str| -> Option<String> {
        let mut parts: Vec<&str> = path.split("::").collect();
        while !parts.is_empty() {
            let m = parts.join("::");
            if texts.contains_key(&m) {
                return Some(m);
            }
            parts.pop();
        }
        None
    };
    let path =
        regex::Regex::new(r"\b(crate|super)::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)").unwrap();
    let mut out = BTreeMap::new();
    for (m, text) in &texts {
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        let mut names = BTreeSet::new();
        for c in path.captures_iter(text) {
            let full = match &c[1] {
                "crate" => c[2].to_string(),
                _ if parent.is_empty() => c[2].to_string(),
                _ => format!("{parent}::{}", &c[2]),
            };
            if let Some(r) = resolve(&full)
                && !r.is_empty()
                && r != *m
                && !m.starts_with(&format!("{r}::"))
            {
                names.insert(r);
            }
        }
        out.insert(m.clone(), names);
    }
    out
}

#[test]
fn no_file_imports_a_module_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let imports = imports(&src);
    // The reading finds what it should: these are known imports.
    assert!(imports["store::db"].contains("store::pg"), "{imports:?}");
    assert!(imports["engine"].contains("notification"), "{imports:?}");
    let back: Vec<(&String, &String)> = (imports.iter())
        .flat_map(|(a, bs)| bs.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a < b && imports.get(*b).is_some_and(|i| i.contains(*a)))
        .collect();
    assert!(back.is_empty(), "files that import each other: {back:?}");
}

#[test]
fn no_unsafe_code_in_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.contains("unsafe") && line.trim() != "#![forbid(unsafe_code)]" {
                found.push(format!("{}:{}: {line}", f.display(), i + 1));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}
