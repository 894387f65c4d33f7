//! Declarative description of a resource: its fields, their SQL columns and
//! kinds, what callers may filter and order on, and the behaviour the
//! generic use cases read from it (rules, transitions, relations, unique
//! constraints, search, import, counters, sequences, views). A new resource
//! is one `static` of [`Resource`]; the service, store and edge read only
//! this.

use super::record::Fields;
use crate::error::FieldViolation;

/// The type of a field, as the filter language and the row codec see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// UUID, written as a string by callers.
    Uuid,
    /// Free text.
    Text,
    /// 64-bit integer.
    Int,
    /// Double precision float.
    Float,
    /// Boolean.
    Bool,
    /// `timestamptz`; RFC 3339 in filters.
    Timestamp,
    /// Enum stored as its short name (`FULL_TIME`); callers may also use the
    /// proto name with its prefix (`JOB_TYPE_FULL_TIME`).
    Enum(&'static EnumDef),
    /// `text[]`; `field:"x"` tests membership.
    TextArray,
    /// `jsonb` holding a google.protobuf.Struct (or a list of messages);
    /// `field:key` tests for a key, `field.key = value` compares a member.
    Json,
}

/// An enum's accepted values (short names, without the proto prefix).
#[derive(Debug, PartialEq, Eq)]
pub struct EnumDef {
    /// Proto prefix including the trailing underscore, e.g. `JOB_TYPE_`.
    pub prefix: &'static str,
    /// Short names in proto order, starting at value 1.
    pub values: &'static [&'static str],
}

impl EnumDef {
    /// Accepts `FULL_TIME` or `JOB_TYPE_FULL_TIME`; returns the short name.
    pub fn parse(&self, s: &str) -> Option<&'static str> {
        let short = s.strip_prefix(self.prefix).unwrap_or(s);
        self.values.iter().copied().find(|v| *v == short)
    }

    /// Short name of a proto enum number (1-based); `None` for 0/unknown.
    pub fn name_of(&self, n: i32) -> Option<&'static str> {
        usize::try_from(n).ok().and_then(|i| i.checked_sub(1)).and_then(|i| self.values.get(i).copied())
    }

    /// Proto enum number of a short name (0 when unknown).
    pub fn number_of(&self, short: &str) -> i32 {
        self.values.iter().position(|v| *v == short).map_or(0, |i| i as i32 + 1)
    }
}

/// One field of a resource.
#[derive(Debug)]
pub struct Field {
    /// Name as callers write it in filters, order_by and field masks (and
    /// the proto field's name: the edge maps by it).
    pub name: &'static str,
    /// SQL column (a static identifier, never caller input).
    pub column: &'static str,
    pub kind: FieldKind,
    /// The column may hold NULL (matters for keyset pagination).
    pub nullable: bool,
    /// May appear in `filter`.
    pub filterable: bool,
    /// May appear in `order_by`.
    pub sortable: bool,
    /// May be named in an update mask (false for output-only fields).
    pub mutable: bool,
    /// Large content: not read from the database in the BASIC view.
    pub large: bool,
    /// What AnalyticsService may do with the field.
    pub analytic: Analytic,
}

/// A field's role in analytics (AnalyticsService reads only these flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Analytic {
    /// Not offered to analytics (it may still be filtered on).
    None,
    /// A numeric metric: SUM, AVG, MIN, MAX, percentiles (Int or Float).
    Measure,
    /// A group-by dimension (Text, Enum, Bool or Uuid).
    Dimension,
    /// A time axis for trends (Timestamp).
    Time,
}

impl Field {
    /// A plain, nullable, filterable, sortable, mutable field.
    pub const fn new(name: &'static str, kind: FieldKind) -> Self {
        Field {
            name,
            column: name,
            kind,
            nullable: true,
            filterable: true,
            sortable: true,
            mutable: true,
            large: false,
            analytic: Analytic::None,
        }
    }
    pub const fn column(mut self, column: &'static str) -> Self {
        self.column = column;
        self
    }
    pub const fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
    pub const fn unsortable(mut self) -> Self {
        self.sortable = false;
        self
    }
    pub const fn unfilterable(mut self) -> Self {
        self.filterable = false;
        self
    }
    pub const fn output_only(mut self) -> Self {
        self.mutable = false;
        self
    }
    /// A metric of analytics (numeric).
    pub const fn measure(mut self) -> Self {
        self.analytic = Analytic::Measure;
        self
    }
    /// A group-by dimension of analytics.
    pub const fn dimension(mut self) -> Self {
        self.analytic = Analytic::Dimension;
        self
    }
    /// A time axis of analytics' trends.
    pub const fn timeline(mut self) -> Self {
        self.analytic = Analytic::Time;
        self
    }
    /// Large content (unsortable, unfilterable, skipped by the BASIC view).
    pub const fn large(mut self) -> Self {
        self.large = true;
        self.sortable = false;
        self.filterable = false;
        self
    }

    /// Written by the server only: the id, the times it manages.
    pub fn is_system(&self) -> bool {
        matches!(self.name, "id" | "create_time" | "update_time" | "delete_time")
    }
}

/// Defaults and rules, on the complete record about to be written; the
/// previous record (on an update) is `Fields::before`.
pub type Rules = fn(&mut Fields<'_>) -> Result<(), Vec<FieldViolation>>;

fn no_rules(_: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    Ok(())
}

/// A reference field that must name a live row of `resource` in the same
/// tenant (checked on create and when the field changes).
#[derive(Debug)]
pub struct Parent {
    pub field: &'static str,
    pub resource: &'static Resource,
    /// `(own field, parent's field)` that must hold the same value: a
    /// campaign's opportunity belongs to the campaign's company.
    pub agrees: Option<(&'static str, &'static str)>,
}

impl Parent {
    pub const fn new(field: &'static str, resource: &'static Resource) -> Parent {
        Parent { field, resource, agrees: None }
    }
    /// The parent's `parent_field` equals this record's `own`.
    pub const fn agreeing(mut self, own: &'static str, parent_field: &'static str) -> Parent {
        self.agrees = Some((own, parent_field));
        self
    }
}

/// What deleting a parent does to its live children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDelete {
    /// Soft-deleted with the parent (at its delete_time) and restored with it.
    Cascade,
    /// The delete is refused while live children exist, unless it is
    /// forced: then they go (and come back) with it, as with `Cascade`.
    Restrict,
    /// Nothing happens to them (they keep the reference); a merge still
    /// moves them.
    Keep,
}

/// Rows of `resource` whose `column` references this resource.
#[derive(Debug)]
pub struct Child {
    pub resource: &'static Resource,
    pub column: &'static str,
    pub on_delete: OnDelete,
}

/// Legal moves of an enum field: `(from, allowed next states)`. A state not
/// listed as a `from` is final. Setting the initial value is free.
#[derive(Debug)]
pub struct Transitions {
    pub field: &'static str,
    pub moves: &'static [(&'static str, &'static [&'static str])],
}

impl Transitions {
    /// The states `from` may move to.
    pub fn allowed(&self, from: &str) -> &'static [&'static str] {
        self.moves.iter().find(|(f, _)| *f == from).map_or(&[], |(_, to)| to)
    }
}

/// A unique constraint and what a violation tells the caller.
#[derive(Debug)]
pub struct Unique {
    /// The constraint or unique index name in the migration.
    pub constraint: &'static str,
    /// `google.rpc.ErrorInfo.reason`.
    pub reason: &'static str,
    pub message: &'static str,
}

/// Ranked search over a resource: a generated, GIN-indexed `tsvector`
/// column (weights live in the migration), and trigram columns for the
/// typo-tolerant fallback (or, without a `tsvector`, the only ranking).
#[derive(Debug)]
pub struct SearchSpec {
    /// The `tsvector` column; `None`: trigram search only.
    pub vector: Option<&'static str>,
    /// Text search configuration (`english`).
    pub config: &'static str,
    /// Trigram (pg_trgm) columns, most important first (columns, maybe
    /// generated ones that are no field).
    pub fuzzy: &'static [&'static str],
    /// SQL function (from a migration) the query goes through before the
    /// trigram match, the one that computed the fuzzy columns: e.g. a
    /// company name's matching key.
    pub normalize: Option<&'static str>,
    /// Trigram similarity a fuzzy match needs (pg_trgm's default 0.3 when
    /// `None`); higher for short normalized keys, where shared common words
    /// would otherwise match thousands of rows.
    pub threshold: Option<f64>,
    /// Columns a `ts_headline` snippet is cut from (joined, in order; the
    /// first [`SNIPPET_SCAN`] characters); none: no snippet.
    pub snippet: &'static [&'static str],
    /// How full-text hits are ordered.
    pub ranking: Ranking,
}

/// The order of full-text hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranking {
    /// `ts_rank_cd` over every match (its cost grows with the match count).
    CoverDensity,
    /// By the best class of fields that holds every query term (title,
    /// then title with company and keywords, then anywhere), newest first
    /// within a class. Exact and bounded: each class is read newest first
    /// and stops at the page. Needs a vector that also carries each title
    /// lexeme prefixed `t:` and each title, company or keyword lexeme
    /// prefixed `h:` (`bi_job_vector`, migration V7).
    FieldClass,
}

/// Characters of text a search snippet is looked for in (`ts_headline`
/// parses everything it is given).
pub const SNIPPET_SCAN: usize = 65_536;

/// Bulk upsert: rows match existing live rows by `key`.
#[derive(Debug)]
pub struct ImportSpec {
    /// Natural key field (a partial unique index on live rows).
    pub key: &'static str,
    /// Fields an import never overwrites on an existing row.
    pub keep_on_update: &'static [&'static str],
}

/// A server-managed counter: 1 on create, +1 whenever one of `bumps_on`
/// changes (the row is locked, so no gap and no duplicate).
#[derive(Debug)]
pub struct Counter {
    pub field: &'static str,
    pub bumps_on: &'static [&'static str],
}

/// Ordered appends to a parent: `field` numbers the children of each
/// `parent` value 1, 2, 3… in commit order.
#[derive(Debug)]
pub struct Sequence {
    pub parent: &'static str,
    pub field: &'static str,
}

/// Content history: every change of the resource's content (every bump of
/// its `counter`) appends an immutable row of `resource` (the version:
/// parent, number, content type, size, SHA-256, author), whose bytes are
/// rows of `chunks` (`tenant_id, version_id, seq, data`). Text of at most
/// `inline_max` bytes is also kept in the resource's own `content` field
/// (a large one: FULL reads and search); larger or binary content lives in
/// the chunks only and is streamed.
#[derive(Debug)]
pub struct Versions {
    pub resource: &'static Resource,
    /// The version's field naming the versioned record.
    pub parent: &'static str,
    pub chunks: &'static str,
    /// Fields of the versioned resource; the version resource names its
    /// own the same (`version` is the counter's field).
    pub content: &'static str,
    pub content_type: &'static str,
    pub size: &'static str,
    pub sha256: &'static str,
    /// The version's field holding the writer (the caller's subject).
    pub author: &'static str,
    pub inline_max: usize,
}

/// Totals a parent keeps of its children, exact because they are updated
/// under the parent's row lock in the transaction appending the children:
/// `count` counts them, each `(own, child's)` pair sums a child field.
#[derive(Debug)]
pub struct Tally {
    pub child: &'static Resource,
    pub count: &'static str,
    pub sums: &'static [(&'static str, &'static str)],
}

/// Master data: records of this resource merge into a survivor, which the
/// merged ones name in `master`.
#[derive(Debug)]
pub struct MergeSpec {
    pub master: &'static str,
    /// Array fields unioned into the survivor.
    pub union: &'static [&'static str],
    /// JSON object fields merged into the survivor (the survivor's keys win).
    pub combine: &'static [&'static str],
}

/// A named, fixed subset of a resource's rows that a partial index of the
/// migration covers: rows whose `field` is one of `any_of` (live rows only
/// when the resource soft-deletes). Lists over it are written so the index
/// applies (the values are the declaration's own, written into the SQL).
#[derive(Debug)]
pub struct Subset {
    pub name: &'static str,
    pub field: &'static str,
    pub any_of: &'static [&'static str],
}

/// A resource type: a table, its fields and its declared behaviour.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// Singular name used in audit events, error details and request paths
    /// (`job`: also the resource's field name in requests).
    pub name: &'static str,
    /// SQL table (static identifier).
    pub table: &'static str,
    /// Every field, in the order rows are selected and decoded. Field 0 is `id`.
    pub fields: &'static [Field],
    /// Has `delete_time` and supports soft delete / undelete.
    pub soft_delete: bool,
    /// Default ordering, in `order_by` syntax.
    pub default_order: &'static str,
    pub rules: Rules,
    pub parents: &'static [Parent],
    pub children: &'static [Child],
    pub transitions: &'static [Transitions],
    pub unique: &'static [Unique],
    pub search: Option<&'static SearchSpec>,
    pub import: Option<&'static ImportSpec>,
    pub counter: Option<&'static Counter>,
    pub sequence: Option<&'static Sequence>,
    pub merge: Option<&'static MergeSpec>,
    pub subsets: &'static [&'static Subset],
    /// Written by the service only (no create/update through the API).
    pub read_only: bool,
    /// Field set to the creator's subject on insert; only that caller or an
    /// admin may delete or undelete the record.
    pub owner: Option<&'static str>,
    pub versions: Option<&'static Versions>,
    pub tally: Option<&'static Tally>,
}

impl Resource {
    /// Defaults for every optional part: `Resource { name, table, fields, ..Resource::BASE }`.
    pub const BASE: Resource = Resource {
        name: "",
        table: "",
        fields: &[],
        soft_delete: false,
        default_order: "create_time desc",
        rules: no_rules,
        parents: &[],
        children: &[],
        transitions: &[],
        unique: &[],
        search: None,
        import: None,
        counter: None,
        sequence: None,
        merge: None,
        subsets: &[],
        read_only: false,
        owner: None,
        versions: None,
        tally: None,
    };

    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Index of a field the declaration relies on (a typo is a programming error).
    pub fn index(&self, name: &str) -> usize {
        self.index_of(name).unwrap_or_else(|| panic!("{} declares no field {name}", self.name))
    }

    /// The reason and message for a violated unique constraint.
    pub fn unique_violation(&self, constraint: &str) -> (&'static str, &'static str) {
        self.unique
            .iter()
            .find(|u| u.constraint == constraint)
            .map_or(("ALREADY_EXISTS", "the resource already exists"), |u| (u.reason, u.message))
    }

    /// Checks the declaration's internal references (every named field
    /// exists, relations point at fields of the right kind). Run by a test
    /// over every declared resource.
    pub fn check(&self) -> Result<(), String> {
        let need = |name: &str, what: &str| {
            self.index_of(name)
                .map(|_| ())
                .ok_or_else(|| format!("{}: {what} names no field '{name}'", self.name))
        };
        if self.fields.first().map(|f| f.name) != Some("id") {
            return Err(format!("{}: field 0 must be id", self.name));
        }
        if self.soft_delete {
            need("delete_time", "soft_delete")?;
        }
        for p in self.parents {
            need(p.field, "a parent")?;
            if let Some((own, theirs)) = p.agrees {
                need(own, "a parent's agreement")?;
                p.resource.index_of(theirs).ok_or_else(|| {
                    format!("{}: parent {} has no field {theirs}", self.name, p.resource.name)
                })?;
            }
        }
        for c in self.children {
            c.resource.index_of(c.column).ok_or_else(|| {
                format!("{}: child {} has no column {}", self.name, c.resource.name, c.column)
            })?;
            if c.on_delete == OnDelete::Cascade && !c.resource.soft_delete {
                return Err(format!("{}: cascade to {} needs soft delete", self.name, c.resource.name));
            }
        }
        for t in self.transitions {
            need(t.field, "a transition")?;
            let Some(FieldKind::Enum(def)) = self.field(t.field).map(|f| f.kind) else {
                return Err(format!("{}: transitions of a non-enum field {}", self.name, t.field));
            };
            for (from, to) in t.moves {
                for s in std::iter::once(from).chain(to.iter()) {
                    if def.parse(s).is_none() {
                        return Err(format!("{}: {} has no state {s}", self.name, t.field));
                    }
                }
            }
        }
        for f in self.fields {
            let fits = match f.analytic {
                Analytic::None => true,
                Analytic::Measure => matches!(f.kind, FieldKind::Int | FieldKind::Float),
                Analytic::Dimension => {
                    matches!(f.kind, FieldKind::Text | FieldKind::Enum(_) | FieldKind::Bool | FieldKind::Uuid)
                }
                Analytic::Time => f.kind == FieldKind::Timestamp,
            };
            if !fits || (f.analytic != Analytic::None && (f.large || !f.filterable)) {
                return Err(format!("{}: {} cannot be {:?} in analytics", self.name, f.name, f.analytic));
            }
        }
        if let Some(m) = self.merge {
            need(m.master, "merge")?;
            for f in m.union.iter().chain(m.combine) {
                need(f, "merge")?;
            }
            if !self.soft_delete {
                return Err(format!("{}: merging needs soft delete", self.name));
            }
        }
        for s in self.subsets {
            need(s.field, "a subset")?;
            if let Some(FieldKind::Enum(def)) = self.field(s.field).map(|f| f.kind) {
                if let Some(bad) = s.any_of.iter().find(|v| def.parse(v).is_none()) {
                    return Err(format!("{}: subset {} names no state {bad}", self.name, s.name));
                }
            } else {
                return Err(format!("{}: subset {} needs an enum field", self.name, s.name));
            }
        }
        if let Some(i) = self.import {
            need(i.key, "import")?;
            for k in i.keep_on_update {
                need(k, "import keep_on_update")?;
            }
        }
        if let Some(c) = self.counter {
            need(c.field, "counter")?;
            for b in c.bumps_on {
                need(b, "counter bumps_on")?;
            }
        }
        if let Some(s) = self.sequence {
            need(s.parent, "sequence")?;
            need(s.field, "sequence")?;
        }
        if let Some(o) = self.owner {
            need(o, "owner")?;
        }
        if let Some(v) = self.versions {
            let Some(c) = self.counter else {
                return Err(format!("{}: versions need a counter", self.name));
            };
            for f in [v.content, v.content_type, v.size, v.sha256] {
                need(f, "versions")?;
            }
            for f in [v.parent, c.field, v.content_type, v.size, v.sha256, v.author] {
                v.resource.index_of(f).ok_or_else(|| {
                    format!("{}: versions {} have no field {f}", self.name, v.resource.name)
                })?;
            }
            if !self.field(v.content).is_some_and(|f| f.large) {
                return Err(format!("{}: versioned content {} must be large", self.name, v.content));
            }
        }
        if let Some(t) = self.tally {
            need(t.count, "tally")?;
            for (own, theirs) in t.sums {
                need(own, "tally")?;
                t.child.index_of(theirs).ok_or_else(|| {
                    format!("{}: tally child {} has no field {theirs}", self.name, t.child.name)
                })?;
            }
        }
        Ok(())
    }
}
