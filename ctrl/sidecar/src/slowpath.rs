//! The WireGuard slow path, sans-IO: punted handshake messages and keepalives in, packets to
//! transmit and "publish a new generation" out; initiation, retry and rekey timers driven by
//! [`SlowPath::tick`]. Owns the [`Model`] and the [`Handshakes`] engine and keeps the two
//! consistent (peers known to both, receiver indices released when keypairs retire).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cvlan_proto::v1 as pb;

use crate::model::{Applied, Model, ModelError};
use crate::noise::{
    HandshakeError, Handshakes, LoadMeter, MSG_COOKIE_REPLY, MSG_DATA, MSG_INITIATION,
    MSG_RESPONSE, Outcome, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, Session, keepalive_header,
    open_keepalive,
};
use crate::punt::{build_udp, parse_udp};

/// After giving up on a peer (no answer for REKEY_ATTEMPT_TIME), wait this long before
/// trying again (WireGuard waits for outgoing data; the gateway has no such signal per peer).
pub const RETRY_QUIET_TIME: Duration = Duration::from_secs(30);

/// Our initiation to a peer in progress.
#[derive(Debug)]
struct Initiating {
    started: Instant,
    next_retry: Instant,
    attempts: u32,
}

/// Counters of the slow path (also exported as metrics by the shell).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Punted packets by fast-path reason name.
    pub punts: BTreeMap<String, u64>,
    /// Dropped handshake/keepalive messages by reason.
    pub drops: BTreeMap<String, u64>,
    /// Initiations answered.
    pub handshakes_responded: u64,
    /// Our initiations completed.
    pub handshakes_completed: u64,
    /// Initiation messages sent (one per candidate endpoint).
    pub initiations_sent: u64,
    /// Cookie replies sent.
    pub cookie_replies_sent: u64,
    /// Cookie replies received.
    pub cookies_received: u64,
    /// Keepalives authenticated.
    pub keepalives: u64,
    /// Peers given up on after REKEY_ATTEMPT_TIME.
    pub gave_up: u64,
    /// Endpoint changes learned from authenticated messages.
    pub roams: u64,
}

/// A keepalive the shell must send once the generation holding its keypair is published
/// (its counter comes from the shared send counter of the keypair slot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepaliveDue {
    /// The peer.
    pub peer: u64,
    /// Our receiver index of the keypair.
    pub receiver_index: u32,
}

/// The slow path.
pub struct SlowPath {
    /// What the tables hold.
    pub model: Model,
    hs: Handshakes,
    load: LoadMeter,
    underlay: SocketAddr,
    next_install: u64,
    initiating: HashMap<u64, Initiating>,
    quiet_until: HashMap<u64, Instant>,
    known: HashSet<u64>,
    tx: VecDeque<(SocketAddr, Vec<u8>)>,
    keepalives: Vec<KeepaliveDue>,
    dirty: bool,
    counters: Counters,
    keypair_mask: u32,
}

fn bump(map: &mut BTreeMap<String, u64>, k: &str) {
    *map.entry(k.to_string()).or_default() += 1;
}

impl SlowPath {
    /// A slow path over `model` (possibly seeded from the segment), with `hs` for our key.
    /// `install_base` must exceed every install id the segment ever held (wall-clock
    /// nanoseconds do); `cookie_threshold` is the handshake rate (per second) above which
    /// initiations need a cookie.
    #[must_use]
    pub fn new(
        model: Model,
        mut hs: Handshakes,
        underlay: SocketAddr,
        keypair_capacity: u32,
        install_base: u64,
        cookie_threshold: u32,
    ) -> Self {
        for idx in model.recovered_indices() {
            hs.indices().reserve(idx);
        }
        let next_install = install_base.max(model.max_install_id() + 1);
        let mut s = SlowPath {
            model,
            hs,
            load: LoadMeter::new(cookie_threshold),
            underlay,
            next_install,
            initiating: HashMap::new(),
            quiet_until: HashMap::new(),
            known: HashSet::new(),
            tx: VecDeque::new(),
            keepalives: Vec::new(),
            dirty: false,
            counters: Counters::default(),
            keypair_mask: keypair_capacity.max(1).next_power_of_two() - 1,
        };
        s.sync_peers();
        s
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        let h = self.hs.stats();
        c.handshakes_responded = h.responded;
        c.handshakes_completed = h.completed;
        c.cookie_replies_sent = h.cookie_replies_sent;
        c.cookies_received = h.cookies_received;
        c
    }

    /// Our public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.hs.identity().public()
    }

    /// Receiver index slots in use.
    #[must_use]
    pub fn indices_in_use(&self) -> usize {
        self.hs.indices_in_use()
    }

    /// Peers with an initiation in flight.
    #[must_use]
    pub fn initiating(&self) -> usize {
        self.initiating.len()
    }

    /// Whether an initiation to `peer` is in flight.
    #[must_use]
    pub fn is_initiating(&self, peer: u64) -> bool {
        self.initiating.contains_key(&peer)
    }

    /// Whether the tables changed since the last [`take_dirty`](Self::take_dirty).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Marks the tables as needing a publish (e.g. the first one after start).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Packets to transmit: (destination, complete IP packet).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.tx.pop_front()
    }

    /// Keepalives to send after the next publish.
    pub fn take_keepalives(&mut self) -> Vec<KeepaliveDue> {
        std::mem::take(&mut self.keepalives)
    }

    /// Wraps a WireGuard message into an outer packet from the underlay to `dst`.
    pub fn send(&mut self, dst: SocketAddr, wg: &[u8]) -> bool {
        match build_udp(self.underlay, dst, wg) {
            Some(p) => {
                self.tx.push_back((dst, p));
                true
            }
            None => {
                bump(&mut self.counters.drops, "no_underlay_family");
                false
            }
        }
    }

    fn release(&mut self, indices: impl IntoIterator<Item = u32>) {
        for i in indices {
            self.hs.indices().release(i);
        }
    }

    fn after_update(&mut self, applied: Applied) {
        self.release(applied.released);
        for id in &applied.removed_peers {
            self.hs.remove_peer(*id);
            self.known.remove(id);
            self.initiating.remove(id);
        }
        self.sync_peers();
        self.dirty = true;
    }

    fn sync_peers(&mut self) {
        let mut keep = HashSet::new();
        for (id, p) in self.model.peers() {
            self.hs.set_peer(*id, p.public_key, None);
            keep.insert(*id);
        }
        for gone in self.known.difference(&keep).copied().collect::<Vec<_>>() {
            self.hs.remove_peer(gone);
            self.initiating.remove(&gone);
        }
        self.known = keep;
    }

    /// Applies a control-plane snapshot.
    ///
    /// # Errors
    /// [`ModelError`] (nothing changed).
    pub fn apply_snapshot(&mut self, t: &pb::GatewayTables) -> Result<(), ModelError> {
        let a = self.model.apply_snapshot(t)?;
        self.after_update(a);
        Ok(())
    }

    /// Applies a control-plane delta.
    ///
    /// # Errors
    /// [`ModelError`] (nothing changed).
    pub fn apply_delta(&mut self, d: &pb::GatewayDelta) -> Result<(), ModelError> {
        let a = self.model.apply_delta(d)?;
        self.after_update(a);
        Ok(())
    }

    fn install(&mut self, s: &Session, now: Instant) {
        let id = self.next_install;
        self.next_install += 1;
        let released = self.model.install(s, id, now);
        self.release(released);
        self.dirty = true;
    }

    fn learn(&mut self, peer: u64, src: SocketAddr) {
        if self.model.learn_endpoint(peer, src) {
            self.counters.roams += 1;
            self.dirty = true;
        }
    }

    /// Handles one punted packet (`reason` = the fast path's reason name). Only handshake
    /// messages and keepalives are acted on; every other punt (unknown receivers, packets
    /// without a keypair or endpoint, non-WireGuard traffic) is counted — its payload may be
    /// a tenant's inner packet, which must never be read as a handshake.
    pub fn handle_punt(&mut self, reason: &str, packet: &[u8], now: Instant) {
        bump(&mut self.counters.punts, reason);
        let keepalive = match reason {
            "handshake_init" | "handshake_response" | "cookie_reply" => false,
            "keepalive" => true,
            _ => return,
        };
        let Some(udp) = parse_udp(packet) else {
            bump(&mut self.counters.drops, "not_udp");
            return;
        };
        let msg = udp.payload;
        match msg.first().copied() {
            Some(MSG_DATA) if keepalive => self.keepalive(msg, udp.src, now),
            Some(MSG_INITIATION | MSG_RESPONSE | MSG_COOKIE_REPLY) if !keepalive => {
                let under_load = if msg[0] == MSG_COOKIE_REPLY {
                    false
                } else {
                    self.load.observe(now)
                };
                match self.hs.handle(msg, udp.src, now, under_load) {
                    Ok(o) => self.outcome(o, udp.src, now),
                    Err(e) => self.drop_hs(e),
                }
            }
            _ => bump(&mut self.counters.drops, "not_handshake"),
        }
    }

    fn drop_hs(&mut self, e: HandshakeError) {
        tracing::debug!(reason = e.name(), "handshake message dropped");
        bump(&mut self.counters.drops, e.name());
    }

    fn outcome(&mut self, o: Outcome, src: SocketAddr, now: Instant) {
        match o {
            Outcome::Responded { response, session } => {
                tracing::debug!(peer = session.peer, "initiation answered");
                self.install(&session, now);
                self.learn(session.peer, src);
                self.send(src, &response);
            }
            Outcome::Completed(session) => {
                tracing::debug!(peer = session.peer, "handshake completed");
                self.initiating.remove(&session.peer);
                self.install(&session, now);
                self.learn(session.peer, src);
                // The responder only sends with the new session after hearing on it.
                self.keepalives.push(KeepaliveDue {
                    peer: session.peer,
                    receiver_index: session.local_index,
                });
            }
            Outcome::CookieReply(reply) => {
                self.send(src, &reply);
            }
            Outcome::CookieStored { peer } => {
                tracing::debug!(peer, "cookie received; the retry carries mac2");
            }
        }
    }

    fn keepalive(&mut self, msg: &[u8], src: SocketAddr, now: Instant) {
        let Some((receiver, _)) = keepalive_header(msg) else {
            bump(&mut self.counters.drops, "not_keepalive");
            return;
        };
        let Some((peer, k)) = self.model.keypair_by_index(receiver) else {
            bump(&mut self.counters.drops, "unknown_index");
            return;
        };
        let Some(counter) = open_keepalive(&k.spec.recv_key, msg) else {
            bump(&mut self.counters.drops, "decrypt_failed");
            return;
        };
        if k.last_keepalive.is_some_and(|c| counter <= c) {
            bump(&mut self.counters.drops, "replay");
            return;
        }
        k.last_keepalive = Some(counter);
        self.counters.keepalives += 1;
        if let Some(released) = self.model.confirm(peer, receiver) {
            self.release(released);
            self.dirty = true;
        }
        self.learn(peer, src);
        let _ = now;
    }

    /// Timers: promotes `next` keypairs the workers saw (`seen(slot)`), expires old
    /// keypairs, starts, retries and gives up initiations. `wall` = time since the epoch.
    pub fn tick(&mut self, now: Instant, wall: Duration, seen: impl Fn(u32) -> bool) {
        let (changed, released) = self.model.promote(seen, self.keypair_mask);
        if changed {
            self.dirty = true;
        }
        self.release(released);
        let expired = self.model.expire(now);
        if !expired.released.is_empty() {
            self.dirty = true;
            self.release(expired.released);
        }
        // Give up or retry initiations in flight.
        let mut retry = Vec::new();
        for (id, st) in &mut self.initiating {
            if now.saturating_duration_since(st.started) >= REKEY_ATTEMPT_TIME {
                retry.push((*id, false));
            } else if now >= st.next_retry {
                retry.push((*id, true));
            }
        }
        for (id, again) in retry {
            if again {
                self.send_initiation(id, now, wall);
            } else {
                tracing::info!(peer = id, "no handshake answer; giving up for now");
                self.initiating.remove(&id);
                self.hs.cancel_initiation(id);
                self.counters.gave_up += 1;
                self.quiet_until.insert(id, now + RETRY_QUIET_TIME);
            }
        }
        for id in self.model.wants_handshake(now) {
            if self.initiating.contains_key(&id)
                || self.quiet_until.get(&id).is_some_and(|t| now < *t)
            {
                continue;
            }
            self.quiet_until.remove(&id);
            self.initiating.insert(
                id,
                Initiating {
                    started: now,
                    next_retry: now,
                    attempts: 0,
                },
            );
            self.send_initiation(id, now, wall);
        }
    }

    /// One initiation, the same message to every candidate endpoint (the peer accepts the
    /// first to arrive and drops the others as replays).
    fn send_initiation(&mut self, id: u64, now: Instant, wall: Duration) {
        let Some(cands) = self.model.peer(id).map(|p| p.candidates()) else {
            self.initiating.remove(&id);
            return;
        };
        match self.hs.initiate(id, now, wall) {
            Ok(m) => {
                for c in cands {
                    if self.send(c, &m) {
                        self.counters.initiations_sent += 1;
                    }
                }
            }
            Err(e) => self.drop_hs(e),
        }
        if let Some(st) = self.initiating.get_mut(&id) {
            st.attempts += 1;
            // Jitter up to a third of a second, like WireGuard.
            let jitter = Duration::from_millis(u64::from(rand::random::<u16>() % 334));
            st.next_retry = now + REKEY_TIMEOUT + jitter;
        }
    }

    /// The keypair spec of a receiver index (for the keepalive the shell sends).
    #[must_use]
    pub fn keepalive_material(&mut self, k: &KeepaliveDue) -> Option<(SocketAddr, u32, [u8; 32])> {
        let ep = self.model.peer(k.peer)?.endpoint()?;
        let (_, inst) = self.model.keypair_by_index(k.receiver_index)?;
        Some((ep, inst.spec.remote_index, inst.spec.send_key))
    }
}

#[cfg(test)]
mod tests;
