//! The tower stack in front of every service, outermost first: `rpc` (one
//! SERVER span and the RPC metrics per call), `conventions` (the caller's
//! deadline answered DEADLINE_EXCEEDED, oversize messages
//! RESOURCE_EXHAUSTED, where tonic answers otherwise), `admission` (at most
//! --max-concurrent-calls at once; the rest shed RESOURCE_EXHAUSTED after a
//! short wait), `inflight` (calls counted for
//! graceful shutdown), `auth` (credentials and role checked, the caller put
//! in the request), then `rpc::RecordCaller` (the tenant on the span).
//! `app` assembles them.
pub mod admission;
pub mod auth;
pub mod conventions;
pub mod inflight;
pub mod rpc;
