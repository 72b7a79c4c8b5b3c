//! The passive announcement: which address and port a client is told in 227/229, after the
//! split-horizon rules and the NAT's port translation (`[passive]`).

use std::net::IpAddr;

use crate::config::PassiveConfig;
use crate::net::canonical_ip;

/// What clients are told to connect to; built once from `[passive]`.
#[derive(Debug, Clone)]
pub struct Announcement {
    passive: PassiveConfig,
}

impl Announcement {
    pub fn new(passive: &PassiveConfig) -> Announcement {
        Announcement {
            passive: passive.clone(),
        }
    }

    /// The address for `client`: the first split-horizon rule whose networks contain it,
    /// else `public_address`, else `reached_at` (where the client's control connection
    /// arrived, which is right when there is no NAT in between).
    pub fn address_for(&self, client: IpAddr, reached_at: IpAddr) -> IpAddr {
        // IPv4 clients on a dual-stack socket show up as ::ffff:a.b.c.d.
        let client = canonical_ip(client);
        self.passive
            .public_address_by_client
            .iter()
            .find(|rule| rule.clients.iter().any(|net| net.contains(&client)))
            .map(|rule| rule.address)
            .or(self.passive.public_address)
            .unwrap_or_else(|| canonical_ip(reached_at))
    }

    /// The port to announce for the pool's port `bound`: its counterpart in
    /// `advertised_ports` when the NAT translates ports, else `bound` itself.
    pub fn port_for(&self, bound: u16) -> u16 {
        let Some(offset) = self.passive.ports.offset_of(bound) else {
            return bound;
        };
        match self.passive.advertised_ports {
            Some(advertised) => advertised.port_at(offset).unwrap_or(bound),
            None => bound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PortRange, SplitHorizonRule};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn translated() -> Announcement {
        Announcement::new(&PassiveConfig {
            ports: PortRange {
                start: 30000,
                end: 30009,
            },
            advertised_ports: Some(PortRange {
                start: 50000,
                end: 50009,
            }),
            public_address: Some(ip("203.0.113.10")),
            public_address_by_client: vec![SplitHorizonRule {
                clients: vec!["192.168.0.0/16".parse().unwrap()],
                address: ip("192.168.1.10"),
            }],
            ..PassiveConfig::default()
        })
    }

    #[test]
    fn ports_follow_the_nat_translation() {
        let announce = translated();
        assert_eq!(announce.port_for(30000), 50000);
        assert_eq!(announce.port_for(30009), 50009);
        assert_eq!(announce.port_for(30010), 30010);
        let plain = Announcement::new(&PassiveConfig::default());
        assert_eq!(plain.port_for(30050), 30050);
    }

    #[test]
    fn split_horizon_then_public_address_then_where_the_client_came_in() {
        let announce = translated();
        let reached = ip("10.0.0.2");
        assert_eq!(
            announce.address_for(ip("198.51.100.7"), reached),
            ip("203.0.113.10")
        );
        assert_eq!(
            announce.address_for(ip("192.168.5.5"), reached),
            ip("192.168.1.10")
        );
        assert_eq!(
            announce.address_for(ip("::ffff:192.168.5.5"), reached),
            ip("192.168.1.10")
        );
        let plain = Announcement::new(&PassiveConfig::default());
        assert_eq!(
            plain.address_for(ip("192.168.5.5"), ip("::ffff:10.0.0.2")),
            reached
        );
    }
}
