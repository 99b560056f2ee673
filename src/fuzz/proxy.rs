//! PROXY protocol v1 and v2 headers (`proxyproto::parse`, `encode_v2`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand::Rng as _;

use super::gen::{number, pick};
use super::{Rng, Target};
use crate::proxyproto::{self, ProxyError, V2_SIGNATURE};

pub(crate) static PROXY: Target = Target {
    name: "proxy_protocol",
    check: check_proxy,
    generate: gen_proxy,
    deep: deep_proxy,
    cases: 800,
    dict: &[
        b"PROXY ",
        b"TCP4 ",
        b"TCP6 ",
        b"UNKNOWN",
        b"\r\n",
        b"\r\n\r\n\0\r\nQUIT\n",
        b"\x21\x11\x00\x0c",
        b"\x21\x21\x00\x24",
        b"\xff\xff",
        b"65536",
    ],
};

fn check_proxy(input: &[u8]) {
    let r = proxyproto::parse(input);
    match &r {
        Ok(Some((h, n))) => {
            assert!(
                *n > 0 && *n <= input.len(),
                "header length {n} of {}",
                input.len()
            );
            assert!(*n <= 16 + 2048, "header of {n} bytes accepted");
            // The header alone parses the same; every shorter prefix
            // asks for more (never a different answer).
            assert_eq!(proxyproto::parse(&input[..*n]), Ok(Some((*h, *n))));
            for cut in 0..*n {
                assert_eq!(proxyproto::parse(&input[..cut]), Ok(None), "prefix {cut}");
            }
        }
        Ok(None) => {
            // Need more: every prefix needs more too.
            for cut in 0..input.len() {
                assert_eq!(proxyproto::parse(&input[..cut]), Ok(None), "prefix {cut}");
            }
            assert!(
                input.len() < 16 + 2048,
                "still waiting after {} bytes",
                input.len()
            );
        }
        Err(ProxyError::NotProxy) | Err(ProxyError::Malformed(_)) => {
            // More bytes never repair it.
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"\r\n\0\0\0\0");
            assert!(
                proxyproto::parse(&longer).is_err(),
                "an error became a header"
            );
        }
    }
    // What we send to a backend reads back as the same addresses.
    if input.len() >= 36 {
        let a: [u8; 16] = input[..16].try_into().unwrap_or([0; 16]);
        let b: [u8; 16] = input[16..32].try_into().unwrap_or([0; 16]);
        let p = u16::from_be_bytes([input[32], input[33]]);
        let q = u16::from_be_bytes([input[34], input[35]]);
        let v4 = |x: [u8; 16]| IpAddr::V4(Ipv4Addr::new(x[0], x[1], x[2], x[3]));
        let v6 = |x: [u8; 16]| IpAddr::V6(Ipv6Addr::from(x));
        for (s, d) in [(v4(a), v4(b)), (v6(a), v6(b)), (v4(a), v6(b))] {
            let (s, d) = (SocketAddr::new(s, p), SocketAddr::new(d, q));
            let enc = proxyproto::encode_v2(s, d);
            let (h, n) = proxyproto::parse(&enc)
                .expect("own header parses")
                .expect("complete");
            assert_eq!(n, enc.len());
            let canon = |x: SocketAddr| match (x.ip(), s.is_ipv4() && d.is_ipv4()) {
                (IpAddr::V4(ip), false) => {
                    SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), x.port())
                }
                _ => x,
            };
            assert_eq!(h.source, Some(canon(s)));
            assert_eq!(h.destination, Some(canon(d)));
        }
    }
}

fn v2(command: u8, family: u8, len: u16, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(command);
    out.push(family);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn gen_proxy(rng: &mut Rng) -> Vec<u8> {
    if rng.gen() {
        let fam = pick(rng, &["TCP4", "TCP6", "UNKNOWN", "UDP4", "TCP4 ", ""]);
        let ip = |rng: &mut Rng| -> String {
            match rng.gen_range(0..5) {
                0 => "::1".into(),
                1 => "::ffff:1.2.3.4".into(),
                2 => format!("{}.{}.0.1", number(rng), rng.gen_range(0..300)),
                _ => format!("192.0.2.{}", rng.gen_range(0..256)),
            }
        };
        let port = |rng: &mut Rng| -> String {
            if rng.gen_ratio(1, 4) {
                number(rng)
            } else {
                rng.gen_range(0..65536u32).to_string()
            }
        };
        let mut line = format!(
            "PROXY {fam} {} {} {} {}",
            ip(rng),
            ip(rng),
            port(rng),
            port(rng)
        );
        if rng.gen_ratio(1, 6) {
            line.push_str(&" ".repeat(rng.gen_range(0..120)));
        }
        line.push_str(pick(rng, &["\r\n", "\r\n", "\n", "\r", ""]));
        let mut out = line.into_bytes();
        out.extend_from_slice(b"EHLO next\r\n");
        return out;
    }
    let command = pick(rng, &[0x20u8, 0x21, 0x21, 0x22, 0x11, 0x2f]);
    let family = pick(
        rng,
        &[0x11u8, 0x12, 0x21, 0x22, 0x00, 0x31, 0x32, 0x13, 0xff],
    );
    let body_len = pick(rng, &[0usize, 4, 11, 12, 35, 36, 200, 2032, 2048, 2049]);
    let body: Vec<u8> = (0..body_len).map(|_| rng.gen()).collect();
    let claimed = if rng.gen_ratio(3, 4) {
        body_len as u16
    } else {
        pick(rng, &[0u16, 12, 36, 2032, 2048, 2049, 0xffff])
    };
    let mut out = v2(command, family, claimed, &body);
    out.extend_from_slice(b"\x16\x03\x01");
    out
}

fn deep_proxy() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    // v2 lengths at the limits: 0, the accepted maximum, one over, u16::MAX.
    for len in [0u16, 12, 36, 2047, 2048, 2049, 0x7fff, 0xffff] {
        for family in [0x00u8, 0x11, 0x21, 0x31] {
            let body = vec![0xAA; len as usize];
            v.push(v2(0x21, family, len, &body));
            v.push(v2(0x20, family, len, &body[..body.len() / 2]));
        }
    }
    v.push(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"
            .iter()
            .copied()
            .chain(vec![b' '; 1 << 20])
            .collect(),
    );
    v.push(
        b"PROXY UNKNOWN "
            .iter()
            .copied()
            .chain(vec![b'x'; 90])
            .chain(*b"\r\n")
            .collect(),
    );
    v.push(b"PROXY TCP6 ::1 ::1 99999 99999\r\n".to_vec());
    v.push(V2_SIGNATURE.repeat(10_000));
    v
}
