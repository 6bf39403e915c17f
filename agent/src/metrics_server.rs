//! Serves `/metrics` for Prometheus (`--metrics-listen`).

use std::sync::Arc;

use axum::{Router, http::header::CONTENT_TYPE, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Runs until the process ends. The caller binds `listener` before
/// capture starts, so a bad or busy address fails early.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], metrics.render()) }
        }),
    );
    axum::serve(listener, app).await
}
