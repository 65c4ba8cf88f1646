//! What makes this process one replica of a fleet: its id and the lease it holds on the
//! streams of its nodes (see the fleet module of `nodes`).

use std::time::Duration;

use crate::error::ConfigError;

/// This replica's id in `node_owners` (default: generated at start).
pub const PANEL_REPLICA_ID: &str = "PANEL_REPLICA_ID";
/// Seconds a replica's hold on a node's stream lasts without renewal (2–60, default 10).
pub const PANEL_LEASE_SECS: &str = "PANEL_LEASE_SECS";

/// This replica in the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// This replica's id: `[A-Za-z0-9._-]`, 1 to 64 characters.
    pub replica_id: String,
    /// How long a hold lasts without renewal; renewed every quarter of it. A node whose
    /// replica died is offline everywhere once it passed.
    pub lease: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            replica_id: generated_id(),
            lease: Duration::from_secs(10),
        }
    }
}

impl FleetConfig {
    /// Reads [`PANEL_REPLICA_ID`] and [`PANEL_LEASE_SECS`] through `get`, pushing problems to
    /// `errors`.
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
        config
    }
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
    }
}
