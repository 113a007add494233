//! Just enough STUN (RFC 5389) to answer the binding requests that RFC 5626 clients
//! send as UDP keep-alives on the SIP port.

use std::net::{IpAddr, SocketAddr};

const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// True for a STUN binding request (method 0x001, class request).
pub fn is_binding_request(d: &[u8]) -> bool {
    d.len() >= 20 && d[0] == 0x00 && d[1] == 0x01 && d[4..8] == COOKIE && d.len().is_multiple_of(4)
}

/// The binding success response carrying XOR-MAPPED-ADDRESS for `remote`.
pub fn binding_response(req: &[u8], remote: SocketAddr) -> Option<Vec<u8>> {
    let txid = req.get(8..20)?;
    let mut attr = Vec::with_capacity(24);
    attr.extend_from_slice(&[0x00, 0x20]);
    let port = remote.port() ^ 0x2112;
    match remote.ip() {
        IpAddr::V4(ip) => {
            attr.extend_from_slice(&8u16.to_be_bytes());
            attr.extend_from_slice(&[0, 0x01]);
            attr.extend_from_slice(&port.to_be_bytes());
            for (o, c) in ip.octets().iter().zip(COOKIE) {
                attr.push(o ^ c);
            }
        }
        IpAddr::V6(ip) => {
            attr.extend_from_slice(&20u16.to_be_bytes());
            attr.extend_from_slice(&[0, 0x02]);
            attr.extend_from_slice(&port.to_be_bytes());
            let key: Vec<u8> = COOKIE.iter().chain(txid.iter()).copied().collect();
            for (o, k) in ip.octets().iter().zip(key) {
                attr.push(o ^ k);
            }
        }
    }
    let mut out = Vec::with_capacity(20 + attr.len());
    out.extend_from_slice(&[0x01, 0x01]);
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&COOKIE);
    out.extend_from_slice(txid);
    out.extend_from_slice(&attr);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_binding_request() {
        let mut req = vec![0x00, 0x01, 0x00, 0x00];
        req.extend_from_slice(&COOKIE);
        req.extend_from_slice(&[7; 12]);
        assert!(is_binding_request(&req));
        let r = binding_response(&req, "127.0.0.1:5999".parse().unwrap()).unwrap();
        assert_eq!(&r[0..2], &[0x01, 0x01]);
        assert_eq!(&r[8..20], &[7; 12]);
        assert_eq!(u16::from_be_bytes([r[26], r[27]]) ^ 0x2112, 5999);
        assert_eq!(r[28] ^ 0x21, 127);
        assert!(!is_binding_request(b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
    }
}
