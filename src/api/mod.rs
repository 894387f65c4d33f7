//! The gRPC edge: the only code that sees prost/tonic types. Handlers build
//! the request scope, convert proto messages to drafts (`resource.rs`, by
//! field name), call the service's use cases, convert records back, and
//! map errors with `status::to_status`; `middleware` is the tower stack in
//! front of them; `pb` is the generated code.
pub mod analytics;
pub mod audit;
pub mod codec;
pub mod companies;
pub mod context;
pub mod convert;
pub mod documents;
pub mod jobs;
pub mod middleware;
pub mod outreach;
pub mod pb;
pub mod resource;
pub mod status;
