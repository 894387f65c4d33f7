//! bi-data: a gRPC data-access service over PostgreSQL.
//!
//! Layers (see ARCHITECTURE.md): `api` (tonic/prost only here) -> `domain`
//! (plain Rust) -> `store` (SQL). `app` wires them; `auth` is a tower layer.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod service;
pub mod store;
pub mod telemetry;

/// Generated gRPC code and the descriptor set served by reflection.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("bi.data.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bi_data_descriptor");
}
