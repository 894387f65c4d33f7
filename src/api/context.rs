//! Per-call context: the authenticated caller, the deadline, request and
//! trace ids and the method's name, turned into a store [`Scope`].

use std::{sync::Arc, time::Duration};

use tonic::{Request, Status};

use super::middleware::rpc::RpcName;
use crate::{
    auth::AuthContext,
    store::{
        Scope, Store,
        replica::{CallLsn, Lsn},
    },
};

/// Request header: the WAL position (`16/B374D848`) the call's reads must
/// see, typically an `x-bi-commit-lsn` a write answered with.
pub const MIN_LSN_HEADER: &str = "x-bi-min-lsn";
/// Response header of a call that committed a write (with a replica
/// configured): the WAL position of its commit.
pub const COMMIT_LSN_HEADER: &str = "x-bi-commit-lsn";

/// Parses a `grpc-timeout` header value (`100m`, `5S`, `1H`...).
pub fn grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The trace id of a W3C `traceparent` header, if well-formed.
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
        .then(|| id.to_owned())
}

/// Builds the scope of a call. `request_id` is the request's own field when
/// it has one; else the `x-request-id` header is used.
pub fn scope<T>(store: &Store, req: &Request<T>, request_id: &str) -> Result<(Scope, AuthContext), Status> {
    let auth = req
        .extensions()
        .get::<AuthContext>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no credentials"))?;
    let md = req.metadata();
    let header = |k: &str| md.get(k).and_then(|v| v.to_str().ok());
    let deadline = header("grpc-timeout").and_then(grpc_timeout);
    // The RPC layer put the call's positions there (and answers the commit
    // position); a scope built outside it gets its own.
    let lsn = req.extensions().get::<Arc<CallLsn>>().cloned().unwrap_or_default();
    if let Some(v) = md.get(MIN_LSN_HEADER) {
        let min = v.to_str().ok().and_then(Lsn::parse).ok_or_else(|| {
            Status::invalid_argument(format!("{MIN_LSN_HEADER} must be a WAL position such as 16/B374D848"))
        })?;
        lsn.require(min);
    }
    let request_id = if request_id.is_empty() {
        header("x-request-id").filter(|s| s.len() <= 64).map(str::to_owned)
    } else {
        Some(request_id.to_owned())
    };
    let scope = Scope {
        tenant: auth.tenant_id,
        actor: auth.subject.clone(),
        admin: auth.has(crate::auth::Role::Admin),
        request_id,
        // The call span's trace (the caller's, or a new one), so audit events
        // carry a trace id even when the caller sent none; the raw header
        // when no OpenTelemetry layer is installed.
        trace_id: crate::telemetry::current_trace_id().or_else(|| header("traceparent").and_then(trace_id)),
        timeout: store.timeout_for(deadline),
        deadline: deadline.map(|d| tokio::time::Instant::now() + d),
        // Put there by the RPC layer, which resolved the path once.
        rpc: req.extensions().get::<RpcName>().map(|n| n.0.clone()),
        lsn: Some(lsn),
    };
    Ok((scope, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout("10q"), None);
    }

    #[test]
    fn traceparents() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(), Some(id));
        assert_eq!(trace_id("garbage"), None);
    }
}
