//! The inclusive port range type (`"30000-30099"`, `"30000"` or a bare number) and its parsing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Inclusive port range, written "30000-30099" or "30000" in TOML/env (serde as that string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// Why a text or a pair of ports is not a valid [`PortRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("invalid port range {0:?}: expected \"PORT\" or \"START-END\" with ports from 1 to 65535, e.g. \"30000-30099\"")]
    Syntax(String),
    #[error("invalid port range {start}-{end}: port 0 cannot be used, ports start at 1")]
    ZeroPort { start: u16, end: u16 },
    #[error("invalid port range {start}-{end}: the start is greater than the end")]
    Reversed { start: u16, end: u16 },
}

impl PortRange {
    /// A checked range: `1 <= start <= end`.
    pub fn new(start: u16, end: u16) -> Result<Self, PortRangeError> {
        if start == 0 {
            return Err(PortRangeError::ZeroPort { start, end });
        }
        if start > end {
            return Err(PortRangeError::Reversed { start, end });
        }
        Ok(Self { start, end })
    }

    /// Number of ports (0 for a reversed range built by hand).
    pub fn len(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            usize::from(self.end - self.start) + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }

    /// Position of `port` in the range (0 for `start`).
    pub fn offset_of(&self, port: u16) -> Option<usize> {
        self.contains(port).then(|| usize::from(port - self.start))
    }

    /// The port at position `offset` (inverse of [`PortRange::offset_of`]).
    pub fn port_at(&self, offset: usize) -> Option<u16> {
        let port = usize::from(self.start).checked_add(offset)?;
        u16::try_from(port).ok().filter(|port| self.contains(*port))
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let port = |part: &str| {
            part.trim()
                .parse::<u16>()
                .map_err(|_| PortRangeError::Syntax(text.to_string()))
        };
        let (start, end) = match text.split_once('-') {
            Some((start, end)) => (port(start)?, port(end)?),
            None => (port(text)?, port(text)?),
        };
        Self::new(start, end)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortRangeVisitor)
    }
}

/// Accepts a string, and also a bare integer: `ports = 30000` in TOML and
/// `FTPFRONT_PASSIVE__PORTS=30000` (which the env parser turns into a number).
struct PortRangeVisitor;

impl serde::de::Visitor<'_> for PortRangeVisitor {
    type Value = PortRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port range such as \"30000-30099\" or a single port")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PortRange, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, port: u64) -> Result<PortRange, E> {
        let single = u16::try_from(port)
            .map_err(|_| PortRangeError::Syntax(port.to_string()))
            .and_then(|port| PortRange::new(port, port));
        single.map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, port: i64) -> Result<PortRange, E> {
        match u64::try_from(port) {
            Ok(port) => self.visit_u64(port),
            Err(_) => Err(E::custom(PortRangeError::Syntax(port.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn port_range_parses_and_formats() {
        let range: PortRange = "30000-30099".parse().unwrap();
        assert_eq!(
            range,
            PortRange {
                start: 30000,
                end: 30099
            }
        );
        assert_eq!(range.to_string(), "30000-30099");
        assert_eq!(range.len(), 100);
        assert!(!range.is_empty());
        assert!(range.contains(30000) && range.contains(30099));
        assert!(!range.contains(29999) && !range.contains(30100));
        assert_eq!(range.iter().count(), 100);
        assert_eq!(range.iter().last(), Some(30099));
        assert_eq!(range.offset_of(30001), Some(1));
        assert_eq!(range.port_at(99), Some(30099));
        assert_eq!(range.port_at(100), None);

        let single: PortRange = "65535".parse().unwrap();
        assert_eq!(
            single,
            PortRange {
                start: 65535,
                end: 65535
            }
        );
        assert_eq!(single.len(), 1);
        assert_eq!(single.iter().collect::<Vec<_>>(), vec![65535]);
        assert_eq!(single.to_string(), "65535-65535");
        assert_eq!(single.port_at(1), None);

        assert_eq!(
            " 1-2".parse::<PortRange>().unwrap(),
            PortRange { start: 1, end: 2 }
        );
        assert_eq!(
            "1 - 2".parse::<PortRange>().unwrap(),
            PortRange { start: 1, end: 2 }
        );
        assert_eq!("1-65535".parse::<PortRange>().unwrap().len(), 65535);
    }

    #[test]
    fn port_range_rejects_bad_input() {
        assert_eq!(
            "0-5".parse::<PortRange>(),
            Err(PortRangeError::ZeroPort { start: 0, end: 5 })
        );
        assert_eq!(
            "0".parse::<PortRange>(),
            Err(PortRangeError::ZeroPort { start: 0, end: 0 })
        );
        assert_eq!(
            "10-5".parse::<PortRange>(),
            Err(PortRangeError::Reversed { start: 10, end: 5 })
        );
        for bad in [
            "a-b", "", "-", "-5", "5-", "1-2-3", "65536", "1-65536", "x", "1,2",
        ] {
            let error = bad.parse::<PortRange>().unwrap_err();
            assert_eq!(error, PortRangeError::Syntax(bad.to_string()), "{bad:?}");
        }
        let message = "10-5".parse::<PortRange>().unwrap_err().to_string();
        assert!(
            message.contains("10-5") && message.contains("greater"),
            "{message}"
        );
    }

    #[test]
    fn port_range_hand_built_reversed_is_empty() {
        let reversed = PortRange { start: 10, end: 5 };
        assert_eq!(reversed.len(), 0);
        assert!(reversed.is_empty());
        assert_eq!(reversed.iter().count(), 0);
        assert!(!reversed.contains(7));
    }

    #[test]
    fn port_range_bad_value_in_file_names_key() {
        assert_error(
            "[passive]\nports = \"10-5\"\n",
            "passive.ports",
            "greater than the end",
        );
        assert_error("[passive]\nports = \"a-b\"\n", "passive.ports", "START-END");
        assert_error("[passive]\nports = 0\n", "passive.ports", "port 0");
        assert_error("[passive]\nports = 70000\n", "passive.ports", "START-END");
        assert_error("[passive]\nports = -1\n", "passive.ports", "START-END");
        assert_error("[passive]\nports = true\n", "passive.ports", "port range");
    }
}
