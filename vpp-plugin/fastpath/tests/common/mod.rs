//! Test helpers: a WireGuard Noise_IKpsk2 *initiator* written from the protocol description
//! (so that session keys can be extracted honestly — boringtun keeps its own private), run
//! against boringtun as the responder; table and packet builders.
#![allow(dead_code, clippy::unwrap_used)] // test-only helpers: panics are test failures

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
const LABEL_MAC1: &[u8] = b"mac1----";

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <hmac::SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// HKDF with HMAC-BLAKE2s, N outputs.
fn kdf<const N: usize>(ck: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    let t0 = hmac(ck, &[input]);
    let mut out = [[0u8; 32]; N];
    let mut prev: Vec<u8> = Vec::new();
    for (i, o) in out.iter_mut().enumerate() {
        *o = hmac(&t0, &[&prev, &[i as u8 + 1]]);
        prev = o.to_vec();
    }
    out
}

fn mac16(key: &[u8; 32], data: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn aead_seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap());
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(aad),
        &mut buf,
    )
    .unwrap();
    buf
}

fn aead_open(key: &[u8; 32], ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap());
    let mut buf = ct.to_vec();
    let n = k
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).unwrap();
    b
}

/// Transport keys of the initiator after one handshake.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub local_index: u32,
    pub remote_index: u32,
    pub send_key: [u8; 32],
    pub recv_key: [u8; 32],
}

/// Runs one WireGuard handshake with `responder` (boringtun) as the peer, this helper being
/// the initiator with static key `s_i`. Returns the initiator's transport keys.
pub fn handshake(
    s_i: &StaticSecret,
    s_r_pub: &PublicKey,
    local_index: u32,
    responder: &mut Tunn,
) -> Session {
    let s_i_pub = PublicKey::from(s_i);
    let e_i = StaticSecret::from(random32());
    let e_i_pub = PublicKey::from(&e_i);

    let mut ck = hash(&[CONSTRUCTION]);
    let mut h = hash(&[&ck, IDENTIFIER]);
    h = hash(&[&h, s_r_pub.as_bytes()]);
    [ck] = kdf::<1>(&ck, e_i_pub.as_bytes());
    h = hash(&[&h, e_i_pub.as_bytes()]);
    let [c, k] = kdf::<2>(&ck, e_i.diffie_hellman(s_r_pub).as_bytes());
    ck = c;
    let enc_static = aead_seal(&k, s_i_pub.as_bytes(), &h);
    h = hash(&[&h, &enc_static]);
    let [c, k] = kdf::<2>(&ck, s_i.diffie_hellman(s_r_pub).as_bytes());
    ck = c;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut tai = [0u8; 12];
    tai[..8].copy_from_slice(&(now.as_secs() + (1u64 << 62) + 10).to_be_bytes());
    tai[8..].copy_from_slice(&now.subsec_nanos().to_be_bytes());
    let enc_ts = aead_seal(&k, &tai, &h);
    h = hash(&[&h, &enc_ts]);

    let mut msg = vec![1u8, 0, 0, 0];
    msg.extend_from_slice(&local_index.to_le_bytes());
    msg.extend_from_slice(e_i_pub.as_bytes());
    msg.extend_from_slice(&enc_static);
    msg.extend_from_slice(&enc_ts);
    let mac1_key = hash(&[LABEL_MAC1, s_r_pub.as_bytes()]);
    let mac1 = mac16(&mac1_key, &msg);
    msg.extend_from_slice(&mac1);
    msg.extend_from_slice(&[0; 16]);
    assert_eq!(msg.len(), 148);

    let mut out = vec![0u8; 2048];
    let resp = match responder.decapsulate(None, &msg, &mut out) {
        TunnResult::WriteToNetwork(r) => r.to_vec(),
        other => panic!(
            "boringtun did not answer the initiation: {:?}",
            result_name(&other)
        ),
    };
    assert_eq!(resp.len(), 92);
    assert_eq!(resp[0], 2);
    let remote_index = u32::from_le_bytes(resp[4..8].try_into().unwrap());
    assert_eq!(
        u32::from_le_bytes(resp[8..12].try_into().unwrap()),
        local_index
    );
    let e_r_pub: [u8; 32] = resp[12..44].try_into().unwrap();
    let e_r_pub = PublicKey::from(e_r_pub);
    let enc_empty = &resp[44..60];
    let my_mac1_key = hash(&[LABEL_MAC1, s_i_pub.as_bytes()]);
    assert_eq!(
        &resp[60..76],
        &mac16(&my_mac1_key, &resp[..60]),
        "response mac1"
    );

    [ck] = kdf::<1>(&ck, e_r_pub.as_bytes());
    h = hash(&[&h, e_r_pub.as_bytes()]);
    [ck] = kdf::<1>(&ck, e_i.diffie_hellman(&e_r_pub).as_bytes());
    [ck] = kdf::<1>(&ck, s_i.diffie_hellman(&e_r_pub).as_bytes());
    let [c, tau, k] = kdf::<3>(&ck, &[0u8; 32]);
    ck = c;
    h = hash(&[&h, &tau]);
    assert!(
        aead_open(&k, enc_empty, &h).is_some(),
        "response authenticates"
    );
    let [send_key, recv_key] = kdf::<2>(&ck, &[]);
    Session {
        local_index,
        remote_index,
        send_key,
        recv_key,
    }
}

pub fn result_name(r: &TunnResult<'_>) -> String {
    match r {
        TunnResult::Done => "Done".into(),
        TunnResult::Err(e) => format!("Err({e:?})"),
        TunnResult::WriteToNetwork(b) => format!("WriteToNetwork({} bytes)", b.len()),
        TunnResult::WriteToTunnelV4(b, a) => format!("WriteToTunnelV4({} bytes from {a})", b.len()),
        TunnResult::WriteToTunnelV6(b, a) => format!("WriteToTunnelV6({} bytes from {a})", b.len()),
    }
}

/// An IPv4/UDP packet with a correct header checksum.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for c in p.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    let ulen = 8 + payload.len();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(ulen as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A caller-owned packet buffer with head and tail room, as a DPDK mbuf or VPP buffer.
pub struct OwnedBuf {
    pub mem: Vec<u8>,
    pub headroom: usize,
    pub len: usize,
}

impl OwnedBuf {
    pub fn new(packet: &[u8], headroom: usize, tailroom: usize) -> Self {
        let mut mem = vec![0u8; headroom + packet.len() + tailroom];
        mem[headroom..headroom + packet.len()].copy_from_slice(packet);
        Self {
            mem,
            headroom,
            len: packet.len(),
        }
    }

    pub fn desc(&mut self, ingress: u32) -> cvlan_fastpath::Buf {
        cvlan_fastpath::Buf {
            data: self.mem[self.headroom..].as_mut_ptr(),
            len: self.len as u32,
            headroom: self.headroom as u32,
            tailroom: (self.mem.len() - self.headroom - self.len) as u32,
            ingress,
        }
    }

    /// Reads back the window a processed descriptor points to.
    pub fn after(&mut self, d: &cvlan_fastpath::Buf) -> Vec<u8> {
        let base = self.mem.as_ptr() as usize;
        let off = d.data as usize - base;
        assert_eq!(off, d.headroom as usize);
        assert_eq!(off + d.len as usize + d.tailroom as usize, self.mem.len());
        self.headroom = off;
        self.len = d.len as usize;
        self.mem[off..off + d.len as usize].to_vec()
    }
}

pub fn v4(a: [u8; 4], len: u8) -> cvlan_tables::Prefix {
    cvlan_tables::Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), len)
}

pub fn endpoint(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}
