//! The one UDP socket: dual-stack, `recvmmsg` with `UDP_GRO`, `sendmmsg` with `UDP_SEGMENT`.
//!
//! All message headers, iovecs, addresses and control buffers are allocated once per thread
//! ([`Receiver`], [`Sender`]); a batch only rewrites them.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::disabled;
use crate::core::{RxBatch, RxItem, TxBatch, canonical};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Bytes per received message: a GRO super-datagram is at most 64 KiB.
pub const RECV_MSG_SIZE: usize = 1 << 16;
/// Messages per `recvmmsg`.
pub const RECV_VLEN: usize = 8;
/// Most segments the kernel accepts in one `UDP_SEGMENT` send.
const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO send (the IP length field is 16 bits).
const GSO_MAX_BYTES: usize = 65_000;
/// Messages per `sendmmsg` call.
const SEND_VLEN: usize = 64;

/// The shared UDP socket.
pub struct Udp {
    sock: Socket,
    dual_stack: bool,
    gso: AtomicBool,
    gro: bool,
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: fd is an open socket owned by the caller; the option value is a live c_int and
    // its size is passed alongside.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Udp {
    /// Binds `[::]:port` dual-stack (or `0.0.0.0:port` where IPv6 is unavailable), with big
    /// buffers, `UDP_GRO` when the kernel has it, and a receive timeout of `tick` so the
    /// receiving thread can notice shutdown.
    pub fn bind(port: u16, tick: Duration) -> io::Result<Self> {
        let (sock, dual_stack) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                s.set_only_v6(false)?;
                s.bind(&SockAddr::from(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    port,
                )))?;
                (s, true)
            }
            Err(_) => {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                s.bind(&SockAddr::from(SocketAddr::from(([0, 0, 0, 0], port))))?;
                (s, false)
            }
        };
        // as root, force buffers past rmem_max/wmem_max; fall back to the capped request
        let fd = sock.as_raw_fd();
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20).is_err() {
            let _ = sock.set_recv_buffer_size(8 << 20);
        }
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20).is_err() {
            let _ = sock.set_send_buffer_size(8 << 20);
        }
        let gro = !disabled("udp-gro") && setsockopt_int(fd, SOL_UDP, UDP_GRO, 1).is_ok();
        sock.set_read_timeout(Some(tick))?;
        Ok(Self {
            sock,
            dual_stack,
            gso: AtomicBool::new(!disabled("udp-gso")),
            gro,
        })
    }

    /// Whether `UDP_SEGMENT` sends are in use.
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Whether the kernel accepted `UDP_GRO`.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// The bound port.
    pub fn local_port(&self) -> io::Result<u16> {
        self.sock
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("socket has no inet address"))
    }

    fn sockaddr(&self, dst: SocketAddr) -> SockAddr {
        match dst {
            SocketAddr::V4(v4) if self.dual_stack => SockAddr::from(SocketAddr::V6(
                SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
            )),
            _ => SockAddr::from(dst),
        }
    }

    /// Sends one datagram (timers, tests).
    pub fn send_one(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, &self.sockaddr(dst))
    }
}

/// Per-thread receive state.
pub struct Receiver {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u64; 8]>,
    lens: Vec<(usize, usize, SocketAddr)>,
}

impl Receiver {
    /// Preallocates headers for [`RECV_VLEN`] messages.
    pub fn new() -> Self {
        // SAFETY: these are plain C structs for which all-zero bytes are a valid value.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: as above.
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        Self {
            hdrs: vec![zero_hdr; RECV_VLEN],
            iovs: vec![zero_iov; RECV_VLEN],
            names: vec![zero_name; RECV_VLEN],
            cmsgs: vec![[0u64; 8]; RECV_VLEN],
            lens: Vec::with_capacity(RECV_VLEN),
        }
    }

    /// One `recvmmsg` into `rx.buf` (which must hold `RECV_VLEN * RECV_MSG_SIZE` bytes).
    /// Returns the messages as (offset, length, GRO segment size or 0, source), after which
    /// [`split`] turns them into datagram items. `Ok(0)` on timeout.
    pub fn recv(&mut self, udp: &Udp, rx: &mut RxBatch) -> io::Result<usize> {
        debug_assert!(rx.buf.len() >= RECV_VLEN * RECV_MSG_SIZE);
        let base = rx.buf.as_mut_ptr();
        for i in 0..RECV_VLEN {
            // SAFETY: i * RECV_MSG_SIZE + RECV_MSG_SIZE <= rx.buf.len() (asserted above).
            self.iovs[i].iov_base = unsafe { base.add(i * RECV_MSG_SIZE) }.cast();
            self.iovs[i].iov_len = RECV_MSG_SIZE;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = mem::size_of::<[u64; 8]>();
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by self / rx for the duration of
        // the call, with their true sizes.
        let n = unsafe {
            libc::recvmmsg(
                udp.sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                RECV_VLEN as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        self.lens.clear();
        for i in 0..n {
            let len = self.hdrs[i].msg_len as usize;
            let seg = gro_segment_size(&self.hdrs[i].msg_hdr);
            let src = sockaddr_to_std(&self.names[i], self.hdrs[i].msg_hdr.msg_namelen);
            if let Some(src) = src {
                self.lens.push((len, seg, canonical(src)));
            }
        }
        // messages are stored at i * RECV_MSG_SIZE; keep their index alongside
        rx.items.clear();
        Ok(n)
    }

    /// The messages of the last [`Self::recv`]: (message index, length, GRO segment size,
    /// source).
    pub fn messages(&self) -> impl Iterator<Item = (usize, usize, usize, SocketAddr)> + '_ {
        self.lens
            .iter()
            .enumerate()
            .map(|(i, (len, seg, src))| (i, *len, *seg, *src))
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends the datagrams of message `index` (length `len`, GRO segment size `seg`, 0 = not
/// coalesced) to `items`, starting at `from_segment`; returns the next segment to take when
/// `items` reached `max`, else `None`.
pub fn split(
    items: &mut Vec<RxItem>,
    index: usize,
    len: usize,
    seg: usize,
    src: SocketAddr,
    from_segment: usize,
    max: usize,
) -> Option<usize> {
    let base = index * RECV_MSG_SIZE;
    if len == 0 {
        // an empty datagram is still a (malformed) datagram for the core to count
        if items.len() >= max {
            return Some(0);
        }
        items.push(RxItem {
            start: base,
            len: 0,
            src,
        });
        return None;
    }
    let seg = if seg == 0 { len } else { seg };
    let mut k = from_segment;
    while k * seg < len {
        if items.len() >= max {
            return Some(k);
        }
        let start = k * seg;
        items.push(RxItem {
            start: base + start,
            len: seg.min(len - start),
            src,
        });
        k += 1;
    }
    None
}

fn gro_segment_size(h: &libc::msghdr) -> usize {
    // SAFETY: h was filled by recvmmsg: msg_control/msg_controllen describe a valid control
    // buffer owned by the Receiver; the CMSG_* helpers stay inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                return data.read_unaligned().max(0) as usize;
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

fn sockaddr_to_std(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is large enough.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is large enough.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Per-thread send state.
pub struct Sender {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
    cmsgs: Vec<[u64; 4]>,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    /// Preallocates headers for [`SEND_VLEN`] messages.
    pub fn new() -> Self {
        // SAFETY: plain C structs, all-zero is valid.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let any = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        Self {
            hdrs: vec![zero_hdr; SEND_VLEN],
            iovs: vec![zero_iov; SEND_VLEN],
            names: vec![any; SEND_VLEN],
            cmsgs: vec![[0u64; 4]; SEND_VLEN],
        }
    }

    /// Sends every datagram of `tx`, coalescing runs of equal-size datagrams to the same
    /// destination into `UDP_SEGMENT` sends. Returns (datagrams sent, errors).
    pub fn send(&mut self, udp: &Udp, tx: &TxBatch) -> (u64, u64) {
        let items = tx.items();
        let bytes = tx.bytes();
        let gso = udp.gso.load(Ordering::Relaxed);
        let (mut sent, mut errors) = (0u64, 0u64);
        let mut i = 0;
        while i < items.len() {
            // build up to SEND_VLEN messages
            let mut m = 0;
            let first_item = i;
            let mut counts = [0usize; SEND_VLEN];
            while m < SEND_VLEN && i < items.len() {
                let first = items[i];
                let seg = first.len;
                let mut end = i + 1;
                let mut total = seg;
                if gso {
                    while end < items.len() && end - i < GSO_MAX_SEGMENTS {
                        let it = items[end];
                        let prev = items[end - 1];
                        if it.dst != first.dst
                            || it.len > seg
                            || it.start != prev.start + prev.len
                            || total + it.len > GSO_MAX_BYTES
                            || prev.len < seg
                        {
                            break;
                        }
                        total += it.len;
                        end += 1;
                    }
                }
                self.names[m] = udp.sockaddr(first.dst);
                // SAFETY: start + total is within `bytes` (items were committed inside it);
                // the kernel only reads through this pointer.
                self.iovs[m].iov_base =
                    unsafe { bytes.as_ptr().add(first.start) }.cast_mut().cast();
                self.iovs[m].iov_len = total;
                counts[m] = end - i;
                let h = &mut self.hdrs[m].msg_hdr;
                h.msg_name = self.names[m].as_ptr().cast_mut().cast();
                h.msg_namelen = self.names[m].len();
                h.msg_iov = &mut self.iovs[m];
                h.msg_iovlen = 1;
                h.msg_flags = 0;
                if end - i > 1 {
                    let c = &mut self.cmsgs[m];
                    h.msg_control = c.as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE is a pure size computation.
                    h.msg_controllen =
                        unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
                    // SAFETY: the control buffer is 32 aligned bytes >= CMSG_SPACE(2); the
                    // header and data written stay inside it.
                    unsafe {
                        let cm = libc::CMSG_FIRSTHDR(h);
                        (*cm).cmsg_level = SOL_UDP;
                        (*cm).cmsg_type = UDP_SEGMENT;
                        (*cm).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
                        libc::CMSG_DATA(cm)
                            .cast::<u16>()
                            .write_unaligned(seg as u16);
                    }
                } else {
                    h.msg_control = std::ptr::null_mut();
                    h.msg_controllen = 0;
                }
                m += 1;
                i = end;
            }
            // send the m messages, retrying the tail after partial sends
            let mut done = 0;
            while done < m {
                // SAFETY: headers done..m point at live buffers (self, tx) for the call.
                let r = unsafe {
                    libc::sendmmsg(
                        udp.sock.as_raw_fd(),
                        self.hdrs[done..].as_mut_ptr(),
                        (m - done) as libc::c_uint,
                        0,
                    )
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if gso && e.raw_os_error() == Some(libc::EIO) && counts[done] > 1 {
                        // the route's device cannot do UDP segmentation: stop using GSO and
                        // send the rest of this batch one datagram at a time
                        tracing::warn!("UDP GSO send failed with EIO; disabling UDP GSO");
                        udp.gso.store(false, Ordering::Relaxed);
                        let skip: usize = counts[..done].iter().sum();
                        let rest = first_item + skip;
                        for it in &items[rest..] {
                            match udp.send_one(&bytes[it.start..it.start + it.len], it.dst) {
                                Ok(_) => sent += 1,
                                Err(_) => errors += 1,
                            }
                        }
                        return (sent, errors);
                    }
                    // unreachable destination etc.: count and skip this message
                    errors += counts[done] as u64;
                    done += 1;
                    continue;
                }
                let r = r as usize;
                sent += counts[done..done + r].iter().sum::<usize>() as u64;
                done += r;
            }
        }
        (sent, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gro_messages_split_into_their_segments() {
        let src: SocketAddr = "192.0.2.1:51820".parse().expect("addr");
        let mut items = Vec::new();
        assert_eq!(split(&mut items, 1, 1000, 300, src, 0, 100), None);
        let lens: Vec<usize> = items.iter().map(|i| i.len).collect();
        assert_eq!(lens, vec![300, 300, 300, 100]);
        assert_eq!(items[0].start, RECV_MSG_SIZE);
        assert_eq!(items[3].start, RECV_MSG_SIZE + 900);
        // resumes where it stopped when the batch is full
        let mut items = Vec::new();
        assert_eq!(split(&mut items, 0, 1000, 300, src, 0, 2), Some(2));
        items.clear();
        assert_eq!(split(&mut items, 0, 1000, 300, src, 2, 2), None);
        assert_eq!(items.len(), 2);
        // not coalesced
        let mut items = Vec::new();
        assert_eq!(split(&mut items, 0, 148, 0, src, 0, 10), None);
        assert_eq!(items.len(), 1);
    }
}
