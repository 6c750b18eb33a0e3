//! Network-namespace fixtures for the data plane tests (root required).
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use cvlan_dataplane::{Config, Dataplane, IpNet, PeerConfig};
use cvlan_policy::{Action, Filter, FilterRule, Proto};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names: pid + sequence (interface names are limited to 15 bytes).
pub fn tag() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

pub fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop (with everything in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = format!("cvdp-{prefix}-{}", tag());
        must(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace and asserts success.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Runs a command inside the namespace.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs `f` on a thread that has entered this namespace (sockets and TUN devices it
    /// creates, and threads it spawns, live in the namespace).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).expect("open netns");
            // SAFETY: setns on a valid namespace fd; affects only this thread.
            let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }

    pub fn ping(&self, addr: &str) -> bool {
        let out = self.try_exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", addr]);
        out.status.success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: a at 192.168.77.1/24, b at 192.168.77.2/24
/// (and fd77:0:0::1/64, ::2).
pub struct Pair {
    // dropped in order: nothing else refers to the veth, deleting a namespace deletes it
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub fn new() -> Self {
        let a = Netns::new("a");
        let b = Netns::new("b");
        let t = tag();
        let (va, vb) = (format!("va{t}"), format!("vb{t}"));
        must(&[
            "ip", "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb,
            "netns", &b.name,
        ]);
        a.exec(&["ip", "link", "set", &va, "name", "eth0"]);
        b.exec(&["ip", "link", "set", &vb, "name", "eth0"]);
        a.exec(&["ip", "addr", "add", "192.168.77.1/24", "dev", "eth0"]);
        b.exec(&["ip", "addr", "add", "192.168.77.2/24", "dev", "eth0"]);
        a.exec(&["ip", "addr", "add", "fd77::1/64", "dev", "eth0", "nodad"]);
        b.exec(&["ip", "addr", "add", "fd77::2/64", "dev", "eth0", "nodad"]);
        a.exec(&["ip", "link", "set", "eth0", "up"]);
        b.exec(&["ip", "link", "set", "eth0", "up"]);
        Pair { a, b }
    }
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

pub fn key_pair(seed: u8) -> ([u8; 32], [u8; 32]) {
    let mut private = [seed; 32];
    private[0] = seed.wrapping_mul(31).wrapping_add(7);
    let secret = boringtun::x25519::StaticSecret::from(private);
    let public = boringtun::x25519::PublicKey::from(&secret);
    (private, public.to_bytes())
}

pub fn allow_all() -> Filter {
    Filter {
        rules: vec![FilterRule {
            sources: vec![net("0.0.0.0/0"), net("::/0")],
            destinations: vec![net("0.0.0.0/0"), net("::/0")],
            proto: Proto::Any,
            ports: Vec::new(),
            action: Action::Allow,
        }],
    }
}

pub fn start(ns: &Netns, private_key: [u8; 32], port: u16, addrs: &[&str]) -> Dataplane {
    let cfg = Config {
        tun_name: "cvlan0".into(),
        private_key,
        listen_port: port,
        addresses: addrs.iter().map(|a| net(a)).collect(),
        mtu: 1420,
    };
    ns.enter(move || Dataplane::start(cfg).expect("data plane starts"))
}

pub fn peer(public_key: [u8; 32], name: &str, endpoint: &str, allowed: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key,
        name: name.into(),
        endpoint: Some(endpoint.parse().expect("endpoint")),
        allowed_ips: allowed.iter().map(|a| net(a)).collect(),
        persistent_keepalive: None,
    }
}

/// Two data planes on a [`Pair`]: A = 10.77.0.1 / fd00:77::1, B = 10.77.0.2 / fd00:77::2.
pub struct Mesh {
    pub da: Dataplane,
    pub db: Dataplane,
    pub ka: [u8; 32],
    pub kb: [u8; 32],
    pub pair: Pair,
}

impl Mesh {
    pub fn new(filter_a: Filter, filter_b: Filter) -> Self {
        let pair = Pair::new();
        let (pa, ka) = key_pair(1);
        let (pb, kb) = key_pair(2);
        let da = start(&pair.a, pa, 51820, &["10.77.0.1/24", "fd00:77::1/64"]);
        let db = start(&pair.b, pb, 51820, &["10.77.0.2/24", "fd00:77::2/64"]);
        da.set_filter(filter_a);
        db.set_filter(filter_b);
        da.set_peers(vec![peer(
            kb,
            "b",
            "192.168.77.2:51820",
            &["10.77.0.2/32", "fd00:77::2/128"],
        )]);
        db.set_peers(vec![peer(
            ka,
            "a",
            "192.168.77.1:51820",
            &["10.77.0.1/32", "fd00:77::1/128"],
        )]);
        Mesh {
            da,
            db,
            ka,
            kb,
            pair,
        }
    }
}

/// Sends `len` bytes of a pattern over TCP from namespace `from` to `to_addr:port` in
/// namespace `to`; returns the bytes received and whether they matched.
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    listen: &str,
    connect: &str,
    len: usize,
) -> (usize, bool) {
    use std::io::{Read, Write};
    let listen = listen.to_string();
    let listener = to.enter(move || std::net::TcpListener::bind(listen).expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let connect = connect.to_string();
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let sent = data.clone();
    from.enter(move || {
        let mut c = std::net::TcpStream::connect_timeout(
            &connect.parse().expect("addr"),
            std::time::Duration::from_secs(5),
        )
        .expect("connect");
        c.write_all(&sent).expect("write");
    });
    let got = server.join().expect("server");
    (got.len(), got == data)
}
