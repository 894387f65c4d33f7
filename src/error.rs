//! The one error type of the domain and store layers. Only `api::status`
//! turns it into a gRPC status; internals (SQL, driver messages) stay in
//! `Internal` and go to the log, never to the caller.

/// One invalid field of a request (google.rpc.BadRequest.FieldViolation).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation { field: field.into(), description: description.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{entity} '{id}' not found")]
    NotFound { entity: &'static str, id: String },
    #[error("{message}")]
    AlreadyExists { reason: &'static str, message: String },
    /// A unique constraint of the store, before the use case names it with
    /// the resource's declared reason (`Resource::unique_violation`).
    #[error("unique constraint {constraint} violated")]
    Unique { constraint: String },
    #[error("{message}")]
    FailedPrecondition { reason: &'static str, message: String },
    /// A move of a declared state machine that its transitions do not allow.
    #[error("{entity}.{field} cannot move from {from} to {to}")]
    IllegalTransition {
        entity: &'static str,
        field: &'static str,
        from: String,
        to: String,
        allowed: &'static [&'static str],
    },
    #[error("{message}")]
    Aborted { reason: &'static str, message: String },
    /// The caller may not do this to this record (e.g. delete another's).
    #[error("{message}")]
    PermissionDenied { reason: &'static str, message: String },
    /// A size limit was passed (an upload's content).
    #[error("{message}")]
    ResourceExhausted { reason: &'static str, message: String },
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("{0}")]
    Unavailable(String),
    /// The process cannot start: one line saying what is wrong and what to do.
    #[error("{0}")]
    Startup(String),
    /// Logged in full where it is created; the caller sees an opaque message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
