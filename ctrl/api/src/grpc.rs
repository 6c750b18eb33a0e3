//! gRPC shell: the AdminService over the same service layer as REST, on the same listener.

use std::sync::Arc;

use cvlan_proto::v1::{
    self as pb,
    admin_service_server::{AdminService, AdminServiceServer},
};
use cvlan_store::audit::AuditFilter;
use cvlan_store::time;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::http::AppState;
use crate::secrets::Secret;
use crate::service::{Principal, Service};

/// The gRPC admin service.
pub struct Admin {
    svc: Arc<Service>,
}

/// Routes to merge into the axum router.
pub fn routes(app: AppState) -> axum::Router {
    tonic::service::Routes::new(AdminServiceServer::new(Admin {
        svc: app.svc.clone(),
    }))
    .into_axum_router()
}

fn source<T>(r: &Request<T>) -> String {
    r.remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "local".into())
}

impl Admin {
    async fn auth<T>(&self, r: &Request<T>) -> Result<Principal, Status> {
        let v = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let tok = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        Ok(self.svc.authenticate(tok, &source(r)).await?)
    }
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn mask(m: Option<pbjson_types::FieldMask>) -> Vec<String> {
    m.map(|m| m.paths).unwrap_or_default()
}

fn body<T: Default>(b: Option<T>) -> T {
    b.unwrap_or_default()
}

fn ok<T>(t: T) -> Result<Response<T>, Status> {
    Ok(Response::new(t))
}

/// One RPC: authenticate, run the body with (service, principal, request message).
macro_rules! rpc {
    ($name:ident, $req:ty, $resp:ty, |$s:ident, $p:ident, $r:ident| $body:expr) => {
        // Spelled out as #[async_trait] would expand it: the attribute cannot see into
        // macro-generated methods.
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            req: Request<$req>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Response<$resp>, Status>>
                    + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let $p = self.auth(&req).await?;
                #[allow(unused_variables)]
                let $r = req.into_inner();
                #[allow(unused_variables)]
                let $s = &self.svc;
                let out: Result<$resp, ApiError> = async { $body }.await;
                ok(out?)
            })
        }
    };
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let src = source(&req);
        let r = req.into_inner();
        let (tok, exp, user) = self.svc.login(&r.email, Secret(r.password), &src).await?;
        ok(pb::LoginResponse {
            token: tok.0,
            expires_at: Some(time::ts(exp)),
            user: Some(user),
        })
    }
    rpc!(logout, pb::Empty, pb::Empty, |s, p, _r| s
        .logout(&p)
        .await
        .map(|_| pb::Empty {}));
    rpc!(who_am_i, pb::Empty, pb::WhoAmIResponse, |_s, p, _r| Ok(
        pb::WhoAmIResponse {
            api_key_id: p.api_key_id.clone().unwrap_or_default(),
            user: Some(p.user),
        }
    ));

    rpc!(
        list_api_keys,
        pb::ListRequest,
        pb::ListApiKeysResponse,
        |s, p, _r| Ok(pb::ListApiKeysResponse {
            items: s.list_api_keys(&p).await?,
            next_page_token: String::new(),
        })
    );
    rpc!(
        create_api_key,
        pb::CreateApiKeyRequest,
        pb::ApiKey,
        |s, p, r| s.create_api_key(&p, body(r.body), r.ttl_seconds).await
    );
    rpc!(delete_api_key, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete_api_key(&p, &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_tenants,
        pb::ListRequest,
        pb::ListTenantsResponse,
        |s, p, r| {
            let pg = s.list_tenants(&p, &r.page_token, r.page_size).await?;
            Ok(pb::ListTenantsResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_tenant, pb::ObjectRef, pb::Tenant, |s, p, r| s
        .get_tenant(
            &p,
            if r.tenant.is_empty() {
                &r.id
            } else {
                &r.tenant
            }
        )
        .await);
    rpc!(
        create_tenant,
        pb::CreateTenantRequest,
        pb::Tenant,
        |s, p, r| s.create::<pb::Tenant>(&p, None, body(r.tenant)).await
    );
    rpc!(
        update_tenant,
        pb::UpdateTenantRequest,
        pb::Tenant,
        |s, p, r| s
            .update_tenant(&p, &r.tenant, body(r.body), &mask(r.update_mask))
            .await
    );
    rpc!(delete_tenant, pb::ObjectRef, pb::Empty, |s, p, r| {
        s.delete::<pb::Tenant>(
            &p,
            None,
            if r.tenant.is_empty() {
                &r.id
            } else {
                &r.tenant
            },
        )
        .await
        .map(|_| pb::Empty {})
    });

    rpc!(
        list_cvlans,
        pb::ListRequest,
        pb::ListCvlansResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::Cvlan>(&p, Some(&r.tenant), None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListCvlansResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_cvlan, pb::ObjectRef, pb::Cvlan, |s, p, r| s
        .get::<pb::Cvlan>(&p, Some(&r.tenant), &r.id)
        .await);
    rpc!(
        create_cvlan,
        pb::CreateCvlanRequest,
        pb::Cvlan,
        |s, p, r| s
            .create::<pb::Cvlan>(&p, Some(&r.tenant), body(r.body))
            .await
    );
    rpc!(
        update_cvlan,
        pb::UpdateCvlanRequest,
        pb::Cvlan,
        |s, p, r| {
            let rf = body(r.r#ref);
            s.update::<pb::Cvlan>(
                &p,
                Some(&rf.tenant),
                &rf.id,
                body(r.body),
                &mask(r.update_mask),
            )
            .await
        }
    );
    rpc!(delete_cvlan, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::Cvlan>(&p, Some(&r.tenant), &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_users,
        pb::ListRequest,
        pb::ListUsersResponse,
        |s, p, r| {
            let pg = s
                .list_users(&p, opt(&r.tenant), &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListUsersResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_user, pb::ObjectRef, pb::User, |s, p, r| s
        .get_user(&p, opt(&r.tenant), &r.id)
        .await);
    rpc!(create_user, pb::CreateUserRequest, pb::User, |s, p, r| s
        .create_user(&p, opt(&r.tenant), body(r.body))
        .await);
    rpc!(update_user, pb::UpdateUserRequest, pb::User, |s, p, r| {
        let rf = body(r.r#ref);
        s.update_user(
            &p,
            opt(&rf.tenant),
            &rf.id,
            body(r.body),
            &mask(r.update_mask),
        )
        .await
    });
    rpc!(delete_user, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete_user(&p, opt(&r.tenant), &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_groups,
        pb::ListRequest,
        pb::ListGroupsResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::Group>(&p, Some(&r.tenant), None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListGroupsResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_group, pb::ObjectRef, pb::Group, |s, p, r| s
        .get::<pb::Group>(&p, Some(&r.tenant), &r.id)
        .await);
    rpc!(
        create_group,
        pb::CreateGroupRequest,
        pb::Group,
        |s, p, r| s
            .create::<pb::Group>(&p, Some(&r.tenant), body(r.body))
            .await
    );
    rpc!(
        update_group,
        pb::UpdateGroupRequest,
        pb::Group,
        |s, p, r| {
            let rf = body(r.r#ref);
            s.update::<pb::Group>(
                &p,
                Some(&rf.tenant),
                &rf.id,
                body(r.body),
                &mask(r.update_mask),
            )
            .await
        }
    );
    rpc!(delete_group, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::Group>(&p, Some(&r.tenant), &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_policies,
        pb::ListRequest,
        pb::ListPoliciesResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::Policy>(&p, Some(&r.tenant), None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListPoliciesResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_policy, pb::ObjectRef, pb::Policy, |s, p, r| s
        .get::<pb::Policy>(&p, Some(&r.tenant), &r.id)
        .await);
    rpc!(
        create_policy,
        pb::CreatePolicyRequest,
        pb::Policy,
        |s, p, r| s
            .create::<pb::Policy>(&p, Some(&r.tenant), body(r.body))
            .await
    );
    rpc!(
        update_policy,
        pb::UpdatePolicyRequest,
        pb::Policy,
        |s, p, r| {
            let rf = body(r.r#ref);
            s.update::<pb::Policy>(
                &p,
                Some(&rf.tenant),
                &rf.id,
                body(r.body),
                &mask(r.update_mask),
            )
            .await
        }
    );
    rpc!(delete_policy, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::Policy>(&p, Some(&r.tenant), &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_nodes,
        pb::ListRequest,
        pb::ListNodesResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::Node>(&p, Some(&r.tenant), None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListNodesResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_node, pb::ObjectRef, pb::Node, |s, p, r| s
        .get::<pb::Node>(&p, Some(&r.tenant), &r.id)
        .await);
    rpc!(update_node, pb::UpdateNodeRequest, pb::Node, |s, p, r| {
        let rf = body(r.r#ref);
        s.update::<pb::Node>(
            &p,
            Some(&rf.tenant),
            &rf.id,
            body(r.body),
            &mask(r.update_mask),
        )
        .await
    });
    rpc!(delete_node, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete_node(&p, &r.tenant, &r.id)
        .await
        .map(|_| pb::Empty {}));
    rpc!(expire_node, pb::ObjectRef, pb::Node, |s, p, r| s
        .expire_node(&p, &r.tenant, &r.id)
        .await);

    rpc!(
        list_external_peers,
        pb::ListRequest,
        pb::ListExternalPeersResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::ExternalPeer>(&p, Some(&r.tenant), None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListExternalPeersResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(
        get_external_peer,
        pb::ObjectRef,
        pb::ExternalPeer,
        |s, p, r| s.get::<pb::ExternalPeer>(&p, Some(&r.tenant), &r.id).await
    );
    rpc!(
        create_external_peer,
        pb::CreateExternalPeerRequest,
        pb::ExternalPeer,
        |s, p, r| s
            .create_external_peer(&p, &r.tenant, &r.cvlan, body(r.body))
            .await
    );
    rpc!(
        update_external_peer,
        pb::UpdateExternalPeerRequest,
        pb::ExternalPeer,
        |s, p, r| {
            let rf = body(r.r#ref);
            s.update::<pb::ExternalPeer>(
                &p,
                Some(&rf.tenant),
                &rf.id,
                body(r.body),
                &mask(r.update_mask),
            )
            .await
        }
    );
    rpc!(delete_external_peer, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::ExternalPeer>(&p, Some(&r.tenant), &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_oidc_providers,
        pb::ListRequest,
        pb::ListOidcProvidersResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::OidcProvider>(&p, Some(&r.tenant), None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListOidcProvidersResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(
        get_oidc_provider,
        pb::ObjectRef,
        pb::OidcProvider,
        |s, p, r| s.get::<pb::OidcProvider>(&p, Some(&r.tenant), &r.id).await
    );
    rpc!(
        create_oidc_provider,
        pb::CreateOidcProviderRequest,
        pb::OidcProvider,
        |s, p, r| s
            .create::<pb::OidcProvider>(&p, Some(&r.tenant), body(r.body))
            .await
    );
    rpc!(
        update_oidc_provider,
        pb::UpdateOidcProviderRequest,
        pb::OidcProvider,
        |s, p, r| {
            let rf = body(r.r#ref);
            s.update::<pb::OidcProvider>(
                &p,
                Some(&rf.tenant),
                &rf.id,
                body(r.body),
                &mask(r.update_mask),
            )
            .await
        }
    );
    rpc!(delete_oidc_provider, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::OidcProvider>(&p, Some(&r.tenant), &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_tokens,
        pb::ListRequest,
        pb::ListTokensResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::RegistrationToken>(
                    &p,
                    Some(&r.tenant),
                    None,
                    &r.page_token,
                    r.page_size,
                )
                .await?;
            Ok(pb::ListTokensResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(
        get_token,
        pb::ObjectRef,
        pb::RegistrationToken,
        |s, p, r| s
            .get::<pb::RegistrationToken>(&p, Some(&r.tenant), &r.id)
            .await
    );
    rpc!(
        create_token,
        pb::CreateTokenRequest,
        pb::RegistrationToken,
        |s, p, r| s
            .create_token(&p, &r.tenant, body(r.body), r.ttl_seconds)
            .await
    );
    rpc!(
        revoke_token,
        pb::ObjectRef,
        pb::RegistrationToken,
        |s, p, r| s.revoke_token(&p, &r.tenant, &r.id).await
    );
    rpc!(delete_token, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::RegistrationToken>(&p, Some(&r.tenant), &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_addresses,
        pb::ListRequest,
        pb::ListAddressesResponse,
        |s, p, r| {
            let pg = s
                .list_addresses(&p, &r.tenant, &r.cvlan, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListAddressesResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(
        get_address,
        pb::ObjectRef,
        pb::AddressReservation,
        |s, p, r| s.get_address(&p, &r.tenant, &r.cvlan, &r.id).await
    );
    rpc!(
        create_address,
        pb::CreateAddressRequest,
        pb::AddressReservation,
        |s, p, r| s
            .create_address(&p, &r.tenant, &r.cvlan, body(r.body))
            .await
    );
    rpc!(delete_address, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete_address(&p, &r.tenant, &r.cvlan, &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_vrouters,
        pb::ListRequest,
        pb::ListVroutersResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::Vrouter>(&p, None, None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListVroutersResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_vrouter, pb::ObjectRef, pb::Vrouter, |s, p, r| s
        .get::<pb::Vrouter>(&p, None, &r.id)
        .await);
    rpc!(
        create_vrouter,
        pb::CreateVrouterRequest,
        pb::Vrouter,
        |s, p, r| s.create::<pb::Vrouter>(&p, None, body(r.body)).await
    );
    rpc!(
        update_vrouter,
        pb::UpdateVrouterRequest,
        pb::Vrouter,
        |s, p, r| s
            .update::<pb::Vrouter>(&p, None, &r.id, body(r.body), &mask(r.update_mask))
            .await
    );
    rpc!(delete_vrouter, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::Vrouter>(&p, None, &r.id)
        .await
        .map(|_| pb::Empty {}));
    rpc!(
        create_vrouter_join_token,
        pb::CreateVrouterJoinTokenRequest,
        pb::VrouterJoinToken,
        |s, p, r| s
            .create_vrouter_join_token(&p, &r.vrouter, r.ttl_seconds)
            .await
    );

    rpc!(
        list_regions,
        pb::ListRequest,
        pb::ListRegionsResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::Region>(&p, None, None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListRegionsResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_region, pb::ObjectRef, pb::Region, |s, p, r| s
        .get::<pb::Region>(&p, None, &r.id)
        .await);
    rpc!(
        create_region,
        pb::CreateRegionRequest,
        pb::Region,
        |s, p, r| s.create::<pb::Region>(&p, None, body(r.body)).await
    );
    rpc!(
        update_region,
        pb::UpdateRegionRequest,
        pb::Region,
        |s, p, r| s
            .update::<pb::Region>(&p, None, &r.id, body(r.body), &mask(r.update_mask))
            .await
    );
    rpc!(delete_region, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::Region>(&p, None, &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_relays,
        pb::ListRequest,
        pb::ListRelaysResponse,
        |s, p, r| {
            let pg = s
                .list::<pb::Relay>(&p, None, None, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListRelaysResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
    rpc!(get_relay, pb::ObjectRef, pb::Relay, |s, p, r| s
        .get::<pb::Relay>(&p, None, &r.id)
        .await);
    rpc!(
        create_relay,
        pb::CreateRelayRequest,
        pb::Relay,
        |s, p, r| s.create::<pb::Relay>(&p, None, body(r.body)).await
    );
    rpc!(
        update_relay,
        pb::UpdateRelayRequest,
        pb::Relay,
        |s, p, r| s
            .update::<pb::Relay>(&p, None, &r.id, body(r.body), &mask(r.update_mask))
            .await
    );
    rpc!(delete_relay, pb::ObjectRef, pb::Empty, |s, p, r| s
        .delete::<pb::Relay>(&p, None, &r.id)
        .await
        .map(|_| pb::Empty {}));

    rpc!(
        list_audit,
        pb::ListAuditRequest,
        pb::ListAuditResponse,
        |s, p, r| {
            let f = AuditFilter {
                tenant_id: None,
                actor_id: r.actor_id.clone(),
                action: r.action.clone(),
                target_type: r.target_type.clone(),
                target_id: r.target_id.clone(),
                since: r.since.as_ref().map(time::micros),
                until: r.until.as_ref().map(time::micros),
            };
            let pg = s
                .list_audit(&p, opt(&r.tenant), f, &r.page_token, r.page_size)
                .await?;
            Ok(pb::ListAuditResponse {
                items: pg.items,
                next_page_token: pg.next,
            })
        }
    );
}
