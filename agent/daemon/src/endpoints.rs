//! The UDP endpoints this node reports to the control plane: every usable address of every
//! interface except loopback and the TUN, with the data plane's port.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddr {
    /// Interface name.
    pub interface: String,
    /// The address.
    pub addr: IpAddr,
    /// The interface is up.
    pub up: bool,
    /// The interface is a loopback.
    pub loopback: bool,
}

/// Addresses of the interfaces in this network namespace (getifaddrs).
///
/// # Errors
/// The OS error of getifaddrs.
pub fn local_addresses() -> io::Result<Vec<LocalAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list returned by getifaddrs, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: family is AF_INET, so this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: family is AF_INET6, so this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        // SAFETY: ifa_name is a non-null NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let flags = ifa.ifa_flags;
        out.push(LocalAddr {
            interface: name,
            addr,
            up: flags & libc::IFF_UP as u32 != 0,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
        });
    }
    // SAFETY: head came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The endpoints to report: addresses of up, non-loopback interfaces other than `tun`, not
/// link-local, multicast or one of `overlay` (this node's CVLAN addresses), with `port`.
/// Sorted and deduplicated so two calls can be compared to see whether anything changed.
pub fn endpoints(addrs: &[LocalAddr], tun: &str, overlay: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = addrs
        .iter()
        .filter(|a| a.up && !a.loopback && a.interface != tun)
        .map(|a| a.addr)
        .filter(|ip| {
            !ip.is_loopback()
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && !overlay.contains(ip)
                && match ip {
                    IpAddr::V4(v4) => !v4.is_link_local(),
                    IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                }
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(iface: &str, ip: &str) -> LocalAddr {
        LocalAddr {
            interface: iface.into(),
            addr: ip.parse().expect("ip"),
            up: true,
            loopback: iface == "lo",
        }
    }

    #[test]
    fn only_usable_underlay_addresses_are_reported() {
        let mut down = a("eth9", "198.51.100.9");
        down.up = false;
        let addrs = vec![
            a("lo", "127.0.0.1"),
            a("lo", "::1"),
            a("eth0", "192.0.2.10"),
            a("eth0", "fe80::1"),
            a("eth0", "2001:db8::10"),
            a("eth1", "169.254.1.1"),
            a("cvlan0", "10.20.0.2"),
            a("other", "10.20.0.2"),
            a("eth1", "192.0.2.10"),
            down,
        ];
        let got = endpoints(&addrs, "cvlan0", &["10.20.0.2".parse().expect("ip")], 51820);
        assert_eq!(
            got,
            vec![
                "192.0.2.10:51820".parse::<SocketAddr>().expect("sa"),
                "[2001:db8::10]:51820".parse().expect("sa"),
            ]
        );
    }

    #[test]
    fn the_loopback_interface_is_listed_by_the_os() {
        let l = local_addresses().expect("getifaddrs");
        assert!(
            l.iter().any(|a| a.loopback && a.addr.is_loopback()),
            "{l:?}"
        );
    }
}
