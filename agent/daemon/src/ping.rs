//! ICMP echo for `cvlan ping`: a raw ICMP socket (root), bound to this node's CVLAN address
//! so the request leaves through the TUN and the reply is matched by identifier, sequence
//! and source. The packet building and matching are pure functions.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request. For IPv6 the checksum is left zero: the kernel fills it in on raw
/// ICMPv6 sockets (it covers a pseudo-header only the kernel knows for sure).
pub fn echo_request(v6: bool, ident: u16, seq: u16, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 8 + payload_len];
    p[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = (i & 0xff) as u8;
    }
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// If `datagram` (as a raw socket returns it: with the IPv4 header, without an IPv6 one) is
/// the echo reply for `ident`/`seq`, the ICMP message length.
pub fn match_reply(v6: bool, datagram: &[u8], ident: u16, seq: u16) -> Option<usize> {
    let icmp = if v6 {
        datagram
    } else {
        let ihl = usize::from(datagram.first()? & 0x0f) * 4;
        datagram.get(ihl..)?
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp.len() < 8 || icmp[0] != want || icmp[1] != 0 {
        return None;
    }
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let sq = u16::from_be_bytes([icmp[6], icmp[7]]);
    (id == ident && sq == seq).then_some(icmp.len())
}

/// Sends echo requests to one address.
pub struct Pinger {
    socket: Socket,
    target: IpAddr,
    ident: u16,
}

impl Pinger {
    /// A raw ICMP socket towards `target`, bound to `source` when given.
    ///
    /// # Errors
    /// `PermissionDenied` without CAP_NET_RAW; bind errors.
    pub fn new(target: IpAddr, source: Option<IpAddr>) -> io::Result<Self> {
        let (domain, proto) = if target.is_ipv4() {
            (Domain::IPV4, Protocol::ICMPV4)
        } else {
            (Domain::IPV6, Protocol::ICMPV6)
        };
        let socket = Socket::new(domain, Type::RAW, Some(proto))?;
        if let Some(src) = source {
            socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        Ok(Pinger {
            socket,
            target,
            ident: rand::random(),
        })
    }

    /// Sends request `seq` with `payload_len` bytes and waits up to `timeout` for its reply:
    /// the round-trip time and the reply's ICMP length, or `None` on timeout.
    ///
    /// # Errors
    /// Socket errors other than the timeout.
    pub fn ping(
        &self,
        seq: u16,
        payload_len: usize,
        timeout: Duration,
    ) -> io::Result<Option<(Duration, usize)>> {
        let v6 = self.target.is_ipv6();
        let pkt = echo_request(v6, self.ident, seq, payload_len);
        let to = SockAddr::from(SocketAddr::new(self.target, 0));
        let start = Instant::now();
        self.socket.send_to(&pkt, &to)?;
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // SAFETY: recv_from initialised the first n bytes.
            let data: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
            if from.as_socket().map(|s| s.ip()) != Some(self.target) {
                continue;
            }
            if let Some(len) = match_reply(v6, data, self.ident, seq) {
                return Ok(Some((start.elapsed(), len)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_of_a_request_with_its_checksum_is_zero() {
        let p = echo_request(false, 0x1234, 7, 56);
        assert_eq!(checksum(&p), 0);
        assert_eq!(p.len(), 64);
        // Odd lengths pad with a zero byte.
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn replies_match_only_their_identifier_and_sequence() {
        let mut reply = echo_request(false, 9, 3, 8);
        reply[0] = ECHO_REPLY_V4;
        let mut ip = vec![0x45u8];
        ip.extend_from_slice(&[0; 19]);
        ip.extend_from_slice(&reply);
        assert_eq!(match_reply(false, &ip, 9, 3), Some(16));
        assert_eq!(match_reply(false, &ip, 9, 4), None);
        assert_eq!(match_reply(false, &ip, 8, 3), None);
        // Our own request looped back is not a reply.
        let mut req = vec![0x45u8];
        req.extend_from_slice(&[0; 19]);
        req.extend_from_slice(&echo_request(false, 9, 3, 8));
        assert_eq!(match_reply(false, &req, 9, 3), None);
        let mut r6 = echo_request(true, 9, 3, 8);
        r6[0] = ECHO_REPLY_V6;
        assert_eq!(match_reply(true, &r6, 9, 3), Some(16));
        assert_eq!(match_reply(true, &[129, 0, 0], 9, 3), None);
        assert_eq!(match_reply(false, &[], 9, 3), None);
    }

    /// Needs CAP_NET_RAW (the tests run as root here); skipped with a note otherwise.
    #[test]
    fn loopback_answers_a_real_echo_request() {
        let p = match Pinger::new("127.0.0.1".parse().expect("ip"), None) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("note: no CAP_NET_RAW, raw ICMP test skipped");
                return;
            }
            Err(e) => panic!("socket: {e}"),
        };
        let r = p
            .ping(1, 56, Duration::from_secs(2))
            .expect("ping")
            .expect("a reply from loopback");
        assert_eq!(r.1, 64);
        assert!(r.0 < Duration::from_secs(2));
    }
}
