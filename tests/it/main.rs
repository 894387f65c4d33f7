//! One integration-test binary (one link step on 2 cores). Every test starts
//! its own server on port 0 and uses fresh tenants, so tests run in parallel.

mod analytics;
mod backup;
mod cache;
mod common;
mod companies;
mod conformance;
mod connections;
mod deadlines;
mod demo_data;
mod documents;
mod faults;
mod helpers;
mod jobs_crud;
mod listing;
mod migrations;
mod observability;
mod ops;
mod otlp;
mod partitions;
mod pipeline;
mod python_client;
mod python_lifecycle;
mod readme;
mod replica;
mod scale;
mod service;
mod tenancy_auth;
mod tidy;
mod tls;
mod wire;
