//! The data plane's shared parts: passive port range and PROXY mode's shared data
//! port, the PASV address table, FTPS, the pending-listener budget and the
//! trusted PROXY senders (RFC 959 §4.1.2 PASV, RFC 2428 EPSV, RFC 4217 PROT).

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Config, PortRange};
use crate::datachan::SharedPorts;

/// What data connections of every session share.
pub struct DataPlane {
    /// Parsed `passive.ports`.
    pub passive_ports: Option<PortRange>,
    /// Resolved `passive.advertise` and `passive.advertise_for`, refreshed.
    advertise: std::sync::RwLock<Advertise>,
    /// PROXY mode's shared data port (`passive.proxy_listen`).
    pub shared_ports: Option<Arc<SharedPorts>>,
    /// Parsed `server.proxy_trusted`.
    pub proxy_trusted: Vec<ipnet::IpNet>,
    /// FTPS, when a listener uses it.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// `passive.max_pending` places for pending passive listeners.
    pub passive_slots: Arc<tokio::sync::Semaphore>,
}

impl DataPlane {
    /// Resolves and parses the `[passive]`, `[tls]` and `server.proxy_trusted`
    /// settings; binds nothing (PROXY mode's shared data port is bound by the
    /// server, its port table is made here).
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let advertise = Advertise::resolve(&config.passive)
            .await
            .map_err(anyhow::Error::msg)?;
        let tls = crate::tls::Tls::from_config(&config.tls, config.server.tls)
            .map_err(anyhow::Error::msg)?
            .map(Arc::new);
        let passive_slots = Arc::new(tokio::sync::Semaphore::new(config.passive.max_pending));
        let passive_ports = config.passive.ports;
        let shared_ports = match (&config.passive.proxy_listen, passive_ports) {
            (Some(_), Some(range)) => Some(SharedPorts::new(range)),
            _ => None,
        };
        let proxy_trusted = config.server.proxy_trusted.clone();
        Ok(Self {
            passive_ports,
            advertise: std::sync::RwLock::new(advertise),
            shared_ports,
            proxy_trusted,
            tls,
            passive_slots,
        })
    }

    /// The PASV address for a client at `peer` (`passive.advertise_for`, then
    /// `passive.advertise`); `None`: the address the client connected to.
    pub fn advertised_ip(&self, peer: IpAddr) -> Option<IpAddr> {
        self.advertise
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .for_peer(peer)
    }

    /// Swaps in a freshly resolved address table; true when it changed.
    pub fn set_advertise(&self, fresh: Advertise) -> bool {
        let mut cur = self.advertise.write().unwrap_or_else(|p| p.into_inner());
        if *cur == fresh {
            return false;
        }
        *cur = fresh;
        true
    }
}

/// The PASV address table: per-client-network rules, then the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advertise {
    /// `passive.advertise`, resolved.
    pub default: Option<IpAddr>,
    /// `passive.advertise_for`, resolved, in order.
    pub rules: Vec<(ipnet::IpNet, IpAddr)>,
}

impl Advertise {
    /// Resolves every address and host name of `[passive]`.
    pub async fn resolve(
        cfg: &crate::config::PassiveConfig,
    ) -> Result<Self, crate::config::ConfigError> {
        let default = match &cfg.advertise {
            Some(a) => Some(crate::config::resolve_advertise(a).await?),
            None => None,
        };
        let mut rules = Vec::new();
        for r in &cfg.advertise_for {
            rules.push((r.cidr, crate::config::resolve_advertise(&r.address).await?));
        }
        Ok(Self { default, rules })
    }

    /// The address to announce to a client at `peer`.
    pub fn for_peer(&self, peer: IpAddr) -> Option<IpAddr> {
        let peer = crate::datachan::canonical(peer);
        self.rules
            .iter()
            .find(|(net, _)| net.contains(&peer))
            .map(|(_, ip)| *ip)
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdvertiseRule, PassiveConfig};

    #[tokio::test]
    async fn advertise_rules_first_match_then_default() {
        let cfg = PassiveConfig {
            advertise: Some("203.0.113.7".into()),
            advertise_for: vec![
                AdvertiseRule {
                    cidr: "10.1.0.0/16".parse().unwrap(),
                    address: "10.1.2.3".into(),
                },
                AdvertiseRule {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    address: "localhost".into(),
                },
            ],
            ..Default::default()
        };
        let a = Advertise::resolve(&cfg).await.unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(a.for_peer(ip("10.1.9.9")), Some(ip("10.1.2.3")));
        assert_eq!(a.for_peer(ip("10.200.0.1")), Some(ip("127.0.0.1")));
        assert_eq!(a.for_peer(ip("::ffff:10.1.0.1")), Some(ip("10.1.2.3")));
        assert_eq!(a.for_peer(ip("192.0.2.1")), Some(ip("203.0.113.7")));
        let none = Advertise::resolve(&PassiveConfig::default()).await.unwrap();
        assert_eq!(none.for_peer(ip("192.0.2.1")), None);
        let bad = PassiveConfig {
            advertise: Some("no-such-host.invalid".into()),
            ..Default::default()
        };
        assert!(Advertise::resolve(&bad).await.is_err());
    }
}
