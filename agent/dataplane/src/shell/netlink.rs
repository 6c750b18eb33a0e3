//! Addresses and routes of the TUN through rtnetlink.
//!
//! rtnetlink is async; the data plane's threads are not. A [`Netlink`] owns a
//! current-thread tokio runtime and blocks on each request. It must be created on a thread
//! that is in the data plane's network namespace (the netlink socket is bound to the
//! namespace of the thread that opens it).

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::address::AddressFlags;
use rtnetlink::{Handle, RouteMessageBuilder};

fn nl_err(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(code) => io::Error::from_raw_os_error(-code.get()),
            None => io::Error::other("netlink error without code"),
        },
        other => io::Error::other(other.to_string()),
    }
}

/// A blocking netlink client.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Opens a route netlink socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, io::Error>(handle)
        })?;
        Ok(Self { rt, handle })
    }

    /// Adds `net` (with its prefix length, so the kernel makes the connected route) to the
    /// interface. IPv6 addresses skip duplicate address detection (a TUN has no neighbours).
    /// An address that is already there is fine.
    pub fn add_address(&self, ifindex: u32, net: IpNet) -> io::Result<()> {
        let mut req = self
            .handle
            .address()
            .add(ifindex, net.addr(), net.prefix_len())
            .replace();
        if net.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.rt.block_on(req.execute()).map_err(nl_err)
    }

    fn route_message(
        ifindex: u32,
        net: IpNet,
    ) -> io::Result<netlink_packet_route::route::RouteMessage> {
        let b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.network(), net.prefix_len())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(b.output_interface(ifindex).build())
    }

    /// Adds a route to `net` through the interface (replacing one that exists).
    pub fn add_route(&self, ifindex: u32, net: IpNet) -> io::Result<()> {
        let msg = Self::route_message(ifindex, net)?;
        self.rt
            .block_on(self.handle.route().add(msg).replace().execute())
            .map_err(nl_err)
    }

    /// Removes the route to `net` through the interface; a missing route is fine.
    pub fn del_route(&self, ifindex: u32, net: IpNet) -> io::Result<()> {
        let msg = Self::route_message(ifindex, net)?;
        match self
            .rt
            .block_on(self.handle.route().del(msg).execute())
            .map_err(nl_err)
        {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r,
        }
    }
}
