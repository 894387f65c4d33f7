//! Admission control: at most `--max-concurrent-calls` calls run at once
//! (health and reflection exempt). A call that finds none free waits at
//! most `--admission-wait-ms` for one, then is answered
//! `RESOURCE_EXHAUSTED` (reason `OVERLOADED`, with `google.rpc.RetryInfo`)
//! without touching the database: under overload the service sheds what it
//! cannot serve instead of queueing without bound, so memory stays bounded
//! and admitted calls keep their latency. A slot is held until the response
//! body ends, so streams count for as long as they run. Shed calls appear
//! in the RPC metrics with code RESOURCE_EXHAUSTED.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// How long a shed caller is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
}

impl Admission {
    pub fn new(limit: usize, wait: Duration) -> Admission {
        let limit = limit.max(1);
        Admission { slots: Arc::new(Semaphore::new(limit)), limit, wait }
    }
}

impl<S> tower::Layer<S> for Admission {
    type Service = AdmissionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService { inner, admission: self.clone() }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Admission,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> tower::Service<http::Request<B>> for AdmissionService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if exempt(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        // The service that was made ready goes with this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        Box::pin(async move {
            let permit = match admission.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match tokio::time::timeout(admission.wait, admission.slots.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => return Ok(overloaded(admission.limit, admission.wait).into_http()),
                },
            };
            let response = inner.call(req).await?;
            Ok(response.map(|body| tonic::body::Body::new(Held { inner: body, _permit: permit })))
        })
    }
}

fn overloaded(limit: usize, wait: Duration) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(RETRY_AFTER));
    details.set_error_info("OVERLOADED", crate::api::status::DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "the server is at its limit of {limit} concurrent calls and none ended within {} ms; retry after {} ms",
            wait.as_millis(),
            RETRY_AFTER.as_millis()
        ),
        details,
    )
}

/// A response body that holds its call's slot until it ends.
struct Held {
    inner: tonic::body::Body,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shed_answer_says_when_to_retry() {
        let s = overloaded(8, Duration::from_millis(100));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.get_details_retry_info().and_then(|r| r.retry_delay), Some(RETRY_AFTER));
        assert_eq!(s.get_details_error_info().map(|i| i.reason), Some("OVERLOADED".to_owned()));
        assert!(exempt("/grpc.health.v1.Health/Check") && !exempt("/bi.data.v1.JobService/GetJob"));
    }
}
