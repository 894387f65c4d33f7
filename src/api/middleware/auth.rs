//! Authentication and authorization as one tower layer in front of every
//! service: the credentials a request carries are checked here (never in
//! handlers) against the method's required role, and the caller's identity
//! travels to handlers as an [`AuthContext`] request extension. Token and
//! role logic is `crate::auth`; this file reads the headers and turns an
//! [`AuthError`] into the status the caller gets.

use std::task::{Context, Poll};

use tonic::Status;

use crate::auth::{AuthContext, AuthError, AuthMode, required_role};

/// The status a refused call is answered with.
pub fn status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::PermissionDenied(m) => Status::permission_denied(m),
    }
}

/// Checks a request's headers; returns the caller (`None` for methods
/// without authentication: health, reflection) or why it is refused.
pub fn authenticate(
    mode: &AuthMode,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Option<AuthContext>, AuthError> {
    let Some(needed) = required_role(path) else {
        return Ok(None);
    };
    let ctx = match mode {
        AuthMode::Jwt(keys) => {
            let value = headers
                .get(http::header::AUTHORIZATION)
                .ok_or_else(|| AuthError::unauthenticated("missing authorization: Bearer <token>"))?;
            let value =
                value.to_str().map_err(|_| AuthError::unauthenticated("authorization header is not text"))?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| AuthError::unauthenticated("authorization must be 'Bearer <token>'"))?;
            keys.verify(token.trim())?
        }
        AuthMode::InsecureDev => {
            let tenant = headers.get("x-tenant-id").and_then(|v| v.to_str().ok()).ok_or_else(|| {
                AuthError::unauthenticated("missing x-tenant-id header (insecure-dev mode)")
            })?;
            let tenant_id = crate::domain::value::canonical_uuid(tenant)
                .ok_or_else(|| AuthError::unauthenticated("x-tenant-id is not a UUID"))?;
            AuthContext::insecure_dev(tenant_id)
        }
    };
    ctx.require(needed)?;
    Ok(Some(ctx))
}

/// Tower layer applying [`authenticate`] to every request.
#[derive(Clone)]
pub struct AuthLayer {
    mode: AuthMode,
}

impl AuthLayer {
    pub fn new(mode: AuthMode) -> Self {
        AuthLayer { mode }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, mode: self.mode.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    mode: AuthMode,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authenticate(&self.mode, req.uri().path(), req.headers()) {
            Ok(ctx) => {
                if let Some(ctx) = ctx {
                    req.extensions_mut().insert(ctx);
                }
                futures_util::future::Either::Left(self.inner.call(req))
            }
            Err(e) => futures_util::future::Either::Right(std::future::ready(Ok(status(e).into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tonic::Code;
    use uuid::Uuid;

    use super::*;
    use crate::auth::{Role, TokenKeys};

    const GET: &str = "/bi.data.v1.JobService/GetJob";
    const CREATE: &str = "/bi.data.v1.JobService/CreateJob";

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    /// The code and message a call is refused with.
    fn refused(mode: &AuthMode, path: &str, h: &http::HeaderMap) -> (Code, String) {
        let s = status(authenticate(mode, path, h).unwrap_err());
        (s.code(), s.message().to_owned())
    }

    #[test]
    fn refusals_keep_their_codes_and_messages() {
        let keys = Arc::new(TokenKeys::new("s3cret"));
        let jwt = AuthMode::Jwt(keys.clone());
        let reader = keys.mint(Uuid::new_v4(), &[Role::Reader], "me", Duration::from_secs(60));
        let cases = [
            (headers(&[]), GET, Code::Unauthenticated, "missing authorization: Bearer <token>"),
            (
                headers(&[("authorization", "Basic abc")]),
                GET,
                Code::Unauthenticated,
                "authorization must be 'Bearer <token>'",
            ),
            (headers(&[("authorization", "Bearer x.y.z")]), GET, Code::Unauthenticated, "token malformed"),
            (
                headers(&[("authorization", &format!("Bearer {reader}"))]),
                CREATE,
                Code::PermissionDenied,
                "this method needs the writer role",
            ),
        ];
        for (h, path, code, message) in cases {
            assert_eq!(refused(&jwt, path, &h), (code, message.to_owned()), "{h:?} {path}");
        }
        let h = headers(&[("authorization", &format!("bearer {reader}"))]);
        assert_eq!(authenticate(&jwt, GET, &h).unwrap().unwrap().roles, vec![Role::Reader]);
        // Health and reflection need no credentials.
        assert!(authenticate(&jwt, "/grpc.health.v1.Health/Check", &headers(&[])).unwrap().is_none());
    }

    #[test]
    fn insecure_dev_takes_the_tenant_header() {
        let mode = AuthMode::InsecureDev;
        assert_eq!(
            refused(&mode, GET, &headers(&[])),
            (Code::Unauthenticated, "missing x-tenant-id header (insecure-dev mode)".to_owned())
        );
        assert_eq!(
            refused(&mode, GET, &headers(&[("x-tenant-id", "nope")])),
            (Code::Unauthenticated, "x-tenant-id is not a UUID".to_owned())
        );
        let t = Uuid::new_v4();
        let ctx = authenticate(&mode, CREATE, &headers(&[("x-tenant-id", &t.to_string())])).unwrap().unwrap();
        assert_eq!((ctx.tenant_id, ctx.subject.as_str()), (t, "insecure-dev"));
        assert!(ctx.has(Role::Admin));
    }
}
