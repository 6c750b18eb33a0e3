//! End-to-end tests: the real `cvlan-api`, `cvlanctl`, `cvlan-agent` and `cvlan` binaries in
//! network namespaces (issue "Devices connect", item 5). They need root, iproute2, ping,
//! curl, and for the interop test wireguard-go + wg; the binaries are taken from next to this
//! test executable, so build them first: `cargo build --workspace --bins`.
//!
//! Layout: tenant `ta` has CVLAN `x` (10.20.0.0/24) with a1 and a2 and CVLAN `y`
//! (10.30.0.0/24) with a3; tenant `tb` has CVLAN `z` with the same 10.20.0.0/24 as x, and b1.
//! Every tenant gets an allow-all policy unless a test says otherwise, because the data plane
//! denies by default.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use cvlan_lab::cvlan::{Agent, Binaries, ControlPlane, Secret};
use cvlan_lab::{Host, Lab, wait_until};
use serde_json::json;

mod common;
use common::{allow_all, connects, items, ping, ping_eventually, transfer};

/// A control plane and agents in one lab. Field order is drop order: processes stop before
/// the lab tears down (and, on a panic, prints every log).
struct World {
    agents: HashMap<String, Agent>,
    cp: ControlPlane,
    bins: Binaries,
    lab: Lab,
}

const CVLANS: [(&str, &str, &str, &str); 3] = [
    ("ta", "x", "10.20.0.0/24", "fd20::/64"),
    ("ta", "y", "10.30.0.0/24", "fd30::/64"),
    ("tb", "z", "10.20.0.0/24", "fd20::/64"),
];

impl World {
    /// Control plane with tenants ta and tb, their CVLANs, and allow-all policies.
    fn new() -> World {
        let bins = Binaries::find(None).unwrap_or_else(|e| panic!("{e}"));
        let lab = Lab::new().expect("building the lab (needs root and iproute2)");
        let ctrl = lab.add_host("ctrl").unwrap();
        let cp = ControlPlane::start(&ctrl, &bins).unwrap();
        for t in ["ta", "tb"] {
            cp.create_tenant(t).unwrap();
            allow_all(&cp, t);
        }
        for (t, c, v4, v6) in CVLANS {
            cp.create_cvlan(t, c, v4, Some(v6)).unwrap();
        }
        World {
            agents: HashMap::new(),
            cp,
            bins,
            lab,
        }
    }

    /// A new host running an agent joined with a fresh single-use token.
    fn join(&mut self, name: &str, tenant: &str, cvlan: &str) -> &Agent {
        let host = self.lab.add_host(name).unwrap();
        let (_, token) = self.cp.create_token(tenant, cvlan, &[]).unwrap();
        let agent = Agent::start(&host, &self.bins).unwrap();
        agent
            .up(&self.cp.node_url(), &token)
            .unwrap_or_else(|e| panic!("cvlan up in {name}: {e}\nagent log:\n{}", agent.log()));
        self.agents.insert(name.to_string(), agent);
        &self.agents[name]
    }

    fn agent(&self, name: &str) -> &Agent {
        &self.agents[name]
    }

    fn host(&self, name: &str) -> &Host {
        self.agents[name].host()
    }

    fn ip(&self, name: &str) -> Ipv4Addr {
        self.agent(name).ipv4().unwrap()
    }

    /// Waits until `name`'s map lists exactly `peers` (by name).
    fn wait_peers(&self, name: &str, peers: &[&str]) {
        let mut want: Vec<String> = peers.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut last = Vec::new();
        let r = wait_until(Duration::from_secs(10), "the expected peers", || {
            let mut got = self.agent(name).peer_names().ok()?;
            got.sort();
            last.clone_from(&got);
            (got == want).then_some(())
        });
        if let Err(e) = r {
            panic!(
                "{name}: {e}: want {want:?}, have {last:?}\nstatus: {:?}",
                self.agent(name).status()
            );
        }
    }

    fn node_id(&self, tenant: &str, name: &str) -> String {
        let list = self.cp.ctl(["node", "list", "--tenant", tenant]).unwrap();
        items(&list)
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["id"].as_str())
            .unwrap_or_else(|| panic!("no node {name} in {list}"))
            .to_string()
    }
}

#[test]
fn nodes_of_one_cvlan_talk_and_nothing_crosses_cvlans_or_tenants() {
    let mut w = World::new();
    w.join("a1", "ta", "x");
    w.join("a2", "ta", "x");
    w.join("a3", "ta", "y");
    w.join("b1", "tb", "z");
    w.wait_peers("a1", &["a2"]);
    w.wait_peers("a2", &["a1"]);
    w.wait_peers("a3", &[]);
    w.wait_peers("b1", &[]);
    let (a1, a2, a3, b1) = (w.ip("a1"), w.ip("a2"), w.ip("a3"), w.ip("b1"));
    assert!(a1.to_string().starts_with("10.20.0.") && a2.to_string().starts_with("10.20.0."));
    assert!(a3.to_string().starts_with("10.30.0."), "{a3}");
    assert!(
        b1.to_string().starts_with("10.20.0."),
        "tenant B overlaps A: {b1}"
    );

    // a1 <-> a2: the CLI's ping, plain ICMP both ways, IPv6, and 50 MB of TCP intact.
    let out = w.agent("a1").cvlan(["ping", "a2"]).unwrap();
    assert!(out.status.success(), "cvlan ping a2: {out:?}");
    assert!(ping_eventually(w.host("a1"), a2), "a1 cannot ping a2");
    assert!(ping_eventually(w.host("a2"), a1), "a2 cannot ping a1");
    let a2v6 = w.agent("a2").ipv6().unwrap();
    assert!(
        ping_eventually(w.host("a1"), a2v6),
        "a1 cannot ping a2 over IPv6"
    );
    let len = 50 * 1024 * 1024;
    let (sent, got, n) = transfer(w.host("a1"), w.host("a2"), IpAddr::V4(a2), 7001, len);
    assert_eq!(n, len);
    assert_eq!(sent, got, "the 50 MB arrived altered");

    // Across CVLANs and tenants nothing passes, even with a route forcing packets into the
    // tunnel device. b1's address may even equal a1's or a2's (overlapping prefixes).
    let tun_route = |h: &str, dst: Ipv4Addr| {
        let link = w
            .host(h)
            .run_ok([
                "sh",
                "-c",
                &format!(
                    "ip -o addr show | awk '$4 ~ /^{}\\// {{print $2}}'",
                    w.ip(h)
                ),
            ])
            .unwrap();
        let link = link.trim().to_string();
        assert!(!link.is_empty(), "no device carries {h}'s CVLAN address");
        let _ = w
            .host(h)
            .run(["ip", "route", "replace", &format!("{dst}/32"), "dev", &link]);
    };
    tun_route("a1", a3);
    assert!(!ping(w.host("a1"), a3), "a1 reached a3 in another CVLAN");
    assert!(!ping(w.host("a3"), a1), "a3 reached a1 in another CVLAN");
    for target in [a1, a2] {
        if target != b1 {
            assert!(
                !ping(w.host("b1"), target),
                "b1 (tenant B) reached {target}"
            );
        }
    }
    let a1_map = w.agent("a1").status().unwrap().to_string();
    for foreign in ["a3", "b1"] {
        assert!(
            !a1_map.contains(&format!("\"{foreign}\"")),
            "a1's map mentions {foreign}: {a1_map}"
        );
    }
}

#[test]
fn a_policy_change_applies_within_2_s_while_allowed_traffic_keeps_flowing() {
    let mut w = World::new();
    w.join("a1", "ta", "x");
    w.join("a2", "ta", "x");
    w.wait_peers("a1", &["a2"]);
    let a2 = IpAddr::V4(w.ip("a2"));
    assert!(ping_eventually(w.host("a1"), a2));
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    // Listeners in a2; the kernel completes handshakes without accept(), so no thread needed.
    let l5001 = w
        .host("a2")
        .enter(move || TcpListener::bind(SocketAddr::new(any.ip(), 5001)))
        .unwrap()
        .unwrap();
    let l5002 = w
        .host("a2")
        .enter(move || TcpListener::bind(SocketAddr::new(any.ip(), 5002)))
        .unwrap()
        .unwrap();
    let p5001 = SocketAddr::new(a2, 5001);
    let p5002 = SocketAddr::new(a2, 5002);
    let t = Duration::from_millis(700);
    assert!(
        connects(w.host("a1"), p5001, t),
        "5001 closed before the change"
    );
    assert!(
        connects(w.host("a1"), p5002, t),
        "5002 closed before the change"
    );
    // An established connection before the change, and a steady ping across it.
    let established = w
        .host("a1")
        .enter(move || TcpStream::connect_timeout(&p5001, Duration::from_secs(2)))
        .unwrap()
        .unwrap();
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

    let a1_id = w.node_id("ta", "a1");
    let a2_id = w.node_id("ta", "a2");
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
    let denied = wait_until(Duration::from_secs(5), "5001 to be refused", || {
        (!connects(w.host("a1"), p5001, Duration::from_millis(300))).then(|| changed.elapsed())
    })
    .unwrap();
    assert!(denied <= Duration::from_secs(2), "the deny took {denied:?}");
    for _ in 0..3 {
        assert!(!connects(w.host("a1"), p5001, t), "5001 open again");
        assert!(
            connects(w.host("a1"), p5002, t),
            "5002 closed by the change"
        );
    }
    // The deny is a1 -> a2 only; nothing else was restarted.
    let out = pinger.wait_timeout(Duration::from_secs(15)).unwrap();
    let log = pinger.log();
    assert!(
        out.success() && log.contains(" 0% packet loss"),
        "ping lost packets across the change:\n{log}"
    );
    let mut e = established;
    e.write_all(b"still here").unwrap();
    drop((l5001, l5002));
}

#[test]
fn deleting_a_node_removes_it_from_its_peers_maps() {
    let mut w = World::new();
    w.join("a1", "ta", "x");
    w.join("a2", "ta", "x");
    w.wait_peers("a1", &["a2"]);
    let a2 = w.ip("a2");
    assert!(ping_eventually(w.host("a1"), a2));
    let id = w.node_id("ta", "a2");
    w.cp.ctl(["node", "delete", "--tenant", "ta", &id]).unwrap();
    w.wait_peers("a1", &[]);
    assert!(!ping(w.host("a1"), a2), "a1 still reaches the deleted a2");
    let gone = wait_until(
        Duration::from_secs(10),
        "a2 to report being logged out",
        || {
            let out = w.agent("a2").cvlan(["status"]).ok()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.contains("logged out").then_some(())
        },
    );
    assert!(
        gone.is_ok(),
        "a2 does not say it was logged out: {:?}",
        w.agent("a2").cvlan(["status"])
    );
}

#[test]
fn restarting_an_agent_keeps_its_address_and_reconnects() {
    let mut w = World::new();
    w.join("a1", "ta", "x");
    w.join("a2", "ta", "x");
    w.wait_peers("a1", &["a2"]);
    let before = (w.ip("a1"), w.agent("a1").ipv6().unwrap());
    w.agents.get_mut("a1").unwrap().restart().unwrap();
    let after = wait_until(Duration::from_secs(10), "a1 to be up again", || {
        let a = w.agent("a1");
        Some((a.ipv4().ok()?, a.ipv6().ok()?))
    })
    .unwrap();
    assert_eq!(before, after);
    w.wait_peers("a1", &["a2"]);
    assert!(
        ping_eventually(w.host("a1"), w.ip("a2")),
        "no traffic after the restart"
    );
    assert!(
        ping_eventually(w.host("a2"), before.0),
        "a2 cannot reach the restarted a1"
    );
    let nodes = items(&w.cp.ctl(["node", "list", "--tenant", "ta"]).unwrap());
    assert_eq!(
        nodes.len(),
        2,
        "the restart registered a new node: {nodes:?}"
    );
}

#[test]
fn revoked_expired_and_reused_tokens_are_refused_with_a_clear_error() {
    let w = World::new();
    let host = w.lab.add_host("n1").unwrap();
    let agent = Agent::start(&host, &w.bins).unwrap();
    let refusal = |token: &Secret| -> String {
        let out = agent
            .cvlan([
                "up",
                "--server",
                &w.cp.node_url(),
                "--auth-key",
                &token.0,
                "--hostname",
                "n1",
            ])
            .unwrap();
        assert!(!out.status.success(), "cvlan up succeeded with a bad token");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .to_lowercase()
    };

    let (id, revoked) = w.cp.create_token("ta", "x", &[]).unwrap();
    w.cp.ctl(["token", "revoke", "--tenant", "ta", &id])
        .unwrap();
    let msg = refusal(&revoked);
    assert!(msg.contains("revoked"), "{msg}");

    let (_, expiring) = w.cp.create_token("ta", "x", &["--expires", "1s"]).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let msg = refusal(&expiring);
    assert!(msg.contains("expired"), "{msg}");

    let (_, once) = w.cp.create_token("ta", "x", &[]).unwrap();
    let other = w.lab.add_host("n2").unwrap();
    let first = Agent::start(&other, &w.bins).unwrap();
    first.up(&w.cp.node_url(), &once).unwrap();
    let msg = refusal(&once);
    assert!(msg.contains("already been used"), "{msg}");

    let tampered = Secret(format!("{}x", once.0));
    let msg = refusal(&tampered);
    assert!(msg.contains("token"), "{msg}");
    // None of them made a node; only `first` did.
    let nodes = items(&w.cp.ctl(["node", "list", "--tenant", "ta"]).unwrap());
    assert_eq!(nodes.len(), 1, "{nodes:?}");
}

#[test]
fn wireguard_go_as_a_static_external_peer_passes_traffic_both_ways() {
    for tool in ["wireguard-go", "wg"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false),
            "{tool} is missing: apt-get install -y wireguard-go wireguard-tools"
        );
    }
    let mut w = World::new();
    // The external peer's address is no node's: let it in explicitly.
    w.cp.ctl([
        "policy",
        "create",
        "--tenant",
        "ta",
        "external",
        "--priority",
        "-1",
        "--rule",
        "src=cidr:10.20.0.200/32 dst=any action=allow",
    ])
    .unwrap();
    w.join("a1", "ta", "x");
    let ext = w.lab.add_host("ext").unwrap();
    let ifname = format!("wge{}", std::process::id());
    let mut wgp = {
        let mut c = ext.command("wireguard-go");
        c.args(["-f", &ifname]).env("WG_PROCESS_FOREGROUND", "1");
        ext.spawn_command(c, "wireguard-go").unwrap()
    };
    let sock = format!("/var/run/wireguard/{ifname}.sock");
    wait_until(
        Duration::from_secs(10),
        "wireguard-go's UAPI socket",
        || std::path::Path::new(&sock).exists().then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", wgp.log()));
    let key = String::from_utf8(Command::new("wg").arg("genkey").output().unwrap().stdout).unwrap();
    let keyfile = ext.dir().join("wg.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&keyfile)
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    let public = ext
        .run_ok(["sh", "-c", &format!("wg pubkey < {}", keyfile.display())])
        .unwrap()
        .trim()
        .to_string();

    let ep =
        w.cp.rest(
            "POST",
            "/api/v1/tenants/ta/cvlans/x/external-peers",
            Some(&json!({
                "name": "ext",
                "wgPublicKey": public,
                "endpoint": format!("{}:51820", ext.ipv4()),
                "allowedIps": ["10.20.0.200/32"],
            })),
        )
        .unwrap();
    assert_eq!(ep["name"], "ext", "{ep}");

    // a1's key and its reported endpoint, from the admin API.
    let a1_id = w.node_id("ta", "a1");
    let endpoint = wait_until(Duration::from_secs(10), "a1's reported endpoint", || {
        let n = w.cp.ctl(["node", "get", "--tenant", "ta", &a1_id]).ok()?;
        let key = n["wgPublicKey"].as_str()?.to_string();
        let ep = n["endpoints"]
            .as_array()?
            .iter()
            .filter_map(|e| e["address"].as_str())
            .find(|a| a.starts_with(&w.host("a1").ipv4().to_string()))?
            .to_string();
        Some((key, ep))
    })
    .unwrap();
    let (a1_key, a1_endpoint) = endpoint;
    let a1_ip = w.ip("a1");
    ext.run_ok([
        "wg",
        "set",
        &ifname,
        "private-key",
        &keyfile.to_string_lossy(),
        "listen-port",
        "51820",
        "peer",
        &a1_key,
        "endpoint",
        &a1_endpoint,
        "allowed-ips",
        &format!("{a1_ip}/32"),
    ])
    .unwrap();
    ext.run_ok(["ip", "addr", "add", "10.20.0.200/24", "dev", &ifname])
        .unwrap();
    ext.run_ok(["ip", "link", "set", &ifname, "mtu", "1420", "up"])
        .unwrap();

    w.wait_peers("a1", &["ext"]);
    assert!(
        ping_eventually(w.host("a1"), "10.20.0.200"),
        "a1 -> wireguard-go failed"
    );
    assert!(ping_eventually(&ext, a1_ip), "wireguard-go -> a1 failed");
    let (sent, got, n) = transfer(&ext, w.host("a1"), IpAddr::V4(a1_ip), 7002, 4 << 20);
    assert_eq!(
        (sent, n),
        (got, 4 << 20),
        "TCP from wireguard-go to a1 arrived altered"
    );
    let (sent, got, n) = transfer(
        w.host("a1"),
        &ext,
        "10.20.0.200".parse().unwrap(),
        7003,
        4 << 20,
    );
    assert_eq!(
        (sent, n),
        (got, 4 << 20),
        "TCP from a1 to wireguard-go arrived altered"
    );
    let hs = ext
        .run_ok(["wg", "show", &ifname, "latest-handshakes"])
        .unwrap();
    assert!(
        !hs.trim().ends_with("\t0"),
        "no handshake recorded by wireguard-go: {hs}"
    );
    wgp.stop(Duration::from_secs(2));
}
