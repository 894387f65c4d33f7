//! Where tonic's own answers differ from the gRPC status-code conventions,
//! this layer (just inside `rpc`, so the call's span and metrics see the
//! corrected code) answers as the conventions say:
//!
//! - **The caller's deadline.** tonic's server enforces `grpc-timeout` by
//!   answering `CANCELLED` ("Timeout expired"), racing the statement timeout
//!   set to the same deadline. This layer ends the call itself [`MARGIN`]
//!   earlier with `DEADLINE_EXCEEDED`; being inside tonic's timer, it also
//!   wins when both fire on the same timer tick (tonic polls its inner
//!   future first). Dropping the handler's future cancels its statement
//!   (`store::Tx`). A stream's body is bounded by the handler (the scope's
//!   deadline), as with tonic's own timer.
//! - **An oversize message.** tonic answers a request message over the
//!   decoding limit with `OUT_OF_RANGE`; the convention is
//!   `RESOURCE_EXHAUSTED`. Unary requests are decoded before the handler
//!   runs, so the answer is trailers-only and rewritten here; handlers that
//!   read a request stream map its errors with [`inbound`].
//!
//! Malformed protobuf (tonic: `INTERNAL`) is the caller's fault and is
//! answered `INVALID_ARGUMENT` by the codec (`api::codec`).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::HeaderValue;
use tonic::{Code, Status};

use crate::{api::context::grpc_timeout, error::Error};

/// How much earlier than the caller's deadline the call is ended here.
pub const MARGIN: Duration = Duration::from_millis(2);

/// The start of tonic's message for a message over the decoding limit.
const TOO_LARGE: &str = "Error, decoded message length too large";

/// tonic's answer to a request message over the decoding limit.
pub fn is_oversize(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().starts_with(TOO_LARGE)
}

/// A request-stream error as the conventions name it (see the module doc).
pub fn inbound(status: Status) -> Status {
    if is_oversize(&status) { Status::resource_exhausted(status.message().to_owned()) } else { status }
}

#[derive(Clone, Copy, Default)]
pub struct Conventions;

impl<S> tower::Layer<S> for Conventions {
    type Service = ConventionsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConventionsService { inner }
    }
}

#[derive(Clone)]
pub struct ConventionsService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for ConventionsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ends_at = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
            .map(|d| tokio::time::Instant::now() + d.saturating_sub(MARGIN));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = match ends_at {
                Some(at) => match tokio::time::timeout_at(at, fut).await {
                    Ok(r) => r?,
                    Err(_) => return Ok(crate::api::status::to_status(Error::DeadlineExceeded).into_http()),
                },
                None => fut.await?,
            };
            Ok(oversize_as_exhausted(response))
        })
    }
}

/// A trailers-only OUT_OF_RANGE "message too large" answer becomes
/// RESOURCE_EXHAUSTED; every other answer is left as it is.
fn oversize_as_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let oversize = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            // Percent-encoded: the prefix differs from TOO_LARGE in its spaces.
            .is_some_and(|m| m.replace("%20", " ").starts_with(TOO_LARGE));
    if oversize {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oversize_message_is_renamed() {
        let too_large =
            Status::out_of_range(format!("{TOO_LARGE}: found 20971520 bytes, the limit is: 8388608 bytes"));
        assert_eq!(inbound(too_large).code(), Code::ResourceExhausted);
        assert_eq!(inbound(Status::out_of_range("page past the end")).code(), Code::OutOfRange);
        assert_eq!(inbound(Status::cancelled("x")).code(), Code::Cancelled);

        let trailers_only = |code: &'static str, message: &'static str| {
            let mut r = http::Response::new(tonic::body::Body::empty());
            r.headers_mut().insert("grpc-status", HeaderValue::from_static(code));
            r.headers_mut().insert("grpc-message", HeaderValue::from_static(message));
            oversize_as_exhausted(r).headers()["grpc-status"].to_str().unwrap().to_owned()
        };
        assert_eq!(
            trailers_only("11", "Error,%20decoded%20message%20length%20too%20large:%20found%209"),
            "8"
        );
        assert_eq!(trailers_only("11", "something else"), "11");
        assert_eq!(trailers_only("3", "Error,%20decoded%20message%20length%20too%20large"), "3");
    }
}
