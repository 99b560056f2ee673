//! HAProxy PROXY protocol, versions 1 (text) and 2 (binary): how a load
//! balancer in front of a listener tells us the client's real address.
//! <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>
//!
//! `parse` is a pure function over the bytes received so far (it answers
//! "need more", a header and its length, or an error), so it is tested on
//! every split of the input. `read_header` drives it over a stream and hands
//! back any bytes read past the header (a TLS ClientHello, say) so nothing
//! the client sent is lost. `encode_v2` writes the header we send to a
//! backend when `mmp.backend_proxy_protocol` is on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The 12-byte signature opening every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (spec section 2.1).
const V1_MAX: usize = 107;
/// Longest v2 header we accept (16 fixed bytes + addresses + TLVs). The
/// spec allows 64 KiB of TLVs; real balancers send a few hundred bytes.
const V2_MAX: usize = 16 + 2048;
/// How long a peer may take to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address and port; None for v1 `UNKNOWN`, v2 `LOCAL`
    /// (the balancer's own health checks) and non-IP families: the TCP peer
    /// is then the client.
    pub source: Option<SocketAddr>,
    /// The address the client connected to on the balancer.
    pub destination: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Parses a header at the start of `buf`. `Ok(None)`: a valid beginning,
/// more bytes are needed. `Ok(Some((header, n)))`: the header is the first
/// `n` bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let v1 = b"PROXY ";
    let n = buf.len().min(v1.len());
    if buf.get(..n) == v1.get(..n) {
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf.get(..n) == V2_SIGNATURE.get(..n) {
        return parse_v2(buf);
    }
    Err(ProxyError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|b| *b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = window
        .get(..lf)
        .and_then(|l| l.strip_suffix(b"\r"))
        .ok_or(ProxyError::Malformed("v1 header does not end in CRLF"))?;
    let line =
        std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 header is not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let family = parts.next().unwrap_or("");
    let header = match family {
        // The rest of an UNKNOWN line is to be ignored.
        "UNKNOWN" => ProxyHeader {
            source: None,
            destination: None,
        },
        "TCP4" | "TCP6" => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(ProxyError::Malformed("v1 header needs 4 address fields"));
            };
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| ProxyError::Malformed("v1 address is not an IP address"))?;
                match (family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(ProxyError::Malformed(
                        "v1 address does not match its family",
                    )),
                }
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProxyError::Malformed("v1 port is not a number"));
                }
                s.parse()
                    .map_err(|_| ProxyError::Malformed("v1 port out of range"))
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => {
            return Err(ProxyError::Malformed(
                "v1 family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(Some((header, lf + 1)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(fixed) = buf.get(..16) else {
        // A prefix of the signature only: wait, but check what we have.
        if let Some(&vc) = buf.get(12) {
            check_version(vc)?;
        }
        return Ok(None);
    };
    let vc = fixed[12];
    check_version(vc)?;
    let family = fixed[13];
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if 16 + len > V2_MAX {
        return Err(ProxyError::Malformed("v2 header too long"));
    }
    let Some(body) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let local = vc & 0x0f == 0;
    let (source, destination) = match family {
        // TCP or UDP over IPv4
        0x11 | 0x12 => {
            let a = body
                .get(..12)
                .ok_or(ProxyError::Malformed("v2 IPv4 address block too short"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        // TCP or UDP over IPv6
        0x21 | 0x22 => {
            let a = body
                .get(..36)
                .ok_or(ProxyError::Malformed("v2 IPv6 address block too short"))?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        // UNSPEC, unix sockets: no IP address to use.
        0x00 | 0x31 | 0x32 => (None, None),
        _ => return Err(ProxyError::Malformed("v2 unknown address family")),
    };
    let header = if local {
        // LOCAL: the balancer speaks for itself; addresses are ignored.
        ProxyHeader {
            source: None,
            destination: None,
        }
    } else {
        ProxyHeader {
            source,
            destination,
        }
    };
    Ok(Some((header, 16 + len)))
}

fn check_version(vc: u8) -> Result<(), ProxyError> {
    if vc >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    if vc & 0x0f > 1 {
        return Err(ProxyError::Malformed("v2 command is not LOCAL or PROXY"));
    }
    Ok(())
}

/// A v2 PROXY header for a TCP connection from `source` to `destination`.
/// Mixed families are sent as IPv6 (IPv4-mapped), as the spec allows.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// Reads a PROXY header from the start of `stream`. Returns the header and
/// the bytes read past it, which belong to the protocol that follows.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<(ProxyHeader, Vec<u8>)> {
    use std::io::{Error, ErrorKind};
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        match parse(&buf) {
            Ok(Some((header, n))) => {
                let rest = buf.get(n..).unwrap_or_default().to_vec();
                return Ok((header, rest));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::new(ErrorKind::InvalidData, e)),
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// A stream that first yields `prefix` (bytes already read from `inner`),
/// then reads from `inner`. Writes go straight to `inner`.
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = this.prefix.get(this.pos..).unwrap_or_default();
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.pos += n;
            if this.pos >= this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Every strict prefix of a valid header is "need more"; the whole
    /// header (plus trailing data) parses to the same result.
    fn assert_split_invariant(bytes: &[u8], expect: ProxyHeader) {
        for i in 0..bytes.len() {
            assert_eq!(parse(&bytes[..i]), Ok(None), "prefix of {i} bytes");
        }
        let mut with_data = bytes.to_vec();
        with_data.extend_from_slice(b"\x16\x03\x01 tls hello");
        assert_eq!(parse(&with_data), Ok(Some((expect, bytes.len()))));
    }

    #[test]
    fn proxy_v1_tcp4_parses_at_every_split() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 993\r\n";
        assert_split_invariant(
            h,
            ProxyHeader {
                source: Some(addr("192.0.2.7:56324")),
                destination: Some(addr("198.51.100.1:993")),
            },
        );
    }

    #[test]
    fn proxy_v1_tcp6_and_unknown() {
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 143\r\n";
        assert_split_invariant(
            h,
            ProxyHeader {
                source: Some(addr("[2001:db8::1]:4000")),
                destination: Some(addr("[2001:db8::2]:143")),
            },
        );
        let none = ProxyHeader {
            source: None,
            destination: None,
        };
        assert_split_invariant(b"PROXY UNKNOWN\r\n", none);
        assert_split_invariant(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", none);
    }

    #[test]
    fn proxy_v1_malformed_headers_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 99999\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 993\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 993\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 1 993\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 993 extra\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 993\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 993\n",
            b"PROXY TCP4 300.0.2.7 198.51.100.1 1 993\r\n",
            b"PROXY  TCP4 192.0.2.7 198.51.100.1 1 993\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // No CRLF within 107 bytes.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert!(matches!(parse(&long), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn proxy_absent_is_not_proxy() {
        assert_eq!(parse(b"a1 LOGIN x y\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXZ"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIT\r"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn proxy_v2_round_trips_v4_v6_and_mixed_at_every_split() {
        for (s, d, expect_s, expect_d) in [
            (
                "192.0.2.7:56324",
                "198.51.100.1:993",
                "192.0.2.7:56324",
                "198.51.100.1:993",
            ),
            (
                "[2001:db8::1]:4000",
                "[2001:db8::2]:143",
                "[2001:db8::1]:4000",
                "[2001:db8::2]:143",
            ),
            (
                "192.0.2.7:1",
                "[2001:db8::2]:143",
                "[::ffff:192.0.2.7]:1",
                "[2001:db8::2]:143",
            ),
        ] {
            let h = encode_v2(addr(s), addr(d));
            assert_split_invariant(
                &h,
                ProxyHeader {
                    source: Some(addr(expect_s)),
                    destination: Some(addr(expect_d)),
                },
            );
        }
    }

    #[test]
    fn proxy_v2_local_and_tlvs() {
        // LOCAL with an IPv4 block: addresses ignored.
        let mut h = encode_v2(addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        h[12] = 0x20;
        assert_split_invariant(
            &h,
            ProxyHeader {
                source: None,
                destination: None,
            },
        );
        // PROXY with a TLV (PP2_TYPE_AUTHORITY) after the addresses.
        let mut h = encode_v2(addr("192.0.2.7:5"), addr("198.51.100.1:6"));
        let tlv = [0x02, 0x00, 0x04, b'i', b'm', b'a', b'p'];
        h[15] += tlv.len() as u8;
        h.extend_from_slice(&tlv);
        assert_split_invariant(
            &h,
            ProxyHeader {
                source: Some(addr("192.0.2.7:5")),
                destination: Some(addr("198.51.100.1:6")),
            },
        );
        // UNSPEC family, empty body.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_split_invariant(
            &h,
            ProxyHeader {
                source: None,
                destination: None,
            },
        );
    }

    #[test]
    fn proxy_v2_malformed_headers_are_refused() {
        let good = encode_v2(addr("192.0.2.7:5"), addr("198.51.100.1:6"));
        let mut bad_version = good.clone();
        bad_version[12] = 0x11;
        let mut bad_command = good.clone();
        bad_command[12] = 0x22;
        let mut bad_family = good.clone();
        bad_family[13] = 0x41;
        let mut short_block = good.clone();
        short_block[15] = 4;
        short_block.truncate(20);
        let mut huge = good.clone();
        huge[14] = 0xff;
        for (name, bad) in [
            ("version", bad_version),
            ("command", bad_command),
            ("family", bad_family),
            ("short address block", short_block),
            ("too long", huge),
        ] {
            assert!(
                matches!(parse(&bad), Err(ProxyError::Malformed(_))),
                "{name}"
            );
        }
        // The version byte alone is enough to refuse.
        assert!(parse(&bad_command_prefix()).is_err());
    }

    fn bad_command_prefix() -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x13);
        v
    }

    #[tokio::test]
    async fn read_header_keeps_the_bytes_after_the_header() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let mut data = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 993\r\n".to_vec();
        data.extend_from_slice(b"a1 CAPABILITY\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut a, &data)
            .await
            .unwrap();
        let (h, rest) = read_header(&mut b).await.unwrap();
        assert_eq!(h.source, Some(addr("192.0.2.7:56324")));
        let mut r = Rewind::new(rest, b);
        let mut got = vec![0u8; 15];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"a1 CAPABILITY\r\n");
    }

    #[tokio::test]
    async fn read_header_refuses_a_connection_without_header() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"a1 CAPABILITY\r\n")
            .await
            .unwrap();
        let e = read_header(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
