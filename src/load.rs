//! Config and rules loaded, validated and compiled together: what `run`,
//! `check`, `eval`, reloads and the warnings of `check` share.

use std::path::Path;

use crate::config::Config;
use crate::diag::{Diagnostic, Problems};
use crate::engine::Compiled;
use crate::rules::{RuleCache, RuleSet};

/// Config and rules, validated and compiled.
pub struct Loaded {
    pub config: Config,
    pub rules: RuleSet,
    pub compiled: Compiled,
    /// The rule files as read, for the next reload to read only those that
    /// changed.
    pub cache: RuleCache,
}

/// Loads and validates everything, reporting every problem at once.
pub fn load(config_path: &Path, rules_override: Option<&Path>) -> Result<Loaded, Problems> {
    load_from(config_path, rules_override, None)
}

/// [`load`] for a daemon, which reloads: the rule files are kept in the
/// [`Loaded::cache`], for the next reload to read only those that changed
/// (give it back [`Loaded::rules`] with [`RuleCache::keep`] once done
/// with them).
pub fn load_kept(config_path: &Path) -> Result<Loaded, Problems> {
    let mut cache = RuleCache::default();
    let mut loaded = load_from(config_path, None, Some(&mut cache))?;
    loaded.cache = cache;
    Ok(loaded)
}

/// [`load`], reading again only the rule files whose text is not in
/// `cache` (see [`RuleCache`]), which then holds the files as read, also
/// when they are refused. The cache is left out of what comes back; give
/// it back [`Loaded::rules`] with [`RuleCache::keep`] once done with them.
pub fn load_with(config_path: &Path, cache: &mut RuleCache) -> Result<Loaded, Problems> {
    load_from(config_path, None, Some(cache))
}

fn load_from(
    config_path: &Path,
    rules_override: Option<&Path>,
    mut cache: Option<&mut RuleCache>,
) -> Result<Loaded, Problems> {
    let config = Config::load(config_path)?;
    let rules_path = rules_override.unwrap_or(&config.rules).to_path_buf();
    let (rules, mut diags) = RuleSet::load_with(&rules_path, cache.as_deref_mut());
    // Compile even when some rules failed to parse, so that references to
    // sources and channels are checked in the same pass.
    let compiled = crate::engine::compile(&config, &rules);
    let problems = match compiled {
        Ok(compiled) if !diags.iter().any(Diagnostic::is_error) => {
            return Ok(Loaded {
                config,
                rules,
                compiled,
                cache: RuleCache::default(),
            });
        }
        Ok(_) => Problems(diags),
        Err(mut p) => {
            diags.append(&mut p.0);
            Problems(diags)
        }
    };
    if let Some(cache) = cache {
        cache.keep(rules);
    }
    Err(problems)
}
