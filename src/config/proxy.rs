//! `[proxy]`: the domains served here, the networks trusted, the flow-token secret;
//! and [`IpNet`], the trusted-network type (CIDR matching by the `ipnet` crate).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fields::{self, Parse};
use super::ConfigError;

/// An IP network in CIDR form, e.g. `127.0.0.0/8`, that also matches the IPv4-mapped
/// IPv6 form of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet(ipnet::IpNet);

/// `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySettings {
    /// Domains served locally (lower case). Empty: every domain is local.
    #[serde(deserialize_with = "fields::list")]
    pub domains: Vec<String>,
    /// Sources allowed to send requests toward the upstream and to assert identity.
    #[serde(deserialize_with = "fields::list")]
    pub trusted_networks: Vec<IpNet>,
    /// Secret for flow tokens (written in hex); `None`: generated once and kept in the
    /// store.
    #[serde(with = "hex_secret")]
    pub flow_token_secret: Option<Vec<u8>>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            trusted_networks: vec![
                IpNet::host(IpAddr::from([127, 0, 0, 0])).with_prefix(8),
                IpNet::host(IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1])),
            ],
            flow_token_secret: None,
        }
    }
}

impl ProxySettings {
    pub(super) fn validate(mut self) -> Result<Self, ConfigError> {
        self.domains = fields::hosts("proxy.domains", &self.domains)?;
        if self
            .flow_token_secret
            .as_ref()
            .is_some_and(|s| s.len() < 16)
        {
            return Err(ConfigError::invalid(
                "proxy.flow_token_secret",
                "",
                "too short: at least 16 bytes (32 hex digits) are needed",
            ));
        }
        Ok(self)
    }
}

/// A secret in hex, `""` when not set.
mod hex_secret {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match String::deserialize(d)?.trim() {
            "" => Ok(None),
            s => hex::decode(s).map(Some).map_err(|e| {
                // the error repeats no digit of the secret
                serde::de::Error::custom(match e {
                    hex::FromHexError::OddLength => "odd number of hex digits",
                    _ => "not hexadecimal",
                })
            }),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.as_deref().map(hex::encode).unwrap_or_default())
    }
}

impl IpNet {
    /// The network of one address (/32 or /128).
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet(ipnet::IpNet::from(addr))
    }

    fn with_prefix(self, prefix: u8) -> IpNet {
        IpNet(
            ipnet::IpNet::new(self.0.addr(), prefix)
                .map(|n| n.trunc())
                .unwrap_or(self.0),
        )
    }

    /// Network address.
    pub fn addr(&self) -> IpAddr {
        self.0.network()
    }

    /// Prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Parses `addr/prefix` or a bare address (a single host: /32 or /128). Host bits
    /// below the prefix are cleared, so `10.1.2.3/8` means `10.0.0.0/8`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr_part = addr_part
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_part);
        let addr: IpAddr = addr_part
            .parse()
            .map_err(|_| format!("{addr_part:?} is not an IP address"))?;
        let host = IpNet::host(addr);
        let max = host.0.max_prefix_len();
        match prefix_part {
            None => Ok(host),
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .map(|p| host.with_prefix(p))
                .ok_or_else(|| format!("prefix length {p:?} is not a number from 0 to {max}")),
        }
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as
    /// seen on dual-stack sockets) match IPv4 networks, and IPv4 addresses match
    /// networks written in the mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (ipnet::IpNet::V4(net), IpAddr::V6(v6)) => {
                v6.to_ipv4_mapped().is_some_and(|v4| net.contains(&v4))
            }
            (ipnet::IpNet::V6(net), IpAddr::V4(v4)) => net.contains(&v4.to_ipv6_mapped()),
            (net, ip) => net.contains(&ip),
        }
    }
}

impl Parse for IpNet {
    fn parse_value(s: &str) -> Result<Self, String> {
        IpNet::parse(s)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::one(d)
    }
}
