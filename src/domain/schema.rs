//! Declarative description of a resource: its fields, their SQL columns and
//! kinds, and what callers may filter and order on. The generic mechanisms
//! (filter compiler, keyset pagination, field masks, audit) read only this.

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
    /// `jsonb` holding a google.protobuf.Struct; `field:key` tests for a key,
    /// `field.key = value` compares a member.
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
    /// Name as callers write it in filters, order_by and field masks.
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
}

impl Field {
    /// A plain, nullable, filterable, sortable, mutable field.
    pub const fn new(name: &'static str, kind: FieldKind) -> Self {
        Field { name, column: name, kind, nullable: true, filterable: true, sortable: true, mutable: true }
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
}

/// A resource type: a table and its fields.
#[derive(Debug)]
pub struct Resource {
    /// Singular name used in audit events and error details, e.g. `job`.
    pub name: &'static str,
    /// SQL table (static identifier).
    pub table: &'static str,
    /// Every field, in the order rows are selected and decoded.
    pub fields: &'static [Field],
    /// Has `delete_time` and supports soft delete / undelete.
    pub soft_delete: bool,
    /// Default ordering, in `order_by` syntax.
    pub default_order: &'static str,
}

impl Resource {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}
