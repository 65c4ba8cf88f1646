//! A node as the contract shows it, for the admin API and `api node list --json` alike.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::entities::node;

/// A node as the contract shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Node {
    /// The CN of the node's certificate.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub id: String,
    /// Its host name.
    pub fqdn: String,
    /// Its name, for people.
    pub name: String,
    /// Whether it may connect.
    pub enabled: bool,
    /// Lowercase hex SHA-256 of the pinned certificate.
    #[schema(required = true)]
    pub fingerprint: Option<String>,
    /// Whether it is connected.
    pub online: bool,
    /// When it was last heard from.
    #[schema(required = true, format = DateTime)]
    pub last_seen: Option<String>,
    /// When its certificate expires.
    #[schema(required = true, format = DateTime)]
    pub cert_not_after: Option<String>,
    /// The ports servers get, e.g. `30000-30099`.
    #[schema(required = true, example = "30000-30099")]
    pub ports: Option<String>,
    /// `ok`, `due` (two thirds of the lifetime passed), `renewing` or `failed: <code>`.
    #[schema(pattern = "^(ok|due|renewing|failed: [a-z_]+)$")]
    pub renewal: String,
    /// When it last renewed its certificate.
    #[schema(required = true, format = DateTime)]
    pub last_renewed_at: Option<String>,
    /// During a renewal, the new certificate's fingerprint, admitted beside the pinned one.
    #[schema(required = true)]
    pub next_fingerprint: Option<String>,
}

impl Node {
    /// `node` at `now`, `online` as its row says.
    pub fn new(node: &node::Model, now: DateTime<Utc>) -> Node {
        let time = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        Node {
            id: node.id.clone(),
            fqdn: node.fqdn.clone(),
            name: node.name.clone(),
            enabled: node.enabled,
            fingerprint: node.fingerprint.clone(),
            online: node.online,
            last_seen: time(node.last_seen),
            cert_not_after: time(node.cert_not_after),
            ports: node
                .port_start
                .zip(node.port_end)
                .map(|(s, e)| format!("{s}-{e}")),
            renewal: super::lifecycle::renewal_state(node, now),
            last_renewed_at: time(node.last_renewed_at),
            next_fingerprint: node.next_fingerprint.clone(),
        }
    }
}
