//! `--bootstrap tables.toml`: the gateway's tables from a local file, no control plane (lab
//! and appliance bring-up). The file is translated into the same `GatewayTables` message the
//! control plane streams, so both paths share one model. Format: see README.md.

use std::collections::HashSet;

use cvlan_proto::v1 as pb;
use serde::Deserialize;

/// Why a bootstrap file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Not valid TOML for the format.
    #[error("bootstrap file: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range or refers to something undefined.
    #[error("bootstrap file: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenants: Vec<Tenant>,
    #[serde(default)]
    peers: Vec<Peer>,
    #[serde(default)]
    acls: Vec<Acl>,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tenant {
    id: String,
    #[serde(default = "deny")]
    default_action: String,
}

fn deny() -> String {
    "deny".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Peer {
    id: String,
    tenant: String,
    public_key: String,
    #[serde(default)]
    allowed_ips: Vec<String>,
    #[serde(default)]
    endpoints: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Acl {
    tenant: String,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    destinations: Vec<String>,
    #[serde(default = "any")]
    protocol: String,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    source_ports: Vec<String>,
    /// TCP segments match only with ACK or RST set (a reply path that cannot open connections).
    #[serde(default)]
    established: bool,
    action: String,
}

fn any() -> String {
    "any".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    tenant: String,
    prefix: String,
    peer: String,
}

fn action(s: &str) -> Result<i32, BootstrapError> {
    match s {
        "allow" => Ok(pb::Action::Allow as i32),
        "deny" => Ok(pb::Action::Deny as i32),
        o => Err(BootstrapError::Invalid(format!(
            "action {o:?} (allow or deny)"
        ))),
    }
}

fn ports(v: &[String]) -> Result<Vec<pb::PortRange>, BootstrapError> {
    v.iter()
        .map(|s| {
            let bad = || BootstrapError::Invalid(format!("port range {s:?}"));
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let b: u16 = b.trim().parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            Ok(pb::PortRange {
                first: a.into(),
                last: b.into(),
            })
        })
        .collect()
}

fn cidr(s: &str) -> Result<(), BootstrapError> {
    let ok = s.parse::<ipnet::IpNet>().is_ok() || s.parse::<std::net::IpAddr>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(BootstrapError::Invalid(format!("address or prefix {s:?}")))
    }
}

/// Parses a bootstrap file into the tables message.
///
/// # Errors
/// [`BootstrapError`] with the offending value.
pub fn parse(text: &str) -> Result<pb::GatewayTables, BootstrapError> {
    let f: File = toml::from_str(text)?;
    let tenants: HashSet<&str> = f.tenants.iter().map(|t| t.id.as_str()).collect();
    let known = |t: &str| {
        if tenants.contains(t) {
            Ok(())
        } else {
            Err(BootstrapError::Invalid(format!("unknown tenant {t:?}")))
        }
    };
    let mut out = pb::GatewayTables {
        version: 1,
        ..Default::default()
    };
    for (i, t) in f.tenants.iter().enumerate() {
        out.tenants.push(pb::GatewayTenant {
            tenant_id: t.id.clone(),
            index: i as u32,
            default_action: action(&t.default_action)?,
        });
    }
    for p in &f.peers {
        known(&p.tenant)?;
        for a in &p.allowed_ips {
            cidr(a)?;
        }
        for e in &p.endpoints {
            e.parse::<std::net::SocketAddr>()
                .map_err(|_| BootstrapError::Invalid(format!("endpoint {e:?}")))?;
        }
        out.peers.push(pb::GatewayPeer {
            node_id: p.id.clone(),
            tenant_id: p.tenant.clone(),
            cvlan_id: String::new(),
            wg_public_key: p.public_key.clone(),
            allowed_ips: p.allowed_ips.clone(),
            endpoint: p.endpoints.first().cloned().unwrap_or_default(),
            endpoints: p.endpoints.clone(),
        });
    }
    for a in &f.acls {
        known(&a.tenant)?;
        for c in a.sources.iter().chain(&a.destinations) {
            cidr(c)?;
        }
        let protocol = match a.protocol.as_str() {
            "any" => pb::Protocol::Any,
            "icmp" => pb::Protocol::Icmp,
            "tcp" => pb::Protocol::Tcp,
            "udp" => pb::Protocol::Udp,
            "icmpv6" => pb::Protocol::Icmpv6,
            o => return Err(BootstrapError::Invalid(format!("protocol {o:?}"))),
        };
        out.acls.push(pb::AclEntry {
            tenant_id: a.tenant.clone(),
            source_cidrs: a.sources.clone(),
            destination_cidrs: a.destinations.clone(),
            protocol: protocol as i32,
            ports: ports(&a.ports)?,
            action: action(&a.action)?,
            source_ports: ports(&a.source_ports)?,
            established: a.established,
        });
    }
    for r in &f.routes {
        known(&r.tenant)?;
        cidr(&r.prefix)?;
        out.routes.push(pb::RouteEntry {
            tenant_id: r.tenant.clone(),
            prefix: r.prefix.clone(),
            peer_node_id: r.peer.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example, kept in sync by this test.
    pub const EXAMPLE: &str = include_str!("../examples/tables.toml");

    #[test]
    fn the_readme_example_parses_into_tables_the_model_compiles() {
        let t = parse(EXAMPLE).expect("example parses");
        assert_eq!(t.tenants.len(), 2);
        assert_eq!(t.peers.len(), 3);
        assert!(!t.acls.is_empty());
        let mut m = crate::model::Model::default();
        m.apply_snapshot(&t).expect("applies");
        m.build().build(1024).expect("compiles");
    }

    #[test]
    fn unknown_tenants_bad_ports_and_unknown_keys_are_refused() {
        let e = parse("[[peers]]\nid='a'\ntenant='x'\npublic_key='k'\n").expect_err("tenant");
        assert!(e.to_string().contains("unknown tenant"), "{e}");
        let e = parse("[[tenants]]\nid='t'\n[[acls]]\ntenant='t'\naction='allow'\nports=['9-1']\n")
            .expect_err("ports");
        assert!(e.to_string().contains("port range"), "{e}");
        assert!(parse("[[tenants]]\nid='t'\ncolour='red'\n").is_err());
    }
}
