//! Type-checks a parsed filter ([`Expr`]) against a [`Resource`]: every
//! field exists and may be filtered, every operator applies to its field's
//! kind, every value parses as that kind. The result, [`Checked`], holds
//! resolved fields and typed values; the store turns it into SQL
//! (`store::filter_sql`) without checking anything again. Semantics by kind
//! are documented there, next to the SQL they produce.
//!
//! The checker also counts the parameters the SQL will bind (at most
//! [`MAX_PARAMS`]), so a filter is refused before any database work.

use chrono::{DateTime, Utc};

use super::{
    filter::{Arg, Expr, FilterError, Op, Restriction, shorten},
    schema::{Field, FieldKind, Resource},
    value::Value,
};

/// Most parameters one filter may bind.
pub const MAX_PARAMS: usize = 200;

/// Guards against hand-built expressions deeper than any the parser makes.
const MAX_DEPTH: usize = 64;

/// A filter after its type check, with the canonical text of the parsed
/// expression (what page tokens bind to).
#[derive(Clone, Debug)]
pub struct Filter {
    pub checked: Checked,
    pub canonical: String,
}

/// A type-checked filter expression.
#[derive(Clone, Debug)]
pub enum Checked {
    And(Vec<Checked>),
    Or(Vec<Checked>),
    Not(Box<Checked>),
    Cond(&'static Field, Test),
}

/// A comparison operator (`!=` is null-safe: `IS DISTINCT FROM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn of(op: Op) -> Cmp {
        match op {
            Op::Eq | Op::Has => Cmp::Eq,
            Op::Ne => Cmp::Ne,
            Op::Lt => Cmp::Lt,
            Op::Le => Cmp::Le,
            Op::Gt => Cmp::Gt,
            Op::Ge => Cmp::Ge,
        }
    }
}

/// What a restriction tests on its field.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    IsNull,
    NotNull,
    /// A text array with at least one element.
    NonEmpty,
    Compare(Cmp, Value),
    /// Case-insensitive pattern (SQL LIKE syntax, already escaped).
    Like(String),
    NotLike(String),
    /// A text array holding this element.
    Contains(String),
    /// A JSON object with this top-level key.
    HasKey(String),
    /// A member of a JSON field at `keys`.
    Member(Vec<String>, MemberTest),
}

/// What a restriction tests on a JSON member.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberTest {
    /// Missing or JSON null.
    IsNull,
    NotNull,
    /// The member exists.
    Exists,
    Like(String),
    NotLike(String),
    /// Equality, as containment of `{"k1": {"k2": v}}` (the whole document).
    Contains(serde_json::Value),
    Compare(Cmp, serde_json::Value),
}

/// Checks `expr` against `resource`.
pub fn check(resource: &'static Resource, expr: &Expr) -> Result<Checked, FilterError> {
    let mut c = Checker { resource, params: 0 };
    c.expr(expr, 0)
}

/// Checks `expr` and keeps its canonical text.
pub fn check_filter(resource: &'static Resource, expr: &Expr) -> Result<Filter, FilterError> {
    Ok(Filter { checked: check(resource, expr)?, canonical: expr.to_string() })
}

struct Checker {
    resource: &'static Resource,
    /// Parameters the SQL will bind so far.
    params: usize,
}

/// Text pattern of a string value.
struct Pattern {
    /// The value with `\*` read as `*` (for exact comparisons).
    exact: String,
    /// An ILIKE pattern when the value holds an unescaped `*`.
    like: Option<String>,
}

fn pattern(s: &str) -> Pattern {
    let mut exact = String::with_capacity(s.len());
    let mut like = String::with_capacity(s.len() + 2);
    let mut wildcard = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' if chars.peek() == Some(&'*') => {
                chars.next();
                '*'
            }
            '*' => {
                wildcard = true;
                exact.push('*');
                like.push('%');
                continue;
            }
            c => c,
        };
        exact.push(literal);
        if matches!(literal, '%' | '_' | '\\') {
            like.push('\\');
        }
        like.push(literal);
    }
    Pattern { exact, like: wildcard.then_some(like) }
}

/// The text of a string-like argument.
fn text_arg(arg: &Arg) -> Option<&str> {
    match arg {
        Arg::String(s) | Arg::Word(s) | Arg::Number(s) => Some(s),
        _ => None,
    }
}

/// Describes an argument for "expected X, found Y" messages.
fn describe(arg: &Arg) -> String {
    match arg {
        Arg::String(s) => format!("\"{}\"", shorten(s)),
        Arg::Number(s) | Arg::Word(s) => format!("'{}'", shorten(s)),
        Arg::Bool(b) => format!("'{b}'"),
        Arg::Null => "'null'".to_string(),
        Arg::Star => "'*'".to_string(),
    }
}

/// `raw` (a number as written) as a JSON number.
fn json_number(raw: &str) -> Option<serde_json::Value> {
    if let Ok(i) = raw.parse::<i64>() {
        return Some(i.into());
    }
    if let Ok(u) = raw.parse::<u64>() {
        return Some(u.into());
    }
    raw.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(serde_json::Value::Number)
}

/// `raw` (a number as written) as an i64; integral floats such as `1e5` are accepted.
fn integer(raw: &str) -> Option<i64> {
    /// 2^53: every integer up to here is exact in an f64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    raw.parse::<i64>().ok().or_else(|| {
        let f = raw.parse::<f64>().ok()?;
        // The range check makes the cast exact.
        (f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i64)
    })
}

impl Checker {
    /// Counts one bound parameter at `position`.
    fn bind(&mut self, position: usize) -> Result<(), FilterError> {
        if self.params >= MAX_PARAMS {
            return Err(FilterError::new(
                position,
                format!("filter uses too many values (at most {MAX_PARAMS})"),
            ));
        }
        self.params += 1;
        Ok(())
    }

    fn expr(&mut self, e: &Expr, depth: usize) -> Result<Checked, FilterError> {
        if depth > MAX_DEPTH {
            return Err(FilterError::new(1, "filter is nested too deeply"));
        }
        match e {
            Expr::And(v) => Ok(Checked::And(self.all(v, depth)?)),
            Expr::Or(v) => Ok(Checked::Or(self.all(v, depth)?)),
            Expr::Not(inner) => Ok(Checked::Not(Box::new(self.expr(inner, depth + 1)?))),
            Expr::Restriction(r) => self.restriction(r),
        }
    }

    fn all(&mut self, v: &[Expr], depth: usize) -> Result<Vec<Checked>, FilterError> {
        v.iter().map(|e| self.expr(e, depth + 1)).collect()
    }

    fn restriction(&mut self, r: &Restriction) -> Result<Checked, FilterError> {
        let at = r.position;
        let Some(name) = r.path.first() else {
            return Err(FilterError::new(at, "expected a field name"));
        };
        let field = self
            .resource
            .field(name)
            .ok_or_else(|| FilterError::new(at, format!("unknown field '{}'", shorten(name))))?;
        if !field.filterable {
            return Err(FilterError::new(at, format!("field '{}' cannot be filtered", field.name)));
        }
        let keys = &r.path[1..];
        if !keys.is_empty() {
            if field.kind != FieldKind::Json {
                return Err(FilterError::new(
                    at,
                    format!(
                        "field '{}' has no members ('{}' is not a field)",
                        field.name,
                        shorten(&r.member())
                    ),
                ));
            }
            let test = self.json_member(keys, r)?;
            return Ok(Checked::Cond(field, test));
        }
        let test = match (&r.arg, r.op) {
            (Arg::Null, Op::Eq) => Some(Test::IsNull),
            (Arg::Null, Op::Ne) => Some(Test::NotNull),
            (Arg::Null, _) => return Err(null_error(r)),
            (Arg::Star, Op::Has) if field.kind == FieldKind::TextArray => Some(Test::NonEmpty),
            (Arg::Star, Op::Has) => Some(Test::NotNull),
            (Arg::Star, _) => return Err(FilterError::new(r.arg_position, "'*' is only allowed after ':'")),
            _ => None,
        };
        if let Some(t) = test {
            return Ok(Checked::Cond(field, t));
        }
        let test = match field.kind {
            FieldKind::Text => self.text(field, r)?,
            FieldKind::Int => {
                let v = match &r.arg {
                    Arg::Number(n) => integer(n),
                    _ => None,
                }
                .ok_or_else(|| expected(r, &format!("an integer for '{}'", field.name)))?;
                self.scalar(r, Value::Int(v))?
            }
            FieldKind::Float => {
                let v = match &r.arg {
                    Arg::Number(n) => n.parse::<f64>().ok().filter(|f| f.is_finite()),
                    _ => None,
                }
                .ok_or_else(|| expected(r, &format!("a number for '{}'", field.name)))?;
                self.scalar(r, Value::Float(v))?
            }
            FieldKind::Bool => {
                let Arg::Bool(b) = r.arg else {
                    return Err(expected(r, &format!("true or false for '{}'", field.name)));
                };
                only_equality(field, r)?;
                self.scalar(r, Value::Bool(b))?
            }
            FieldKind::Timestamp => {
                let t = match &r.arg {
                    Arg::String(s) | Arg::Word(s) => DateTime::parse_from_rfc3339(s).ok(),
                    _ => None,
                }
                .ok_or_else(|| expected(r, &format!("an RFC 3339 timestamp for '{}'", field.name)))?;
                self.scalar(r, Value::Time(t.with_timezone(&Utc)))?
            }
            FieldKind::Enum(def) => {
                only_equality(field, r)?;
                let short = match &r.arg {
                    Arg::String(s) | Arg::Word(s) => def.parse(s),
                    _ => None,
                }
                .ok_or_else(|| {
                    expected(r, &format!("one of {} for '{}'", def.values.join(", "), field.name))
                })?;
                self.scalar(r, Value::Text(short.to_string()))?
            }
            FieldKind::Uuid => {
                only_equality(field, r)?;
                let u = match &r.arg {
                    Arg::String(s) | Arg::Word(s) => super::value::canonical_uuid(s),
                    _ => None,
                }
                .ok_or_else(|| expected(r, &format!("a UUID for '{}'", field.name)))?;
                self.scalar(r, Value::Uuid(u))?
            }
            FieldKind::TextArray => {
                if r.op != Op::Has {
                    return Err(FilterError::new(
                        at,
                        format!(
                            "use ':' to test membership of '{}' (e.g. {}:\"value\")",
                            field.name, field.name
                        ),
                    ));
                }
                let s =
                    text_arg(&r.arg).ok_or_else(|| expected(r, &format!("a string for '{}'", field.name)))?;
                self.bind(r.arg_position)?;
                Test::Contains(pattern(s).exact)
            }
            FieldKind::Json => {
                if r.op != Op::Has {
                    return Err(FilterError::new(
                        at,
                        format!(
                            "compare a member of '{f}' (e.g. {f}.key = \"value\") or test for a key with '{f}:key'",
                            f = field.name
                        ),
                    ));
                }
                let key = text_arg(&r.arg)
                    .ok_or_else(|| expected(r, &format!("a key name for '{}'", field.name)))?;
                self.bind(r.arg_position)?;
                Test::HasKey(key.to_string())
            }
        };
        Ok(Checked::Cond(field, test))
    }

    /// `col op $n` for a scalar value; `:` is equality.
    fn scalar(&mut self, r: &Restriction, v: Value) -> Result<Test, FilterError> {
        self.bind(r.arg_position)?;
        Ok(Test::Compare(Cmp::of(r.op), v))
    }

    fn text(&mut self, field: &Field, r: &Restriction) -> Result<Test, FilterError> {
        let s = text_arg(&r.arg).ok_or_else(|| expected(r, &format!("a string for '{}'", field.name)))?;
        let Pattern { exact, like } = pattern(s);
        match (r.op, like) {
            (Op::Eq | Op::Has, Some(like)) => {
                self.bind(r.arg_position)?;
                Ok(Test::Like(like))
            }
            (Op::Ne, Some(like)) => {
                self.bind(r.arg_position)?;
                Ok(Test::NotLike(like))
            }
            // Orderings compare exactly; a `*` there is just a character.
            _ => self.scalar(r, Value::Text(exact)),
        }
    }

    /// `field.key… op arg` on a Json field.
    fn json_member(&mut self, keys: &[String], r: &Restriction) -> Result<Test, FilterError> {
        let (at, arg_at) = (r.position, r.arg_position);
        let member = |t| Ok(Test::Member(keys.to_vec(), t));
        let literal = match (&r.arg, r.op) {
            (Arg::Null, Op::Eq) => {
                self.bind(at)?;
                return member(MemberTest::IsNull);
            }
            (Arg::Null, Op::Ne) => {
                self.bind(at)?;
                return member(MemberTest::NotNull);
            }
            (Arg::Null, _) => return Err(null_error(r)),
            (Arg::Star, Op::Has) => {
                self.bind(at)?;
                return member(MemberTest::Exists);
            }
            (Arg::Star, _) => return Err(FilterError::new(arg_at, "'*' is only allowed after ':'")),
            (Arg::Bool(b), _) => serde_json::Value::Bool(*b),
            (Arg::Number(n), _) => json_number(n).ok_or_else(|| expected(r, "a finite number"))?,
            (Arg::String(s) | Arg::Word(s), op) => {
                let Pattern { exact, like } = pattern(s);
                match (op, like) {
                    (Op::Eq | Op::Has, Some(like)) => {
                        self.bind(at)?;
                        self.bind(arg_at)?;
                        return member(MemberTest::Like(like));
                    }
                    (Op::Ne, Some(like)) => {
                        self.bind(at)?;
                        self.bind(arg_at)?;
                        return member(MemberTest::NotLike(like));
                    }
                    _ => serde_json::Value::String(exact),
                }
            }
        };
        match r.op {
            Op::Eq | Op::Has => {
                // {"a": {"b": v}}: containment equals member equality for a
                // scalar v, and the GIN index on the column serves it.
                let doc = keys.iter().rev().fold(literal, |inner, key| {
                    serde_json::Value::Object(std::iter::once((key.clone(), inner)).collect())
                });
                self.bind(arg_at)?;
                member(MemberTest::Contains(doc))
            }
            op => {
                self.bind(at)?;
                self.bind(arg_at)?;
                member(MemberTest::Compare(Cmp::of(op), literal))
            }
        }
    }
}

/// "expected X, found Y" at the argument.
fn expected(r: &Restriction, what: &str) -> FilterError {
    FilterError::new(r.arg_position, format!("expected {what}, found {}", describe(&r.arg)))
}

fn null_error(r: &Restriction) -> FilterError {
    FilterError::new(r.arg_position, format!("null can only be compared with '=' or '!=', not '{}'", r.op))
}

/// Rejects orderings on kinds that have none.
fn only_equality(field: &Field, r: &Restriction) -> Result<(), FilterError> {
    match r.op {
        Op::Eq | Op::Ne | Op::Has => Ok(()),
        op => Err(FilterError::new(
            r.position,
            format!("'{op}' does not apply to '{}'; use '=', '!=' or ':'", field.name),
        )),
    }
}
