//! Logging for the examples: the crate's own events (refused streams, evictions, broker
//! trouble) and the example's, filtered by `RUST_LOG` (default `info`).

/// Installs a `tracing` subscriber that prints to stderr. Call once, first thing in `main`.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}
