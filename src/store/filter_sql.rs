//! Compiles a type-checked filter (`domain::filter_check`) to a boolean SQL
//! expression with bound parameters.
//!
//! The SQL text holds only static column names from the field table, SQL
//! keywords and operators, and `$n` placeholders: every caller value (and
//! JSON key) is appended to `params`.
//!
//! # Semantics by field kind
//!
//! | kind | operators | SQL |
//! |------|-----------|-----|
//! | Text | `= != < <= > >= :` | `col = $n`; a `*` wildcard in `=`/`!=`/`:` gives `col ILIKE $n` |
//! | Int, Float, Timestamp | `= != < <= > >= :` | `col < $n` … |
//! | Bool, Enum, Uuid | `= != :` | `col = $n` |
//! | TextArray | `:` | `col @> $n::text[]` (membership, GIN-indexable) |
//! | Json | `field:key`, `field.key op value` | `col ? $n`, `col @> $n::jsonb`, `col -> $k::text < $v::jsonb` |
//!
//! * `:` on a scalar is equality (AIP-160); `field:*` tests presence
//!   (`IS NOT NULL`; for arrays `cardinality(col) > 0`; for a JSON member,
//!   that the key exists).
//! * `!=` is `IS DISTINCT FROM`, so rows where the column is NULL match.
//!   `NOT x` compiles to `NOT COALESCE(x, false)`, total over NULLs too.
//! * `= null` / `!= null` test `IS NULL` / `IS NOT NULL`. On a JSON member,
//!   `= null` matches a missing key or a JSON `null`, `!= null` the rest.
//! * Text wildcards: `*` matches any run of characters, case-insensitively
//!   (ILIKE); `\*` in the decoded string (`"a\*b"` or `"a\\*b"` in the filter)
//!   is a literal star. Without a wildcard, comparison is exact.
//! * JSON member equality `attributes.a.b = v` compiles to containment,
//!   `attributes @> {"a":{"b":v}}`, which the GIN index serves; `!=` and
//!   orderings use `->` / `#>` and jsonb ordering. A wildcard string
//!   compares the member's text (`->>` / `#>>`) with ILIKE.
//!
//! Errors carry the position of the restriction (unknown field, operator
//! not applicable) or of its argument (bad value).

use crate::domain::{
    filter::{Expr, FilterError},
    filter_check::{self, Checked, Cmp, MemberTest, Test},
    schema::{FieldKind, Resource},
    value::Value,
};

pub use crate::domain::filter_check::MAX_PARAMS;

/// Type-checks and compiles `expr` (tests and one-off callers; the service
/// checks once and calls [`emit`]).
pub fn compile(
    resource: &'static Resource,
    expr: &Expr,
    params: &mut Vec<Value>,
) -> Result<String, FilterError> {
    Ok(emit(&filter_check::check(resource, expr)?, params))
}

/// The SQL of a checked filter, appending its values to `params` and
/// referring to them as `$n` (`n` = index in `params` + 1, so earlier
/// parameters such as the tenant id keep their numbers). The checker
/// bounded the number of values.
pub fn emit(c: &Checked, params: &mut Vec<Value>) -> String {
    let mut bind = |v: Value| {
        params.push(v);
        format!("${}", params.len())
    };
    emit_with(c, &mut bind)
}

fn emit_with(c: &Checked, bind: &mut impl FnMut(Value) -> String) -> String {
    match c {
        Checked::And(v) => join(v, " AND ", "TRUE", bind),
        Checked::Or(v) => join(v, " OR ", "FALSE", bind),
        Checked::Not(inner) => format!("NOT COALESCE({}, false)", emit_with(inner, bind)),
        Checked::Cond(field, test) => cond(field.column, field.kind, test, bind),
    }
}

fn join(v: &[Checked], sep: &str, empty: &str, bind: &mut impl FnMut(Value) -> String) -> String {
    if v.is_empty() {
        return empty.to_string();
    }
    let parts: Vec<String> = v.iter().map(|c| emit_with(c, bind)).collect();
    format!("({})", parts.join(sep))
}

/// The comparison operator of a scalar restriction.
fn sql_op(op: Cmp) -> &'static str {
    match op {
        Cmp::Eq => "=",
        Cmp::Ne => "IS DISTINCT FROM",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
    }
}

fn cond(col: &str, kind: FieldKind, test: &Test, bind: &mut impl FnMut(Value) -> String) -> String {
    match test {
        Test::IsNull => format!("{col} IS NULL"),
        Test::NotNull => format!("{col} IS NOT NULL"),
        Test::NonEmpty => format!("cardinality({col}) > 0"),
        Test::Compare(op, v) => format!("{col} {} {}", sql_op(*op), bind(v.clone())),
        Test::Like(p) => format!("{col} ILIKE {}", bind(Value::Text(p.clone()))),
        Test::NotLike(p) => {
            format!("({col} NOT ILIKE {n} OR {col} IS NULL)", n = bind(Value::Text(p.clone())))
        }
        Test::Contains(s) => format!("{col} @> {}::text[]", bind(Value::TextArray(vec![s.clone()]))),
        Test::HasKey(k) => format!("{col} ? {}::text", bind(Value::Text(k.clone()))),
        Test::Member(keys, t) => {
            debug_assert_eq!(kind, FieldKind::Json);
            member(col, keys, t, bind)
        }
    }
}

/// The jsonb member at `keys` of `col`: `col -> $k::text` or, nested,
/// `col #> $k::text[]`; `as_text` gives the `->>` / `#>>` text form.
fn accessor(col: &str, keys: &[String], as_text: bool, bind: &mut impl FnMut(Value) -> String) -> String {
    let (op, value, cast) = match keys {
        [key] => (if as_text { "->>" } else { "->" }, Value::Text(key.clone()), "text"),
        _ => (if as_text { "#>>" } else { "#>" }, Value::TextArray(keys.to_vec()), "text[]"),
    };
    format!("{col} {op} {}::{cast}", bind(value))
}

fn member(col: &str, keys: &[String], t: &MemberTest, bind: &mut impl FnMut(Value) -> String) -> String {
    match t {
        MemberTest::IsNull => {
            format!("COALESCE(jsonb_typeof({}) = 'null', true)", accessor(col, keys, false, bind))
        }
        MemberTest::NotNull => {
            format!("COALESCE(jsonb_typeof({}) <> 'null', false)", accessor(col, keys, false, bind))
        }
        MemberTest::Exists => match keys {
            [key] => format!("{col} ? {}::text", bind(Value::Text(key.clone()))),
            _ => format!("{} IS NOT NULL", accessor(col, keys, false, bind)),
        },
        MemberTest::Like(p) => {
            let acc = accessor(col, keys, true, bind);
            format!("{acc} ILIKE {}", bind(Value::Text(p.clone())))
        }
        MemberTest::NotLike(p) => {
            let acc = accessor(col, keys, true, bind);
            format!("NOT COALESCE({acc} ILIKE {}, false)", bind(Value::Text(p.clone())))
        }
        MemberTest::Contains(doc) => format!("{col} @> {}::jsonb", bind(Value::Json(doc.clone()))),
        MemberTest::Compare(op, literal) => {
            let acc = accessor(col, keys, false, bind);
            format!("{acc} {} {}::jsonb", sql_op(*op), bind(Value::Json(literal.clone())))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use chrono::{DateTime, Utc};

    use crate::domain::{
        filter::{Arg, Op, Restriction, parse},
        schema::{EnumDef, Field},
    };

    static JOB_TYPE: EnumDef =
        EnumDef { prefix: "JOB_TYPE_", values: &["FULL_TIME", "PART_TIME", "CONTRACT"] };

    static FIELDS: &[Field] = &[
        Field::new("id", FieldKind::Uuid).not_null(),
        Field::new("title", FieldKind::Text).not_null(),
        Field::new("salary_min", FieldKind::Int),
        Field::new("score", FieldKind::Float).column("credibility_rating"),
        Field::new("remote", FieldKind::Bool).not_null(),
        Field::new("posting_time", FieldKind::Timestamp),
        Field::new("job_type", FieldKind::Enum(&JOB_TYPE)),
        Field::new("keywords", FieldKind::TextArray),
        Field::new("attributes", FieldKind::Json),
        Field::new("notes", FieldKind::Text).unfilterable(),
    ];

    static JOBS: Resource = Resource {
        name: "job",
        table: "jobs",
        fields: FIELDS,
        soft_delete: true,
        default_order: "create_time desc",
        ..Resource::BASE
    };

    fn tenant() -> Value {
        Value::Uuid(Uuid::nil())
    }

    /// Compiles `filter` after a tenant parameter; returns the SQL and the
    /// filter's own parameters.
    fn sql(filter: &str) -> (String, Vec<Value>) {
        let expr = match parse(filter) {
            Ok(Some(e)) => e,
            other => panic!("{filter:?} -> {other:?}"),
        };
        let mut params = vec![tenant()];
        match compile(&JOBS, &expr, &mut params) {
            Ok(s) => (s, params.split_off(1)),
            Err(e) => panic!("{filter:?}: {e}"),
        }
    }

    fn error(filter: &str) -> (usize, String) {
        let expr = match parse(filter) {
            Ok(Some(e)) => e,
            other => panic!("{filter:?} -> {other:?}"),
        };
        let mut params = vec![tenant()];
        match compile(&JOBS, &expr, &mut params) {
            Ok(s) => panic!("{filter:?} compiled to {s}"),
            Err(e) => (e.position, e.message),
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    #[test]
    fn text_fields() {
        assert_eq!(sql("title = \"Rust dev\""), ("title = $2".into(), vec![text("Rust dev")]));
        assert_eq!(sql("title = rust"), ("title = $2".into(), vec![text("rust")]));
        assert_eq!(sql("title = 42"), ("title = $2".into(), vec![text("42")]));
        assert_eq!(sql("title:\"x\""), ("title = $2".into(), vec![text("x")]));
        assert_eq!(sql("title != \"x\""), ("title IS DISTINCT FROM $2".into(), vec![text("x")]));
        assert_eq!(sql("title >= \"m\""), ("title >= $2".into(), vec![text("m")]));
        assert_eq!(sql("title:*"), ("title IS NOT NULL".into(), vec![]));
        assert_eq!(sql("title = null"), ("title IS NULL".into(), vec![]));
        assert_eq!(sql("title != null"), ("title IS NOT NULL".into(), vec![]));
    }

    #[test]
    fn text_wildcards() {
        assert_eq!(sql("title = \"*engineer*\""), ("title ILIKE $2".into(), vec![text("%engineer%")]));
        assert_eq!(sql("title:\"50%_off\\\\*\""), ("title = $2".into(), vec![text("50%_off*")]));
        assert_eq!(sql("title = \"50%_\\\\x*\""), ("title ILIKE $2".into(), vec![text("50\\%\\_\\\\x%")]));
        assert_eq!(sql(r#"title = "a\*b*""#), ("title ILIKE $2".into(), vec![text("a*b%")]));
        assert_eq!(
            sql("title != \"*x\""),
            ("(title NOT ILIKE $2 OR title IS NULL)".into(), vec![text("%x")])
        );
        // Orderings have no wildcards.
        assert_eq!(sql("title < \"a*\""), ("title < $2".into(), vec![text("a*")]));
    }

    #[test]
    fn numbers_bools_times() {
        assert_eq!(sql("salary_min >= 100000"), ("salary_min >= $2".into(), vec![Value::Int(100_000)]));
        assert_eq!(sql("salary_min < 1e5"), ("salary_min < $2".into(), vec![Value::Int(100_000)]));
        assert_eq!(sql("salary_min != -3"), ("salary_min IS DISTINCT FROM $2".into(), vec![Value::Int(-3)]));
        assert_eq!(sql("score > 0.5"), ("credibility_rating > $2".into(), vec![Value::Float(0.5)]));
        assert_eq!(sql("score = 2"), ("credibility_rating = $2".into(), vec![Value::Float(2.0)]));
        assert_eq!(sql("remote = true"), ("remote = $2".into(), vec![Value::Bool(true)]));
        assert_eq!(sql("remote != false"), ("remote IS DISTINCT FROM $2".into(), vec![Value::Bool(false)]));
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z").map(|t| t.with_timezone(&Utc));
        let Ok(t) = t else { panic!() };
        assert_eq!(
            sql("posting_time > 2024-01-02T03:04:05Z"),
            ("posting_time > $2".into(), vec![Value::Time(t)])
        );
        assert_eq!(
            sql("posting_time <= \"2024-01-02T04:04:05+01:00\""),
            ("posting_time <= $2".into(), vec![Value::Time(t)])
        );
    }

    #[test]
    fn enums_and_uuids() {
        assert_eq!(sql("job_type = FULL_TIME"), ("job_type = $2".into(), vec![text("FULL_TIME")]));
        assert_eq!(sql("job_type = \"JOB_TYPE_CONTRACT\""), ("job_type = $2".into(), vec![text("CONTRACT")]));
        assert_eq!(
            sql("job_type != PART_TIME"),
            ("job_type IS DISTINCT FROM $2".into(), vec![text("PART_TIME")])
        );
        let u = "123e4567-e89b-12d3-a456-426614174000";
        let Ok(uuid) = Uuid::parse_str(u) else { panic!() };
        assert_eq!(sql(&format!("id = {u}")), ("id = $2".into(), vec![Value::Uuid(uuid)]));
        assert_eq!(sql(&format!("id = \"{u}\"")), ("id = $2".into(), vec![Value::Uuid(uuid)]));
    }

    #[test]
    fn arrays() {
        assert_eq!(
            sql("keywords:rust"),
            ("keywords @> $2::text[]".into(), vec![Value::TextArray(vec!["rust".into()])])
        );
        assert_eq!(
            sql("keywords:\"machine learning\""),
            ("keywords @> $2::text[]".into(), vec![Value::TextArray(vec!["machine learning".into()])])
        );
        assert_eq!(sql("keywords:*"), ("cardinality(keywords) > 0".into(), vec![]));
        assert_eq!(sql("keywords = null"), ("keywords IS NULL".into(), vec![]));
        assert_eq!(
            error("keywords = rust"),
            (1, "use ':' to test membership of 'keywords' (e.g. keywords:\"value\")".into())
        );
    }

    #[test]
    fn json() {
        assert_eq!(sql("attributes:seniority"), ("attributes ? $2::text".into(), vec![text("seniority")]));
        assert_eq!(sql("attributes:*"), ("attributes IS NOT NULL".into(), vec![]));
        assert_eq!(
            sql("attributes.seniority = \"senior\""),
            ("attributes @> $2::jsonb".into(), vec![Value::Json(json!({"seniority": "senior"}))])
        );
        assert_eq!(
            sql("attributes.a.\"b c\" = 3"),
            ("attributes @> $2::jsonb".into(), vec![Value::Json(json!({"a": {"b c": 3}}))])
        );
        assert_eq!(
            sql("attributes.remote:true"),
            ("attributes @> $2::jsonb".into(), vec![Value::Json(json!({"remote": true}))])
        );
        assert_eq!(
            sql("attributes.level != senior"),
            (
                "attributes -> $2::text IS DISTINCT FROM $3::jsonb".into(),
                vec![text("level"), Value::Json(json!("senior"))]
            )
        );
        assert_eq!(
            sql("attributes.years >= 2.5"),
            ("attributes -> $2::text >= $3::jsonb".into(), vec![text("years"), Value::Json(json!(2.5))])
        );
        assert_eq!(
            sql("attributes.a.b < 7"),
            (
                "attributes #> $2::text[] < $3::jsonb".into(),
                vec![Value::TextArray(vec!["a".into(), "b".into()]), Value::Json(json!(7))]
            )
        );
        assert_eq!(
            sql("attributes.team = \"*data*\""),
            ("attributes ->> $2::text ILIKE $3".into(), vec![text("team"), text("%data%")])
        );
        assert_eq!(
            sql("attributes.a.b != \"x*\""),
            (
                "NOT COALESCE(attributes #>> $2::text[] ILIKE $3, false)".into(),
                vec![Value::TextArray(vec!["a".into(), "b".into()]), text("x%")]
            )
        );
        assert_eq!(sql("attributes.k:*"), ("attributes ? $2::text".into(), vec![text("k")]));
        assert_eq!(
            sql("attributes.a.b:*"),
            (
                "attributes #> $2::text[] IS NOT NULL".into(),
                vec![Value::TextArray(vec!["a".into(), "b".into()])]
            )
        );
        assert_eq!(
            sql("attributes.k = null"),
            ("COALESCE(jsonb_typeof(attributes -> $2::text) = 'null', true)".into(), vec![text("k")])
        );
        assert_eq!(
            sql("attributes.k != null"),
            ("COALESCE(jsonb_typeof(attributes -> $2::text) <> 'null', false)".into(), vec![text("k")])
        );
        assert_eq!(
            error("attributes = 1"),
            (
                1,
                "compare a member of 'attributes' (e.g. attributes.key = \"value\") or test for a key with 'attributes:key'"
                    .into()
            )
        );
    }

    #[test]
    fn boolean_structure() {
        assert_eq!(
            sql("title = a AND (salary_min > 1 OR NOT remote = true)"),
            (
                "(title = $2 AND (salary_min > $3 OR NOT COALESCE(remote = $4, false)))".into(),
                vec![text("a"), Value::Int(1), Value::Bool(true)]
            )
        );
        assert_eq!(sql("-title = a"), ("NOT COALESCE(title = $2, false)".into(), vec![text("a")]));
        let mut params = Vec::new();
        assert_eq!(compile(&JOBS, &Expr::And(vec![]), &mut params), Ok("TRUE".into()));
        assert_eq!(compile(&JOBS, &Expr::Or(vec![]), &mut params), Ok("FALSE".into()));
    }

    #[test]
    fn injection_only_in_params() {
        let evil = "x'; DROP TABLE jobs; --";
        let (s, params) = sql(&format!("title = \"{evil}\" OR attributes.\"{evil}\" = \"{evil}\""));
        assert_eq!(s, "(title = $2 OR attributes @> $3::jsonb)");
        assert_eq!(params, vec![text(evil), Value::Json(json!({ evil: evil }))]);
        assert!(!s.contains("DROP"));
    }

    #[test]
    fn errors() {
        assert_eq!(error("salary_min = 1 AND bogus = 1"), (20, "unknown field 'bogus'".into()));
        assert_eq!(error("notes = x"), (1, "field 'notes' cannot be filtered".into()));
        assert_eq!(
            error("title.x = 1"),
            (1, "field 'title' has no members ('title.x' is not a field)".into())
        );
        assert_eq!(
            error("job_type = SEASONAL"),
            (12, "expected one of FULL_TIME, PART_TIME, CONTRACT for 'job_type', found 'SEASONAL'".into())
        );
        assert_eq!(
            error("job_type > FULL_TIME"),
            (1, "'>' does not apply to 'job_type'; use '=', '!=' or ':'".into())
        );
        assert_eq!(
            error("posting_time > \"yesterday\""),
            (16, "expected an RFC 3339 timestamp for 'posting_time', found \"yesterday\"".into())
        );
        assert_eq!(
            error("salary_min = 1.5"),
            (14, "expected an integer for 'salary_min', found '1.5'".into())
        );
        assert_eq!(
            error("salary_min = 99999999999999999999"),
            (14, "expected an integer for 'salary_min', found '99999999999999999999'".into())
        );
        assert_eq!(
            error("salary_min = \"5\""),
            (14, "expected an integer for 'salary_min', found \"5\"".into())
        );
        assert_eq!(error("score = 1e999"), (9, "expected a number for 'score', found '1e999'".into()));
        assert_eq!(error("remote = yes"), (10, "expected true or false for 'remote', found 'yes'".into()));
        assert_eq!(
            error("remote < true"),
            (1, "'<' does not apply to 'remote'; use '=', '!=' or ':'".into())
        );
        assert_eq!(error("id = 12"), (6, "expected a UUID for 'id', found '12'".into()));
        assert_eq!(error("title = true"), (9, "expected a string for 'title', found 'true'".into()));
        assert_eq!(error("title < null"), (9, "null can only be compared with '=' or '!=', not '<'".into()));
        assert_eq!(error("attributes.k = 1e999"), (16, "expected a finite number, found '1e999'".into()));
    }

    #[test]
    fn parameter_limit() {
        let r = |i: usize| {
            Expr::Restriction(Restriction {
                path: vec!["salary_min".into()],
                op: Op::Eq,
                arg: Arg::Number(i.to_string()),
                position: i + 1,
                arg_position: i + 1,
            })
        };
        let mut params = vec![tenant()];
        let ok = Expr::And((0..MAX_PARAMS).map(r).collect());
        assert!(compile(&JOBS, &ok, &mut params).is_ok());
        assert_eq!(params.len(), MAX_PARAMS + 1);
        let mut params = vec![tenant()];
        let too_many = Expr::And((0..=MAX_PARAMS).map(r).collect());
        let e = compile(&JOBS, &too_many, &mut params);
        assert_eq!(e, Err(FilterError::new(MAX_PARAMS + 1, "filter uses too many values (at most 200)")));
    }

    /// Asserts `sql` consists only of column names, fixed keywords and
    /// operators, and placeholders `$base+1 ..= $len`, each used.
    fn assert_safe(sql: &str, base: usize, len: usize) -> Result<(), TestCaseError> {
        const WORDS: &[&str] = &[
            "AND",
            "OR",
            "NOT",
            "IS",
            "NULL",
            "DISTINCT",
            "FROM",
            "ILIKE",
            "COALESCE",
            "false",
            "true",
            "TRUE",
            "FALSE",
            "cardinality",
            "jsonb_typeof",
            "'null'",
            "0",
            "=",
            "<>",
            "<",
            "<=",
            ">",
            ">=",
            "?",
            "@>",
            "->",
            "->>",
            "#>",
            "#>>",
        ];
        let mut used = BTreeSet::new();
        for token in sql.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',')) {
            if token.is_empty() || WORDS.contains(&token) || FIELDS.iter().any(|f| f.column == token) {
                continue;
            }
            let placeholder = token
                .strip_prefix('$')
                .map(|t| {
                    t.strip_suffix("::text[]")
                        .or(t.strip_suffix("::text"))
                        .or(t.strip_suffix("::jsonb"))
                        .unwrap_or(t)
                })
                .and_then(|n| n.parse::<usize>().ok());
            let Some(n) = placeholder else {
                return Err(TestCaseError::fail(format!("unexpected token {token:?} in {sql}")));
            };
            prop_assert!(n > base && n <= len, "placeholder ${} out of range in {}", n, sql);
            used.insert(n);
        }
        prop_assert_eq!(used.len(), len - base, "unused parameters in {}", sql);
        Ok(())
    }

    fn check(input: &str) -> Result<(), TestCaseError> {
        if let Ok(Some(expr)) = parse(input) {
            let mut params = vec![tenant()];
            if let Ok(sql) = compile(&JOBS, &expr, &mut params) {
                assert_safe(&sql, 1, params.len())?;
            }
        }
        Ok(())
    }

    /// Restrictions and connectors; joined with spaces they often parse.
    fn chunk() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "title = \"x'; DROP TABLE jobs; --\"",
            "title != \"*a%_\\\\*\"",
            "title:*",
            "title < m",
            "salary_min >= 1e3",
            "salary_min = 1.5",
            "score > -2.5",
            "remote = true",
            "remote = 1",
            "posting_time < 2024-01-02T03:04:05Z",
            "posting_time = \"now\"",
            "job_type = FULL_TIME",
            "job_type != JOB_TYPE_CONTRACT",
            "job_type = nope",
            "keywords:rust",
            "keywords:*",
            "keywords = x",
            "attributes:k",
            "attributes.a.\"$1\" = \"*\"",
            "attributes.x != null",
            "attributes.x <= 3",
            "id = 123e4567-e89b-12d3-a456-426614174000",
            "id != null",
            "notes = x",
            "nope = 1",
            "title.x = 1",
            "AND",
            "OR",
            "NOT",
            "-",
            "(",
            ")",
            "=",
            "*",
            "1",
            "'$1'",
        ])
    }

    /// Restrictions whose arguments suit the field, so they compile.
    fn typed_restriction() -> impl Strategy<Value = Expr> {
        use proptest::sample::select;
        let all = vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::Has];
        let eq = vec![Op::Eq, Op::Ne, Op::Has];
        let text = prop_oneof![
            "\\PC{0,12}".prop_map(Arg::String),
            "[a-z*%_\\\\']{0,8}".prop_map(Arg::String),
            "[A-Za-z][a-z0-9_]{0,6}"
                .prop_filter("word", |w| !matches!(w.as_str(), "true" | "false" | "null"))
                .prop_map(Arg::Word),
            any::<i32>().prop_map(|n| Arg::Number(n.to_string())),
        ];
        let json_value = prop_oneof![
            text.clone(),
            any::<bool>().prop_map(Arg::Bool),
            Just(Arg::Null),
            any::<f32>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| Arg::Number(format!("{f:e}"))),
        ];
        let timestamp = Just(Arg::Word("2024-01-02T03:04:05.123+01:00".into()));
        let cases: Vec<BoxedStrategy<(Vec<String>, Op, Arg)>> = vec![
            (select(all.clone()), text.clone()).prop_map(|(o, a)| (vec!["title".into()], o, a)).boxed(),
            (select(all.clone()), any::<i64>())
                .prop_map(|(o, n)| (vec!["salary_min".into()], o, Arg::Number(n.to_string())))
                .boxed(),
            (select(all.clone()), any::<f64>().prop_filter("finite", |f| f.is_finite()))
                .prop_map(|(o, f)| (vec!["score".into()], o, Arg::Number(format!("{f:e}"))))
                .boxed(),
            (select(eq.clone()), any::<bool>())
                .prop_map(|(o, b)| (vec!["remote".into()], o, Arg::Bool(b)))
                .boxed(),
            (select(all.clone()), timestamp).prop_map(|(o, a)| (vec!["posting_time".into()], o, a)).boxed(),
            (select(eq.clone()), select(vec!["FULL_TIME", "JOB_TYPE_PART_TIME"]))
                .prop_map(|(o, w)| (vec!["job_type".into()], o, Arg::Word(w.into())))
                .boxed(),
            select(eq.clone())
                .prop_map(|o| {
                    (vec!["id".into()], o, Arg::Word("123e4567-e89b-12d3-a456-426614174000".into()))
                })
                .boxed(),
            text.clone().prop_map(|a| (vec!["keywords".into()], Op::Has, a)).boxed(),
            prop_oneof![text.clone(), Just(Arg::Star)]
                .prop_map(|a| (vec!["attributes".into()], Op::Has, a))
                .boxed(),
            (proptest::collection::vec("\\PC{0,6}", 1..4), select(all), json_value)
                .prop_map(|(keys, o, a)| {
                    let path = std::iter::once("attributes".to_string()).chain(keys).collect();
                    let o = if matches!(a, Arg::Null) && !matches!(o, Op::Eq | Op::Ne) { Op::Eq } else { o };
                    (path, o, a)
                })
                .boxed(),
            (select(vec!["title", "salary_min", "keywords", "attributes"]), select(vec![Op::Eq, Op::Ne]))
                .prop_map(|(f, o)| (vec![f.into()], o, Arg::Null))
                .boxed(),
            select(vec!["title", "score", "keywords", "attributes", "posting_time"])
                .prop_map(|f| (vec![f.into()], Op::Has, Arg::Star))
                .boxed(),
        ];
        proptest::strategy::Union::new(cases).prop_map(|(path, op, arg)| {
            Expr::Restriction(Restriction { path, op, arg, position: 0, arg_position: 0 })
        })
    }

    fn typed_expr() -> impl Strategy<Value = Expr> {
        typed_restriction().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::and),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::or),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    proptest! {
        #[test]
        fn compile_is_safe_on_chunk_soup(chunks in proptest::collection::vec(chunk(), 1..12)) {
            check(&chunks.join(" "))?;
        }

        #[test]
        fn typed_exprs_compile_safely(e in typed_expr()) {
            let mut params = vec![tenant()];
            match compile(&JOBS, &e, &mut params) {
                Ok(sql) => assert_safe(&sql, 1, params.len())?,
                Err(err) => prop_assert!(false, "{} for {}", err, e),
            }
            // The canonical text compiles to the same SQL and parameters.
            let reparsed = parse(&e.to_string());
            let Ok(Some(reparsed)) = reparsed else {
                return Err(TestCaseError::fail(format!("{e} -> {reparsed:?}")));
            };
            let mut again = vec![tenant()];
            let sql = compile(&JOBS, &reparsed, &mut again).map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(compile(&JOBS, &e, &mut vec![tenant()]), Ok(sql.clone()));
            prop_assert_eq!(again, params);
        }

        #[test]
        fn compile_is_safe_on_arbitrary_text(input in ".*") {
            check(&input)?;
        }

        #[test]
        fn compile_is_safe_on_generated_exprs(e in crate::domain::filter::tests::arb_expr()) {
            check(&e.to_string())?;
            let mut params = vec![tenant()];
            if let Ok(sql) = compile(&JOBS, &e, &mut params) {
                assert_safe(&sql, 1, params.len())?;
            }
        }
    }
}
