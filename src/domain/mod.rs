//! Plain Rust: resource declarations, validation, the filter language.
//! Knows nothing of tonic, prost or SQL drivers.
pub mod application;
pub mod audit;
pub mod filter;
pub mod ingest;
pub mod job;
pub mod order;
pub mod record;
pub mod schema;
pub mod value;
