//! Join tokens and enrolment: a platform admin (or `api node add --join-token`) makes a
//! one-time token bound to one node id (256 random bits, stored as its SHA-256, expiring,
//! deleted when the node is disabled); the node sends it with a CSR to `POST /api/nodes/enroll`
//! and gets back a certificate signed by the panel's issuer, whose fingerprint is pinned in the
//! same transaction that uses the token up — there is no first-connection trust window.
//!
//! Every refusal names its [`Refusal`] (an audit row, the contract's error body) and issues
//! nothing. Order: the CSR is checked first (bounded, signature, key type: no database work
//! for garbage), then the token, then the node, then the CSR's name against the node.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    TransactionTrait,
};

use super::issuer::{Issuer, NodeCertificate};
use crate::Error;
use crate::db::entities::node::{self, Renewal};
use crate::db::entities::node_join_token as token_row;
use crate::identity::tokens;

/// Default lifetime of a join token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Shortest and longest lifetime a join token may be given.
pub const TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=7 * 86_400;

/// Why an enrolment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The panel has no issuer.
    IssuerOff,
    /// The CSR does not parse, its signature fails, or it is too large.
    BadCsr,
    /// RSA, a weak curve or another unsupported key.
    WeakKey,
    /// No such token (never issued, or deleted with its disabled node).
    UnknownToken,
    /// The token expired.
    ExpiredToken,
    /// The token was used already (a replay).
    UsedToken,
    /// The token's node is disabled or gone.
    NodeDisabled,
    /// The CSR asks for a CN other than the token's node id.
    ForeignName,
}

impl Refusal {
    /// The reason in audit rows.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::IssuerOff => "issuer_off",
            Refusal::BadCsr => "bad_csr",
            Refusal::WeakKey => "weak_key",
            Refusal::UnknownToken => "unknown_token",
            Refusal::ExpiredToken => "expired_token",
            Refusal::UsedToken => "used_token",
            Refusal::NodeDisabled => "node_disabled",
            Refusal::ForeignName => "foreign_name",
        }
    }

    /// The error the client sees (the contract's codes: 400, 401, 403, 503).
    pub fn error(self) -> Error {
        match self {
            Refusal::IssuerOff => Error::Unavailable(60),
            Refusal::BadCsr => Error::Invalid("csr: not a usable certificate signing request".into()),
            Refusal::WeakKey => Error::Invalid(
                "csr: the key must be ECDSA P-256, P-384 or Ed25519 (RSA and other curves are refused)".into(),
            ),
            Refusal::UnknownToken => Error::Unauthenticated("invalid join token"),
            Refusal::ExpiredToken => Error::Unauthenticated("the join token has expired"),
            Refusal::UsedToken => Error::Unauthenticated("the join token was used already"),
            Refusal::NodeDisabled => Error::Forbidden {
                code: "forbidden",
                message: "the token's node is disabled",
            },
            Refusal::ForeignName => Error::Forbidden {
                code: "forbidden",
                message: "the CSR names another node than the token's",
            },
        }
    }
}

/// A successful enrolment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The node id (the certificate's CN).
    pub node_id: String,
    /// The certificate and its chain.
    pub certificate: NodeCertificate,
    /// Whether another certificate was pinned before (its connections are dropped).
    pub replaced_pin: bool,
}

/// Makes a join token for node `id`, valid for `ttl` from `now`. Returns the token (shown once)
/// and its expiry. The node must exist and be enabled.
pub async fn create_token(
    db: &DatabaseConnection,
    id: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<(String, DateTime<Utc>), Error> {
    if !TTL_RANGE.contains(&ttl.as_secs()) {
        return Err(Error::Invalid(format!(
            "ttl_secs must be from {} to {}",
            TTL_RANGE.start(),
            TTL_RANGE.end()
        )));
    }
    let node = node::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound(format!("node {id}")))?;
    if !node.enabled {
        return Err(Error::Conflict(format!(
            "node {id} is disabled: enable it before making a join token"
        )));
    }
    let token = format!("mjt_{}", tokens::new_secret());
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or_default();
    token_row::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        node_id: Set(id.to_owned()),
        token_hash: Set(tokens::hash(&token)),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((token, expires_at))
}

/// Deletes every join token of node `id` (when it is disabled).
pub async fn revoke_tokens(db: &DatabaseConnection, id: &str) -> Result<u64, Error> {
    let deleted = token_row::Entity::delete_many()
        .filter(token_row::Column::NodeId.eq(id))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}

/// Enrols: checks the CSR, the token and the node, signs, then uses the token up and pins the
/// new certificate in one transaction. `Err(Ok(refusal))` is a refusal (nothing issued);
/// `Err(Err(e))` a failure of the panel. The node id is returned with a refusal when the token
/// named one, for the audit row.
pub async fn enroll(
    db: &DatabaseConnection,
    issuer: Option<&Issuer>,
    token: &str,
    csr: &[u8],
    now: DateTime<Utc>,
) -> Result<Enrolled, (Result<Refusal, Error>, Option<String>)> {
    let refuse = |refusal: Refusal, node: Option<&str>| (Ok(refusal), node.map(str::to_owned));
    let Some(issuer) = issuer else {
        return Err(refuse(Refusal::IssuerOff, None));
    };
    let info = match security::pki::check_csr(csr) {
        Ok((info, _)) => info,
        Err(security::Error::Csr(why)) if why.contains("key type") || why.contains("curve") => {
            return Err(refuse(Refusal::WeakKey, None));
        }
        Err(_) => return Err(refuse(Refusal::BadCsr, None)),
    };
    let row = token_row::Entity::find()
        .filter(token_row::Column::TokenHash.eq(tokens::hash(token)))
        .one(db)
        .await
        .map_err(|e| (Err(e.into()), None))?;
    let Some(row) = row else {
        return Err(refuse(Refusal::UnknownToken, None));
    };
    let node_id = row.node_id.as_str();
    if row.used_at.is_some() {
        return Err(refuse(Refusal::UsedToken, Some(node_id)));
    }
    if row.expires_at <= now {
        return Err(refuse(Refusal::ExpiredToken, Some(node_id)));
    }
    let node = node::Entity::find_by_id(node_id)
        .one(db)
        .await
        .map_err(|e| (Err(e.into()), Some(node_id.to_owned())))?;
    let Some(node) = node.filter(|n| n.enabled) else {
        return Err(refuse(Refusal::NodeDisabled, Some(node_id)));
    };
    if info.common_name.as_deref().is_some_and(|cn| cn != node_id) {
        return Err(refuse(Refusal::ForeignName, Some(node_id)));
    }
    let when = time::OffsetDateTime::from_unix_timestamp(now.timestamp())
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let certificate = issuer
        .sign(csr, node_id, &node.fqdn, when)
        .map_err(|e| (Err(e.into()), Some(node_id.to_owned())))?;
    match use_token_and_pin(db, &row, &certificate, now).await {
        Ok(Ok(())) => Ok(Enrolled {
            node_id: node_id.to_owned(),
            certificate,
            replaced_pin: node.fingerprint.is_some(),
        }),
        Ok(Err(refusal)) => Err(refuse(refusal, Some(node_id))),
        Err(e) => Err((Err(e), Some(node_id.to_owned()))),
    }
}

/// In one transaction: marks the token used (only if it still is unused and unexpired: of two
/// racing requests one wins) and pins the certificate on the (still enabled) node.
async fn use_token_and_pin(
    db: &DatabaseConnection,
    row: &token_row::Model,
    certificate: &NodeCertificate,
    now: DateTime<Utc>,
) -> Result<Result<(), Refusal>, Error> {
    let txn = db.begin().await?;
    let used = token_row::Entity::update_many()
        .col_expr(token_row::Column::UsedAt, Expr::value(now))
        .filter(token_row::Column::Id.eq(&row.id))
        .filter(token_row::Column::UsedAt.is_null())
        .filter(token_row::Column::ExpiresAt.gt(now))
        .exec(&txn)
        .await?;
    if used.rows_affected != 1 {
        txn.rollback().await?;
        return Ok(Err(Refusal::UsedToken));
    }
    let not_after =
        DateTime::<Utc>::from_timestamp(certificate.not_after.unix_timestamp(), 0).unwrap_or(now);
    let pinned = node::Entity::update_many()
        .col_expr(
            node::Column::Fingerprint,
            Expr::value(&certificate.fingerprint),
        )
        .col_expr(
            node::Column::NextFingerprint,
            Expr::value(Option::<String>::None),
        )
        .col_expr(node::Column::CertNotAfter, Expr::value(not_after))
        .col_expr(node::Column::Renewal, Expr::value(Renewal::Ok))
        .col_expr(
            node::Column::RenewalError,
            Expr::value(Option::<String>::None),
        )
        .col_expr(node::Column::LastRenewedAt, Expr::value(now))
        .filter(node::Column::Id.eq(&row.node_id))
        .filter(node::Column::Enabled.eq(true))
        .exec(&txn)
        .await?;
    if pinned.rows_affected != 1 {
        txn.rollback().await?;
        return Ok(Err(Refusal::NodeDisabled));
    }
    txn.commit().await?;
    Ok(Ok(()))
}
