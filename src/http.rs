//! The plain-HTTP operations endpoint (`http.listen`), served with hyper:
//! `GET /healthz` (200 while the process runs, never depends on storage),
//! `GET /readyz` (200 when the control listener is up and no backend has failed its
//! background checks for `server.backend_unready_after_secs`; 503 from the moment
//! shutdown begins; answered from memory, see [`crate::health`]) and `GET /metrics`
//! (OpenMetrics 1.0 when the `Accept` header asks for `application/openmetrics-text`,
//! else the Prometheus text format 0.0.4).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::state::Shared;

/// Serves the endpoint until the process exits (it outlives the FTP listener so
/// probes see `/readyz` fail during the shutdown grace period).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&req, &shared).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Gauges read from live state when scraped: pending passive listeners, active
/// bans, the loaded certificate's expiry (it may have been reloaded since).
fn scrape_gauges(shared: &Shared) {
    let m = &shared.metrics;
    let max = shared.config.passive.max_pending;
    let free = shared.data_plane.passive_slots.available_permits();
    m.passive_pending
        .set(i64::try_from(max.saturating_sub(free)).unwrap_or(i64::MAX));
    m.bans_active
        .set(i64::try_from(shared.limits.bans.active()).unwrap_or(i64::MAX));
    if let (Some(tls), Some(file)) = (&shared.data_plane.tls, &shared.config.tls.cert_file) {
        if let Some(t) = tls.not_after() {
            m.tls_certificate(&file.display().to_string(), t);
        }
    }
}

async fn respond(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => {
            if shared.is_ready().await {
                text(StatusCode::OK, PLAIN, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n".into())
            }
        }
        "/metrics" => {
            // Refreshes `ftpgate_ready` (memory only) so a scrape alone sees it.
            shared.is_ready().await;
            scrape_gauges(shared);
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = crate::metrics::Format::negotiate(accept);
            let mut r = text(
                StatusCode::OK,
                format.content_type(),
                shared.metrics.encode_as(format),
            );
            r.headers_mut().insert(
                hyper::header::VARY,
                hyper::header::HeaderValue::from_static("Accept"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
    }
}
