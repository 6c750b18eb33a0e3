//! Interop: Debian's wireguard-go + wg on the other side (needs root, wireguard-go, wg).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;

/// A wireguard-go process in a namespace, killed on drop.
struct WireguardGo {
    child: Child,
    key_file: String,
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.key_file);
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn wireguard_go_peer_passes_traffic_both_ways() {
    assert!(
        have("wireguard-go") && have("wg"),
        "install wireguard-go and wireguard-tools (hw-lab/setup.sh)"
    );
    let pair = Pair::new();
    let (pa, ka) = key_pair(11);
    let (pb, kb) = key_pair(12);

    // b: wireguard-go
    let child = Command::new("ip")
        .args(["netns", "exec", &pair.b.name, "wireguard-go", "wg0"])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wireguard-go");
    let key_file = format!("/tmp/cvdp-wgkey-{}", tag());
    let _wg = WireguardGo {
        child,
        key_file: key_file.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pair
        .b
        .try_exec(&["ip", "link", "show", "wg0"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "wireguard-go did not create wg0");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&key_file, STANDARD.encode(pb)).unwrap();
    let ka_b64 = STANDARD.encode(ka);
    pair.b.exec(&[
        "wg",
        "set",
        "wg0",
        "private-key",
        &key_file,
        "listen-port",
        "51820",
        "peer",
        &ka_b64,
        "endpoint",
        "192.168.77.1:51820",
        "allowed-ips",
        "10.77.0.1/32,fd00:77::1/128",
    ]);
    pair.b
        .exec(&["ip", "addr", "add", "10.77.0.2/24", "dev", "wg0"]);
    pair.b
        .exec(&["ip", "addr", "add", "fd00:77::2/64", "dev", "wg0", "nodad"]);
    pair.b.exec(&["ip", "link", "set", "wg0", "up"]);

    // a: our data plane
    let da = start(&pair.a, pa, 51820, &["10.77.0.1/24", "fd00:77::1/64"]);
    da.set_filter(allow_all());
    da.set_peers(vec![peer(
        kb,
        "wg-go",
        "192.168.77.2:51820",
        &["10.77.0.2/32", "fd00:77::2/128"],
    )]);

    assert!(pair.a.ping("10.77.0.2"), "a -> wireguard-go (v4)");
    assert!(pair.b.ping("10.77.0.1"), "wireguard-go -> a (v4)");
    assert!(pair.a.ping("fd00:77::2"), "a -> wireguard-go (v6)");
    assert!(pair.b.ping("fd00:77::1"), "wireguard-go -> a (v6)");
    let len = 8 << 20;
    let (got, same) = tcp_transfer(&pair.a, &pair.b, "10.77.0.2:5001", "10.77.0.2:5001", len);
    assert_eq!((got, same), (len, true), "TCP a -> wireguard-go");
    let (got, same) = tcp_transfer(&pair.b, &pair.a, "10.77.0.1:5002", "10.77.0.1:5002", len);
    assert_eq!((got, same), (len, true), "TCP wireguard-go -> a");

    let dump = pair.b.exec(&["wg", "show", "wg0", "latest-handshakes"]);
    assert!(dump.contains(&ka_b64), "wg knows our key: {dump}");
    let stats = da.peer_stats();
    assert!(stats[0].last_handshake.is_some());
    assert!(stats[0].rx_bytes >= len as u64);
    assert_eq!(da.counters().dropped_malformed, 0, "{:?}", da.counters());
}
