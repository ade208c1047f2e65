//! Weave peer names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::WeaveError;

/// A Weave peer name: 48 bits written like a MAC address (`00:00:00:00:00:05`).
///
/// Peer names are the identity that owns IPAM ranges. Forced removal (`rmpeer`) in this crate
/// only ever takes a `PeerName`, never a nickname: nicknames are host names, which cloud
/// autoscaling reuses, and `DELETE /peer/{id}` resolves a nickname through a map whose lookup
/// is ambiguous when two peers share one (`weave-net.md` §4.5, weaveworks/weave#2797, #3384).
///
/// Parsing accepts the full form and the `::` short forms of `mesh:peer_name_mac.go`
/// (`::1`, `1::`, `1::1`); [`Display`](fmt::Display) always prints the canonical full form in
/// lower case, which is what the router prints in `/status/ipam` and `/report`.
///
/// ```
/// use fleetscale_weave::PeerName;
/// let p: PeerName = "::5".parse().unwrap();
/// assert_eq!(p.to_string(), "00:00:00:00:00:05");
/// assert!("dyn5".parse::<PeerName>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerName(u64);

impl PeerName {
    /// The largest peer name (48 bits).
    pub const MAX: u64 = (1 << 48) - 1;

    /// A peer name from its 48-bit value; `None` if it does not fit in 48 bits or is zero
    /// (`00:00:00:00:00:00` is mesh's `UnknownPeerName` sentinel).
    pub fn from_u64(v: u64) -> Option<PeerName> {
        (v != 0 && v <= Self::MAX).then_some(PeerName(v))
    }

    /// The 48-bit value.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

fn parse_groups(part: &str, input: &str) -> Result<Vec<u8>, WeaveError> {
    if part.is_empty() {
        return Ok(Vec::new());
    }
    part.split(':')
        .map(|g| {
            if g.is_empty() || g.len() > 2 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(WeaveError::InvalidPeerName {
                    input: input.to_string(),
                    message: format!("{g:?} is not a hex octet"),
                });
            }
            u8::from_str_radix(g, 16).map_err(|e| WeaveError::InvalidPeerName {
                input: input.to_string(),
                message: e.to_string(),
            })
        })
        .collect()
}

impl FromStr for PeerName {
    type Err = WeaveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |message: &str| WeaveError::InvalidPeerName {
            input: s.to_string(),
            message: message.to_string(),
        };
        let octets: Vec<u8> = match s.split_once("::") {
            Some((head, tail)) => {
                if tail.contains("::") {
                    return Err(bad("more than one `::`"));
                }
                let head = parse_groups(head, s)?;
                let tail = parse_groups(tail, s)?;
                if head.len() + tail.len() > 5 {
                    return Err(bad("too many octets around `::`"));
                }
                let mut all = head;
                all.resize(6 - tail.len(), 0);
                all.extend(tail);
                all
            }
            None => {
                let all = parse_groups(s, s)?;
                if all.len() != 6 {
                    return Err(bad("expected six octets"));
                }
                all
            }
        };
        let v = octets
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        PeerName::from_u64(v).ok_or_else(|| bad("00:00:00:00:00:00 is the unknown-peer sentinel"))
    }
}

impl Serialize for PeerName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_short_forms() {
        let full: PeerName = "00:00:00:00:00:05".parse().unwrap();
        assert_eq!(full.as_u64(), 5);
        assert_eq!("::5".parse::<PeerName>().unwrap(), full);
        assert_eq!(
            "1::".parse::<PeerName>().unwrap().to_string(),
            "01:00:00:00:00:00"
        );
        assert_eq!(
            "1::1".parse::<PeerName>().unwrap().to_string(),
            "01:00:00:00:00:01"
        );
        assert_eq!(
            "22:67:0F:db:d8:a2".parse::<PeerName>().unwrap().to_string(),
            "22:67:0f:db:d8:a2"
        );
    }

    #[test]
    fn rejects_nicknames_and_garbage() {
        for bad in [
            "dyn5",
            "",
            "00:00:00:00:00",
            "00:00:00:00:00:00:01",
            "::",
            "00:00:00:00:00:00",
            "1::2::3",
            "001:00:00:00:00:01",
            "fixed1",
        ] {
            assert!(bad.parse::<PeerName>().is_err(), "{bad} accepted");
        }
    }
}
