//! Admission of a node connection and its audit trail.
//!
//! A connection is admitted once when its TLS handshake ends (in the listener), and again
//! each time it opens a stream ([`recheck`]): the node may have been disabled or its
//! fingerprint reset while the connection sat idle. Every refusal, at either point, is an
//! audit row, a metric and a gRPC status.

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;
use security::pki::Validity;
use serde_json::json;
use time::OffsetDateTime;

use super::Rejection;
use super::service::NodeIdentity;
use crate::AppState;
use crate::audit::AuditEvent;

/// Why a certificate is refused at `now` for its validity window, if it is. TLS checks the
/// window on a full handshake only; a resumed TLS 1.3 session restores the certificate without
/// looking at it again, so admission checks it itself, every time.
pub(super) fn outside_validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<Rejection> {
    match security::pki::validity(not_before, not_after, now) {
        Validity::Valid => None,
        Validity::Expired => Some(Rejection::CertificateExpired),
        Validity::NotYetValid => Some(Rejection::CertificateNotYetValid),
    }
}

/// Re-runs admission for a stream opening on an admitted connection at `now`: the certificate
/// must still be valid, the node must still exist, be enabled and have this connection's
/// certificate pinned. Refusals are audited.
pub(super) async fn recheck(
    state: &AppState,
    identity: &NodeIdentity,
    now: OffsetDateTime,
) -> Result<(), Rejection> {
    let rejection = match outside_validity(identity.not_before, identity.not_after, now) {
        Some(rejection) => rejection,
        None => {
            let (node, fingerprint) = (&identity.node_id, &identity.fingerprint);
            match state
                .access
                .still_admitted(&state.db, node, fingerprint)
                .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(refusal)) => Rejection::from(refusal),
                Err(e) => {
                    tracing::error!(error = %e, "cannot check node");
                    Rejection::PanelUnavailable
                }
            }
        }
    };
    let attempt = Attempt {
        peer: identity.peer,
        presented: Some(&identity.certificate),
        resumed: identity.resumed,
    };
    reject(state, rejection, &attempt, Some("stream opened".into())).await;
    Err(rejection)
}

/// One connection attempt, as far as it got.
pub(super) struct Attempt<'a> {
    pub(super) peer: SocketAddr,
    /// The certificate the client presented, verified or not.
    pub(super) presented: Option<&'a CertificateDer<'static>>,
    /// Whether TLS resumed an earlier session.
    pub(super) resumed: bool,
}

/// Audits and counts a rejection: one audit row each (post-authentication refusals; the
/// listener folds pre-authentication ones, see `fold`).
pub(super) async fn reject(
    state: &AppState,
    rejection: Rejection,
    attempt: &Attempt<'_>,
    detail: Option<String>,
) {
    let event = count(state, rejection, attempt, detail);
    record(state, event).await;
}

/// Counts a rejection in the metric, logs it and returns its audit event (not yet written).
pub(super) fn count(
    state: &AppState,
    rejection: Rejection,
    attempt: &Attempt<'_>,
    detail: Option<String>,
) -> AuditEvent {
    state
        .metrics
        .node_rejections
        .with_label_values(&[rejection.reason()])
        .inc();
    let common_name = attempt
        .presented
        .and_then(|c| security::pki::common_name(c).ok());
    let fingerprint = attempt.presented.map(|c| security::pki::fingerprint(c));
    let peer = attempt.peer;
    tracing::warn!(
        reason = rejection.reason(),
        %peer,
        cn = common_name.as_deref().unwrap_or("unknown"),
        detail = detail.as_deref().unwrap_or(""),
        "node connection rejected"
    );
    AuditEvent {
        actor: common_name.clone().unwrap_or_else(|| "unknown".into()),
        action: "node.connect".into(),
        target: common_name,
        outcome: format!("rejected: {}", rejection.reason()),
        ip: Some(peer.ip().to_string()),
        details: json!({
            "fingerprint": fingerprint,
            "reason": rejection.reason(),
            "detail": detail,
            "resumed": attempt.resumed,
        }),
        tenant_id: None,
    }
}

/// Writes an audit row of the node channel (committed with others, see
/// [`crate::nodes::journal`]); a failure is logged.
pub(super) async fn record(state: &AppState, event: AuditEvent) {
    if let Err(e) = state.journal.audit(event).await {
        tracing::error!(error = %e, "cannot write audit row");
    }
}
