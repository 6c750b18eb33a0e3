//! The command line: `cvlanctl [--server URL] [--output table|json] NOUN VERB …`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::parse;

/// CloudVLAN command-line client: manage tenants, CVLANs, users, policies and more over REST.
#[derive(Debug, Parser)]
#[command(name = "cvlanctl", version, propagate_version = true)]
pub struct Cli {
    /// Server URL [default: the one in the config file, else $CVLANCTL_SERVER, else
    /// http://127.0.0.1:8080].
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// API key (or session token) to use instead of the session saved by `login`.
    #[arg(
        long,
        global = true,
        env = "CVLANCTL_TOKEN",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub token: Option<Secret>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// A password or token from the command line; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Log in with email and password; the session is saved in the config file.
    Login {
        /// Account email.
        #[arg(long)]
        email: String,
        /// Password (CVLANCTL_PASSWORD keeps it out of the process list).
        #[arg(long, env = "CVLANCTL_PASSWORD", hide_env_values = true)]
        password: Secret,
    },
    /// End the saved session and forget its token.
    Logout,
    /// Show who the server thinks you are.
    Whoami,
    /// Tenants (superadmin creates and deletes).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// CVLANs of a tenant.
    #[command(subcommand)]
    Cvlan(CvlanCmd),
    /// Users of a tenant, or superadmins without --tenant.
    #[command(subcommand)]
    User(UserCmd),
    /// Groups of users, nodes and tags.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Access policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Registered nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Registration tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Virtual routers (global).
    #[command(subcommand)]
    Vrouter(VrouterCmd),
    /// Regions (global).
    #[command(subcommand)]
    Region(RegionCmd),
    /// Relays (global).
    #[command(subcommand)]
    Relay(RelayCmd),
    /// Address reservations in a CVLAN.
    #[command(subcommand)]
    Address(AddressCmd),
    /// Static external WireGuard peers of a CVLAN.
    #[command(subcommand, name = "external-peer")]
    ExternalPeer(ExternalPeerCmd),
    /// A tenant's single sign-on (OpenID Connect) providers.
    #[command(subcommand)]
    Sso(SsoCmd),
    /// The audit log of a tenant, or of everything without --tenant.
    #[command(subcommand)]
    Audit(AuditCmd),
}

/// The tenant an object lives in.
#[derive(Debug, Args)]
pub struct Tenant {
    /// Tenant name or id.
    #[arg(long)]
    pub tenant: String,
}

/// Paging for list verbs.
#[derive(Debug, Args, Default)]
pub struct Paging {
    /// Items per page (server default 100, at most 1000).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// Continue from a previous page's nextPageToken.
    #[arg(long, conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Fetch every page.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// List tenants.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a tenant.
    Get {
        /// Tenant name or id.
        tenant: String,
    },
    /// Create a tenant.
    Create {
        /// Name (lowercase letters, digits and '-').
        name: String,
        /// Human-friendly name.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Change a tenant's display name.
    Update {
        /// Tenant name or id.
        tenant: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Delete a tenant and everything in it.
    Delete {
        /// Tenant name or id.
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CvlanCmd {
    /// List CVLANs.
    List {
        #[command(flatten)]
        t: Tenant,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a CVLAN.
    Get {
        #[command(flatten)]
        t: Tenant,
        /// CVLAN name or id.
        cvlan: String,
    },
    /// Create a CVLAN.
    Create {
        #[command(flatten)]
        t: Tenant,
        /// Name.
        name: String,
        /// IPv4 prefix, e.g. 10.20.0.0/24.
        #[arg(long)]
        ipv4: String,
        /// IPv6 ULA prefix, e.g. fd20::/64 (generated when omitted).
        #[arg(long)]
        ipv6: Option<String>,
        /// mesh or hub-and-spoke.
        #[arg(long, value_parser = parse::cvlan_mode)]
        mode: Option<&'static str>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Change a CVLAN's name, description or mode.
    Update {
        #[command(flatten)]
        t: Tenant,
        /// CVLAN name or id.
        cvlan: String,
        /// New name.
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// mesh or hub-and-spoke.
        #[arg(long, value_parser = parse::cvlan_mode)]
        mode: Option<&'static str>,
    },
    /// Delete a CVLAN (it must have no nodes).
    Delete {
        #[command(flatten)]
        t: Tenant,
        /// CVLAN name or id.
        cvlan: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// List users (superadmins without --tenant).
    List {
        /// Tenant name or id; without it, superadmins.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a user.
    Get {
        #[arg(long)]
        tenant: Option<String>,
        /// User id or email.
        user: String,
    },
    /// Create a user; `--role superadmin` only without --tenant.
    Create {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        email: String,
        /// Initial password (8+ characters).
        #[arg(long, env = "CVLANCTL_USER_PASSWORD", hide_env_values = true)]
        password: Secret,
        /// viewer, operator, admin (tenant admin) or superadmin.
        #[arg(long, value_parser = parse::role)]
        role: &'static str,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Change a user's role, password or display name.
    Update {
        #[arg(long)]
        tenant: Option<String>,
        /// User id or email.
        user: String,
        /// viewer, operator, admin or superadmin.
        #[arg(long, value_parser = parse::role)]
        role: Option<&'static str>,
        /// New password (ends the user's sessions).
        #[arg(long)]
        password: Option<Secret>,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Delete a user.
    Delete {
        #[arg(long)]
        tenant: Option<String>,
        /// User id or email.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List groups.
    List {
        #[command(flatten)]
        t: Tenant,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a group.
    Get {
        #[command(flatten)]
        t: Tenant,
        /// Group name or id.
        group: String,
    },
    /// Create a group.
    Create {
        #[command(flatten)]
        t: Tenant,
        /// Name.
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// user:ID, node:ID or tag:T (repeatable).
        #[arg(long = "member", value_name = "KIND:VALUE", value_parser = parse::member)]
        members: Vec<Value>,
    },
    /// Rename a group or replace its description or members.
    Update {
        #[command(flatten)]
        t: Tenant,
        /// Group name or id.
        group: String,
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Replaces all members: user:ID, node:ID or tag:T (repeatable).
        #[arg(long = "member", value_name = "KIND:VALUE", value_parser = parse::member)]
        members: Vec<Value>,
        /// Remove every member.
        #[arg(long, conflicts_with = "members")]
        no_members: bool,
    },
    /// Delete a group (no policy may use it).
    Delete {
        #[command(flatten)]
        t: Tenant,
        /// Group name or id.
        group: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// List policies.
    List {
        #[command(flatten)]
        t: Tenant,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a policy and its rules.
    Get {
        #[command(flatten)]
        t: Tenant,
        /// Policy name or id.
        policy: String,
    },
    /// Create a policy.
    Create {
        #[command(flatten)]
        t: Tenant,
        /// Name.
        name: String,
        /// 'src=SEL[,SEL] dst=SEL[,SEL] [proto=tcp|udp|icmp|icmpv6|any] [ports=P,A-B]
        /// action=allow|deny'; SEL is any, group:X, tag:X, node:X or cidr:X (repeatable, in order).
        #[arg(long = "rule", value_name = "RULE", value_parser = parse::rule)]
        rules: Vec<Value>,
        /// Lower runs first.
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Rename a policy or replace its rules, priority or description.
    Update {
        #[command(flatten)]
        t: Tenant,
        /// Policy name or id.
        policy: String,
        #[arg(long)]
        rename: Option<String>,
        /// Replaces all rules (repeatable, in order); see `policy create --help`.
        #[arg(long = "rule", value_name = "RULE", value_parser = parse::rule)]
        rules: Vec<Value>,
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a policy.
    Delete {
        #[command(flatten)]
        t: Tenant,
        /// Policy name or id.
        policy: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    List {
        #[command(flatten)]
        t: Tenant,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a node.
    Get {
        #[command(flatten)]
        t: Tenant,
        /// Node name or id.
        node: String,
    },
    /// Rename or retag a node.
    Update {
        #[command(flatten)]
        t: Tenant,
        /// Node name or id.
        node: String,
        #[arg(long)]
        rename: Option<String>,
        /// Replaces all tags (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Remove every tag.
        #[arg(long, conflicts_with = "tags")]
        no_tags: bool,
    },
    /// Delete a node and release its addresses.
    Delete {
        #[command(flatten)]
        t: Tenant,
        /// Node name or id.
        node: String,
    },
    /// Expire a node now: it leaves every peer's map and must register again.
    Expire {
        #[command(flatten)]
        t: Tenant,
        /// Node name or id.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExternalPeerCmd {
    /// List static external WireGuard peers of a tenant.
    List {
        #[command(flatten)]
        t: Tenant,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show an external peer.
    Get {
        #[command(flatten)]
        t: Tenant,
        /// External peer name or id.
        peer: String,
    },
    /// Add a plain WireGuard peer (site router, stock app) that a CVLAN's nodes tunnel to.
    Create {
        #[command(flatten)]
        c: InCvlan,
        /// Name (DNS label).
        name: String,
        /// Its base64 WireGuard public key.
        #[arg(long)]
        public_key: String,
        /// Prefix routed to it and accepted from it (repeatable, at least one).
        #[arg(long = "allowed-ip", value_name = "CIDR", required = true)]
        allowed_ips: Vec<String>,
        /// Its underlay ip:port (omit when it dials in).
        #[arg(long)]
        endpoint: Option<String>,
        /// Keepalive interval in seconds.
        #[arg(long)]
        keepalive: Option<u32>,
        /// Only these nodes (ids) peer with it (repeatable; default every node of the CVLAN).
        #[arg(long = "node", value_name = "NODE_ID")]
        nodes: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Change an external peer's endpoint, allowed IPs, keepalive or nodes.
    Update {
        #[command(flatten)]
        t: Tenant,
        /// External peer name or id.
        peer: String,
        #[arg(long)]
        endpoint: Option<String>,
        /// Replaces all allowed IPs (repeatable).
        #[arg(long = "allowed-ip", value_name = "CIDR")]
        allowed_ips: Vec<String>,
        #[arg(long)]
        keepalive: Option<u32>,
        /// Replaces the node list (repeatable).
        #[arg(long = "node", value_name = "NODE_ID")]
        nodes: Vec<String>,
        /// Peer with every node of the CVLAN again.
        #[arg(long, conflicts_with = "nodes")]
        all_nodes: bool,
    },
    /// Remove an external peer.
    Delete {
        #[command(flatten)]
        t: Tenant,
        /// External peer name or id.
        peer: String,
    },
}

/// Settings of an SSO provider shared by create and update.
#[derive(Debug, clap::Args)]
pub struct SsoSettings {
    /// Label of the sign-in button.
    #[arg(long)]
    pub display_name: Option<String>,
    /// Client secret from the environment variable CVLAN_SSO_CLIENT_SECRET (never a flag: it
    /// would show in `ps` and shell history).
    #[arg(long)]
    pub client_secret_from_env: bool,
    /// Email domain allowed to sign in (repeatable; replaces the list; none = any).
    #[arg(long = "allowed-domain", value_name = "DOMAIN")]
    pub allowed_domains: Vec<String>,
    /// Claim carrying the IdP groups [server default: groups].
    #[arg(long)]
    pub groups_claim: Option<String>,
    /// IdP group → tenant group id, as CLAIM=GROUP_ID (repeatable; replaces the list).
    #[arg(long = "map", value_name = "CLAIM=GROUP_ID", value_parser = crate::parse::mapping)]
    pub mappings: Vec<(String, String)>,
    /// Role of users created at their first sign-in: viewer, operator, admin.
    #[arg(long, value_parser = crate::parse::role)]
    pub default_role: Option<&'static str>,
    /// Extra scope to request (repeatable; replaces the list).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SsoCmd {
    /// List a tenant's SSO providers (never their secrets).
    List {
        #[command(flatten)]
        t: Tenant,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show an SSO provider.
    Get {
        #[command(flatten)]
        t: Tenant,
        /// Provider name or id.
        provider: String,
    },
    /// Add an OpenID Connect provider; register the printed redirect URI at the provider.
    Create {
        #[command(flatten)]
        t: Tenant,
        /// Name (DNS label), used in sign-in links.
        name: String,
        /// Issuer URL (https).
        #[arg(long)]
        issuer: String,
        /// OAuth client id.
        #[arg(long)]
        client_id: String,
        #[command(flatten)]
        s: SsoSettings,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change an SSO provider (lists given replace the stored ones).
    Update {
        #[command(flatten)]
        t: Tenant,
        /// Provider name or id.
        provider: String,
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        client_id: Option<String>,
        #[command(flatten)]
        s: SsoSettings,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Remove an SSO provider.
    Delete {
        #[command(flatten)]
        t: Tenant,
        /// Provider name or id.
        provider: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// List registration tokens (never the token strings).
    List {
        #[command(flatten)]
        t: Tenant,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a registration token.
    Get {
        #[command(flatten)]
        t: Tenant,
        /// Token id.
        id: String,
    },
    /// Create a registration token; the token string is shown only once.
    Create {
        #[command(flatten)]
        t: Tenant,
        /// CVLAN name or id the token registers into.
        #[arg(long)]
        cvlan: String,
        /// Usable more than once.
        #[arg(long)]
        reusable: bool,
        /// Nodes registered with it are removed when they go away.
        #[arg(long)]
        ephemeral: bool,
        /// Lifetime such as 30m, 24h or 7d (server default 24h).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
        expires: Option<u64>,
        /// Tag for nodes registered with it (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Revoke a registration token.
    Revoke {
        #[command(flatten)]
        t: Tenant,
        /// Token id.
        id: String,
    },
    /// Delete a registration token.
    Delete {
        #[command(flatten)]
        t: Tenant,
        /// Token id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VrouterCmd {
    /// List vrouters.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a vrouter.
    Get {
        /// Vrouter name or id.
        vrouter: String,
    },
    /// Create a vrouter.
    Create {
        /// Name.
        name: String,
        /// Region name or id.
        #[arg(long)]
        region: Option<String>,
        /// Underlay endpoint ip:port.
        #[arg(long)]
        endpoint: Option<String>,
        /// WireGuard public key (base64).
        #[arg(long)]
        public_key: Option<String>,
        /// TENANT or TENANT/CVLAN (names or ids) it serves (repeatable).
        #[arg(long = "assign", value_name = "TENANT[/CVLAN]", value_parser = parse::assignment)]
        assign: Vec<(String, Option<String>)>,
    },
    /// Change a vrouter; --assign replaces all assignments.
    Update {
        /// Vrouter name or id.
        vrouter: String,
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        public_key: Option<String>,
        #[arg(long = "assign", value_name = "TENANT[/CVLAN]", value_parser = parse::assignment)]
        assign: Vec<(String, Option<String>)>,
        /// Remove every assignment.
        #[arg(long, conflicts_with = "assign")]
        no_assignments: bool,
    },
    /// Delete a vrouter.
    Delete {
        /// Vrouter name or id.
        vrouter: String,
    },
    /// Create a single-use join token vrouterd enrols with; prints only the token on stdout
    /// (expiry on stderr), e.g. `cvlanctl vrouter join-token gw1 > token`.
    JoinToken {
        /// Vrouter name or id.
        vrouter: String,
        /// Lifetime such as 30m, 1h or 7d (server default 1h, at most 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
        ttl: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegionCmd {
    /// List regions.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a region.
    Get {
        /// Region name or id.
        region: String,
    },
    /// Create a region.
    Create {
        /// Name.
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Rename a region or change its description.
    Update {
        /// Region name or id.
        region: String,
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a region (no vrouter or relay may use it).
    Delete {
        /// Region name or id.
        region: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RelayCmd {
    /// List relays.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a relay.
    Get {
        /// Relay name or id.
        relay: String,
    },
    /// Create a relay.
    Create {
        /// Name.
        name: String,
        /// Region name or id.
        #[arg(long)]
        region: Option<String>,
        /// host:port the relay listens on.
        #[arg(long)]
        endpoint: String,
    },
    /// Change a relay.
    Update {
        /// Relay name or id.
        relay: String,
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Delete a relay.
    Delete {
        /// Relay name or id.
        relay: String,
    },
}

/// The CVLAN an address lives in.
#[derive(Debug, Args)]
pub struct InCvlan {
    /// Tenant name or id.
    #[arg(long)]
    pub tenant: String,
    /// CVLAN name or id.
    #[arg(long)]
    pub cvlan: String,
}

#[derive(Debug, Subcommand)]
pub enum AddressCmd {
    /// List address reservations.
    List {
        #[command(flatten)]
        c: InCvlan,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a reservation.
    Get {
        #[command(flatten)]
        c: InCvlan,
        /// Reservation id or address.
        address: String,
    },
    /// Reserve an address: the one given with --ip, or the lowest free one.
    Create {
        #[command(flatten)]
        c: InCvlan,
        /// The address to reserve.
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Release a reservation.
    Delete {
        #[command(flatten)]
        c: InCvlan,
        /// Reservation id or address.
        address: String,
    },
}

/// Audit filters shared by list and export.
#[derive(Debug, Args)]
pub struct AuditFilter {
    /// Tenant name or id; without it, every tenant (superadmin).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Action, e.g. cvlan.create.
    #[arg(long)]
    pub action: Option<String>,
    /// Actor (user) id.
    #[arg(long)]
    pub actor: Option<String>,
    /// Target type, e.g. cvlan.
    #[arg(long)]
    pub target_type: Option<String>,
    /// Target id.
    #[arg(long)]
    pub target_id: Option<String>,
    /// Not before: RFC 3339 time or a duration ago (24h).
    #[arg(long, value_parser = parse::time_bound)]
    pub since: Option<String>,
    /// Not after: RFC 3339 time or a duration ago.
    #[arg(long, value_parser = parse::time_bound)]
    pub until: Option<String>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events, newest first.
    List {
        #[command(flatten)]
        filter: AuditFilter,
        #[command(flatten)]
        paging: Paging,
    },
    /// Export every matching event.
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn documented_examples_parse() {
        for args in [
            &["cvlanctl", "tenant", "create", "acme"][..],
            &[
                "cvlanctl",
                "cvlan",
                "create",
                "--tenant",
                "acme",
                "lab",
                "--ipv4",
                "10.20.0.0/24",
                "--ipv6",
                "fd20::/64",
            ],
            &[
                "cvlanctl",
                "user",
                "create",
                "--tenant",
                "acme",
                "--email",
                "v@acme.test",
                "--password",
                "P",
                "--role",
                "viewer",
            ],
            &[
                "cvlanctl",
                "address",
                "create",
                "--tenant",
                "acme",
                "--cvlan",
                "lab",
                "--ip",
                "10.20.0.7",
            ],
            &[
                "cvlanctl",
                "token",
                "create",
                "--tenant",
                "acme",
                "--cvlan",
                "lab",
                "--reusable",
                "--expires",
                "24h",
                "--tag",
                "t",
            ],
            &[
                "cvlanctl", "audit", "list", "--tenant", "acme", "--output", "json",
            ],
            &[
                "cvlanctl",
                "policy",
                "create",
                "--tenant",
                "acme",
                "p",
                "--rule",
                "src=any dst=any action=allow",
                "--priority",
                "-5",
            ],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn debug_output_never_shows_passwords_or_tokens() {
        let cli = Cli::try_parse_from([
            "cvlanctl",
            "--token",
            "cvk_tok3n",
            "user",
            "create",
            "--tenant",
            "a",
            "--email",
            "e@x.test",
            "--password",
            "hunter2hunter2",
            "--role",
            "viewer",
        ])
        .unwrap();
        let d = format!("{cli:?}");
        assert!(
            !d.contains("cvk_tok3n") && !d.contains("hunter2hunter2"),
            "{d}"
        );
    }

    #[test]
    fn bad_rules_and_durations_are_usage_errors() {
        let e = Cli::try_parse_from([
            "cvlanctl",
            "token",
            "create",
            "--tenant",
            "a",
            "--cvlan",
            "b",
            "--expires",
            "soon",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from([
            "cvlanctl", "policy", "create", "--tenant", "a", "p", "--rule", "src=any",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
