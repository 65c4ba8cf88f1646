//! A node as the contract shows it, for the admin API and `api node list --json` alike.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::db::entities::node;

/// A node as the contract shows it.
pub fn node_json(node: &node::Model, now: DateTime<Utc>) -> serde_json::Value {
    json!({
        "id": node.id,
        "fqdn": node.fqdn,
        "name": node.name,
        "enabled": node.enabled,
        "fingerprint": node.fingerprint,
        "online": node.online,
        "last_seen": node.last_seen.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "cert_not_after": node.cert_not_after.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "ports": node.port_start.zip(node.port_end).map(|(s, e)| format!("{s}-{e}")),
        "renewal": super::lifecycle::renewal_state(node, now),
        "last_renewed_at": node.last_renewed_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "next_fingerprint": node.next_fingerprint,
    })
}
