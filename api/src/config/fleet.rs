//! What makes this process one replica of a fleet: its id, the lease it holds on the
//! streams of its nodes (see the fleet module of `nodes`), and the address at which nodes
//! held by other replicas reach it for file transfers (see `transfers`).

use std::time::Duration;

use crate::error::ConfigError;

/// This replica's id in `node_owners` (default: generated at start).
pub const PANEL_REPLICA_ID: &str = "PANEL_REPLICA_ID";
/// Seconds a replica's hold on a node's stream lasts without renewal (2–60, default 10).
pub const PANEL_LEASE_SECS: &str = "PANEL_LEASE_SECS";
/// `host:port` at which nodes reach this replica's node channel directly (default: the bound
/// `PANEL_GRPC_ADDR` unless it is unspecified, `0.0.0.0`/`::`).
pub const PANEL_GRPC_ADVERTISE: &str = "PANEL_GRPC_ADVERTISE";
/// Longest [`PANEL_GRPC_ADVERTISE`]: a DNS name, a colon and a port.
pub const MAX_ADVERTISE: usize = 253 + 1 + 5;

/// This replica in the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// This replica's id: `[A-Za-z0-9._-]`, 1 to 64 characters.
    pub replica_id: String,
    /// How long a hold lasts without renewal; renewed every quarter of it. A node whose
    /// replica died is offline everywhere once it passed.
    pub lease: Duration,
    /// [`PANEL_GRPC_ADVERTISE`]: `host:port` (a DNS name, an IPv4 address or a bracketed
    /// IPv6 address; the panel's server certificate must name that host). `None`: the bound
    /// node-channel address when it is not unspecified.
    pub advertise: Option<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            replica_id: generated_id(),
            lease: Duration::from_secs(10),
            advertise: None,
        }
    }
}

impl FleetConfig {
    /// Reads [`PANEL_REPLICA_ID`], [`PANEL_LEASE_SECS`] and [`PANEL_GRPC_ADVERTISE`] through
    /// `get`, pushing problems to `errors`.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) -> FleetConfig {
        let mut config = FleetConfig::default();
        if let Some(id) = get(PANEL_REPLICA_ID) {
            let id = id.trim();
            if valid_id(id) {
                id.clone_into(&mut config.replica_id);
            } else {
                errors.push(ConfigError::new(
                    PANEL_REPLICA_ID,
                    "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
                ));
            }
        }
        if let Some(raw) = get(PANEL_LEASE_SECS) {
            match raw.trim().parse::<u64>() {
                Ok(secs @ 2..=60) => config.lease = Duration::from_secs(secs),
                _ => errors.push(ConfigError::new(
                    PANEL_LEASE_SECS,
                    format!("{raw:?} is not a number of seconds from 2 to 60"),
                )),
            }
        }
        if let Some(raw) = get(PANEL_GRPC_ADVERTISE) {
            let raw = raw.trim();
            if valid_advertise(raw) {
                config.advertise = Some(raw.to_owned());
            } else {
                errors.push(ConfigError::new(
                    PANEL_GRPC_ADVERTISE,
                    format!(
                        "must be host:port (a DNS name, an IPv4 address or [an IPv6 address], \
                         a port from 1 to 65535, at most {MAX_ADVERTISE} characters)"
                    ),
                ));
            }
        }
        config
    }
}

/// Whether `addr` is `host:port` as [`PANEL_GRPC_ADVERTISE`] takes it.
pub fn valid_advertise(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        }
    };
    addr.len() <= MAX_ADVERTISE && port_ok && host_ok
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `r-` and 12 random hex digits: unique enough among the replicas of one database.
fn generated_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("r-{}", &uuid[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_leases_are_checked() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let mut errors = Vec::new();
        let config = FleetConfig::from_lookup(
            &lookup(&[(PANEL_REPLICA_ID, "eu-1"), (PANEL_LEASE_SECS, "4")]),
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(config.replica_id, "eu-1");
        assert_eq!(config.lease, Duration::from_secs(4));
        let config = FleetConfig::from_lookup(
            &lookup(&[(PANEL_REPLICA_ID, "a b"), (PANEL_LEASE_SECS, "1")]),
            &mut errors,
        );
        assert_eq!(errors.len(), 2);
        assert!(config.replica_id.starts_with("r-"));
        assert_ne!(FleetConfig::default().replica_id, config.replica_id);
        assert_eq!(config.advertise, None);
    }

    #[test]
    fn advertised_addresses_are_host_and_port() {
        for good in ["panel-2.example.com:3001", "10.0.0.2:3001", "[::1]:3001"] {
            assert!(valid_advertise(good), "{good}");
        }
        let long = format!("{}:3001", "a".repeat(MAX_ADVERTISE));
        for bad in [
            "",
            "panel",
            "panel:",
            "panel:0",
            "panel:70000",
            ":3001",
            "::1:3001",
            "[zz]:1",
            "a b:1",
            "a/b:1",
            &long,
        ] {
            assert!(!valid_advertise(bad), "{bad}");
        }
        let mut errors = Vec::new();
        let get = |name: &str| (name == PANEL_GRPC_ADVERTISE).then(|| "[::1]:3001".to_owned());
        let config = FleetConfig::from_lookup(&get, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(config.advertise.as_deref(), Some("[::1]:3001"));
        let get = |name: &str| (name == PANEL_GRPC_ADVERTISE).then(|| "nope".to_owned());
        FleetConfig::from_lookup(&get, &mut errors);
        assert_eq!(errors.len(), 1);
    }
}
