//! cvlan-api: the CloudVLAN control plane — REST (axum) and gRPC (tonic) on one listener over
//! one service layer (RBAC, validation, audit in the same transaction, change events), with
//! SQLite or PostgreSQL underneath (cvlan-store).
//!
//! A shell crate: the pure parts (RBAC decisions, token claims, validation) are plain functions
//! tested on their own; `http` and `grpc` only translate.

pub mod ca;
pub mod error;
pub mod gateway;
pub mod gateway_grpc;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod kinds;
pub mod netmap;
pub mod node_grpc;
pub mod nodes;
pub mod oidc;
pub mod rbac;
pub mod secrets;
pub mod server;
pub mod service;
pub mod throttle;
pub mod tokens;
pub mod vrouters;

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use error::{ApiError, ApiResult};
pub use http::{App, AppState, Mode, router};
pub use service::{Principal, Service};

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static H: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    H.get_or_init(|| {
        let rec = PrometheusBuilder::new().build_recorder();
        let h = rec.handle();
        metrics::set_global_recorder(rec).ok().map(|_| h)
    })
    .clone()
}

/// Builds the application state for a store (used by `serve` and by in-process tests).
///
/// # Errors
/// Database errors while loading keys.
pub async fn build_app(
    store: Arc<cvlan_store::Store>,
    mode: Mode,
    config: service::Config,
) -> ApiResult<AppState> {
    let svc = Arc::new(Service::new(store, config).await?);
    Ok(Arc::new(App {
        svc,
        mode,
        metrics: metrics_handle(),
        secure_cookies: false,
        trust_forwarded: false,
        advertise: http::Advertise::default(),
        discovery_limit: throttle::RateLimit::new(50.0, 200.0),
        registration_limit: throttle::RateLimit::new(10.0, 50.0),
        ui_dir: None,
        public_url: "http://127.0.0.1:8080".into(),
    }))
}

/// The node listener's router: NodeService (agents) and GatewayService (vrouters) over a fresh
/// network-map hub (which runs until `stop` flips).
pub fn node_router(svc: Arc<Service>, stop: tokio::sync::watch::Receiver<bool>) -> axum::Router {
    let hub = netmap::Hub::start(svc.clone(), stop);
    tonic::service::Routes::new(node_grpc::service(svc.clone(), hub.clone()))
        .add_service(gateway_grpc::service(svc, hub))
        .into_axum_router()
}
