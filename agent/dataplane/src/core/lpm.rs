//! Longest-prefix match over IPv4 and IPv6 prefixes, for cryptokey routing.
//!
//! One hash map per prefix length that is actually in use, probed from the longest length
//! down. Real peer sets use a handful of lengths (/32 and /128 per node, a few subnet routes),
//! so a lookup is a few multiply-shift hashes; built once per peer-set update and then only
//! read.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

/// A small multiply-rotate hasher for integer keys (addresses are not attacker-chosen keys
/// here: the table is built from our own configuration, lookups never insert).
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Prefix → value table with longest-prefix-match lookups.
#[derive(Clone, Debug)]
pub struct Lpm<T> {
    /// (prefix length, masked address → value), longest length first.
    v4: Vec<(u8, IntMap<u32, T>)>,
    v6: Vec<(u8, IntMap<u128, T>)>,
}

impl<T> Default for Lpm<T> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn level<K, T>(levels: &mut Vec<(u8, IntMap<K, T>)>, len: u8) -> &mut IntMap<K, T> {
    let pos = match levels.iter().position(|(l, _)| *l <= len) {
        Some(p) if levels[p].0 == len => p,
        Some(p) => {
            levels.insert(p, (len, IntMap::default()));
            p
        }
        None => {
            levels.push((len, IntMap::default()));
            levels.len() - 1
        }
    };
    &mut levels[pos].1
}

impl<T: Copy> Lpm<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `net` (host bits ignored) to `value`, replacing an earlier value for the same prefix.
    pub fn insert(&mut self, net: IpNet, value: T) {
        match net {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let key = u32::from(n.addr()) & mask4(len);
                level(&mut self.v4, len).insert(key, value);
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let key = u128::from(n.addr()) & mask6(len);
                level(&mut self.v6, len).insert(key, value);
            }
        }
    }

    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<T> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(u32::from(a)),
            IpAddr::V6(a) => self.lookup_v6(u128::from(a)),
        }
    }

    /// IPv4 lookup on the address as a host-order integer.
    #[inline]
    pub fn lookup_v4(&self, addr: u32) -> Option<T> {
        self.v4
            .iter()
            .find_map(|(len, m)| m.get(&(addr & mask4(*len))).copied())
    }

    /// IPv6 lookup on the address as a host-order integer.
    #[inline]
    pub fn lookup_v6(&self, addr: u128) -> Option<T> {
        self.v6
            .iter()
            .find_map(|(len, m)| m.get(&(addr & mask6(*len))).copied())
    }

    /// Whether the table has no prefixes.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The obvious reference: scan every prefix, keep the longest containing one (the last
    /// inserted wins among equal prefixes).
    fn naive(prefixes: &[(IpNet, u32)], addr: IpAddr) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for (net, v) in prefixes {
            let net = net.trunc();
            if net.contains(&addr) && best.is_none_or(|(l, _)| net.prefix_len() >= l) {
                best = Some((net.prefix_len(), *v));
            }
        }
        best.map(|(_, v)| v)
    }

    fn net_strategy() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            // few distinct high bits so prefixes overlap often
            (0u32..16, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
                let a = (hi << 28) | (lo >> 4);
                IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len).expect("valid v4 prefix")
            }),
            (0u128..16, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
                let a = (hi << 124) | (lo >> 4);
                IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len).expect("valid v6 prefix")
            }),
        ]
    }

    fn addr_strategy() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..16, any::<u32>())
                .prop_map(|(hi, lo)| IpAddr::V4(Ipv4Addr::from((hi << 28) | (lo >> 4)))),
            (0u128..16, any::<u128>())
                .prop_map(|(hi, lo)| IpAddr::V6(Ipv6Addr::from((hi << 124) | (lo >> 4)))),
        ]
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_a_linear_scan(
            prefixes in prop::collection::vec((net_strategy(), any::<u32>()), 0..40),
            addrs in prop::collection::vec(addr_strategy(), 1..40),
        ) {
            let mut lpm = Lpm::new();
            for (net, v) in &prefixes {
                lpm.insert(*net, *v);
            }
            for a in addrs {
                prop_assert_eq!(lpm.lookup(a), naive(&prefixes, a));
            }
            // addresses inside the prefixes themselves (the interesting ones)
            for (net, _) in &prefixes {
                prop_assert_eq!(lpm.lookup(net.addr()), naive(&prefixes, net.addr()));
            }
        }
    }

    #[test]
    fn longer_prefix_wins_over_default_route() {
        let mut lpm = Lpm::new();
        lpm.insert("0.0.0.0/0".parse().expect("net"), 1);
        lpm.insert("10.1.0.0/16".parse().expect("net"), 2);
        lpm.insert("10.1.2.3/32".parse().expect("net"), 3);
        assert_eq!(lpm.lookup("10.1.2.3".parse().expect("ip")), Some(3));
        assert_eq!(lpm.lookup("10.1.2.4".parse().expect("ip")), Some(2));
        assert_eq!(lpm.lookup("192.0.2.1".parse().expect("ip")), Some(1));
        assert_eq!(lpm.lookup("::1".parse().expect("ip")), None);
    }
}
