//! Certificate renewal with overlap, over the node's authenticated stream.
//!
//! 1. Wings sends a CSR up its stream ([`on_request`]); the panel's issuer signs it (CN = the
//!    stream's node id) and records its fingerprint as the node's *next* pin beside the current
//!    one — only when the stream runs on the current pin, so a certificate being retired cannot
//!    renew itself. Both pins are admitted from then on.
//! 2. Wings reconnects with the new files while its old stream still runs; the first stream
//!    welcomed with the next pin promotes it ([`promote`]): it becomes the pin, the old one is
//!    retired (refused from now on), audited as `node.cert_renewed` with both fingerprints.
//! 3. `api node rotate` / `POST /api/admin/nodes/{id}/rotate` mark the node `requested`
//!    ([`request_rotation`]); the watcher of the panel holding its stream sends `Rotate`
//!    ([`deliver_rotations`]), and Wings renews at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::node::v1::{PanelMessage, RenewFailed, Renewed, Rotate, panel_message};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::json;

use super::Nodes;
use super::registry::Session;
use crate::Error;
use crate::audit::{self, AuditEvent};
use crate::db::entities::node::{self, Column, Entity as Node, Renewal};

/// A node may not have two certificates signed within this: a looping node cannot make the
/// issuer sign without end.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Answers a node's CSR: `Renewed` with the new certificate (its fingerprint now the next
/// pin) or `RenewFailed` with a code. Audited either way.
/// `ca_bundle` is the roots the panel trusts now (sent along: how a new root reaches the fleet
/// before anything is signed under it).
pub async fn on_request(
    state: &Nodes,
    session: &Session,
    csr: &str,
    ca_bundle: String,
) -> PanelMessage {
    let now = state.clock.now();
    let result = sign_and_record(state, session, csr, now, ca_bundle).await;
    let (outcome, details, message) = match result {
        Ok(renewed) => {
            state
                .metrics
                .node_cert_renewals
                .with_label_values(&["issued"])
                .inc();
            let details = json!({ "current": session.fingerprint, "next": renewed.fingerprint });
            let message = panel_message::Kind::Renewed(renewed);
            ("issued".to_owned(), details, message)
        }
        Err(code) => {
            state
                .metrics
                .node_cert_renewals
                .with_label_values(&["failed"])
                .inc();
            if let Err(e) = mark_failed(&state.db, &session.node_id, code).await {
                tracing::warn!(node = %session.node_id, error = %e, "cannot record a failed renewal");
            }
            let message = panel_message::Kind::RenewFailed(RenewFailed {
                code: code.to_owned(),
                message: failure_sentence(code).to_owned(),
            });
            (
                format!("rejected: {code}"),
                json!({ "reason": code }),
                message,
            )
        }
    };
    let event = AuditEvent {
        actor: session.node_id.clone(),
        action: "node.cert_renew".into(),
        target: Some(session.node_id.clone()),
        outcome,
        ip: None,
        details,
        tenant_id: None,
    };
    audit::record_or_log(&state.db, event).await;
    PanelMessage {
        kind: Some(message),
    }
}

async fn sign_and_record(
    state: &Nodes,
    session: &Session,
    csr: &str,
    now: DateTime<Utc>,
    ca_bundle: String,
) -> Result<Renewed, &'static str> {
    let issuer = state.issuer.get().ok_or("issuer_off")?;
    let row = Node::find_by_id(&session.node_id)
        .one(&state.db)
        .await
        .map_err(|_| "panel_unavailable")?
        .ok_or("unknown_node")?;
    if row.fingerprint.as_deref() != Some(session.fingerprint.as_str()) {
        return Err("not_current");
    }
    let min = chrono::Duration::from_std(MIN_INTERVAL).unwrap_or_default();
    if row.next_fingerprint.is_some() && row.last_renewed_at.is_some_and(|t| now - t < min) {
        return Err("too_soon");
    }
    let when = time::OffsetDateTime::from_unix_timestamp(now.timestamp())
        .map_err(|_| "panel_unavailable")?;
    let signed = issuer
        .sign(csr.as_bytes(), &session.node_id, &row.fqdn, when)
        .map_err(|e| match e {
            security::Error::Csr(why) if why.contains("key type") || why.contains("curve") => {
                "weak_key"
            }
            security::Error::CommonNameMismatch { .. } => "foreign_name",
            _ => "bad_csr",
        })?;
    // Only on the current pin, on an enabled node: one conditional update.
    let recorded = Node::update_many()
        .col_expr(Column::NextFingerprint, Expr::value(&signed.fingerprint))
        .col_expr(Column::Renewal, Expr::value(Renewal::Renewing))
        .col_expr(Column::RenewalError, Expr::value(Option::<String>::None))
        .col_expr(Column::LastRenewedAt, Expr::value(now))
        .filter(Column::Id.eq(&session.node_id))
        .filter(Column::Enabled.eq(true))
        .filter(Column::Fingerprint.eq(&session.fingerprint))
        .exec(&state.db)
        .await
        .map_err(|_| "panel_unavailable")?;
    if recorded.rows_affected != 1 {
        return Err("not_current");
    }
    tracing::info!(node = %session.node_id, next = %signed.fingerprint, "certificate renewed; next pin recorded");
    Ok(Renewed {
        certificate: signed.cert_pem,
        chain: signed.chain_pem,
        fingerprint: signed.fingerprint,
        ca_bundle,
    })
}

/// Promotes `fingerprint` when it is node `id`'s next pin: it becomes the pin, the old one is
/// retired. Returns the retired fingerprint when it did. Audited and counted.
pub async fn promote(
    state: &Nodes,
    id: &str,
    fingerprint: &str,
    not_after: DateTime<Utc>,
) -> Result<Option<String>, Error> {
    let Some(row) = Node::find_by_id(id).one(&state.db).await? else {
        return Ok(None);
    };
    if row.next_fingerprint.as_deref() != Some(fingerprint) {
        return Ok(None);
    }
    let promoted = Node::update_many()
        .col_expr(Column::Fingerprint, Expr::value(fingerprint))
        .col_expr(Column::NextFingerprint, Expr::value(Option::<String>::None))
        .col_expr(Column::CertNotAfter, Expr::value(not_after))
        .col_expr(Column::Renewal, Expr::value(Renewal::Ok))
        .col_expr(Column::RenewalError, Expr::value(Option::<String>::None))
        .filter(Column::Id.eq(id))
        .filter(Column::NextFingerprint.eq(fingerprint))
        .filter(Column::Enabled.eq(true))
        .exec(&state.db)
        .await?;
    if promoted.rows_affected != 1 {
        return Ok(None);
    }
    state
        .metrics
        .node_cert_renewals
        .with_label_values(&["promoted"])
        .inc();
    let event = AuditEvent {
        actor: id.to_owned(),
        action: "node.cert_renewed".into(),
        target: Some(id.to_owned()),
        outcome: "ok".into(),
        ip: None,
        details: json!({ "previous": row.fingerprint, "fingerprint": fingerprint }),
        tenant_id: None,
    };
    audit::record_or_log(&state.db, event).await;
    tracing::info!(node = %id, fingerprint, "renewed certificate promoted; the old one is retired");
    Ok(row.fingerprint)
}

/// Asks node `id` to renew now: marked `requested` until the panel holding its stream sends
/// `Rotate` (within one watcher tick, also when another process made the request).
pub async fn request_rotation(db: &DatabaseConnection, id: &str) -> Result<node::Model, Error> {
    let updated = Node::update_many()
        .col_expr(Column::Renewal, Expr::value(Renewal::Requested))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        return Err(Error::NotFound(format!("node {id}")));
    }
    super::store::get(db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("node {id}")))
}

/// Sends `Rotate` down the stream of every connected node marked `requested` in `rows`, once
/// (a conditional update claims each request).
pub async fn deliver_rotations(state: &Nodes, rows: &[node::Model]) {
    for row in rows.iter().filter(|r| r.renewal == Renewal::Requested) {
        // Only the replica holding the node's stream claims its request.
        if !state.link.holds(&row.id) {
            continue;
        }
        let claimed = Node::update_many()
            .col_expr(Column::Renewal, Expr::value(Renewal::Renewing))
            .filter(Column::Id.eq(&row.id))
            .filter(Column::Renewal.eq(Renewal::Requested))
            .exec(&state.db)
            .await;
        if !matches!(claimed, Ok(r) if r.rows_affected == 1) {
            continue;
        }
        let rotate = PanelMessage {
            kind: Some(panel_message::Kind::Rotate(Rotate {})),
        };
        if state.link.send(&row.id, rotate).await {
            tracing::info!(node = %row.id, "asked the node to renew its certificate now");
        }
    }
}

async fn mark_failed(db: &DatabaseConnection, id: &str, code: &str) -> Result<(), Error> {
    Node::update_many()
        .col_expr(Column::Renewal, Expr::value(Renewal::Failed))
        .col_expr(Column::RenewalError, Expr::value(code))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

fn failure_sentence(code: &str) -> &'static str {
    match code {
        "issuer_off" => "this panel has no issuer: renewal is off",
        "not_current" => "only a stream on the node's current certificate may renew it",
        "too_soon" => "a certificate was issued to this node seconds ago",
        "weak_key" => "the key must be ECDSA P-256, P-384 or Ed25519",
        "foreign_name" => "the CSR names another node",
        "bad_csr" => "not a usable certificate signing request",
        _ => "the panel cannot renew the certificate right now",
    }
}
