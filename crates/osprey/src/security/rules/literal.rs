//! Literal values beyond strings, integers and booleans: compiled regular expressions
//! and IP networks.

/// A compiled regular expression, compared by its source.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::bytes::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// An IP network: the address as 128 bits (IPv4 mapped into IPv6) and the prefix length
/// counted on those 128 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: u128,
    pub prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `x::y/n` or a bare address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let ip: std::net::IpAddr = addr.parse().ok()?;
        let (bits, max, offset) = match ip {
            std::net::IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 32, 96),
            std::net::IpAddr::V6(v6) => (u128::from(v6), 128, 0),
        };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Cidr {
            addr: bits,
            prefix: len + offset,
        })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let bits = match ip {
            std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            std::net::IpAddr::V6(v6) => u128::from(v6),
        };
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        bits & mask == self.addr & mask
    }
}
