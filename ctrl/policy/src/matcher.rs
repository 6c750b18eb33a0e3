//! The fast form of a [`Filter`] for the per-packet path.
//!
//! Each dimension of a packet (source address, destination address, protocol+port) is
//! looked up in its own table of disjoint intervals sorted by start; every interval carries
//! the set of rules that match there, as a bitset over rule positions. A packet matches
//! rule `i` iff bit `i` is set in all three sets, so the decision is the action of the lowest
//! bit of their AND — first-match semantics without walking the rules. Equal bitsets are
//! stored once (most intervals of a filter share a handful of sets), and adjacent intervals
//! with the same set are merged, which keeps the tables small.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{Action, Filter, Packet, TCP, UDP};

/// Immutable fast form of a Filter for the per-packet path: built once per filter update,
/// decide() does no allocation, no locking.
///
/// A decision costs four binary searches (`O(log prefixes)`) and an AND over
/// `rules / 64` words, usually one.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// u64 words per rule set.
    words: usize,
    /// Interned rule sets, `words` each; set 0 is the empty set.
    sets: Vec<u64>,
    /// Action of each rule, by position.
    actions: Vec<Action>,
    src4: Table<u32>,
    dst4: Table<u32>,
    src6: Table<u128>,
    dst6: Table<u128>,
    tcp: Table<u16>,
    udp: Table<u16>,
    /// Set of rules matching a packet of each protocol without ports (TCP and UDP use the
    /// port tables instead).
    proto: Box<[u32; 256]>,
}

/// Disjoint intervals covering the whole key space: interval `i` is
/// `starts[i] ..= starts[i + 1] - 1` and carries rule set `set[i]`. `starts[0]` is 0.
#[derive(Clone, Debug)]
struct Table<K> {
    starts: Vec<K>,
    set: Vec<u32>,
}

impl<K: Key> Table<K> {
    #[inline]
    fn lookup(&self, k: K) -> u32 {
        // starts[0] == 0 <= k, so the partition point is at least 1.
        let i = self.starts.partition_point(|&s| s <= k);
        self.set[i.wrapping_sub(1)]
    }
}

/// An unsigned key of an interval table.
trait Key: Copy + Ord + Default + std::hash::Hash {
    /// `self + 1`, `None` at the top of the key space.
    fn succ(self) -> Option<Self>;
}
impl Key for u16 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}
impl Key for u32 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}
impl Key for u128 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Interns rule bitsets while the tables are built.
struct Interner {
    words: usize,
    sets: Vec<u64>,
    ids: HashMap<Vec<u64>, u32>,
}

impl Interner {
    fn new(words: usize) -> Self {
        let mut i = Interner {
            words,
            sets: Vec::new(),
            ids: HashMap::new(),
        };
        let id = i.intern(&vec![0; words]);
        debug_assert_eq!(id, 0);
        i
    }

    fn intern(&mut self, set: &[u64]) -> u32 {
        if let Some(&id) = self.ids.get(set) {
            return id;
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.sets.extend_from_slice(set);
        self.ids.insert(set.to_vec(), id);
        id
    }

    /// Builds the table of `items`: inclusive key ranges, each for one rule. Ranges of one
    /// rule may overlap (hand-written filters), hence a count per rule, not just a bit.
    fn table<K: Key>(&mut self, items: &[(K, K, usize)], rules: usize) -> Table<K> {
        // (position, rule, +1 / -1): rule `r` starts or stops matching at `position`.
        let mut events: Vec<(K, usize, bool)> = Vec::with_capacity(items.len() * 2);
        for &(a, b, r) in items {
            events.push((a, r, true));
            if let Some(e) = b.succ() {
                events.push((e, r, false));
            }
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut count = vec![0u32; rules];
        let mut cur = vec![0u64; self.words];
        let mut t = Table {
            starts: vec![K::default()],
            set: vec![0],
        };
        let mut i = 0;
        while i < events.len() {
            let pos = events[i].0;
            while i < events.len() && events[i].0 == pos {
                let (_, r, up) = events[i];
                if up {
                    count[r] += 1;
                    if count[r] == 1 {
                        cur[r / 64] |= 1 << (r % 64);
                    }
                } else {
                    count[r] -= 1;
                    if count[r] == 0 {
                        cur[r / 64] &= !(1 << (r % 64));
                    }
                }
                i += 1;
            }
            let id = self.intern(&cur);
            if t.starts.last() == Some(&pos) {
                // Only position 0 can repeat: replace the initial empty interval.
                if let Some(last) = t.set.last_mut() {
                    *last = id;
                }
            } else if t.set.last() != Some(&id) {
                t.starts.push(pos);
                t.set.push(id);
            }
        }
        t
    }
}

fn range4(n: &ipnet::Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

fn range6(n: &ipnet::Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

impl Matcher {
    /// Builds the lookup tables for `f`. Cost `O(p log p + p · rules / 64)` for `p`
    /// prefixes and port ranges; meant to run once per filter update, off the packet path.
    pub fn new(f: &Filter) -> Self {
        let n = f.rules.len();
        let words = n.div_ceil(64);
        let mut it = Interner::new(words);

        let (s4, s6) = split(f.rules.iter().enumerate().map(|(i, r)| (i, &r.sources[..])));
        let (d4, d6) = split(
            f.rules
                .iter()
                .enumerate()
                .map(|(i, r)| (i, &r.destinations[..])),
        );
        let src4 = it.table(&s4, n);
        let dst4 = it.table(&d4, n);
        let src6 = it.table(&s6, n);
        let dst6 = it.table(&d6, n);

        let ports = |proto: u8| -> Vec<(u16, u16, usize)> {
            let mut v = Vec::new();
            for (i, r) in f.rules.iter().enumerate() {
                if !r.proto.matches(proto) {
                    continue;
                }
                if r.ports.is_empty() || !r.proto.uses_ports() {
                    v.push((0, u16::MAX, i));
                } else {
                    // Empty ranges (first > last) contain no port and are left out.
                    v.extend(
                        r.ports
                            .iter()
                            .filter(|p| p.first <= p.last)
                            .map(|p| (p.first, p.last, i)),
                    );
                }
            }
            v
        };
        let tcp = it.table(&ports(TCP), n);
        let udp = it.table(&ports(UDP), n);

        let mut proto = Box::new([0u32; 256]);
        let mut set = vec![0u64; words];
        for (num, slot) in proto.iter_mut().enumerate() {
            let num = num as u8;
            if num == TCP || num == UDP {
                continue;
            }
            set.fill(0);
            for (i, r) in f.rules.iter().enumerate() {
                // A port list on a rule that uses ports restricts it to TCP/UDP.
                if r.proto.matches(num) && (r.ports.is_empty() || !r.proto.uses_ports()) {
                    set[i / 64] |= 1 << (i % 64);
                }
            }
            *slot = it.intern(&set);
        }

        Matcher {
            words,
            sets: it.sets,
            actions: f.rules.iter().map(|r| r.action).collect(),
            src4,
            dst4,
            src6,
            dst6,
            tcp,
            udp,
            proto,
        }
    }

    /// The action for `p`: the same as [`Filter::evaluate`] on the filter it was built from.
    /// No allocation, no locking; safe to call from many threads at once.
    #[inline]
    pub fn decide(&self, p: &Packet) -> Action {
        let pp = match p.proto {
            TCP => self.tcp.lookup(p.dst_port),
            UDP => self.udp.lookup(p.dst_port),
            n => self.proto[usize::from(n)],
        };
        if pp == 0 {
            return Action::Deny;
        }
        let s = match p.src {
            IpAddr::V4(a) => self.src4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.src6.lookup(u128::from(a)),
        };
        if s == 0 {
            return Action::Deny;
        }
        let d = match p.dst {
            IpAddr::V4(a) => self.dst4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.dst6.lookup(u128::from(a)),
        };
        if d == 0 {
            return Action::Deny;
        }
        let w = self.words;
        let (s, d, pp) = (s as usize * w, d as usize * w, pp as usize * w);
        let sets = &self.sets;
        for k in 0..w {
            let x = sets[s + k] & sets[d + k] & sets[pp + k];
            if x != 0 {
                return self.actions[k * 64 + x.trailing_zeros() as usize];
            }
        }
        Action::Deny
    }

    /// Number of rules, interval-table entries and distinct rule sets (for benchmarks and
    /// debugging).
    pub fn stats(&self) -> MatcherStats {
        MatcherStats {
            rules: self.actions.len(),
            intervals: self.src4.starts.len()
                + self.dst4.starts.len()
                + self.src6.starts.len()
                + self.dst6.starts.len()
                + self.tcp.starts.len()
                + self.udp.starts.len(),
            sets: self.sets.len() / self.words.max(1),
        }
    }
}

/// Size of a [`Matcher`]'s tables, see [`Matcher::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatcherStats {
    /// Rules of the filter.
    pub rules: usize,
    /// Entries of all interval tables together.
    pub intervals: usize,
    /// Distinct rule bitsets stored.
    pub sets: usize,
}

type Items4 = Vec<(u32, u32, usize)>;
type Items6 = Vec<(u128, u128, usize)>;

/// Splits per-rule prefix lists by family into key ranges.
fn split<'f>(rules: impl Iterator<Item = (usize, &'f [IpNet])>) -> (Items4, Items6) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (r, nets) in rules {
        for n in nets {
            match n {
                IpNet::V4(n) => {
                    let (a, b) = range4(n);
                    v4.push((a, b, r));
                }
                IpNet::V6(n) => {
                    let (a, b) = range6(n);
                    v6.push((a, b, r));
                }
            }
        }
    }
    (v4, v6)
}
