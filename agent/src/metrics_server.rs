//! Serves `/metrics` for Prometheus (`--metrics-listen`), and beside it
//! the probes' `/healthz` and `/readyz` ([`Health`]).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    http::{StatusCode, header::CONTENT_TYPE},
    routing::get,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{info, warn};

use crate::{health::Health, metrics::Metrics};

/// Binds `address` now (a bad or busy one fails before capture) and serves
/// on a task of the agent's runtime: scrapes only read the metrics.
pub async fn start(address: SocketAddr, metrics: Arc<Metrics>, health: Arc<Health>) -> anyhow::Result<JoinHandle<()>> {
    let listener = crate::listen::bind(address)
        .await
        .with_context(|| format!("cannot serve metrics on {address}"))?;
    info!(%address, "serving metrics on /metrics, probes on /healthz and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = serve(listener, metrics, health).await {
            warn!(error = %e, "metrics server stopped");
        }
    }))
}

/// Runs until the process ends. The caller binds `listener` before
/// capture starts, so a bad or busy address fails early.
async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) -> std::io::Result<()> {
    let (live, ready) = (Arc::clone(&health), health);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move { ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], metrics.render()) }
            }),
        )
        .route("/healthz", get(move || async move { probe(live.live()) }))
        .route("/readyz", get(move || async move { probe(ready.ready()) }));
    axum::serve(listener, app).await
}

/// 200 `ok`, or 503 with the reason (the kubelet logs it in the event).
fn probe(state: Result<(), String>) -> (StatusCode, String) {
    match state {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}
