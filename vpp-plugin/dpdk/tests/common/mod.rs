//! Lab for the vrouter-dpdk tests: a gateway namespace running the real binary on an
//! af_packet port over a veth, and a "remote" namespace holding both WireGuard peers'
//! endpoints. Everything is torn down in Drop, even when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use cvlan_tables::layout::Underlay;
use cvlan_tables::{
    KeypairSpec, PeerSpec, Prefix, Segment, SegmentParams, TableBuilder, TenantSpec,
};

pub const GW_MAC: [u8; 6] = [0x02, 0xcd, 0, 0, 0, 1];
pub const RM_MAC: [u8; 6] = [0x02, 0xcd, 0, 0, 0, 2];
pub const GW_PORT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 1);
pub const UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
pub const UNDERLAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x255, 0, 0, 0, 0, 0, 1);
pub const A_HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x251, 1, 0, 0, 0, 0, 2);
pub const B_HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x251, 1, 0, 0, 0, 0, 3);
pub const A_HOST: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 2);
pub const B_HOST: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 3);
pub const A_PORT: u16 = 40001;
pub const B_PORT: u16 = 40002;
pub const WG_PORT: u16 = 51820;
pub const A_INNER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const B_INNER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// Gateway's receiver index for A's keypair and A's own index.
pub const RX_A: u32 = 0x0000_0011;
pub const A_INDEX: u32 = 0xa1;
pub const RX_B: u32 = 0x0000_0022;
pub const B_INDEX: u32 = 0xb2;
/// A → gateway key, gateway → A key, and the same for B.
pub const KEY_A_TO_GW: [u8; 32] = [0xa1; 32];
pub const KEY_GW_TO_A: [u8; 32] = [0xa2; 32];
pub const KEY_B_TO_GW: [u8; 32] = [0xb1; 32];
pub const KEY_GW_TO_B: [u8; 32] = [0xb2; 32];

pub const BIN: &str = env!("CARGO_BIN_EXE_vrouter-dpdk");

static SEQ: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Brings `lo` and veth `i` of namespace `ns` up, offloads off.
fn link_up(ns: &str, i: &str) {
    sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", ns, "link", "set", i, "up"]);
    // Checksum offload would hand af_packet frames with unfinished checksums and GSO/GRO
    // could hand it super-frames larger than an mbuf: off on both ends.
    sh(&[
        "ip", "netns", "exec", ns, "ethtool", "-K", i, "tx", "off", "gso", "off", "tso", "off",
        "gro", "off",
    ]);
}

/// Runs `f` on a thread inside network namespace `ns` (sockets keep their namespace).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a valid namespace fd.
        assert_eq!(
            unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap()
}

pub struct Lab {
    pub gw: String,
    pub rm: String,
    pub gw_if: String,
    pub rm_if: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Optional second port: (gateway-side veth, remote namespace).
    pub second: Option<(String, String)>,
    /// Give the port an IPv6 address and the gateway an IPv6 underlay address.
    pub v6: bool,
}

impl Lab {
    pub fn new() -> Self {
        let tag = format!(
            "{}{}",
            std::process::id() % 1_000_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Self {
            gw: format!("cvdgw{tag}"),
            rm: format!("cvdrm{tag}"),
            gw_if: format!("cvg{tag}"),
            rm_if: format!("cvr{tag}"),
            dir: std::env::temp_dir().join(format!("cvd-test-{tag}")),
            child: None,
            second: None,
            v6: false,
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).unwrap();
        sh(&["ip", "netns", "add", &lab.gw]);
        sh(&["ip", "netns", "add", &lab.rm]);
        sh(&[
            "ip",
            "link",
            "add",
            &lab.gw_if,
            "address",
            &mac_str(GW_MAC),
            "netns",
            &lab.gw,
            "type",
            "veth",
            "peer",
            "name",
            &lab.rm_if,
            "address",
            &mac_str(RM_MAC),
            "netns",
            &lab.rm,
        ]);
        link_up(&lab.gw, &lab.gw_if);
        link_up(&lab.rm, &lab.rm_if);
        for a in ["10.251.1.2/24", "10.251.1.3/24"] {
            sh(&["ip", "-n", &lab.rm, "addr", "add", a, "dev", &lab.rm_if]);
        }
        sh(&[
            "ip",
            "-n",
            &lab.rm,
            "route",
            "add",
            "10.255.0.1/32",
            "via",
            "10.251.1.1",
        ]);
        for a in ["fd00:251:1::2/64", "fd00:251:1::3/64"] {
            sh(&[
                "ip", "-n", &lab.rm, "addr", "add", a, "dev", &lab.rm_if, "nodad",
            ]);
        }
        sh(&[
            "ip",
            "-n",
            &lab.rm,
            "-6",
            "route",
            "add",
            "fd00:255::1/128",
            "via",
            "fd00:251:1::1",
        ]);
        lab
    }

    /// Adds port 1 (10.251.2.1/24) towards a third namespace holding 10.251.2.3 on the veth
    /// and `far` on its loopback (reachable from the gateway only through a --route).
    pub fn add_second_port(&mut self, far: Ipv4Addr) -> String {
        let tag = self.gw.trim_start_matches("cvdgw").to_owned();
        let (ns, gw_if, rm_if) = (
            format!("cvdr2{tag}"),
            format!("cvh{tag}"),
            format!("cvs{tag}"),
        );
        sh(&["ip", "netns", "add", &ns]);
        self.second = Some((gw_if.clone(), ns.clone()));
        sh(&[
            "ip", "link", "add", &gw_if, "netns", &self.gw, "type", "veth", "peer", "name", &rm_if,
            "netns", &ns,
        ]);
        link_up(&self.gw, &gw_if);
        link_up(&ns, &rm_if);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            "10.251.2.3/24",
            "dev",
            &rm_if,
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{far}/32"),
            "dev",
            "lo",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "10.255.0.1/32",
            "via",
            "10.251.2.1",
        ]);
        ns
    }

    pub fn segment(&self) -> PathBuf {
        self.dir.join("segment")
    }
    pub fn sock(&self) -> PathBuf {
        self.dir.join("dpdk.sock")
    }
    pub fn sidecar(&self) -> PathBuf {
        self.dir.join("sidecar.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("vrouter-dpdk.log")
    }

    /// Starts vrouter-dpdk in the gateway namespace with `extra` flags.
    pub fn start(&mut self, extra: &[&str]) {
        let log = File::create(self.log()).unwrap();
        let mut port = format!("iface={},addr=10.251.1.1/24", self.gw_if);
        if self.v6 {
            port.push_str(",addr6=fd00:251:1::1/64");
        }
        let prefix = format!("cvdtest{}", self.gw);
        let mut args: Vec<String> = [
            "netns",
            "exec",
            &self.gw,
            BIN,
            "--port",
            &port,
            "--underlay",
            "10.255.0.1",
            "--file-prefix",
            &prefix,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        for (f, p) in [
            ("--segment", self.segment()),
            ("--socket", self.sock()),
            ("--sidecar-socket", self.sidecar()),
        ] {
            args.push(f.into());
            args.push(p.display().to_string());
        }
        if let Some((gw_if, _)) = &self.second {
            args.push("--port".into());
            args.push(format!("iface={gw_if},addr=10.251.2.1/24"));
        }
        if self.v6 {
            args.extend(["--underlay6".into(), UNDERLAY6.to_string()]);
        }
        if !extra.contains(&"--idle-sleep-us") {
            // Be gentle with the shared test machine: sleep when idle.
            args.extend(["--idle-sleep-us".into(), "200".into()]);
        }
        args.extend(extra.iter().map(ToString::to_string));
        let child = Command::new("ip")
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_log("forwarding", Duration::from_secs(20));
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle` (panics with the log otherwise).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "vrouter-dpdk exited ({st}) before {needle:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                t0.elapsed() < timeout,
                "no {needle:?} in the log within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        // `ip netns exec` execs the binary, so this pid is vrouter-dpdk itself.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                panic!("vrouter-dpdk ignored SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A UDP socket in the remote namespace.
    pub fn udp(&self, addr: impl Into<IpAddr>, port: u16) -> UdpSocket {
        let addr = addr.into();
        let s = in_ns(&self.rm, move || UdpSocket::bind((addr, port)).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    }

    /// A STATS_REQ round trip.
    pub fn stats(&self) -> serde_json::Value {
        let me = self.dir.join(format!(
            "stats-{}.sock",
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let s = UnixDatagram::bind(&me).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&header(3, 0, 0), self.sock()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let n = s.recv(&mut buf).expect("STATS_REP within 3 s");
        let _ = std::fs::remove_file(&me);
        assert_eq!(&buf[..4], b"CVPT");
        assert_eq!(buf[5], 4, "STATS_REP kind");
        serde_json::from_slice(&buf[16..n]).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.gw]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.rm]).status();
        if let Some((_, ns)) = &self.second {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/cvdtest{}", self.gw));
    }
}

/// The punt-protocol header.
pub fn header(kind: u8, port: u16, reason: u16) -> Vec<u8> {
    let mut h = b"CVPT".to_vec();
    h.push(1);
    h.push(kind);
    h.extend_from_slice(&port.to_le_bytes());
    h.extend_from_slice(&reason.to_le_bytes());
    h.extend_from_slice(&[0; 6]);
    h
}

/// One tenant, peers A and B with installed keypairs and endpoints in the remote namespace.
pub fn tables() -> Vec<u8> {
    tables_with_b(SocketAddr::from((B_HOST, B_PORT)))
}

/// As [`tables`], with B's endpoint at `b`.
pub fn tables_with_b(b: SocketAddr) -> Vec<u8> {
    tables_with(SocketAddr::from((A_HOST, A_PORT)), b)
}

/// As [`tables`], with A's and B's endpoints given (IPv6 ones need the IPv6 underlay).
pub fn tables_with(a: SocketAddr, b: SocketAddr) -> Vec<u8> {
    let p = |a: Ipv4Addr| Prefix::new(a.into(), 32);
    TableBuilder {
        underlay: Underlay {
            addr4: UNDERLAY.octets(),
            port: WG_PORT,
            addr6: UNDERLAY6.octets(),
            ..Default::default()
        },
        tenants: vec![TenantSpec {
            id: 1,
            default_permit: true,
            ..Default::default()
        }],
        peers: vec![
            PeerSpec {
                id: 1,
                tenant: 0,
                endpoint: Some(a),
                allowed_ips: vec![p(A_INNER)],
                current: Some(KeypairSpec {
                    receiver_index: RX_A,
                    remote_index: A_INDEX,
                    send_key: KEY_GW_TO_A,
                    recv_key: KEY_A_TO_GW,
                    install_id: 1,
                }),
                ..Default::default()
            },
            PeerSpec {
                id: 2,
                tenant: 0,
                endpoint: Some(b),
                allowed_ips: vec![p(B_INNER)],
                current: Some(KeypairSpec {
                    receiver_index: RX_B,
                    remote_index: B_INDEX,
                    send_key: KEY_GW_TO_B,
                    recv_key: KEY_B_TO_GW,
                    install_id: 2,
                }),
                ..Default::default()
            },
        ],
    }
    .build(16)
    .unwrap()
}

pub fn write_segment(path: &Path) {
    write_segment_image(path, &tables());
}

/// Publishes `image` as the only generation of a fresh segment at `path`.
pub fn write_segment_image(path: &Path, image: &[u8]) {
    let params = SegmentParams {
        keypair_capacity: 16,
        slot_size: 1 << 16,
        max_workers: 2,
    };
    // Written next to the target and renamed, as a writer replacing a bad file would.
    let tmp = path.with_extension("new");
    let mut seg = Segment::create_file(&tmp, params).unwrap();
    seg.publish(image).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An IPv4/UDP packet with a valid header checksum.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = (28 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum = 0u32;
    for c in p.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// A WireGuard transport-data message carrying `inner` (zero-padded to 16 bytes).
pub fn wg_data(key: &[u8; 32], receiver: u32, counter: u64, inner: &[u8]) -> Vec<u8> {
    let mut pt = inner.to_vec();
    pt.resize(inner.len().div_ceil(16) * 16, 0);
    let ct = ChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(&Nonce::from(nonce(counter)), Payload { msg: &pt, aad: &[] })
        .unwrap();
    let mut m = vec![4, 0, 0, 0];
    m.extend_from_slice(&receiver.to_le_bytes());
    m.extend_from_slice(&counter.to_le_bytes());
    m.extend_from_slice(&ct);
    m
}

/// Opens a transport-data message; returns (receiver, counter, padded plaintext).
pub fn open_wg(key: &[u8; 32], msg: &[u8]) -> Option<(u32, u64, Vec<u8>)> {
    if msg.len() < 32 || msg[0] != 4 {
        return None;
    }
    let receiver = u32::from_le_bytes(msg[4..8].try_into().unwrap());
    let counter = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    let pt = ChaCha20Poly1305::new(&Key::from(*key))
        .decrypt(
            &Nonce::from(nonce(counter)),
            Payload {
                msg: &msg[16..],
                aad: &[],
            },
        )
        .ok()?;
    Some((receiver, counter, pt))
}

/// Sends A's packets (fresh counters from `*counter`) until B's socket receives one; returns
/// what B got. The first may be lost to the gateway's ARP miss for B's host.
pub fn a_to_b(a: &UdpSocket, b: &UdpSocket, counter: &mut u64, inner: &[u8]) -> Vec<u8> {
    a_to_b_via(a, b, SocketAddr::from((UNDERLAY, WG_PORT)), counter, inner)
}

/// As [`a_to_b`], with the gateway at `gw`.
pub fn a_to_b_via(
    a: &UdpSocket,
    b: &UdpSocket,
    gw: SocketAddr,
    counter: &mut u64,
    inner: &[u8],
) -> Vec<u8> {
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while t0.elapsed() < Duration::from_secs(5) {
        let m = wg_data(&KEY_A_TO_GW, RX_A, *counter, inner);
        *counter += 1;
        a.send_to(&m, gw).unwrap();
        if let Ok((n, from)) = b.recv_from(&mut buf) {
            assert_eq!(from, gw, "outer source");
            return buf[..n].to_vec();
        }
    }
    panic!("nothing reached peer B within 5 s");
}

/// A raw AF_PACKET socket on the remote veth.
pub struct Raw {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl Raw {
    pub fn new(lab: &Lab) -> Self {
        let ifname = lab.rm_if.clone();
        let (fd, ifindex) = in_ns(&lab.rm, move || {
            // SAFETY: plain socket creation; ETH_P_ALL in network order.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from((libc::ETH_P_ALL as u16).to_be()),
                )
            };
            assert!(fd >= 0);
            let c = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: valid C string.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
            assert!(ifindex > 0);
            // SAFETY: fd was just created.
            (
                unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
                ifindex,
            )
        });
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        // SAFETY: all-zero sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: valid sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0);
        Self { fd, ifindex }
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: valid buffer; the socket is bound to the interface.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize);
    }

    /// Next frame, or None after the timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut b = vec![0u8; 4096];
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
        (n > 0).then(|| {
            b.truncate(n as usize);
            b
        })
    }
}
