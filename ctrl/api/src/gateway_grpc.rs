//! gRPC GatewayService: what vrouterd talks to, on the node listener next to NodeService (same
//! TLS and CA). Enrol needs no client certificate (the join token is the credential); Sync
//! and RenewCertificate need a vrouter certificate — a node certificate is refused.

use std::sync::Arc;

use cvlan_proto::v1::{
    self as pb,
    gateway_service_server::{GatewayService, GatewayServiceServer},
};
use cvlan_store::time;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::netmap::Hub;
use crate::node_grpc::{HubStream, peer_addr};
use crate::nodes::micros_of;
use crate::server::PeerCerts;
use crate::service::Service;
use crate::throttle::RateLimit;

/// The GatewayService implementation.
pub struct GatewayApi {
    svc: Arc<Service>,
    hub: Hub,
    enrol_limit: RateLimit,
    vrouter_limit: RateLimit,
}

/// The service for the node listener's router.
pub fn service(svc: Arc<Service>, hub: Hub) -> GatewayServiceServer<GatewayApi> {
    GatewayServiceServer::new(GatewayApi {
        svc,
        hub,
        enrol_limit: RateLimit::new(10.0, 50.0),
        vrouter_limit: RateLimit::new(1.0, 20.0),
    })
}

/// The vrouter a request's verified client certificate was issued to.
fn vrouter_identity<T>(r: &Request<T>) -> Result<String, Status> {
    r.extensions()
        .get::<PeerCerts>()
        .and_then(|c| c.0.first())
        .and_then(|c| crate::ca::vrouter_id_of(c))
        .ok_or_else(|| Status::unauthenticated("a vrouter client certificate is required"))
}

fn status(e: ApiError) -> Status {
    match e {
        ApiError::NotFound(_) => Status::not_found("vrouter is not registered (deleted?)"),
        e => e.into(),
    }
}

#[tonic::async_trait]
impl GatewayService for GatewayApi {
    async fn enrol(
        &self,
        req: Request<pb::EnrolRequest>,
    ) -> Result<Response<pb::EnrolResponse>, Status> {
        let src = peer_addr(&req)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        self.enrol_limit.take(&src)?;
        let out = self
            .svc
            .enrol_vrouter(req.into_inner(), &src)
            .await
            .inspect_err(
                |e| tracing::info!(source = %src, error = %e, "vrouter enrolment refused"),
            )?;
        if let Some(v) = &out.vrouter {
            tracing::info!(vrouter_id = %v.id, "vrouter enrolled");
        }
        Ok(Response::new(out))
    }

    type SyncStream = HubStream<pb::GatewaySyncResponse>;

    async fn sync(
        &self,
        req: Request<pb::GatewaySyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let id = vrouter_identity(&req)?;
        self.vrouter_limit.take(&id)?;
        self.svc.vrouter_by_id(&id).await.map_err(status)?;
        let (tx, rx) = mpsc::channel(16);
        let conn = self.hub.connect_gateway(&id, tx);
        tracing::debug!(vrouter_id = %id, "gateway stream attached");
        let hub = self.hub.clone();
        Ok(Response::new(HubStream::new(rx, move || {
            hub.disconnect_gateway(&id, conn)
        })))
    }

    async fn renew_certificate(
        &self,
        req: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let id = vrouter_identity(&req)?;
        self.vrouter_limit.take(&id)?;
        let (pem, exp) = self
            .svc
            .renew_vrouter_certificate(&id, &req.into_inner().csr_pem)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem: pem,
            certificate_expires_at: Some(time::ts(micros_of(exp))),
        }))
    }
}
