//! bi-data: a gRPC data-access service over PostgreSQL.
//!
//! Layers (see ARCHITECTURE.md): `api` (the gRPC edge, the only module that
//! names tonic/prost: handlers, conversion, status mapping, request context,
//! the generated `pb`, and the tower middleware in `api::middleware`) ->
//! `service` (use cases) -> `domain` (plain Rust) -> `store` (SQL); `cache`
//! (Redis) plugs into the service's read seam. `app` wires them; `auth` holds
//! tokens and roles; `telemetry` the log/trace pipeline; `metrics` the
//! Prometheus registry. `tests/it/tidy.rs` checks which module may name what.

pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod service;
pub mod store;
pub mod telemetry;

/// Generated gRPC code and the descriptor set served by reflection.
pub use api::pb;
