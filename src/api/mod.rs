//! gRPC: the only code that sees prost/tonic types. Handlers validate,
//! convert proto <-> domain values, call the generic methods, and map errors
//! with `status::to_status`; `middleware` is the tower stack in front of
//! them; `pb` is the generated code.
pub mod applications;
pub mod audit;
pub mod context;
pub mod convert;
pub mod jobs;
pub mod middleware;
pub mod pb;
pub mod resource;
pub mod status;
