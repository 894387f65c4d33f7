//! The `order_by` parameter of List methods ([AIP-132](https://google.aip.dev/132)):
//! a comma-separated list of `field [asc|desc]`, e.g. `posting_time desc, title`.
//!
//! Direction keywords are case-insensitive; field names are not. Whitespace
//! around names, directions and commas is ignored. An empty (or blank)
//! `order_by` means the resource's `default_order`. The `id` tiebreaker is
//! appended by the store, not here; naming `id` explicitly is allowed.

use crate::domain::schema::{Field, Resource};

/// Most sort keys a caller may give.
pub const MAX_KEYS: usize = 4;

/// One sort key.
#[derive(Debug, Clone, Copy)]
pub struct OrderKey {
    pub field: &'static Field,
    pub desc: bool,
}

impl PartialEq for OrderKey {
    /// Keys are equal when they name the same field (by name) in the same direction.
    fn eq(&self, other: &Self) -> bool {
        self.field.name == other.field.name && self.desc == other.desc
    }
}

impl Eq for OrderKey {}

/// An invalid `order_by`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order_by: {message}")]
pub struct OrderError {
    pub message: String,
}

fn err(message: impl Into<String>) -> OrderError {
    OrderError { message: message.into() }
}

/// Shortens caller text quoted in error messages.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

/// Parses `input` against `resource`; blank input means `resource.default_order`.
pub fn parse_order_by(resource: &Resource, input: &str) -> Result<Vec<OrderKey>, OrderError> {
    if input.trim().is_empty() {
        return parse_keys(resource, resource.default_order)
            .map_err(|e| err(format!("the default order of {} is invalid: {}", resource.name, e.message)));
    }
    parse_keys(resource, input)
}

fn parse_keys(resource: &Resource, input: &str) -> Result<Vec<OrderKey>, OrderError> {
    let mut keys: Vec<OrderKey> = Vec::new();
    for part in input.split(',') {
        let mut words = part.split_whitespace();
        let Some(name) = words.next() else {
            return Err(err("empty sort key: expected a field name between commas"));
        };
        let direction = words.next();
        let desc = match direction {
            None => false,
            Some(d) if d.eq_ignore_ascii_case("asc") => false,
            Some(d) if d.eq_ignore_ascii_case("desc") => true,
            Some(other) => {
                return Err(err(format!(
                    "expected 'asc', 'desc' or ',' after '{}', found '{}'",
                    shorten(name),
                    shorten(other)
                )));
            }
        };
        if let Some(extra) = words.next() {
            let before = format!("{name} {}", direction.unwrap_or_default());
            return Err(err(format!(
                "expected ',' after '{}', found '{}'",
                shorten(&before),
                shorten(extra)
            )));
        }
        let field = resource
            .field(name)
            .ok_or_else(|| err(format!("unknown field '{}' for {}", shorten(name), resource.name)))?;
        if !field.sortable {
            return Err(err(format!("field '{name}' cannot be used to sort")));
        }
        if keys.iter().any(|k| k.field.name == field.name) {
            return Err(err(format!("field '{name}' appears more than once")));
        }
        if keys.len() == MAX_KEYS {
            return Err(err(format!("at most {MAX_KEYS} sort keys are allowed")));
        }
        keys.push(OrderKey { field, desc });
    }
    Ok(keys)
}

/// Canonical text of `keys` (`create_time desc, title asc`), to bind page
/// tokens to an order. Always spells out the direction.
pub fn canonical(keys: &[OrderKey]) -> String {
    keys.iter()
        .map(|k| format!("{} {}", k.field.name, if k.desc { "desc" } else { "asc" }))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schema::FieldKind;

    static FIELDS: &[Field] = &[
        Field::new("id", FieldKind::Uuid).not_null(),
        Field::new("title", FieldKind::Text),
        Field::new("create_time", FieldKind::Timestamp).not_null(),
        Field::new("salary_min", FieldKind::Int),
        Field::new("remote", FieldKind::Bool),
        Field::new("score", FieldKind::Float),
        Field::new("description", FieldKind::Text).unsortable(),
    ];

    static RES: Resource = Resource {
        name: "job",
        table: "jobs",
        fields: FIELDS,
        soft_delete: true,
        default_order: "create_time desc",
        ..Resource::BASE
    };

    fn keys(input: &str) -> Vec<(&'static str, bool)> {
        match parse_order_by(&RES, input) {
            Ok(k) => k.iter().map(|k| (k.field.name, k.desc)).collect(),
            Err(e) => panic!("{input:?}: {e}"),
        }
    }

    fn error(input: &str) -> String {
        match parse_order_by(&RES, input) {
            Err(e) => e.to_string(),
            Ok(k) => panic!("{input:?} parsed as {k:?}"),
        }
    }

    #[test]
    fn default_order() {
        assert_eq!(keys(""), [("create_time", true)]);
        assert_eq!(keys("  \t"), [("create_time", true)]);
    }

    #[test]
    fn directions() {
        assert_eq!(keys("title"), [("title", false)]);
        assert_eq!(keys("title asc"), [("title", false)]);
        assert_eq!(keys("title DESC"), [("title", true)]);
        assert_eq!(
            keys(" salary_min  Desc ,title,  create_time asc "),
            [("salary_min", true), ("title", false), ("create_time", false)]
        );
        assert_eq!(keys("title desc,id"), [("title", true), ("id", false)]);
    }

    #[test]
    fn unknown_field() {
        assert_eq!(error("bogus desc"), "order_by: unknown field 'bogus' for job");
        assert_eq!(error("Title"), "order_by: unknown field 'Title' for job");
        assert_eq!(error("title;drop"), "order_by: unknown field 'title;drop' for job");
    }

    #[test]
    fn unsortable() {
        assert_eq!(error("description"), "order_by: field 'description' cannot be used to sort");
    }

    #[test]
    fn duplicate() {
        assert_eq!(error("title, title desc"), "order_by: field 'title' appears more than once");
    }

    #[test]
    fn too_many() {
        assert_eq!(keys("title, salary_min, remote, score").len(), 4);
        assert_eq!(
            error("title, salary_min, remote, score, create_time"),
            "order_by: at most 4 sort keys are allowed"
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(
            error("title sideways"),
            "order_by: expected 'asc', 'desc' or ',' after 'title', found 'sideways'"
        );
        assert_eq!(error("title desc x"), "order_by: expected ',' after 'title desc', found 'x'");
        assert_eq!(error("title,,id"), "order_by: empty sort key: expected a field name between commas");
        assert_eq!(error("title,"), "order_by: empty sort key: expected a field name between commas");
        assert_eq!(error(","), "order_by: empty sort key: expected a field name between commas");
    }

    #[test]
    fn bad_default_is_reported() {
        static BAD: Resource = Resource {
            name: "thing",
            table: "things",
            fields: FIELDS,
            soft_delete: false,
            default_order: "nope",
            ..Resource::BASE
        };
        let e = parse_order_by(&BAD, "").map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("order_by: the default order of thing is invalid: unknown field 'nope' for thing".into())
        );
    }

    #[test]
    fn canonical_form() {
        let k = parse_order_by(&RES, "title DESC , salary_min").unwrap_or_default();
        assert_eq!(canonical(&k), "title desc, salary_min asc");
        assert_eq!(canonical(&[]), "");
        let again = parse_order_by(&RES, &canonical(&k)).unwrap_or_default();
        assert_eq!(again, k);
    }
}
