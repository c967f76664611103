//! minijinja templates for `summary`, `body`, keys and webhook bodies. One
//! environment holds every template of a rule set, compiled once at load.

use minijinja::{Environment, UndefinedBehavior};

/// A problem with a template: where within it (line from 1; column from 1
/// when known), what, and what to write instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub col: Option<usize>,
    pub message: String,
    pub hint: String,
}

/// Checks `text` as a template: its syntax, and that every filter, test and
/// function it names exists (minijinja looks them up only when a render
/// reaches them, which may be the first alert, months later).
pub fn check(text: &str) -> Result<(), Vec<Problem>> {
    use minijinja::machinery::{Instruction, get_compiled_template};
    let env = environment();
    let tmpl = env.template_from_str(text).map_err(|e| {
        vec![Problem {
            line: e.line().unwrap_or(1),
            col: None,
            message: format!(
                "does not parse: {}",
                e.detail()
                    .map_or_else(|| e.kind().to_string(), str::to_string)
            ),
            hint: "fields are written `{{ field }}`; see the minijinja syntax for `{% if %}`"
                .into(),
        }]
    })?;
    let compiled = get_compiled_template(&tmpl);
    let mut named: Vec<(&str, &str, Option<usize>, Option<usize>)> = Vec::new();
    let mut locals: Vec<&str> = vec!["caller", "super", "loop", "self", "varargs", "kwargs"];
    let lists = std::iter::once(&compiled.instructions).chain(compiled.blocks.values());
    for ins in lists {
        let mut i = 0;
        while let Some(x) = ins.get(i) {
            let (line, col) = match ins.get_span(i) {
                Some(s) => (Some(s.start_line as usize), Some(s.start_col as usize + 1)),
                None => (ins.get_line(i), None),
            };
            match x {
                Instruction::ApplyFilter(name, ..) => named.push(("filter", name, line, col)),
                Instruction::PerformTest(name, ..) => named.push(("test", name, line, col)),
                Instruction::CallFunction(name, ..) => named.push(("function", name, line, col)),
                Instruction::StoreLocal(name) | Instruction::BuildMacro(name, ..) => {
                    locals.push(name)
                }
                _ => {}
            }
            i += 1;
        }
    }
    let mut problems = Vec::new();
    for (kind, name, line, col) in named {
        if kind == "function" && locals.contains(&name) {
            continue;
        }
        let (probe, unknown) = match kind {
            "filter" => (
                format!("{{{{ none | {name} }}}}"),
                minijinja::ErrorKind::UnknownFilter,
            ),
            "test" => (
                format!("{{{{ none is {name} }}}}"),
                minijinja::ErrorKind::UnknownTest,
            ),
            _ => (
                format!("{{{{ {name}() }}}}"),
                minijinja::ErrorKind::UnknownFunction,
            ),
        };
        if env
            .render_str(&probe, ())
            .is_err_and(|e| e.kind() == unknown)
        {
            problems.push(Problem {
                line: line.unwrap_or(1),
                col,
                message: format!("unknown {kind} `{name}`"),
                hint: match kind {
                    "filter" => "filters include upper, lower, title, trim, replace, default, join, length, round, int, float, first, last, sort, unique, truncate (see minijinja's filters)",
                    "test" => "tests include defined, undefined, none, number, string, even, odd, in, startingwith, endingwith (see minijinja's tests)",
                    _ => "functions are range, dict, namespace and the macros the template defines",
                }
                .into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Instructions one rendering may run: a summary takes tens, a body with a
/// loop over its fields hundreds; a loop that runs away stops here.
pub const FUEL: u64 = 100_000;

pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
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

/// Checks the template `text` written at `node` (the `what` template) and
/// reports each problem at its place: within the line when the template is
/// one line, else at the template with its line named. False when there
/// was a problem.
pub fn check_at(
    text: &str,
    node: &crate::yaml::Node,
    what: &str,
    d: &mut crate::diag::Diags,
) -> bool {
    let Err(problems) = check(text) else {
        return true;
    };
    let one_line = !text.contains('\n');
    // A quoted value's position is its opening quote.
    let quoted = d
        .src
        .line(node.line)
        .and_then(|l| l.chars().nth(node.col.saturating_sub(1)))
        .is_some_and(|c| c == '"' || c == '\'');
    for p in problems {
        let (pos, message) = match p.col {
            Some(col) if one_line && p.line == 1 => (
                crate::diag::Pos::new(node.line, node.col + quoted as usize + col - 1, 1),
                format!("the `{what}` template: {}", p.message),
            ),
            _ => (
                node.pos(),
                format!("the `{what}` template, line {}: {}", p.line, p.message),
            ),
        };
        d.error(pos, message, Some(p.hint));
    }
    false
}

/// Whether a rendering stopped because it ran out of fuel.
pub fn out_of_fuel(e: &minijinja::Error) -> bool {
    e.kind() == minijinja::ErrorKind::OutOfFuel
}

pub fn describe(e: &minijinja::Error) -> String {
    if out_of_fuel(e) {
        return format!("ran past its budget of {FUEL} steps");
    }
    let detail = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    match e.line() {
        Some(l) => format!("{detail} (line {l} of the template)"),
        None => detail,
    }
}
