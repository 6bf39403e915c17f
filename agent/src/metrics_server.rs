//! Serves `/metrics` for Prometheus (`--metrics-listen`).

use std::sync::Arc;

use axum::{Router, http::header::CONTENT_TYPE, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Binds now, so a bad or busy address fails before capture starts.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Runs until the process ends.
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
