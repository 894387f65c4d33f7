//! The gRPC edge: the only code that sees prost/tonic types. Handlers build
//! the request scope, convert proto messages to drafts (`resource.rs`, by
//! field name), call the service's use cases, convert records back, and
//! map errors with `status::to_status`.
pub mod audit;
pub mod context;
pub mod convert;
pub mod jobs;
pub mod resource;
pub mod status;
