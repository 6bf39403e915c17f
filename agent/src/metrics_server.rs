//! Serves `/metrics` for Prometheus (`--metrics-listen`).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Router, http::header::CONTENT_TYPE, routing::get};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Binds `address` now (a bad or busy one fails before capture) and serves
/// on a task of the agent's runtime: scrapes only read the metrics.
pub async fn start(address: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<JoinHandle<()>> {
    let listener = crate::listen::bind(address)
        .await
        .with_context(|| format!("cannot serve metrics on {address}"))?;
    info!(%address, "serving metrics on /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = serve(listener, metrics).await {
            warn!(error = %e, "metrics server stopped");
        }
    }))
}

/// Runs until the process ends. The caller binds `listener` before
/// capture starts, so a bad or busy address fails early.
async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], metrics.render()) }
        }),
    );
    axum::serve(listener, app).await
}
