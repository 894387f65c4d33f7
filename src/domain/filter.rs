//! The `filter` language of List methods: the subset of
//! [AIP-160](https://google.aip.dev/160) we support, parsed into an [`Expr`].
//!
//! This module only parses; `store::filter_sql` type-checks an [`Expr`]
//! against a resource and compiles it to SQL.
//!
//! # Grammar
//!
//! ```text
//! filter     := expression?                      -- empty or blank: no filter
//! expression := sequence ( "AND" sequence )*
//! sequence   := factor ( factor )*               -- juxtaposition: implicit AND
//! factor     := term ( "OR" term )*
//! term       := ( "NOT" | "-" ) term | simple
//! simple     := "(" expression ")" | restriction
//! restriction:= member op arg
//! member     := ident ( "." ( ident | string ) )*
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
//! arg        := string | number | "true" | "false" | "null" | "*" | word
//! ```
//!
//! # Precedence
//!
//! As in AIP-160, **`OR` binds tighter than `AND`**: `a AND b OR c` means
//! `a AND (b OR c)`, and `a b OR c` (implicit AND) means `a AND (b OR c)`.
//! `NOT` (or a leading `-`) binds tightest. Nested `AND`s and `OR`s are
//! flattened: `(a AND b) AND c` parses to one `And` of three children.
//!
//! # Tokens
//!
//! * Keywords `AND`, `OR`, `NOT` are upper case; `true`, `false`, `null` lower case.
//! * An `ident` is a letter or `_` followed by letters, digits and `_`.
//!   Member path segments after the first may also be quoted strings
//!   (`attributes."my key"`).
//! * Strings use double or single quotes; `\"`, `\'`, `\\`, `\n`, `\t`, `\r`
//!   are escapes. Any other backslash is kept together with the character
//!   after it, so `"a\*"` holds a backslash before the `*`, which the compiler
//!   reads as a literal star rather than a wildcard.
//! * A number is `-?digits(.digits)?([eE][+-]?digits)?`; its text is kept as written.
//! * A word is a letter or digit followed by letters, digits and `_ - . : +`
//!   (`FULL_TIME`, `2024-01-02T03:04:05Z`).
//! * `*` is a value only after `:` (`field:*` tests presence).
//!
//! # Limits
//!
//! Input of at most [`MAX_INPUT_BYTES`] bytes, nesting (parentheses and
//! negations) at most [`MAX_DEPTH`] deep, at most [`MAX_RESTRICTIONS`]
//! restrictions. Exceeding one is an error, never a panic or a stack overflow.
//!
//! Error positions are 1-based character (not byte) columns.

use std::fmt;

/// Longest accepted filter, in bytes.
pub const MAX_INPUT_BYTES: usize = 8192;
/// Deepest accepted nesting of parentheses and negations.
pub const MAX_DEPTH: usize = 32;
/// Most restrictions (`member op arg`) in one filter.
pub const MAX_RESTRICTIONS: usize = 100;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// All children hold (two or more when produced by [`parse`]).
    And(Vec<Expr>),
    /// Any child holds (two or more when produced by [`parse`]).
    Or(Vec<Expr>),
    /// The child does not hold.
    Not(Box<Expr>),
    /// A single comparison.
    Restriction(Restriction),
}

/// `member op arg`, e.g. `attributes.seniority = "senior"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Restriction {
    /// The member's segments: `["attributes", "seniority"]`. Never empty when parsed.
    pub path: Vec<String>,
    pub op: Op,
    pub arg: Arg,
    /// 1-based character column where the member starts.
    pub position: usize,
    /// 1-based character column where the argument starts.
    pub arg_position: usize,
}

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `:` (has)
    Has,
}

/// The right-hand side of a restriction, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A quoted string, escapes decoded (see the module documentation for `\*`).
    String(String),
    /// A number, as written (`-1.5e3`).
    Number(String),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// `*` (only after `:`).
    Star,
    /// An unquoted word such as `FULL_TIME` or `2024-01-02T03:04:05Z`.
    Word(String),
}

/// A syntax (or, from the compiler, type) error in a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: {message} at position {position}")]
pub struct FilterError {
    /// 1-based character column of the offending token.
    pub position: usize,
    /// What was expected and what was found, for API callers.
    pub message: String,
}

impl FilterError {
    pub fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError { position, message: message.into() }
    }
}

/// Parses a filter. Empty or blank input is `Ok(None)` (no filter).
pub fn parse(input: &str) -> Result<Option<Expr>, FilterError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(FilterError::new(
            1,
            format!("filter is too long ({} bytes, at most {MAX_INPUT_BYTES} allowed)", input.len()),
        ));
    }
    let mut p = Parser { chars: input.chars().collect(), pos: 0, depth: 0, restrictions: 0 };
    p.skip_ws();
    if p.at_end() {
        return Ok(None);
    }
    let expr = p.expression(None)?;
    p.skip_ws();
    if !p.at_end() {
        // The expression stops only at the end, at `)`, or at an error.
        return Err(p.error_here(format!("unexpected {}", p.describe(p.pos))));
    }
    Ok(Some(expr))
}

impl Expr {
    /// A copy with every position set to 0, to compare expressions by meaning.
    pub fn without_positions(&self) -> Expr {
        match self {
            Expr::And(v) => Expr::And(v.iter().map(Expr::without_positions).collect()),
            Expr::Or(v) => Expr::Or(v.iter().map(Expr::without_positions).collect()),
            Expr::Not(e) => Expr::Not(Box::new(e.without_positions())),
            Expr::Restriction(r) => {
                Expr::Restriction(Restriction { position: 0, arg_position: 0, ..r.clone() })
            }
        }
    }

    /// The conjunction of `items`, flattening nested `And`s as [`parse`]
    /// does; a single item is returned as is.
    pub fn and(items: Vec<Expr>) -> Expr {
        flatten(items, true)
    }

    /// The disjunction of `items`, flattening nested `Or`s as [`parse`]
    /// does; a single item is returned as is.
    pub fn or(items: Vec<Expr>) -> Expr {
        flatten(items, false)
    }

    /// How many restrictions the expression holds.
    pub fn restriction_count(&self) -> usize {
        match self {
            Expr::And(v) | Expr::Or(v) => v.iter().map(Expr::restriction_count).sum(),
            Expr::Not(e) => e.restriction_count(),
            Expr::Restriction(_) => 1,
        }
    }
}

impl Restriction {
    /// The member as written in canonical form, e.g. `attributes."my key"`.
    pub fn member(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.path.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            if i == 0 || is_ident(seg) {
                out.push_str(seg);
            } else {
                push_quoted(&mut out, seg);
            }
        }
        out
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Has => ":",
        })
    }
}

impl fmt::Display for Arg {
    /// Canonical text. A [`Arg::Word`] that would not read back as a word
    /// (e.g. `AND`, `true`, `12`) is written as a string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::String(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                push_quoted(&mut out, s);
                f.write_str(&out)
            }
            Arg::Number(n) => f.write_str(n),
            Arg::Bool(b) => write!(f, "{b}"),
            Arg::Null => f.write_str("null"),
            Arg::Star => f.write_str("*"),
            Arg::Word(w) if is_bare_word(w) => f.write_str(w),
            Arg::Word(w) => {
                let mut out = String::with_capacity(w.len() + 2);
                push_quoted(&mut out, w);
                f.write_str(&out)
            }
        }
    }
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::Has => write!(f, "{}:{}", self.member(), self.arg),
            op => write!(f, "{} {op} {}", self.member(), self.arg),
        }
    }
}

impl fmt::Display for Expr {
    /// Canonical text that parses back to the same expression (positions
    /// aside); every compound child is parenthesized.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn child(f: &mut fmt::Formatter<'_>, e: &Expr) -> fmt::Result {
            match e {
                Expr::Restriction(r) => write!(f, "{r}"),
                e => write!(f, "({e})"),
            }
        }
        fn join(f: &mut fmt::Formatter<'_>, v: &[Expr], sep: &str) -> fmt::Result {
            for (i, e) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                child(f, e)?;
            }
            Ok(())
        }
        match self {
            Expr::And(v) => join(f, v, " AND "),
            Expr::Or(v) => join(f, v, " OR "),
            Expr::Not(e) => {
                f.write_str("NOT ")?;
                child(f, e)
            }
            Expr::Restriction(r) => write!(f, "{r}"),
        }
    }
}

/// Appends `s` as a double-quoted string literal.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn is_word_start(c: char) -> bool {
    c.is_alphanumeric()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '+')
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "AND" | "OR" | "NOT")
}

/// An identifier that is not a keyword.
fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_ident_start) && chars.all(is_ident_char) && !is_keyword(s)
}

/// Text that reads back as [`Arg::Word`].
fn is_bare_word(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_word_start)
        && chars.all(is_word_char)
        && !is_keyword(s)
        && !matches!(s, "true" | "false" | "null")
        && !is_number(s)
}

/// `-?digits(.digits)?([eE][+-]?digits)?`
fn is_number(s: &str) -> bool {
    fn digits(b: &[u8], i: &mut usize) -> bool {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    }
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    if !digits(b, &mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(b, &mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(b, &mut i) {
            return false;
        }
    }
    i == b.len()
}

/// Shortens caller text quoted in error messages.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
}

/// Recursive-descent parser working directly on characters (the lexical
/// rules depend on context: `-` negates a term but starts a number value).
struct Parser {
    chars: Vec<char>,
    /// Index into `chars` (0-based; positions reported are `pos + 1`).
    pos: usize,
    depth: usize,
    restrictions: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error_at(&self, index: usize, message: impl Into<String>) -> FilterError {
        FilterError::new(index + 1, message)
    }

    fn error_here(&self, message: impl Into<String>) -> FilterError {
        self.error_at(self.pos, message)
    }

    /// End index of the run of characters from `start` matching `pred`.
    fn scan(&self, start: usize, pred: impl Fn(char) -> bool) -> usize {
        let mut end = start;
        while self.chars.get(end).copied().is_some_and(&pred) {
            end += 1;
        }
        end
    }

    fn text(&self, start: usize, end: usize) -> String {
        self.chars[start..end].iter().collect()
    }

    /// The keyword starting at `index`, if the identifier there is one.
    fn keyword_at(&self, index: usize) -> Option<Keyword> {
        if !self.chars.get(index).copied().is_some_and(is_ident_start) {
            return None;
        }
        let end = self.scan(index, is_ident_char);
        match self.text(index, end).as_str() {
            "AND" => Some(Keyword::And),
            "OR" => Some(Keyword::Or),
            "NOT" => Some(Keyword::Not),
            _ => None,
        }
    }

    /// Describes what is found at `index`, for "expected X, found Y" messages.
    fn describe(&self, index: usize) -> String {
        match self.chars.get(index).copied() {
            None => "end of input".to_string(),
            Some('"' | '\'') => "a string".to_string(),
            Some(c) if is_word_char(c) => {
                let end = self.scan(index, is_word_char);
                format!("'{}'", shorten(&self.text(index, end)))
            }
            Some(c) => format!("'{c}'"),
        }
    }

    fn enter(&mut self, index: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(
                self.error_at(index, format!("filter is nested too deeply (at most {MAX_DEPTH} levels)"))
            );
        }
        Ok(())
    }

    /// `expression := sequence ( "AND" sequence )*`
    fn expression(&mut self, after: Option<&str>) -> Result<Expr, FilterError> {
        let mut items = vec![self.sequence(after)?];
        loop {
            self.skip_ws();
            if self.keyword_at(self.pos) != Some(Keyword::And) {
                break;
            }
            self.pos += 3;
            items.push(self.sequence(Some("AND"))?);
        }
        Ok(flatten(items, true))
    }

    /// `sequence := factor ( factor )*`
    fn sequence(&mut self, after: Option<&str>) -> Result<Expr, FilterError> {
        let mut items = vec![self.factor(after)?];
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(')') => break,
                Some(_) if self.keyword_at(self.pos) == Some(Keyword::And) => break,
                Some(_) => items.push(self.factor(None)?),
            }
        }
        Ok(flatten(items, true))
    }

    /// `factor := term ( "OR" term )*`
    fn factor(&mut self, after: Option<&str>) -> Result<Expr, FilterError> {
        let mut items = vec![self.term(after)?];
        loop {
            self.skip_ws();
            if self.keyword_at(self.pos) != Some(Keyword::Or) {
                break;
            }
            self.pos += 2;
            items.push(self.term(Some("OR"))?);
        }
        Ok(flatten(items, false))
    }

    /// `term := ( "NOT" | "-" ) term | simple`
    fn term(&mut self, after: Option<&str>) -> Result<Expr, FilterError> {
        self.skip_ws();
        let start = self.pos;
        let negation = if self.keyword_at(start) == Some(Keyword::Not) {
            self.pos += 3;
            "NOT"
        } else if self.peek() == Some('-') {
            self.pos += 1;
            "-"
        } else {
            return self.simple(after);
        };
        self.enter(start)?;
        let inner = self.term(Some(negation))?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(inner)))
    }

    /// `simple := "(" expression ")" | restriction`
    fn simple(&mut self, after: Option<&str>) -> Result<Expr, FilterError> {
        let start = self.pos;
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                self.enter(start)?;
                let inner = self.expression(Some("("))?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(self.error_here(format!(
                        "expected ')' to close the '(' at position {}, found {}",
                        start + 1,
                        self.describe(self.pos)
                    )));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(inner)
            }
            Some(c) if is_ident_start(c) && self.keyword_at(start).is_none() => self.restriction(),
            _ => {
                let after = after.map(|a| format!(" after '{a}'")).unwrap_or_default();
                Err(self.error_here(format!(
                    "expected a field name, NOT or '('{after}, found {}",
                    self.describe(start)
                )))
            }
        }
    }

    /// `restriction := member op arg`
    fn restriction(&mut self) -> Result<Expr, FilterError> {
        let start = self.pos;
        self.restrictions += 1;
        if self.restrictions > MAX_RESTRICTIONS {
            return Err(
                self.error_here(format!("filter has too many restrictions (at most {MAX_RESTRICTIONS})"))
            );
        }
        let path = self.member()?;
        let member_end = self.pos;
        self.skip_ws();
        let op_start = self.pos;
        let (op, len) = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some('='), _) => (Op::Eq, 1),
            (Some('!'), Some('=')) => (Op::Ne, 2),
            (Some('<'), Some('=')) => (Op::Le, 2),
            (Some('<'), _) => (Op::Lt, 1),
            (Some('>'), Some('=')) => (Op::Ge, 2),
            (Some('>'), _) => (Op::Gt, 1),
            (Some(':'), _) => (Op::Has, 1),
            _ => {
                return Err(self.error_at(
                    op_start,
                    format!(
                        "expected a comparison operator after '{}', found {}",
                        shorten(&self.text(start, member_end)),
                        self.describe(op_start)
                    ),
                ));
            }
        };
        self.pos += len;
        self.skip_ws();
        let arg_start = self.pos;
        let arg = self.arg(op)?;
        Ok(Expr::Restriction(Restriction { path, op, arg, position: start + 1, arg_position: arg_start + 1 }))
    }

    /// `member := ident ( "." ( ident | string ) )*`; starts at an identifier.
    fn member(&mut self) -> Result<Vec<String>, FilterError> {
        let end = self.scan(self.pos, is_ident_char);
        let mut path = vec![self.text(self.pos, end)];
        self.pos = end;
        while self.peek() == Some('.') {
            self.pos += 1;
            match self.peek() {
                Some('"' | '\'') => path.push(self.string()?),
                Some(c) if is_ident_start(c) => {
                    let end = self.scan(self.pos, is_ident_char);
                    path.push(self.text(self.pos, end));
                    self.pos = end;
                }
                _ => {
                    return Err(self.error_here(format!(
                        "expected a member name after '.', found {}",
                        self.describe(self.pos)
                    )));
                }
            }
        }
        Ok(path)
    }

    /// A value after `op`.
    fn arg(&mut self, op: Op) -> Result<Arg, FilterError> {
        let start = self.pos;
        let expected = || format!("expected a value after '{op}'");
        match self.peek() {
            Some('"' | '\'') => Ok(Arg::String(self.string()?)),
            Some('*') if op == Op::Has => {
                self.pos += 1;
                Ok(Arg::Star)
            }
            Some('*') => Err(self.error_here(format!(
                "{}, found '*' (write \"*\" with quotes for a wildcard, or ':*' to test presence)",
                expected()
            ))),
            Some(c) if c == '-' || is_word_start(c) => {
                let end = self.scan(start, is_word_char);
                let word = self.text(start, end);
                let arg = if is_number(&word) {
                    Arg::Number(word)
                } else if c == '-' {
                    return Err(self.error_here(format!("{}, found '{}'", expected(), shorten(&word))));
                } else {
                    match word.as_str() {
                        "true" => Arg::Bool(true),
                        "false" => Arg::Bool(false),
                        "null" => Arg::Null,
                        w if is_keyword(w) => {
                            return Err(self.error_here(format!("{}, found '{w}'", expected())));
                        }
                        _ => Arg::Word(word),
                    }
                };
                self.pos = end;
                Ok(arg)
            }
            _ => Err(self.error_here(format!("{}, found {}", expected(), self.describe(start)))),
        }
    }

    /// A quoted string starting at the current quote character.
    fn string(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let quote = self.chars[start];
        let unterminated = || FilterError::new(start + 1, "unterminated string starting");
        let mut out = String::new();
        self.pos += 1;
        loop {
            let c = self.peek().ok_or_else(unterminated)?;
            self.pos += 1;
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.peek().ok_or_else(unterminated)?;
            self.pos += 1;
            match e {
                '"' | '\'' | '\\' => out.push(e),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }
}

/// Joins `items` into an And (or Or), flattening children of the same kind;
/// a single item is returned as is.
fn flatten(mut items: Vec<Expr>, and: bool) -> Expr {
    if items.len() == 1
        && let Some(item) = items.pop()
    {
        return item;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Expr::And(v) if and => out.extend(v),
            Expr::Or(v) if !and => out.extend(v),
            e => out.push(e),
        }
    }
    if and { Expr::And(out) } else { Expr::Or(out) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(path: &str, op: Op, arg: Arg) -> Expr {
        Expr::Restriction(Restriction {
            path: path.split('.').map(String::from).collect(),
            op,
            arg,
            position: 0,
            arg_position: 0,
        })
    }

    fn num(n: &str) -> Arg {
        Arg::Number(n.to_string())
    }

    fn s(v: &str) -> Arg {
        Arg::String(v.to_string())
    }

    fn p(input: &str) -> Expr {
        match parse(input) {
            Ok(Some(e)) => e.without_positions(),
            other => panic!("{input:?} -> {other:?}"),
        }
    }

    fn err(input: &str) -> FilterError {
        match parse(input) {
            Err(e) => e,
            Ok(e) => panic!("{input:?} parsed as {e:?}"),
        }
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("  \t\n "), Ok(None));
    }

    #[test]
    fn each_operator() {
        for (text, op) in [
            ("=", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            ("<=", Op::Le),
            (">", Op::Gt),
            (">=", Op::Ge),
            (":", Op::Has),
        ] {
            assert_eq!(p(&format!("a {text} 1")), r("a", op, num("1")), "{text}");
            assert_eq!(p(&format!("a{text}1")), r("a", op, num("1")), "{text}");
        }
    }

    #[test]
    fn positions() {
        let Ok(Some(Expr::And(v))) = parse("title = \"x\" AND  é = 1") else { panic!() };
        let Expr::Restriction(a) = &v[0] else { panic!() };
        let Expr::Restriction(b) = &v[1] else { panic!() };
        assert_eq!((a.position, a.arg_position), (1, 9));
        // Character, not byte, columns.
        assert_eq!((b.position, b.arg_position), (18, 22));
    }

    #[test]
    fn args() {
        assert_eq!(p("a = \"x y\""), r("a", Op::Eq, s("x y")));
        assert_eq!(p("a = 'x \"y\"'"), r("a", Op::Eq, s("x \"y\"")));
        assert_eq!(p(r#"a = "q\"b\\s\n\t\r\'""#), r("a", Op::Eq, s("q\"b\\s\n\t\r'")));
        assert_eq!(p(r#"a = "x\*y\z""#), r("a", Op::Eq, s(r"x\*y\z")));
        assert_eq!(p("a = -1.5e+3"), r("a", Op::Eq, num("-1.5e+3")));
        assert_eq!(p("a = 42"), r("a", Op::Eq, num("42")));
        assert_eq!(p("a = true"), r("a", Op::Eq, Arg::Bool(true)));
        assert_eq!(p("a = false"), r("a", Op::Eq, Arg::Bool(false)));
        assert_eq!(p("a = null"), r("a", Op::Eq, Arg::Null));
        assert_eq!(p("a = TRUE"), r("a", Op::Eq, Arg::Word("TRUE".into())));
        assert_eq!(p("a:*"), r("a", Op::Has, Arg::Star));
        assert_eq!(p("a = FULL_TIME"), r("a", Op::Eq, Arg::Word("FULL_TIME".into())));
        assert_eq!(
            p("a >= 2024-01-02T03:04:05+01:00"),
            r("a", Op::Ge, Arg::Word("2024-01-02T03:04:05+01:00".into()))
        );
        assert_eq!(p("a = 1.2.3"), r("a", Op::Eq, Arg::Word("1.2.3".into())));
    }

    #[test]
    fn dotted_paths() {
        assert_eq!(
            p("attributes.seniority = senior"),
            r("attributes.seniority", Op::Eq, Arg::Word("senior".into()))
        );
        let Expr::Restriction(x) = p(r#"attributes."my key".x_1 : "v""#) else { panic!() };
        assert_eq!(x.path, ["attributes", "my key", "x_1"]);
        assert_eq!(x.op, Op::Has);
        assert_eq!(x.member(), r#"attributes."my key".x_1"#);
    }

    #[test]
    fn boolean_operators() {
        let (a, b) = (r("a", Op::Eq, num("1")), r("b", Op::Eq, num("2")));
        assert_eq!(p("a=1 AND b=2"), Expr::And(vec![a.clone(), b.clone()]));
        assert_eq!(p("a=1 OR b=2"), Expr::Or(vec![a.clone(), b.clone()]));
        assert_eq!(p("a=1 b=2"), Expr::And(vec![a.clone(), b.clone()]));
        assert_eq!(p("NOT a=1"), Expr::Not(Box::new(a.clone())));
        assert_eq!(p("-a=1"), Expr::Not(Box::new(a.clone())));
        assert_eq!(p("NOT(a=1)"), Expr::Not(Box::new(a.clone())));
        assert_eq!(p("NOT NOT a=1"), Expr::Not(Box::new(Expr::Not(Box::new(a.clone())))));
        assert_eq!(p("(a=1)"), a.clone());
        assert_eq!(p("((a=1))"), a.clone());
        // Keywords are whole words only.
        assert_eq!(p("ORDER = 1"), r("ORDER", Op::Eq, num("1")));
        assert_eq!(p("NOTE = 1"), r("NOTE", Op::Eq, num("1")));
        assert_eq!(p("a = 1 c = ANDY"), Expr::And(vec![a.clone(), r("c", Op::Eq, Arg::Word("ANDY".into()))]));
    }

    #[test]
    fn precedence() {
        let (a, b, c) = (r("a", Op::Eq, num("1")), r("b", Op::Eq, num("2")), r("c", Op::Eq, num("3")));
        let or_bc = Expr::Or(vec![b.clone(), c.clone()]);
        // OR binds tighter than AND (AIP-160).
        assert_eq!(p("a=1 AND b=2 OR c=3"), Expr::And(vec![a.clone(), or_bc.clone()]));
        assert_eq!(p("a=1 b=2 OR c=3"), Expr::And(vec![a.clone(), or_bc.clone()]));
        assert_eq!(p("a=1 OR b=2 AND c=3"), Expr::And(vec![Expr::Or(vec![a.clone(), b.clone()]), c.clone()]));
        assert_eq!(
            p("(a=1 AND b=2) OR c=3"),
            Expr::Or(vec![Expr::And(vec![a.clone(), b.clone()]), c.clone()])
        );
        // NOT binds tightest.
        assert_eq!(p("NOT a=1 OR b=2"), Expr::Or(vec![Expr::Not(Box::new(a.clone())), b.clone()]));
        // Flattening, including through parentheses.
        assert_eq!(p("a=1 AND (b=2 AND c=3)"), Expr::And(vec![a.clone(), b.clone(), c.clone()]));
        assert_eq!(p("(a=1 OR b=2) OR c=3"), Expr::Or(vec![a.clone(), b.clone(), c.clone()]));
        assert_eq!(p("a=1 b=2 AND c=3"), Expr::And(vec![a, b, c]));
    }

    #[test]
    fn errors_with_positions() {
        let cases: &[(&str, usize, &str)] = &[
            ("title = ", 9, "expected a value after '=', found end of input"),
            ("title == \"x\"", 8, "expected a value after '=', found '='"),
            ("(a = 1", 7, "expected ')' to close the '(' at position 1, found end of input"),
            ("a = \"unterminated", 5, "unterminated string starting"),
            ("a = 'x\\", 5, "unterminated string starting"),
            ("AND a = 1", 1, "expected a field name, NOT or '(', found 'AND'"),
            ("a=1)", 4, "unexpected ')'"),
            ("a = 1 OR", 9, "expected a field name, NOT or '(' after 'OR', found end of input"),
            ("a = 1 AND OR b = 1", 11, "expected a field name, NOT or '(' after 'AND', found 'OR'"),
            ("NOT", 4, "expected a field name, NOT or '(' after 'NOT', found end of input"),
            ("title", 6, "expected a comparison operator after 'title', found end of input"),
            ("x y = 1", 3, "expected a comparison operator after 'x', found 'y'"),
            ("a.b ! 1", 5, "expected a comparison operator after 'a.b', found '!'"),
            ("a. = 1", 3, "expected a member name after '.', found ' '"),
            (
                "a = *",
                5,
                "expected a value after '=', found '*' (write \"*\" with quotes for a wildcard, or ':*' to test presence)",
            ),
            ("a = -x", 5, "expected a value after '=', found '-x'"),
            ("a = AND", 5, "expected a value after '=', found 'AND'"),
            ("a = )", 5, "expected a value after '=', found ')'"),
            ("\"x\" = 1", 1, "expected a field name, NOT or '(', found a string"),
            ("()", 2, "expected a field name, NOT or '(' after '(', found ')'"),
            ("é = 1 ¬", 7, "expected a field name, NOT or '(', found '¬'"),
        ];
        for (input, position, message) in cases {
            let e = err(input);
            assert_eq!((e.position, e.message.as_str()), (*position, *message), "{input:?}");
        }
        assert_eq!(
            err("title = ").to_string(),
            "filter: expected a value after '=', found end of input at position 9"
        );
    }

    #[test]
    fn limits() {
        let ok = format!("{}a=1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}a=1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        let e = err(&deep);
        assert_eq!(
            (e.position, e.message.as_str()),
            (MAX_DEPTH + 1, "filter is nested too deeply (at most 32 levels)")
        );
        let nots = format!("{}a=1", "NOT ".repeat(MAX_DEPTH + 1));
        assert_eq!(err(&nots).position, 4 * MAX_DEPTH + 1);
        let minus = format!("{}a=1", "-".repeat(10_000));
        assert!(err(&minus).message.contains("too long"));
        let minus = format!("{}a=1", "-".repeat(MAX_DEPTH + 1));
        assert!(err(&minus).message.contains("nested too deeply"));
        // A deep unbalanced prefix fails fast instead of overflowing the stack.
        assert!(err(&"(".repeat(8000)).message.contains("nested too deeply"));

        let many = vec!["a=1"; MAX_RESTRICTIONS].join(" ");
        assert!(parse(&many).is_ok());
        let too_many = vec!["a=1"; MAX_RESTRICTIONS + 1].join(" ");
        let e = err(&too_many);
        assert_eq!(e.position, 4 * MAX_RESTRICTIONS + 1);
        assert!(e.message.contains("too many restrictions"), "{e}");

        let long = format!("a = \"{}\"", "x".repeat(MAX_INPUT_BYTES));
        let e = err(&long);
        assert_eq!(e.position, 1);
        assert!(e.message.contains("too long"));
    }

    #[test]
    fn display_is_canonical() {
        let e = p("a=1 AND (b = 'x' OR NOT c:*) -d.\"k k\" != FOO");
        assert_eq!(e.to_string(), r#"a = 1 AND (b = "x" OR (NOT c:*)) AND (NOT d."k k" != FOO)"#);
        assert_eq!(p(&e.to_string()), e);
        let w = r("a", Op::Eq, Arg::Word("AND".into()));
        assert_eq!(w.to_string(), r#"a = "AND""#);
        assert_eq!(Arg::String("a\"b\\c\nd".into()).to_string(), r#""a\"b\\c\nd""#);
    }

    // ---- property tests ----

    fn arb_arg(op: Op) -> BoxedStrategy<Arg> {
        let mut options = vec![
            "[ -~]{0,12}".prop_map(Arg::String).boxed(),
            "\\PC{0,6}".prop_map(Arg::String).boxed(),
            any::<i64>().prop_map(|n| Arg::Number(n.to_string())).boxed(),
            (-1000i32..1000, 0u32..100, proptest::option::of(-20i32..20))
                .prop_map(|(i, f, e)| {
                    Arg::Number(match e {
                        Some(e) => format!("{i}.{f}e{e}"),
                        None => format!("{i}.{f}"),
                    })
                })
                .boxed(),
            any::<bool>().prop_map(Arg::Bool).boxed(),
            Just(Arg::Null).boxed(),
            "[A-Za-z][A-Za-z0-9_]{0,8}"
                .prop_filter("keyword", |w| is_bare_word(w))
                .prop_map(Arg::Word)
                .boxed(),
            Just(Arg::Word("2024-01-02T03:04:05Z".into())).boxed(),
            Just(Arg::Word("123e4567-e89b-12d3-a456-426614174000".into())).boxed(),
        ];
        if op == Op::Has {
            options.push(Just(Arg::Star).boxed());
        }
        proptest::strategy::Union::new(options).boxed()
    }

    fn arb_path() -> impl Strategy<Value = Vec<String>> {
        let first = prop_oneof![
            Just("title"),
            Just("salary_min"),
            Just("remote"),
            Just("attributes"),
            Just("keywords"),
            Just("job_type"),
            Just("posting_time"),
        ];
        let rest = proptest::collection::vec(
            prop_oneof!["[a-z_][a-z0-9_]{0,5}", "[ -~]{0,6}", Just("AND".to_string())],
            0..3,
        );
        (first, rest).prop_map(|(f, rest)| std::iter::once(f.to_string()).chain(rest).collect())
    }

    fn arb_restriction() -> impl Strategy<Value = Expr> {
        let op = prop_oneof![
            Just(Op::Eq),
            Just(Op::Ne),
            Just(Op::Lt),
            Just(Op::Le),
            Just(Op::Gt),
            Just(Op::Ge),
            Just(Op::Has),
        ];
        (arb_path(), op).prop_flat_map(|(path, op)| {
            arb_arg(op).prop_map(move |arg| {
                Expr::Restriction(Restriction { path: path.clone(), op, arg, position: 0, arg_position: 0 })
            })
        })
    }

    /// Valid, normalized (flattened) expressions of depth at most 4.
    pub(crate) fn arb_expr() -> impl Strategy<Value = Expr> {
        arb_restriction().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(|v| flatten(v, true)),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(|v| flatten(v, false)),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(input in ".*") {
            let _ = parse(&input);
        }

        #[test]
        fn grammar_ish_text_never_panics(input in "[a-z()=!<>:\"'*\\\\. ANDORT0-9-]{0,64}") {
            if let Err(e) = parse(&input) {
                prop_assert!(e.position >= 1 && e.position <= input.chars().count() + 1, "{e}");
            }
        }

        #[test]
        fn display_round_trips(e in arb_expr()) {
            let text = e.to_string();
            let back = parse(&text);
            prop_assert_eq!(
                back.clone().map(|o| o.map(|b| b.without_positions())),
                Ok(Some(e.without_positions())),
                "text: {}", text
            );
        }
    }
}
