//! Database operations on nodes, including the atomic first-connection pin.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};

use super::access::{NodeAccess, Verdict};
use crate::Error;
use crate::db::entities::node::{self, Column, Entity as Node, Model};

/// Adds a node; its id must be a valid node id and unused.
pub async fn add(
    db: &DatabaseConnection,
    id: &str,
    fqdn: &str,
    name: Option<&str>,
) -> Result<Model, Error> {
    security::pki::validate_node_id(id).map_err(|e| Error::Invalid(e.to_string()))?;
    if fqdn.is_empty()
        || fqdn.len() > 253
        || fqdn.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid(format!("invalid fqdn {fqdn:?}")));
    }
    if Node::find_by_id(id).one(db).await?.is_some() {
        return Err(Error::Conflict(format!("node {id} already exists")));
    }
    let model = node::ActiveModel {
        id: Set(id.to_owned()),
        fqdn: Set(fqdn.to_owned()),
        name: Set(name.unwrap_or(id).to_owned()),
        enabled: Set(true),
        fingerprint: Set(None),
        cert_not_after: Set(None),
        last_seen: Set(None),
        online: Set(false),
        created_at: Set(Utc::now()),
        port_start: Set(None),
        port_end: Set(None),
        next_fingerprint: Set(None),
        renewal: Set(node::Renewal::Ok),
        renewal_error: Set(None),
        last_renewed_at: Set(None),
    }
    .insert(db)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            Error::Conflict(format!("node {id} already exists"))
        }
        _ => Error::Db(e),
    })?;
    Ok(model)
}

/// Parses a port range like `30000-30099` (at most 10,000 ports, 1024–65535).
pub fn parse_ports(range: &str) -> Result<(u16, u16), Error> {
    let bad = || {
        Error::Invalid(format!(
            "ports {range:?} must be like 30000-30099, within 1024-65535"
        ))
    };
    let (start, end) = range.trim().split_once('-').ok_or_else(bad)?;
    let start: u16 = start.trim().parse().map_err(|_| bad())?;
    let end: u16 = end.trim().parse().map_err(|_| bad())?;
    if start < 1024 || end < start || end - start >= 10_000 {
        return Err(bad());
    }
    Ok((start, end))
}

/// Sets the range of ports the node's servers get.
pub async fn set_ports(
    db: &DatabaseConnection,
    id: &str,
    (start, end): (u16, u16),
) -> Result<Model, Error> {
    update_one(db, id, Column::PortStart, Expr::value(i32::from(start))).await?;
    update_one(db, id, Column::PortEnd, Expr::value(i32::from(end))).await
}

/// Every node, by id.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<Model>, Error> {
    Ok(Node::find().order_by_asc(Column::Id).all(db).await?)
}

/// One page of nodes by id; only enabled ones when `enabled_only`.
pub async fn page(
    db: &DatabaseConnection,
    enabled_only: bool,
    query: &crate::pagination::PageQuery,
) -> Result<crate::pagination::Page<Model>, Error> {
    let mut select = Node::find();
    if enabled_only {
        select = select.filter(Column::Enabled.eq(true));
    }
    crate::pagination::fetch(db, select, Column::Id, sea_orm::Order::Asc, query, |n| {
        n.id.clone()
    })
    .await
}

/// One node.
pub async fn get(db: &DatabaseConnection, id: &str) -> Result<Option<Model>, Error> {
    Ok(Node::find_by_id(id).one(db).await?)
}

/// The nodes among `ids` that exist.
pub async fn get_many(db: &DatabaseConnection, ids: &[&str]) -> Result<Vec<Model>, Error> {
    Ok(Node::find()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

/// Enables or disables a node. A running panel drops a disabled node's stream (see `watch`);
/// disabling also deletes the node's join tokens.
pub async fn set_enabled(db: &DatabaseConnection, id: &str, enabled: bool) -> Result<Model, Error> {
    if !enabled {
        // A disabled node keeps no renewal in flight either.
        Node::update_many()
            .col_expr(Column::NextFingerprint, Expr::value(Option::<String>::None))
            .filter(Column::Id.eq(id))
            .exec(db)
            .await?;
    }
    let node = update_one(db, id, Column::Enabled, Expr::value(enabled)).await?;
    if !enabled {
        super::enroll::revoke_tokens(db, id).await?;
    }
    Ok(node)
}

/// Forgets the pinned fingerprint, and a renewal's next pin with it (a certificate renewed by
/// whoever held the old key must not outlive the reset): the next valid certificate for this
/// node is pinned.
pub async fn reset_fingerprint(db: &DatabaseConnection, id: &str) -> Result<Model, Error> {
    Node::update_many()
        .col_expr(Column::NextFingerprint, Expr::value(Option::<String>::None))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    update_one(
        db,
        id,
        Column::Fingerprint,
        Expr::value(Option::<String>::None),
    )
    .await
}

async fn update_one(
    db: &DatabaseConnection,
    id: &str,
    column: Column,
    value: sea_orm::sea_query::SimpleExpr,
) -> Result<Model, Error> {
    let result = Node::update_many()
        .col_expr(column, value)
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        return Err(Error::NotFound(format!("node {id}")));
    }
    get(db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("node {id}")))
}

/// Why a node's certificate is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No node has this id.
    UnknownNode,
    /// The node is disabled.
    Disabled,
    /// Another certificate is pinned for this node.
    FingerprintMismatch,
    /// No certificate is pinned any more: the connection was admitted before a reset.
    FingerprintReset,
}

impl Refusal {
    /// The reason as it appears in audit rows, metrics and the gRPC status.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownNode => "unknown_node",
            Refusal::Disabled => "node_disabled",
            Refusal::FingerprintMismatch => "fingerprint_mismatch",
            Refusal::FingerprintReset => "fingerprint_reset",
        }
    }
}

/// How a node's certificate was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The fingerprint equals the pinned one.
    Matched,
    /// No fingerprint was pinned; this one is pinned now.
    Pinned,
    /// The fingerprint is the node's next pin (a renewal): admitted beside the current one,
    /// promoted once a stream is welcomed on it (`renew::promote`).
    Next,
}

/// Admits a certificate for node `id` on the database (see
/// [`super::access::AccessCache::admit`] for the cached way): the node must exist and be
/// enabled, and the fingerprint must equal the pinned one — or, when none is pinned, it is
/// pinned now with one conditional `UPDATE … WHERE fingerprint IS NULL`, so of two racing
/// first connections exactly one wins.
pub async fn admit(
    db: &DatabaseConnection,
    id: &str,
    fingerprint: &str,
    cert_not_after: DateTime<Utc>,
) -> Result<Result<Admission, Refusal>, Error> {
    let Some(row) = get(db, id).await? else {
        return Ok(Err(Refusal::UnknownNode));
    };
    match NodeAccess::from(&row).judge(fingerprint) {
        Verdict::Matched => {
            // The expiry only changes with the certificate; skip the write on reconnects.
            if row.cert_not_after != Some(cert_not_after) {
                set_expiry(db, id, fingerprint, cert_not_after).await?;
            }
            Ok(Ok(Admission::Matched))
        }
        Verdict::Next => Ok(Ok(Admission::Next)),
        Verdict::Refused(refusal) => Ok(Err(refusal)),
        Verdict::Unpinned => {
            let pinned = Node::update_many()
                .col_expr(Column::Fingerprint, Expr::value(fingerprint))
                .col_expr(Column::CertNotAfter, Expr::value(cert_not_after))
                .filter(Column::Id.eq(id))
                .filter(Column::Enabled.eq(true))
                .filter(Column::Fingerprint.is_null())
                .exec(db)
                .await?;
            if pinned.rows_affected == 1 {
                return Ok(Ok(Admission::Pinned));
            }
            // Lost a race (or the node changed meanwhile): decide on the row as it is now.
            Ok(match get(db, id).await? {
                None => Err(Refusal::UnknownNode),
                Some(row) => match NodeAccess::from(&row).judge(fingerprint) {
                    Verdict::Matched => Ok(Admission::Matched),
                    Verdict::Next | Verdict::Unpinned => Err(Refusal::FingerprintMismatch),
                    Verdict::Refused(refusal) => Err(refusal),
                },
            })
        }
    }
}

/// Records the expiry of the pinned certificate, if `fingerprint` is still the pinned one.
pub async fn set_expiry(
    db: &DatabaseConnection,
    id: &str,
    fingerprint: &str,
    cert_not_after: DateTime<Utc>,
) -> Result<(), Error> {
    Node::update_many()
        .col_expr(Column::CertNotAfter, Expr::value(cert_not_after))
        .filter(Column::Id.eq(id))
        .filter(Column::Fingerprint.eq(fingerprint))
        .exec(db)
        .await?;
    Ok(())
}

/// Checks again on the database that a connection admitted earlier with `fingerprint` may
/// still speak for node `id` (when it opens a stream): the node exists, is enabled and has
/// exactly this fingerprint pinned (or as its next pin, during a renewal). Never pins: a
/// reset must be followed by a new connection.
pub async fn still_admitted(
    db: &DatabaseConnection,
    id: &str,
    fingerprint: &str,
) -> Result<Result<(), Refusal>, Error> {
    Ok(match get(db, id).await? {
        None => Err(Refusal::UnknownNode),
        Some(row) => still(&NodeAccess::from(&row), fingerprint),
    })
}

/// Whether a connection admitted earlier with `fingerprint` may still speak for a node with
/// these facts.
fn still(access: &NodeAccess, fingerprint: &str) -> Result<(), Refusal> {
    match access.judge(fingerprint) {
        Verdict::Matched | Verdict::Next => Ok(()),
        Verdict::Unpinned => Err(Refusal::FingerprintReset),
        Verdict::Refused(refusal) => Err(refusal),
    }
}
