//! gRPC NodeService: what cvlan-agent talks to, on the node listener (TLS with the built-in
//! CA's server certificate; client certificates required for everything but Register).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::ConnectInfo;
use cvlan_proto::v1::{
    self as pb,
    node_service_server::{NodeService, NodeServiceServer},
};
use cvlan_store::time;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::netmap::Hub;
use crate::server::PeerCerts;
use crate::service::Service;
use crate::throttle::RateLimit;

/// The NodeService implementation.
pub struct NodeApi {
    svc: Arc<Service>,
    hub: Hub,
    register_limit: RateLimit,
    /// Per node id: Sync and ReportEndpoints each cost a write and work for the whole CVLAN.
    node_limit: RateLimit,
}

/// The service for the node listener's router.
pub fn service(svc: Arc<Service>, hub: Hub) -> NodeServiceServer<NodeApi> {
    NodeServiceServer::new(NodeApi {
        svc,
        hub,
        register_limit: RateLimit::new(10.0, 50.0),
        node_limit: RateLimit::new(1.0, 20.0),
    })
}

/// The client's address: the TLS listener's connect info, else tonic's.
pub(crate) fn peer_addr<T>(r: &Request<T>) -> Option<SocketAddr> {
    r.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| r.remote_addr())
}

/// The node a request's verified client certificate was issued to.
fn node_identity<T>(r: &Request<T>) -> Result<String, Status> {
    r.extensions()
        .get::<PeerCerts>()
        .and_then(|c| c.0.first())
        .and_then(|c| crate::ca::node_id_of(c))
        .ok_or_else(|| Status::unauthenticated("a node client certificate is required"))
}

fn status(e: ApiError) -> Status {
    match e {
        // A certificate for a node that no longer exists or has expired.
        ApiError::NotFound(_) => Status::not_found("node is not registered (deleted?)"),
        ApiError::Forbidden => Status::permission_denied("node has expired; register again"),
        e => e.into(),
    }
}

/// A hub stream (node maps or gateway tables): forwards the hub's messages and tells the hub
/// when the client goes away.
pub struct HubStream<T> {
    rx: mpsc::Receiver<Result<T, Status>>,
    detach: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> HubStream<T> {
    /// A stream over `rx` that runs `detach` when dropped.
    pub fn new(
        rx: mpsc::Receiver<Result<T, Status>>,
        detach: impl FnOnce() + Send + 'static,
    ) -> Self {
        HubStream {
            rx,
            detach: Some(Box::new(detach)),
        }
    }
}

impl<T> futures::Stream for HubStream<T> {
    type Item = Result<T, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> Drop for HubStream<T> {
    fn drop(&mut self) {
        if let Some(f) = self.detach.take() {
            f();
        }
    }
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let src = peer_addr(&req)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        self.register_limit.take(&src)?;
        let out = self
            .svc
            .register_node(req.into_inner(), &src)
            .await
            .inspect_err(|e| tracing::info!(source = %src, error = %e, "registration refused"))?;
        if let Some(n) = &out.node {
            tracing::info!(node_id = %n.id, tenant_id = %n.tenant_id, cvlan_id = %n.cvlan_id, "node registered");
        }
        Ok(Response::new(out))
    }

    async fn renew_certificate(
        &self,
        req: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let id = node_identity(&req)?;
        let (pem, exp) = self
            .svc
            .renew_certificate(&id, &req.into_inner().csr_pem)
            .await
            .map_err(status)?;
        let micros = exp
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem: pem,
            certificate_expires_at: Some(time::ts(micros)),
        }))
    }

    type SyncStream = HubStream<pb::SyncResponse>;

    async fn sync(
        &self,
        req: Request<pb::SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let id = node_identity(&req)?;
        self.node_limit.take(&id)?;
        let node = self.svc.active_node(&id).await.map_err(status)?;
        let since = req.into_inner().since_version;
        let (tx, rx) = mpsc::channel(256);
        let conn = self.hub.connect(node, since, tx);
        let svc = self.svc.clone();
        let nid = id.clone();
        tokio::spawn(async move {
            let _ = svc.touch_node(&nid, true).await;
        });
        tracing::debug!(node_id = %id, since, "node stream attached");
        let hub = self.hub.clone();
        Ok(Response::new(HubStream::new(rx, move || {
            hub.disconnect(&id, conn)
        })))
    }

    async fn report_endpoints(
        &self,
        req: Request<pb::ReportEndpointsRequest>,
    ) -> Result<Response<pb::ReportEndpointsResponse>, Status> {
        let id = node_identity(&req)?;
        self.node_limit.take(&id)?;
        let observed = peer_addr(&req);
        self.svc
            .report_endpoints(&id, req.into_inner().endpoints, observed)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReportEndpointsResponse {}))
    }
}
