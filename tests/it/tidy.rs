//! Tidy: the layering of ARCHITECTURE.md, checked on the source text, in the
//! spirit of rust-analyzer's `xtask/src/tidy.rs`, so the code map cannot
//! quietly become false.
//!
//! Every `.rs` file under `src/` is read and split by a small lexer into code
//! (comments and the contents of string literals blanked, lines kept) and
//! string literals (`"…"` with escapes, `r"…"`/`r#"…"#`, byte and C strings;
//! char literals and lifetimes are told apart). Identifier rules look at the
//! code only, SQL rules at the literals only, so comments, doc text and
//! identifiers never trip an SQL rule and a message mentioning tonic never
//! trips an import rule. The rules:
//!
//! - `edge-only`: the crates `tonic`, `tonic_*`, `prost`, `prost_*` are named
//!   (a path `tonic::…`, or any mention in a `use`/`extern crate` line) only
//!   in `src/api/**` and the wiring `src/main.rs`, `src/app.rs`,
//!   `src/lib.rs` (`build.rs` is outside `src/`). This is also what keeps
//!   `src/service/`, `src/domain/`, `src/store/`, `src/telemetry/` and
//!   `src/auth.rs` free of them. `.with_tonic()` (opentelemetry-otlp's
//!   builder) is one identifier, not the crate, and passes.
//! - `sql-outside-store`: outside `src/store/**` no string literal contains
//!   the start of an SQL statement: `SELECT `, `INSERT INTO`,
//!   `UPDATE <name> … SET`, `DELETE FROM`, `CREATE `, `ALTER `, `COPY `, or
//!   the words `BEGIN`, `COMMIT`, `ROLLBACK` (uppercase, at a word boundary:
//!   `READ COMMITTED` or `"CREATE"` as an action name are not statements).
//!   This is the "no SQL text" of `src/service/` and `src/domain/`.
//! - `domain-no-driver`: `src/domain/**` names no database driver
//!   (`tokio_postgres`, `postgres_types`, `deadpool_postgres`).
//! - `no-upward-import`: a layer does not reach above itself through
//!   `crate::…` paths (grouped `use crate::{…}` included): `src/store/**` not
//!   `api`, `service`, `cache`, `telemetry`, `app`; `src/domain/**` not
//!   `api`, `service`, `store`, `cache`, `telemetry`, `app`;
//!   `src/service/**` not `api`, `app`, `cache` (the cache plugs into the
//!   service's `ReadCache` seam, wired by `app.rs`); `src/cache/**` not
//!   `api`, `app`, `store`, `telemetry` (it reaches the data only through
//!   the seam).
//! - `redis-in-cache-only`: the crates `redis` and `deadpool_redis` are
//!   named only in `src/cache/**`.
//! - `sql-in-sql-files`: in `src/store/**`, a hand-written statement lives in
//!   a `.sql` file next to the code, loaded with `include_str!`. Reported: a
//!   literal that is a whole statement (its text starts with `SELECT`,
//!   `INSERT`, `UPDATE`, `DELETE`, `WITH`, `MERGE`, `COPY`, `CREATE`,
//!   `ALTER`) and spans more than one source line or is longer than 100
//!   characters. What the rule cannot see, on purpose: SQL assembled from
//!   the static field tables (a literal with a `{` is a `format!` template
//!   and passes, as do fragments such as `" WHERE …"` that do not start a
//!   statement), and short one-line statements (`BEGIN`, `SELECT 1`), which
//!   a file would only hide.
//!
//! A failure lists `file:line: rule: text`, one line per finding. [`ALLOWED`]
//! names the genuine wiring exceptions, each with its reason.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Exceptions: `(file, rule, why)`. Only wiring belongs here.
const ALLOWED: &[(&str, Rule, &str)] = &[];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    EdgeOnly,
    SqlOutsideStore,
    DomainNoDriver,
    NoUpwardImport,
    SqlInSqlFiles,
    RedisInCacheOnly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::EdgeOnly => "edge-only",
            Rule::SqlOutsideStore => "sql-outside-store",
            Rule::DomainNoDriver => "domain-no-driver",
            Rule::NoUpwardImport => "no-upward-import",
            Rule::SqlInSqlFiles => "sql-in-sql-files",
            Rule::RedisInCacheOnly => "redis-in-cache-only",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Rule::EdgeOnly => "tonic/prost named outside src/api/ and the wiring (main.rs, app.rs, lib.rs)",
            Rule::SqlOutsideStore => "SQL statement text outside src/store/",
            Rule::DomainNoDriver => "a database driver named in src/domain/",
            Rule::NoUpwardImport => "a layer importing a module above it",
            Rule::SqlInSqlFiles => {
                "a multi-line or long SQL statement literal in src/store/ (put it in a .sql file, include_str!)"
            }
            Rule::RedisInCacheOnly => "the Redis client (redis, deadpool_redis) named outside src/cache/",
        }
    }
}

/// A string literal: the line it starts on, the line it ends on, its text
/// (common escapes resolved, `\` line continuations removed).
#[derive(Debug)]
struct Literal {
    line: usize,
    end_line: usize,
    text: String,
}

/// A source file split into code and literals.
#[derive(Debug)]
struct Scanned {
    /// The source with comments and literal contents replaced by spaces;
    /// newlines kept, so line numbers are the source's.
    code: String,
    literals: Vec<Literal>,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// At `s[i] == 'r'`: the number of `#` of a raw string starting here.
fn raw_string_at(s: &[char], i: usize) -> Option<usize> {
    if s[i] != 'r' {
        return None;
    }
    let starts_token = match i {
        0 => true,
        _ if !is_ident(s[i - 1]) => true,
        // br"…", cr"…"
        1 => matches!(s[0], 'b' | 'c'),
        _ => matches!(s[i - 1], 'b' | 'c') && !is_ident(s[i - 2]),
    };
    if !starts_token {
        return None;
    }
    let hashes = s[i + 1..].iter().take_while(|c| **c == '#').count();
    (s.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

fn blank(c: char) -> char {
    if c == '\n' { '\n' } else { ' ' }
}

fn scan(src: &str) -> Scanned {
    let s: Vec<char> = src.chars().collect();
    let mut code = String::with_capacity(src.len());
    let mut literals = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Copies s[i] to the code as a blank, counting lines.
    let skip = |i: &mut usize, code: &mut String, line: &mut usize| {
        if s[*i] == '\n' {
            *line += 1;
        }
        code.push(blank(s[*i]));
        *i += 1;
    };
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                skip(&mut i, &mut code, &mut line);
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    code.push_str("  ");
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    skip(&mut i, &mut code, &mut line);
                }
            }
        } else if let Some(hashes) = raw_string_at(&s, i) {
            let start = line;
            code.push('r');
            code.extend(std::iter::repeat_n('#', hashes));
            code.push('"');
            i += hashes + 2;
            let mut text = String::new();
            while i < s.len() {
                if s[i] == '"' && s[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes {
                    code.push('"');
                    code.extend(std::iter::repeat_n('#', hashes));
                    i += hashes + 1;
                    break;
                }
                text.push(s[i]);
                skip(&mut i, &mut code, &mut line);
            }
            literals.push(Literal { line: start, end_line: line, text });
        } else if c == '"' {
            let start = line;
            code.push('"');
            i += 1;
            let mut text = String::new();
            while i < s.len() {
                match s[i] {
                    '"' => {
                        code.push('"');
                        i += 1;
                        break;
                    }
                    '\\' => {
                        skip(&mut i, &mut code, &mut line);
                        let Some(&e) = s.get(i) else { break };
                        match e {
                            // A line continuation: the newline and the next
                            // line's indentation are not part of the text.
                            '\n' => {
                                while i < s.len() && s[i].is_whitespace() {
                                    skip(&mut i, &mut code, &mut line);
                                }
                                continue;
                            }
                            'n' => text.push('\n'),
                            't' => text.push('\t'),
                            '"' | '\\' | '\'' => text.push(e),
                            other => {
                                text.push('\\');
                                text.push(other);
                            }
                        }
                        skip(&mut i, &mut code, &mut line);
                    }
                    other => {
                        text.push(other);
                        skip(&mut i, &mut code, &mut line);
                    }
                }
            }
            literals.push(Literal { line: start, end_line: line, text });
        } else if c == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{…}'.
            let end = (i + 3..s.len()).find(|&j| s[j] == '\'').unwrap_or(s.len() - 1);
            code.push('\'');
            code.extend(std::iter::repeat_n(' ', end - i - 1));
            code.push('\'');
            i = end + 1;
        } else if c == '\'' && s.get(i + 2) == Some(&'\'') {
            // A char literal: 'x', '"'.
            code.push_str("' '");
            i += 3;
        } else {
            // Code, including lifetimes and labels ('a).
            if c == '\n' {
                line += 1;
            }
            code.push(c);
            i += 1;
        }
    }
    Scanned { code, literals }
}

/// A finding: file, line, rule, what is there.
#[derive(Debug, PartialEq)]
struct Finding {
    file: String,
    line: usize,
    rule: Rule,
    text: String,
}

/// Words of `code` with their byte offsets.
fn words(code: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = None;
    code.char_indices().chain(std::iter::once((code.len(), ' '))).filter_map(move |(i, c)| {
        match (start, is_ident(c)) {
            (None, true) => {
                start = Some(i);
                None
            }
            (Some(s), false) => {
                start = None;
                Some((s, &code[s..i]))
            }
            _ => None,
        }
    })
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].bytes().filter(|b| *b == b'\n').count() + 1
}

fn line_text(code: &str, line: usize) -> &str {
    code.lines().nth(line - 1).unwrap_or("").trim()
}

fn is_use_line(line: &str) -> bool {
    let line = line.trim_start();
    let line = line.strip_prefix("pub(crate) ").or_else(|| line.strip_prefix("pub ")).unwrap_or(line);
    line.starts_with("use ") || line.starts_with("extern crate ")
}

/// Lines naming a crate for which `is_crate(word)` holds: as the start of a
/// path (`word::`), or anywhere in a `use` line. Not after `.` (a method)
/// nor after `::` (an item of another path).
fn crate_mentions(code: &str, is_crate: impl Fn(&str) -> bool) -> Vec<usize> {
    let mut lines: Vec<usize> = words(code)
        .filter(|(at, w)| {
            if !is_crate(w) {
                return false;
            }
            let before = code[..*at].trim_end();
            let in_other_path = before.strip_suffix("::").is_some_and(|b| b.ends_with(is_ident));
            if before.ends_with('.') || in_other_path {
                return false;
            }
            let after = code[at + w.len()..].trim_start();
            after.starts_with("::") || is_use_line(line_text(code, line_of(code, *at)))
        })
        .map(|(at, _)| line_of(code, at))
        .collect();
    lines.dedup();
    lines
}

/// `(line, module)` for every `crate::module` path, and every module of a
/// grouped `use crate::{a::…, b, …}`.
fn crate_modules(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (at, w) in words(code) {
        if w != "crate" {
            continue;
        }
        let rest = &code[at + w.len()..];
        let Some(rest) = rest.trim_start().strip_prefix("::") else {
            continue;
        };
        let rest = rest.trim_start();
        let base = code.len() - rest.len();
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: after `{` or a `,` at depth 1.
            let mut depth = 1;
            let mut expect_name = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if expect_name && depth == 1 && is_ident(c) => {
                        expect_name = false;
                        let name: String = group[j..].chars().take_while(|c| is_ident(*c)).collect();
                        found.push((line_of(code, base + 1 + j), name));
                    }
                    c if c.is_whitespace() => {}
                    _ if depth == 1 => expect_name = false,
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                found.push((line_of(code, base), name));
            }
        }
    }
    found
}

/// `word` in `text` with no identifier character on either side.
fn find_word(text: &str, word: &str) -> Option<usize> {
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Whether a literal contains the start of an SQL statement.
fn has_sql_statement(text: &str) -> bool {
    const PHRASES: [&str; 6] = ["SELECT ", "INSERT INTO", "DELETE FROM", "CREATE ", "ALTER ", "COPY "];
    const WORDS: [&str; 3] = ["BEGIN", "COMMIT", "ROLLBACK"];
    let starts_word = |i: usize| !text[..i].chars().next_back().is_some_and(is_ident);
    let phrase = PHRASES.iter().any(|p| text.match_indices(p).any(|(i, _)| starts_word(i)));
    let update_set = text.match_indices("UPDATE ").any(|(i, _)| {
        let rest = &text[i + "UPDATE ".len()..];
        starts_word(i) && rest.trim_start().starts_with(is_ident) && find_word(rest, "SET").is_some()
    });
    phrase || update_set || WORDS.iter().any(|w| find_word(text, w).is_some())
}

/// Whether a literal is one whole statement (not a fragment).
fn is_whole_statement(text: &str) -> bool {
    const STARTS: [&str; 9] =
        ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "MERGE", "COPY", "CREATE", "ALTER"];
    let t = text.trim_start();
    STARTS.iter().any(|k| t.strip_prefix(k).is_some_and(|r| r.starts_with(char::is_whitespace)))
}

fn under(file: &str, dir: &str) -> bool {
    file.starts_with(dir)
}

/// The modules above a layer, which it must not import.
fn above(file: &str) -> &'static [&'static str] {
    if under(file, "src/store/") {
        &["api", "service", "cache", "telemetry", "app"]
    } else if under(file, "src/domain/") {
        &["api", "service", "store", "cache", "telemetry", "app"]
    } else if under(file, "src/service/") {
        &["api", "app", "cache"]
    } else if under(file, "src/cache/") {
        &["api", "app", "store", "telemetry"]
    } else {
        &[]
    }
}

fn shorten(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("\"{}…\"", one_line.chars().take(80).collect::<String>())
    } else {
        format!("\"{one_line}\"")
    }
}

/// The findings of one file, `file` being its path from the crate root.
fn check(file: &str, src: &str) -> Vec<Finding> {
    let scanned = scan(src);
    let code = &scanned.code;
    let source_line = |n: usize| src.lines().nth(n - 1).unwrap_or("").trim().to_owned();
    let mut out = Vec::new();
    let mut add = |line: usize, rule: Rule, text: String| {
        out.push(Finding { file: file.to_owned(), line, rule, text });
    };

    let edge = under(file, "src/api/") || ["src/main.rs", "src/app.rs", "src/lib.rs"].contains(&file);
    if !edge {
        let grpc =
            |w: &str| w == "tonic" || w == "prost" || w.starts_with("tonic_") || w.starts_with("prost_");
        for line in crate_mentions(code, grpc) {
            add(line, Rule::EdgeOnly, source_line(line));
        }
    }
    if under(file, "src/domain/") {
        let driver = |w: &str| matches!(w, "tokio_postgres" | "postgres_types" | "deadpool_postgres");
        for line in crate_mentions(code, driver) {
            add(line, Rule::DomainNoDriver, source_line(line));
        }
    }
    if !under(file, "src/cache/") {
        for line in crate_mentions(code, |w| w == "redis" || w == "deadpool_redis") {
            add(line, Rule::RedisInCacheOnly, source_line(line));
        }
    }
    let forbidden = above(file);
    for (line, module) in crate_modules(code) {
        if forbidden.contains(&module.as_str()) {
            add(line, Rule::NoUpwardImport, format!("crate::{module} in: {}", source_line(line)));
        }
    }
    for lit in &scanned.literals {
        if !under(file, "src/store/") {
            if has_sql_statement(&lit.text) {
                add(lit.line, Rule::SqlOutsideStore, shorten(&lit.text));
            }
        } else if is_whole_statement(&lit.text)
            && !lit.text.contains('{')
            && (lit.end_line > lit.line || lit.text.chars().count() > 100)
        {
            add(lit.line, Rule::SqlInSqlFiles, shorten(&lit.text));
        }
    }
    out.retain(|f| !ALLOWED.iter().any(|(file, rule, _)| *file == f.file && *rule == f.rule));
    out.sort_by(|a, b| (a.line, a.rule.name()).cmp(&(b.line, b.rule.name())));
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layering_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 20, "src/ was not found from {}", root.display());
    let mut findings = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let src = fs::read_to_string(path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        findings.extend(check(&rel, &src));
    }
    for (file, _, why) in ALLOWED {
        assert!(
            !why.is_empty() && root.join(file).exists(),
            "allow-list entry {file}: stale or without reason"
        );
    }
    if findings.is_empty() {
        return;
    }
    let mut report = format!("{} tidy finding(s):\n", findings.len());
    for f in &findings {
        report.push_str(&format!("{}:{}: {}: {}\n", f.file, f.line, f.rule.name(), f.text));
    }
    let mut rules: Vec<Rule> = findings.iter().map(|f| f.rule).collect();
    rules.sort_by_key(|r| r.name());
    rules.dedup();
    report.push_str("\nrules (tests/it/tidy.rs explains each):\n");
    for r in rules {
        report.push_str(&format!("  {}: {}\n", r.name(), r.meaning()));
    }
    panic!("{report}");
}

// The scanner and the rules on small inputs.

fn rules_of(file: &str, src: &str) -> Vec<(usize, &'static str)> {
    check(file, src).into_iter().map(|f| (f.line, f.rule.name())).collect()
}

#[test]
fn tidy_scanner_tells_code_from_comments_and_literals() {
    let src = r##"
// use tonic::Status; SELECT * FROM jobs
/* tonic::Code /* nested */ prost::Message */
let url = "http://x.example // not a comment";
let q = '"'; let e = '\''; fn f<'a>(x: &'a str) {}
let raw = r#"SELECT "id" FROM jobs"#;
let s = "a \"quoted\" \
         SELECT 1";
let b = br"COPY t";
"##;
    let scanned = scan(src);
    assert!(!scanned.code.contains("tonic") && !scanned.code.contains("SELECT"), "{}", scanned.code);
    assert_eq!(scanned.code.lines().count(), src.lines().count());
    let texts: Vec<(usize, &str)> = scanned.literals.iter().map(|l| (l.line, l.text.as_str())).collect();
    assert_eq!(
        texts,
        [
            (4, "http://x.example // not a comment"),
            (6, "SELECT \"id\" FROM jobs"),
            (7, "a \"quoted\" SELECT 1"),
            (9, "COPY t"),
        ]
    );
    assert_eq!(scanned.literals[2].end_line, 8);
}

#[test]
fn tidy_rules_on_examples() {
    // tonic/prost: paths and use lines, not look-alike identifiers or text.
    let src = "use tonic::Status;\nlet b = x.with_tonic();\nlet m = \"tonic::Code\";\n\
               fn f() -> prost_types::Timestamp { todo!() }\nuse {\n    prost::Message,\n};\n";
    assert_eq!(rules_of("src/auth.rs", src), [(1, "edge-only"), (4, "edge-only"), (6, "edge-only")]);
    assert!(rules_of("src/api/jobs.rs", src).is_empty());
    assert!(rules_of("src/app.rs", src).is_empty());
    // SQL text outside the store; words, not substrings.
    let src = "let a = \"SELECT id FROM jobs\";\nlet b = \"READ COMMITTED\";\nlet c = \"CREATE\";\n\
               let d = \"UPDATE jobs SET x = 1\";\nlet e = \"COMMIT\";\nlet f = \"UPDATE the row\";\n";
    assert_eq!(
        rules_of("src/service/write.rs", src),
        [(1, "sql-outside-store"), (4, "sql-outside-store"), (5, "sql-outside-store")]
    );
    // Upward imports, grouped or not.
    let src = "use crate::{\n    error::Error,\n    telemetry::current_trace_id,\n};\nfn f() { crate::api::x(); }\n";
    assert_eq!(rules_of("src/store/x.rs", src), [(3, "no-upward-import"), (5, "no-upward-import")]);
    assert_eq!(rules_of("src/domain/x.rs", "use tokio_postgres::Row;\n"), [(1, "domain-no-driver")]);
    // The cache plugs into the service, not the other way round; Redis stays in the cache.
    let src = "use crate::cache::RedisCache;\nuse deadpool_redis::Pool;\nlet k = \"redis::cmd\";\n";
    assert_eq!(rules_of("src/service/read.rs", src), [(1, "no-upward-import"), (2, "redis-in-cache-only")]);
    let src = "use crate::{service::ReadCache, store::Tx};\nuse redis::Script;\n";
    assert_eq!(rules_of("src/cache/mod.rs", src), [(1, "no-upward-import")]);
    // Statements in the store: long or multi-line ones belong in .sql files;
    // format! templates and fragments do not.
    let long = format!("let q = \"SELECT {} FROM jobs\";\n", "a, ".repeat(40).trim_end_matches(", "));
    let src = format!(
        "{long}let m = \"INSERT INTO t (a) \\\n    VALUES ($1)\";\nlet f = \"SELECT {{}} FROM {{}} WHERE tenant_id = $1 \\\n AND id = $2\";\n\
         let w = \" WHERE a = $1 AND b = $2 AND c = $3 AND d = $4 AND e = $5 AND f = $6 AND g = $7 AND h = $8 \";\n\
         let s = \"SELECT 1\";\n"
    );
    assert_eq!(rules_of("src/store/x.rs", &src), [(1, "sql-in-sql-files"), (2, "sql-in-sql-files")]);
}
