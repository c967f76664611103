//! Config and rules loaded, validated and compiled together: what `run`,
//! `check`, `eval`, reloads and the warnings of `check` share.

use std::path::Path;

use crate::config::Config;
use crate::diag::{Diagnostic, Problems};
use crate::engine::Compiled;
use crate::rules::RuleSet;

/// Config and rules, validated and compiled.
pub struct Loaded {
    pub config: Config,
    pub rules: RuleSet,
    pub compiled: Compiled,
}

/// Loads and validates everything, reporting every problem at once.
pub fn load(config_path: &Path, rules_override: Option<&Path>) -> Result<Loaded, Problems> {
    let config = Config::load(config_path)?;
    let rules_path = rules_override.unwrap_or(&config.rules).to_path_buf();
    let (rules, mut diags) = RuleSet::load(&rules_path);
    // Compile even when some rules failed to parse, so that references to
    // sources and channels are checked in the same pass.
    match crate::engine::compile(&config, &rules) {
        Ok(compiled) if !diags.iter().any(Diagnostic::is_error) => Ok(Loaded {
            config,
            rules,
            compiled,
        }),
        Ok(_) => Err(Problems(diags)),
        Err(mut p) => {
            diags.append(&mut p.0);
            Err(Problems(diags))
        }
    }
}
