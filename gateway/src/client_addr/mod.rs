//! The client address of a request, the one place it is decided (rate-limit `ip` keys use it).
//! By default it is the TCP peer and no header is believed. Behind a proxy or load balancer
//! that rewrites the source address, `[client_ip] trusted_proxies` names the proxies' CIDRs:
//! only a request whose peer is one of them has its `X-Forwarded-For` (or `Forwarded`)
//! header read, from the right, skipping hops that are themselves trusted, and the first
//! untrusted address is the client (nginx `real_ip_recursive on`, Envoy
//! `xff_num_trusted_hops`). Everything left of that address was written by the client and is
//! never believed. A malformed entry stops the walk at the last good hop.

use std::fmt;
use std::net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::ParseIntError;
use std::str::FromStr;

use http::HeaderMap;
use serde::Deserialize;
use strum::IntoStaticStr;
use thiserror::Error;

/// `[client_ip]` in the gateway configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpConfig {
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or a bare address) of the proxies whose
    /// forwarding header is believed. Empty (the default): trust nobody, the client is the
    /// TCP peer. Also `STOCKGATE_TRUSTED_PROXIES` (comma separated).
    pub trusted_proxies: Vec<String>,
    /// Which header a trusted proxy writes the client address into.
    pub header: ForwardedHeader,
}

/// The forwarding header read from trusted proxies.
/// In the configuration by its header name (`x-forwarded-for`, `forwarded`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (de facto standard; Azure Application
    /// Gateway, nginx, Envoy, most ingress controllers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, as the configuration spells it.
    fn name(self) -> &'static str {
        self.into()
    }
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix_len) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix_len) == net,
            _ => false,
        }
    }
}

/// Why an entry of `trusted_proxies` is not a CIDR; the text names the entry (config
/// validation puts it after the field's name).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    #[error("{text:?} is not an IP address or CIDR")]
    NotAnAddress {
        text: String,
        #[source]
        source: AddrParseError,
    },
    /// Not a number (the cause), or past the family's width (no cause).
    #[error("{text:?} has a prefix length that is not 0-{max}")]
    PrefixLength {
        text: String,
        max: u8,
        #[source]
        source: Option<ParseIntError>,
    },
    #[error("{text:?} has host bits set (the network is {network}/{prefix_len})")]
    HostBits {
        text: String,
        network: IpAddr,
        prefix_len: u8,
    },
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `addr/len` or a bare address (one host). Host bits set (`10.1.2.3/8`) are refused:
    /// such an entry is almost always a typo for a narrower or a wider network.
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let network =
            canonical(
                addr.parse::<IpAddr>()
                    .map_err(|source| CidrError::NotAnAddress {
                        text: text.to_owned(),
                        source,
                    })?,
            );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len.map(str::parse::<u8>) {
            None => max,
            Some(Ok(len)) if len <= max => len,
            Some(parsed) => {
                return Err(CidrError::PrefixLength {
                    text: text.to_owned(),
                    max,
                    source: parsed.err(),
                });
            }
        };
        let masked = mask(network, prefix_len);
        if masked != network {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                network: masked,
                prefix_len,
            });
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack listener reports for
/// an IPv4 client) is that IPv4 address: one client, one key.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client a limit counts: an IPv4 client is its address; an IPv6 client its network of
/// `ipv6_prefix_len` bits, since one subscriber is handed a whole /64 (or more) and can send
/// from any address in it.
pub fn client_network(ip: IpAddr, ipv6_prefix_len: u8) -> IpAddr {
    match canonical(ip) {
        v6 @ IpAddr::V6(_) => mask(v6, ipv6_prefix_len),
        v4 => v4,
    }
}

fn mask_v4(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(ip);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(ip: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(ip);
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

/// `ip` with every bit past `len` cleared (`len` at most 32 for IPv4, 128 for IPv6).
pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(mask_v4(v4, len.min(32))),
        IpAddr::V6(v6) => IpAddr::V6(mask_v6(v6, len.min(128))),
    }
}

/// Parses `trusted_proxies`; the error names the entry and why (config validation uses it).
pub fn parse_trusted(entries: &[String]) -> Result<Vec<Cidr>, CidrError> {
    entries.iter().map(|e| e.trim().parse()).collect()
}

/// Decides the client address of each request; built once at start.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrs {
    trusted: Vec<Cidr>,
    header: ForwardedHeader,
}

impl ClientAddrs {
    /// From a validated configuration (`Config::validate` parsed the CIDRs already).
    pub fn new(config: &ClientIpConfig) -> Result<Self, CidrError> {
        Ok(ClientAddrs {
            trusted: parse_trusted(&config.trusted_proxies)?,
            header: config.header,
        })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client of a request from `peer` carrying `headers`. `None` only without a peer
    /// address (a Unix socket).
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = canonical(peer?);
        // An untrusted peer's header is whatever the client wrote: never read it.
        if !self.trusts(client) {
            return Some(client);
        }
        let hops = self.hops(headers);
        // Right to left: the rightmost entry was written by the peer (trusted), each further
        // one by the hop before it, as long as that hop is trusted too.
        for hop in hops.iter().rev() {
            let Some(ip) = hop else {
                // Malformed: nothing left of it can be attributed to anyone we trust.
                return Some(client);
            };
            client = *ip;
            if !self.trusts(client) {
                return Some(client);
            }
        }
        // Every hop trusted (or no header): the leftmost one we reached is the client.
        Some(client)
    }

    /// Every hop of the forwarding header lines in order; `None` for an entry that is not an
    /// address (`unknown`, an obfuscated `_node`, garbage, a line that is not text).
    fn hops(&self, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let mut hops = Vec::new();
        // Several header lines are one comma-separated list, in order (RFC 9110 §5.3).
        for line in headers.get_all(self.header.name()) {
            let Ok(line) = line.to_str() else {
                hops.push(None);
                continue;
            };
            for entry in line.split(',') {
                let entry = entry.trim();
                hops.push(match self.header {
                    ForwardedHeader::XForwardedFor => parse_node(entry),
                    ForwardedHeader::Forwarded => forwarded_for(entry).and_then(parse_node),
                });
            }
        }
        hops
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.60;proto=http;by=...`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok
            .then(|| ip.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(|ip| canonical(IpAddr::V6(ip)));
    }
    let (ip, port) = node.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    ip.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests;
