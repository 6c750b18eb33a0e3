//! Role-based access control as one pure function, used by every REST and gRPC endpoint
//! through the service layer.

use cvlan_proto::v1::Role;

/// What is being touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A tenant object itself.
    Tenant,
    /// CVLANs.
    Cvlan,
    /// Users.
    User,
    /// Groups.
    Group,
    /// Policies.
    Policy,
    /// Nodes.
    Node,
    /// Registration tokens.
    Token,
    /// Address reservations.
    Address,
    /// The audit log.
    Audit,
    /// The caller's own API keys.
    ApiKey,
    /// Gateways (global).
    Vrouter,
    /// Regions (global).
    Region,
    /// Relays (global).
    Relay,
}

impl Resource {
    /// Every resource, for exhaustive tests.
    pub const ALL: [Resource; 13] = [
        Resource::Tenant,
        Resource::Cvlan,
        Resource::User,
        Resource::Group,
        Resource::Policy,
        Resource::Node,
        Resource::Token,
        Resource::Address,
        Resource::Audit,
        Resource::ApiKey,
        Resource::Vrouter,
        Resource::Region,
        Resource::Relay,
    ];
}

/// Read or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// list / get / export.
    Read,
    /// create / update / delete / revoke.
    Write,
}

/// Where the target lives relative to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Not tenant-scoped (the tenant list, vrouters, regions, relays, the global audit log).
    Global,
    /// In the caller's own tenant.
    OwnTenant,
    /// In another tenant.
    OtherTenant,
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 403: the caller may know the object exists but may not do this.
    Forbidden,
    /// 404: the caller must not learn the object exists.
    NotFound,
}

/// Decides whether `role` may `verb` a `resource` at `target`.
pub fn decide(role: Role, resource: Resource, verb: Verb, target: Target) -> Decision {
    use Decision::*;
    if role == Role::Superadmin {
        return Allow;
    }
    if role == Role::Unspecified {
        return Forbidden;
    }
    match target {
        Target::OtherTenant => NotFound,
        Target::Global => match (resource, verb) {
            // Shared infrastructure, no tenant data: anyone signed in may look.
            (Resource::Region | Resource::Relay, Verb::Read) => Allow,
            // Own API keys are per caller, not per tenant.
            (Resource::ApiKey, _) => Allow,
            _ => Forbidden,
        },
        Target::OwnTenant => match (role, verb) {
            (_, Verb::Read) => match resource {
                Resource::Vrouter => Forbidden,
                _ => Allow,
            },
            (_, Verb::Write) if resource == Resource::ApiKey => Allow,
            (Role::TenantAdmin, Verb::Write) => match resource {
                Resource::Vrouter | Resource::Region | Resource::Relay | Resource::Audit => {
                    Forbidden
                }
                _ => Allow,
            },
            (Role::Operator, Verb::Write) => match resource {
                Resource::Cvlan
                | Resource::Node
                | Resource::Policy
                | Resource::Token
                | Resource::Address => Allow,
                _ => Forbidden,
            },
            _ => Forbidden,
        },
    }
}

/// Rank for "may grant": lower is more powerful.
fn rank(r: Role) -> u8 {
    match r {
        Role::Superadmin => 0,
        Role::TenantAdmin => 1,
        Role::Operator => 2,
        Role::Viewer => 3,
        Role::Unspecified => u8::MAX,
    }
}

/// Whether a caller with `granter` may give `role` to a user or API key.
/// Only superadmins make superadmins; nobody grants above their own role.
pub fn may_grant(granter: Role, role: Role) -> bool {
    role != Role::Unspecified
        && (granter == Role::Superadmin
            || (role != Role::Superadmin && rank(granter) <= rank(role)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    const ROLES: [Role; 5] = [
        Role::Superadmin,
        Role::TenantAdmin,
        Role::Operator,
        Role::Viewer,
        Role::Unspecified,
    ];

    /// The matrix written out independently of `decide`, row by row.
    fn expected(role: Role, res: Resource, verb: Verb, target: Target) -> Decision {
        use Resource as R;
        match role {
            Role::Superadmin => Allow,
            Role::Unspecified => Forbidden,
            _ if target == Target::OtherTenant => NotFound,
            _ if target == Target::Global => {
                if res == R::ApiKey || (verb == Verb::Read && matches!(res, R::Region | R::Relay)) {
                    Allow
                } else {
                    Forbidden
                }
            }
            _ if verb == Verb::Read => {
                if res == R::Vrouter {
                    Forbidden
                } else {
                    Allow
                }
            }
            _ if res == R::ApiKey => Allow,
            Role::TenantAdmin => {
                if [
                    R::Tenant,
                    R::Cvlan,
                    R::User,
                    R::Group,
                    R::Policy,
                    R::Node,
                    R::Token,
                    R::Address,
                ]
                .contains(&res)
                {
                    Allow
                } else {
                    Forbidden
                }
            }
            Role::Operator => {
                if [R::Cvlan, R::Node, R::Policy, R::Token, R::Address].contains(&res) {
                    Allow
                } else {
                    Forbidden
                }
            }
            _ => Forbidden,
        }
    }

    #[test]
    fn every_role_resource_verb_and_target_matches_the_written_matrix() {
        let mut n = 0;
        for role in ROLES {
            for res in Resource::ALL {
                for verb in [Verb::Read, Verb::Write] {
                    for target in [Target::Global, Target::OwnTenant, Target::OtherTenant] {
                        assert_eq!(
                            decide(role, res, verb, target),
                            expected(role, res, verb, target),
                            "{role:?} {res:?} {verb:?} {target:?}"
                        );
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 5 * 13 * 2 * 3);
    }

    #[test]
    fn other_tenants_objects_are_never_revealed_to_tenant_roles() {
        for role in [Role::TenantAdmin, Role::Operator, Role::Viewer] {
            for res in Resource::ALL {
                for verb in [Verb::Read, Verb::Write] {
                    assert_eq!(decide(role, res, verb, Target::OtherTenant), NotFound);
                }
            }
        }
    }

    #[test]
    fn viewers_never_write_anything_but_their_own_api_keys() {
        for res in Resource::ALL {
            for t in [Target::Global, Target::OwnTenant] {
                let d = decide(Role::Viewer, res, Verb::Write, t);
                assert_eq!(d == Allow, res == Resource::ApiKey, "{res:?} {t:?}");
            }
        }
    }

    #[test]
    fn nobody_grants_above_their_own_role() {
        for g in ROLES {
            for r in ROLES {
                let ok = may_grant(g, r);
                if g == Role::Superadmin {
                    assert_eq!(ok, r != Role::Unspecified);
                } else {
                    assert!(
                        !ok || (r != Role::Superadmin
                            && rank(g) <= rank(r)
                            && r != Role::Unspecified)
                    );
                }
            }
        }
        assert!(!may_grant(Role::TenantAdmin, Role::Superadmin));
        assert!(may_grant(Role::TenantAdmin, Role::Viewer));
        assert!(!may_grant(Role::Operator, Role::TenantAdmin));
        assert!(!may_grant(Role::Viewer, Role::Operator));
    }
}
