//! vrouterd's shell end to end, in-process, in bootstrap mode: a real segment file, real Unix
//! sockets, the real fast path (`Worker`) reading the segment, boringtun as the WireGuard peer.
//! The test plays vrouter-dpdk's socket: it wraps what boringtun sends into PUNT datagrams and
//! unwraps vrouterd's TX datagrams (the DPDK host itself runs in the hw-lab namespace tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use cvlan_fastpath::{Buf, INGRESS_UNDERLAY, Next, Reason, Verdict, Worker};
use cvlan_sidecar::ctl::{Request, Response};
use cvlan_sidecar::daemon::{self, Settings};
use cvlan_sidecar::punt::{Header, Kind, PORT_ROUTE, build_udp, parse_udp};
use cvlan_tables::{Segment, SegmentParams};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixDatagram, UnixStream};
use tokio::sync::watch;

const GW: &str = "10.255.0.1:51820";
const PEER_EP: &str = "10.251.1.2:40000";

struct TempDir(PathBuf);

static N: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "vrouterd-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(dir: &Path, bootstrap: &Path) -> Settings {
    Settings {
        server: None,
        join_token: None,
        ca_file: None,
        state_dir: dir.join("state"),
        listen: GW.parse().unwrap(),
        segment: dir.join("segment"),
        params: SegmentParams {
            keypair_capacity: 1024,
            slot_size: 1 << 20,
            max_workers: 2,
        },
        punt_socket: dir.join("punt.sock"),
        dpdk_socket: dir.join("dpdk.sock"),
        control_socket: dir.join("ctl.sock"),
        metrics_listen: None,
        bootstrap: Some(bootstrap.to_path_buf()),
        cookie_threshold: 1000,
    }
}

async fn ctl(sock: &Path, cmd: &str) -> Value {
    let s = UnixStream::connect(sock).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut line = serde_json::to_vec(&Request { cmd: cmd.into() }).unwrap();
    line.push(b'\n');
    w.write_all(&line).await.unwrap();
    let mut resp = String::new();
    BufReader::new(r).read_line(&mut resp).await.unwrap();
    let r: Response = serde_json::from_str(&resp).unwrap();
    assert!(r.ok, "{cmd}: {:?}", r.error);
    r.data.unwrap()
}

async fn wait_for(p: &Path) {
    for _ in 0..200 {
        if p.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} never appeared", p.display());
}

/// What boringtun sends to the gateway, as vrouter-dpdk punts it.
fn punt(reason: Reason, wg: &[u8]) -> Vec<u8> {
    let pkt = build_udp(PEER_EP.parse().unwrap(), GW.parse().unwrap(), wg).unwrap();
    let h = Header {
        kind: Kind::Punt,
        port: 0,
        reason: reason as u16,
        worker: 0,
    };
    [&h.encode()[..], &pkt].concat()
}

/// The next TX datagram vrouterd sends to "vrouter-dpdk": (destination, WireGuard payload).
async fn tx(dpdk: &UnixDatagram) -> (SocketAddr, Vec<u8>) {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), dpdk.recv(&mut buf))
        .await
        .expect("a TX datagram")
        .unwrap();
    let (h, payload) = Header::parse(&buf[..n]).unwrap();
    assert_eq!((h.kind, h.port), (Kind::Tx, PORT_ROUTE));
    let udp = parse_udp(payload).unwrap();
    assert_eq!(
        udp.src,
        GW.parse().unwrap(),
        "sent from the underlay address"
    );
    (udp.dst, udp.payload.to_vec())
}

fn network(r: TunnResult<'_>) -> Vec<u8> {
    match r {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        TunnResult::Err(e) => panic!("boringtun: {e:?}"),
        _ => panic!("boringtun wrote nothing"),
    }
}

fn from_gw() -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)))
}

/// One inner packet from the gateway's local side through a worker; boringtun must open it.
fn encrypt_to_boringtun(w: &mut Worker, b: &mut Tunn, tag: u8) {
    let inner = build_udp(
        "10.10.0.9:5000".parse().unwrap(),
        "10.10.0.2:6000".parse().unwrap(),
        &[tag; 32],
    )
    .unwrap();
    let (head, tail) = (128usize, 64usize);
    let mut mem = vec![0u8; head + inner.len() + tail];
    mem[head..head + inner.len()].copy_from_slice(&inner);
    let mut d = [Buf {
        data: mem[head..].as_mut_ptr(),
        len: inner.len() as u32,
        headroom: head as u32,
        tailroom: tail as u32,
        ingress: 0,
    }];
    let mut v = [Verdict {
        next: 0,
        reason: 0,
        aux: 0,
    }];
    // SAFETY: the descriptor describes `mem`, owned here.
    unsafe { w.process(&mut d, &mut v) };
    assert_eq!(v[0].next, Next::Underlay as u16, "verdict {:?}", v[0]);
    let off = d[0].headroom as usize;
    let out = &mem[off..off + d[0].len as usize];
    let udp = parse_udp(out).unwrap();
    assert_eq!(udp.dst, PEER_EP.parse().unwrap());
    let mut buf = vec![0u8; 2048];
    match b.decapsulate(from_gw(), udp.payload, &mut buf) {
        TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p, &inner[..]),
        other => panic!(
            "boringtun did not open the gateway's packet: {}",
            matches!(other, TunnResult::Err(_))
        ),
    }
    let _ = INGRESS_UNDERLAY;
}

fn bootstrap_file(dir: &Path, peer_pub: &PublicKey) -> PathBuf {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(peer_pub.as_bytes());
    let p = dir.join("tables.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[[tenants]]
id = "acme"
default_action = "allow"

[[peers]]
id = "laptop"
tenant = "acme"
public_key = "{key}"
allowed_ips = ["10.10.0.2/32"]
"#
        ),
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_punted_handshake_is_answered_installed_and_survives_a_restart_of_vrouterd() {
    let dir = TempDir::new();
    let b_sk = StaticSecret::from(rand::random::<[u8; 32]>());
    let b_pub = PublicKey::from(&b_sk);
    let boot = bootstrap_file(&dir.0, &b_pub);
    let s = settings(&dir.0, &boot);
    let dpdk = UnixDatagram::bind(&s.dpdk_socket).unwrap();

    let (stop, rx) = watch::channel(false);
    let d = tokio::spawn(daemon::run(s.clone(), rx));
    wait_for(&s.control_socket).await;
    let st = ctl(&s.control_socket, "status").await;
    assert!(st["generation"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["peers"], 1);
    let gw_pub: [u8; 32] = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(st["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let mut b = Tunn::new(b_sk, PublicKey::from(gw_pub), None, None, 3, None);

    // Handshake through the punt socket.
    let mut buf = vec![0u8; 2048];
    let init = network(b.format_handshake_initiation(&mut buf, false));
    dpdk.send_to(&punt(Reason::HandshakeInit, &init), &s.punt_socket)
        .await
        .unwrap();
    let (dst, response) = tx(&dpdk).await;
    assert_eq!(dst, PEER_EP.parse().unwrap());
    let keepalive = network(b.decapsulate(from_gw(), &response, &mut buf));
    dpdk.send_to(&punt(Reason::Keepalive, &keepalive), &s.punt_socket)
        .await
        .unwrap();

    // The keepalive confirms the session: it becomes current and a worker encrypts with it.
    let mut current = false;
    for _ in 0..100 {
        let k = ctl(&s.control_socket, "keypairs").await;
        if k["keypairs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["role"] == "current")
        {
            current = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(current, "the session never became current");
    let peers = ctl(&s.control_socket, "peers").await;
    assert_eq!(peers["peers"][0]["endpoint"], PEER_EP, "learned: {peers}");
    let mut w = Worker::new(Segment::open(&s.segment).unwrap(), 0).unwrap();
    encrypt_to_boringtun(&mut w, &mut b, 1);
    let gen_before = ctl(&s.control_socket, "status").await["generation"]
        .as_u64()
        .unwrap();

    // Counters: vrouterd asks "vrouter-dpdk" (this socket) and merges the answer.
    let sock = s.control_socket.clone();
    let q = tokio::spawn(async move { ctl(&sock, "counters").await });
    let mut req = vec![0u8; 256];
    let (n, from) = dpdk.recv_from(&mut req).await.unwrap();
    assert_eq!(Header::parse(&req[..n]).unwrap().0.kind, Kind::StatsReq);
    let h = Header {
        kind: Kind::StatsRep,
        port: 0,
        reason: 0,
        worker: 0,
    };
    let json = br#"{"workers":[{"worker":0,"reasons":{"malformed":3}}]}"#;
    let rep = [&h.encode()[..], json].concat();
    dpdk.send_to(&rep, from.as_pathname().unwrap())
        .await
        .unwrap();
    let c = q.await.unwrap();
    assert_eq!(c["dataplane"]["workers"][0]["reasons"]["malformed"], 3);
    assert_eq!(c["slowpath"]["punts"]["handshake_init"], 1);
    assert_eq!(c["slowpath"]["keepalives"], 1);

    // A clean stop removes the sockets; the workers keep the segment.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), d)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!s.control_socket.exists() && !s.punt_socket.exists());
    encrypt_to_boringtun(&mut w, &mut b, 2);

    // Restart: the segment is reopened, the session recovered and still used.
    let (stop, rx) = watch::channel(false);
    let d = tokio::spawn(daemon::run(s.clone(), rx));
    wait_for(&s.control_socket).await;
    let st = ctl(&s.control_socket, "status").await;
    assert!(st["generation"].as_u64().unwrap() > gen_before, "{st}");
    assert_eq!(st["keypairs"], 1, "{st}");
    encrypt_to_boringtun(&mut w, &mut b, 3);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), d)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_say_the_data_plane_is_not_reachable_when_vrouter_dpdk_is_absent() {
    let dir = TempDir::new();
    let b_pub = PublicKey::from(&StaticSecret::from(rand::random::<[u8; 32]>()));
    let boot = bootstrap_file(&dir.0, &b_pub);
    let mut s = settings(&dir.0, &boot);
    // The only test of this binary that installs the (process-global) metrics recorder.
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    s.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    let (stop, rx) = watch::channel(false);
    let d = tokio::spawn(daemon::run(s.clone(), rx));
    wait_for(&s.control_socket).await;
    let c = ctl(&s.control_socket, "counters").await;
    assert_eq!(c["dataplane"], "data plane not reachable");
    // Garbage on the punt socket is counted by reason.
    let probe = UnixDatagram::unbound().unwrap();
    probe
        .send_to(b"nonsense, nonsense", &s.punt_socket)
        .await
        .unwrap();
    probe.send_to(b"short", &s.punt_socket).await.unwrap();
    probe
        .send_to(
            &[b'C', b'V', b'P', b'T', 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &s.punt_socket,
        )
        .await
        .unwrap();
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = ctl(&s.control_socket, "punt").await;
        if seen["bad_datagrams"]["bad_kind"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen["bad_datagrams"]["bad_magic"], 1, "{seen}");
    assert_eq!(seen["bad_datagrams"]["bad_kind"], 1, "{seen}");
    assert_eq!(seen["bad_datagrams"]["short"], 1, "{seen}");
    let scrape = {
        use tokio::io::AsyncReadExt as _;
        let mut c = tokio::net::TcpStream::connect(s.metrics_listen.unwrap())
            .await
            .unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(
        scrape.contains(r#"vrouterd_punt_bad_total{reason="bad_kind"} 1"#),
        "{scrape}"
    );
    assert!(scrape.contains("vrouterd_publishes_total"), "{scrape}");
    stop.send(true).unwrap();
    d.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_of_another_abi_is_replaced_and_a_foreign_file_at_a_socket_path_is_refused() {
    let dir = TempDir::new();
    let b_pub = PublicKey::from(&StaticSecret::from(rand::random::<[u8; 32]>()));
    let boot = bootstrap_file(&dir.0, &b_pub);
    let s = settings(&dir.0, &boot);
    std::fs::write(&s.segment, vec![7u8; 8192]).unwrap();
    std::fs::write(&s.control_socket, b"not a socket").unwrap();
    let (_stop, rx) = watch::channel(false);
    let e = daemon::run(s.clone(), rx).await.unwrap_err();
    assert!(format!("{e:#}").contains("not a socket"), "{e:#}");
    // The corrupt segment was replaced by a valid one before that.
    assert!(Segment::open(&s.segment).is_ok());
}
