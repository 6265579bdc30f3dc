//! The HTTP side of the agent: Prometheus `/metrics` and `/healthz`.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use super::metrics;

pub async fn serve_metrics(
    listen: std::net::SocketAddr,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    use axum::{http::header, routing::get, Router};
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut body, &registry);
                    // Content negotiation: OpenMetrics for scrapers that ask for it, else the
                    // classic text format every Prometheus tool reads.
                    let openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    if openmetrics {
                        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                        ([(header::CONTENT_TYPE, kind)], body)
                    } else {
                        let kind = "text/plain; version=0.0.4; charset=utf-8";
                        (
                            [(header::CONTENT_TYPE, kind)],
                            metrics::openmetrics_to_text(&body),
                        )
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}
