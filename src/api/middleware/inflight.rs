//! Calls in flight, counted by a tower layer so graceful shutdown can wait
//! for them to finish (bounded by the drain timeout, in `app`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use tokio::sync::Notify;

/// Counts calls in flight (health Watch streams excluded) so shutdown can
/// wait for them without waiting for watchers that never end.
#[derive(Clone, Default)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl InFlight {
    /// Returns once no call is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One call counted until it is dropped.
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<S> tower::Layer<S> for InFlight {
    type Service = InFlightService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlightService { inner, tracker: self.clone() }
    }
}

#[derive(Clone)]
pub struct InFlightService<S> {
    inner: S,
    tracker: InFlight,
}

impl<S, B> tower::Service<http::Request<B>> for InFlightService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = (req.uri().path() != "/grpc.health.v1.Health/Watch").then(|| {
            self.tracker.count.fetch_add(1, Ordering::SeqCst);
            InFlightGuard(self.tracker.clone())
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(guard);
            res
        })
    }
}
