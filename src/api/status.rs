//! The one mapping from [`Error`] to a gRPC status with google.rpc details.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

pub const DOMAIN: &str = "bi.data.v1";

/// At most this many field violations in one answer (see `to_status`).
pub const MAX_VIOLATIONS: usize = 20;
/// At most this many bytes of a violation's field or description.
const MAX_VIOLATION_BYTES: usize = 100;

/// Cuts `s` to at most `max` bytes, at a character boundary, marking the cut.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

fn with_reason(code: Code, reason: &str, message: String) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, DOMAIN, HashMap::new()))
}

pub fn to_status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(mut violations) => {
            // Bounded: trailers over 16 KiB are refused by grpcio (and others),
            // which would turn the caller's INVALID_ARGUMENT into an error of
            // its own. The first MAX_VIOLATIONS are listed, each cut to
            // MAX_VIOLATION_BYTES, and the message says how many were left out.
            let left_out = violations.len().saturating_sub(MAX_VIOLATIONS);
            violations.truncate(MAX_VIOLATIONS);
            for v in &mut violations {
                cut(&mut v.field, MAX_VIOLATION_BYTES);
                cut(&mut v.description, MAX_VIOLATION_BYTES);
            }
            let mut message = violations
                .iter()
                .map(|v| if v.description.is_empty() { v.field.clone() } else { v.description.clone() })
                .collect::<Vec<_>>()
                .join("; ");
            if left_out > 0 {
                message.push_str(&format!("; and {left_out} more violations not listed"));
            }
            let mut details = ErrorDetails::new();
            for v in violations {
                details.add_bad_request_violation(v.field, v.description);
            }
            details.set_error_info("INVALID_ARGUMENT", DOMAIN, HashMap::new());
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        Error::NotFound { entity, id } => {
            let mut details = ErrorDetails::with_resource_info(entity, id.clone(), "", "not found");
            details.set_error_info("NOT_FOUND", DOMAIN, HashMap::new());
            Status::with_error_details(Code::NotFound, format!("{entity} '{id}' not found"), details)
        }
        Error::AlreadyExists { reason, message } => with_reason(Code::AlreadyExists, reason, message),
        Error::Unique { .. } => {
            with_reason(Code::AlreadyExists, "ALREADY_EXISTS", "the resource already exists".into())
        }
        Error::IllegalTransition { entity, field, from, to, allowed } => {
            let message = format!(
                "{entity}.{field} cannot move from {from} to {to}; allowed: {}",
                if allowed.is_empty() { "none (final state)".to_owned() } else { allowed.join(", ") }
            );
            let metadata = HashMap::from([
                ("field".to_owned(), field.to_owned()),
                ("from".to_owned(), from.clone()),
                ("to".to_owned(), to),
                ("allowed".to_owned(), allowed.join(",")),
            ]);
            let mut details = ErrorDetails::with_error_info("ILLEGAL_TRANSITION", DOMAIN, metadata);
            for next in allowed.iter() {
                details.add_precondition_failure_violation(
                    "ALLOWED_TRANSITION",
                    format!("{entity}.{field}"),
                    format!("{from} -> {next}"),
                );
            }
            Status::with_error_details(Code::FailedPrecondition, message, details)
        }
        Error::FailedPrecondition { reason, message } => {
            with_reason(Code::FailedPrecondition, reason, message)
        }
        Error::Aborted { reason, message } => with_reason(Code::Aborted, reason, message),
        Error::PermissionDenied { reason, message } => with_reason(Code::PermissionDenied, reason, message),
        Error::ResourceExhausted { reason, message } => with_reason(Code::ResourceExhausted, reason, message),
        Error::DeadlineExceeded => with_reason(
            Code::DeadlineExceeded,
            "DEADLINE_EXCEEDED",
            "the call's deadline or the statement timeout was exceeded".into(),
        ),
        Error::Unavailable(message) => with_reason(Code::Unavailable, "UNAVAILABLE", message),
        Error::Internal(detail) | Error::Startup(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error")
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn illegal_transitions_name_the_allowed_next_states() {
        let s = to_status(Error::IllegalTransition {
            entity: "opportunity",
            field: "status",
            from: "IDENTIFIED".into(),
            to: "WON".into(),
            allowed: &["QUALIFIED", "LOST"],
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "ILLEGAL_TRANSITION");
        assert_eq!(info.metadata.get("allowed").map(String::as_str), Some("QUALIFIED,LOST"));
        let pre = s.get_details_precondition_failure().expect("precondition failure");
        let next: Vec<&str> = pre.violations.iter().map(|v| v.description.as_str()).collect();
        assert_eq!(next, ["IDENTIFIED -> QUALIFIED", "IDENTIFIED -> LOST"]);
    }

    #[test]
    fn violations_are_bounded_and_say_how_many_were_left_out() {
        let many = (0..10_000)
            .map(|i| {
                crate::error::FieldViolation::new(
                    "update_mask",
                    format!("unknown path '{}{i}'", "p".repeat(300)),
                )
            })
            .collect();
        let s = to_status(Error::InvalidArgument(many));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().ends_with("; and 9980 more violations not listed"), "{}", s.message());
        let listed = s.get_details_bad_request().expect("bad request").field_violations;
        assert_eq!(listed.len(), MAX_VIOLATIONS);
        assert!(listed.iter().all(|v| v.description.len() <= MAX_VIOLATION_BYTES + '…'.len_utf8()));
        // What goes on the wire as trailers: well under grpcio's 16 KiB.
        let mut headers = http::HeaderMap::new();
        s.add_header(&mut headers).unwrap();
        let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        assert!(bytes < 12 * 1024, "{bytes} bytes of trailers");
    }
}
