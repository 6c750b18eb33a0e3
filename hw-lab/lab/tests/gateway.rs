//! End-to-end tests of the gateway (issue "Gateways forward tenant traffic", item 4): the real
//! `cvlan-api`, `cvlan-agent`s, `vrouterd` and `vrouter-dpdk` (DPDK on af_packet ports) in
//! network namespaces. They need root, iproute2, ethtool, ping, and the binaries next to this
//! test executable (`cargo build --workspace --bins`).
//!
//! Layout: every host sits on the lab bridge for the control plane only — agents have
//! blackhole routes for the rest of that subnet, so they cannot reach each other there. Each
//! agent has a point-to-point link to the gateway (`gw0` = 10.251.<i>.2/24 ↔ DPDK port
//! `p<i>` answering as 10.251.<i>.1) and a route to the gateway's WireGuard endpoint
//! 10.255.0.1:51820 over it; the gateway's kernel has no address on those links, and
//! vrouter-dpdk forwards nothing but WireGuard, so the only way between agents is through the
//! gateway. Tenants `ta` (CVLAN x) and `tb` (CVLAN z) both use 10.20.0.0/24 in hub-and-spoke
//! mode, so a1 and b1 get the same overlay address, and so do a2 and b2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cvlan_lab::cvlan::{Agent, Binaries, ControlPlane, Secret};
use cvlan_lab::gateway::{Gateway, GatewayBinaries, Port, isolate_on_bridge, link_agent};
use cvlan_lab::{Host, Lab, wait_until};
use serde_json::Value;

mod common;
use common::{allow_all, connects, ping, ping_eventually, transfer};

/// The gateway's WireGuard endpoint.
const UNDERLAY: &str = "10.255.0.1:51820";

/// The agent hosts: name, tenant, CVLAN; host `i` is linked to gateway port `p<i>`.
const AGENTS: [(&str, &str, &str); 4] = [
    ("a1", "ta", "x"),
    ("a2", "ta", "x"),
    ("b1", "tb", "z"),
    ("b2", "tb", "z"),
];

/// DPDK workers poll: one gateway at a time keeps a 2-core machine usable.
static ONE_GATEWAY: Mutex<()> = Mutex::new(());

/// Field order is drop order: agents and the gateway stop before the lab tears down.
struct World {
    agents: HashMap<String, Agent>,
    gw: Gateway,
    hosts: HashMap<String, Host>,
    cp: ControlPlane,
    bins: Binaries,
    /// Held for its teardown on drop (after everything above has stopped).
    _lab: Lab,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl World {
    /// Control plane with tenants ta/tb (allow-all), hub-and-spoke CVLANs x/z on the same
    /// prefix, a vrouter serving both, and the gateway enrolled and running.
    fn new() -> World {
        let one = ONE_GATEWAY.lock().unwrap_or_else(|p| p.into_inner());
        let bins = Binaries::find(None).unwrap_or_else(|e| panic!("{e}"));
        let gbins = GatewayBinaries::find(None).unwrap_or_else(|e| panic!("{e}"));
        let lab = Lab::new().expect("building the lab (needs root and iproute2)");
        let ctrl = lab.add_host("ctrl").unwrap();
        let cp = ControlPlane::start(&ctrl, &bins).unwrap();
        for (t, c) in [("ta", "x"), ("tb", "z")] {
            cp.create_tenant(t).unwrap();
            allow_all(&cp, t);
            cp.ctl([
                "cvlan",
                "create",
                "--tenant",
                t,
                c,
                "--ipv4",
                "10.20.0.0/24",
                "--mode",
                "hub-and-spoke",
            ])
            .unwrap();
        }
        cp.ctl([
            "vrouter",
            "create",
            "gw1",
            "--endpoint",
            UNDERLAY,
            "--assign",
            "ta",
            "--assign",
            "tb",
        ])
        .unwrap();
        let tok = cp.ctl(["vrouter", "join-token", "gw1"]).unwrap();
        let token = Secret(
            tok.get("token")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no token in {tok}"))
                .to_string(),
        );
        let gwh = lab.add_host("gw").unwrap();
        let ports = Port::lab_ports(AGENTS.len());
        let mut gw = Gateway::new(&gwh, &gbins, UNDERLAY.parse().unwrap(), ports);
        // The DPDK ports must exist before vrouter-dpdk starts: link every agent host first.
        let mut hosts = HashMap::new();
        for (i, (name, _, _)) in AGENTS.iter().enumerate() {
            let host = lab.add_host(name).unwrap();
            link_agent(&lab, &gw, &host, i).unwrap();
            isolate_on_bridge(&host, ctrl.ipv4()).unwrap();
            hosts.insert(name.to_string(), host);
        }
        gw.start_dataplane().unwrap();
        gw.start_sidecar(&cp.node_url(), &token)
            .unwrap_or_else(|e| panic!("{e}\nvrouter-dpdk log:\n{}", gw.dataplane_log()));
        World {
            agents: HashMap::new(),
            hosts,
            gw,
            cp,
            bins,
            _lab: lab,
            _one: one,
        }
    }

    /// Starts the agent in its (already linked) host and joins it to `tenant`/`cvlan`.
    fn join(&mut self, name: &str, tenant: &str, cvlan: &str) {
        let host = &self.hosts[name];
        let (_, token) = self.cp.create_token(tenant, cvlan, &[]).unwrap();
        let agent = Agent::start(host, &self.bins).unwrap();
        agent
            .up(&self.cp.node_url(), &token)
            .unwrap_or_else(|e| panic!("cvlan up in {name}: {e}\nagent log:\n{}", agent.log()));
        self.agents.insert(name.to_string(), agent);
    }

    fn agent(&self, name: &str) -> &Agent {
        &self.agents[name]
    }

    fn host(&self, name: &str) -> &Host {
        self.agents[name].host()
    }

    fn ip(&self, name: &str) -> IpAddr {
        IpAddr::V4(self.agent(name).ipv4().unwrap())
    }

    /// Joins a1, a2 (ta/x) and b1, b2 (tb/z) and waits until each map holds just the gateway.
    fn four_agents(&mut self) {
        for (n, t, c) in AGENTS {
            self.join(n, t, c);
        }
        for n in ["a1", "a2", "b1", "b2"] {
            let r = wait_until(
                Duration::from_secs(10),
                "the gateway as the only peer",
                || (self.agent(n).peer_names().ok()? == ["gw1"]).then_some(()),
            );
            if let Err(e) = r {
                panic!("{n}: {e}; status: {:?}", self.agent(n).status());
            }
        }
    }

    fn node_id(&self, tenant: &str, name: &str) -> String {
        let list = self.cp.ctl(["node", "list", "--tenant", tenant]).unwrap();
        common::items(&list)
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["id"].as_str())
            .unwrap_or_else(|| panic!("no node {name} in {list}"))
            .to_string()
    }

    /// Sum over the data plane's workers of the packets dropped for `reason`.
    fn drops(&self, reason: &str) -> u64 {
        let v = self.gw.ctl(["counters"]).unwrap();
        sum_reason(&v, reason)
    }
}

/// Adds up every `"reasons": {reason: n}` object found anywhere in `v`.
fn sum_reason(v: &Value, reason: &str) -> u64 {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                if k == "reasons" {
                    x.get(reason).and_then(Value::as_u64).unwrap_or(0)
                } else {
                    sum_reason(x, reason)
                }
            })
            .sum(),
        Value::Array(a) => a.iter().map(|x| sum_reason(x, reason)).sum(),
        _ => 0,
    }
}

/// A TCP service in `host` on `port` that answers every connection with `id` and closes.
fn identify(host: &Host, port: u16, id: &'static str) -> std::thread::JoinHandle<()> {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let l = host.enter(move || TcpListener::bind(any)).unwrap().unwrap();
    l.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let _ = s.write_all(id.as_bytes());
        }
    })
}

fn who(from: &Host, addr: SocketAddr) -> String {
    from.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .unwrap()
    .unwrap_or_else(|e| format!("<{e}>"))
}

#[test]
fn agents_that_cannot_reach_each_other_exchange_traffic_through_the_gateway() {
    let mut w = World::new();
    w.four_agents();
    // No direct way: neither the other agent's bridge address nor its gateway link.
    let a2_bridge = w.host("a2").ipv4();
    assert!(
        !ping(w.host("a1"), a2_bridge),
        "a1 reaches a2 on the bridge"
    );
    assert!(!ping(w.host("a1"), "10.251.2.2"), "a1 reaches a2's link");
    let a2 = w.ip("a2");
    assert!(
        ping_eventually(w.host("a1"), a2),
        "no ping through the gateway; vrouterd log:\n{}\nvrouter-dpdk log:\n{}",
        w.gw.sidecar_log(),
        w.gw.dataplane_log()
    );
    assert!(ping_eventually(w.host("a2"), w.ip("a1")));
    let len = 50 << 20;
    let started = Instant::now();
    let (sent, got, n) = transfer(w.host("a1"), w.host("a2"), a2, 5201, len);
    let took = started.elapsed();
    assert_eq!(n, len, "bytes that arrived");
    assert_eq!(
        sent, got,
        "SHA-256 of what arrived differs from what was sent"
    );
    eprintln!(
        "50 MB a1 -> gateway -> a2 in {took:?} ({:.0} Mbit/s)",
        len as f64 * 8.0 / took.as_secs_f64() / 1e6
    );
    // The traffic went through the gateway's fast path.
    let peers = w.gw.ctl(["peers"]).unwrap();
    assert!(
        peers.to_string().contains("a1") || peers.to_string().contains(&w.node_id("ta", "a1")),
        "vrouterctl peers does not list a1: {peers}"
    );
}

#[test]
fn tenants_with_the_same_prefix_stay_isolated_at_the_gateway() {
    let mut w = World::new();
    w.four_agents();
    // Same overlay addresses in both tenants.
    assert_eq!(w.ip("a1"), w.ip("b1"));
    assert_eq!(w.ip("a2"), w.ip("b2"));
    let dst = SocketAddr::new(w.ip("a2"), 7000);
    let ta = identify(w.host("a2"), 7000, "a2");
    let tb = identify(w.host("b2"), 7000, "b2");
    assert!(ping_eventually(w.host("a1"), dst.ip()));
    assert!(ping_eventually(w.host("b1"), dst.ip()));
    for _ in 0..2 {
        assert_eq!(who(w.host("a1"), dst), "a2", "a1 reached the wrong host");
        assert_eq!(who(w.host("b1"), dst), "b2", "b1 reached the wrong host");
    }
    drop((ta, tb));
}

#[test]
fn an_acl_change_blocks_a_flow_at_the_gateway_within_2_s_while_other_flows_lose_nothing() {
    let mut w = World::new();
    w.four_agents();
    let a2 = w.ip("a2");
    assert!(ping_eventually(w.host("a1"), a2));
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let l5001 = w
        .host("a2")
        .enter(move || TcpListener::bind(SocketAddr::new(any, 5001)))
        .unwrap()
        .unwrap();
    let p5001 = SocketAddr::new(a2, 5001);
    let t = Duration::from_millis(700);
    assert!(connects(w.host("a1"), p5001, t), "5001 closed before");
    let mut pinger = w
        .host("a1")
        .spawn([
            "ping",
            "-n",
            "-i",
            "0.1",
            "-c",
            "50",
            "-W",
            "1",
            &a2.to_string(),
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let denied_before = w.drops("acl_deny");
    let (a1_id, a2_id) = (w.node_id("ta", "a1"), w.node_id("ta", "a2"));
    let changed = Instant::now();
    w.cp.ctl([
        "policy",
        "update",
        "--tenant",
        "ta",
        "allow-all",
        "--rule",
        &format!("src=node:{a1_id} dst=node:{a2_id} proto=tcp ports=5001 action=deny"),
        "--rule",
        "src=any dst=any action=allow",
    ])
    .unwrap();
    let took = wait_until(Duration::from_secs(5), "5001 to be refused", || {
        (!connects(w.host("a1"), p5001, Duration::from_millis(300))).then(|| changed.elapsed())
    })
    .unwrap();
    assert!(took <= Duration::from_secs(2), "the deny took {took:?}");
    eprintln!("ACL change effective after {took:?}");
    // The gateway itself drops the SYNs (the agent's own filter does too, and may have been
    // quicker than the gateway's tables for the first one: keep trying meanwhile).
    let r = wait_until(
        Duration::from_secs(3),
        "acl_deny drops at the gateway",
        || {
            assert!(!connects(w.host("a1"), p5001, Duration::from_millis(200)));
            (w.drops("acl_deny") > denied_before).then_some(())
        },
    );
    assert!(
        r.is_ok(),
        "no acl_deny drop counted: {}\ntables: {}",
        w.gw.ctl(["counters"]).unwrap(),
        w.gw.ctl(["tables"]).unwrap()
    );
    let out = pinger.wait_timeout(Duration::from_secs(15)).unwrap();
    let log = pinger.log();
    assert!(
        out.success() && log.contains(" 0% packet loss"),
        "ping lost packets across the change:\n{log}"
    );
    drop(l5001);
}

#[test]
fn the_data_plane_keeps_forwarding_while_vrouterd_restarts_and_vrouterd_resumes() {
    let mut w = World::new();
    w.four_agents();
    let a2 = w.ip("a2");
    assert!(ping_eventually(w.host("a1"), a2));
    let gen_before = generation(&w.gw.ctl(["status"]).unwrap());
    let mut pinger = w
        .host("a1")
        .spawn([
            "ping",
            "-n",
            "-i",
            "0.1",
            "-c",
            "60",
            "-W",
            "1",
            &a2.to_string(),
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A crash, not a clean stop: nothing gets to tidy up.
    w.gw.stop_sidecar(true);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        w.gw.dataplane().unwrap().try_wait().unwrap().is_none(),
        "vrouter-dpdk died with vrouterd:\n{}",
        w.gw.dataplane_log()
    );
    w.gw.restart_sidecar().unwrap();
    let out = pinger.wait_timeout(Duration::from_secs(20)).unwrap();
    let log = pinger.log();
    assert!(
        out.success() && log.contains(" 0% packet loss"),
        "ping lost packets while vrouterd restarted:\n{log}\nvrouterd:\n{}",
        w.gw.sidecar_log()
    );
    // It resumed: the tables it publishes follow the control plane again.
    let st = w.gw.ctl(["status"]).unwrap();
    assert!(generation(&st) >= gen_before, "generation went back: {st}");
    let b1_id = w.node_id("tb", "b1");
    w.cp.ctl(["node", "delete", "--tenant", "tb", &b1_id])
        .unwrap();
    let r = wait_until(
        Duration::from_secs(5),
        "b1 to leave the gateway's peers",
        || {
            let p = w.gw.ctl(["peers"]).ok()?;
            (!p.to_string().contains(&b1_id)).then_some(())
        },
    );
    assert!(
        r.is_ok(),
        "vrouterd did not follow the control plane after its restart"
    );
    assert!(ping_eventually(w.host("a2"), w.ip("a1")));
}

#[test]
fn garbage_sent_to_the_gateway_is_dropped_and_counted_by_reason() {
    let mut w = World::new();
    w.four_agents();
    assert!(ping_eventually(w.host("a1"), w.ip("a2")));
    let before = w.gw.ctl(["counters"]).unwrap();
    let gw: SocketAddr = UNDERLAY.parse().unwrap();
    w.host("a1")
        .enter(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            // A truncated transport header and a bad type (unknown messages), and a transport
            // packet for a receiver index nobody has.
            s.send_to(&[4, 0, 0, 0, 1, 2], gw).unwrap();
            let mut fake = vec![4u8, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
            fake.extend_from_slice(&[0u8; 8 + 16 + 32]);
            s.send_to(&fake, gw).unwrap();
            s.send_to(&[9u8; 64], gw).unwrap();
        })
        .unwrap();
    let grew = wait_until(Duration::from_secs(3), "drop counters to grow", || {
        let now = w.gw.ctl(["counters"]).ok()?;
        let up = |r: &str| sum_reason(&now, r) > sum_reason(&before, r);
        (up("unknown_receiver") && up("unknown_message")).then_some(now)
    });
    assert!(
        grew.is_ok(),
        "drops not counted: {}",
        w.gw.ctl(["counters"]).unwrap()
    );
    // Still forwarding.
    assert!(ping(w.host("a1"), w.ip("a2")));
}

fn generation(status: &Value) -> u64 {
    status
        .get("generation")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no generation in {status}"))
}
