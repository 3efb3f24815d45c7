//! HTTP: the JSON API under `/api/v1`, the lead pages, and health checks.
//! Each resource module owns its routes; this file only merges them.

mod api;
pub(crate) mod charts;
mod error;
mod export;
mod extract;
mod pages;
mod quality_api;
pub(crate) mod quality_charts;
mod selection_api;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderValue, StatusCode, header},
    routing::get,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::{
    services::ServeDir, set_header::SetResponseHeaderLayer, timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::clips::{ClipLimits, ClipStore};

pub use api::ApiDoc;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub clips: ClipStore,
    pub inner: Arc<Settings>,
    /// Reward models loaded for scoring.
    pub models: Arc<crate::reward::ModelCache>,
    /// Writes judgments, many in one statement under load.
    pub judgments: crate::labeling::Writer,
    /// Leases pairs, many in one statement under load.
    pub leases: crate::labeling::Leaser,
}

/// Server settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub clip_limits: ClipLimits,
    /// Base URL for links we hand out (invites); None: taken from the request's Host.
    pub public_url: Option<String>,
    pub max_import_bytes: usize,
}

impl Settings {
    /// Cookies get `Secure` when the public URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }
}

/// The whole application as one router (tests call it with `oneshot`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::router(&state))
        .merge(quality_api::router())
        .merge(selection_api::router())
        .merge(export::router())
        .merge(pages::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .nest_service("/static", ServeDir::new(static_dir()))
        // Bodies are small JSON or forms unless a route (import, clips) says otherwise.
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Static files ship next to the binary's sources; `BACKFLIP_STATIC_DIR` overrides.
fn static_dir() -> std::path::PathBuf {
    std::env::var_os("BACKFLIP_STATIC_DIR")
        .map(Into::into)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/static").into())
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match sqlx::query("select 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

/// Serve until `shutdown` resolves, then finish the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}
