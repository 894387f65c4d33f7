//! gRPC: the only code that sees prost/tonic types. Handlers validate,
//! convert proto <-> domain values, call the generic methods, and map errors
//! with `status::to_status`.
pub mod applications;
pub mod audit;
pub mod context;
pub mod convert;
pub mod jobs;
pub mod resource;
pub mod status;
