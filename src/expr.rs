//! CEL expressions (`expr:` conditions), bounded. The cel crate parses and
//! evaluates by recursion, and a comprehension's work is the product of the
//! lists it walks, so an expression is held to three budgets:
//!
//! - before parsing, its size: bytes, operators and nesting, counted by a
//!   flat scan, so no input can make the parser recurse deeply;
//! - after parsing, its depth and how deeply comprehensions nest;
//! - at run time, steps: every list or map a comprehension walks is
//!   charged by its size (a call to `@budget`, which no expression can
//!   write, wraps each comprehension's range), and an evaluation that runs
//!   out fails, as an expression with a type error does.
//!
//! Parsing and evaluation run on a stack known to be deep enough for the
//! expression (the `stacker` crate grows one when the thread's is short).

use std::cell::Cell;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, Value};

/// Bytes of source.
pub const MAX_BYTES: usize = 4096;
/// Operators, member accesses and indexes, in all.
pub const MAX_OPERATORS: usize = 256;
/// Brackets of any kind, one inside another.
pub const MAX_NESTING: usize = 32;
/// Depth of the parsed expression.
pub const MAX_DEPTH: usize = 64;
/// Comprehensions (`all`, `exists`, `map`, ...), one inside another.
pub const MAX_COMPREHENSIONS: usize = 3;
/// Items that comprehensions may walk in one evaluation.
pub const STEPS: u64 = 100_000;

/// Stack one level of the parsed expression may take, with room to spare
/// (unoptimised builds take tens of kilobytes).
const STACK_PER_LEVEL: usize = 64 * 1024;

/// The standard environment, plus `@budget`.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    env.add_overload(
        BUDGET,
        "@budget_dyn",
        vec![cel::common::types::DYN_TYPE],
        budget,
    )
    .expect("`@budget` cannot clash: no expression can name it");
    Arc::new(env)
});

const BUDGET: &str = "@budget";

thread_local! {
    /// Steps left to the evaluation under way on this thread, and whether
    /// it ran out (an error inside `exists` may be absorbed by CEL's rules,
    /// so running out is remembered apart from the result).
    static LEFT: Cell<u64> = const { Cell::new(STEPS) };
    static EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

/// Charges a comprehension's range by its size and hands it on.
fn budget<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let v = args
        .pop()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    let size = v
        .as_sizer()
        .map_or(0, |s| s.size().into_inner().max(0) as u64);
    let left = LEFT.get();
    if size + 1 > left {
        LEFT.set(0);
        EXCEEDED.set(true);
        return Err(ExecutionError::function_error(
            BUDGET,
            format!("the expression walked more than {STEPS} items"),
        ));
    }
    LEFT.set(left - size - 1);
    Ok(v)
}

/// A problem with an expression, at a line and column counted from 1
/// within its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: String,
}

/// Why an evaluation gave no value.
#[derive(Debug)]
pub enum Failure {
    /// It ran out of steps.
    Budget,
    /// A missing field, a type error, ...
    Error(ExecutionError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Budget => write!(
                f,
                "ran past its budget: comprehensions walked more than {STEPS} items"
            ),
            Failure::Error(e) => e.fmt(f),
        }
    }
}

/// A compiled expression.
pub struct Program {
    expr: IdedExpr,
    depth: usize,
    /// The variables it reads (record fields, `prev`, `lists`), sorted.
    pub vars: Vec<String>,
    /// The lists it reads by name (`lists.allies`, `lists["allies"]`), and
    /// whether it reads `lists` otherwise too (then any list).
    pub lists: Vec<String>,
    pub any_list: bool,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("depth", &self.depth)
            .field("vars", &self.vars)
            .finish()
    }
}

/// A context for one evaluation, with the environment `@budget` lives in.
pub fn context() -> Context<'static, 'static> {
    Context::with_env(Arc::clone(&ENV))
}

impl Program {
    /// Checks the budgets and parses; problems come with their place.
    pub fn compile(source: &str) -> Result<Program, Vec<Problem>> {
        size(source).map_err(|p| vec![p])?;
        // Within the size budget the parser's recursion is bounded; the
        // stack below holds it in an unoptimised build too.
        let parsed = stacker::grow((MAX_OPERATORS + MAX_NESTING) * STACK_PER_LEVEL, || {
            ENV.parser().parse(source)
        });
        let mut expr = parsed.map_err(|errors| {
            errors
                .errors
                .iter()
                .take(3)
                .map(|e| Problem {
                    line: e.pos.0.max(1) as usize,
                    col: e.pos.1.max(1) as usize,
                    message: format!("the expression does not parse: {}", e.msg),
                    hint: "write a CEL expression over the record's fields, `prev` and `lists`, e.g. `rate_pct > 157.0 && prev.rate_pct <= 157.0`".into(),
                })
                .collect::<Vec<_>>()
        })?;
        let (depth, comprehensions) =
            stacker::grow((MAX_OPERATORS + MAX_NESTING) * STACK_PER_LEVEL, || {
                shape(&expr)
            });
        let whole = |message: String, hint: &str| {
            vec![Problem {
                line: 1,
                col: 1,
                message,
                hint: hint.into(),
            }]
        };
        if depth > MAX_DEPTH {
            return Err(whole(
                format!("the expression nests {depth} deep, more than {MAX_DEPTH}"),
                "split it into conditions under `all:` or `any:`",
            ));
        }
        if comprehensions > MAX_COMPREHENSIONS {
            return Err(whole(
                format!(
                    "the expression nests {comprehensions} comprehensions (`all`, `exists`, `map`, `filter`), more than {MAX_COMPREHENSIONS}"
                ),
                "each nested comprehension multiplies the work per record; nest at most three",
            ));
        }
        stacker::grow((depth + 4) * STACK_PER_LEVEL, || charge(&mut expr));
        let mut vars = Vec::new();
        stacker::grow((depth + 4) * STACK_PER_LEVEL, || {
            variables(&expr, &mut Vec::new(), &mut vars)
        });
        vars.sort();
        vars.dedup();
        let (mut lists, mut any_list) = (Vec::new(), false);
        stacker::grow((depth + 4) * STACK_PER_LEVEL, || {
            list_refs(&expr, &mut lists, &mut any_list)
        });
        lists.sort();
        lists.dedup();
        Ok(Program {
            expr,
            depth,
            vars,
            lists,
            any_list,
        })
    }

    /// Evaluates in `ctx` (made by [`context`]) within the step budget.
    pub fn execute(&self, ctx: &Context) -> Result<Value, Failure> {
        LEFT.set(STEPS);
        EXCEEDED.set(false);
        let red = (self.depth + 4) * STACK_PER_LEVEL;
        let result = stacker::maybe_grow(red, 2 * red, || Value::resolve(&self.expr, ctx));
        if EXCEEDED.get() {
            return Err(Failure::Budget);
        }
        result.map_err(Failure::Error)
    }
}

/// The size budget, by a flat scan: no recursion, whatever the input.
fn size(source: &str) -> Result<(), Problem> {
    let at = |offset: usize, message: String, hint: &str| {
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem {
            line,
            col,
            message,
            hint: hint.into(),
        }
    };
    const SPLIT: &str = "split it into conditions under `all:` or `any:`, or say it with the condition vocabulary (`field:`, `text:`, `in: $list`)";
    if source.len() > MAX_BYTES {
        let mut end = MAX_BYTES;
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        return Err(at(
            end,
            format!(
                "the expression is {} bytes long, more than {MAX_BYTES}",
                source.len()
            ),
            SPLIT,
        ));
    }
    let b = source.as_bytes();
    let (mut ops, mut depth) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            match c {
                b'\\' => i += 1,
                _ if c == q => quote = None,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' => quote = Some(c),
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(at(
                        i,
                        format!("the expression nests brackets more than {MAX_NESTING} deep"),
                        SPLIT,
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'!' | b'<' | b'>' | b'?' | b'&' | b'|' | b'='
            | b'.' => {
                // A two-byte operator (`&&`, `<=`, `!=`) counts once; a
                // dot inside a number is not an operator.
                let digits = c == b'.'
                    && i > 0
                    && b[i - 1].is_ascii_digit()
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit);
                let second = i > 0
                    && matches!(b[i - 1], b'&' | b'|' | b'=' | b'<' | b'>' | b'!')
                    && matches!(c, b'&' | b'|' | b'=');
                if !digits && !second {
                    ops += 1;
                    if ops > MAX_OPERATORS {
                        return Err(at(
                            i,
                            format!("the expression has more than {MAX_OPERATORS} operators"),
                            SPLIT,
                        ));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(CallExpr { target, args, .. }) => {
            target.iter().map(|t| &**t).chain(args.iter()).collect()
        }
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m.entries.iter().flat_map(|e| entry(&e.expr)).collect(),
        Expr::Struct(s) => s.entries.iter().flat_map(|e| entry(&e.expr)).collect(),
        Expr::Select(s) => vec![&s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => vec![],
    }
}

fn entry(e: &EntryExpr) -> Vec<&IdedExpr> {
    match e {
        EntryExpr::StructField(f) => vec![&f.value],
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
    }
}

/// The depth of the expression and of its nested comprehensions.
fn shape(e: &IdedExpr) -> (usize, usize) {
    let own = usize::from(matches!(e.expr, Expr::Comprehension(_)));
    children(e)
        .into_iter()
        .map(shape)
        .fold((1, own), |(d, c), (cd, cc)| {
            (d.max(cd + 1), c.max(cc + own))
        })
}

/// Wraps the range of every comprehension in a `@budget` call.
fn charge(e: &mut IdedExpr) {
    let walk = |x: &mut IdedExpr| charge(x);
    match &mut e.expr {
        Expr::Call(CallExpr { target, args, .. }) => {
            target.iter_mut().for_each(|t| walk(t));
            args.iter_mut().for_each(walk);
        }
        Expr::Comprehension(c) => {
            for x in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                walk(x);
            }
            let range = std::mem::take(&mut c.iter_range);
            c.iter_range = IdedExpr {
                id: range.id,
                expr: Expr::Call(CallExpr {
                    func_name: BUDGET.into(),
                    target: None,
                    args: vec![range],
                }),
            };
        }
        Expr::List(l) => l.elements.iter_mut().for_each(walk),
        Expr::Map(m) => m.entries.iter_mut().for_each(|x| entry_mut(&mut x.expr)),
        Expr::Struct(s) => s.entries.iter_mut().for_each(|x| entry_mut(&mut x.expr)),
        Expr::Select(s) => walk(&mut s.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entry_mut(e: &mut EntryExpr) {
    match e {
        EntryExpr::StructField(f) => charge(&mut f.value),
        EntryExpr::MapEntry(m) => {
            charge(&mut m.key);
            charge(&mut m.value);
        }
    }
}

/// The lists read by name, and whether `lists` is read any other way.
fn list_refs(e: &IdedExpr, out: &mut Vec<String>, any: &mut bool) {
    let is_lists = |x: &IdedExpr| matches!(&x.expr, Expr::Ident(n) if n == "lists");
    match &e.expr {
        Expr::Select(s) if is_lists(&s.operand) => out.push(s.field.clone()),
        Expr::Call(c)
            if c.func_name == cel::common::ast::operators::INDEX
                && c.args.len() == 2
                && is_lists(&c.args[0]) =>
        {
            match &c.args[1].expr {
                Expr::Literal(cel::common::ast::LiteralValue::String(name)) => {
                    out.push(name.inner().to_string())
                }
                _ => *any = true,
            }
        }
        Expr::Ident(n) if n == "lists" => *any = true,
        _ => children(e).into_iter().for_each(|c| list_refs(c, out, any)),
    }
}

/// The names an expression reads that no comprehension binds.
fn variables(e: &IdedExpr, bound: &mut Vec<String>, out: &mut Vec<String>) {
    match &e.expr {
        Expr::Ident(name) => {
            if !bound.contains(name) {
                out.push(name.clone());
            }
        }
        Expr::Comprehension(c) => {
            variables(&c.iter_range, bound, out);
            variables(&c.accu_init, bound, out);
            let n = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.iter().cloned());
            bound.push(c.accu_var.clone());
            for x in [&c.loop_cond, &c.loop_step, &c.result] {
                variables(x, bound, out);
            }
            bound.truncate(n);
        }
        _ => children(e)
            .into_iter()
            .for_each(|c| variables(c, bound, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(source: &str, vars: &[(&str, Value)]) -> Result<Value, Failure> {
        let p = Program::compile(source).unwrap();
        let mut ctx = context();
        for (k, v) in vars {
            ctx.add_variable_from_value(*k, v.clone());
        }
        p.execute(&ctx)
    }

    #[test]
    fn expressions_evaluate_and_name_their_variables() {
        let p = Program::compile(
            "rate_pct > 157.0 && prev.rate_pct <= 157.0 && tags.exists(t, t == lists.x[0])",
        )
        .unwrap();
        assert_eq!(p.vars, ["lists", "prev", "rate_pct", "tags"]);
        assert_eq!(
            (p.lists.as_slice(), p.any_list),
            (["x".to_string()].as_slice(), false)
        );
        let p =
            Program::compile("a in lists.allies || b in lists['eu'] || size(lists) > 0").unwrap();
        assert_eq!(
            (p.lists.as_slice(), p.any_list),
            (["allies".to_string(), "eu".to_string()].as_slice(), true)
        );
        let r = eval(
            "[1, 2, 3].exists(x, x > 2) && size(s) == 3",
            &[("s", Value::from("abc"))],
        );
        assert!(matches!(r, Ok(Value::Bool(true))), "{r:?}");
    }

    #[test]
    fn fifty_thousand_terms_are_refused_before_parsing() {
        let source = vec!["a"; 50_000].join(" + ");
        let t = std::time::Instant::now();
        let e = Program::compile(&source).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(e[0].message.contains("bytes long"), "{e:?}");
        let source = vec!["a"; 1_000].join("+");
        let e = Program::compile(&source).unwrap_err();
        assert_eq!((e[0].line, e[0].col), (1, 2 * MAX_OPERATORS + 2), "{e:?}");
        assert!(e[0].message.contains("operators"), "{e:?}");
    }

    #[test]
    fn the_largest_expressions_allowed_evaluate_on_a_small_stack() {
        // As deep as the budgets let an expression go, on a thread with
        // half the stack tokio's workers have.
        let chain = vec!["a"; MAX_DEPTH - 1].join("+");
        let parens = format!("{}a{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                for source in [&chain, &parens] {
                    let p = Program::compile(source).unwrap();
                    let mut ctx = context();
                    ctx.add_variable_from_value("a", Value::Int(1));
                    assert!(p.execute(&ctx).is_ok(), "{source}");
                }
                // Within the operator budget but deeper than allowed.
                let e = Program::compile(&vec!["a"; MAX_OPERATORS].join("+")).unwrap_err();
                assert!(e[0].message.contains("deep"), "{e:?}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn deep_comprehensions_are_refused_and_wide_ones_run_out_of_steps() {
        let mut nested = String::from("true");
        for i in 0..100 {
            nested = format!("[1, 2].all(x{i}, {nested})");
        }
        let e = Program::compile(&nested).unwrap_err();
        assert!(e[0].message.contains("brackets"), "{e:?}");
        let four = "l.all(a, l.all(b, l.all(c, l.all(d, true))))";
        let e = Program::compile(four).unwrap_err();
        assert!(e[0].message.contains("comprehensions"), "{e:?}");
        // Three deep over a list of 1,000: a billion steps, cut off at once.
        let list = Value::List(Arc::new((0..1000).map(Value::Int).collect()));
        let t = std::time::Instant::now();
        let r = eval(
            "l.exists(a, l.exists(b, l.exists(c, a + b + c < 0)))",
            &[("l", list.clone())],
        );
        assert!(matches!(r, Err(Failure::Budget)), "{r:?}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // An error absorbed by `||` still counts as running out.
        let r = eval(
            "l.exists(a, l.exists(b, l.exists(c, a + b + c < 0))) || true",
            &[("l", list.clone())],
        );
        assert!(matches!(r, Err(Failure::Budget)), "{r:?}");
        // Within the budget: fine, and the next evaluation starts afresh.
        let r = eval("l.exists(a, l.exists(b, a * b == 998001))", &[("l", list)]);
        assert!(matches!(r, Err(Failure::Budget)), "a million steps: {r:?}");
        let small = Value::List(Arc::new((0..100).map(Value::Int).collect()));
        let r = eval("l.exists(a, l.exists(b, a * b == 9801))", &[("l", small)]);
        assert!(matches!(r, Ok(Value::Bool(true))), "{r:?}");
    }
}
