//! `nodes`: the Wings nodes the panel knows. The id is the CN of the node's certificate.

use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One node.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    /// The node id, equal to the CN of its certificate.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The node's fully qualified domain name.
    pub fqdn: String,
    /// A display name.
    pub name: String,
    /// Disabled nodes are refused on the node channel.
    pub enabled: bool,
    /// SHA-256 of the pinned certificate (lowercase hex); `None` until the first connection.
    pub fingerprint: Option<String>,
    /// The pinned certificate's expiry.
    pub cert_not_after: Option<DateTimeUtc>,
    /// When the node was last heard from.
    pub last_seen: Option<DateTimeUtc>,
    /// Whether a live, authenticated stream is open.
    pub online: bool,
    /// When the node was added.
    pub created_at: DateTimeUtc,
    /// First port servers on this node may get (with `port_end`); `None`: no ports.
    pub port_start: Option<i32>,
    /// Last port servers on this node may get.
    pub port_end: Option<i32>,
    /// During a renewal: the new certificate's fingerprint, admitted beside the pinned one
    /// until its first admission promotes it.
    pub next_fingerprint: Option<String>,
    /// Where the certificate's renewal stands.
    pub renewal: Renewal,
    /// The error code of the last failed renewal.
    pub renewal_error: Option<String>,
    /// When the panel last issued this node a certificate.
    pub last_renewed_at: Option<DateTimeUtc>,
}

/// Where a node's certificate renewal stands (`due` is not stored: it is `ok` past two thirds
/// of the certificate's lifetime, see `nodes::lifecycle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Renewal {
    /// Nothing pending.
    #[sea_orm(string_value = "ok")]
    Ok,
    /// A certificate was issued; the node has not connected with it yet.
    #[sea_orm(string_value = "renewing")]
    Renewing,
    /// The last attempt failed (see `renewal_error`).
    #[sea_orm(string_value = "failed")]
    Failed,
    /// An operator asked for a renewal now (`api node rotate`); shown as `due` until the
    /// panel holding the node's stream passes it on.
    #[sea_orm(string_value = "requested")]
    Requested,
}

/// No relations yet.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
