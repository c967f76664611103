//! minijinja templates for `summary`, `body`, keys and webhook bodies. One
//! environment holds every template of a rule set, compiled once at load.

use minijinja::{Environment, UndefinedBehavior};

/// Whether `text` parses as a template; the error names the line within it.
pub fn check_syntax(text: &str) -> Result<(), String> {
    let env = environment();
    env.template_from_str(text)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Missing fields render as empty text rather than failing the alert.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env
}

pub fn describe(e: &minijinja::Error) -> String {
    let detail = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    match e.line() {
        Some(l) => format!("{detail} (line {l} of the template)"),
        None => detail,
    }
}
