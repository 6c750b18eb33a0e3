//! Network maps for connected nodes.
//!
//! One coordinator task (the hub) holds, for each tenant that has connected nodes, an
//! in-memory copy of what maps are made of (CVLANs, nodes, groups, policies, external peers).
//! A change event is applied by re-reading only the changed object; the hub then works out
//! which connected nodes it affects and sends each of them the difference from what it last
//! received, as a versioned delta. A node that changes touches the sessions of its own CVLAN
//! (one peer entry each, plus their filters when addresses/tags/presence changed); a policy or
//! group change touches the filters of the tenant's connected nodes. Nothing rebuilds every
//! map of every node.
//!
//! The per-map computations (`peer_of_*`, `State::build`, `diff`) are plain functions.
//!
//! The hub also holds the vrouters' gateway streams: a vrouter's tenants' worlds stay loaded
//! while it is connected, and any change to them (or to the vrouter) marks its stream dirty;
//! dirty streams get a fresh GatewayTables snapshot (from `gateway::tables`) after a short
//! debounce, when something in it changed. In a hub-and-spoke CVLAN served by an enrolled
//! vrouter a node's only node-peer is that vrouter (`gateway::gateway_of`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cvlan_policy as policy;
use cvlan_proto::v1 as pb;
use cvlan_store::entity::{self, Entity, Scope};
use cvlan_store::time;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tonic::Status;

use crate::error::{ApiError, ApiResult};
use crate::gateway;
use crate::nodes::expired;
use crate::service::{Change, Service};

/// Where a session's updates go.
pub type Out = mpsc::Sender<Result<pb::SyncResponse, Status>>;
/// Where a gateway stream's updates go.
pub type GwOut = mpsc::Sender<Result<pb::GatewaySyncResponse, Status>>;
/// How long a changed gateway stream waits for more changes before its snapshot is rebuilt.
const GW_DEBOUNCE: Duration = Duration::from_millis(100);

/// How long a disconnected node's last map is kept for a resume.
const PARK_TTL: Duration = Duration::from_secs(600);
/// How often presence is refreshed and expiries are checked.
const TICK: Duration = Duration::from_secs(2);
const PRESENCE_EVERY: Duration = Duration::from_secs(60);

enum Cmd {
    Connect {
        node: Box<pb::Node>,
        since: u64,
        out: Out,
        conn: u64,
    },
    Disconnect {
        node_id: String,
        conn: u64,
    },
    Stats {
        reply: oneshot::Sender<HubStats>,
    },
    GatewayConnect {
        vrouter_id: String,
        out: GwOut,
        conn: u64,
    },
    GatewayDisconnect {
        vrouter_id: String,
        conn: u64,
    },
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connected sessions.
    pub sessions: usize,
    /// Tenants held in memory.
    pub tenants: usize,
    /// Deltas and snapshots sent since start.
    pub sent: u64,
    /// Filters compiled since start.
    pub filters_compiled: u64,
    /// Connected gateway streams.
    pub gateways: usize,
    /// Gateway snapshots sent since start.
    pub gateway_sent: u64,
}

/// Handle to the hub task.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::UnboundedSender<Cmd>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
}

impl Hub {
    /// Starts the hub; it stops when `stop` flips.
    pub fn start(svc: Arc<Service>, mut stop: watch::Receiver<bool>) -> Hub {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut changes = svc.changes.subscribe();
        let mut task = Task {
            svc,
            worlds: HashMap::new(),
            sessions: HashMap::new(),
            parked: HashMap::new(),
            // Versions from an earlier process are lower: a node resuming across a restart
            // gets a snapshot.
            version: u64::try_from(time::now_micros()).unwrap_or(1),
            stats: HubStats::default(),
            last_presence: Instant::now(),
            vrouters: None,
            gateways: HashMap::new(),
            gw_dirty: BTreeSet::new(),
            gw_flush_at: None,
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                let flush_at = task.gw_flush_at;
                tokio::select! {
                    _ = async {
                        match flush_at {
                            Some(t) => tokio::time::sleep_until(t.into()).await,
                            None => std::future::pending().await,
                        }
                    } => task.flush_gateways(),
                    c = rx.recv() => match c {
                        Some(c) => task.command(c).await,
                        None => break,
                    },
                    ch = changes.recv() => match ch {
                        Ok(ch) => {
                            let t0 = Instant::now();
                            task.change(&ch).await;
                            metrics::histogram!("cvlan_netmap_change_seconds").record(t0.elapsed().as_secs_f64());
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "change events lagged; resynchronising every map");
                            task.resync_all().await;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick() => task.tick().await,
                    _ = stop.changed() => break,
                }
            }
            for (_, s) in task.sessions.drain() {
                let _ = s
                    .out
                    .try_send(Err(Status::unavailable("control plane shutting down")));
            }
            for (_, g) in task.gateways.drain() {
                let _ = g
                    .out
                    .try_send(Err(Status::unavailable("control plane shutting down")));
            }
        });
        Hub {
            tx,
            next_conn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    /// Attaches a node's stream; the first message (snapshot, or a delta when `since` is the
    /// version it last applied) follows on `out`. Returns the connection id for `disconnect`.
    pub fn connect(&self, node: pb::Node, since: u64, out: Out) -> u64 {
        let conn = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.tx.send(Cmd::Connect {
            node: Box::new(node),
            since,
            out,
            conn,
        });
        conn
    }

    /// Detaches a stream (its map is kept for a while for a resume).
    pub fn disconnect(&self, node_id: &str, conn: u64) {
        let _ = self.tx.send(Cmd::Disconnect {
            node_id: node_id.to_string(),
            conn,
        });
    }

    /// Attaches a vrouter's gateway stream; a GatewayTables snapshot follows on `out`, then a
    /// fresh one after every relevant change. Returns the connection id for
    /// `disconnect_gateway`.
    pub fn connect_gateway(&self, vrouter_id: &str, out: GwOut) -> u64 {
        let conn = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.tx.send(Cmd::GatewayConnect {
            vrouter_id: vrouter_id.to_string(),
            out,
            conn,
        });
        conn
    }

    /// Detaches a gateway stream.
    pub fn disconnect_gateway(&self, vrouter_id: &str, conn: u64) {
        let _ = self.tx.send(Cmd::GatewayDisconnect {
            vrouter_id: vrouter_id.to_string(),
            conn,
        });
    }

    /// Current counters.
    pub async fn stats(&self) -> HubStats {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Stats { reply });
        rx.await.unwrap_or_default()
    }
}

/// What a node was last sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Map version.
    pub version: u64,
    /// The node itself (presence fields cleared).
    pub self_node: pb::Node,
    /// Peers by id.
    pub peers: BTreeMap<String, pb::Peer>,
    /// Inbound filter.
    pub filter: pb::PacketFilter,
    /// DNS settings.
    pub dns: pb::DnsConfig,
}

struct Session {
    conn: u64,
    out: Out,
    tenant: String,
    cvlan: String,
    sent: State,
}

struct Parked {
    at: Instant,
    sent: State,
}

struct GwSession {
    conn: u64,
    out: GwOut,
    vrouter: pb::Vrouter,
    /// Tenant indexes of this stream.
    index: BTreeMap<String, u32>,
    /// The last tables sent (their version included).
    sent: pb::GatewayTables,
}

/// What maps of one tenant are made of.
#[derive(Default)]
pub struct World {
    /// CVLANs by id.
    pub cvlans: HashMap<String, pb::Cvlan>,
    /// Nodes by id.
    pub nodes: HashMap<String, pb::Node>,
    /// Node ids per CVLAN id.
    pub members: HashMap<String, BTreeSet<String>>,
    /// Groups by id.
    pub groups: HashMap<String, pb::Group>,
    /// Policies by id.
    pub policies: HashMap<String, pb::Policy>,
    /// External peers by id.
    pub externals: HashMap<String, pb::ExternalPeer>,
    /// Vrouters with an assignment in this tenant.
    pub vrouters: Vec<pb::Vrouter>,
    /// Nodes already treated as expired.
    expired: HashSet<String>,
}

impl World {
    /// Adds, replaces (`Some`) or removes (`None`) node `id`.
    pub fn put_node(&mut self, n: Option<pb::Node>, id: &str) {
        if let Some(old) = self.nodes.remove(id)
            && let Some(m) = self.members.get_mut(&old.cvlan_id)
        {
            m.remove(id);
        }
        if let Some(n) = n {
            self.members
                .entry(n.cvlan_id.clone())
                .or_default()
                .insert(n.id.clone());
            self.nodes.insert(n.id.clone(), n);
        }
    }

    /// Nodes of a CVLAN other nodes may see: with a key, not expired.
    pub fn visible(&self, cvlan: &str, now: i64) -> Vec<&pb::Node> {
        self.members
            .get(cvlan)
            .into_iter()
            .flatten()
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| !n.wg_public_key.is_empty() && !expired(n, now))
            .collect()
    }
}

/// The peer entry other nodes get for a node.
pub fn peer_of_node(n: &pb::Node) -> pb::Peer {
    let mut allowed = Vec::with_capacity(2);
    if !n.ipv4.is_empty() {
        allowed.push(format!("{}/32", n.ipv4));
    }
    if !n.ipv6.is_empty() {
        allowed.push(format!("{}/128", n.ipv6));
    }
    pb::Peer {
        node_id: n.id.clone(),
        name: n.name.clone(),
        wg_public_key: n.wg_public_key.clone(),
        allowed_ips: allowed,
        endpoints: n.endpoints.clone(),
        persistent_keepalive_seconds: 0,
        gateway: false,
        external: false,
    }
}

/// The peer entry nodes get for a static external peer.
pub fn peer_of_external(e: &pb::ExternalPeer) -> pb::Peer {
    pb::Peer {
        node_id: e.id.clone(),
        name: e.name.clone(),
        wg_public_key: e.wg_public_key.clone(),
        allowed_ips: e.allowed_ips.clone(),
        endpoints: if e.endpoint.is_empty() {
            Vec::new()
        } else {
            vec![pb::Endpoint {
                address: e.endpoint.clone(),
                kind: "static".into(),
            }]
        },
        persistent_keepalive_seconds: e.persistent_keepalive_seconds,
        gateway: false,
        external: true,
    }
}

fn external_applies(e: &pb::ExternalPeer, viewer: &pb::Node) -> bool {
    e.cvlan_id == viewer.cvlan_id && (e.node_ids.is_empty() || e.node_ids.contains(&viewer.id))
}

/// The node as its own map shows it: presence fields change without a map change.
fn self_view(n: &pb::Node) -> pb::Node {
    let mut n = n.clone();
    n.online = false;
    n.last_seen = None;
    n.updated_at = None;
    n
}

/// A node as the policy compiler sees it.
pub fn node_info(n: &pb::Node) -> policy::NodeInfo {
    policy::NodeInfo {
        id: n.id.clone(),
        addresses: [&n.ipv4, &n.ipv6]
            .into_iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .collect(),
        tags: n.tags.clone(),
        user: None,
    }
}

fn proto_of(p: i32) -> policy::Proto {
    match pb::Protocol::try_from(p).unwrap_or(pb::Protocol::Any) {
        pb::Protocol::Any => policy::Proto::Any,
        pb::Protocol::Icmp => policy::Proto::Icmp,
        pb::Protocol::Tcp => policy::Proto::Tcp,
        pb::Protocol::Udp => policy::Proto::Udp,
        pb::Protocol::Icmpv6 => policy::Proto::Icmpv6,
    }
}

fn proto_to_pb(p: policy::Proto) -> pb::Protocol {
    match p {
        policy::Proto::Any => pb::Protocol::Any,
        policy::Proto::Icmp => pb::Protocol::Icmp,
        policy::Proto::Tcp => pb::Protocol::Tcp,
        policy::Proto::Udp => pb::Protocol::Udp,
        policy::Proto::Icmpv6 => pb::Protocol::Icmpv6,
    }
}

/// Policy rules of a tenant in evaluation order, with group and node names resolved to ids.
pub fn rules_of(w: &World) -> Vec<policy::Rule> {
    let mut ps: Vec<&pb::Policy> = w.policies.values().collect();
    ps.sort_by(|a, b| (a.priority, &a.name, &a.id).cmp(&(b.priority, &b.name, &b.id)));
    let group_id = |k: &str| -> String {
        if w.groups.contains_key(k) {
            return k.to_string();
        }
        w.groups
            .values()
            .find(|g| g.name == k)
            .map(|g| g.id.clone())
            .unwrap_or_default()
    };
    let node_id = |k: &str| -> String {
        if w.nodes.contains_key(k) {
            return k.to_string();
        }
        w.nodes
            .values()
            .find(|n| n.name == k)
            .map(|n| n.id.clone())
            .unwrap_or_default()
    };
    let sel = |s: &pb::Selector| -> Option<policy::Selector> {
        use pb::selector::Selector as S;
        Some(match s.selector.as_ref()? {
            S::Any(_) => policy::Selector::Any,
            S::Group(g) => policy::Selector::Group(group_id(g)),
            S::Tag(t) => policy::Selector::Tag(t.clone()),
            S::Node(n) => policy::Selector::Node(node_id(n)),
            S::Cidr(c) => policy::Selector::Cidr(c.parse().ok()?),
        })
    };
    ps.iter()
        .flat_map(|p| p.rules.iter())
        .map(|r| policy::Rule {
            sources: r.sources.iter().filter_map(sel).collect(),
            destinations: r.destinations.iter().filter_map(sel).collect(),
            proto: proto_of(r.protocol),
            ports: r
                .ports
                .iter()
                .map(|p| policy::PortRange {
                    first: u16::try_from(p.first).unwrap_or(u16::MAX),
                    last: u16::try_from(p.last).unwrap_or(u16::MAX),
                })
                .collect(),
            // Anything but an explicit allow denies.
            action: if r.action == pb::Action::Allow as i32 {
                policy::Action::Allow
            } else {
                policy::Action::Deny
            },
        })
        .collect()
}

/// A tenant's groups as the policy compiler sees them.
pub fn groups_of(w: &World) -> Vec<policy::Group> {
    w.groups
        .values()
        .map(|g| {
            let mut out = policy::Group {
                id: g.id.clone(),
                nodes: Vec::new(),
                tags: Vec::new(),
                users: Vec::new(),
            };
            for m in &g.members {
                use pb::group_member::Member as M;
                match &m.member {
                    Some(M::NodeId(n)) => out.nodes.push(n.clone()),
                    Some(M::Tag(t)) => out.tags.push(t.clone()),
                    Some(M::UserId(u)) => out.users.push(u.clone()),
                    None => {}
                }
            }
            out
        })
        .collect()
}

/// Proto form of a compiled filter.
pub fn filter_to_pb(f: &policy::Filter) -> pb::PacketFilter {
    pb::PacketFilter {
        rules: f
            .rules
            .iter()
            .map(|r| pb::FilterRule {
                source_cidrs: r.sources.iter().map(ToString::to_string).collect(),
                destination_cidrs: r.destinations.iter().map(ToString::to_string).collect(),
                protocol: proto_to_pb(r.proto) as i32,
                ports: r
                    .ports
                    .iter()
                    .map(|p| pb::PortRange {
                        first: u32::from(p.first),
                        last: u32::from(p.last),
                    })
                    .collect(),
                action: match r.action {
                    policy::Action::Allow => pb::Action::Allow,
                    policy::Action::Deny => pb::Action::Deny,
                } as i32,
            })
            .collect(),
    }
}

/// Inbound filters for `viewers` (node ids of one CVLAN), compiled against that CVLAN's
/// visible nodes and the tenant's groups and policies.
pub fn filters_for(
    w: &World,
    cvlan: &str,
    viewers: &[String],
    now: i64,
) -> HashMap<String, pb::PacketFilter> {
    let nodes: Vec<policy::NodeInfo> = w.visible(cvlan, now).into_iter().map(node_info).collect();
    let groups = groups_of(w);
    let rules = rules_of(w);
    let c = policy::Compiler::new(&nodes, &groups, &rules);
    viewers
        .iter()
        .map(|v| (v.clone(), filter_to_pb(&c.inbound(v))))
        .collect()
}

fn dns_for(w: &World, n: &pb::Node) -> pb::DnsConfig {
    let cv = w.cvlans.get(&n.cvlan_id).map_or("", |c| c.name.as_str());
    pb::DnsConfig {
        nameservers: Vec::new(),
        search_domains: if cv.is_empty() {
            Vec::new()
        } else {
            vec![format!("{cv}.cvlan.internal")]
        },
        // Names come with the peers (Peer.name); repeating every name in every node's DNS
        // config would make each join cost O(nodes) per node.
        records: HashMap::new(),
    }
}

impl State {
    /// The full map of `n` in `w`.
    pub fn build(w: &World, n: &pb::Node, now: i64) -> State {
        let mut peers = BTreeMap::new();
        let hub = gateway::gateway_of(w, &n.cvlan_id)
            .zip(w.cvlans.get(&n.cvlan_id))
            .map(|(v, cv)| gateway::peer_of_vrouter(v, cv));
        match hub {
            Some(g) => {
                peers.insert(g.node_id.clone(), g);
            }
            None => {
                for o in w.visible(&n.cvlan_id, now) {
                    if o.id != n.id {
                        peers.insert(o.id.clone(), peer_of_node(o));
                    }
                }
            }
        }
        for e in w.externals.values() {
            if external_applies(e, n) {
                peers.insert(e.id.clone(), peer_of_external(e));
            }
        }
        let filter = filters_for(w, &n.cvlan_id, std::slice::from_ref(&n.id), now)
            .remove(&n.id)
            .unwrap_or_default();
        State {
            version: 0,
            self_node: self_view(n),
            peers,
            filter,
            dns: dns_for(w, n),
        }
    }

    /// The snapshot message.
    pub fn snapshot(&self, w: &World) -> pb::NetworkMap {
        let cv = w.cvlans.get(&self.self_node.cvlan_id);
        pb::NetworkMap {
            version: self.version,
            self_: Some(self.self_node.clone()),
            peers: self.peers.values().cloned().collect(),
            filter: Some(self.filter.clone()),
            dns: Some(self.dns.clone()),
            cvlan_ipv4_prefix: cv.map(|c| c.ipv4_prefix.clone()).unwrap_or_default(),
            cvlan_ipv6_prefix: cv.map(|c| c.ipv6_prefix.clone()).unwrap_or_default(),
        }
    }
}

/// The delta that turns `old` into `new` (version left 0), or None when nothing differs.
pub fn diff(old: &State, new: &State) -> Option<pb::MapDelta> {
    let mut d = pb::MapDelta::default();
    for (id, p) in &new.peers {
        if old.peers.get(id) != Some(p) {
            d.peers_upserted.push(p.clone());
        }
    }
    for id in old.peers.keys() {
        if !new.peers.contains_key(id) {
            d.peers_removed.push(id.clone());
        }
    }
    if old.filter != new.filter {
        d.filter = Some(new.filter.clone());
    }
    if old.dns != new.dns {
        d.dns = Some(new.dns.clone());
    }
    if old.self_node != new.self_node {
        d.self_ = Some(new.self_node.clone());
    }
    let empty = d.peers_upserted.is_empty()
        && d.peers_removed.is_empty()
        && d.filter.is_none()
        && d.dns.is_none()
        && d.self_.is_none();
    (!empty).then_some(d)
}

/// Applies a delta to a state (what the agent does; used to check the hub's bookkeeping).
pub fn apply(s: &mut State, d: &pb::MapDelta) {
    s.version = d.version;
    for p in &d.peers_upserted {
        s.peers.insert(p.node_id.clone(), p.clone());
    }
    for id in &d.peers_removed {
        s.peers.remove(id);
    }
    if let Some(f) = &d.filter {
        s.filter = f.clone();
    }
    if let Some(x) = &d.dns {
        s.dns = x.clone();
    }
    if let Some(n) = &d.self_ {
        s.self_node = n.clone();
    }
}

struct Task {
    svc: Arc<Service>,
    worlds: HashMap<String, World>,
    sessions: HashMap<String, Session>,
    parked: HashMap<String, Parked>,
    version: u64,
    stats: HubStats,
    last_presence: Instant,
    /// Every vrouter by id (few; loaded on first use, kept current by change events).
    vrouters: Option<HashMap<String, pb::Vrouter>>,
    /// Gateway streams by vrouter id.
    gateways: HashMap<String, GwSession>,
    /// Gateway streams to rebuild at `gw_flush_at`.
    gw_dirty: BTreeSet<String>,
    gw_flush_at: Option<Instant>,
}

async fn load<E: Entity + Default>(
    c: &mut sqlx::AnyConnection,
    tenant: &str,
) -> ApiResult<HashMap<String, E>> {
    Ok(entity::list_all::<E>(c, Scope::Tenant(tenant))
        .await?
        .into_iter()
        .map(|e| (e.id().to_string(), e))
        .collect())
}

async fn reload<E: Entity + Default>(
    svc: &Service,
    tenant: &str,
    id: &str,
) -> ApiResult<Option<E>> {
    let mut c = svc
        .store
        .pool()
        .acquire()
        .await
        .map_err(cvlan_store::StoreError::from)?;
    match entity::get::<E>(&mut c, Scope::Tenant(tenant), id).await {
        Ok(e) => Ok(Some(e)),
        Err(cvlan_store::StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Task {
    async fn load_world(&mut self, tenant: &str) -> ApiResult<World> {
        let mut c = self
            .svc
            .store
            .pool()
            .acquire()
            .await
            .map_err(cvlan_store::StoreError::from)?;
        let mut w = World {
            cvlans: load(&mut c, tenant).await?,
            groups: load(&mut c, tenant).await?,
            policies: load(&mut c, tenant).await?,
            externals: load(&mut c, tenant).await?,
            ..Default::default()
        };
        let nodes: HashMap<String, pb::Node> = load(&mut c, tenant).await?;
        drop(c);
        w.vrouters = self.vrouters_of(tenant).await?;
        let now = time::now_micros();
        for (id, n) in nodes {
            if expired(&n, now) {
                w.expired.insert(id.clone());
            }
            w.put_node(Some(n), &id);
        }
        Ok(w)
    }

    async fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Connect {
                node,
                since,
                out,
                conn,
            } => {
                if let Err(e) = self.connect(*node, since, out.clone(), conn).await {
                    let _ = out.try_send(Err(e.into()));
                }
            }
            Cmd::Disconnect { node_id, conn } => {
                if self.sessions.get(&node_id).is_some_and(|s| s.conn == conn) {
                    self.end(&node_id, None);
                }
            }
            Cmd::Stats { reply } => {
                let mut s = self.stats.clone();
                s.sessions = self.sessions.len();
                s.tenants = self.worlds.len();
                s.gateways = self.gateways.len();
                let _ = reply.send(s);
            }
            Cmd::GatewayConnect {
                vrouter_id,
                out,
                conn,
            } => {
                if let Err(e) = self.connect_gateway(&vrouter_id, out.clone(), conn).await {
                    let _ = out.try_send(Err(e.into()));
                }
            }
            Cmd::GatewayDisconnect { vrouter_id, conn } => {
                if self
                    .gateways
                    .get(&vrouter_id)
                    .is_some_and(|g| g.conn == conn)
                {
                    self.end_gateway(&vrouter_id, None);
                }
            }
        }
    }

    async fn connect(&mut self, node: pb::Node, since: u64, out: Out, conn: u64) -> ApiResult<()> {
        if !self.worlds.contains_key(&node.tenant_id) {
            let w = self.load_world(&node.tenant_id).await?;
            self.worlds.insert(node.tenant_id.clone(), w);
        }
        // Re-read inside the hub: a delete or expiry handled since the caller's read must win.
        let id = node.id.clone();
        let fresh = reload::<pb::Node>(&self.svc, &node.tenant_id, &id).await?;
        let now = time::now_micros();
        let Some(node) = fresh else {
            return Err(ApiError::NotFound("node"));
        };
        if expired(&node, now) {
            return Err(ApiError::Forbidden);
        }
        let Some(w) = self.worlds.get_mut(&node.tenant_id) else {
            return Err(ApiError::NotFound("tenant"));
        };
        w.expired.remove(&id);
        w.put_node(Some(node.clone()), &id);
        let mut state = State::build(w, &node, now);
        self.stats.filters_compiled += 1;
        self.version += 1;
        state.version = self.version;
        let msg = match self.parked.remove(&id) {
            Some(p) if since != 0 && p.sent.version == since => {
                let mut d = diff(&p.sent, &state).unwrap_or_default();
                d.version = state.version;
                pb::sync_response::Update::Delta(d)
            }
            _ => pb::sync_response::Update::Snapshot(state.snapshot(w)),
        };
        if out
            .try_send(Ok(pb::SyncResponse { update: Some(msg) }))
            .is_err()
        {
            return Ok(());
        }
        self.stats.sent += 1;
        metrics::counter!("cvlan_netmap_sent_total", "kind" => "connect").increment(1);
        self.sessions.insert(
            id,
            Session {
                conn,
                out,
                tenant: node.tenant_id.clone(),
                cvlan: node.cvlan_id.clone(),
                sent: state,
            },
        );
        metrics::gauge!("cvlan_node_sessions").set(self.sessions.len() as f64);
        Ok(())
    }

    /// Ends a session: with `why`, the node is told (deleted/expired) and nothing is parked.
    fn end(&mut self, node_id: &str, why: Option<Status>) {
        let Some(s) = self.sessions.remove(node_id) else {
            return;
        };
        // Presence: offline (a deleted node's row is gone; that error is expected).
        let svc = self.svc.clone();
        let nid = node_id.to_string();
        tokio::spawn(async move {
            let _ = svc.touch_node(&nid, false).await;
        });
        match why {
            Some(st) => {
                let _ = s.out.try_send(Err(st));
                self.parked.remove(node_id);
            }
            None => {
                self.parked.insert(
                    node_id.to_string(),
                    Parked {
                        at: Instant::now(),
                        sent: s.sent,
                    },
                );
            }
        }
        self.drop_world_if_unused(&s.tenant);
        metrics::gauge!("cvlan_node_sessions").set(self.sessions.len() as f64);
    }

    /// Sends a delta to a session, or drops a session that cannot keep up (it reconnects and
    /// gets a snapshot).
    fn push(&mut self, node_id: &str, mut d: pb::MapDelta) {
        self.version += 1;
        let v = self.version;
        let Some(s) = self.sessions.get_mut(node_id) else {
            return;
        };
        d.version = v;
        apply(&mut s.sent, &d);
        match s.out.try_send(Ok(pb::SyncResponse {
            update: Some(pb::sync_response::Update::Delta(d)),
        })) {
            Ok(()) => {
                self.stats.sent += 1;
                metrics::counter!("cvlan_netmap_sent_total", "kind" => "delta").increment(1);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(node_id, "node is not reading its map stream; dropping it");
                self.end(
                    node_id,
                    Some(Status::resource_exhausted("map stream not read; reconnect")),
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.end(node_id, None),
        }
    }

    fn sessions_in(&self, tenant: &str, cvlan: Option<&str>) -> Vec<String> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.tenant == tenant && cvlan.is_none_or(|c| s.cvlan == c))
            .map(|(id, _)| id.clone())
            .collect()
    }

    async fn change(&mut self, ch: &Change) {
        // Tenants are global objects: their id is the change's id. Their nodes go by cascade,
        // without node events.
        if ch.kind == "tenant" && ch.op == "delete" {
            for id in self.sessions_in(&ch.id, None) {
                self.end(&id, Some(Status::not_found("tenant was deleted")));
            }
            self.worlds.remove(&ch.id);
            self.gateways_dirty(&ch.id);
            return;
        }
        if ch.kind == "vrouter" {
            if let Err(e) = self.vrouter_changed(&ch.id).await {
                tracing::warn!(error = %e, "could not apply a vrouter change; resynchronising");
                self.resync_all().await;
            }
            return;
        }
        if !self.worlds.contains_key(&ch.tenant_id) {
            return;
        }
        if matches!(ch.kind, "node" | "policy" | "group" | "cvlan") {
            self.gateways_dirty(&ch.tenant_id);
        }
        let r = match ch.kind {
            "node" => self.node_changed(&ch.tenant_id, &ch.id).await,
            "external peer" => self.external_changed(&ch.tenant_id, &ch.id).await,
            "policy" => {
                self.reload_into(&ch.tenant_id, &ch.id, |w| &mut w.policies)
                    .await
            }
            "group" => {
                self.reload_into(&ch.tenant_id, &ch.id, |w| &mut w.groups)
                    .await
            }
            "cvlan" => {
                let r = self
                    .reload_into(&ch.tenant_id, &ch.id, |w| &mut w.cvlans)
                    .await;
                // The mode decides the peers, the name the DNS search domain: rebuild the
                // CVLAN's maps (CVLAN changes are rare).
                self.rebuild(&ch.tenant_id, Some(&ch.id));
                r
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, kind = ch.kind, "could not apply change; resynchronising");
            self.resync_all().await;
        }
    }

    async fn reload_into<E: Entity + Default>(
        &mut self,
        tenant: &str,
        id: &str,
        field: impl Fn(&mut World) -> &mut HashMap<String, E>,
    ) -> ApiResult<()> {
        let e = reload::<E>(&self.svc, tenant, id).await?;
        let Some(w) = self.worlds.get_mut(tenant) else {
            return Ok(());
        };
        let m = field(w);
        match e {
            Some(e) => m.insert(id.to_string(), e),
            None => m.remove(id),
        };
        // Policies and groups only change filters.
        self.refresh(tenant, None, true, BTreeMap::new());
        Ok(())
    }

    async fn node_changed(&mut self, tenant: &str, id: &str) -> ApiResult<()> {
        let new = reload::<pb::Node>(&self.svc, tenant, id).await?;
        let now = time::now_micros();
        let Some(w) = self.worlds.get_mut(tenant) else {
            return Ok(());
        };
        let old = w.nodes.get(id).cloned();
        match &new {
            Some(n) if expired(n, now) => {
                w.expired.insert(n.id.clone());
            }
            _ => {
                w.expired.remove(id);
            }
        }
        w.put_node(new.clone(), id);
        self.apply_node(tenant, id, old, new, now);
        Ok(())
    }

    /// Pushes what a node's change means: its own session's self/map, one peer entry in each
    /// session of its CVLAN, and their filters when something a filter depends on changed.
    fn apply_node(
        &mut self,
        tenant: &str,
        id: &str,
        old: Option<pb::Node>,
        new: Option<pb::Node>,
        now: i64,
    ) {
        fn live(n: &Option<pb::Node>, now: i64) -> Option<&pb::Node> {
            n.as_ref()
                .filter(|n| !expired(n, now) && !n.wg_public_key.is_empty())
        }
        let filter_key = |n: Option<&pb::Node>| {
            n.map(|n| {
                (
                    n.ipv4.clone(),
                    n.ipv6.clone(),
                    n.tags.clone(),
                    n.name.clone(),
                )
            })
        };
        let filters_change = filter_key(live(&old, now)) != filter_key(live(&new, now));
        match &new {
            None => self.end(id, Some(Status::not_found("node was deleted"))),
            Some(n) if expired(n, now) => {
                self.end(id, Some(Status::permission_denied("node has expired")))
            }
            Some(n) => {
                if let (Some(s), Some(w)) = (self.sessions.get(id), self.worlds.get(tenant)) {
                    let mut next = State::build(w, n, now);
                    next.version = s.sent.version;
                    if let Some(d) = diff(&s.sent, &next) {
                        self.push(id, d);
                    }
                }
            }
        }
        let Some(cvlan) = new.as_ref().or(old.as_ref()).map(|n| n.cvlan_id.clone()) else {
            return;
        };
        // Nodes of a hub-and-spoke CVLAN only see their gateway.
        let hub = self
            .worlds
            .get(tenant)
            .is_some_and(|w| gateway::gateway_of(w, &cvlan).is_some());
        let entry = live(&new, now).filter(|_| !hub).map(peer_of_node);
        let mut pending: BTreeMap<String, pb::MapDelta> = BTreeMap::new();
        for sid in self.sessions_in(tenant, Some(&cvlan)) {
            if sid == id {
                continue;
            }
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            let mut d = pb::MapDelta::default();
            match (&entry, s.sent.peers.get(id)) {
                (Some(p), cur) if cur != Some(p) => d.peers_upserted.push(p.clone()),
                (None, Some(_)) => d.peers_removed.push(id.to_string()),
                _ => {}
            }
            pending.insert(sid, d);
        }
        // One delta per session: its peer entry and, when addresses/tags/presence changed,
        // its recompiled filter.
        self.refresh(tenant, Some(&cvlan), filters_change, pending);
    }

    async fn external_changed(&mut self, tenant: &str, id: &str) -> ApiResult<()> {
        let new = reload::<pb::ExternalPeer>(&self.svc, tenant, id).await?;
        let Some(w) = self.worlds.get_mut(tenant) else {
            return Ok(());
        };
        let old = match &new {
            Some(e) => w.externals.insert(id.to_string(), e.clone()),
            None => w.externals.remove(id),
        };
        let Some(cvlan) = new.as_ref().or(old.as_ref()).map(|e| e.cvlan_id.clone()) else {
            return Ok(());
        };
        for sid in self.sessions_in(tenant, Some(&cvlan)) {
            let (Some(s), Some(w)) = (self.sessions.get(&sid), self.worlds.get(tenant)) else {
                continue;
            };
            let viewer = w.nodes.get(&sid).cloned().unwrap_or_default();
            let entry = new
                .as_ref()
                .filter(|e| external_applies(e, &viewer))
                .map(peer_of_external);
            let mut d = pb::MapDelta::default();
            match (&entry, s.sent.peers.get(id)) {
                (Some(p), cur) if cur != Some(p) => d.peers_upserted.push(p.clone()),
                (None, Some(_)) => d.peers_removed.push(id.to_string()),
                _ => {}
            }
            if !d.peers_upserted.is_empty() || !d.peers_removed.is_empty() {
                self.push(&sid, d);
            }
        }
        Ok(())
    }

    /// Recomputes filters (when `filters`) and DNS of the sessions of a tenant, or of one
    /// CVLAN, compiling once per CVLAN, merges them into `pending` (peer changes of the same
    /// event) and pushes one delta per session.
    fn refresh(
        &mut self,
        tenant: &str,
        cvlan: Option<&str>,
        filters: bool,
        mut pending: BTreeMap<String, pb::MapDelta>,
    ) {
        let now = time::now_micros();
        let mut by_cvlan: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for sid in self.sessions_in(tenant, cvlan) {
            if let Some(s) = self.sessions.get(&sid) {
                by_cvlan.entry(s.cvlan.clone()).or_default().push(sid);
            }
        }
        if let Some(w) = self.worlds.get(tenant) {
            for (cv, ids) in by_cvlan {
                let fs = if filters {
                    self.stats.filters_compiled += ids.len() as u64;
                    filters_for(w, &cv, &ids, now)
                } else {
                    HashMap::new()
                };
                for id in ids {
                    let (Some(s), Some(n)) = (self.sessions.get(&id), w.nodes.get(&id)) else {
                        continue;
                    };
                    if let Some(f) = fs.get(&id)
                        && *f != s.sent.filter
                    {
                        pending.entry(id.clone()).or_default().filter = Some(f.clone());
                    }
                    let dns = dns_for(w, n);
                    if dns != s.sent.dns {
                        pending.entry(id.clone()).or_default().dns = Some(dns);
                    }
                }
            }
        }
        for (id, d) in pending {
            if d != pb::MapDelta::default() {
                self.push(&id, d);
            }
        }
    }

    /// After missed events: reload every held tenant and send each session what differs.
    async fn resync_all(&mut self) {
        self.vrouters = None;
        let tenants: Vec<String> = self.worlds.keys().cloned().collect();
        for t in tenants {
            match self.load_world(&t).await {
                Ok(w) => {
                    self.worlds.insert(t, w);
                }
                Err(e) => {
                    tracing::error!(error = %e, "reloading a tenant failed; its nodes reconnect");
                    for id in self.sessions_in(&t, None) {
                        self.end(
                            &id,
                            Some(Status::unavailable("control plane resynchronising")),
                        );
                    }
                }
            }
        }
        let tenants: Vec<String> = self.worlds.keys().cloned().collect();
        for t in &tenants {
            self.rebuild(t, None);
        }
        let gws: Vec<String> = self.gateways.keys().cloned().collect();
        for id in gws {
            if let Err(e) = self.refresh_gateway(&id).await {
                tracing::warn!(error = %e, vrouter_id = %id, "could not reload a vrouter");
            }
        }
    }

    /// Rebuilds the maps of a tenant's (or one CVLAN's) sessions and sends what differs.
    fn rebuild(&mut self, tenant: &str, cvlan: Option<&str>) {
        let now = time::now_micros();
        for id in self.sessions_in(tenant, cvlan) {
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            let Some(w) = self.worlds.get(&s.tenant) else {
                continue;
            };
            match w.nodes.get(&id) {
                None => self.end(&id, Some(Status::not_found("node was deleted"))),
                Some(n) if expired(n, now) => {
                    self.end(&id, Some(Status::permission_denied("node has expired")))
                }
                Some(n) => {
                    let mut next = State::build(w, n, now);
                    next.version = s.sent.version;
                    if let Some(d) = diff(&s.sent, &next) {
                        self.push(&id, d);
                    }
                }
            }
        }
    }

    async fn tick(&mut self) {
        let now = time::now_micros();
        // Nodes whose expiry time has come.
        let mut due = Vec::new();
        for (t, w) in &mut self.worlds {
            for n in w.nodes.values() {
                if expired(n, now) && !w.expired.contains(&n.id) {
                    due.push((t.clone(), n.clone()));
                }
            }
            for (_, n) in &due {
                w.expired.insert(n.id.clone());
            }
        }
        for (t, n) in due {
            let mut before = n.clone();
            before.expires_at = None;
            self.apply_node(&t, &n.id, Some(before), Some(n.clone()), now);
            self.gateways_dirty(&t);
        }
        self.parked.retain(|_, p| p.at.elapsed() < PARK_TTL);
        if self.last_presence.elapsed() >= PRESENCE_EVERY {
            self.last_presence = Instant::now();
            let ids: Vec<String> = self.sessions.keys().cloned().collect();
            let svc = self.svc.clone();
            tokio::spawn(async move {
                for id in ids {
                    let _ = svc.touch_node(&id, true).await;
                }
            });
        }
    }
}

/// Gateway streams and the vrouters behind hub-and-spoke maps.
impl Task {
    /// Every vrouter, loaded on first use.
    async fn all_vrouters(&mut self) -> ApiResult<&mut HashMap<String, pb::Vrouter>> {
        if self.vrouters.is_none() {
            let mut c = self.svc.conn().await?;
            let all: Vec<pb::Vrouter> = entity::list_all(&mut c, Scope::Global).await?;
            self.vrouters = Some(all.into_iter().map(|v| (v.id.clone(), v)).collect());
        }
        Ok(self.vrouters.get_or_insert_default())
    }

    /// The vrouters with an assignment in `tenant`, by id.
    async fn vrouters_of(&mut self, tenant: &str) -> ApiResult<Vec<pb::Vrouter>> {
        let mut v: Vec<pb::Vrouter> = self
            .all_vrouters()
            .await?
            .values()
            .filter(|v| v.assignments.iter().any(|a| a.tenant_id == tenant))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// Whether a connected gateway needs the tenant's world.
    fn gateway_needs(&self, tenant: &str) -> bool {
        self.gateways
            .values()
            .any(|g| g.vrouter.assignments.iter().any(|a| a.tenant_id == tenant))
    }

    fn drop_world_if_unused(&mut self, tenant: &str) {
        if !self.sessions.values().any(|x| x.tenant == tenant) && !self.gateway_needs(tenant) {
            self.worlds.remove(tenant);
        }
    }

    /// Loads the world of a tenant a gateway serves, unless held or the tenant is gone.
    async fn ensure_world(&mut self, tenant: &str) -> ApiResult<()> {
        if self.worlds.contains_key(tenant) {
            return Ok(());
        }
        let mut c = self.svc.conn().await?;
        let exists = entity::find::<pb::Tenant>(&mut c, Scope::Global, tenant)
            .await?
            .is_some_and(|t| t.id == tenant);
        drop(c);
        if exists {
            let w = self.load_world(tenant).await?;
            self.worlds.insert(tenant.to_string(), w);
        }
        Ok(())
    }

    /// Marks the gateway streams serving `tenant` for a rebuild.
    fn gateways_dirty(&mut self, tenant: &str) {
        let ids: Vec<String> = self
            .gateways
            .iter()
            .filter(|(_, g)| g.vrouter.assignments.iter().any(|a| a.tenant_id == tenant))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.gateway_dirty(&id);
        }
    }

    fn gateway_dirty(&mut self, id: &str) {
        self.gw_dirty.insert(id.to_string());
        self.gw_flush_at
            .get_or_insert_with(|| Instant::now() + GW_DEBOUNCE);
    }

    /// A vrouter was created, changed (assignments, key, endpoint) or deleted: the node maps
    /// of the tenants it serves (before or after) and its own stream follow.
    async fn vrouter_changed(&mut self, id: &str) -> ApiResult<()> {
        let mut c = self.svc.conn().await?;
        let new = match entity::get::<pb::Vrouter>(&mut c, Scope::Global, id).await {
            Ok(v) => Some(v),
            Err(cvlan_store::StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        drop(c);
        let all = self.all_vrouters().await?;
        match &new {
            Some(v) => all.insert(id.to_string(), v.clone()),
            None => all.remove(id),
        };
        // The tenants it serves now, and those whose worlds list it from before.
        let mut tenants: BTreeSet<String> = new.iter().flat_map(gateway::tenants_of).collect();
        tenants.extend(
            self.worlds
                .iter()
                .filter(|(_, w)| w.vrouters.iter().any(|v| v.id == id))
                .map(|(t, _)| t.clone()),
        );
        for t in &tenants {
            if self.worlds.contains_key(t) {
                let vs = self.vrouters_of(t).await?;
                if let Some(w) = self.worlds.get_mut(t) {
                    w.vrouters = vs;
                }
                self.rebuild(t, None);
            }
        }
        if self.gateways.contains_key(id) {
            self.refresh_gateway(id).await?;
        }
        Ok(())
    }

    /// Re-reads a connected vrouter: ends its stream when it was deleted, else loads the
    /// worlds of its (new) tenants and marks it for a rebuild.
    async fn refresh_gateway(&mut self, id: &str) -> ApiResult<()> {
        let v = match self.svc.vrouter_by_id(id).await {
            Ok(v) => v,
            Err(ApiError::NotFound(_)) => {
                self.end_gateway(id, Some(Status::not_found("vrouter was deleted")));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for t in gateway::tenants_of(&v) {
            self.ensure_world(&t).await?;
        }
        let old = match self.gateways.get_mut(id) {
            Some(g) => std::mem::replace(&mut g.vrouter, v),
            None => return Ok(()),
        };
        for t in gateway::tenants_of(&old) {
            self.drop_world_if_unused(&t);
        }
        self.gateway_dirty(id);
        Ok(())
    }

    async fn connect_gateway(&mut self, id: &str, out: GwOut, conn: u64) -> ApiResult<()> {
        // Re-read inside the hub: a delete handled since the caller's read must win.
        let v = self.svc.vrouter_by_id(id).await?;
        for t in gateway::tenants_of(&v) {
            self.ensure_world(&t).await?;
        }
        let mut index = BTreeMap::new();
        let mut tables = gateway::tables(&v, &self.worlds, &mut index, time::now_micros());
        self.version += 1;
        tables.version = self.version;
        let msg = pb::GatewaySyncResponse {
            update: Some(pb::gateway_sync_response::Update::Snapshot(tables.clone())),
        };
        if out.try_send(Ok(msg)).is_err() {
            return Ok(());
        }
        self.stats.gateway_sent += 1;
        metrics::counter!("cvlan_gateway_sent_total").increment(1);
        // A second stream of the same vrouter replaces the first (whose channel closes).
        self.gateways.insert(
            id.to_string(),
            GwSession {
                conn,
                out,
                vrouter: v,
                index,
                sent: tables,
            },
        );
        metrics::gauge!("cvlan_gateway_sessions").set(self.gateways.len() as f64);
        Ok(())
    }

    fn end_gateway(&mut self, id: &str, why: Option<Status>) {
        let Some(g) = self.gateways.remove(id) else {
            return;
        };
        if let Some(st) = why {
            let _ = g.out.try_send(Err(st));
        }
        self.gw_dirty.remove(id);
        for t in gateway::tenants_of(&g.vrouter) {
            self.drop_world_if_unused(&t);
        }
        metrics::gauge!("cvlan_gateway_sessions").set(self.gateways.len() as f64);
    }

    /// Sends a fresh snapshot to every dirty gateway stream whose tables changed.
    fn flush_gateways(&mut self) {
        self.gw_flush_at = None;
        let now = time::now_micros();
        for id in std::mem::take(&mut self.gw_dirty) {
            let Some(g) = self.gateways.get_mut(&id) else {
                continue;
            };
            let mut tables = gateway::tables(&g.vrouter, &self.worlds, &mut g.index, now);
            tables.version = g.sent.version;
            if tables == g.sent {
                continue;
            }
            self.version += 1;
            tables.version = self.version;
            let msg = pb::GatewaySyncResponse {
                update: Some(pb::gateway_sync_response::Update::Snapshot(tables.clone())),
            };
            g.sent = tables;
            match g.out.try_send(Ok(msg)) {
                Ok(()) => {
                    self.stats.gateway_sent += 1;
                    metrics::counter!("cvlan_gateway_sent_total").increment(1);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(vrouter_id = %id, "vrouter is not reading its table stream; dropping it");
                    self.end_gateway(
                        &id,
                        Some(Status::resource_exhausted(
                            "table stream not read; reconnect",
                        )),
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.end_gateway(&id, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cv: &str, v4: &str, tags: &[&str]) -> pb::Node {
        pb::Node {
            id: id.into(),
            tenant_id: "t".into(),
            cvlan_id: cv.into(),
            name: format!("n-{id}"),
            wg_public_key: format!("key-{id}"),
            ipv4: v4.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn world(nodes: Vec<pb::Node>) -> World {
        let mut w = World::default();
        for n in nodes {
            let id = n.id.clone();
            w.put_node(Some(n), &id);
        }
        w
    }

    fn allow_all() -> pb::Policy {
        pb::Policy {
            id: "p".into(),
            name: "all".into(),
            rules: vec![pb::Rule {
                sources: vec![pb::Selector {
                    selector: Some(pb::selector::Selector::Any(true)),
                }],
                destinations: vec![pb::Selector {
                    selector: Some(pb::selector::Selector::Any(true)),
                }],
                action: pb::Action::Allow as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_map_holds_the_cvlans_other_live_nodes_only() {
        let mut gone = node("c", "x", "10.0.0.3", &[]);
        gone.expires_at = Some(time::ts(1));
        let w = world(vec![
            node("a", "x", "10.0.0.1", &[]),
            node("b", "x", "10.0.0.2", &[]),
            gone,
            node("d", "y", "10.0.1.1", &[]),
        ]);
        let s = State::build(&w, &w.nodes["a"], time::now_micros());
        assert_eq!(s.peers.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(s.peers["b"].allowed_ips, vec!["10.0.0.2/32".to_string()]);
        // No policy: default deny, nothing compiled in.
        assert!(
            s.filter
                .rules
                .iter()
                .all(|r| r.action != pb::Action::Allow as i32)
        );
    }

    #[test]
    fn diff_then_apply_reproduces_the_new_state() {
        let mut w = world(vec![
            node("a", "x", "10.0.0.1", &["web"]),
            node("b", "x", "10.0.0.2", &[]),
        ]);
        let now = time::now_micros();
        let old = State::build(&w, &w.nodes["a"], now);
        w.policies.insert("p".into(), allow_all());
        w.put_node(Some(node("c", "x", "10.0.0.3", &[])), "c");
        w.put_node(None, "b");
        let new = State::build(&w, &w.nodes["a"], now);
        let d = diff(&old, &new).unwrap();
        assert_eq!(d.peers_removed, vec!["b".to_string()]);
        assert_eq!(d.peers_upserted.len(), 1);
        assert!(d.filter.is_some());
        let mut s = old.clone();
        apply(&mut s, &d);
        s.version = new.version;
        assert_eq!(s, new);
        assert!(diff(&new, &new).is_none());
    }

    #[test]
    fn external_peers_reach_only_the_nodes_they_name() {
        let mut w = world(vec![
            node("a", "x", "10.0.0.1", &[]),
            node("b", "x", "10.0.0.2", &[]),
        ]);
        w.externals.insert(
            "e".into(),
            pb::ExternalPeer {
                id: "e".into(),
                cvlan_id: "x".into(),
                wg_public_key: "k".into(),
                allowed_ips: vec!["192.168.9.0/24".into()],
                endpoint: "192.0.2.1:51820".into(),
                node_ids: vec!["a".into()],
                ..Default::default()
            },
        );
        let now = time::now_micros();
        let a = State::build(&w, &w.nodes["a"], now);
        let b = State::build(&w, &w.nodes["b"], now);
        assert!(a.peers["e"].external);
        assert_eq!(a.peers["e"].endpoints[0].address, "192.0.2.1:51820");
        assert!(!b.peers.contains_key("e"));
    }

    #[test]
    fn policy_group_names_resolve_to_ids_and_unknown_ones_match_nothing() {
        let mut w = world(vec![node("a", "x", "10.0.0.1", &[])]);
        w.groups.insert(
            "g1".into(),
            pb::Group {
                id: "g1".into(),
                name: "admins".into(),
                ..Default::default()
            },
        );
        let mut p = allow_all();
        p.rules[0].sources = vec![
            pb::Selector {
                selector: Some(pb::selector::Selector::Group("admins".into())),
            },
            pb::Selector {
                selector: Some(pb::selector::Selector::Group("nope".into())),
            },
        ];
        w.policies.insert("p".into(), p);
        let r = rules_of(&w);
        assert_eq!(
            r[0].sources,
            vec![
                policy::Selector::Group("g1".into()),
                policy::Selector::Group(String::new())
            ]
        );
    }
}
