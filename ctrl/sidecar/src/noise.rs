//! WireGuard handshakes (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s), sans-IO: responder and
//! initiator, MAC1/MAC2, cookie replies, TAI64N replay protection, per-peer flood limiting and
//! receiver-index allocation that never puts two live keypairs on one table slot.
//!
//! A core module: no sockets, no clock. Callers pass `now` (monotonic, for timers and rate
//! limits) and `wall` (time since the Unix epoch, for the TAI64N timestamp an initiation
//! carries). Randomness (ephemeral keys, indices, cookie nonces) comes from the OS RNG.
//!
//! boringtun implements the same protocol but keeps its handshake and session keys private;
//! the gateway needs the keys to install them in the shared tables, hence this module. It is
//! interop-tested against boringtun in `tests/noise_interop.rs`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit as _, Mac as _};
use blake2::{Blake2s256, Blake2sMac, Digest as _};
use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use cvlan_tables::KeypairSpec;

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// Message type of a handshake initiation.
pub const MSG_INITIATION: u8 = 1;
/// Message type of a handshake response.
pub const MSG_RESPONSE: u8 = 2;
/// Message type of a cookie reply.
pub const MSG_COOKIE_REPLY: u8 = 3;
/// Length of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;

/// The initiator starts a new handshake for a session this old (it initiated).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// No session is used beyond this age.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// An unanswered initiation is retried after this long (plus jitter).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Retrying stops after this long without an answer.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// A received cookie is used for MAC2 for this long; the cookie secret rotates as often.
pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);
/// At most one initiation per peer is processed per this interval (50 per second).
pub const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);

type Key = [u8; 32];

fn hash(parts: &[&[u8]]) -> Key {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC accepts keys of any length: this cannot fail.
    let mut m = <hmac::SimpleHmac<Blake2s256> as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        hmac::digest::Update::update(&mut m, p);
    }
    hmac::digest::FixedOutput::finalize_fixed(m).into()
}

/// HKDF with HMAC-BLAKE2s and `N` 32-byte outputs.
fn kdf<const N: usize>(ck: &Key, input: &[u8]) -> [Zeroizing<Key>; N] {
    let t0 = Zeroizing::new(hmac(ck, &[input]));
    let mut out: [Zeroizing<Key>; N] = std::array::from_fn(|_| Zeroizing::new([0; 32]));
    let mut prev: Zeroizing<Key> = Zeroizing::new([0; 32]);
    for (i, o) in out.iter_mut().enumerate() {
        let ctr = [i as u8 + 1];
        **o = if i == 0 {
            hmac(&*t0, &[&ctr])
        } else {
            hmac(&*t0, &[&*prev, &ctr])
        };
        *prev = **o;
    }
    out
}

/// Keyed BLAKE2s with a 16-byte output (MAC1, MAC2, cookies).
fn mac16(key: &[u8], data: &[&[u8]]) -> [u8; 16] {
    // Keys are 16 or 32 bytes, within BLAKE2s' limit.
    let mut m = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("MAC key of at most 32 bytes"));
    for d in data {
        m.update(d);
    }
    m.finalize().into_bytes().into()
}

fn nonce0() -> chacha20poly1305::Nonce {
    chacha20poly1305::Nonce::default()
}

fn seal(key: &Key, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let c = ChaCha20Poly1305::new(key.into());
    // Encryption into a Vec only fails for absurd lengths.
    c.encrypt(
        &nonce0(),
        Payload {
            msg: plaintext,
            aad,
        },
    )
    .unwrap_or_default()
}

fn open(key: &Key, ciphertext: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let c = ChaCha20Poly1305::new(key.into());
    c.decrypt(
        &nonce0(),
        Payload {
            msg: ciphertext,
            aad,
        },
    )
    .ok()
    .map(Zeroizing::new)
}

/// Diffie-Hellman, refusing low-order points (an all-zero shared secret).
fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Option<Zeroizing<Key>> {
    let s = secret.diffie_hellman(&PublicKey::from(*public));
    s.was_contributory().then(|| Zeroizing::new(s.to_bytes()))
}

/// The initial chaining key and hash, constant for the protocol.
fn initial_ck_h() -> (Key, Key) {
    let ck = hash(&[CONSTRUCTION]);
    let h = hash(&[&ck, IDENTIFIER]);
    (ck, h)
}

/// A TAI64N label for `wall` (time since the Unix epoch).
#[must_use]
pub fn tai64n(wall: Duration) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&(wall.as_secs() + (1u64 << 62) + 10).to_be_bytes());
    t[8..].copy_from_slice(&wall.subsec_nanos().to_be_bytes());
    t
}

/// Why a handshake message was dropped. Every variant is a counter reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HandshakeError {
    /// Wrong length, type or reserved bytes.
    #[error("malformed handshake message")]
    Malformed,
    /// MAC1 does not verify for our public key (not for us, or corrupted).
    #[error("invalid mac1")]
    BadMac1,
    /// An AEAD field did not open (wrong key, corrupted).
    #[error("decryption failed")]
    DecryptFailed,
    /// The initiator's static key is not one of our peers.
    #[error("unknown peer static key")]
    UnknownPeer,
    /// The initiation's timestamp is not newer than the last accepted one (replay).
    #[error("replayed initiation")]
    Replay,
    /// The peer initiates faster than [`MIN_INITIATION_INTERVAL`].
    #[error("initiation flood")]
    Flood,
    /// A response or cookie reply for a receiver index we have no initiation for.
    #[error("unknown receiver index")]
    UnknownIndex,
    /// Every keypair slot is in use.
    #[error("no free receiver index")]
    NoIndex,
    /// A public key is a low-order point.
    #[error("low-order public key")]
    BadPoint,
}

impl HandshakeError {
    /// Stable short name (metrics label).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadMac1 => "bad_mac1",
            Self::DecryptFailed => "decrypt_failed",
            Self::UnknownPeer => "unknown_peer",
            Self::Replay => "replay",
            Self::Flood => "flood",
            Self::UnknownIndex => "unknown_index",
            Self::NoIndex => "no_index",
            Self::BadPoint => "bad_point",
        }
    }

    /// Every reason (for zeroed counters).
    pub const ALL: [HandshakeError; 9] = [
        Self::Malformed,
        Self::BadMac1,
        Self::DecryptFailed,
        Self::UnknownPeer,
        Self::Replay,
        Self::Flood,
        Self::UnknownIndex,
        Self::NoIndex,
        Self::BadPoint,
    ];
}

/// Allocates 32-bit receiver indices whose low bits (the keypair table slot) are free, so that
/// two live keypairs or pending handshakes never share a slot of the direct-indexed table.
#[derive(Clone, Debug)]
pub struct IndexAlloc {
    mask: u32,
    used: Vec<bool>,
    n_used: usize,
}

impl IndexAlloc {
    /// An allocator for a keypair table of `capacity` entries (a power of two).
    #[must_use]
    pub fn new(capacity: u32) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            mask: capacity - 1,
            used: vec![false; capacity as usize],
            n_used: 0,
        }
    }

    /// The table slot of an index.
    #[must_use]
    pub fn slot(&self, index: u32) -> u32 {
        index & self.mask
    }

    /// Slots in use.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.n_used
    }

    /// A fresh random index on a free slot, `None` when every slot is taken.
    pub fn alloc(&mut self) -> Option<u32> {
        if self.n_used >= self.used.len() {
            return None;
        }
        let r: u32 = rand::random();
        let mut slot = r & self.mask;
        // Random probing is fine while the table is sparse; then walk to the next free slot.
        for _ in 0..16 {
            if !self.used[slot as usize] {
                break;
            }
            slot = rand::random::<u32>() & self.mask;
        }
        while self.used[slot as usize] {
            slot = (slot + 1) & self.mask;
        }
        self.used[slot as usize] = true;
        self.n_used += 1;
        Some((r & !self.mask) | slot)
    }

    /// Marks the slot of a known index used (restart recovery). False when it already was.
    pub fn reserve(&mut self, index: u32) -> bool {
        let s = self.slot(index) as usize;
        if self.used[s] {
            return false;
        }
        self.used[s] = true;
        self.n_used += 1;
        true
    }

    /// Frees the slot of an index.
    pub fn release(&mut self, index: u32) {
        let s = self.slot(index) as usize;
        if self.used[s] {
            self.used[s] = false;
            self.n_used -= 1;
        }
    }
}

/// Our static identity.
pub struct Identity {
    secret: StaticSecret,
    public: [u8; 32],
    mac1_key: Key,
    cookie_key: Key,
    /// Responder's initial hash: HASH(HASH(HASH(CONSTRUCTION) || IDENTIFIER) || our public).
    h_responder: Key,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &B64(&self.public))
            .finish_non_exhaustive()
    }
}

struct B64<'a>(&'a [u8]);

impl fmt::Debug for B64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl Identity {
    /// From the raw private key.
    #[must_use]
    pub fn new(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        let (_, h0) = initial_ck_h();
        Self {
            secret,
            public,
            mac1_key: hash(&[LABEL_MAC1, &public]),
            cookie_key: hash(&[LABEL_COOKIE, &public]),
            h_responder: hash(&[&h0, &public]),
        }
    }

    /// Our public key.
    #[must_use]
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

/// Transport keys of a completed handshake. Keys never show in Debug output.
#[derive(Clone)]
pub struct Session {
    /// The peer (caller's id).
    pub peer: u64,
    /// Our receiver index (the keypair slot is its low bits).
    pub local_index: u32,
    /// The peer's index.
    pub remote_index: u32,
    send_key: Zeroizing<Key>,
    recv_key: Zeroizing<Key>,
    /// Whether we initiated (then we also rekey it).
    pub initiator: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("local_index", &format_args!("{:#010x}", self.local_index))
            .field("remote_index", &format_args!("{:#010x}", self.remote_index))
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The table record for this session.
    #[must_use]
    pub fn keypair_spec(&self, install_id: u64) -> KeypairSpec {
        KeypairSpec {
            receiver_index: self.local_index,
            remote_index: self.remote_index,
            send_key: *self.send_key,
            recv_key: *self.recv_key,
            install_id,
        }
    }

    /// Sending key (for the sidecar's own keepalive after an initiation completes).
    #[must_use]
    pub fn send_key(&self) -> &Key {
        &self.send_key
    }

    /// Receiving key.
    #[must_use]
    pub fn recv_key(&self) -> &Key {
        &self.recv_key
    }
}

/// Our initiation in flight.
struct Pending {
    local_index: u32,
    ephemeral: StaticSecret,
    ck: Zeroizing<Key>,
    h: Key,
}

/// Handshake state of one peer.
struct PeerHs {
    public: [u8; 32],
    psk: Zeroizing<Key>,
    /// DH(our static, their static), the same in both directions: computed once.
    static_static: Option<Zeroizing<Key>>,
    mac1_key: Key,
    cookie_key: Key,
    last_timestamp: [u8; 12],
    last_initiation: Option<Instant>,
    pending: Option<Pending>,
    /// A cookie the peer sent us, for MAC2 of our next messages.
    cookie: Option<([u8; 16], Instant)>,
    /// MAC1 of our last initiation (the AAD of a cookie reply to it).
    last_mac1: Option<[u8; 16]>,
}

/// What a handled message asks the caller to do.
#[derive(Debug)]
pub enum Outcome {
    /// An initiation was accepted: send `response` back to its source and install `session`
    /// as the peer's *next* keypair (used for sending only once the peer proves it has it).
    Responded {
        /// The response message.
        response: [u8; RESPONSE_LEN],
        /// The new session.
        session: Session,
    },
    /// Our initiation was answered: install `session` as the peer's current keypair.
    Completed(Session),
    /// Under load and without a valid MAC2: send this cookie reply to the source instead.
    CookieReply([u8; COOKIE_REPLY_LEN]),
    /// A cookie reply to our initiation was stored; the next initiation carries MAC2.
    CookieStored {
        /// The peer.
        peer: u64,
    },
}

/// Handshake counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// Initiations answered.
    pub responded: u64,
    /// Our initiations completed.
    pub completed: u64,
    /// Initiations sent.
    pub initiated: u64,
    /// Cookie replies sent.
    pub cookie_replies_sent: u64,
    /// Cookie replies consumed.
    pub cookies_received: u64,
}

/// The handshake engine: our identity, the peers' handshake state, pending initiations,
/// the cookie secret and the receiver index allocator.
pub struct Handshakes {
    identity: Identity,
    peers: HashMap<u64, PeerHs>,
    by_key: HashMap<[u8; 32], u64>,
    pending_by_index: HashMap<u32, u64>,
    cookie_secret: Zeroizing<Key>,
    cookie_secret_at: Option<Instant>,
    indices: IndexAlloc,
    stats: HandshakeStats,
}

impl fmt::Debug for Handshakes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshakes")
            .field("identity", &self.identity)
            .field("peers", &self.peers.len())
            .field("pending", &self.pending_by_index.len())
            .finish_non_exhaustive()
    }
}

impl Handshakes {
    /// An engine for `identity` over a keypair table of `keypair_capacity` slots.
    #[must_use]
    pub fn new(identity: Identity, keypair_capacity: u32) -> Self {
        Self {
            identity,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            pending_by_index: HashMap::new(),
            cookie_secret: Zeroizing::new(rand::random()),
            cookie_secret_at: None,
            indices: IndexAlloc::new(keypair_capacity),
            stats: HandshakeStats::default(),
        }
    }

    /// Our identity.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> HandshakeStats {
        self.stats
    }

    /// The receiver index allocator (the caller releases indices of retired keypairs).
    pub fn indices(&mut self) -> &mut IndexAlloc {
        &mut self.indices
    }

    /// Slots in use (keypairs plus pending initiations).
    #[must_use]
    pub fn indices_in_use(&self) -> usize {
        self.indices.in_use()
    }

    /// Adds or updates a peer. A changed public key resets its handshake state.
    pub fn set_peer(&mut self, peer: u64, public: [u8; 32], psk: Option<[u8; 32]>) {
        if let Some(p) = self.peers.get(&peer) {
            if p.public == public && *p.psk == psk.unwrap_or_default() {
                return;
            }
            self.remove_peer(peer);
        }
        if let Some(&other) = self.by_key.get(&public)
            && other != peer
        {
            // One static key, one peer: the later entry would be unreachable by handshake.
            tracing::warn!(
                peer,
                other,
                "two peers share a public key; keeping the first"
            );
            return;
        }
        let static_static = dh(&self.identity.secret, &public);
        self.peers.insert(
            peer,
            PeerHs {
                public,
                psk: Zeroizing::new(psk.unwrap_or_default()),
                static_static,
                mac1_key: hash(&[LABEL_MAC1, &public]),
                cookie_key: hash(&[LABEL_COOKIE, &public]),
                last_timestamp: [0; 12],
                last_initiation: None,
                pending: None,
                cookie: None,
                last_mac1: None,
            },
        );
        self.by_key.insert(public, peer);
    }

    /// Forgets a peer (its pending initiation index is released).
    pub fn remove_peer(&mut self, peer: u64) {
        if let Some(mut p) = self.peers.remove(&peer) {
            self.by_key.remove(&p.public);
            if let Some(pend) = p.pending.take() {
                self.pending_by_index.remove(&pend.local_index);
                self.indices.release(pend.local_index);
            }
        }
    }

    /// Whether the engine knows `peer`.
    #[must_use]
    pub fn has_peer(&self, peer: u64) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Whether an initiation to `peer` awaits its response.
    #[must_use]
    pub fn is_pending(&self, peer: u64) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.pending.is_some())
    }

    /// Abandons our initiation to `peer` (given up after [`REKEY_ATTEMPT_TIME`]).
    pub fn cancel_initiation(&mut self, peer: u64) {
        if let Some(p) = self.peers.get_mut(&peer)
            && let Some(pend) = p.pending.take()
        {
            self.pending_by_index.remove(&pend.local_index);
            self.indices.release(pend.local_index);
        }
    }

    fn rotate_cookie_secret(&mut self, now: Instant) {
        if self
            .cookie_secret_at
            .is_none_or(|t| now.saturating_duration_since(t) >= COOKIE_REFRESH_TIME)
        {
            self.cookie_secret = Zeroizing::new(rand::random());
            self.cookie_secret_at = Some(now);
        }
    }

    fn cookie_for(&self, src: SocketAddr) -> [u8; 16] {
        let port = src.port().to_be_bytes();
        match src.ip() {
            std::net::IpAddr::V4(a) => mac16(&*self.cookie_secret, &[&a.octets(), &port]),
            std::net::IpAddr::V6(a) => mac16(&*self.cookie_secret, &[&a.octets(), &port]),
        }
    }

    /// Handles a handshake message (initiation, response or cookie reply) that arrived from
    /// `src`. `under_load` makes initiations without a valid MAC2 get a cookie reply instead.
    ///
    /// # Errors
    /// [`HandshakeError`]: the message is dropped, the error says why.
    pub fn handle(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Instant,
        under_load: bool,
    ) -> Result<Outcome, HandshakeError> {
        if msg.len() < 4 || msg[1..4] != [0, 0, 0] {
            return Err(HandshakeError::Malformed);
        }
        match (msg[0], msg.len()) {
            (MSG_INITIATION, INITIATION_LEN) => self.consume_initiation(msg, src, now, under_load),
            (MSG_RESPONSE, RESPONSE_LEN) => self.consume_response(msg, src, now, under_load),
            (MSG_COOKIE_REPLY, COOKIE_REPLY_LEN) => self.consume_cookie_reply(msg, now),
            _ => Err(HandshakeError::Malformed),
        }
    }

    /// Checks MAC1 (and MAC2 when under load) of an initiation or response. `Ok(Some(reply))`
    /// = answer with this cookie reply instead of processing.
    fn check_macs(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Instant,
        under_load: bool,
    ) -> Result<Option<[u8; COOKIE_REPLY_LEN]>, HandshakeError> {
        let n = msg.len();
        let mac1: [u8; 16] = msg[n - 32..n - 16]
            .try_into()
            .map_err(|_| HandshakeError::Malformed)?;
        if !ct_eq(&mac1, &mac16(&self.identity.mac1_key, &[&msg[..n - 32]])) {
            return Err(HandshakeError::BadMac1);
        }
        if !under_load {
            return Ok(None);
        }
        self.rotate_cookie_secret(now);
        let cookie = self.cookie_for(src);
        if ct_eq(&msg[n - 16..], &mac16(&cookie, &[&msg[..n - 16]])) {
            return Ok(None);
        }
        // Cookie reply: receiver = the message's sender index, XChaCha20-Poly1305 of the
        // cookie under HASH("cookie--" || our public key) with MAC1 as associated data.
        let mut reply = [0u8; COOKIE_REPLY_LEN];
        reply[0] = MSG_COOKIE_REPLY;
        reply[4..8].copy_from_slice(&msg[4..8]);
        let nonce: [u8; 24] = rand::random();
        reply[8..32].copy_from_slice(&nonce);
        let c = XChaCha20Poly1305::new((&self.identity.cookie_key).into());
        let enc = c
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &cookie,
                    aad: &mac1,
                },
            )
            .map_err(|_| HandshakeError::Malformed)?;
        reply[32..64].copy_from_slice(&enc);
        self.stats.cookie_replies_sent += 1;
        Ok(Some(reply))
    }

    fn consume_initiation(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Instant,
        under_load: bool,
    ) -> Result<Outcome, HandshakeError> {
        if let Some(reply) = self.check_macs(msg, src, now, under_load)? {
            return Ok(Outcome::CookieReply(reply));
        }
        let sender = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
        let e_i: [u8; 32] = msg[8..40]
            .try_into()
            .map_err(|_| HandshakeError::Malformed)?;
        let enc_static = &msg[40..88];
        let enc_ts = &msg[88..116];

        let (ck0, _) = initial_ck_h();
        let mut h = self.identity.h_responder;
        let [ck] = kdf::<1>(&ck0, &e_i);
        h = hash(&[&h, &e_i]);
        let es = dh(&self.identity.secret, &e_i).ok_or(HandshakeError::BadPoint)?;
        let [ck, k] = kdf::<2>(&ck, &*es);
        let s_i = open(&k, enc_static, &h).ok_or(HandshakeError::DecryptFailed)?;
        let s_i: [u8; 32] = s_i[..].try_into().map_err(|_| HandshakeError::Malformed)?;
        h = hash(&[&h, enc_static]);
        let peer_id = *self.by_key.get(&s_i).ok_or(HandshakeError::UnknownPeer)?;
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(HandshakeError::UnknownPeer)?;
        let ss = peer
            .static_static
            .as_ref()
            .ok_or(HandshakeError::BadPoint)?;
        let [ck, k] = kdf::<2>(&ck, &**ss);
        let ts = open(&k, enc_ts, &h).ok_or(HandshakeError::DecryptFailed)?;
        let ts: [u8; 12] = ts[..].try_into().map_err(|_| HandshakeError::Malformed)?;
        h = hash(&[&h, enc_ts]);
        // TAI64N is big-endian: byte order is time order.
        if ts <= peer.last_timestamp {
            return Err(HandshakeError::Replay);
        }
        if peer
            .last_initiation
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return Err(HandshakeError::Flood);
        }
        let local_index = self.indices.alloc().ok_or(HandshakeError::NoIndex)?;
        peer.last_timestamp = ts;
        peer.last_initiation = Some(now);

        // Response.
        let e_r = StaticSecret::from(rand::random::<[u8; 32]>());
        let e_r_pub = PublicKey::from(&e_r).to_bytes();
        let [ck] = kdf::<1>(&ck, &e_r_pub);
        h = hash(&[&h, &e_r_pub]);
        let ee = dh(&e_r, &e_i).ok_or(HandshakeError::BadPoint)?;
        let [ck] = kdf::<1>(&ck, &*ee);
        let se = dh(&e_r, &s_i).ok_or(HandshakeError::BadPoint)?;
        let [ck] = kdf::<1>(&ck, &*se);
        let [ck, tau, k] = kdf::<3>(&ck, &*peer.psk);
        h = hash(&[&h, &*tau]);
        let enc_empty = seal(&k, &[], &h);
        let mut response = [0u8; RESPONSE_LEN];
        response[0] = MSG_RESPONSE;
        response[4..8].copy_from_slice(&local_index.to_le_bytes());
        response[8..12].copy_from_slice(&sender.to_le_bytes());
        response[12..44].copy_from_slice(&e_r_pub);
        response[44..60].copy_from_slice(&enc_empty);
        let mac1 = mac16(&peer.mac1_key, &[&response[..60]]);
        response[60..76].copy_from_slice(&mac1);
        if let Some((cookie, at)) = peer.cookie
            && now.saturating_duration_since(at) < COOKIE_REFRESH_TIME
        {
            let mac2 = mac16(&cookie, &[&response[..76]]);
            response[76..92].copy_from_slice(&mac2);
        }
        let [recv_key, send_key] = kdf::<2>(&ck, &[]);
        h.zeroize();
        self.stats.responded += 1;
        Ok(Outcome::Responded {
            response,
            session: Session {
                peer: peer_id,
                local_index,
                remote_index: sender,
                send_key,
                recv_key,
                initiator: false,
            },
        })
    }

    fn consume_response(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Instant,
        under_load: bool,
    ) -> Result<Outcome, HandshakeError> {
        if let Some(reply) = self.check_macs(msg, src, now, under_load)? {
            return Ok(Outcome::CookieReply(reply));
        }
        let sender = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
        let receiver = u32::from_le_bytes([msg[8], msg[9], msg[10], msg[11]]);
        let e_r: [u8; 32] = msg[12..44]
            .try_into()
            .map_err(|_| HandshakeError::Malformed)?;
        let enc_empty = &msg[44..60];
        let peer_id = *self
            .pending_by_index
            .get(&receiver)
            .ok_or(HandshakeError::UnknownIndex)?;
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(HandshakeError::UnknownIndex)?;
        let pend = peer.pending.as_ref().ok_or(HandshakeError::UnknownIndex)?;
        let [ck] = kdf::<1>(&pend.ck, &e_r);
        let h = hash(&[&pend.h, &e_r]);
        let ee = dh(&pend.ephemeral, &e_r).ok_or(HandshakeError::BadPoint)?;
        let [ck] = kdf::<1>(&ck, &*ee);
        let se = dh(&self.identity.secret, &e_r).ok_or(HandshakeError::BadPoint)?;
        let [ck] = kdf::<1>(&ck, &*se);
        let [ck, tau, k] = kdf::<3>(&ck, &*peer.psk);
        let h = hash(&[&h, &*tau]);
        if open(&k, enc_empty, &h).is_none() {
            return Err(HandshakeError::DecryptFailed);
        }
        let [send_key, recv_key] = kdf::<2>(&ck, &[]);
        let local_index = pend.local_index;
        peer.pending = None;
        self.pending_by_index.remove(&local_index);
        self.stats.completed += 1;
        Ok(Outcome::Completed(Session {
            peer: peer_id,
            local_index,
            remote_index: sender,
            send_key,
            recv_key,
            initiator: true,
        }))
    }

    fn consume_cookie_reply(
        &mut self,
        msg: &[u8],
        now: Instant,
    ) -> Result<Outcome, HandshakeError> {
        let receiver = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
        let peer_id = *self
            .pending_by_index
            .get(&receiver)
            .ok_or(HandshakeError::UnknownIndex)?;
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(HandshakeError::UnknownIndex)?;
        let mac1 = peer.last_mac1.ok_or(HandshakeError::UnknownIndex)?;
        let nonce: [u8; 24] = msg[8..32]
            .try_into()
            .map_err(|_| HandshakeError::Malformed)?;
        let c = XChaCha20Poly1305::new((&peer.cookie_key).into());
        let cookie = c
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: &msg[32..64],
                    aad: &mac1,
                },
            )
            .map_err(|_| HandshakeError::DecryptFailed)?;
        let cookie: [u8; 16] = cookie[..]
            .try_into()
            .map_err(|_| HandshakeError::Malformed)?;
        peer.cookie = Some((cookie, now));
        self.stats.cookies_received += 1;
        Ok(Outcome::CookieStored { peer: peer_id })
    }

    /// Builds an initiation to `peer` (replacing an earlier one still in flight). `wall` is
    /// the time since the Unix epoch (the replay-protection timestamp).
    ///
    /// # Errors
    /// [`HandshakeError::UnknownPeer`], [`HandshakeError::NoIndex`], `BadPoint`.
    pub fn initiate(
        &mut self,
        peer_id: u64,
        now: Instant,
        wall: Duration,
    ) -> Result<[u8; INITIATION_LEN], HandshakeError> {
        self.cancel_initiation(peer_id);
        let local_index = self.indices.alloc().ok_or(HandshakeError::NoIndex)?;
        let res = self.build_initiation(peer_id, local_index, now, wall);
        match res {
            Ok(m) => {
                self.pending_by_index.insert(local_index, peer_id);
                self.stats.initiated += 1;
                Ok(m)
            }
            Err(e) => {
                self.indices.release(local_index);
                Err(e)
            }
        }
    }

    fn build_initiation(
        &mut self,
        peer_id: u64,
        local_index: u32,
        now: Instant,
        wall: Duration,
    ) -> Result<[u8; INITIATION_LEN], HandshakeError> {
        let s_pub = self.identity.public;
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(HandshakeError::UnknownPeer)?;
        let ss = peer
            .static_static
            .as_ref()
            .ok_or(HandshakeError::BadPoint)?;
        let (ck0, h0) = initial_ck_h();
        let mut h = hash(&[&h0, &peer.public]);
        let e = StaticSecret::from(rand::random::<[u8; 32]>());
        let e_pub = PublicKey::from(&e).to_bytes();
        let [ck] = kdf::<1>(&ck0, &e_pub);
        h = hash(&[&h, &e_pub]);
        let es = dh(&e, &peer.public).ok_or(HandshakeError::BadPoint)?;
        let [ck, k] = kdf::<2>(&ck, &*es);
        let enc_static = seal(&k, &s_pub, &h);
        h = hash(&[&h, &enc_static]);
        let [ck, k] = kdf::<2>(&ck, &**ss);
        let enc_ts = seal(&k, &tai64n(wall), &h);
        h = hash(&[&h, &enc_ts]);

        let mut m = [0u8; INITIATION_LEN];
        m[0] = MSG_INITIATION;
        m[4..8].copy_from_slice(&local_index.to_le_bytes());
        m[8..40].copy_from_slice(&e_pub);
        m[40..88].copy_from_slice(&enc_static);
        m[88..116].copy_from_slice(&enc_ts);
        let mac1 = mac16(&peer.mac1_key, &[&m[..116]]);
        m[116..132].copy_from_slice(&mac1);
        if let Some((cookie, at)) = peer.cookie
            && now.saturating_duration_since(at) < COOKIE_REFRESH_TIME
        {
            let mac2 = mac16(&cookie, &[&m[..132]]);
            m[132..148].copy_from_slice(&mac2);
        }
        peer.last_mac1 = Some(mac1);
        peer.pending = Some(Pending {
            local_index,
            ephemeral: e,
            ck,
            h,
        });
        Ok(m)
    }
}

/// Message type of transport data.
pub const MSG_DATA: u8 = 4;
/// Length of a keepalive (transport data with an empty payload).
pub const KEEPALIVE_LEN: usize = 32;

fn data_nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// A keepalive to the peer whose index is `remote_index`, with send counter `counter`.
#[must_use]
pub fn seal_keepalive(send_key: &Key, remote_index: u32, counter: u64) -> [u8; KEEPALIVE_LEN] {
    let mut m = [0u8; KEEPALIVE_LEN];
    m[0] = MSG_DATA;
    m[4..8].copy_from_slice(&remote_index.to_le_bytes());
    m[8..16].copy_from_slice(&counter.to_le_bytes());
    let tag = ChaCha20Poly1305::new(send_key.into())
        .encrypt(&data_nonce(counter), &[][..])
        .unwrap_or_default();
    m[16..].copy_from_slice(&tag);
    m
}

/// The (receiver index, counter) of a keepalive, parsed without authentication.
#[must_use]
pub fn keepalive_header(msg: &[u8]) -> Option<(u32, u64)> {
    if msg.len() != KEEPALIVE_LEN || msg[..4] != [MSG_DATA, 0, 0, 0] {
        return None;
    }
    let receiver = u32::from_le_bytes(msg[4..8].try_into().ok()?);
    let counter = u64::from_le_bytes(msg[8..16].try_into().ok()?);
    Some((receiver, counter))
}

/// Authenticates a keepalive punted by the fast path (it carries no data, so the workers
/// hand it over unopened). Returns its counter.
#[must_use]
pub fn open_keepalive(recv_key: &Key, msg: &[u8]) -> Option<u64> {
    let (_, counter) = keepalive_header(msg)?;
    ChaCha20Poly1305::new(recv_key.into())
        .decrypt(&data_nonce(counter), &msg[16..])
        .ok()
        .map(|_| counter)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts handshake punts per second; "under load" while the rate exceeds a threshold, so
/// that initiations without a valid MAC2 get a cookie reply instead of costing four DHs.
#[derive(Clone, Debug)]
pub struct LoadMeter {
    threshold: u32,
    window_start: Option<Instant>,
    count: u32,
    under_load_until: Option<Instant>,
}

impl LoadMeter {
    /// Under load above `threshold` handshake messages per second (0 = always).
    #[must_use]
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            window_start: None,
            count: 0,
            under_load_until: None,
        }
    }

    /// Records one handshake message at `now`; returns whether we are under load.
    pub fn observe(&mut self, now: Instant) -> bool {
        if self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            self.window_start = Some(now);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.threshold {
            // Stay under load for a second after the last excess, like wireguard-go.
            self.under_load_until = Some(now + Duration::from_secs(1));
        }
        self.under_load_until.is_some_and(|u| now < u)
    }

    /// Whether the last observation left us under load.
    #[must_use]
    pub fn under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn src() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000)
    }

    fn wall() -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
    }

    /// Two engines that know each other (peer ids 1 on each side).
    fn pair() -> (Handshakes, Handshakes) {
        let a = Identity::new(rand::random());
        let b = Identity::new(rand::random());
        let (pa, pb) = (a.public(), b.public());
        let mut ea = Handshakes::new(a, 64);
        let mut eb = Handshakes::new(b, 64);
        ea.set_peer(1, pb, None);
        eb.set_peer(1, pa, None);
        (ea, eb)
    }

    fn complete(a: &mut Handshakes, b: &mut Handshakes, now: Instant) -> (Session, Session) {
        let init = a.initiate(1, now, wall()).expect("initiate");
        let Outcome::Responded { response, session } =
            b.handle(&init, src(), now, false).expect("respond")
        else {
            panic!("expected a response");
        };
        let Outcome::Completed(mine) = a.handle(&response, src(), now, false).expect("complete")
        else {
            panic!("expected completion");
        };
        (mine, session)
    }

    #[test]
    fn initiator_and_responder_derive_mirrored_transport_keys() {
        let (mut a, mut b) = pair();
        let (i, r) = complete(&mut a, &mut b, Instant::now());
        assert_eq!(i.send_key(), r.recv_key());
        assert_eq!(i.recv_key(), r.send_key());
        assert_ne!(i.send_key(), i.recv_key());
        assert_eq!(
            (i.local_index, i.remote_index),
            (r.remote_index, r.local_index)
        );
        assert!(i.initiator && !r.initiator);
        assert!(!a.is_pending(1));
    }

    #[test]
    fn a_replayed_initiation_is_dropped_and_a_newer_one_accepted() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        let init = a.initiate(1, t, wall()).expect("initiate");
        assert!(b.handle(&init, src(), t, false).is_ok());
        let later = t + Duration::from_secs(1);
        assert_eq!(
            b.handle(&init, src(), later, false).map(|_| ()),
            Err(HandshakeError::Replay)
        );
        let init2 = a
            .initiate(1, later, wall() + Duration::from_millis(5))
            .expect("again");
        assert!(b.handle(&init2, src(), later, false).is_ok());
    }

    #[test]
    fn initiations_faster_than_fifty_per_second_are_flood() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        let w = wall();
        let i1 = a.initiate(1, t, w).expect("1");
        let i2 = a.initiate(1, t, w + Duration::from_millis(1)).expect("2");
        assert!(b.handle(&i1, src(), t, false).is_ok());
        assert_eq!(
            b.handle(&i2, src(), t + Duration::from_millis(5), false)
                .map(|_| ()),
            Err(HandshakeError::Flood)
        );
    }

    #[test]
    fn a_message_for_another_key_or_corrupted_fails_mac1_and_unknown_statics_are_refused() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        let mut init = a.initiate(1, t, wall()).expect("initiate");
        init[50] ^= 1;
        assert_eq!(
            b.handle(&init, src(), t, false).map(|_| ()),
            Err(HandshakeError::BadMac1)
        );
        // A stranger that knows b's public key: MAC1 passes, the static key is unknown.
        let mut stranger = Handshakes::new(Identity::new(rand::random()), 64);
        stranger.set_peer(1, b.identity().public(), None);
        let init = stranger.initiate(1, t, wall()).expect("initiate");
        assert_eq!(
            b.handle(&init, src(), t, false).map(|_| ()),
            Err(HandshakeError::UnknownPeer)
        );
    }

    #[test]
    fn a_response_for_an_unknown_index_or_truncated_messages_are_dropped() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        let init = a.initiate(1, t, wall()).expect("initiate");
        let Ok(Outcome::Responded { response, .. }) = b.handle(&init, src(), t, false) else {
            panic!("response");
        };
        assert_eq!(
            a.handle(&init[..100], src(), t, false).map(|_| ()),
            Err(HandshakeError::Malformed)
        );
        // The initiation was abandoned: its index is unknown now.
        a.cancel_initiation(1);
        assert_eq!(
            a.handle(&response, src(), t, false).map(|_| ()),
            Err(HandshakeError::UnknownIndex)
        );
    }

    #[test]
    fn under_load_an_initiation_gets_a_cookie_and_the_retry_with_mac2_is_answered() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        let init = a.initiate(1, t, wall()).expect("initiate");
        let Ok(Outcome::CookieReply(reply)) = b.handle(&init, src(), t, true) else {
            panic!("cookie reply expected");
        };
        assert_eq!(b.stats().cookie_replies_sent, 1);
        assert!(matches!(
            a.handle(&reply, src(), t, false),
            Ok(Outcome::CookieStored { peer: 1 })
        ));
        let init2 = a
            .initiate(1, t, wall() + Duration::from_millis(1))
            .expect("retry");
        assert!(matches!(
            b.handle(&init2, src(), t, true),
            Ok(Outcome::Responded { .. })
        ));
        // The cookie is bound to the source address.
        let init3 = a
            .initiate(1, t, wall() + Duration::from_millis(2))
            .expect("retry");
        let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8)), 40000);
        assert!(matches!(
            b.handle(&init3, other, t + Duration::from_millis(30), true),
            Ok(Outcome::CookieReply(_))
        ));
    }

    #[test]
    fn debug_output_shows_no_secret_material() {
        let (mut a, mut b) = pair();
        let (s, _) = complete(&mut a, &mut b, Instant::now());
        let d = format!("{s:?} {a:?} {:?}", a.identity());
        use base64::Engine as _;
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        for k in [s.send_key(), s.recv_key()] {
            assert!(!d.contains(&b64(k)));
            assert!(!d.contains(&format!("{:?}", k)));
        }
    }

    #[test]
    fn the_load_meter_trips_above_its_threshold_and_recovers() {
        let mut m = LoadMeter::new(3);
        let t = Instant::now();
        assert!(!m.observe(t));
        assert!(!m.observe(t));
        assert!(!m.observe(t));
        assert!(m.observe(t));
        assert!(m.under_load(t + Duration::from_millis(500)));
        assert!(!m.under_load(t + Duration::from_secs(2)));
    }

    #[test]
    fn the_index_allocator_fills_every_slot_once_and_then_refuses() {
        let mut a = IndexAlloc::new(16);
        let mut slots: Vec<u32> = (0..16)
            .map(|_| a.alloc().expect("free"))
            .map(|i| i & 15)
            .collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..16).collect::<Vec<_>>());
        assert_eq!(a.alloc(), None);
        a.release(0x1234_0005);
        assert_eq!(a.alloc().map(|i| i & 15), Some(5));
        assert!(!a.reserve(7));
    }

    proptest! {
        #[test]
        fn live_indices_never_share_a_slot(ops in prop::collection::vec(any::<(bool, u8)>(), 1..300)) {
            let mut a = IndexAlloc::new(32);
            let mut live: Vec<u32> = Vec::new();
            for (alloc, pick) in ops {
                if alloc || live.is_empty() {
                    if let Some(i) = a.alloc() {
                        prop_assert!(live.iter().all(|l| l & 31 != i & 31));
                        live.push(i);
                    } else {
                        prop_assert_eq!(live.len(), 32);
                    }
                } else {
                    let i = live.swap_remove(pick as usize % live.len());
                    a.release(i);
                }
                prop_assert_eq!(a.in_use(), live.len());
            }
        }

        #[test]
        fn random_bytes_never_panic_and_never_complete_a_handshake(
            msg in prop::collection::vec(any::<u8>(), 0..200),
            kind in 0u8..5,
            load: bool,
        ) {
            let (mut a, mut b) = pair();
            let t = Instant::now();
            let _ = a.initiate(1, t, wall());
            let mut m = msg;
            if !m.is_empty() {
                m[0] = kind;
            }
            for e in [&mut a, &mut b] {
                match e.handle(&m, src(), t, load) {
                    Ok(Outcome::CookieReply(_)) | Err(_) => {}
                    Ok(other) => prop_assert!(false, "random bytes accepted: {other:?}"),
                }
            }
        }

        #[test]
        fn any_single_bit_flip_of_an_initiation_is_rejected(bit in 0usize..(INITIATION_LEN - 16) * 8) {
            let (mut a, mut b) = pair();
            let t = Instant::now();
            let mut init = a.initiate(1, t, wall()).expect("initiate");
            init[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(b.handle(&init, src(), t, false).is_err());
        }
    }
}
