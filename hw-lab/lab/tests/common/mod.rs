//! Helpers shared by the end-to-end test files (each file includes this module).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use cvlan_lab::cvlan::ControlPlane;
use cvlan_lab::{Host, wait_until};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn allow_all(cp: &ControlPlane, tenant: &str) {
    cp.ctl([
        "policy",
        "create",
        "--tenant",
        tenant,
        "allow-all",
        "--rule",
        "src=any dst=any action=allow",
    ])
    .unwrap();
}

/// The objects of a list answer (`{"items": […]}`, or a bare array).
pub fn items(v: &Value) -> Vec<Value> {
    v.get("items")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_default()
}

pub fn ping(from: &Host, to: impl ToString) -> bool {
    from.run(["ping", "-c1", "-W1", &to.to_string()])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one answer arrives (the first packets wait for the handshake) or 10 s pass.
pub fn ping_eventually(from: &Host, to: impl ToString) -> bool {
    let to = to.to_string();
    wait_until(Duration::from_secs(10), "a ping answer", || {
        ping(from, &to).then_some(())
    })
    .is_ok()
}

/// Bytes of a deterministic pseudo-random stream (xorshift64*), so the data is not trivially
/// compressible or repetitive.
pub fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Sends `len` bytes from `from` to `to_ip:port` (listening in `to`) over TCP; returns the
/// SHA-256 of what was sent and of what arrived, and the byte count that arrived.
pub fn transfer(
    from: &Host,
    to: &Host,
    to_ip: IpAddr,
    port: u16,
    len: usize,
) -> ([u8; 32], [u8; 32], usize) {
    let addr = SocketAddr::new(to_ip, port);
    let listener = to.enter(move || TcpListener::bind(addr)).unwrap().unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k;
                }
                Err(e) => panic!("receiving after {n} bytes: {e}"),
            }
        }
        (<[u8; 32]>::from(h.finalize()), n)
    });
    let mut s = from
        .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut h = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let k = left.min(buf.len());
        fill(&mut buf[..k], &mut state);
        h.update(&buf[..k]);
        s.write_all(&buf[..k]).unwrap();
        left -= k;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (got, n) = receiver.join().unwrap();
    (h.finalize().into(), got, n)
}

/// Can `from` open a TCP connection to `addr` within `timeout`?
pub fn connects(from: &Host, addr: SocketAddr, timeout: Duration) -> bool {
    from.enter(move || TcpStream::connect_timeout(&addr, timeout).is_ok())
        .unwrap()
}
