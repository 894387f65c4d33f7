//! Logging: `RUST_LOG`-style filter (default `info`), JSON lines when
//! `LOG_FORMAT=json`, human-readable otherwise.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(fmt::layer().json().with_current_span(true).with_span_list(false)).try_init()
    } else {
        registry.with(fmt::layer().with_writer(std::io::stderr)).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
